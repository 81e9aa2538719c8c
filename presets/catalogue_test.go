package presets_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/linkflow"
	"github.com/linkgate/linkgate/presets"
)

// categories are Truto's category words (its unified APIs' names), the
// vocabulary an integration's category is written in.
var categories = map[string]bool{
	"crm": true, "hris": true, "ats": true, "accounting": true, "ticketing": true,
	"e-signature": true, "marketing-automation": true, "ci-cd": true, "user-directory": true,
	"knowledge-base": true, "file-storage": true, "forms": true, "instant-messaging": true,
	"ads": true, "calendar": true, "lms": true, "mdm": true, "conferencing": true,
	"usage-metering": true, "payment-gateway": true, "finance": true, "ecommerce": true,
	"subscriptions": true, "conversational-intelligence": true, "enrichment": true,
	"sso": true, "voice": true, "search": true, "emails": true,
}

// patternSamples are sample values for connection fields of kind pattern,
// by field name: a new pattern field needs one here.
var patternSamples = map[string][]string{
	"realm_id": {"9130350000000001"},
	"tenant":   {"organizations", "common", "contoso.onmicrosoft.com", "72f988bf-86f1-41af-91ab-2d7cd011db47"},
}

// urlSamples are sample values for host and https_url fields whose
// allowed hosts are a list of exact names (one per data center), by field
// preset and field name.
var urlSamples = map[string][]string{
	"zoho_crm.accounts_server": {"https://accounts.zoho.com", "https://accounts.zoho.eu", "https://accounts.zohocloud.ca"},
	"zoho_crm.api_domain":      {"https://www.zohoapis.com", "https://www.zohoapis.com.au"},
}

const sampleUUID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"

// sampleConnection returns sample values for every connection field of in,
// one map for each sample of a pattern field.
func sampleConnection(t *testing.T, in *account.Integration) []map[string]string {
	t.Helper()
	conns := []map[string]string{{}}
	for _, f := range in.ConnectionFields {
		var vals []string
		switch f.Kind {
		case account.KindDNSLabel:
			vals = []string{"acme-1"}
		case account.KindUUID:
			vals = []string{sampleUUID}
		case account.KindHost, account.KindHTTPSURL:
			if v := urlSamples[in.Name+"."+f.Name]; len(v) > 0 {
				vals = v
				break
			}
			// A host under the first wildcard allowed host, or else the
			// first exact one that is not the login host.
			host := ""
			for _, p := range in.AllowedHosts {
				if s, ok := strings.CutPrefix(p, "*."); ok {
					host = "acme." + s
					break
				}
			}
			if host == "" {
				t.Fatalf("connection field %s of kind %s needs a wildcard allowed host to sample", f.Name, f.Kind)
			}
			if f.Kind == account.KindHTTPSURL {
				host = "https://" + host
			}
			vals = []string{host}
		case account.KindPattern:
			vals = patternSamples[f.Name]
			if len(vals) == 0 {
				t.Fatalf("connection field %s: add a sample value for its pattern to patternSamples", f.Name)
			}
		default:
			t.Fatalf("connection field %s: unknown kind %q", f.Name, f.Kind)
		}
		var next []map[string]string
		for _, c := range conns {
			for _, v := range vals {
				n := map[string]string{f.Name: v}
				for k, x := range c {
					n[k] = x
				}
				next = append(next, n)
			}
		}
		conns = next
	}
	return conns
}

// integration reads a preset as the configuration reads it: the preset's
// object, then the options an operator writes (name, client id, secret).
func integration(t *testing.T, name string) *account.Integration {
	t.Helper()
	raw, ok := presets.Lookup(name)
	if !ok {
		t.Fatalf("Lookup(%q) failed for a name Names() returned", name)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields() // a misspelt option would be silently ignored
	var in account.Integration
	if err := dec.Decode(&in); err != nil {
		t.Fatalf("unmarshalling into account.Integration: %v", err)
	}
	if in.Name != "" || in.ClientID != "" || in.ClientSecret != "" || in.Preset != "" {
		t.Fatalf("a preset carries no name, client_id, client_secret or preset")
	}
	in.Name = name
	if in.Auth == account.MethodOAuth2 || in.Auth == account.MethodClientCredentials {
		in.ClientID, in.ClientSecret = "client-"+name, "secret"
	}
	return &in
}

func TestCatalogueSize(t *testing.T) {
	names := presets.Names()
	if len(names) < 50 {
		t.Fatalf("the catalogue has %d presets, want at least 50", len(names))
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			t.Errorf("preset %s listed twice", n)
		}
		seen[n] = true
		if !regexp.MustCompile(`^[a-z][a-z0-9_]*$`).MatchString(n) {
			t.Errorf("preset name %q: use lowercase letters, digits and _", n)
		}
	}
}

func TestEveryPreset(t *testing.T) {
	displayNames := map[string]string{}
	for _, name := range presets.Names() {
		t.Run(name, func(t *testing.T) {
			in := integration(t, name)
			if err := in.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			checkDescription(t, in)
			if other, ok := displayNames[in.DisplayName]; ok {
				t.Errorf("display_name %q is also %s's", in.DisplayName, other)
			}
			displayNames[in.DisplayName] = name
			if in.Templated() && len(in.AllowedHosts) == 0 {
				t.Errorf("templated URLs without allowed_hosts")
			}
			for _, conn := range sampleConnection(t, in) {
				checkResolves(t, in, conn)
				if in.Auth == account.MethodOAuth2 {
					checkAuthorizeURL(t, in, conn)
				}
			}
		})
	}
}

