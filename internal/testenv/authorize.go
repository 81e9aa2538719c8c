package testenv

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// Endpoint is the server's endpoint for golang.org/x/oauth2.
func (a *AuthServer) Endpoint() oauth2.Endpoint {
	return oauth2.Endpoint{AuthURL: a.AuthorizeURL(), TokenURL: a.TokenURL()}
}

// OAuth2Config is an x/oauth2 configuration for a registered client, with
// the client's secret filled in.
func (a *AuthServer) OAuth2Config(t testing.TB, clientID, redirectURI string, scopes []string) *oauth2.Config {
	t.Helper()
	c, ok := a.clients[clientID]
	if !ok {
		t.Fatalf("client %q is not registered with the auth server", clientID)
	}
	ep := a.Endpoint()
	// A fixed style: x/oauth2's auto-detection retries a failed call with
	// the other style, which would double every counted or faulted call.
	ep.AuthStyle = oauth2.AuthStyleInHeader
	if c.Public {
		ep.AuthStyle = oauth2.AuthStyleInParams
	}
	return &oauth2.Config{
		ClientID:     c.ID,
		ClientSecret: c.Secret,
		Endpoint:     ep,
		RedirectURL:  redirectURI,
		Scopes:       scopes,
	}
}

// Authorize drives the authorization-code flow with PKCE over HTTP, as a
// user typing username and pressing Allow would, and exchanges the code:
// the result is a real grant (it counts as one authorization_code token
// call). The redirect URI is never fetched, so it need not be served.
func (a *AuthServer) Authorize(t testing.TB, clientID, redirectURI, username string, scopes []string) *oauth2.Token {
	t.Helper()
	cfg := a.OAuth2Config(t, clientID, redirectURI, scopes)
	verifier := oauth2.GenerateVerifier()
	state := randomState()
	authURL := cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		t.Fatalf("building the authorize request: %v", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("loading the consent page: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("consent page answered %d (Location %q): %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}

	form, err := url.ParseQuery(strings.SplitN(authURL, "?", 2)[1])
	if err != nil {
		t.Fatalf("reading the authorize URL back: %v", err)
	}
	form.Set("username", username)
	form.Set("action", "allow")
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, a.AuthorizeURL(), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatalf("building the consent form post: %v", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatalf("posting the consent form: %v", err)
	}
	body, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("consent answered %d without a redirect: %s", resp.StatusCode, body)
	}
	q := loc.Query()
	if e := q.Get("error"); e != "" {
		t.Fatalf("authorization failed: %s: %s", e, q.Get("error_description"))
	}
	if q.Get("state") != state {
		t.Fatalf("authorization response carried the wrong state")
	}
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchanging the authorization code: %v", err)
	}
	return tok
}
