package linkgate_test

import (
	"encoding/base64"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/linkgate/linkgate/internal/hostmap"
	"github.com/linkgate/linkgate/internal/testenv"
)

// hostsCaddyfile is a gateway with one integration per class of
// per-account host, hand-written against the test authorization server,
// and real presets with nothing but a client id and secret (or nothing, for
// Freshdesk).
const hostsCaddyfile = `{
	admin off
	integrated_accounts {
		storage sqlite {{DATA}}/linkgate.db
		api_token test-api-token-0123456789
		public_url http://{{GATEWAY}}
		webhook {{HOOK}} {
			secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
		}
		integration instance {
			auth oauth2
			authorize_url {{AS}}/authorize
			token_url {{AS}}/token
			client_id linkgate
			client_secret client-secret-for-tests-0123456789
			base_url {connection.instance_url}/services/data
			allowed_hosts *.inst.test {{ASHOST}}
			connection_field instance_url {
				kind https_url
				source token_response
				path instance_url
			}
		}
		integration desk {
			auth oauth2
			authorize_url {{AS}}/authorize
			token_url {{AS}}/token
			client_id linkgate
			client_secret client-secret-for-tests-0123456789
			base_url https://{connection.subdomain}.desk.test/api/v2
			allowed_hosts *.desk.test {{ASHOST}}
			connection_field subdomain {
				kind dns_label
				label "Desk subdomain"
			}
		}
		integration atlas {
			auth oauth2
			authorize_url {{AS}}/authorize
			token_url {{AS}}/token
			client_id linkgate
			client_secret client-secret-for-tests-0123456789
			base_url https://api.atlas.test/ex/jira/{connection.cloud_id}
			discovery {{AS}}/discovery
			allowed_hosts api.atlas.test {{ASHOST}}
			connection_field cloud_id {
				kind uuid
				source discovery
				path 0.id
			}
		}
		integration books {
			auth oauth2
			authorize_url {{AS}}/authorize
			token_url {{AS}}/token
			client_id linkgate
			client_secret client-secret-for-tests-0123456789
			base_url https://books.test/v3/company/{connection.realm_id}
			header X-Company {connection.realm_id}
			allowed_hosts books.test {{ASHOST}}
			connection_field realm_id {
				kind pattern
				pattern [0-9]+
				source callback
				param realmId
			}
		}
		integration zendesk {
			preset zendesk
			client_id linkgate
			client_secret client-secret-for-tests-0123456789
		}
		integration salesforce {
			preset salesforce
			client_id linkgate
			client_secret client-secret-for-tests-0123456789
		}
		integration jira {
			preset jira
			client_id linkgate
			client_secret client-secret-for-tests-0123456789
		}
		integration freshdesk {
			preset freshdesk
		}
		integration quickbooks {
			preset quickbooks
			client_id linkgate
			client_secret client-secret-for-tests-0123456789
		}
	}
}

http://{{GATEWAY}} {
	handle /proxy/* {
		uri strip_prefix /proxy
		inject_credentials
		reverse_proxy {integrated_account.upstream} {
			transport linkgate {
				tls_trust_pool inline {
					trust_der {{TRUST}}
				}
			}
		}
	}
	handle /connect-account* {
		connect_account
	}
	handle {
		accounts_api
	}
}
`

// hostsWorld is a gateway whose per-account hosts are TLS sites on this
// machine under their own names: hostmap sends the gateway's connections
// for those names (and only those) to them, and every other host name to
// stray, which must never see a connection.
type hostsWorld struct {
	*world
	ca    *testenv.CA
	stray *testenv.Recorder
	sites map[string]*testenv.Site
	agent *hostAgent
}

// Cloud ids and realms the providers of the test answer with, and the
// Freshdesk API key of its customer acme.
const (
	freshdeskKey = "fd_key_5c0ffee1d2"
	cloudA       = "8f2d3c4e-1a2b-4c5d-9e8f-0123456789ab"
	realmA       = "4620816365178000000"
)

