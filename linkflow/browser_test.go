package linkflow_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/testenv"
)

// appPage is the application's page: it loads the Link SDK from the gateway
// and calls authenticate from a click, as an application does.
const appPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>app</title></head>
<body>
<button id="popup">Connect in a popup</button>
<button id="iframe">Connect in a frame</button>
<button id="same">Connect in this window</button>
<pre id="result"></pre>
<script type="module">
import { authenticate } from %q;
const out = document.getElementById("result");
const token = new URLSearchParams(location.search).get("lt");
function run(opts) {
  authenticate(token, opts).then(
    (r) => { out.textContent = JSON.stringify(r); out.dataset.done = "resolved"; },
    (e) => { out.textContent = JSON.stringify(e); out.dataset.done = "rejected"; });
}
document.getElementById("popup").addEventListener("click", () => run({ baseUrl: %q }));
document.getElementById("iframe").addEventListener("click", () => run({ baseUrl: %q, iframe: true }));
document.getElementById("same").addEventListener("click", () => run({ baseUrl: %q, sameWindow: true }));
// A popup blocker makes window.open return null. Headless Chromium blocks
// no popup, so the test stands in for the blocker.
window.connectBlocked = () => { window.open = () => null; run({ baseUrl: %q }); };
document.body.dataset.ready = "yes";
</script>
</body></html>`

// browserEnv is a gateway, an application page on another localhost origin
// and one headless Chromium.
type browserEnv struct {
	*harness
	app string
	ctx context.Context
}

func newBrowserEnv(t *testing.T) *browserEnv {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return newBrowserEnvAt(t, l, "http://localhost:"+portOf(l.Addr().String()))
}

// newCrossSiteBrowserEnv has the application on http://app.test:port, a
// site of its own (Chromium resolves the name to 127.0.0.1): the gateway
// (localhost) and the provider (127.0.0.1) are third parties to it, so its
// overlay frame gets no third-party cookie.
func newCrossSiteBrowserEnv(t *testing.T) *browserEnv {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return newBrowserEnvAt(t, l, "http://app.test:"+portOf(l.Addr().String()),
		chromedp.Flag("host-resolver-rules", "MAP app.test 127.0.0.1"))
}

func newBrowserEnvAt(t *testing.T, l net.Listener, app string, flags ...chromedp.ExecAllocatorOption) *browserEnv {
	t.Helper()
	h := newHarness(t, harnessOptions{origins: []string{app}})
	page := fmt.Sprintf(appPage, h.public+"/connect-account/sdk.js", h.public, h.public, h.public, h.public)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(page))
	}))
	_ = srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)

	ctx := testenv.NewBrowser(t, 120*time.Second, flags...)
	return &browserEnv{harness: h, app: app, ctx: ctx}
}

// flowBudget bounds one flow (a tab and the windows it opens) of a page
// test; each flow of a test gets its own, so that a slow machine does not
// make a test's later flows fail for the time its earlier ones took.
const flowBudget = 90 * time.Second

// openApp loads the application page with token in a fresh tab.
func (b *browserEnv) openApp(t *testing.T, token string) context.Context {
	t.Helper()
	tab, _ := testenv.NewTab(t, b.ctx, flowBudget)
	if err := chromedp.Do(tab, chromedp.Navigate(b.app+"/app?lt="+url.QueryEscape(token))); err != nil {
		t.Fatalf("loading the application page: %v", err)
	}
	if _, err := chromedp.Run(tab, chromedp.Poll[string](`document.body.dataset.ready`)); err != nil {
		t.Fatalf("the application page did not load the SDK: %v", err)
	}
	return tab
}

// result waits for authenticate's promise to settle in the application tab.
func result(t *testing.T, tab context.Context) (settled string, value any) {
	t.Helper()
	settled, err := chromedp.Run(tab, chromedp.Poll[string](`document.getElementById("result").dataset.done`, chromedp.WithPollingTimeout(60*time.Second)))
	if err != nil {
		t.Fatalf("the promise did not settle: %v", err)
	}
	text, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.getElementById("result").textContent`))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(text), &value); err != nil {
		t.Fatalf("result %q: %v", text, err)
	}
	return settled, value
}

