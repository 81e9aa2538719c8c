package console_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/testenv"
	"github.com/linkgate/linkgate/tokenstore"
)

// newBrowser starts a fresh headless Chromium and returns a context on its
// first tab.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	return testenv.NewBrowser(t, 120*time.Second)
}

// seedDemo fills the store with accounts of several integrations and
// statuses, and webhook deliveries that failed and succeeded. It returns
// the id of an acme account that needs reauthorization.
func seedDemo(t *testing.T, h *harness) string {
	t.Helper()
	ctx := context.Background()
	base := time.Now().Add(-48 * time.Hour)
	type row struct {
		id, tenant, integ string
		status            account.Status
	}
	rows := []row{
		{"6f1c2a9e-3b7d-4c1e-9a51-0d2f8e7b4c10", "acme-corp", "acme", account.StatusActive},
		{"1b8e4d2c-7a3f-4f5e-8c62-2e9d1a0b3f21", "globex", "keyco", account.StatusActive},
		{"9c3d5e7f-1a2b-4c3d-8e9f-0a1b2c3d4e32", "initech", "acme", account.StatusConnecting},
		{"3e5f7a9b-2c4d-4e6f-8a0b-1c2d3e4f5a43", "umbrella", "keyco", account.StatusActive},
		{"7a9b1c3d-5e7f-4a1b-9c3d-5e7f9a1b3c54", "hooli", "acme", account.StatusNeedsReauth},
		{"2d4f6a8c-0e2a-4c6e-8a2c-4e6a8c0e2a65", "stark-industries", "acme", account.StatusActive},
		{"5b7d9f1b-3d5f-4b9d-8f1b-3d5f7b9d1f76", "wayne-enterprises", "acme", account.StatusNeedsReauth},
	}
	var target string
	for i, r := range rows {
		ctxMap := map[string]any{"region": "eu-west-1", "plan": "growth"}
		if r.integ == "acme" {
			ctxMap["webhook_secret"] = "never-shown"
		}
		a := h.seed(r.id, r.tenant, r.integ, r.status, base.Add(time.Duration(i)*time.Hour), account.Credentials{}, ctxMap)
		if r.status == account.StatusNeedsReauth && r.integ == "acme" {
			target = a.ID
			ev := tokenstore.NewEvent("integrated_account:authentication_error", a, base.Add(time.Duration(i)*time.Hour+time.Minute))
			if err := h.store.AddEvents(ctx, []tokenstore.Event{ev}); err != nil {
				t.Fatal(err)
			}
		} else if r.status == account.StatusActive {
			ev := tokenstore.NewEvent("integrated_account:active", a, base.Add(time.Duration(i)*time.Hour+time.Minute))
			if err := h.store.AddEvents(ctx, []tokenstore.Event{ev}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := h.store.FanOut(ctx, 100, func(tokenstore.Event) []string {
		return []string{"https://app.example.com/hooks/linkgate"}
	}); err != nil {
		t.Fatal(err)
	}
	claimed, err := h.store.ClaimDeliveries(ctx, time.Now().Add(time.Minute), time.Minute, 100)
	if err != nil {
		t.Fatal(err)
	}
	for i := range claimed {
		d := &claimed[i]
		d.Attempts = 1
		if d.Event.Name == "integrated_account:authentication_error" {
			d.Status, d.Attempts, d.LastStatus, d.LastError = tokenstore.DeliveryFailed, 8, 503, "endpoint answered 503 Service Unavailable"
		} else {
			d.Status, d.LastStatus = tokenstore.DeliveryDelivered, 200
		}
		if err := h.store.FinishAttempt(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	return target
}

// signIn signs in through the form, first with a wrong token, which must be
// refused.
func signIn(t *testing.T, ctx context.Context, h *harness) {
	t.Helper()
	if err := chromedp.Do(ctx,
		chromedp.Navigate(h.url("/accounts")),
		chromedp.WaitVisible(chromedp.ID("secret")),
		chromedp.SendKeys(chromedp.ID("secret"), "not-the-token"),
		chromedp.Click(chromedp.ID("sign-in")),
		chromedp.WaitVisible(chromedp.ID("login-error")),
	); err != nil {
		t.Fatalf("signing in with a wrong token: %v", err)
	}
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("secret"), apiToken),
		chromedp.Click(chromedp.ID("sign-in")),
		chromedp.WaitVisible(chromedp.ID("apply-filters")),
	); err != nil {
		t.Fatalf("signing in: %v", err)
	}
}

// noHorizontalScroll fails when the page is wider than the viewport.
func noHorizontalScroll(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	fits, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth <= window.innerWidth`))
	if err != nil {
		t.Fatal(err)
	}
	if !fits {
		w, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
		t.Fatalf("%s is %d px wide at a 375 px viewport", what, w)
	}
}

func TestBrowserReconnectFromTheConsole(t *testing.T) {
	h := newHarness(t, harnessOptions{realClock: true})
	target := seedDemo(t, h)
	ctx := newBrowser(t)
	signIn(t, ctx, h)

	// Filter needs_reauth.
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.ID("f-status"), "needs_reauth"),
		chromedp.Click(chromedp.ID("apply-filters")),
		chromedp.WaitReady(chromedp.CSS(`option[value="needs_reauth"][selected]`)),
		chromedp.WaitVisible(chromedp.ID("accounts")),
	); err != nil {
		t.Fatalf("filtering: %v", err)
	}
	badges, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#accounts tbody .badge")).map(b => b.textContent)`))
	if err != nil {
		t.Fatal(err)
	}
	if len(badges) != 2 {
		t.Fatalf("needs_reauth filter shows %d accounts (%v); want 2", len(badges), badges)
	}
	for _, b := range badges {
		if b != "needs reauth" {
			t.Fatalf("needs_reauth filter shows a %q account", b)
		}
	}

	// Open the account and get a connection link.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`a[href="/console/accounts/%s"]`, target))),
		chromedp.WaitVisible(chromedp.ID("h-connection")),
		chromedp.WaitVisible(chromedp.ID("get-link")),
		chromedp.Click(chromedp.ID("get-link")),
		chromedp.WaitVisible(chromedp.ID("magic-link")),
		// The script shows the Copy button; without it the field stays selectable.
		chromedp.WaitVisible(chromedp.ID("copy-link")),
	); err != nil {
		t.Fatalf("getting a connection link: %v", err)
	}
	link, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("magic-link")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(link, h.srv.URL+"/connect-account?link_token=") {
		t.Fatalf("magic link %q", link)
	}
	status, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("status")))
	if err != nil || status != "needs reauth" {
		t.Fatalf("status badge before reconnecting: %q, %v", status, err)
	}

	// "Refresh credentials now" asks first, in a dialog; the provider then
	// has nothing to refresh for this account, and the console says so.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("refresh-now")),
		chromedp.WaitVisible(chromedp.ID("confirm-ok")),
		chromedp.Click(chromedp.ID("confirm-ok")),
		chromedp.WaitVisible(chromedp.ID("flash")),
	); err != nil {
		t.Fatalf("refreshing through the dialog: %v", err)
	}
	flash, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("flash")))
	if err != nil || !strings.Contains(flash, "needs reauthorization") {
		t.Fatalf("flash after refresh: %q, %v", flash, err)
	}

	// The end user opens the link in a new tab and re-authorizes at the provider.
	tab, cancelTab := chromedp.NewContext(ctx)
	defer cancelTab()
	if err := chromedp.Do(tab,
		chromedp.Navigate(link),
		chromedp.WaitVisible(chromedp.ID("connect")),
		chromedp.Click(chromedp.ID("connect")),
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), "alice"),
		chromedp.Click(chromedp.ID("allow")),
		chromedp.WaitVisible(chromedp.ID("result-message")),
	); err != nil {
		t.Fatalf("reconnecting through the magic link: %v", err)
	}
	msg, err := chromedp.Run(tab, chromedp.Text(chromedp.ID("result-message")))
	if err != nil || !strings.Contains(msg, "Connection successful") {
		t.Fatalf("connect result %q, %v", msg, err)
	}

	// Back in the console the badge has turned active.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(h.url("/accounts/"+target)),
		chromedp.WaitVisible(chromedp.ID("status")),
	); err != nil {
		t.Fatal(err)
	}
	status, err = chromedp.Run(ctx, chromedp.Text(chromedp.ID("status")))
	if err != nil || status != "active" {
		t.Fatalf("status badge after reconnecting: %q, %v; want active", status, err)
	}
	a, err := h.store.GetAccount(context.Background(), target)
	if err != nil || a.Status != account.StatusActive || a.Credentials.RefreshToken == "" {
		t.Fatalf("stored account after reconnecting: %v, %v", a, err)
	}

	// Every page fits a 375 px phone.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(375, 812, chromedp.EmulateMobile)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/accounts", "/accounts/" + target, "/deliveries"} {
		if err := chromedp.Do(ctx, chromedp.Navigate(h.url(p)), chromedp.WaitVisible(chromedp.ID("main"))); err != nil {
			t.Fatal(err)
		}
		noHorizontalScroll(t, ctx, p)
	}
}

