package account

import (
	"errors"
	"strings"
	"testing"
)

func zendesk(t *testing.T) *Integration {
	t.Helper()
	in := &Integration{
		Name:         "zendesk",
		Auth:         MethodOAuth2,
		BaseURL:      "https://{connection.subdomain}.zendesk.com/api/v2",
		AuthorizeURL: "https://{connection.subdomain}.zendesk.com/oauth/authorizations/new",
		TokenURL:     "https://{connection.subdomain}.zendesk.com/oauth/tokens",
		ClientID:     "id",
		AllowedHosts: []string{"*.zendesk.com"},
		ConnectionFields: []ConnectionField{
			{Name: "subdomain", Label: "Zendesk subdomain", Kind: KindDNSLabel},
		},
	}
	if err := in.Validate(); err != nil {
		t.Fatal(err)
	}
	return in
}

func TestSubdomainResolves(t *testing.T) {
	in := zendesk(t)
	got, err := in.ResolveURL("base_url", in.BaseURL, map[string]string{"subdomain": "Acme"})
	if err != nil || got != "https://acme.zendesk.com/api/v2" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestBadSubdomainsRefused(t *testing.T) {
	in := zendesk(t)
	for _, v := range []string{"evil.test#", "a.b", "..", "", "a/b", "x@evil.test", "-a", "a b", "evil.test:443", strings.Repeat("a", 64)} {
		_, err := in.ResolveURL("base_url", in.BaseURL, map[string]string{"subdomain": v})
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "subdomain" {
			t.Errorf("subdomain %q: got %v, want an error naming subdomain", v, err)
		}
		if _, err := in.CheckContext(map[string]any{"subdomain": v}, nil); err == nil {
			t.Errorf("context subdomain %q accepted", v)
		}
	}
}

// The core guarantee: whatever a field's own check lets through, a
// resolved URL outside allowed_hosts is refused. The pattern here lets
// any dotted name through, so only the host check stands in the way.
func TestResolvedHostMustBeAllowed(t *testing.T) {
	in := &Integration{
		Name: "loose", Auth: MethodAPIKey,
		BaseURL:          "https://{connection.host}/api",
		AllowedHosts:     []string{"*.zendesk.com"},
		ConnectionFields: []ConnectionField{{Name: "host", Kind: KindPattern, Pattern: `[a-z.]+`}},
	}
	if err := in.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := in.ResolveURL("base_url", in.BaseURL, map[string]string{"host": "acme.zendesk.com"}); err != nil {
		t.Fatalf("allowed host refused: %v", err)
	}
	for _, h := range []string{"evil.test", "zendesk.com", "zendesk.com.evil.test", "evilzendesk.com"} {
		_, err := in.ResolveURL("base_url", in.BaseURL, map[string]string{"host": h})
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "base_url" {
			t.Errorf("host %q: got %v, want base_url refused", h, err)
		}
	}
}

func TestInstanceURL(t *testing.T) {
	in := &Integration{
		Name: "salesforce", Auth: MethodOAuth2, ClientID: "id",
		AuthorizeURL: "https://login.salesforce.com/services/oauth2/authorize",
		TokenURL:     "https://login.salesforce.com/services/oauth2/token",
		BaseURL:      "{connection.instance_url}/services/data/v59.0",
		AllowedHosts: []string{"login.salesforce.com", "*.my.salesforce.com"},
		ConnectionFields: []ConnectionField{
			{Name: "instance_url", Kind: KindHTTPSURL, Source: SourceTokenResponse, Path: "instance_url"},
		},
	}
	if err := in.Validate(); err != nil {
		t.Fatal(err)
	}
	ok := map[string]string{"instance_url": "https://acme.my.salesforce.com/"}
	if got, err := in.ResolveURL("base_url", in.BaseURL, ok); err != nil || got != "https://acme.my.salesforce.com/services/data/v59.0" {
		t.Fatalf("got %q, %v", got, err)
	}
	for _, v := range []string{"https://evil.test", "http://acme.my.salesforce.com", "https://acme.my.salesforce.com:8443",
		"https://x@acme.my.salesforce.com", "https://acme.my.salesforce.com/x", "https://acme.my.salesforce.com?x", "https://evil.test#.my.salesforce.com", "javascript:alert(1)"} {
		if _, err := in.ResolveURL("base_url", in.BaseURL, map[string]string{"instance_url": v}); err == nil {
			t.Errorf("instance_url %q accepted", v)
		}
	}
}

func TestHostAllowed(t *testing.T) {
	in := &Integration{AllowedHosts: []string{"api.example.com", "*.example.org", "127.0.0.1:8080"}}
	cases := []struct {
		scheme, host string
		want         bool
	}{
		{"https", "api.example.com", true},
		{"https", "API.example.com", true},
		{"https", "api.example.com:443", true},
		{"https", "api.example.com:8443", false},
		{"https", "x.example.com", false},
		{"https", "a.example.org", true},
		{"https", "a.b.example.org", true},
		{"https", "example.org", false},
		{"https", ".example.org", false},
		{"https", "aexample.org", false},
		{"http", "127.0.0.1:8080", true},
		{"http", "127.0.0.1:8081", false},
		{"http", "127.0.0.1", false},
	}
	for _, c := range cases {
		if got := in.HostAllowed(c.scheme, c.host); got != c.want {
			t.Errorf("%s %s: got %v", c.scheme, c.host, got)
		}
	}
}

func TestLiteralURLsDefaultAllowedHosts(t *testing.T) {
	in := &Integration{Name: "h", Auth: MethodAPIKey, BaseURL: "https://api.hubapi.com"}
	if err := in.Validate(); err != nil {
		t.Fatal(err)
	}
	if !in.HostAllowed("https", "api.hubapi.com") || in.HostAllowed("https", "evil.test") {
		t.Fatal("default allowed_hosts are not the literal URLs' hosts")
	}
	in.AllowedHosts = []string{"other.example.com"}
	if err := in.Validate(); err == nil || !strings.Contains(err.Error(), "base_url host") {
		t.Fatalf("literal base_url outside allowed_hosts: %v", err)
	}
}

func TestValidateConnectionOptions(t *testing.T) {
	base := func() *Integration {
		return &Integration{Name: "x", Auth: MethodOAuth2, ClientID: "id",
			AuthorizeURL: "https://x.example.com/auth", TokenURL: "https://x.example.com/token",
			BaseURL: "https://x.example.com"}
	}
	cases := map[string]func(*Integration){
		"undeclared": func(i *Integration) {
			i.BaseURL = "https://{connection.sub}.example.com"
			i.AllowedHosts = []string{"*.example.com"}
		},
		"no allowed_hosts": func(i *Integration) {
			i.BaseURL = "https://{connection.sub}.example.com"
			i.ConnectionFields = []ConnectionField{{Name: "sub", Kind: KindDNSLabel}}
		},
		"bad kind":            func(i *Integration) { i.ConnectionFields = []ConnectionField{{Name: "sub", Kind: "text"}} },
		"bad name":            func(i *Integration) { i.ConnectionFields = []ConnectionField{{Name: "Sub", Kind: KindDNSLabel}} },
		"secret name":         func(i *Integration) { i.ConnectionFields = []ConnectionField{{Name: "api_token", Kind: KindDNSLabel}} },
		"pattern w/o pattern": func(i *Integration) { i.ConnectionFields = []ConnectionField{{Name: "t", Kind: KindPattern}} },
		"bad regexp": func(i *Integration) {
			i.ConnectionFields = []ConnectionField{{Name: "t", Kind: KindPattern, Pattern: "("}}
		},
		"token field in token_url": func(i *Integration) {
			i.TokenURL = "{connection.u}/token"
			i.AllowedHosts = []string{"*.example.com"}
			i.ConnectionFields = []ConnectionField{{Name: "u", Kind: KindHTTPSURL, Source: SourceTokenResponse, Path: "u"}}
		},
		"discovery w/o request": func(i *Integration) {
			i.ConnectionFields = []ConnectionField{{Name: "c", Kind: KindUUID, Source: SourceDiscovery, Path: "0.id"}}
		},
		"callback w/o param": func(i *Integration) {
			i.ConnectionFields = []ConnectionField{{Name: "c", Kind: KindUUID, Source: SourceCallback}}
		},
		"bad source": func(i *Integration) {
			i.ConnectionFields = []ConnectionField{{Name: "c", Kind: KindUUID, Source: "header"}}
		},
		"wildcard tld":        func(i *Integration) { i.AllowedHosts = []string{"*.com"} },
		"url in allowed":      func(i *Integration) { i.AllowedHosts = []string{"https://x.example.com"} },
		"bad template":        func(i *Integration) { i.BaseURL = "https://{connection.}.example.com" },
		"token_body":          func(i *Integration) { i.TokenBody = "xml" },
		"token_fields key":    func(i *Integration) { i.TokenFields = map[string]string{"id_token": "x"} },
		"authorize_params":    func(i *Integration) { i.AuthorizeParams = map[string]string{"redirect_uri": "https://evil.test"} },
		"header name":         func(i *Integration) { i.Headers = map[string]string{"Bad Header": "x"} },
		"discovery on apikey": func(i *Integration) { i.Auth = MethodAPIKey; i.Discovery = &Discovery{URL: "https://x.example.com/d"} },
	}
	for name, mod := range cases {
		in := base()
		mod(in)
		if err := in.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := base().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLookupPath(t *testing.T) {
	doc := map[string]any{"authed_user": map[string]any{"access_token": "xoxp"}, "list": []any{map[string]any{"id": "c1"}}, "n": float64(3600)}
	for path, want := range map[string]string{"authed_user.access_token": "xoxp", "list.0.id": "c1", "n": "3600"} {
		if got, ok := LookupPath(doc, path); !ok || got != want {
			t.Errorf("%s: %q %v", path, got, ok)
		}
	}
	for _, path := range []string{"missing", "list.1.id", "authed_user", "list.x"} {
		if _, ok := LookupPath(doc, path); ok {
			t.Errorf("%s found", path)
		}
	}
	if got, _ := LookupPath([]any{map[string]any{"id": "c"}}, "0.id"); got != "c" {
		t.Errorf("array root: %q", got)
	}
}

func TestHeadersResolve(t *testing.T) {
	in := &Integration{Name: "xero", Auth: MethodOAuth2, ClientID: "id",
		AuthorizeURL: "https://login.xero.com/a", TokenURL: "https://identity.xero.com/t", BaseURL: "https://api.xero.com",
		Headers:          map[string]string{"Xero-Tenant-Id": "{connection.tenant_id}"},
		AllowedHosts:     []string{"login.xero.com", "identity.xero.com", "api.xero.com"},
		Discovery:        &Discovery{URL: "https://api.xero.com/connections"},
		ConnectionFields: []ConnectionField{{Name: "tenant_id", Kind: KindUUID, Source: SourceDiscovery, Path: "0.tenantId"}},
	}
	if err := in.Validate(); err != nil {
		t.Fatal(err)
	}
	h, err := in.ResolveHeaders("headers", in.Headers, map[string]string{"tenant_id": "0B9D1F5C-7A3E-4A5B-9C2D-1E2F3A4B5C6D"})
	if err != nil || h["Xero-Tenant-Id"] != "0b9d1f5c-7a3e-4a5b-9c2d-1e2f3a4b5c6d" {
		t.Fatalf("%v %v", h, err)
	}
	if _, err := in.ResolveHeaders("headers", in.Headers, map[string]string{"tenant_id": "x\r\nEvil: 1"}); err == nil {
		t.Fatal("a header value with CRLF accepted")
	}
	if _, err := in.ResolveHeaders("headers", in.Headers, nil); err == nil {
		t.Fatal("a missing field accepted")
	}
}
