package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"
)

// consent drives the authorization request authURL to its redirect and
// returns the redirect's query (code, or error).
func consent(t *testing.T, a *AuthServer, authURL string) url.Values {
	t.Helper()
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc, err := resp.Location(); err == nil {
		return loc.Query()
	}
	form, _ := url.ParseQuery(strings.SplitN(authURL, "?", 2)[1])
	form.Set("username", "quinn")
	form.Set("action", "allow")
	resp, err = hc.PostForm(a.AuthorizeURL(), form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("consent answered %d without a redirect", resp.StatusCode)
	}
	return loc.Query()
}

// tokenPost posts a token request and returns the status and decoded answer.
func tokenPost(t *testing.T, a *AuthServer, contentType string, body []byte, basic bool) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, a.TokenURL(), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	if basic {
		req.SetBasicAuth("app", "app-secret")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

// TestQuirksRefuseAPlainClient shows that each quirk mode refuses what an
// RFC 6749 client does by default, so a test passing against it proves the
// matching integration option was applied.
func TestQuirksRefuseAPlainClient(t *testing.T) {
	a := newTestAuthServer(t)
	cfg := a.OAuth2Config(t, "app", redirectURI, []string{"read", "write"})

	t.Run("comma scopes", func(t *testing.T) {
		a.SetQuirks(Quirks{ScopeSeparator: ","})
		v := oauth2.GenerateVerifier()
		if q := consent(t, a, cfg.AuthCodeURL("state-123456", oauth2.S256ChallengeOption(v))); q.Get("error") != "invalid_scope" {
			t.Fatalf("space-joined scopes: %v, want invalid_scope", q)
		}
		q := consent(t, a, cfg.AuthCodeURL("state-123456", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("scope", "read,write")))
		tok, err := cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
		if err != nil || tok.Extra("scope") != "read,write" {
			t.Fatalf("comma-joined scopes: %v scope %v, want read,write", err, tok.Extra("scope"))
		}
	})

	t.Run("no pkce", func(t *testing.T) {
		a.SetQuirks(Quirks{NoPKCE: true})
		v := oauth2.GenerateVerifier()
		if q := consent(t, a, cfg.AuthCodeURL("state-123456", oauth2.S256ChallengeOption(v))); q.Get("error") != "invalid_request" {
			t.Fatalf("authorize with a challenge: %v, want invalid_request", q)
		}
		q := consent(t, a, cfg.AuthCodeURL("state-123456"))
		if _, err := cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v)); errorCode(err) != "invalid_request" {
			t.Fatalf("exchange with a verifier: %v, want invalid_request", err)
		}
		q = consent(t, a, cfg.AuthCodeURL("state-123456"))
		if _, err := cfg.Exchange(context.Background(), q.Get("code")); err != nil {
			t.Fatalf("exchange without PKCE: %v", err)
		}
	})

	t.Run("offline params", func(t *testing.T) {
		a.SetQuirks(Quirks{OfflineParams: map[string]string{"access_type": "offline", "prompt": "consent"}})
		v := oauth2.GenerateVerifier()
		q := consent(t, a, cfg.AuthCodeURL("state-123456", oauth2.S256ChallengeOption(v), oauth2.SetAuthURLParam("access_type", "offline")))
		tok, err := cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
		if err != nil || tok.RefreshToken != "" {
			t.Fatalf("without prompt=consent: %v, refresh token %t; want none", err, tok.RefreshToken != "")
		}
		q = consent(t, a, cfg.AuthCodeURL("state-123456", oauth2.S256ChallengeOption(v), oauth2.AccessTypeOffline, oauth2.SetAuthURLParam("prompt", "consent")))
		tok, err = cfg.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(v))
		if err != nil || tok.RefreshToken == "" {
			t.Fatalf("with both: %v, refresh token %t; want one", err, tok.RefreshToken != "")
		}
	})

	t.Run("client auth and json body", func(t *testing.T) {
		a.SetQuirks(Quirks{})
		tok := a.Authorize(t, "app", redirectURI, "quinn", nil)
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}}
		a.SetQuirks(Quirks{ClientAuth: "post"})
		if status, m := tokenPost(t, a, "application/x-www-form-urlencoded", []byte(form.Encode()), true); status != 401 || m["error"] != "invalid_client" {
			t.Fatalf("basic against post: %d %v", status, m)
		}
		a.SetQuirks(Quirks{ClientAuth: "basic"})
		withSecret := url.Values{"client_id": {"app"}, "client_secret": {"app-secret"}}
		for k, v := range form {
			withSecret[k] = v
		}
		if status, m := tokenPost(t, a, "application/x-www-form-urlencoded", []byte(withSecret.Encode()), false); status != 401 || m["error"] != "invalid_client" {
			t.Fatalf("post against basic: %d %v", status, m)
		}
		a.SetQuirks(Quirks{ClientAuth: "basic", JSONBody: true})
		if status, m := tokenPost(t, a, "application/x-www-form-urlencoded", []byte(form.Encode()), true); status != 400 || m["error"] != "invalid_request" {
			t.Fatalf("form against json: %d %v", status, m)
		}
		j, _ := json.Marshal(map[string]string{"grant_type": "refresh_token", "refresh_token": tok.RefreshToken})
		if status, m := tokenPost(t, a, "application/json", j, true); status != 200 || m["access_token"] == nil {
			t.Fatalf("json with basic: %d %v", status, m)
		}
	})

	t.Run("nested, no expires_in, no rotation", func(t *testing.T) {
		a.SetQuirks(Quirks{NestTokens: "authed_user", NoExpiresIn: true, NoRefreshRotation: true})
		tok := a.Authorize(t, "app", redirectURI, "quinn", nil)
		if _, ok := a.ValidAccessToken(tok.AccessToken); ok || tok.RefreshToken != "" || !tok.Expiry.IsZero() {
			t.Fatal("a plain client read a usable flat token from a nested answer")
		}
		user, _ := tok.Extra("authed_user").(map[string]any)
		at, _ := user["access_token"].(string)
		rt, _ := user["refresh_token"].(string)
		if _, ok := a.ValidAccessToken(at); !ok || rt == "" || user["expires_in"] != nil {
			t.Fatalf("authed_user = %v", user)
		}
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
		for range 2 {
			// Refresh answers are flat, as Slack's rotation answers are.
			status, m := tokenPost(t, a, "application/x-www-form-urlencoded", []byte(form.Encode()), true)
			if status != 200 || m["refresh_token"] != nil || m["expires_in"] != nil || m["authed_user"] != nil {
				t.Fatalf("refresh without rotation: %d %v", status, m)
			}
			if _, ok := a.ValidAccessToken(m["access_token"].(string)); !ok {
				t.Fatal("the refreshed token is not valid")
			}
		}
		if !a.ValidRefreshToken(rt) {
			t.Fatal("the first refresh token no longer works")
		}
		a.RevokeRefreshToken(rt)
		if _, err := refresh(t, a, "app", rt); errorCode(err) != "invalid_grant" {
			t.Fatalf("after revocation: %v", err)
		}
	})
	a.SetQuirks(Quirks{})
}