func TestBrowserExpiredSessionGoesToSignIn(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := newBrowser(t)
	signIn(t, ctx, h)
	h.clock.Advance(2 * time.Hour)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(h.url("/deliveries")),
		chromedp.WaitVisible(chromedp.ID("login-form")),
	); err != nil {
		t.Fatalf("an expired session did not lead to the sign-in page: %v", err)
	}
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil || !strings.HasSuffix(loc, "/console/login") {
		t.Fatalf("location %q, %v", loc, err)
	}
}

// TestScreenshots saves the console's pages at desktop and phone width under
// docs/screenshots. Run it with LINKGATE_SCREENSHOTS=1 after changing a page.
func TestScreenshots(t *testing.T) {
	if os.Getenv("LINKGATE_SCREENSHOTS") != "1" {
		t.Skip("set LINKGATE_SCREENSHOTS=1 to regenerate docs/screenshots")
	}
	h := newHarness(t, harnessOptions{realClock: true})
	target := seedDemo(t, h)
	dir := filepath.Join("..", "docs", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, size := range []struct {
		name          string
		width, height int64
		mobile        bool
	}{{"desktop", 1280, 800, false}, {"phone", 375, 812, true}} {
		ctx := newBrowser(t)
		var opts []chromedp.EmulateViewportOption
		if size.mobile {
			opts = append(opts, chromedp.EmulateMobile)
		}
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(size.width, size.height, opts...)); err != nil {
			t.Fatal(err)
		}
		shotAs := func(file string) {
			t.Helper()
			png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatalf("screenshot %s: %v", file, err)
			}
			if err := os.WriteFile(filepath.Join(dir, file+"-"+size.name+".png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		shot := func(name string) { t.Helper(); shotAs("console-" + name) }
		if err := chromedp.Do(ctx, chromedp.Navigate(h.url("/login")), chromedp.WaitVisible(chromedp.ID("secret"))); err != nil {
			t.Fatal(err)
		}
		shot("login")
		if err := chromedp.Do(ctx,
			chromedp.SendKeys(chromedp.ID("secret"), apiToken),
			chromedp.Click(chromedp.ID("sign-in")),
			chromedp.WaitVisible(chromedp.ID("accounts")),
		); err != nil {
			t.Fatal(err)
		}
		shot("accounts")
		if err := chromedp.Do(ctx,
			chromedp.Navigate(h.url("/accounts/"+target)),
			chromedp.Click(chromedp.ID("get-link")),
			chromedp.WaitVisible(chromedp.ID("copy-link")),
		); err != nil {
			t.Fatal(err)
		}
		shot("account")
		link, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("magic-link")))
		if err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(ctx, chromedp.Navigate(h.url("/deliveries")), chromedp.WaitVisible(chromedp.ID("main"))); err != nil {
			t.Fatal(err)
		}
		shot("deliveries")
		if err := chromedp.Do(ctx, chromedp.Navigate(h.url("/webhooks")), chromedp.Click(chromedp.ID("test-all")), chromedp.WaitVisible(chromedp.ID("test-summary"))); err != nil {
			t.Fatal(err)
		}
		shot("webhooks")
		// The page the end user sees from the magic link.
		if err := chromedp.Do(ctx, chromedp.Navigate(link), chromedp.WaitVisible(chromedp.ID("connect"))); err != nil {
			t.Fatal(err)
		}
		shotAs("connect-page")
	}
}