// consentIn plays the user on the provider's page in ctx.
func consentIn(t *testing.T, ctx context.Context, username string) {
	t.Helper()
	if err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), username),
	); err != nil {
		t.Fatalf("consent page: %v", err)
	}
	clickNavigating(t, ctx, "allow")
}

// clickNavigating clicks a button that submits a form. The page may be gone
// (navigated, or the popup closed) before the click's answer arrives; that
// is the click working, and the caller checks the outcome.
func clickNavigating(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	err := chromedp.Do(ctx, chromedp.Click(chromedp.ID(id)))
	if err != nil && !strings.Contains(err.Error(), "navigated or closed") {
		t.Fatalf("clicking #%s: %v", id, err)
	}
}

func TestBrowserPopupReconnectsRevokedAccount(t *testing.T) {
	b := newBrowserEnv(t)
	a, old := b.seedAccount("alice", account.StatusNeedsReauth, map[string]any{"upstream_user_id": "alice"})
	b.auth.RevokeSubject("alice")
	lt := b.linkToken(map[string]any{"integrated_account_id": a.ID})
	tab := b.openApp(t, lt.LinkToken)

	popupCh := chromedp.WaitNewTarget(tab, func(info *target.Info) bool { return strings.Contains(info.URL, "/connect-account") })
	if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("popup"))); err != nil {
		t.Fatalf("clicking connect: %v", err)
	}
	var popupID target.ID
	select {
	case popupID = <-popupCh:
	case <-tab.Done():
		t.Fatal("no popup opened")
	}
	popup, cancel := chromedp.NewContext(tab, chromedp.WithTargetID(popupID))
	defer cancel()
	if err := chromedp.Do(popup, chromedp.WaitVisible(chromedp.ID("reconnect-note"))); err != nil {
		t.Fatalf("connect page in the popup: %v", err)
	}
	clickNavigating(t, popup, "connect")
	consentIn(t, popup, "alice")

	settled, v := result(t, tab)
	m, _ := v.(map[string]any)
	if settled != "resolved" || m["result"] != "success" || m["integrated_account_id"] != a.ID || m["integration"] != "acme" || m["is_truto"] != true {
		t.Fatalf("authenticate %s with %v", settled, v)
	}
	got := b.account(a.ID)
	if got.Status != account.StatusActive || got.Credentials.AccessToken == old.access || got.Credentials.RefreshToken == old.refresh {
		t.Errorf("account after reconnect = %+v", got)
	}
	if sub, ok := b.auth.ValidAccessToken(got.Credentials.AccessToken); !ok || sub != "alice" {
		t.Errorf("the stored access token is not alice's live token")
	}
	if ev := b.outbox(); strings.Join(ev, ",") != account.EventUpdated+","+account.EventActive {
		t.Errorf("events = %v, want updated, active", ev)
	}
	// The SDK closes the popup once the result arrived.
	waitGone(t, tab, popupID)
}

// waitGone waits until the browser no longer has the target id.
func waitGone(t *testing.T, ctx context.Context, id target.ID) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		infos, err := chromedp.Targets(ctx)
		if err != nil {
			t.Fatalf("listing targets: %v", err)
		}
		found := false
		for _, info := range infos {
			found = found || info.TargetID == id
		}
		if !found {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("target %s still open", id)
		case <-tick.C:
		}
	}
}

// waitTarget waits until the browser has a target matching match.
func waitTarget(t *testing.T, ctx context.Context, match func(*target.Info) bool) target.ID {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		infos, err := chromedp.Targets(ctx)
		if err != nil {
			t.Fatalf("listing targets: %v", err)
		}
		for _, info := range infos {
			if match(info) {
				return info.TargetID
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("the expected target never appeared")
		case <-tick.C:
		}
	}
}

