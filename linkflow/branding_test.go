package linkflow_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/linkflow"
)

func TestConnectPageShowsDisplayNameHelpAndBranding(t *testing.T) {
	h := newHarness(t, harnessOptions{
		configure: func(ints map[string]*account.Integration) {
			ints["keyco"].DisplayName = "Key Company"
			ints["keyco"].Help = "Find your API key under Settings → API in Key Company."
		},
		branding: &linkflow.Branding{Name: "Widget <b>Co</b>", LogoURL: "https://cdn.widget.example/logo.png", PrimaryColor: "#0F766E"},
	})
	lt := h.linkToken(map[string]any{"tenant_id": "tenant-brand", "integration": "keyco"})
	r := h.get(lt.URL)
	if r.status != http.StatusOK {
		t.Fatalf("connect page = %d", r.status)
	}
	for _, want := range []string{
		"<title>Connect Key Company · Widget &lt;b&gt;Co&lt;/b&gt;</title>",
		`<span class="monogram">KC</span>`,
		"Find your API key under Settings → API in Key Company.",
		"Widget &lt;b&gt;Co&lt;/b&gt; asks you to connect your Key Company account.",
		`<img src="https://cdn.widget.example/logo.png" alt="Widget &lt;b&gt;Co&lt;/b&gt;"`,
		h.public + "/connect-account/brand.css",
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("page lacks %q:\n%s", want, r.body)
		}
	}
	if strings.Contains(r.body, "tenant-brand") || strings.Contains(r.body, "<b>Co") {
		t.Errorf("the page shows the tenant id or unescaped branding")
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "img-src data: https://cdn.widget.example;") {
		t.Errorf("CSP %q does not allow the product's logo, and only it", csp)
	}
	css := h.get(h.public + "/connect-account/brand.css")
	if css.status != http.StatusOK || !strings.Contains(css.body, "--brand: #0f766e; --brand-fg: #ffffff;") ||
		!strings.HasPrefix(css.header.Get("Content-Type"), "text/css") {
		t.Errorf("brand.css = %d %q:\n%s", css.status, css.header.Get("Content-Type"), css.body)
	}

	// A light primary colour gets dark button text.
	light, err := linkflow.New(h.store, h.ints, linkflow.Options{PublicURL: h.public, SecretKeys: [][]byte{h.key},
		Branding: &linkflow.Branding{PrimaryColor: "#ffd33d"}})
	if err != nil {
		t.Fatal(err)
	}
	rec := postRecorderGET(t, light, "/connect-account/brand.css")
	if !strings.Contains(rec, "--brand-fg: #111111;") {
		t.Errorf("brand.css for a light colour = %q", rec)
	}

	// Success is said once, names the integration, and shows no id.
	r = h.postForm(h.public+"/connect-account", url.Values{"link_token": {lt.LinkToken}, "api_key": {goodAPIKey}})
	if r.status != http.StatusOK {
		t.Fatalf("connecting = %d:\n%s", r.status, r.body)
	}
	if n := strings.Count(r.body, "Connection successful"); n != 1 {
		t.Errorf("the success page says Connection successful %d times:\n%s", n, r.body)
	}
	// The id is posted to the application, never shown.
	shown, _, _ := strings.Cut(r.body, `<script type="application/json"`)
	got := h.accountsOf("tenant-brand")
	if len(got) != 1 || strings.Contains(shown, got[0].ID) || !strings.Contains(shown, "Key Company connected") {
		t.Errorf("success page names the account id or not the integration:\n%s", r.body)
	}
}

// postRecorderGET serves one GET from svc.
func postRecorderGET(t *testing.T, svc http.Handler, path string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	svc.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://localhost"+path, nil))
	return rec.Body.String()
}

func TestBrandingIsCheckedStrictly(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for _, b := range []linkflow.Branding{
		{PrimaryColor: "red"},
		{PrimaryColor: "#12345"},
		{PrimaryColor: "#123456; } body { display: none"},
		{LogoURL: "javascript:alert(1)"},
		{LogoURL: "data:image/png;base64,AAAA"},
		{LogoURL: "http://cdn.example.com/logo.png"},
		{LogoURL: "https://user:pass@cdn.example.com/logo.png"},
		{LogoURL: "https://cdn.example.com/logo.png#x"},
		{LogoURL: `https://cdn.example.com/a"onerror="x.png`},
		{LogoURL: "https://cdn.example.com/a.png; script-src *"},
		{LogoURL: "/logo.png"},
		{Name: strings.Repeat("n", 81)},
		{Name: "line\nbreak"},
	} {
		_, err := linkflow.New(h.store, h.ints, linkflow.Options{PublicURL: h.public, SecretKeys: [][]byte{h.key}, Branding: &b})
		if err == nil || !strings.Contains(err.Error(), "branding") {
			t.Errorf("branding %+v accepted (err %v)", b, err)
		}
	}
	for _, b := range []linkflow.Branding{
		{Name: "Acme CRM", LogoURL: "https://acme.example/static/logo.svg?v=2", PrimaryColor: "#1A73E8"},
		{LogoURL: "http://localhost:8080/logo.png"},
	} {
		if _, err := linkflow.New(h.store, h.ints, linkflow.Options{PublicURL: h.public, SecretKeys: [][]byte{h.key}, Branding: &b}); err != nil {
			t.Errorf("branding %+v refused: %v", b, err)
		}
	}
}

func TestBrowserCloseButtonOnlyInAPopup(t *testing.T) {
	b := newBrowserEnv(t)
	// An error page (an unknown link token) is a result page with Close.
	lt := b.linkToken(map[string]any{"tenant_id": "tenant-close", "integration": "keyco"})
	page := b.public + "/connect-account?link_token=" + url.QueryEscape("not-a-token-"+lt.LinkToken[:4])

	// Opened on its own, as from an e-mail: no Close button.
	tab, cancel := chromedp.NewContext(b.ctx)
	defer cancel()
	if err := chromedp.Do(tab, chromedp.Navigate(page), chromedp.WaitVisible(chromedp.ID("result-message"))); err != nil {
		t.Fatal(err)
	}
	shown, err := chromedp.Run(tab, chromedp.Poll[bool](`document.readyState === "complete" && getComputedStyle(document.getElementById("close")).display === "none"`))
	if err != nil || !shown {
		t.Fatalf("Close is shown in a tab that cannot close itself: %v", err)
	}

	// Opened by the application's script: Close shows and closes.
	app := b.openApp(t, lt.LinkToken)
	popupCh := chromedp.WaitNewTarget(app, func(info *target.Info) bool { return strings.Contains(info.URL, "/connect-account") })
	if _, err := chromedp.Run(app, chromedp.Evaluate[bool](`!!window.open(`+jsString(page)+`, "linkgate", "popup")`)); err != nil {
		t.Fatal(err)
	}
	var popupID target.ID
	select {
	case popupID = <-popupCh:
	case <-app.Done():
		t.Fatal("no popup opened")
	}
	popup, cancelPopup := chromedp.NewContext(app, chromedp.WithTargetID(popupID))
	defer cancelPopup()
	if err := chromedp.Do(popup, chromedp.WaitVisible(chromedp.ID("close")), chromedp.Click(chromedp.ID("close"))); err != nil {
		t.Fatalf("Close in a popup: %v", err)
	}
	waitGone(t, app, popupID)
}

func jsString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