// tabTo presses Tab until the element matching selector has the focus.
func tabTo(t *testing.T, ctx context.Context, selector string) {
	t.Helper()
	check := fmt.Sprintf(`document.activeElement === document.querySelector(%q)`, selector)
	for range 40 {
		if err := chromedp.Do(ctx, chromedp.KeyEvent("\t")); err != nil {
			t.Fatal(err)
		}
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](check))
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
	}
	t.Fatalf("Tab never reached %s", selector)
}

func TestBrowserKeyboardOnly(t *testing.T) {
	h := newHarness(t, harnessOptions{realClock: true})
	target := seedDemo(t, h)
	ctx := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(h.url("/login")), chromedp.WaitVisible(chromedp.ID("secret"))); err != nil {
		t.Fatal(err)
	}
	// The first Tab reaches the skip link, and focus is drawn.
	if err := chromedp.Do(ctx, chromedp.KeyEvent("\t")); err != nil {
		t.Fatal(err)
	}
	outline, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => { const e = document.activeElement; return e.className + " " + getComputedStyle(e).outlineStyle })()`))
	if err != nil || outline != "skip solid" {
		t.Fatalf("first focus: %q, %v; want the skip link with a solid outline", outline, err)
	}
	tabTo(t, ctx, "#secret")
	if err := chromedp.Do(ctx,
		chromedp.KeyEvent(apiToken+"\r"),
		chromedp.WaitVisible(chromedp.ID("accounts")),
	); err != nil {
		t.Fatalf("signing in by keyboard: %v", err)
	}
	tabTo(t, ctx, fmt.Sprintf(`a[href="/console/accounts/%s"]`, target))
	if err := chromedp.Do(ctx, chromedp.KeyEvent("\r"), chromedp.WaitVisible(chromedp.ID("get-link"))); err != nil {
		t.Fatal(err)
	}
	tabTo(t, ctx, "#get-link")
	if err := chromedp.Do(ctx, chromedp.KeyEvent("\r"), chromedp.WaitVisible(chromedp.ID("copy-link"))); err != nil {
		t.Fatalf("getting the link by keyboard: %v", err)
	}
	tabTo(t, ctx, "#copy-link")
	if err := chromedp.Do(ctx, chromedp.KeyEvent("\r")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("copy-link").textContent === "Copied"`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("the Copy button did not confirm: %v", err)
	}
}

