package linkgate_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/linkgate/linkgate/internal/testenv"
)

// trutoAppPage is an application page that uses Truto's published Link SDK
// from npm, unchanged, with linkgate as its baseUrl: the modes that can work
// against a self-hosted origin (popup, same window), and a new connection
// whose integration the end user picks.
const trutoAppPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>app</title></head>
<body>
<button id="popup">Reconnect in a popup</button>
<button id="same">Reconnect in this window</button>
<button id="pick">Connect a new account</button>
<pre id="result"></pre>
<script type="module">
import authenticate from "/truto-link-sdk.js";
const gw = %q;
const out = document.getElementById("result");
const params = new URLSearchParams(location.search);
const token = params.get("lt");
function run(opts) {
  authenticate(token, opts).then(
    (r) => { out.textContent = JSON.stringify(r); out.dataset.done = "resolved"; },
    (e) => { out.textContent = JSON.stringify(e); out.dataset.done = "rejected"; });
}
// authenticate runs in the click handler itself, or the popup is blocked.
document.getElementById("popup").addEventListener("click", () => run({ baseUrl: gw, iframe: false }));
document.getElementById("same").addEventListener("click", () => run({ baseUrl: gw, sameWindow: true }));
document.getElementById("pick").addEventListener("click", () => run({ baseUrl: gw, iframe: false, integrations: ["keyed", "oauth"] }));
if (params.get("result")) {
  out.textContent = JSON.stringify(Object.fromEntries(params));
  out.dataset.done = "returned";
}
document.body.dataset.ready = "yes";
</script>
</body></html>`

// serveTrutoApp serves the application page and Truto's Link SDK on ln.
func serveTrutoApp(t *testing.T, ln net.Listener, gateway string, sdk []byte) {
	t.Helper()
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/truto-link-sdk.js" {
			rw.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			_, _ = rw.Write(sdk)
			return
		}
		rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(rw, trutoAppPage, gateway)
	}))
	app.Listener.Close()
	app.Listener = ln
	app.Start()
	t.Cleanup(app.Close)
}

// openApp opens the application page with link token lt in a new tab.
func openApp(t *testing.T, browser context.Context, appURL string) (context.Context, context.CancelFunc) {
	t.Helper()
	// Each flow gets a budget of its own, not what the earlier flows left
	// of the browser's.
	tab, cancel := testenv.NewTab(t, browser, 90*time.Second)
	if err := chromedp.Do(tab, chromedp.Navigate(appURL)); err != nil {
		cancel()
		t.Fatal(err)
	}
	if _, err := chromedp.Run(tab, chromedp.Poll[string](`document.body.dataset.ready`)); err != nil {
		cancel()
		t.Fatalf("the application page did not load Truto's SDK: %v", err)
	}
	return tab, cancel
}

// clickForPopup clicks button id on tab and returns the popup it opens.
func clickForPopup(t *testing.T, tab context.Context, id string) (context.Context, context.CancelFunc) {
	t.Helper()
	opened := chromedp.WaitNewTarget(tab, func(info *target.Info) bool {
		return strings.Contains(info.URL, "/connect-account")
	})
	if err := chromedp.Do(tab, chromedp.Click(chromedp.ID(id))); err != nil {
		t.Fatal(err)
	}
	select {
	case targetID := <-opened:
		return chromedp.NewContext(tab, chromedp.WithTargetID(targetID))
	case <-time.After(30 * time.Second):
		t.Fatal("the connect page did not open in a popup")
	}
	return nil, nil
}

// consentAs signs in at the test provider as user and allows access.
func consentAs(t *testing.T, page context.Context, user string) {
	t.Helper()
	click(t, page, "connect")
	if err := chromedp.Do(page,
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), user),
	); err != nil {
		t.Fatalf("consent page: %v", err)
	}
	click(t, page, "allow")
}

// settled waits for authenticate() on the application page to settle and
// returns how, with what it settled with.
func settled(t *testing.T, tab context.Context) (string, map[string]any) {
	t.Helper()
	// The page may be navigating (same-window mode comes back through the
	// provider and the result page): an evaluation that meets a page
	// without the result, or one being torn down, is tried again.
	deadline := time.Now().Add(60 * time.Second)
	for {
		how, err := chromedp.Run(tab, chromedp.Evaluate[string](`(document.getElementById("result") || {dataset: {}}).dataset.done || ""`))
		if err == nil && how != "" {
			return how, mustJSON(t, []byte(text(t, tab, "result")))
		}
		if time.Now().After(deadline) {
			t.Fatalf("authenticate() did not settle: %v", err)
		}
		select {
		case <-tab.Done():
			t.Fatalf("the tab closed: %v", tab.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestTrutoLinkSDK drives Truto's own Link SDK (npm, unchanged) against a
// real Caddy with linkgate: a popup reconnect, a same-window reconnect that
// comes back to the application's redirect_uri, and a new connection whose
// integration the end user picks on the connect page, limited by the SDK's
// integrations option.
func TestTrutoLinkSDK(t *testing.T) {
	w := newWorld(t)
	sdk := testenv.TrutoLinkSDK(t)
	serveTrutoApp(t, w.appListener, w.base, sdk)
	browser := testenv.NewBrowser(t, 180*time.Second)

	revoked := func(t *testing.T, user string) string {
		id, _, _ := w.importOAuth(t, user, time.Now().Add(time.Hour))
		w.as.RevokeSubject(user)
		if status, _ := w.proxyAs(t, id, "/contacts"); status != http.StatusUnauthorized {
			t.Fatalf("revoked account answered %d", status)
		}
		return id
	}
	linkToken := func(t *testing.T, body map[string]any) string {
		status, b := w.do("POST", "/link-token", body)
		if status != http.StatusCreated {
			t.Fatalf("link token: %d %s", status, b)
		}
		return mustJSON(t, b)["link_token"].(string)
	}

	t.Run("popup reconnect", func(t *testing.T) {
		id := revoked(t, "truto-popup")
		token := linkToken(t, map[string]any{"integrated_account_id": id})
		tab, cancel := openApp(t, browser, w.appOrigin+"/?lt="+token)
		defer cancel()
		page, cancelPage := clickForPopup(t, tab, "popup")
		defer cancelPage()
		consentAs(t, page, "truto-popup")
		how, r := settled(t, tab)
		if how != "resolved" || r["result"] != "success" || r["integration"] != "oauth" || r["integrated_account_id"] != id {
			t.Fatalf("authenticate() %s with %v", how, r)
		}
		if status, body := w.proxyAs(t, id, "/me"); status != http.StatusOK || !strings.Contains(string(body), "truto-popup") {
			t.Fatalf("proxy after reconnect: %d %s", status, body)
		}
	})

	t.Run("same-window reconnect", func(t *testing.T) {
		id := revoked(t, "truto-same")
		token := linkToken(t, map[string]any{"integrated_account_id": id, "redirect_uri": w.appOrigin + "/back"})
		tab, cancel := openApp(t, browser, w.appOrigin+"/?lt="+token)
		defer cancel()
		// The SDK replaces the page with the connect page; the result page
		// sends the browser back to redirect_uri with the result.
		click(t, tab, "same")
		if err := chromedp.Do(tab, chromedp.WaitVisible(chromedp.ID("connect"))); err != nil {
			t.Fatalf("the connect page did not replace the application: %v", err)
		}
		consentAs(t, tab, "truto-same")
		how, r := settled(t, tab)
		if how != "returned" || r["result"] != "success" || r["integration"] != "oauth" || r["integrated_account_id"] != id {
			t.Fatalf("back at the application: %s with %v", how, r)
		}
		if status, body := w.proxyAs(t, id, "/me"); status != http.StatusOK || !strings.Contains(string(body), "truto-same") {
			t.Fatalf("proxy after reconnect: %d %s", status, body)
		}
	})

	t.Run("new connection through the picker", func(t *testing.T) {
		token := linkToken(t, map[string]any{"tenant_id": "picker-tenant"})
		tab, cancel := openApp(t, browser, w.appOrigin+"/?lt="+token)
		defer cancel()
		page, cancelPage := clickForPopup(t, tab, "pick")
		defer cancelPage()
		if err := chromedp.Do(page, chromedp.WaitVisible(chromedp.ID("picker"))); err != nil {
			t.Fatalf("no integration picker: %v", err)
		}
		// The SDK's integrations option narrows the list.
		names, err := chromedp.Run(page, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#picker a")].map(a => a.textContent)`))
		if err != nil || strings.Join(names, ",") != "keyed,oauth" {
			t.Fatalf("picker lists %v (%v), want keyed,oauth", names, err)
		}
		click(t, page, "pick-oauth")
		if err := chromedp.Do(page, chromedp.WaitVisible(chromedp.ID("connect"))); err != nil {
			t.Fatalf("connect page after picking: %v", err)
		}
		consentAs(t, page, "truto-new")
		how, r := settled(t, tab)
		id, _ := r["integrated_account_id"].(string)
		if how != "resolved" || r["result"] != "success" || r["integration"] != "oauth" || id == "" {
			t.Fatalf("authenticate() %s with %v", how, r)
		}
		status, body := w.do("GET", "/integrated-account/"+id, nil)
		a := mustJSON(t, body)
		if status != http.StatusOK || a["tenant_id"] != "picker-tenant" || a["status"] != "active" ||
			a["integration"].(map[string]any)["name"] != "oauth" {
			t.Fatalf("the new account: %d %s", status, body)
		}
		if status, body := w.proxyAs(t, id, "/me"); status != http.StatusOK || !strings.Contains(string(body), "truto-new") {
			t.Fatalf("proxy with the new account: %d %s", status, body)
		}
		w.waitEvents(t, "integrated_account:created", id, 1)
		w.waitEvents(t, "integrated_account:active", id, 1)
	})

	t.Run("popup from an origin that is not allowed", func(t *testing.T) {
		// The same application on 127.0.0.1, which is not in allowed_origins
		// (localhost is): the result cannot be posted to it, so the end
		// user is told to go back to the application.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		serveTrutoApp(t, ln, w.base, sdk)
		other := "http://" + ln.Addr().String()
		id := revoked(t, "truto-elsewhere")
		token := linkToken(t, map[string]any{"integrated_account_id": id})
		tab, cancel := openApp(t, browser, other+"/?lt="+token)
		defer cancel()
		page, cancelPage := clickForPopup(t, tab, "popup")
		defer cancelPage()
		consentAs(t, page, "truto-elsewhere")
		if err := chromedp.Do(page, chromedp.WaitVisible(chromedp.ID("unreachable-note"))); err != nil {
			t.Fatalf("the result page does not tell the end user: %v", err)
		}
		if msg := text(t, page, "result-message"); !strings.Contains(msg, "Connection successful") {
			t.Fatalf("result page says %q", msg)
		}
		if how := text(t, tab, "result"); how != "" {
			t.Fatalf("authenticate() settled with %q: the message reached an origin that is not allowed", how)
		}
		// The account was reconnected all the same.
		if status, body := w.proxyAs(t, id, "/me"); status != http.StatusOK || !strings.Contains(string(body), "truto-elsewhere") {
			t.Fatalf("proxy after reconnect: %d %s", status, body)
		}
	})
}
