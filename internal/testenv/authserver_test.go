package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

const redirectURI = "http://127.0.0.1:9999/callback"

func newTestAuthServer(t *testing.T) *AuthServer {
	t.Helper()
	return NewAuthServer(t, AuthServerOptions{Clients: []Client{
		{ID: "app", Secret: "app-secret", RedirectURIs: []string{redirectURI}},
		{ID: "spa", Public: true, RedirectURIs: []string{redirectURI}},
		{ID: "narrow", Secret: "narrow-secret", RedirectURIs: []string{redirectURI}, Scopes: []string{"read"}},
	}})
}

// refresh presents rt at the token endpoint once.
func refresh(t *testing.T, a *AuthServer, clientID, rt string) (*oauth2.Token, error) {
	t.Helper()
	cfg := a.OAuth2Config(t, clientID, redirectURI, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
}

// errorCode is the OAuth error code of a failed token call, or "".
func errorCode(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

func userinfo(t *testing.T, a *AuthServer, accessToken string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, a.UserinfoURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("calling userinfo: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Sub string `json:"sub"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Sub
}

func TestAuthorizeCodeFlowWithPKCE(t *testing.T) {
	a := newTestAuthServer(t)
	tok := a.Authorize(t, "app", redirectURI, "alice", []string{"read", "write"})
	if tok.AccessToken == "" || tok.RefreshToken == "" {
		t.Fatalf("code exchange gave access %t refresh %t, want both", tok.AccessToken != "", tok.RefreshToken != "")
	}
	if d := time.Until(tok.Expiry); d < 50*time.Minute || d > 61*time.Minute {
		t.Fatalf("access token expires in %v, want about the default hour", d)
	}
	if sub, ok := a.ValidAccessToken(tok.AccessToken); !ok || sub != "alice" {
		t.Fatalf("ValidAccessToken = %q, %t; want alice, true", sub, ok)
	}
	if _, ok := a.ValidAccessToken(tok.RefreshToken); ok {
		t.Fatal("a refresh token passed as an access token")
	}
	if code, sub := userinfo(t, a, tok.AccessToken); code != http.StatusOK || sub != "alice" {
		t.Fatalf("userinfo = %d %q, want 200 alice", code, sub)
	}
	if code, _ := userinfo(t, a, "not-a-token"); code != http.StatusUnauthorized {
		t.Fatalf("userinfo with a bad token = %d, want 401", code)
	}
	if got := a.TokenCalls("authorization_code"); got != 1 {
		t.Fatalf("TokenCalls(authorization_code) = %d, want 1", got)
	}

	// A public client gets a grant with PKCE alone.
	pub := a.Authorize(t, "spa", redirectURI, "bob", nil)
	if sub, ok := a.ValidAccessToken(pub.AccessToken); !ok || sub != "bob" {
		t.Fatalf("public client's token: %q, %t; want bob, true", sub, ok)
	}
}

func TestAuthorizeRefusesWithoutPKCEAndOnDeny(t *testing.T) {
	a := newTestAuthServer(t)
	cfg := a.OAuth2Config(t, "app", redirectURI, nil)
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	resp, err := hc.Get(cfg.AuthCodeURL("state-without-pkce"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil || loc.Query().Get("error") != "invalid_request" {
		t.Fatalf("authorize without PKCE: %d Location %v; want a redirect with error=invalid_request", resp.StatusCode, loc)
	}

	verifier := oauth2.GenerateVerifier()
	authURL := cfg.AuthCodeURL("state-for-deny", oauth2.S256ChallengeOption(verifier))
	form, _ := url.ParseQuery(strings.SplitN(authURL, "?", 2)[1])
	form.Set("username", "alice")
	form.Set("action", "deny")
	resp, err = hc.PostForm(a.AuthorizeURL(), form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err = resp.Location()
	if err != nil || loc.Query().Get("error") != "access_denied" || loc.Query().Get("state") != "state-for-deny" {
		t.Fatalf("deny: %d Location %v; want error=access_denied with the state", resp.StatusCode, loc)
	}

	// Issuer goes out as iss once set.
	a.SetIssuer(a.URL())
	form.Set("action", "allow")
	resp, err = hc.PostForm(a.AuthorizeURL(), form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err = resp.Location()
	if err != nil || loc.Query().Get("code") == "" || loc.Query().Get("iss") != a.URL() {
		t.Fatalf("allow with issuer: %d Location %v; want a code and iss=%s", resp.StatusCode, loc, a.URL())
	}
}

func TestRefreshRotatesAndReuseRevokesTheGrant(t *testing.T) {
	a := newTestAuthServer(t)
	first := a.Authorize(t, "app", redirectURI, "alice", nil)

	if !a.ValidRefreshToken(first.RefreshToken) {
		t.Fatal("a fresh refresh token is not valid")
	}
	second, err := refresh(t, a, "app", first.RefreshToken)
	if err != nil {
		t.Fatalf("first refresh: %v", err)
	}
	if a.ValidRefreshToken(first.RefreshToken) || !a.ValidRefreshToken(second.RefreshToken) {
		t.Fatal("after rotation the old refresh token should be dead and the new one valid")
	}
	if second.RefreshToken == "" || second.RefreshToken == first.RefreshToken {
		t.Fatal("refresh did not rotate the refresh token")
	}
	if _, ok := a.ValidAccessToken(first.AccessToken); ok {
		t.Fatal("the access token of the rotated-away refresh still works")
	}
	if sub, ok := a.ValidAccessToken(second.AccessToken); !ok || sub != "alice" {
		t.Fatalf("refreshed access token: %q, %t; want alice, true", sub, ok)
	}

	third, err := refresh(t, a, "app", second.RefreshToken)
	if err != nil {
		t.Fatalf("second refresh: %v", err)
	}

	// Presenting a used token kills the whole grant, newest tokens included.
	if _, err := refresh(t, a, "app", first.RefreshToken); errorCode(err) != "invalid_grant" {
		t.Fatalf("reusing an old refresh token: %v; want invalid_grant", err)
	}
	if _, ok := a.ValidAccessToken(third.AccessToken); ok {
		t.Fatal("the newest access token survived refresh token reuse")
	}
	if _, err := refresh(t, a, "app", third.RefreshToken); errorCode(err) != "invalid_grant" {
		t.Fatalf("the newest refresh token after reuse: %v; want invalid_grant", err)
	}
	if got := a.TokenCalls("refresh_token"); got != 4 {
		t.Fatalf("TokenCalls(refresh_token) = %d, want 4", got)
	}
	a.ResetCounts()
	if got := a.TokenCalls("refresh_token"); got != 0 {
		t.Fatalf("after ResetCounts TokenCalls = %d, want 0", got)
	}
}

func TestRefreshWithAnotherClientIsRefused(t *testing.T) {
	a := newTestAuthServer(t)
	tok := a.Authorize(t, "app", redirectURI, "alice", nil)
	if _, err := refresh(t, a, "narrow", tok.RefreshToken); errorCode(err) != "invalid_grant" {
		t.Fatalf("refresh by another client: %v; want invalid_grant", err)
	}
	cfg := a.OAuth2Config(t, "app", redirectURI, nil)
	cfg.ClientSecret = "wrong"
	_, err := cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if errorCode(err) != "invalid_client" {
		t.Fatalf("refresh with a wrong secret: %v; want invalid_client", err)
	}
}

func TestClientCredentials(t *testing.T) {
	a := newTestAuthServer(t)
	cc := clientcredentials.Config{ClientID: "narrow", ClientSecret: "narrow-secret", TokenURL: a.TokenURL(), Scopes: []string{"read"}}
	tok, err := cc.Token(context.Background())
	if err != nil {
		t.Fatalf("client credentials: %v", err)
	}
	if sub, ok := a.ValidAccessToken(tok.AccessToken); !ok || sub != "narrow" {
		t.Fatalf("client credentials token: %q, %t; want narrow, true", sub, ok)
	}
	if tok.RefreshToken != "" {
		t.Fatal("client credentials issued a refresh token")
	}
	cc.Scopes = []string{"admin"}
	if _, err := cc.Token(context.Background()); errorCode(err) != "invalid_scope" {
		t.Fatalf("asking for a scope the client lacks: %v; want invalid_scope", err)
	}
	cc.ClientSecret = "wrong"
	cc.Scopes = nil
	if _, err := cc.Token(context.Background()); errorCode(err) != "invalid_client" {
		t.Fatalf("wrong client secret: %v; want invalid_client", err)
	}
	if got := a.TokenCalls("client_credentials"); got != 3 {
		t.Fatalf("TokenCalls(client_credentials) = %d, want 3", got)
	}
}

func TestRevocation(t *testing.T) {
	a := newTestAuthServer(t)

	// RFC 7009 over HTTP.
	tok := a.Authorize(t, "app", redirectURI, "alice", nil)
	req, _ := http.NewRequest(http.MethodPost, a.RevokeURL(), strings.NewReader(url.Values{"token": {tok.RefreshToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("app", "app-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke answered %d, want 200", resp.StatusCode)
	}
	if _, ok := a.ValidAccessToken(tok.AccessToken); ok {
		t.Fatal("access token works after its grant was revoked")
	}
	if _, err := refresh(t, a, "app", tok.RefreshToken); errorCode(err) != "invalid_grant" {
		t.Fatalf("refresh after revoke: %v; want invalid_grant", err)
	}

	// In-process, by refresh token, after a rotation.
	tok = a.Authorize(t, "app", redirectURI, "bob", nil)
	rotated, err := refresh(t, a, "app", tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	a.RevokeRefreshToken(rotated.RefreshToken)
	if _, ok := a.ValidAccessToken(rotated.AccessToken); ok {
		t.Fatal("access token works after RevokeRefreshToken")
	}
	if _, err := refresh(t, a, "app", rotated.RefreshToken); errorCode(err) != "invalid_grant" {
		t.Fatalf("refresh after RevokeRefreshToken: %v; want invalid_grant", err)
	}

	// By subject: every grant of carol dies, dave's lives.
	c1 := a.Authorize(t, "app", redirectURI, "carol", nil)
	c2 := a.Authorize(t, "spa", redirectURI, "carol", nil)
	d := a.Authorize(t, "app", redirectURI, "dave", nil)
	a.RevokeSubject("carol")
	for _, tok := range []*oauth2.Token{c1, c2} {
		if _, ok := a.ValidAccessToken(tok.AccessToken); ok {
			t.Fatal("carol's access token works after RevokeSubject")
		}
	}
	if _, err := refresh(t, a, "app", c1.RefreshToken); errorCode(err) != "invalid_grant" {
		t.Fatalf("carol's refresh after RevokeSubject: %v; want invalid_grant", err)
	}
	if _, err := refresh(t, a, "app", d.RefreshToken); err != nil {
		t.Fatalf("dave's refresh after revoking carol: %v", err)
	}
}

func TestAccessTokenExpires(t *testing.T) {
	a := NewAuthServer(t, AuthServerOptions{
		Clients:             []Client{{ID: "app", Secret: "s", RedirectURIs: []string{redirectURI}}},
		AccessTokenLifespan: time.Second,
	})
	tok := a.Authorize(t, "app", redirectURI, "alice", nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := a.ValidAccessToken(tok.AccessToken); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a one-second access token was still valid after 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := refresh(t, a, "app", tok.RefreshToken); err != nil {
		t.Fatalf("refresh after access token expiry: %v", err)
	}
}

// rawToken posts a refresh grant and returns the raw answer.
func rawToken(t *testing.T, a *AuthServer, rt string) (*http.Response, []byte, error) {
	t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
	req, _ := http.NewRequest(http.MethodPost, a.TokenURL(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("app", "app-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func TestFaults(t *testing.T) {
	a := newTestAuthServer(t)
	tok := a.Authorize(t, "app", redirectURI, "alice", nil)
	rt := tok.RefreshToken

	t.Run("status", func(t *testing.T) {
		a.SetFault(Fault{Status: http.StatusServiceUnavailable, RetryAfter: "7", Count: 1})
		resp, body, err := rawToken(t, a, rt)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "7" || !json.Valid(body) {
			t.Fatalf("got %d Retry-After %q body %s; want 503, 7, JSON", resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
	})
	t.Run("error", func(t *testing.T) {
		a.SetFault(Fault{Error: "invalid_client", Count: 1})
		if _, err := refresh(t, a, "app", rt); errorCode(err) != "invalid_client" {
			t.Fatalf("got %v; want invalid_client", err)
		}
	})
	t.Run("html", func(t *testing.T) {
		a.SetFault(Fault{HTML: true, Count: 1})
		resp, _, err := rawToken(t, a, rt)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("got %d %q; want 200 text/html", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	})
	t.Run("no access token", func(t *testing.T) {
		a.SetFault(Fault{NoAccessToken: true, Count: 1})
		resp, body, err := rawToken(t, a, rt)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if resp.StatusCode != 200 || json.Unmarshal(body, &m) != nil || m["access_token"] != nil {
			t.Fatalf("got %d %s; want 200 JSON without access_token", resp.StatusCode, body)
		}
	})
	t.Run("drop connection", func(t *testing.T) {
		a.SetFault(Fault{DropConnection: true, Count: 1})
		if _, _, err := rawToken(t, a, rt); err == nil {
			t.Fatal("a dropped connection gave a response")
		}
	})

	// None of the faults above touched the grant: rt still refreshes.
	a.ResetCounts()
	fresh, err := refresh(t, a, "app", rt)
	if err != nil {
		t.Fatalf("refresh after count-limited faults: %v", err)
	}
	rt = fresh.RefreshToken

	t.Run("negative expires_in", func(t *testing.T) {
		a.SetFault(Fault{NegativeExpiresIn: true, Count: 1})
		resp, body, err := rawToken(t, a, rt)
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
			ExpiresIn    int    `json:"expires_in"`
		}
		if resp.StatusCode != 200 || json.Unmarshal(body, &m) != nil || m.ExpiresIn >= 0 || m.AccessToken == "" {
			t.Fatalf("got %d %s; want 200 with a real token and negative expires_in", resp.StatusCode, body)
		}
		rt = m.RefreshToken
	})

	t.Run("delay then answer", func(t *testing.T) {
		a.SetFault(Fault{Delay: 100 * time.Millisecond, Count: 1})
		next, err := refresh(t, a, "app", rt)
		if err != nil {
			t.Fatalf("a patient client's refresh through a delay: %v", err)
		}
		rt = next.RefreshToken
	})

	t.Run("until cleared", func(t *testing.T) {
		a.SetFault(Fault{Status: http.StatusBadGateway})
		for i := 0; i < 3; i++ {
			if resp, _, err := rawToken(t, a, rt); err != nil || resp.StatusCode != 502 {
				t.Fatalf("call %d under a standing fault: %v %v; want 502", i, resp, err)
			}
		}
		a.ClearFault()
		if _, err := refresh(t, a, "app", rt); err != nil {
			t.Fatalf("refresh after ClearFault: %v", err)
		}
	})
	if got := a.TokenCalls("refresh_token"); got != 7 {
		t.Fatalf("TokenCalls(refresh_token) = %d, want 7 (faulted calls count)", got)
	}
}

func TestTimedOutRefreshStillRotates(t *testing.T) {
	a := newTestAuthServer(t)
	tok := a.Authorize(t, "app", redirectURI, "alice", nil)
	a.SetFault(Fault{Delay: 5 * time.Second, Count: 1})

	cfg := a.OAuth2Config(t, "app", redirectURI, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err == nil {
		t.Fatal("the refresh answered before the client's deadline despite the delay")
	}

	deadline := time.Now().Add(10 * time.Second)
	for a.ValidRefreshToken(tok.RefreshToken) {
		if time.Now().After(deadline) {
			t.Fatal("the server never rotated the refresh token the client gave up on")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The server rotated anyway, so retrying with the old token is reuse:
	// it fails and takes the grant down, as with a real provider.
	if _, err := refresh(t, a, "app", tok.RefreshToken); errorCode(err) != "invalid_grant" {
		t.Fatalf("retry with the timed-out refresh token: %v; want invalid_grant", err)
	}
	if _, ok := a.ValidAccessToken(tok.AccessToken); ok {
		t.Fatal("the original access token survived its grant's rotation")
	}
}

// TestConcurrentRefreshesWithOneTokenOneWins proves token requests are
// serialised: of several simultaneous refreshes with one token exactly one
// rotates it, and the others are reuse, which revokes the grant.
func TestConcurrentRefreshesWithOneTokenOneWins(t *testing.T) {
	a := newTestAuthServer(t)
	tok := a.Authorize(t, "app", redirectURI, "alice", nil)
	const n = 4
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		go func() {
			<-start
			_, err := refresh(t, a, "app", tok.RefreshToken)
			errs <- err
		}()
	}
	close(start)
	won := 0
	for i := 0; i < n; i++ {
		err := <-errs
		switch {
		case err == nil:
			won++
		case errorCode(err) != "invalid_grant":
			t.Errorf("a losing refresh failed with %v; want invalid_grant", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d concurrent refreshes with one token succeeded, want exactly 1", won, n)
	}
}

func TestExpireAccessTokenLeavesTheRefreshTokenWorking(t *testing.T) {
	a := newTestAuthServer(t)
	tok := a.Authorize(t, "app", redirectURI, "alice", nil)
	a.ExpireAccessToken(tok.AccessToken)
	if _, ok := a.ValidAccessToken(tok.AccessToken); ok {
		t.Fatal("access token still valid after ExpireAccessToken")
	}
	next, err := refresh(t, a, "app", tok.RefreshToken)
	if err != nil {
		t.Fatalf("refresh after the access token expired: %v", err)
	}
	if sub, ok := a.ValidAccessToken(next.AccessToken); !ok || sub != "alice" {
		t.Fatalf("refreshed token: %q, %t; want alice, true", sub, ok)
	}
}

func TestLoopbackRedirectMatchesAnyPort(t *testing.T) {
	a := newTestAuthServer(t)
	tok := a.Authorize(t, "app", "http://127.0.0.1:1234/callback", "alice", nil)
	if _, ok := a.ValidAccessToken(tok.AccessToken); !ok {
		t.Fatal("grant through a loopback redirect on another port is not valid")
	}
	cfg := a.OAuth2Config(t, "app", "http://localhost:9999/callback", nil)
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(cfg.AuthCodeURL("state-localhost", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK || resp.Header.Get("Location") != "" {
		t.Fatalf("an unregistered localhost redirect got %d Location %q; want an error page and no redirect", resp.StatusCode, resp.Header.Get("Location"))
	}
}