// seedDeliveries writes n failed deliveries of an account's events.
func seedDeliveries(t *testing.T, h *harness, n int) {
	t.Helper()
	ctx := context.Background()
	a := h.seed("4d6f8a0c-2e4a-4c6e-8a0c-2e4a6c8e0a11", "northwind-traders", "acme", account.StatusNeedsReauth, time.Now().Add(-time.Hour), account.Credentials{}, nil)
	var evs []tokenstore.Event
	for i := range n {
		evs = append(evs, tokenstore.NewEvent("integrated_account:authentication_error", a, time.Now().Add(time.Duration(i-n)*time.Minute)))
	}
	if err := h.store.AddEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.FanOut(ctx, 1000, func(tokenstore.Event) []string {
		return []string{"https://app.example.com/hooks/linkgate/receiver"}
	}); err != nil {
		t.Fatal(err)
	}
	claimed, err := h.store.ClaimDeliveries(ctx, time.Now().Add(time.Minute), time.Minute, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for i := range claimed {
		d := &claimed[i]
		d.Status, d.Attempts, d.LastStatus, d.LastError = tokenstore.DeliveryFailed, 8, 503, "endpoint answered 503 Service Unavailable after 15 s of waiting"
		if err := h.store.FinishAttempt(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBrowserConsoleLayoutStaysCompact(t *testing.T) {
	h := newHarness(t, harnessOptions{realClock: true})
	seedDeliveries(t, h, 45)
	ctx := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatal(err)
	}
	signIn(t, ctx, h)
	height := func(p string) int {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(h.url(p)), chromedp.WaitVisible(chromedp.ID("main"))); err != nil {
			t.Fatal(err)
		}
		px, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollHeight`))
		if err != nil {
			t.Fatal(err)
		}
		return px
	}
	// 45 deliveries: about 40 px a row, not 150.
	if px := height("/deliveries"); px > 2600 {
		t.Errorf("45 deliveries make a %d px page at 1280 px; want at most 2600", px)
	} else {
		t.Logf("45 deliveries: %d px at 1280x800", px)
	}
	// Event names are whole: each on one line, none clipped.
	broken, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll(".event-name")].filter(e => e.getClientRects().length !== 1 || e.scrollWidth > e.offsetWidth + 1).map(e => e.textContent)`))
	if err != nil || len(broken) != 0 {
		t.Fatalf("event names broken or clipped: %v, %v", broken, err)
	}
	noHorizontalScrollAt(t, ctx, 1280, "/deliveries")

	// The list shows the needs_reauth count as a filter; ids are short
	// and copy whole.
	height("/accounts")
	if err := chromedp.Do(ctx,
		chromedp.WaitVisible(`button.copy[data-copy-text="4d6f8a0c-2e4a-4c6e-8a0c-2e4a6c8e0a11"]`),
		chromedp.Click(`button.copy[data-copy-text="4d6f8a0c-2e4a-4c6e-8a0c-2e4a6c8e0a11"]`),
	); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("button.copy").textContent === "Copied"`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("the id's Copy button did not confirm: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("needs-reauth-count")), chromedp.WaitReady(`option[value="needs_reauth"][selected]`)); err != nil {
		t.Fatalf("the needs_reauth count does not filter: %v", err)
	}

	// On a phone the menu and the filters fold away until asked for.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(375, 812, chromedp.EmulateMobile)); err != nil {
		t.Fatal(err)
	}
	height("/accounts")
	visible := func(id string) bool {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { const e = document.getElementById("`+id+`"); return !!e && e.getClientRects().length > 0 })()`))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if visible("top-menu") || visible("account-filters") || !visible("accounts") {
		t.Fatalf("on a phone: menu %v, filters %v, accounts %v; want only the accounts", visible("top-menu"), visible("account-filters"), visible("accounts"))
	}
	top, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`document.getElementById("accounts").getBoundingClientRect().top`))
	if err != nil || top > 400 {
		t.Fatalf("the accounts start %v px down on a phone (%v)", top, err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(`button[data-toggle="top-menu"]`), chromedp.Click(`button[data-toggle="account-filters"]`)); err != nil {
		t.Fatal(err)
	}
	if !visible("top-menu") || !visible("account-filters") {
		t.Fatal("the Menu and Filters buttons do not open what they fold")
	}
	// On a phone each delivery is a card of about three short lines.
	if px := height("/deliveries"); px > 7000 {
		t.Errorf("45 deliveries make a %d px page on a phone; want at most 7000", px)
	} else {
		t.Logf("45 deliveries: %d px at 375x812", px)
	}
	noHorizontalScrollAt(t, ctx, 375, "/deliveries")
}

