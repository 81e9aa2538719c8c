package quirks_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/quirks"
)

const (
	clientSecret = "client-secret-0f3b9a"
	code         = "code-7c1e55d2"
	oldRefresh   = "refresh-old-9d2c11"
)

// provider is a token endpoint that answers every request with body and
// keeps the last request it got.
type provider struct {
	srv *httptest.Server

	mu          sync.Mutex
	body        string
	contentType string
	status      int
	got         *http.Request
	gotBody     string
}

func newProvider(t *testing.T) *provider {
	p := &provider{status: http.StatusOK, contentType: "application/json"}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		p.got, p.gotBody = r, string(b)
		body, ct, status := p.body, p.contentType, p.status
		p.mu.Unlock()
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *provider) answer(status int, contentType, body string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status, p.contentType, p.body = status, contentType, body
}

func (p *provider) last() (*http.Request, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got, p.gotBody
}

// call runs an exchange (refresh false) or a refresh through a quirks
// Transport for in, as linkflow and refresh do.
func call(t *testing.T, p *provider, in *account.Integration, refresh bool) (*oauth2.Token, *quirks.Transport, error) {
	t.Helper()
	style := oauth2.AuthStyleInHeader
	if in.AuthStyle == "params" {
		style = oauth2.AuthStyleInParams
	}
	cfg := &oauth2.Config{ClientID: "client", ClientSecret: clientSecret,
		Endpoint: oauth2.Endpoint{TokenURL: p.srv.URL + "/token", AuthStyle: style}}
	q := quirks.New(in, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Transport: q})
	var tok *oauth2.Token
	var err error
	if refresh {
		tok, err = cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: oldRefresh}).Token()
	} else {
		tok, err = cfg.Exchange(ctx, code)
	}
	return tok, q, err
}

// noSecret fails when an error's text holds a secret of the request or
// the answer.
func noSecret(t *testing.T, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range append(secrets, clientSecret, code, oldRefresh) {
		if strings.Contains(err.Error(), s) {
			t.Fatalf("error %q holds a secret", err)
		}
	}
}

var slackUser = map[string]string{
	"access_token":  "authed_user.access_token",
	"refresh_token": "authed_user.refresh_token",
	"expires_in":    "authed_user.expires_in",
	"token_type":    "authed_user.token_type",
	"scope":         "authed_user.scope",
}

func TestNestedTokenFields(t *testing.T) {
	p := newProvider(t)
	in := &account.Integration{Name: "slack", TokenFields: slackUser}

	p.answer(200, "application/json", `{"ok":true,"access_token":"xoxb-bot","token_type":"bot","team":{"id":"T1"},
		"authed_user":{"id":"U1","access_token":"xoxp-user","refresh_token":"xoxe-1-user","expires_in":43200,"token_type":"user","scope":"a,b"}}`)
	tok, q, err := call(t, p, in, false)
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != "xoxp-user" || tok.RefreshToken != "xoxe-1-user" || tok.Extra("scope") != "a,b" || tok.Type() != "user" {
		t.Fatalf("token = %q %q %v %q, want the authed_user's", tok.AccessToken, tok.RefreshToken, tok.Extra("scope"), tok.Type())
	}
	if d := time.Until(tok.Expiry); d < 11*time.Hour || d > 12*time.Hour {
		t.Fatalf("expiry in %v, want the nested 12h", d)
	}
	doc, had := q.Answer()
	if v, _ := quirks.Field(doc, "team.id"); v != "T1" || !had {
		t.Fatalf("Answer keeps the whole answer: team.id %q, had refresh %t", v, had)
	}

	// The exchange never falls back to the top-level (bot) token.
	p.answer(200, "application/json", `{"ok":true,"access_token":"xoxb-bot","token_type":"bot","authed_user":{"id":"U1"}}`)
	if tok, _, err := call(t, p, in, false); err == nil {
		t.Fatalf("an answer without the nested token gave token %q", tok.AccessToken)
	}

	// A refresh answer is flat: the top level is the refreshed token.
	p.answer(200, "application/json", `{"ok":true,"access_token":"xoxp-new","refresh_token":"xoxe-1-new","expires_in":43200,"token_type":"user"}`)
	tok, q, err = call(t, p, in, true)
	if err != nil || tok.AccessToken != "xoxp-new" || tok.RefreshToken != "xoxe-1-new" || tok.Expiry.IsZero() {
		t.Fatalf("flat refresh answer: %v %+v", err, tok)
	}
	if _, had := q.Answer(); !had {
		t.Fatal("a flat refresh answer's refresh token was not seen")
	}
}

