package linkgate_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

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