// clickInOverlay clicks the element with id inside the SDK's overlay frame,
// a same-site frame whose document may still be loading.
func clickInOverlay(t *testing.T, tab context.Context, id string) {
	t.Helper()
	deadline, _ := tab.Deadline()
	for {
		nodes, err := chromedp.Run(tab, chromedp.Nodes(chromedp.CSS("div[data-linkgate-overlay] iframe")))
		if err != nil {
			t.Fatalf("finding the overlay frame: %v", err)
		}
		// Each try is short: a try may start on the frame's previous document.
		try, cancel := context.WithTimeout(tab, 2*time.Second)
		err = chromedp.Do(try, chromedp.WaitVisible(chromedp.ID(id), chromedp.FromNode(nodes[0])), chromedp.Click(chromedp.ID(id), chromedp.FromNode(nodes[0])))
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("clicking #%s in the overlay frame: %v", id, err)
		}
	}
}

func TestBrowserIframeReconnect(t *testing.T) {
	b := newBrowserEnv(t)
	a, old := b.seedAccount("bea", account.StatusNeedsReauth, nil)
	lt := b.linkToken(map[string]any{"integrated_account_id": a.ID})
	tab := b.openApp(t, lt.LinkToken)
	if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("iframe"))); err != nil {
		t.Fatalf("clicking connect: %v", err)
	}
	clickInOverlay(t, tab, "connect")

	// The provider's page is on another site: Chrome runs it as a target of
	// its own inside the overlay.
	frameID := waitTarget(t, tab, func(info *target.Info) bool {
		return info.Type == "iframe" && strings.HasPrefix(info.URL, b.auth.URL())
	})
	frame, cancel := chromedp.NewContext(tab, chromedp.WithTargetID(frameID))
	defer cancel()
	consentIn(t, frame, "bea")

	settled, v := result(t, tab)
	m, _ := v.(map[string]any)
	if settled != "resolved" || m["result"] != "success" || m["integrated_account_id"] != a.ID {
		t.Fatalf("authenticate %s with %v", settled, v)
	}
	if gone, err := chromedp.Run(tab, chromedp.Evaluate[bool](`document.querySelector("[data-linkgate-overlay]") === null`)); err != nil || !gone {
		t.Errorf("the overlay stayed after the result (%v)", err)
	}
	got := b.account(a.ID)
	if got.Status != account.StatusActive || got.Credentials.AccessToken == old.access {
		t.Errorf("account after reconnect = %+v", got)
	}
	if ev := b.outbox(); strings.Join(ev, ",") != account.EventUpdated+","+account.EventActive {
		t.Errorf("events = %v, want updated, active", ev)
	}
}

