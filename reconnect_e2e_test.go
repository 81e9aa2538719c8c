package linkgate_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/linkgate/linkgate/internal/testenv"
)

// text reads the text of the element with the given id.
func text(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById(`+"\""+id+"\""+`).textContent`))
	if err != nil {
		t.Fatalf("reading #%s: %v", id, err)
	}
	return s
}

// click clicks a button that submits a form; the page may be gone before
// the click's answer arrives, which is the click working.
func click(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	err := chromedp.Do(ctx, chromedp.Click(chromedp.ID(id)))
	if err != nil && !strings.Contains(err.Error(), "navigated or closed") {
		t.Fatalf("clicking #%s: %v", id, err)
	}
}

// TestReauthorizationGuide walks the whole reauthorization story through a
// real Caddy: a revoked grant raises authentication_error, the application
// asks for a link token, the end user opens the magic link in Chromium and
// re-authorizes at the provider, and the same account works again.
func TestReauthorizationGuide(t *testing.T) {
	w := newWorld(t)
	id, oldAccess, _ := w.importOAuth(t, "dana", time.Now().Add(time.Hour))
	w.as.RevokeSubject("dana")

	if status, body := w.proxyAs(t, id, "/contacts"); status != http.StatusUnauthorized {
		t.Fatalf("revoked account: %d %s", status, body)
	}
	w.waitEvents(t, "integrated_account:authentication_error", id, 1)

	// The application creates a link token for the account.
	status, body := w.do("POST", "/link-token", map[string]any{"integrated_account_id": id})
	if status != http.StatusCreated {
		t.Fatalf("link token: %d %s", status, body)
	}
	link := mustJSON(t, body)
	magic := link["url"].(string)
	if !strings.HasPrefix(magic, w.base+"/connect-account?link_token=") {
		t.Fatalf("magic link %q is not on the gateway's public URL", magic)
	}

	// The end user opens the magic link, re-authorizes and consents.
	ctx := testenv.NewBrowser(t, 60*time.Second)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(magic),
		chromedp.WaitVisible(chromedp.ID("connect")),
	); err != nil {
		t.Fatalf("the magic link: %v", err)
	}
	heading := text(t, ctx, "heading")
	click(t, ctx, "connect")
	if err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), "dana"),
	); err != nil {
		t.Fatalf("the provider's consent page: %v", err)
	}
	click(t, ctx, "allow")
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("result-message"))); err != nil {
		t.Fatalf("the result page: %v", err)
	}
	result := text(t, ctx, "result-message")
	if !strings.Contains(heading, "oauth") {
		t.Errorf("connect page heading %q does not name the integration", heading)
	}
	if !strings.Contains(result, "Connection successful. You can close this tab.") {
		t.Fatalf("after consent the page says %q", result)
	}

	// Same account, active again, and the next proxied call carries the new token.
	status, body = w.do("GET", "/integrated-account/"+id, nil)
	if m := mustJSON(t, body); status != 200 || m["status"] != "active" || m["last_error"] != nil {
		t.Fatalf("account after reconnect: %s", body)
	}
	w.oauth.Reset()
	if status, body := w.proxyAs(t, id, "/me"); status != http.StatusOK || !strings.Contains(string(body), "dana") {
		t.Fatalf("proxy after reconnect: %d %s", status, body)
	}
	if r, _ := w.oauth.Last(); r.Header.Get("Authorization") == "Bearer "+oldAccess {
		t.Error("the upstream got the old token")
	}
	w.waitEvents(t, "integrated_account:updated", id, 1)
	w.waitEvents(t, "integrated_account:active", id, 2) // import, then reconnect

	// The magic link was single use.
	if err := chromedp.Do(ctx, chromedp.Navigate(magic), chromedp.WaitVisible(chromedp.ID("result-message"))); err != nil {
		t.Fatal(err)
	}
	if result := text(t, ctx, "result-message"); strings.Contains(result, "successful") {
		t.Errorf("a used magic link still works: %q", result)
	}
}

// sdkPage is an application page on its own origin that loads the Link SDK
// from the gateway and connects from a click.
const sdkPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>app</title></head>
<body>
<button id="popup">Reconnect in a popup</button>
<pre id="result"></pre>
<script type="module">
import { authenticate } from "%[1]s/connect-account/sdk.js";
const out = document.getElementById("result");
const token = new URLSearchParams(location.search).get("lt");
function run(opts) {
  authenticate(token, opts).then(
    (r) => { out.textContent = JSON.stringify(r); out.dataset.done = "resolved"; },
    (e) => { out.textContent = JSON.stringify(e); out.dataset.done = "rejected"; });
}
document.getElementById("popup").addEventListener("click", () => run({ baseUrl: "%[1]s" }));
document.body.dataset.ready = "yes";
</script>
</body></html>`

// TestLinkSDKThroughCaddy reconnects a revoked account from an application
// page with the Link SDK the gateway serves, in popup mode. (Iframe mode, and
// the SDK's refusals, are driven in Chromium by linkflow's own tests.)
func TestLinkSDKThroughCaddy(t *testing.T) {
	w := newWorld(t)
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(rw, sdkPage, w.base)
	}))
	app.Listener.Close()
	app.Listener = w.appListener
	app.Start()
	t.Cleanup(app.Close)
	browser := testenv.NewBrowser(t, 120*time.Second)

	for _, mode := range []string{"popup"} {
		t.Run(mode, func(t *testing.T) {
			user := "sdk-" + mode
			id, _, _ := w.importOAuth(t, user, time.Now().Add(time.Hour))
			w.as.RevokeSubject(user)
			if status, _ := w.proxyAs(t, id, "/contacts"); status != http.StatusUnauthorized {
				t.Fatalf("revoked account answered %d", status)
			}
			status, body := w.do("POST", "/link-token", map[string]any{"integrated_account_id": id, "redirect_uri": w.appOrigin + "/done"})
			if status != http.StatusCreated {
				t.Fatalf("link token: %d %s", status, body)
			}
			token := mustJSON(t, body)["link_token"].(string)

			tab, cancel := testenv.NewTab(t, browser, 90*time.Second)
			defer cancel()
			if err := chromedp.Do(tab, chromedp.Navigate(w.appOrigin+"/?lt="+token)); err != nil {
				t.Fatal(err)
			}
			if _, err := chromedp.Run(tab, chromedp.Poll[string](`document.body.dataset.ready`)); err != nil {
				t.Fatalf("the application page did not load the SDK: %v", err)
			}
			// The connect page opens in a popup window: a new target.
			opened := chromedp.WaitNewTarget(tab, func(info *target.Info) bool {
				return strings.Contains(info.URL, "/connect-account")
			})
			if err := chromedp.Do(tab, chromedp.Click(chromedp.ID(mode))); err != nil {
				t.Fatal(err)
			}
			var targetID target.ID
			select {
			case targetID = <-opened:
			case <-time.After(30 * time.Second):
				t.Fatal("the connect page did not open")
			}
			page, cancelPage := chromedp.NewContext(tab, chromedp.WithTargetID(targetID))
			defer cancelPage()
			if err := chromedp.Do(page, chromedp.WaitVisible(chromedp.ID("connect"))); err != nil {
				t.Fatalf("connect page: %v", err)
			}
			click(t, page, "connect")
			if err := chromedp.Do(page,
				chromedp.WaitVisible(chromedp.ID("username")),
				chromedp.SendKeys(chromedp.ID("username"), user),
			); err != nil {
				t.Fatalf("consent page: %v", err)
			}
			click(t, page, "allow")

			settled, err := chromedp.Run(tab, chromedp.Poll[string](`document.getElementById("result").dataset.done`, chromedp.WithPollingTimeout(60*time.Second)))
			if err != nil {
				t.Fatalf("authenticate() did not settle: %v", err)
			}
			result := text(t, tab, "result")
			if settled != "resolved" || !strings.Contains(result, `"result":"success"`) || !strings.Contains(result, id) {
				t.Fatalf("authenticate() %s with %s", settled, result)
			}
			if status, body := w.proxyAs(t, id, "/me"); status != http.StatusOK || !strings.Contains(string(body), user) {
				t.Fatalf("proxy after reconnect: %d %s", status, body)
			}
			w.waitEvents(t, "integrated_account:updated", id, 1)
			w.waitEvents(t, "integrated_account:active", id, 2)
		})
	}
}
