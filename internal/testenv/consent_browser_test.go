package testenv

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"
)

// TestConsentPageInChromium clicks through the consent page in a real
// browser, as the hosted connect flow's tests will, and exchanges the code
// the browser brought back.
func TestConsentPageInChromium(t *testing.T) {
	callbacks := make(chan url.Values, 4)
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The browser also asks this origin for /favicon.ico.
		if r.URL.Path == "/callback" {
			callbacks <- r.URL.Query()
		}
		_, _ = w.Write([]byte("<!doctype html><title>back</title>done"))
	}))
	t.Cleanup(cb.Close)
	redirect := cb.URL + "/callback"
	a := NewAuthServer(t, AuthServerOptions{Clients: []Client{{ID: "app", Secret: "s", RedirectURIs: []string{redirect}}}})
	cfg := a.OAuth2Config(t, "app", redirect, []string{"read"})

	ctx := NewBrowser(t, 60*time.Second)

	waitCallback := func() url.Values {
		t.Helper()
		select {
		case q := <-callbacks:
			return q
		case <-ctx.Done():
			t.Fatal("the browser never came back to the redirect URI")
			return nil
		}
	}

	verifier := oauth2.GenerateVerifier()
	err := chromedp.Do(ctx,
		chromedp.Navigate(cfg.AuthCodeURL("browser-state-1", oauth2.S256ChallengeOption(verifier))),
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), "alice"),
		chromedp.Click(chromedp.ID("allow")),
	)
	if err != nil {
		t.Fatalf("clicking Allow: %v", err)
	}
	q := waitCallback()
	if q.Get("state") != "browser-state-1" || q.Get("code") == "" {
		t.Fatalf("Allow brought back state %q, code present %t", q.Get("state"), q.Get("code") != "")
	}
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchanging the browser's code: %v", err)
	}
	if sub, ok := a.ValidAccessToken(tok.AccessToken); !ok || sub != "alice" {
		t.Fatalf("token from the browser flow: %q, %t; want alice, true", sub, ok)
	}

	err = chromedp.Do(ctx,
		chromedp.Navigate(cfg.AuthCodeURL("browser-state-2", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))),
		chromedp.WaitVisible(chromedp.ID("deny")),
		chromedp.Click(chromedp.ID("deny")),
	)
	if err != nil {
		t.Fatalf("clicking Deny: %v", err)
	}
	if q := waitCallback(); q.Get("error") != "access_denied" || q.Get("state") != "browser-state-2" || q.Get("code") != "" {
		t.Fatalf("Deny brought back %v; want error=access_denied with the state and no code", q)
	}
}
