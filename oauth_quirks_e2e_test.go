package linkgate_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/linkgate/linkgate/internal/testenv"
)

// quirksCaddyfile is one gateway for every OAuth quirk class; each class
// is an integration of its own in {{INTEGRATIONS}}.
const quirksCaddyfile = `{
	admin off
	integrated_accounts {
		storage sqlite {{DATA}}/linkgate.db
		api_token test-api-token-0123456789
		public_url http://{{GATEWAY}}
		webhook {{HOOK}} {
			secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
		}
{{INTEGRATIONS}}
	}
}

http://{{GATEWAY}} {
	handle /proxy/* {
		uri strip_prefix /proxy
		inject_credentials
		reverse_proxy {integrated_account.upstream} {
			transport linkgate
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

// quirkClass is one way a provider strays from RFC 6749: the test
// authorization server's mode that reproduces it, and the integration
// options that meet it. Without the options the class's story fails.
type quirkClass struct {
	name   string
	quirks testenv.Quirks
	// options are the integration's lines besides auth, endpoints, client
	// and base_url; with preset set they are the whole block but the client.
	options string
	preset  bool
	// upstream is how the API takes the token (Auth is filled in).
	upstream testenv.UpstreamOptions
	// fields are the connect form's fields.
	fields url.Values
	// setup runs once the servers exist (callback parameters, token extras).
	setup func(c *quirkEnv)
	// refresh is how the class refreshes: "forced" once, "twice" (the
	// second needs the first's refresh token kept), "expiry" (no forced
	// refresh: the token's assumed lifetime runs out), "none" (the
	// provider issues no refresh token).
	refresh string
}

// quirkEnv is a class's provider: its authorization server and API.
type quirkEnv struct {
	quirkClass
	as *testenv.AuthServer
	up *testenv.Upstream
}

// tokenOf reads the access token a recorded upstream request carried, in
// the header and format the class's API takes.
func (c *quirkEnv) tokenOf(r testenv.RecordedRequest) string {
	h, prefix := "Authorization", "Bearer "
	if c.upstream.TokenHeader != "" {
		h, prefix = c.upstream.TokenHeader, c.upstream.TokenPrefix
	}
	tok, ok := strings.CutPrefix(r.Header.Get(h), prefix)
	if !ok {
		return ""
	}
	return tok
}

func hostOf(u string) string { return strings.TrimPrefix(u, "http://") }

// newQuirksWorld starts every class's provider and one gateway with an
// integration per class.
func newQuirksWorld(t *testing.T, classes []quirkClass) (*hostsWorld, []*quirkEnv) {
	t.Helper()
	g := newGateway(t)
	w := &world{gateway: g, hooks: testenv.NewWebhookReceiver(t)}
	var envs []*quirkEnv
	var blocks strings.Builder
	for _, c := range classes {
		e := &quirkEnv{quirkClass: c}
		e.as = testenv.NewAuthServer(t, testenv.AuthServerOptions{Clients: []testenv.Client{{
			ID: oauthClient, Secret: oauthSecret, RedirectURIs: []string{g.base + callbackPath},
		}}})
		e.as.SetQuirks(c.quirks)
		o := c.upstream
		o.Auth = e.as
		e.upstream = o
		e.up = testenv.NewUpstream(t, o)
		if c.setup != nil {
			c.setup(e)
		}
		block := fmt.Sprintf("\t\tintegration %s {\n\t\t\tauth oauth2\n\t\t\tauthorize_url {{AS}}/authorize\n\t\t\ttoken_url {{AS}}/token\n\t\t\tclient_id %s\n\t\t\tclient_secret %s\n\t\t\tbase_url {{UP}}\n%s\n\t\t}\n",
			c.name, oauthClient, oauthSecret, c.options)
		if c.preset {
			block = fmt.Sprintf("\t\tintegration %s {\n\t\t\tclient_id %s\n\t\t\tclient_secret %s\n%s\n\t\t}\n", c.name, oauthClient, oauthSecret, c.options)
		}
		blocks.WriteString(strings.NewReplacer("{{AS}}", e.as.URL(), "{{ASHOST}}", hostOf(e.as.URL()),
			"{{UP}}", e.up.URL(), "{{UPHOST}}", hostOf(e.up.URL())).Replace(block))
		envs = append(envs, e)
	}
	cfg := blocks.String()
	w.caddyfile = g.expand(quirksCaddyfile, "{{HOOK}}", w.hooks.URL(), "{{INTEGRATIONS}}", cfg)
	if err := loadCaddyfile(t, w.caddyfile); err != nil {
		t.Fatalf("loading Caddy: %v\n%s", err, w.caddyfile)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	agent := &hostAgent{t: t, g: g, cookies: map[string]*http.Cookie{}, client: &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	return &hostsWorld{world: w, agent: agent}, envs
}

// quirkClasses are the OAuth quirk classes, each with the options of the
// provider it stands for.
func quirkClasses() []quirkClass {
	return []quirkClass{
		{
			// Slack's user token: the exchange nests it under authed_user
			// beside a bot token; refresh answers are flat; both say
			// token_types ("user", "bot") that are bearer tokens.
			name:   "nested",
			quirks: testenv.Quirks{NestTokens: "authed_user"},
			options: `			token_field access_token authed_user.access_token
			token_field refresh_token authed_user.refresh_token
			token_field expires_in authed_user.expires_in
			token_field token_type authed_user.token_type
			token_field scope authed_user.scope`,
			refresh: "forced",
		},
		{
			// Salesforce: no expires_in; the lifetime is configured.
			name:    "no_expires_in",
			quirks:  testenv.Quirks{NoExpiresIn: true},
			options: "\t\t\tdefault_expires_in 2s\n\t\t\trefresh_skew 1s",
			refresh: "expiry",
		},
		{
			name:    "comma_scopes",
			quirks:  testenv.Quirks{ScopeSeparator: ","},
			options: "\t\t\tscopes read write admin\n\t\t\tscope_separator ,",
			refresh: "forced",
		},
		{
			name:    "no_pkce",
			quirks:  testenv.Quirks{NoPKCE: true},
			options: "\t\t\tpkce off",
			refresh: "forced",
		},
		{
			// Google: no refresh token without both parameters.
			name:    "offline_params",
			quirks:  testenv.Quirks{OfflineParams: map[string]string{"access_type": "offline", "prompt": "consent"}},
			options: "\t\t\tauthorize_param access_type offline\n\t\t\tauthorize_param prompt consent",
			refresh: "forced",
		},
		{
			name:    "client_secret_basic",
			quirks:  testenv.Quirks{ClientAuth: "basic"},
			options: "\t\t\tauth_style header",
			refresh: "forced",
		},
		{
			name:    "client_secret_post",
			quirks:  testenv.Quirks{ClientAuth: "post"},
			options: "\t\t\tauth_style params",
			refresh: "forced",
		},
		{
			name:    "json_body_post",
			quirks:  testenv.Quirks{ClientAuth: "post", JSONBody: true},
			options: "\t\t\tauth_style params\n\t\t\ttoken_body json",
			refresh: "forced",
		},
		{
			// Notion: a JSON token body with HTTP Basic, and a version
			// header the API refuses to work without.
			name:     "static_header",
			quirks:   testenv.Quirks{ClientAuth: "basic", JSONBody: true},
			options:  "\t\t\ttoken_body json\n\t\t\theader Notion-Version 2022-06-28",
			upstream: testenv.UpstreamOptions{RequireHeaders: map[string]string{"Notion-Version": "2022-06-28"}},
			refresh:  "forced",
		},
		{
			// Google again: a refresh answer without a refresh token.
			name:    "no_rotation",
			quirks:  testenv.Quirks{NoRefreshRotation: true},
			refresh: "twice",
		},
		{
			// The shopify preset: comma scopes, no PKCE, client_secret_post,
			// a token without expiry or refresh token (Shopify issues
			// those only for expiring=1), in X-Shopify-Access-Token.
			name: "shop",
			quirks: testenv.Quirks{ScopeSeparator: ",", NoPKCE: true, ClientAuth: "post", NoExpiresIn: true,
				OfflineParams: map[string]string{"expiring": "1"}},
			preset: true,
			options: `			preset shopify
			authorize_url {{AS}}/authorize
			token_url {{AS}}/token
			base_url {{UP}}/admin/api
			allowed_hosts {{ASHOST}} {{UPHOST}}`,
			upstream: testenv.UpstreamOptions{TokenHeader: "X-Shopify-Access-Token"},
			fields:   url.Values{"connection.shop": {"acme"}},
			refresh:  "none",
		},
		{
			// The zoho_crm preset: the callback names the accounts server
			// the code goes to, the token answer the API domain; comma
			// scopes, offline parameters, no refresh rotation, and the
			// token as "Zoho-oauthtoken".
			name: "zoho",
			quirks: testenv.Quirks{ScopeSeparator: ",", ClientAuth: "post", NoRefreshRotation: true,
				OfflineParams: map[string]string{"access_type": "offline", "prompt": "consent"}},
			preset: true,
			options: `			preset zoho_crm
			authorize_url https://accounts.zoho.com/oauth/v2/auth
			token_url {connection.accounts_server}/token
			allowed_hosts accounts.zoho.com {{ASHOST}} {{UPHOST}}`,
			upstream: testenv.UpstreamOptions{TokenHeader: "Authorization", TokenPrefix: "Zoho-oauthtoken "},
			setup: func(c *quirkEnv) {
				c.as.SetCallbackParams(map[string]string{"location": "us", "accounts-server": c.as.URL()})
				c.as.SetTokenExtra(map[string]any{"api_domain": c.up.URL()})
			},
			refresh: "twice",
		},
	}
}

// TestOAuthQuirks drives every OAuth quirk class through one real Caddy:
// connect (link token, connect page, the provider's consent, callback), a
// proxied call with the right credentials, a refresh the next call uses,
// an upstream 401 that puts the account in needs_reauth with exactly one
// authentication_error webhook, and a reconnect after which the same
// account works again.
func TestOAuthQuirks(t *testing.T) {
	hw, envs := newQuirksWorld(t, quirkClasses())
	for _, c := range envs {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "zoho" {
				// Sign-in starts at Zoho's US accounts server, which the
				// test cannot serve: the agent follows it to the class's
				// authorization server, keeping the query.
				hw.agent.client.Transport = rewriteHost{"accounts.zoho.com", hostOf(c.as.URL())}
				defer func() { hw.agent.client.Transport = nil }()
			}
			user := "user-" + c.name
			id := hw.connected(t, map[string]any{"tenant_id": "t-" + c.name, "integration": c.name}, c.fields, user)
			first := quirkProxied(t, hw, c, id, user)
			if h := c.upstream.TokenHeader; h != "" && h != "Authorization" {
				// A caller's own value of the token's header never passes.
				status, body := hw.do("GET", "/proxy/me?integrated_account_id="+id, nil, h, "caller-token")
				r, _ := c.up.Last()
				if status != http.StatusOK || len(r.Header.Values(h)) != 1 || r.Header.Get(h) != first {
					t.Fatalf("call with the caller's %s: %d %s, upstream got %q", h, status, body, r.Header.Values(h))
				}
			}

			switch c.refresh {
			case "forced", "twice":
				prev := first
				for range map[string]int{"forced": 1, "twice": 2}[c.refresh] {
					hw.refreshNow(t, id)
					tok := quirkProxied(t, hw, c, id, user)
					if tok == prev {
						t.Fatal("the call after the refresh did not carry the refreshed token")
					}
					prev = tok
				}
			case "expiry":
				// No forced refresh: the assumed lifetime runs out, and
				// linkgate refreshes before the provider says so. Without
				// default_expires_in it never would.
				deadline := time.Now().Add(20 * time.Second)
				for c.as.TokenCalls("refresh_token") == 0 {
					if time.Now().After(deadline) {
						t.Fatal("no refresh 20s after the assumed lifetime ran out")
					}
					quirkProxied(t, hw, c, id, user)
					time.Sleep(50 * time.Millisecond)
				}
				deadline = time.Now().Add(20 * time.Second)
				for quirkProxied(t, hw, c, id, user) == first {
					if time.Now().After(deadline) {
						t.Fatal("calls still carry the first token after the refresh")
					}
					time.Sleep(20 * time.Millisecond)
				}
			case "none":
				if n := c.as.TokenCalls("refresh_token"); n != 0 {
					t.Fatalf("%d refreshes of a token that has no refresh token", n)
				}
			}

			// The user removes the app at the provider.
			c.as.RevokeSubject(user)
			if status, body := hw.proxyAs(t, id, "/me"); status != http.StatusUnauthorized {
				t.Fatalf("call after the provider revoked the grant: %d %s", status, body)
			}
			if st := hw.account(t, id)["status"]; st != "needs_reauth" {
				t.Fatalf("status after the upstream 401: %v", st)
			}
			hw.waitEvents(t, "integrated_account:authentication_error", id, 1)

			again := hw.connected(t, map[string]any{"integrated_account_id": id}, c.fields, user)
			if again != id {
				t.Fatalf("reconnect made account %s, want %s", again, id)
			}
			quirkProxied(t, hw, c, id, user)
			if st := hw.account(t, id)["status"]; st != "active" {
				t.Fatalf("status after reconnect: %v", st)
			}
			if n := len(hw.events(t, "integrated_account:authentication_error", id)); n != 1 {
				t.Fatalf("%d authentication_error events, want exactly 1", n)
			}

			if c.name == "zoho" {
				// A callback that names another accounts server gets no
				// code sent there, and nothing is stored.
				c.as.SetCallbackParams(map[string]string{"location": "us", "accounts-server": "https://accounts.evil.example"})
				c.as.ResetCounts()
				p := hw.connect(t, map[string]any{"tenant_id": "t-zoho-evil", "integration": c.name}, nil, "evil")
				if msg := posted(t, p); p.status == http.StatusOK || msg["result"] == "success" {
					t.Fatalf("a callback naming another accounts server connected: %d %v", p.status, msg)
				}
				if n := c.as.TokenCalls("authorization_code"); n != 0 {
					t.Fatalf("%d code exchanges after a callback naming another accounts server", n)
				}
				if got := hw.accountsOf(t, "t-zoho-evil"); len(got) != 0 {
					t.Fatalf("an account was stored: %v", got)
				}
			}
		})
	}
}

// quirkProxied makes a proxied call for id and checks that the class's API
// got user's valid access token where it takes it, and none of the
// caller's credentials; it returns the token.
func quirkProxied(t *testing.T, hw *hostsWorld, c *quirkEnv, id, user string) string {
	t.Helper()
	before := c.up.Count()
	status, body := hw.proxyAs(t, id, "/me")
	if status != http.StatusOK {
		t.Fatalf("proxied call: %d %s", status, body)
	}
	// A refresh ahead of expiry runs beside the calls, and the provider
	// kills the old access token as it rotates: a call of the expiry
	// class may meet a 401 once and be retried with the new token.
	racing := c.refresh == "expiry"
	if n := c.up.Count() - before; n != 1 && !(racing && n == 2) {
		t.Fatalf("the API got %d requests for one call, want 1 (a refused token retried?)", n)
	}
	r, _ := c.up.Last()
	tok := c.tokenOf(r)
	if sub, ok := c.as.ValidAccessToken(tok); !ok || sub != user {
		// The API answered /me for the token's user, so it was valid when
		// it arrived; a later rotation may have killed it since.
		if !racing || tok == "" || !strings.Contains(string(body), `"sub":"`+user+`"`) {
			t.Fatalf("the API got no valid token of %s where it takes one: %v", user, r.Header)
		}
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			if strings.Contains(v, apiToken) {
				t.Fatalf("the caller's API token reached the API in %s", k)
			}
		}
	}
	return tok
}

// rewriteHost sends requests for one host to another, as a browser is
// sent on from a provider's login host.
type rewriteHost struct{ from, to string }

func (h rewriteHost) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host == h.from {
		r = r.Clone(r.Context())
		r.URL.Scheme, r.URL.Host, r.Host = "http", h.to, h.to
		if r.URL.Path == "/oauth/v2/auth" {
			r.URL.Path = "/authorize"
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}
