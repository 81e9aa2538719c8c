package linkflow

import (
	"net/url"
	"testing"

	"github.com/linkgate/linkgate/account"
)

// The quirks of the authorization request: a templated authorize_url,
// comma-joined scopes, extra parameters, PKCE off.
func TestAuthorizeURLQuirks(t *testing.T) {
	off := false
	in := &account.Integration{
		Name: "quirky", Auth: account.MethodOAuth2, ClientID: "cid",
		BaseURL:          "https://{connection.subdomain}.example.com/api",
		AuthorizeURL:     "https://{connection.subdomain}.example.com/oauth/authorize?tenant=x",
		TokenURL:         "https://{connection.subdomain}.example.com/oauth/token",
		AllowedHosts:     []string{"*.example.com"},
		ConnectionFields: []account.ConnectionField{{Name: "subdomain", Kind: account.KindDNSLabel}},
		ScopeSeparator:   ",",
		AuthorizeParams:  map[string]string{"access_type": "offline"},
		PKCE:             &off,
	}
	if err := in.Validate(); err != nil {
		t.Fatal(err)
	}
	got, err := AuthorizeURL(in, map[string]string{"subdomain": "acme"}, "https://gate.test/cb", []string{"a", "b"}, "st", "")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(got)
	q := u.Query()
	if u.Host != "acme.example.com" || q.Get("scope") != "a,b" || q.Get("access_type") != "offline" || q.Get("tenant") != "x" ||
		q.Get("client_id") != "cid" || q.Get("redirect_uri") != "https://gate.test/cb" || q.Get("state") != "st" {
		t.Errorf("authorize URL %s", got)
	}
	if q.Has("code_challenge") || q.Has("code_challenge_method") {
		t.Errorf("PKCE off, but %s carries a challenge", got)
	}
	in.PKCE = nil
	got, _ = AuthorizeURL(in, map[string]string{"subdomain": "acme"}, "https://gate.test/cb", nil, "st", "v-0123456789-0123456789-0123456789-0123456789")
	if q := mustQuery(t, got); q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Has("scope") {
		t.Errorf("PKCE on, no scopes: %s", got)
	}
	// A subdomain that would leave the allowed hosts is refused before any
	// URL exists.
	for _, bad := range []string{"evil.test#", "a.b", "..", ""} {
		if got, err := AuthorizeURL(in, map[string]string{"subdomain": bad}, "https://gate.test/cb", nil, "st", ""); err == nil {
			t.Errorf("subdomain %q gave %s", bad, got)
		}
	}
}

func mustQuery(t *testing.T, s string) url.Values {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query()
}