func TestMalformedTokenAnswers(t *testing.T) {
	p := newProvider(t)
	in := &account.Integration{Name: "slack", TokenFields: slackUser}
	for name, body := range map[string]string{
		"nested token is a number": `{"authed_user":{"access_token":12345}}`,
		"nested token is a bool":   `{"authed_user":{"access_token":true}}`,
		"nested token is a list":   `{"authed_user":{"access_token":["x"]}}`,
		"nested token is empty":    `{"authed_user":{"access_token":""}}`,
		"parent is a string":       `{"authed_user":"xoxp-leak-1"}`,
		"parent is a list":         `{"authed_user":["xoxp-leak-2"]}`,
		"answer is a list":         `["xoxp-leak-3"]`,
		"answer is not JSON":       `xoxp-leak-4 is your token`,
		"answer is truncated":      `{"authed_user":{"access_token":"xoxp-leak-5"`,
	} {
		t.Run(name, func(t *testing.T) {
			p.answer(200, "application/json", body)
			tok, _, err := call(t, p, in, false)
			if err == nil {
				t.Fatalf("accepted, token %q", tok.AccessToken)
			}
			noSecret(t, err, "xoxp-leak")
		})
	}

	t.Run("expires_in of every type", func(t *testing.T) {
		in := &account.Integration{Name: "x", TokenFields: map[string]string{"expires_in": "data.ttl"}, DefaultExpiresIn: account.Duration(time.Hour)}
		for body, want := range map[string]time.Duration{
			`{"access_token":"a","data":{"ttl":120}}`:      2 * time.Minute,
			`{"access_token":"a","data":{"ttl":"120"}}`:    2 * time.Minute,
			`{"access_token":"a","data":{"ttl":"soon"}}`:   time.Hour,
			`{"access_token":"a","data":{"ttl":true}}`:     time.Hour,
			`{"access_token":"a","data":{"ttl":{}}}`:       time.Hour,
			`{"access_token":"a","data":{"ttl":12.5}}`:     time.Hour,
			`{"access_token":"a","data":{}}`:               time.Hour,
			`{"access_token":"a","data":{"ttl":"","x":1}}`: time.Hour,
		} {
			p.answer(200, "application/json", body)
			tok, _, err := call(t, p, in, false)
			if err != nil {
				t.Fatalf("%s: %v", body, err)
			}
			if want == 0 {
				if !tok.Expiry.IsZero() {
					t.Errorf("%s: expiry %v, want none", body, tok.Expiry)
				}
				continue
			}
			if d := time.Until(tok.Expiry); d < want-time.Minute || d > want {
				t.Errorf("%s: expires in %v, want %v", body, d, want)
			}
		}
	})

	t.Run("huge answer", func(t *testing.T) {
		pad := strings.Repeat("x", 2<<20)
		p.answer(200, "application/json", `{"authed_user":{"access_token":"xoxp-leak-6","pad":"`+pad+`"}}`)
		tok, q, err := call(t, p, in, false)
		if err == nil {
			t.Fatalf("a 2 MiB answer was read whole: token %q", tok.AccessToken)
		}
		noSecret(t, err, "xoxp-leak")
		if doc, _ := q.Answer(); doc != nil {
			t.Fatal("a truncated answer was kept as JSON")
		}
	})

	t.Run("error answers pass through", func(t *testing.T) {
		p.answer(400, "application/json", `{"error":"invalid_grant"}`)
		_, q, err := call(t, p, in, true)
		var re *oauth2.RetrieveError
		if !errorsAs(err, &re) || re.ErrorCode != "invalid_grant" {
			t.Fatalf("err = %v, want invalid_grant", err)
		}
		if doc, _ := q.Answer(); doc != nil {
			t.Fatal("an error answer was kept")
		}
	})
}

func errorsAs(err error, re **oauth2.RetrieveError) bool {
	e, ok := err.(*oauth2.RetrieveError)
	if ok {
		*re = e
	}
	return ok
}