func newHostsWorld(t *testing.T) *hostsWorld {
	t.Helper()
	g := newGateway(t)
	hw := &hostsWorld{world: &world{gateway: g}, sites: map[string]*testenv.Site{}}
	hw.as = testenv.NewAuthServer(t, testenv.AuthServerOptions{Clients: []testenv.Client{{
		ID: oauthClient, Secret: oauthSecret, RedirectURIs: []string{g.base + callbackPath},
	}}})
	hw.hooks = testenv.NewWebhookReceiver(t)
	hw.ca = testenv.NewCA(t)
	hw.stray = testenv.NewRecorder(t)

	api := testenv.UpstreamOptions{Auth: hw.as}
	site := func(name string, o testenv.SiteOptions) {
		o.Names = []string{name}
		o.Upstream = api
		if o.OAuth != nil {
			o.AS = hw.as
		}
		hw.sites[name] = testenv.NewSite(t, hw.ca, o)
	}
	// Hand-written integrations: the API hosts only.
	for _, n := range []string{"na1.inst.test", "na2.inst.test", "acme.desk.test", "globex.desk.test", "api.atlas.test", "books.test"} {
		site(n, testenv.SiteOptions{})
	}
	// The presets' hosts, answering at the paths the presets name.
	site("acme.zendesk.com", testenv.SiteOptions{OAuth: map[string]string{
		"/oauth/authorizations/new": "authorize", "/oauth/tokens": "token"}})
	site("login.salesforce.com", testenv.SiteOptions{UserIDField: "user_id", OAuth: map[string]string{
		"/services/oauth2/authorize": "authorize", "/services/oauth2/token": "token", "/services/oauth2/userinfo": "userinfo"}})
	site("acme.my.salesforce.com", testenv.SiteOptions{})
	site("auth.atlassian.com", testenv.SiteOptions{OAuth: map[string]string{"/oauth/token": "token"},
		AuthorizeParams: map[string]string{"audience": "api.atlassian.com", "prompt": "consent"}})
	site("api.atlassian.com", testenv.SiteOptions{UserIDField: "account_id", OAuth: map[string]string{
		"/oauth/token/accessible-resources": "discovery", "/me": "userinfo"}})

	site("appcenter.intuit.com", testenv.SiteOptions{OAuth: map[string]string{"/connect/oauth2": "authorize"}})
	site("oauth.platform.intuit.com", testenv.SiteOptions{OAuth: map[string]string{"/oauth2/v1/tokens/bearer": "token"}})
	site("quickbooks.api.intuit.com", testenv.SiteOptions{})
	hw.sites["acme.freshdesk.com"] = testenv.NewSite(t, hw.ca, testenv.SiteOptions{Names: []string{"acme.freshdesk.com"},
		Upstream: testenv.UpstreamOptions{Username: freshdeskKey, Password: "X"}})

	addrs := map[string]string{}
	for name, s := range hw.sites {
		addrs[name+":443"] = s.Addr()
	}
	// An impostor: a name whose connections reach another customer's
	// server, which holds no certificate for it.
	addrs["initech.desk.test:443"] = hw.sites["acme.desk.test"].Addr()
	// Set before the config loads: the gateway's own clients are built then.
	t.Cleanup(hostmap.Set(&hostmap.Map{Addrs: addrs, Fallback: hw.stray.Addr(), Roots: hw.ca.Pool()}))
	hw.agent = newHostAgent(t, g, hw.ca)

	asHost := strings.TrimPrefix(hw.as.URL(), "http://")
	hw.caddyfile = g.expand(hostsCaddyfile,
		"{{AS}}", hw.as.URL(),
		"{{ASHOST}}", asHost,
		"{{HOOK}}", hw.hooks.URL(),
		"{{TRUST}}", base64.StdEncoding.EncodeToString(hw.ca.DER()),
	)
	if err := loadCaddyfile(t, hw.caddyfile); err != nil {
		t.Fatalf("loading Caddy: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	return hw
}

// hostAgent is the end user's browser at the HTTP level: it reaches the
// providers' names through the same map as the gateway, trusts the test
// CA, and keeps the gateway's cookies (sent back over plain http to
// localhost, as browsers do).
type hostAgent struct {
	t       *testing.T
	g       *gateway
	client  *http.Client
	mu      sync.Mutex
	cookies map[string]*http.Cookie
}

func newHostAgent(t *testing.T, g *gateway, ca *testenv.CA) *hostAgent {
	tr := hostmap.Transport().(*http.Transport)
	tr.TLSClientConfig.RootCAs = ca.Pool()
	return &hostAgent{t: t, g: g, cookies: map[string]*http.Cookie{}, client: &http.Client{
		Transport:     tr,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

type page struct {
	status   int
	header   http.Header
	body     string
	location *url.URL
}

func (a *hostAgent) do(method, u string, form url.Values) page {
	a.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		a.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	toGateway := strings.HasPrefix(u, a.g.base+"/")
	if toGateway {
		a.mu.Lock()
		for _, c := range a.cookies {
			req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		}
		a.mu.Unlock()
	}
	resp, err := a.client.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if toGateway {
		a.mu.Lock()
		for _, c := range resp.Cookies() {
			a.cookies[c.Name] = c
		}
		a.mu.Unlock()
	}
	p := page{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if loc := resp.Header.Get("Location"); loc != "" {
		p.location, _ = url.Parse(loc)
	}
	return p
}

// connect asks the API for a link token with body, opens its magic link,
// submits the connect form with fields, signs in at the provider as user
// and returns the page the callback answered with. A step that does not
// lead to the next returns its page.
func (hw *hostsWorld) connect(t *testing.T, body map[string]any, fields url.Values, user string) page {
	t.Helper()
	status, out := hw.do("POST", "/link-token", body)
	if status != http.StatusCreated {
		t.Fatalf("link token %v: %d %s", body, status, out)
	}
	lt := mustJSON(t, out)
	magic := lt["url"].(string)
	if p := hw.agent.do("GET", magic, nil); p.status != http.StatusOK {
		t.Fatalf("magic link: %d %s", p.status, p.body)
	}
	form := url.Values{"link_token": {lt["link_token"].(string)}}
	for k, v := range fields {
		form[k] = v
	}
	p := hw.agent.do("POST", hw.base+"/connect-account", form)
	if p.status != http.StatusSeeOther || p.location == nil {
		return p
	}
	authorize := p.location
	consent := hw.agent.do("GET", authorize.String(), nil)
	if consent.status != http.StatusOK {
		t.Fatalf("consent page at %s: %d %s %v", authorize.Host, consent.status, consent.body, consent.location)
	}
	// The consent form posts its hidden fields to /authorize on the
	// provider's host.
	answer := url.Values{}
	for _, m := range hiddenRE.FindAllStringSubmatch(consent.body, -1) {
		answer.Add(html.UnescapeString(m[1]), html.UnescapeString(m[2]))
	}
	answer.Set("username", user)
	answer.Set("action", "allow")
	p = hw.agent.do("POST", (&url.URL{Scheme: authorize.Scheme, Host: authorize.Host, Path: "/authorize"}).String(), answer)
	if p.location == nil || !strings.HasPrefix(p.location.String(), hw.base+callbackPath) {
		t.Fatalf("consent answered %d without a redirect to the callback: %s", p.status, p.body)
	}
	return hw.agent.do("GET", p.location.String(), nil)
}

var hiddenRE = regexp.MustCompile(`<input type="hidden" name="([^"]*)" value="([^"]*)">`)

var resultRE = regexp.MustCompile(`(?s)<script type="application/json" id="linkgate-result">(.*?)</script>`)

// posted is the message a connect page posts to the application, or nil.
func posted(t *testing.T, p page) map[string]any {
	t.Helper()
	m := resultRE.FindStringSubmatch(p.body)
	if m == nil {
		return nil
	}
	var v struct {
		Message map[string]any `json:"message"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(m[1])), &v); err != nil {
		t.Fatalf("the posted message is not JSON: %v\n%s", err, m[1])
	}
	return v.Message
}

// connected runs connect and returns the account id the success page
// posted.
func (hw *hostsWorld) connected(t *testing.T, body map[string]any, fields url.Values, user string) string {
	t.Helper()
	p := hw.connect(t, body, fields, user)
	msg := posted(t, p)
	if p.status != http.StatusOK || msg["result"] != "success" {
		t.Fatalf("connect %v: %d %v\n%s", body, p.status, msg, p.body)
	}
	return msg["integrated_account_id"].(string)
}

// account reads an account through the API.
func (hw *hostsWorld) account(t *testing.T, id string) map[string]any {
	t.Helper()
	status, body := hw.do("GET", "/integrated-account/"+id, nil)
	if status != http.StatusOK {
		t.Fatalf("account %s: %d %s", id, status, body)
	}
	return mustJSON(t, body)
}

// accountsOf lists a tenant's accounts through the API.
func (hw *hostsWorld) accountsOf(t *testing.T, tenant string) []any {
	t.Helper()
	status, body := hw.do("GET", "/integrated-account?tenant_id="+url.QueryEscape(tenant), nil)
	if status != http.StatusOK {
		t.Fatalf("list: %d %s", status, body)
	}
	r, _ := mustJSON(t, body)["result"].([]any)
	return r
}

// subjectOf is the AS subject whose access token a recorded request
// carried, or "".
func (hw *hostsWorld) subjectOf(r testenv.RecordedRequest) string {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	sub, _ := hw.as.ValidAccessToken(tok)
	return sub
}

// proxiedTo makes a proxied call for id and checks that it reached site
// (and no other host) at path, with the account's access token of user
// and none of the caller's credentials.
func (hw *hostsWorld) proxiedTo(t *testing.T, id, call, site, path, user string) {
	t.Helper()
	s := hw.sites[site]
	before := s.Count()
	status, body := hw.proxyAs(t, id, call)
	if status != http.StatusOK {
		t.Fatalf("proxy %s for %s: %d %s", call, id, status, body)
	}
	if s.Count() != before+1 {
		t.Fatalf("the call did not reach %s", site)
	}
	r, _ := s.Last()
	if r.Path != path || r.Host != site {
		t.Fatalf("%s got %s %s, want %s", site, r.Host, r.Path, path)
	}
	if sub := hw.subjectOf(r); sub != user {
		t.Fatalf("%s got the credentials of %q, want %q's", site, sub, user)
	}
	if strings.Contains(r.Header.Get("Authorization"), apiToken) {
		t.Fatal("the caller's API token reached the upstream")
	}
}

// refreshNow forces a refresh through the API.
func (hw *hostsWorld) refreshNow(t *testing.T, id string) {
	t.Helper()
	status, body := hw.do("POST", "/integrated-account/refresh-credentials", map[string]any{"id": id})
	if status != http.StatusOK || !strings.Contains(string(body), `"success":true`) {
		t.Fatalf("refresh %s: %d %s", id, status, body)
	}
}

// refreshedAt forces a refresh of id and checks that the next call to site
// carries a new token: the refresh went through the integration's own
// token endpoint (a preset's only way to the authorization server is its
// provider's host name).
func (hw *hostsWorld) refreshedAt(t *testing.T, id, call, site, path, user string) {
	t.Helper()
	r0, _ := hw.sites[site].Last()
	hw.refreshNow(t, id)
	hw.proxiedTo(t, id, call, site, path, user)
	if r1, _ := hw.sites[site].Last(); r1.Header.Get("Authorization") == r0.Header.Get("Authorization") {
		t.Fatal("the call after the refresh did not carry the refreshed token")
	}
}

// lifecycle is the rest of every class's story once the account works:
// a refresh that the next call uses, an upstream 401 that puts the account
// in needs_reauth with exactly one authentication_error webhook, and a
// reconnect through a new link token (with fields for the form) after
// which the same account works again.
func (hw *hostsWorld) lifecycle(t *testing.T, id, site, call, path, user string, fields url.Values) {
	t.Helper()
	hw.refreshedAt(t, id, call, site, path, user)

	// The upstream refuses the token, and the refreshed one too.
	hw.sites[site].ForceStatus(http.StatusUnauthorized, 2)
	if status, body := hw.proxyAs(t, id, call); status != http.StatusUnauthorized {
		t.Fatalf("upstream 401: %d %s", status, body)
	}
	if st := hw.account(t, id)["status"]; st != "needs_reauth" {
		t.Fatalf("status after upstream 401s: %v", st)
	}
	// More calls fail fast, without reaching the upstream or raising
	// another alarm.
	before := hw.sites[site].Count()
	for range 3 {
		if status, _ := hw.proxyAs(t, id, call); status != http.StatusUnauthorized {
			t.Fatalf("call to an account in needs_reauth: %d", status)
		}
	}
	if n := hw.sites[site].Count(); n != before {
		t.Fatalf("%d calls reached the upstream of an account in needs_reauth", n-before)
	}
	hw.waitEvents(t, "integrated_account:authentication_error", id, 1)

	// The application asks for a link token, the user reconnects.
	again := hw.connected(t, map[string]any{"integrated_account_id": id}, fields, user)
	if again != id {
		t.Fatalf("reconnect made account %s, want %s", again, id)
	}
	hw.proxiedTo(t, id, call, site, path, user)
	if st := hw.account(t, id)["status"]; st != "active" {
		t.Fatalf("status after reconnect: %v", st)
	}
	hw.waitEvents(t, "integrated_account:active", id, 2) // connect, reconnect
	if n := len(hw.events(t, "integrated_account:authentication_error", id)); n != 1 {
		t.Fatalf("%d authentication_error events, want exactly 1", n)
	}
}

// strayNone checks that no connection went to a host the test did not
// expect.
func (hw *hostsWorld) strayNone(t *testing.T) {
	t.Helper()
	if n := hw.stray.Conns(); n != 0 {
		t.Fatalf("%d connections to a host no account may reach", n)
	}
}

// TestProviderHosts drives each class of per-account host through one real
// Caddy: connect at the provider, proxied calls to the account's own host,
// refresh, upstream 401, the alarm, reconnect; the refusals of bad values;
// and the real presets with only a client id and secret.
func TestProviderHosts(t *testing.T) {
	hw := newHostsWorld(t)
	defer hw.strayNone(t)

	t.Run("instance URL from the token response, moved by a refresh", func(t *testing.T) {
		hw.as.SetTokenExtra(map[string]any{"instance_url": "https://na1.inst.test"})
		defer hw.as.SetTokenExtra(nil)
		id := hw.connected(t, map[string]any{"tenant_id": "t-inst", "integration": "instance"}, nil, "ina")
		if got := hw.account(t, id)["context"].(map[string]any)["instance_url"]; got != "https://na1.inst.test" {
			t.Fatalf("instance_url stored: %v", got)
		}
		hw.proxiedTo(t, id, "/sobjects", "na1.inst.test", "/services/data/sobjects", "ina")

		// The org moved: the refresh answer names the new instance, and
		// the next call goes there.
		hw.as.SetTokenExtra(map[string]any{"instance_url": "https://na2.inst.test"})
		hw.refreshNow(t, id)
		if got := hw.account(t, id)["context"].(map[string]any)["instance_url"]; got != "https://na2.inst.test" {
			t.Fatalf("instance_url after a refresh that moved it: %v", got)
		}
		hw.proxiedTo(t, id, "/sobjects", "na2.inst.test", "/services/data/sobjects", "ina")

		// A refresh answer naming a host outside allowed_hosts is not
		// followed: the new tokens are kept, the instance is not.
		for _, evil := range []string{"https://evil.example.com", "https://na1.inst.test.evil.example.com", "http://na1.inst.test", "https://na1.inst.test/x?y#z"} {
			hw.as.SetTokenExtra(map[string]any{"instance_url": evil})
			hw.refreshNow(t, id)
			if got := hw.account(t, id)["context"].(map[string]any)["instance_url"]; got != "https://na2.inst.test" {
				t.Fatalf("instance_url after a refresh answering %s: %v", evil, got)
			}
			hw.proxiedTo(t, id, "/sobjects", "na2.inst.test", "/services/data/sobjects", "ina")
		}
		hw.strayNone(t)

		hw.as.SetTokenExtra(map[string]any{"instance_url": "https://na2.inst.test"})
		hw.lifecycle(t, id, "na2.inst.test", "/sobjects", "/services/data/sobjects", "ina", nil)

		// An account imported with its instance in context goes there
		// too, and follows a refresh that moves it.
		hw.as.SetTokenExtra(nil)
		tok := hw.as.Authorize(t, oauthClient, hw.base+callbackPath, "imogen", nil)
		imported := hw.importAccount(map[string]any{"tenant_id": "t-inst-import", "integration": "instance",
			"context": map[string]any{"instance_url": "https://NA1.inst.test/", "oauth": map[string]any{"token": map[string]any{
				"access_token": tok.AccessToken, "refresh_token": tok.RefreshToken, "expires_in": 3600}}}})
		if got := hw.account(t, imported)["context"].(map[string]any)["instance_url"]; got != "https://na1.inst.test" {
			t.Fatalf("imported instance_url stored as %v", got)
		}
		hw.proxiedTo(t, imported, "/limits", "na1.inst.test", "/services/data/limits", "imogen")
		hw.as.SetTokenExtra(map[string]any{"instance_url": "https://na2.inst.test"})
		hw.refreshedAt(t, imported, "/limits", "na2.inst.test", "/services/data/limits", "imogen")

		// The org moved while its token was in use: the old instance
		// refuses the token, the refresh that 401 brings names the new
		// instance, and the retry goes there, not back to the old one.
		hw.as.SetTokenExtra(map[string]any{"instance_url": "https://na1.inst.test"})
		hw.refreshNow(t, imported)
		na1, na2 := hw.sites["na1.inst.test"], hw.sites["na2.inst.test"]
		hw.as.SetTokenExtra(map[string]any{"instance_url": "https://na2.inst.test"})
		na1.ForceStatus(http.StatusUnauthorized, 1)
		before1, before2 := na1.Count(), na2.Count()
		if status, body := hw.proxyAs(t, imported, "/limits"); status != http.StatusOK {
			t.Fatalf("call during the move: %d %s", status, body)
		}
		if na1.Count() != before1+1 || na2.Count() != before2+1 {
			t.Fatalf("the retry after the refresh that moved the instance went to the old instance: na1 +%d, na2 +%d", na1.Count()-before1, na2.Count()-before2)
		}
		if r, _ := na2.Last(); hw.subjectOf(r) != "imogen" || r.Path != "/services/data/limits" {
			t.Fatalf("the new instance got %s with the credentials of %q", r.Path, hw.subjectOf(r))
		}
		if st := hw.account(t, imported)["status"]; st != "active" {
			t.Fatalf("status after the move: %v", st)
		}
	})

	t.Run("subdomain hosts", func(t *testing.T) {
		acme := hw.connected(t, map[string]any{"tenant_id": "t-desk", "integration": "desk"},
			url.Values{"connection.subdomain": {"Acme"}}, "ann")
		globex := hw.connected(t, map[string]any{"tenant_id": "t-desk2", "integration": "desk", "context": map[string]any{"subdomain": "globex"}},
			nil, "bob")
		hw.proxiedTo(t, acme, "/tickets.json", "acme.desk.test", "/api/v2/tickets.json", "ann")
		hw.proxiedTo(t, globex, "/tickets.json", "globex.desk.test", "/api/v2/tickets.json", "bob")
		hw.lifecycle(t, acme, "acme.desk.test", "/tickets.json", "/api/v2/tickets.json", "ann", nil)
	})

	t.Run("discovery", func(t *testing.T) {
		hw.as.SetDiscovery([]any{map[string]any{"id": strings.ToUpper(cloudA), "name": "acme", "url": "https://acme.atlassian.net"}})
		defer hw.as.SetDiscovery(nil)
		id := hw.connected(t, map[string]any{"tenant_id": "t-atlas", "integration": "atlas"}, nil, "ada")
		if got := hw.account(t, id)["context"].(map[string]any)["cloud_id"]; got != cloudA {
			t.Fatalf("cloud_id stored: %v", got)
		}
		hw.proxiedTo(t, id, "/rest/api/3/myself", "api.atlas.test", "/ex/jira/"+cloudA+"/rest/api/3/myself", "ada")
		hw.lifecycle(t, id, "api.atlas.test", "/rest/api/3/myself", "/ex/jira/"+cloudA+"/rest/api/3/myself", "ada", nil)
	})

	t.Run("callback parameter", func(t *testing.T) {
		hw.as.SetCallbackParams(map[string]string{"realmId": realmA})
		defer hw.as.SetCallbackParams(nil)
		id := hw.connected(t, map[string]any{"tenant_id": "t-books", "integration": "books"}, nil, "quinn")
		if got := hw.account(t, id)["context"].(map[string]any)["realm_id"]; got != realmA {
			t.Fatalf("realm_id stored: %v", got)
		}
		hw.proxiedTo(t, id, "/query", "books.test", "/v3/company/"+realmA+"/query", "quinn")
		// The templated header carries the account's realm, whatever the
		// caller sends in its place.
		if status, body := hw.do("GET", "/proxy/query?integrated_account_id="+id, nil, "X-Company", "999"); status != http.StatusOK {
			t.Fatalf("call with the caller's X-Company: %d %s", status, body)
		}
		r, _ := hw.sites["books.test"].Last()
		if got := r.Header.Values("X-Company"); len(got) != 1 || got[0] != realmA {
			t.Fatalf("X-Company reached the upstream as %q", got)
		}
		hw.lifecycle(t, id, "books.test", "/query", "/v3/company/"+realmA+"/query", "quinn", nil)
	})

	t.Run("each account's credentials reach only its own host", func(t *testing.T) {
		ids := map[string]string{}
		for sub, user := range map[string]string{"acme": "cat", "globex": "dan"} {
			ids[sub] = hw.connected(t, map[string]any{"tenant_id": "t-par-" + sub, "integration": "desk", "context": map[string]any{"subdomain": sub}}, nil, user)
		}
		acme, globex := hw.sites["acme.desk.test"], hw.sites["globex.desk.test"]
		acme.Reset()
		globex.Reset()
		const n = 40
		var wg sync.WaitGroup
		errs := make(chan string, 2*n)
		for i := range 2 * n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sub := "acme"
				if i%2 == 1 {
					sub = "globex"
				}
				req, _ := http.NewRequest("GET", hw.base+"/proxy/tickets.json?integrated_account_id="+ids[sub], nil)
				req.Header.Set("Authorization", "Bearer "+apiToken)
				// The caller names the other customer's host every way it
				// can; the account's own host is used regardless.
				other := map[string]string{"acme": "globex.desk.test", "globex": "acme.desk.test"}[sub]
				req.Header.Set("X-Forwarded-Host", other)
				req.Header.Set("Forwarded", "host="+other)
				req.Header.Set("X-Subdomain", other)
				resp, err := hw.client.Do(req)
				if err != nil {
					errs <- err.Error()
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- resp.Status
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
		for site, user := range map[*testenv.Site]string{acme: "cat", globex: "dan"} {
			rs := site.Requests()
			if len(rs) != n {
				t.Errorf("%d requests reached a site, want %d", len(rs), n)
			}
			for _, r := range rs {
				if sub := hw.subjectOf(r); sub != user {
					t.Fatalf("%s got a request with the credentials of %q, want only %q's", r.Host, sub, user)
				}
				if strings.Contains(r.Header.Get("Authorization"), apiToken) || strings.Contains(strings.Join(r.Header.Values("Authorization"), ","), apiToken) {
					t.Fatalf("the caller's Authorization reached %s", r.Host)
				}
			}
		}
	})

	t.Run("a host whose server cannot prove it is that host gets nothing", func(t *testing.T) {
		id := hw.connected(t, map[string]any{"tenant_id": "t-initech", "integration": "desk", "context": map[string]any{"subdomain": "initech"}}, nil, "ivan")
		acme := hw.sites["acme.desk.test"]
		before := acme.Count()
		status, body := hw.proxyAs(t, id, "/tickets.json")
		if status != http.StatusBadGateway {
			t.Fatalf("call to a host answered by an impostor: %d %s", status, body)
		}
		if acme.Count() != before {
			t.Fatal("the impostor received a request")
		}
		if st := hw.account(t, id)["status"]; st != "active" {
			t.Fatalf("a TLS failure changed the account's status to %v", st)
		}
	})

	t.Run("bad subdomains", func(t *testing.T) {
		good := hw.connected(t, map[string]any{"tenant_id": "t-good", "integration": "desk", "context": map[string]any{"subdomain": "acme"}}, nil, "gus")
		strayBefore := hw.stray.Conns()
		for _, bad := range []string{"evil.test#", "a.b", ".."} {
			// The API: import and link token, 400 naming the field.
			status, body := hw.do("POST", "/integrated-account", map[string]any{"tenant_id": "t-bad", "integration": "desk",
				"context": map[string]any{"subdomain": bad, "oauth": map[string]any{"token": map[string]any{"access_token": "at", "refresh_token": "rt"}}}})
			if status != http.StatusBadRequest || !strings.Contains(string(body), "context.subdomain") {
				t.Fatalf("import with subdomain %q: %d %s", bad, status, body)
			}
			status, body = hw.do("PATCH", "/integrated-account/"+good, map[string]any{"context": map[string]any{"subdomain": bad}})
			if status != http.StatusBadRequest || !strings.Contains(string(body), "context.subdomain") {
				t.Fatalf("PATCH to subdomain %q: %d %s", bad, status, body)
			}
			if got := hw.account(t, good)["context"].(map[string]any)["subdomain"]; got != "acme" {
				t.Fatalf("a refused PATCH changed the subdomain to %v", got)
			}
			status, body = hw.do("POST", "/link-token", map[string]any{"tenant_id": "t-bad", "integration": "desk", "context": map[string]any{"subdomain": bad}})
			if status != http.StatusBadRequest || !strings.Contains(string(body), "context.subdomain") {
				t.Fatalf("link token with subdomain %q: %d %s", bad, status, body)
			}
			// The connect form: shown again naming the field, so the user
			// can correct it; nothing is posted to the application.
			p := hw.connect(t, map[string]any{"tenant_id": "t-bad", "integration": "desk"}, url.Values{"connection.subdomain": {bad}}, "eve")
			if p.status != http.StatusBadRequest || p.location != nil || !strings.Contains(p.body, "Desk subdomain") || posted(t, p) != nil {
				t.Fatalf("connect form with subdomain %q: %d %v\n%s", bad, p.status, p.location, p.body)
			}
		}
		if n := len(hw.accountsOf(t, "t-bad")); n != 0 {
			t.Fatalf("%d accounts stored from bad subdomains", n)
		}
		hw.proxiedTo(t, good, "/tickets.json", "acme.desk.test", "/api/v2/tickets.json", "gus")
		if hw.stray.Conns() != strayBefore {
			t.Fatal("a bad subdomain made a connection")
		}
	})

	t.Run("instance URL outside allowed_hosts", func(t *testing.T) {
		strayBefore := hw.stray.Conns()
		for _, evil := range []string{"https://evil.example.com", "https://na1.inst.test.evil.example.com", "https://evil.example.com:443"} {
			hw.as.SetTokenExtra(map[string]any{"instance_url": evil})
			p := hw.connect(t, map[string]any{"tenant_id": "t-evil", "integration": "instance"}, nil, "mallory")
			msg := posted(t, p)
			if p.status != http.StatusBadGateway || msg["error_type"] != "post_install_error" || !strings.Contains(p.body, "instance_url") {
				t.Fatalf("token response instance_url %s: %d %v\n%s", evil, p.status, msg, p.body)
			}
			status, body := hw.do("POST", "/integrated-account", map[string]any{"tenant_id": "t-evil", "integration": "instance",
				"context": map[string]any{"instance_url": evil, "oauth": map[string]any{"token": map[string]any{"access_token": "at", "refresh_token": "rt"}}}})
			if status != http.StatusBadRequest || !strings.Contains(string(body), "instance_url") {
				t.Fatalf("import with instance_url %s: %d %s", evil, status, body)
			}
		}
		hw.as.SetTokenExtra(nil)
		// A token response without the field at all.
		p := hw.connect(t, map[string]any{"tenant_id": "t-evil", "integration": "instance"}, nil, "mallory")
		if msg := posted(t, p); p.status != http.StatusBadGateway || msg["error_type"] != "post_install_error" {
			t.Fatalf("token response without instance_url: %d %v", p.status, msg)
		}
		if n := len(hw.accountsOf(t, "t-evil")); n != 0 {
			t.Fatalf("%d accounts stored from refused instance URLs", n)
		}
		if hw.stray.Conns() != strayBefore {
			t.Fatal("a refused instance URL was connected to")
		}
	})

	t.Run("discovery answer without the field", func(t *testing.T) {
		strayBefore := hw.stray.Conns()
		for _, doc := range []any{[]any{}, []any{map[string]any{"name": "no id"}}, map[string]any{"id": cloudA}, []any{map[string]any{"id": "evil.example.com"}}} {
			hw.as.SetDiscovery(doc)
			before := hw.sites["api.atlas.test"].Count()
			p := hw.connect(t, map[string]any{"tenant_id": "t-nodisc", "integration": "atlas"}, nil, "nina")
			if msg := posted(t, p); p.status != http.StatusBadGateway || msg["error_type"] != "post_install_error" {
				t.Fatalf("discovery answer %v: %d %v\n%s", doc, p.status, msg, p.body)
			}
			if hw.sites["api.atlas.test"].Count() != before {
				t.Fatal("a connection without a cloud id reached the API")
			}
		}
		hw.as.SetDiscovery(nil)
		if n := len(hw.accountsOf(t, "t-nodisc")); n != 0 {
			t.Fatalf("%d accounts stored from bad discovery answers", n)
		}
		if hw.stray.Conns() != strayBefore {
			t.Fatal("a bad discovery answer made a connection")
		}
	})

	t.Run("callback parameter of the wrong form", func(t *testing.T) {
		strayBefore := hw.stray.Conns()
		for _, realm := range []string{"", "12/../34", "books.evil.example.com", "1 2"} {
			hw.as.SetCallbackParams(map[string]string{"realmId": realm})
			p := hw.connect(t, map[string]any{"tenant_id": "t-badrealm", "integration": "books"}, nil, "rita")
			if msg := posted(t, p); p.status != http.StatusBadGateway || msg["error_type"] != "post_install_error" {
				t.Fatalf("realmId %q: %d %v\n%s", realm, p.status, msg, p.body)
			}
		}
		hw.as.SetCallbackParams(nil)
		if n := len(hw.accountsOf(t, "t-badrealm")); n != 0 {
			t.Fatalf("%d accounts stored from bad realm ids", n)
		}
		if hw.stray.Conns() != strayBefore {
			t.Fatal("a bad realm id made a connection")
		}
	})

	t.Run("presets with only a client id and secret", func(t *testing.T) {
		// Zendesk: the subdomain typed on the connect page; OAuth, the API
		// and the refresh all on the customer's own host.
		zd := hw.connected(t, map[string]any{"tenant_id": "t-zd", "integration": "zendesk"}, url.Values{"connection.subdomain": {"acme"}}, "zoe")
		hw.proxiedTo(t, zd, "/tickets.json", "acme.zendesk.com", "/api/v2/tickets.json", "zoe")
		hw.refreshedAt(t, zd, "/tickets.json", "acme.zendesk.com", "/api/v2/tickets.json", "zoe")

		// Salesforce: signed in at login.salesforce.com, the API at the
		// instance the token response names.
		hw.as.SetTokenExtra(map[string]any{"instance_url": "https://acme.my.salesforce.com"})
		defer hw.as.SetTokenExtra(nil)
		sf := hw.connected(t, map[string]any{"tenant_id": "t-sf", "integration": "salesforce"}, nil, "sam")
		ctx := hw.account(t, sf)["context"].(map[string]any)
		if ctx["instance_url"] != "https://acme.my.salesforce.com" || ctx["upstream_user_id"] != "sam" {
			t.Fatalf("salesforce account context: %v", ctx)
		}
		hw.proxiedTo(t, sf, "/sobjects/Account", "acme.my.salesforce.com", "/services/data/v60.0/sobjects/Account", "sam")
		hw.refreshedAt(t, sf, "/sobjects/Account", "acme.my.salesforce.com", "/services/data/v60.0/sobjects/Account", "sam")

		// Jira: the cloud id from accessible-resources after sign-in.
		hw.as.SetDiscovery([]any{map[string]any{"id": cloudA, "name": "acme", "scopes": []string{"read:jira-work"}}})
		defer hw.as.SetDiscovery(nil)
		jr := hw.connected(t, map[string]any{"tenant_id": "t-jira", "integration": "jira"}, nil, "jim")
		ctx = hw.account(t, jr)["context"].(map[string]any)
		if ctx["cloud_id"] != cloudA || ctx["upstream_user_id"] != "jim" {
			t.Fatalf("jira account context: %v", ctx)
		}
		hw.proxiedTo(t, jr, "/rest/api/3/myself", "api.atlassian.com", "/ex/jira/"+cloudA+"/rest/api/3/myself", "jim")
		hw.refreshedAt(t, jr, "/rest/api/3/myself", "api.atlassian.com", "/ex/jira/"+cloudA+"/rest/api/3/myself", "jim")

		// QuickBooks: the company's realmId on the callback.
		hw.as.SetCallbackParams(map[string]string{"realmId": realmA})
		defer hw.as.SetCallbackParams(nil)
		qb := hw.connected(t, map[string]any{"tenant_id": "t-qb", "integration": "quickbooks"}, nil, "quentin")
		if got := hw.account(t, qb)["context"].(map[string]any)["realm_id"]; got != realmA {
			t.Fatalf("quickbooks realm_id: %v", got)
		}
		hw.proxiedTo(t, qb, "/query", "quickbooks.api.intuit.com", "/v3/company/"+realmA+"/query", "quentin")
		hw.refreshedAt(t, qb, "/query", "quickbooks.api.intuit.com", "/v3/company/"+realmA+"/query", "quentin")

		// Freshdesk (basic, no OAuth client at all): the subdomain and the
		// key typed on the connect page, checked at the customer's own
		// host before anything is stored.
		fd := hw.sites["acme.freshdesk.com"]
		for _, c := range []struct {
			sub, key string
			status   int
			errType  string
		}{
			{"a.b", freshdeskKey, http.StatusBadRequest, ""},
			{"acme", "wrong-key", http.StatusBadRequest, "validation_error"},
		} {
			before := fd.Count()
			p := hw.connect(t, map[string]any{"tenant_id": "t-fd", "integration": "freshdesk"},
				url.Values{"connection.subdomain": {c.sub}, "username": {c.key}, "password": {"X"}}, "")
			msg := posted(t, p)
			if p.status != c.status || (c.errType == "") != (msg == nil) || (msg != nil && msg["error_type"] != c.errType) {
				t.Fatalf("freshdesk %s/%s: %d %v\n%s", c.sub, c.key, p.status, msg, p.body)
			}
			if c.errType == "" && fd.Count() != before {
				t.Fatal("a refused subdomain reached Freshdesk")
			}
		}
		if n := len(hw.accountsOf(t, "t-fd")); n != 0 {
			t.Fatalf("%d freshdesk accounts stored from refused forms", n)
		}
		p := hw.connect(t, map[string]any{"tenant_id": "t-fd", "integration": "freshdesk"},
			url.Values{"connection.subdomain": {"acme"}, "username": {freshdeskKey}, "password": {"X"}}, "")
		msg := posted(t, p)
		if p.status != http.StatusOK || msg["result"] != "success" {
			t.Fatalf("freshdesk connect: %d %v\n%s", p.status, msg, p.body)
		}
		fdID := msg["integrated_account_id"].(string)
		if status, body := hw.proxyAs(t, fdID, "/tickets"); status != http.StatusOK {
			t.Fatalf("freshdesk call: %d %s", status, body)
		}
		r, _ := fd.Last()
		if u, pw, ok := (&http.Request{Header: r.Header}).BasicAuth(); !ok || u != freshdeskKey || pw != "X" || r.Path != "/api/v2/tickets" || r.Host != "acme.freshdesk.com" {
			t.Fatalf("freshdesk got %s %s with basic %v", r.Host, r.Path, ok)
		}
	})
}