func checkDescription(t *testing.T, in *account.Integration) {
	t.Helper()
	if in.DisplayName == "" || in.Help == "" {
		t.Errorf("display_name and help are required")
	}
	if !categories[in.Category] {
		t.Errorf("category %q is not one of Truto's category words", in.Category)
	}
	u, err := url.Parse(in.Docs)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		t.Errorf("docs %q is not an https URL", in.Docs)
	}
	switch in.Auth {
	case account.MethodOAuth2:
		if in.AuthorizeURL == "" || in.TokenURL == "" {
			t.Errorf("oauth2 without authorize_url and token_url")
		}
	case account.MethodClientCredentials:
		if in.TokenURL == "" {
			t.Errorf("oauth2_client_credentials without token_url")
		}
	case account.MethodAPIKey, account.MethodBasic:
		if in.AuthorizeURL != "" || in.TokenURL != "" {
			t.Errorf("%s with OAuth endpoints", in.Auth)
		}
	}
	for _, f := range in.ConnectionFields {
		if f.Label == "" || f.Help == "" {
			t.Errorf("connection field %s needs a label and help for the connect page", f.Name)
		}
	}
}

// checkResolves resolves every URL and header template of in with conn and
// checks each host against allowed_hosts (ResolveURL refuses any other).
func checkResolves(t *testing.T, in *account.Integration, conn map[string]string) {
	t.Helper()
	urls := map[string]string{
		"base_url": in.BaseURL, "authorize_url": in.AuthorizeURL, "token_url": in.TokenURL,
		"validate_url": in.ValidateURL, "userinfo_url": in.UserinfoURL,
	}
	if in.Discovery != nil {
		urls["discovery.url"] = in.Discovery.URL
	}
	for opt, tmpl := range urls {
		if tmpl == "" {
			continue
		}
		got, err := in.ResolveURL(opt, tmpl, conn)
		if err != nil {
			t.Errorf("%s with %v: %v", opt, conn, err)
			continue
		}
		if strings.Contains(got, "{") {
			t.Errorf("%s resolved to %q, a template is left", opt, got)
		}
		u, _ := url.Parse(got)
		if u.Scheme != "https" {
			t.Errorf("%s %q is not https", opt, got)
		}
		if !in.HostAllowed(u.Scheme, u.Host) {
			t.Errorf("%s host %s is not in allowed_hosts", opt, u.Host)
		}
	}
	if _, err := in.ResolveHeaders("headers", in.Headers, conn); err != nil {
		t.Errorf("headers with %v: %v", conn, err)
	}
	if in.Discovery != nil {
		if _, err := in.ResolveHeaders("discovery.headers", in.Discovery.Headers, conn); err != nil {
			t.Errorf("discovery.headers with %v: %v", conn, err)
		}
	}
}

// checkAuthorizeURL builds the authorization URL the connect page sends an
// end user to and checks its parameters.
func checkAuthorizeURL(t *testing.T, in *account.Integration, conn map[string]string) {
	t.Helper()
	const redirect = "https://gate.example.com/connect/callback"
	verifier := "verifier-0123456789-0123456789-0123456789-0123456789"
	scopes := append(append([]string(nil), in.Scopes...), "extra.scope")
	got, err := linkflow.AuthorizeURL(in, conn, redirect, scopes, "state-1", verifier)
	if err != nil {
		t.Fatalf("AuthorizeURL with %v: %v", conn, err)
	}
	u, err := url.Parse(got)
	if err != nil {
		t.Fatalf("authorize URL %q: %v", got, err)
	}
	if !in.HostAllowed(u.Scheme, u.Host) {
		t.Errorf("authorize URL host %s is not in allowed_hosts", u.Host)
	}
	q := u.Query()
	want := map[string]string{
		"response_type": "code",
		"client_id":     in.ClientID,
		"redirect_uri":  redirect,
		"state":         "state-1",
		"scope":         strings.Join(scopes, in.Separator()),
	}
	for k, v := range in.AuthorizeParams {
		want[k] = v
	}
	// The authorize_url's own query (Sage's filter) is kept.
	resolved, err := in.ResolveURL("authorize_url", in.AuthorizeURL, conn)
	if err != nil {
		t.Fatalf("authorize_url: %v", err)
	}
	tmplURL, _ := url.Parse(resolved)
	for k := range tmplURL.Query() {
		want[k] = tmplURL.Query().Get(k)
	}
	for k, v := range want {
		if got := q[k]; len(got) != 1 || got[0] != v {
			t.Errorf("authorize URL %s = %q, want %q", k, got, v)
		}
	}
	if in.UsesPKCE() {
		if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") != oauth2S256(verifier) {
			t.Errorf("authorize URL has no S256 challenge of the verifier: %s", got)
		}
	} else if q.Has("code_challenge") || q.Has("code_challenge_method") {
		t.Errorf("PKCE is off, but the authorize URL carries a challenge: %s", got)
	}
}

// oauth2S256 is RFC 7636's S256 challenge, computed independently of
// x/oauth2.
func oauth2S256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