// noHorizontalScrollAt fails when the page is wider than the viewport.
func noHorizontalScrollAt(t *testing.T, ctx context.Context, width int, what string) {
	t.Helper()
	w, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
	if err != nil {
		t.Fatal(err)
	}
	if w > width {
		wide, _ := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[document.querySelector(".scroll"), document.querySelector("main"), document.body, ...document.querySelectorAll("tbody tr:first-child td")].map(e => e.tagName + "." + e.className + " cw=" + e.clientWidth + " sw=" + e.scrollWidth + " ov=" + getComputedStyle(e).overflowX)`))
		t.Logf("widths: %v", wide)
		wide, _ = chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("body *")].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).slice(0, 5).map(e => e.tagName + "." + e.className + "#" + e.id + " " + Math.round(e.getBoundingClientRect().right))`))
		t.Fatalf("%s is %d px wide at a %d px viewport; past its edge: %v", what, w, width, wide)
	}
	if w > width {
		t.Fatalf("%s is %d px wide at a %d px viewport", what, w, width)
	}
}

func TestBrowserDeleteAsksFirst(t *testing.T) {
	h := newHarness(t, harnessOptions{realClock: true})
	target := seedDemo(t, h)
	ctx := newBrowser(t)
	signIn(t, ctx, h)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(h.url("/accounts/"+target)),
		chromedp.WaitVisible(chromedp.ID("history")),
		chromedp.Click(chromedp.ID("confirm-delete")),
		chromedp.Click(chromedp.ID("delete-account")),
		chromedp.WaitVisible(chromedp.ID("confirm-ok")),
	); err != nil {
		t.Fatalf("the delete dialog: %v", err)
	}
	if _, err := h.store.GetAccount(context.Background(), target); err != nil {
		t.Fatalf("the account went before the dialog was answered: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("confirm-ok")), chromedp.WaitVisible(chromedp.ID("flash"))); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.GetAccount(context.Background(), target); err == nil {
		t.Fatal("the account is still there after a confirmed delete")
	}
}