func TestDefaultExpiresIn(t *testing.T) {
	p := newProvider(t)
	in := &account.Integration{Name: "salesforce", DefaultExpiresIn: account.Duration(2 * time.Hour)}
	p.answer(200, "application/json", `{"access_token":"a","refresh_token":"r","instance_url":"https://na1.example"}`)
	tok, q, err := call(t, p, in, false)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(tok.Expiry); d < 119*time.Minute || d > 2*time.Hour {
		t.Fatalf("expires in %v, want the default 2h", d)
	}
	if doc, _ := q.Answer(); doc == nil {
		t.Fatal("the answer was not kept")
	} else if v, _ := quirks.Field(doc, "instance_url"); v != "https://na1.example" {
		t.Fatalf("instance_url = %q", v)
	}
	// An answer's own expires_in wins.
	p.answer(200, "application/json", `{"access_token":"a","expires_in":60}`)
	tok, _, _ = call(t, p, in, false)
	if d := time.Until(tok.Expiry); d > time.Minute {
		t.Fatalf("expires in %v, want the answer's 60s", d)
	}
	// Without the option, no lifetime is made up.
	p.answer(200, "application/json", `{"access_token":"a"}`)
	tok, _, _ = call(t, p, &account.Integration{Name: "plain"}, false)
	if !tok.Expiry.IsZero() {
		t.Fatalf("expiry %v without expires_in or default", tok.Expiry)
	}
}

func TestFormAnswer(t *testing.T) {
	p := newProvider(t)
	in := &account.Integration{Name: "old", DefaultExpiresIn: account.Duration(time.Hour)}
	p.answer(200, "application/x-www-form-urlencoded", "access_token=form-token&refresh_token=form-refresh&scope=a+b")
	tok, q, err := call(t, p, in, false)
	if err != nil || tok.AccessToken != "form-token" || tok.RefreshToken != "form-refresh" || tok.Expiry.IsZero() {
		t.Fatalf("form answer: %v %+v", err, tok)
	}
	if _, had := q.Answer(); !had {
		t.Fatal("the form answer's refresh token was not seen")
	}
}

func TestJSONTokenBody(t *testing.T) {
	p := newProvider(t)
	p.answer(200, "application/json", `{"access_token":"a","refresh_token":"r"}`)
	for _, style := range []string{"header", "params"} {
		in := &account.Integration{Name: "notion", TokenBody: "json", AuthStyle: style}
		if _, _, err := call(t, p, in, true); err != nil {
			t.Fatal(err)
		}
		r, body := p.last()
		if r.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: Content-Type %q", style, r.Header.Get("Content-Type"))
		}
		var m map[string]string
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatalf("%s: body %q is not a JSON object of strings: %v", style, body, err)
		}
		if m["grant_type"] != "refresh_token" || m["refresh_token"] != oldRefresh {
			t.Fatalf("%s: body %v", style, m)
		}
		_, _, basic := r.BasicAuth()
		if style == "header" && (!basic || m["client_secret"] != "") {
			t.Fatalf("header style: basic %t, secret in body %t", basic, m["client_secret"] != "")
		}
		if style == "params" && (basic || m["client_secret"] != clientSecret) {
			t.Fatalf("params style: basic %t, secret in body %t", basic, m["client_secret"] != "")
		}
	}
	// Form is the default and stays a form.
	if _, _, err := call(t, p, &account.Integration{Name: "plain"}, true); err != nil {
		t.Fatal(err)
	}
	if r, body := p.last(); !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") || !strings.Contains(body, "grant_type=refresh_token") {
		t.Fatalf("default body: %q %q", r.Header.Get("Content-Type"), body)
	}
}

func TestJSONBodyErrorHoldsNoSecret(t *testing.T) {
	in := &account.Integration{Name: "notion", TokenBody: "json"}
	q := quirks.New(in, http.DefaultTransport)
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:1/token",
		strings.NewReader("grant_type=refresh_token&refresh_token="+oldRefresh+"%zz&client_secret="+clientSecret))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	_, err := q.RoundTrip(req)
	if err == nil {
		t.Fatal("a malformed body was sent")
	}
	noSecret(t, err, "%zz")
}