func TestBrowserLinkSDKEdges(t *testing.T) {
	b := newBrowserEnv(t)

	t.Run("used link token rejects at once", func(t *testing.T) {
		lt := b.linkToken(map[string]any{"tenant_id": "tenant-used", "integration": "keyco"})
		if r := b.postForm(b.public+"/connect-account", url.Values{"link_token": {lt.LinkToken}, "api_key": {goodAPIKey}}); r.status != http.StatusOK {
			t.Fatalf("spending the link token = %d", r.status)
		}
		tab := b.openApp(t, lt.LinkToken)
		if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("popup"))); err != nil {
			t.Fatalf("clicking connect: %v", err)
		}
		settled, v := result(t, tab)
		m, _ := v.(map[string]any)
		if settled != "rejected" || m["result"] != "error" || m["error_type"] != "invalid_token" || m["is_truto"] != true {
			t.Fatalf("authenticate %s with %v, want a rejection with invalid_token", settled, v)
		}
	})

	t.Run("closing the popup rejects with closed", func(t *testing.T) {
		lt := b.linkToken(map[string]any{"tenant_id": "tenant-closed", "integration": "acme"})
		tab := b.openApp(t, lt.LinkToken)
		popupCh := chromedp.WaitNewTarget(tab, func(info *target.Info) bool { return strings.Contains(info.URL, "/connect-account") })
		if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("popup"))); err != nil {
			t.Fatalf("clicking connect: %v", err)
		}
		popup, cancel := chromedp.NewContext(tab, chromedp.WithTargetID(<-popupCh))
		defer cancel()
		if err := chromedp.Do(popup, chromedp.WaitVisible(chromedp.ID("connect"))); err != nil {
			t.Fatalf("connect page in the popup: %v", err)
		}
		// A message that does not come from the popup is ignored, even one
		// that claims success.
		if _, err := chromedp.Run(tab, chromedp.Evaluate[any](`window.postMessage({is_truto: true, result: "success", integration: "acme", integrated_account_id: "forged"}, "*")`)); err != nil {
			t.Fatal(err)
		}
		// The user closes the window instead of connecting.
		if err := chromedp.Cancel(popup); err != nil {
			t.Fatalf("closing the popup: %v", err)
		}
		settled, v := result(t, tab)
		if settled != "rejected" || v != "closed" {
			t.Fatalf("authenticate %s with %v, want a rejection with \"closed\"", settled, v)
		}
		if r := b.get(lt.URL); r.status != http.StatusOK {
			t.Errorf("the link token after closing = %d, want still usable", r.status)
		}
	})

	t.Run("a blocked popup rejects with blocked", func(t *testing.T) {
		lt := b.linkToken(map[string]any{"tenant_id": "tenant-blocked", "integration": "acme"})
		tab := b.openApp(t, lt.LinkToken)
		if _, err := chromedp.Run(tab, chromedp.Evaluate[any](`window.connectBlocked()`)); err != nil {
			t.Fatalf("calling authenticate: %v", err)
		}
		settled, v := result(t, tab)
		if settled != "rejected" || v != "blocked" {
			t.Fatalf("authenticate %s with %v, want a rejection with \"blocked\"", settled, v)
		}
	})

	t.Run("same window returns to the redirect_uri", func(t *testing.T) {
		lt := b.linkToken(map[string]any{"tenant_id": "tenant-same", "integration": "acme", "redirect_uri": b.app + "/done"})
		tab := b.openApp(t, lt.LinkToken)
		clickNavigating(t, tab, "same")
		if err := chromedp.Do(tab, chromedp.WaitVisible(chromedp.ID("connect"))); err != nil {
			t.Fatalf("connect page in the same window: %v", err)
		}
		clickNavigating(t, tab, "connect")
		consentIn(t, tab, "sam")
		var back *url.URL
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for back == nil {
			// Reading the location fails while the tab navigates; try again.
			loc, err := chromedp.Run(tab, chromedp.Location())
			if err == nil && strings.HasPrefix(loc, b.app+"/done?") {
				back, _ = url.Parse(loc)
				break
			}
			select {
			case <-tab.Done():
				t.Fatalf("never returned to the application; last at %s (%v)", loc, err)
			case <-tick.C:
			}
		}
		accts := b.accountsOf("tenant-same")
		if len(accts) != 1 {
			t.Fatalf("%d accounts", len(accts))
		}
		q := back.Query()
		if q.Get("result") != "success" || q.Get("integration") != "acme" || q.Get("integrated_account_id") != accts[0].ID {
			t.Errorf("returned with %s", back.RawQuery)
		}
	})
}

