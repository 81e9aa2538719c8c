package linkgate

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/linkgate/linkgate/account"
)

func TestTokenHeaderOption(t *testing.T) {
	var a App
	err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`integrated_accounts {
		integration zoho {
			auth oauth2
			token_header Authorization Zoho-oauthtoken
		}
		integration shop {
			auth oauth2
			token_header X-Shopify-Access-Token
		}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if z := a.Integrations["zoho"]; z.TokenHeader != "Authorization" || z.TokenPrefix != "Zoho-oauthtoken " {
		t.Fatalf("zoho: %q %q", z.TokenHeader, z.TokenPrefix)
	}
	if s := a.Integrations["shop"]; s.TokenHeader != "X-Shopify-Access-Token" || s.TokenPrefix != "" {
		t.Fatalf("shop: %q %q", s.TokenHeader, s.TokenPrefix)
	}
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("integrated_accounts {\n integration x {\n  token_header\n }\n}")); err == nil || !strings.Contains(err.Error(), "token_header") {
		t.Fatalf("token_header without a header: %v", err)
	}

	base := account.Integration{Name: "x", Auth: account.MethodOAuth2, BaseURL: "https://x.example",
		AuthorizeURL: "https://x.example/a", TokenURL: "https://x.example/t", ClientID: "c"}
	for _, tt := range []struct {
		header, prefix, tokenType string
		wantHeader, wantValue     string
	}{
		{"", "", "bearer", "Authorization", "Bearer tok"},
		{"", "", "user", "Authorization", "Bearer tok"}, // Slack's user token
		{"", "", "", "Authorization", "Bearer tok"},
		{"x-shopify-access-token", "", "bearer", "X-Shopify-Access-Token", "tok"},
		{"Authorization", "Zoho-oauthtoken ", "Bearer", "Authorization", "Zoho-oauthtoken tok"},
		{"", "Token ", "bearer", "Authorization", "Token tok"},
	} {
		in := base
		in.TokenHeader, in.TokenPrefix = tt.header, tt.prefix
		if err := in.Validate(); err != nil {
			t.Fatalf("%+v: %v", tt, err)
		}
		up, err := newUpstream(&in)
		if err != nil {
			t.Fatal(err)
		}
		out := &http.Request{Header: http.Header{}, URL: &url.URL{Scheme: "https", Host: "x.example", Path: "/v1"}}
		var slot [1]string
		up.setCredentials(out, account.Credentials{AccessToken: "tok", TokenType: tt.tokenType}, &slot)
		if got := out.Header.Get(tt.wantHeader); got != tt.wantValue || len(out.Header) != 1 {
			t.Errorf("%+v: headers %v, want %s: %s", tt, out.Header, tt.wantHeader, tt.wantValue)
		}
		// The caller's value of the token's header never passes.
		if !up.dropsHeader(tt.wantHeader) {
			t.Errorf("%+v: a caller's %s would reach the upstream", tt, tt.wantHeader)
		}
	}

	for _, bad := range []account.Integration{
		{Name: "k", Auth: account.MethodAPIKey, BaseURL: "https://x.example", TokenHeader: "X-Token"},
		{Name: "h", Auth: account.MethodOAuth2, BaseURL: "https://x.example", AuthorizeURL: "https://x.example/a", TokenURL: "https://x.example/t", ClientID: "c", TokenHeader: "X-Token:"},
		{Name: "p", Auth: account.MethodOAuth2, BaseURL: "https://x.example", AuthorizeURL: "https://x.example/a", TokenURL: "https://x.example/t", ClientID: "c", TokenPrefix: "Bearer\r\nX-Evil: 1 "},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%s: token_header %q prefix %q accepted", bad.Name, bad.TokenHeader, bad.TokenPrefix)
		}
	}
	for _, h := range []string{"Host", "Connection", "X-Forwarded-For", "Proxy-Authorization"} {
		in := base
		in.TokenHeader = h
		if _, err := newUpstream(&in); err == nil {
			t.Errorf("token_header %s: accepted", h)
		}
	}
}