// TestBrowserForwardedAuthorizeURLIsRefused plays the attack in Chromium:
// the attacker opens his magic link in his browser and presses connect; he
// copies the provider's authorization URL his browser was sent to and sends
// it to a victim, who opens it in her own browser (another browser context,
// with its own cookies) and approves at the provider. The callback must
// refuse in her browser, and nothing is stored.
func TestBrowserForwardedAuthorizeURLIsRefused(t *testing.T) {
	b := newBrowserEnv(t)
	for _, reconnect := range []bool{true, false} {
		name := "new connection"
		if reconnect {
			name = "reconnect"
		}
		t.Run(name, func(t *testing.T) {
			tenant := "tenant-fwd-" + strings.ReplaceAll(name, " ", "-")
			body := map[string]any{"tenant_id": tenant, "integration": "acme"}
			var before *account.Account
			if reconnect {
				seeded, _ := b.seedAccount("mallory-"+tenant, account.StatusNeedsReauth, nil)
				before = b.account(seeded.ID)
				body = map[string]any{"integrated_account_id": seeded.ID}
			}
			lt := b.linkToken(body)
			b.outbox()

			attacker, cancelA := testenv.NewTab(t, b.ctx, flowBudget, chromedp.WithNewBrowserContext())
			defer cancelA()
			if err := chromedp.Do(attacker, chromedp.Navigate(lt.URL), chromedp.WaitVisible(chromedp.ID("connect"))); err != nil {
				t.Fatalf("the attacker's connect page: %v", err)
			}
			clickNavigating(t, attacker, "connect")
			if err := chromedp.Do(attacker, chromedp.WaitVisible(chromedp.ID("username"))); err != nil {
				t.Fatalf("the provider's page in the attacker's browser: %v", err)
			}
			authorize, err := chromedp.Run(attacker, chromedp.Location())
			if err != nil || !strings.HasPrefix(authorize, b.auth.AuthorizeURL()+"?") {
				t.Fatalf("the attacker's browser is at %q (%v), want the provider's authorization URL", authorize, err)
			}

			victim, cancelV := testenv.NewTab(t, b.ctx, flowBudget, chromedp.WithNewBrowserContext())
			defer cancelV()
			if err := chromedp.Do(victim, chromedp.Navigate(authorize)); err != nil {
				t.Fatalf("the victim opening the forwarded URL: %v", err)
			}
			consentIn(t, victim, "victim")
			if err := chromedp.Do(victim, chromedp.WaitVisible(chromedp.ID("result-message"))); err != nil {
				t.Fatalf("the page after the victim's consent: %v", err)
			}
			// Read in one evaluation: a node id from the wait can be stale
			// by the next call when the page's document changes in between
			// (seen on a busy machine).
			msg, err := chromedp.Run(victim, chromedp.Poll[string](`(document.getElementById("result-message") || {}).textContent || ""`))
			if err != nil || !strings.Contains(msg, "was not started in this browser") {
				t.Fatalf("the victim's browser says %q (%v), want a refusal", msg, err)
			}

			if reconnect {
				after := b.account(before.ID)
				if after.Credentials != before.Credentials || after.Status != before.Status || after.Version != before.Version {
					t.Errorf("the victim's grant landed in the attacker's account: %+v", after)
				}
				if sub, ok := b.auth.ValidAccessToken(after.Credentials.AccessToken); ok && sub == "victim" {
					t.Error("the account holds the victim's token")
				}
			} else if n := len(b.accountsOf(tenant)); n != 0 {
				t.Errorf("the victim's grant created %d accounts", n)
			}
			if ev := b.outbox(); len(ev) != 0 {
				t.Errorf("events %v after a refused answer", ev)
			}
		})
	}
}

// TestBrowserModesAcrossSites connects and reconnects in each mode of the
// Link SDK from an application on another site than the gateway, with
// Chromium's third-party cookie restriction on: the browser binding of the
// state must hold in a popup, in the same window, and in an overlay frame,
// where only a partitioned cookie comes back.
func TestBrowserModesAcrossSites(t *testing.T) {
	b := newCrossSiteBrowserEnv(t)
	for _, mode := range []string{"popup", "iframe", "same"} {
		for _, reconnect := range []bool{true, false} {
			name := mode + "/new"
			if reconnect {
				name = mode + "/reconnect"
			}
			t.Run(name, func(t *testing.T) {
				user := "u-" + strings.ReplaceAll(name, "/", "-")
				tenant := "tenant-" + user
				body := map[string]any{"tenant_id": tenant, "integration": "acme", "redirect_uri": b.app + "/done"}
				var seeded *account.Account
				if reconnect {
					seeded, _ = b.seedAccount(user, account.StatusNeedsReauth, nil)
					body = map[string]any{"integrated_account_id": seeded.ID, "redirect_uri": b.app + "/done"}
				}
				lt := b.linkToken(body)
				b.outbox()
				tab := b.openApp(t, lt.LinkToken)
				restrictThirdPartyCookies(t, tab)

				var id string
				switch mode {
				case "popup":
					popupCh := chromedp.WaitNewTarget(tab, func(info *target.Info) bool { return strings.Contains(info.URL, "/connect-account") })
					if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("popup"))); err != nil {
						t.Fatalf("clicking connect: %v", err)
					}
					var popupID target.ID
					select {
					case popupID = <-popupCh:
					case <-tab.Done():
						t.Fatal("no popup opened")
					}
					popup, cancel := chromedp.NewContext(tab, chromedp.WithTargetID(popupID))
					defer cancel()
					if err := chromedp.Do(popup, chromedp.WaitVisible(chromedp.ID("connect"))); err != nil {
						t.Fatalf("connect page in the popup: %v", err)
					}
					clickNavigating(t, popup, "connect")
					consentIn(t, popup, user)
					id = settledWithSuccess(t, tab)
				case "iframe":
					if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("iframe"))); err != nil {
						t.Fatalf("clicking connect: %v", err)
					}
					// Every frame is on a site of its own: Chrome runs each
					// document of the overlay as a target.
					connect := frameTarget(t, tab, b.public+"/connect-account")
					clickNavigating(t, connect, "connect")
					consentIn(t, frameTarget(t, tab, b.auth.URL()), user)
					id = settledWithSuccess(t, tab)
				case "same":
					clickNavigating(t, tab, "same")
					if err := chromedp.Do(tab, chromedp.WaitVisible(chromedp.ID("connect"))); err != nil {
						t.Fatalf("connect page in the same window: %v", err)
					}
					clickNavigating(t, tab, "connect")
					consentIn(t, tab, user)
					back := waitLocation(t, tab, b.app+"/done?")
					if back.Query().Get("result") != "success" {
						t.Fatalf("returned with %s", back.RawQuery)
					}
					id = back.Query().Get("integrated_account_id")
				}

				want := account.EventCreated + "," + account.EventActive
				if reconnect {
					want = account.EventUpdated + "," + account.EventActive
					if id != seeded.ID {
						t.Fatalf("reconnected account %q, want %q", id, seeded.ID)
					}
				}
				got := b.account(id)
				if sub, ok := b.auth.ValidAccessToken(got.Credentials.AccessToken); got.Status != account.StatusActive || !ok || sub != user {
					t.Errorf("account after the flow = %+v", got)
				}
				if ev := b.outbox(); strings.Join(ev, ",") != want {
					t.Errorf("events = %v, want %s", ev, want)
				}
			})
		}
	}
}

// restrictThirdPartyCookies turns on Chromium's third-party cookie
// restriction for the tab, as a user who blocks them has it.
func restrictThirdPartyCookies(t *testing.T, tab context.Context) {
	t.Helper()
	err := chromedp.Do(tab, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, network.SetCookieControls, network.SetCookieControlsParams{EnableThirdPartyCookieRestriction: true})
		return err
	}), chromedp.Reload())
	if err != nil {
		t.Fatalf("restricting third-party cookies: %v", err)
	}
	if _, err := chromedp.Run(tab, chromedp.Poll[string](`document.body.dataset.ready`)); err != nil {
		t.Fatalf("the application page after reload: %v", err)
	}
}

// frameTarget waits for a frame target whose URL starts with prefix and
// returns a context on it.
func frameTarget(t *testing.T, tab context.Context, prefix string) context.Context {
	t.Helper()
	id := waitTarget(t, tab, func(info *target.Info) bool {
		return info.Type == "iframe" && strings.HasPrefix(info.URL, prefix)
	})
	ctx, cancel := chromedp.NewContext(tab, chromedp.WithTargetID(id))
	t.Cleanup(cancel)
	return ctx
}

// settledWithSuccess waits for authenticate to resolve with a success and
// returns the account id it names.
func settledWithSuccess(t *testing.T, tab context.Context) string {
	t.Helper()
	settled, v := result(t, tab)
	m, _ := v.(map[string]any)
	if settled != "resolved" || m["result"] != "success" || m["is_truto"] != true {
		t.Fatalf("authenticate %s with %v", settled, v)
	}
	id, _ := m["integrated_account_id"].(string)
	return id
}

// waitLocation waits until the tab is at a URL starting with prefix.
func waitLocation(t *testing.T, tab context.Context, prefix string) *url.URL {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		// Reading the location fails while the tab navigates; try again.
		loc, err := chromedp.Run(tab, chromedp.Location())
		if err == nil && strings.HasPrefix(loc, prefix) {
			u, _ := url.Parse(loc)
			return u
		}
		select {
		case <-tab.Done():
			t.Fatalf("never reached %s; last at %s (%v)", prefix, loc, err)
		case <-tick.C:
		}
	}
}
