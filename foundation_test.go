package linkgate_test

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/goleak"

	"github.com/linkgate/linkgate/internal/testenv"
)

// world is a gateway with one upstream per way of authenticating.
type world struct {
	*gateway
	as                           *testenv.AuthServer
	keyed, queried, basic, oauth *testenv.Upstream
	secure                       *testenv.Upstream
	hooks                        *testenv.WebhookReceiver
	// appListener and appOrigin are where a test may serve an application
	// page that uses the Link SDK; the origin is allowed in the config.
	appListener                  net.Listener
	appOrigin                    string
	caddyfile                    string
	accountKeyed, accountOAuth   string
	accessToken, refreshToken    string
	accountBasic, accountQueried string
	accountSecure                string
	secretsStored                []string
}

const (
	upstreamKey  = "sk_test_keyed_5f1d8c2a"
	queryKey     = "qk_test_queried_77aa01"
	basicUser    = "basic-user"
	basicPass    = "basic-pass-93c1e7"
	oauthClient  = "linkgate"
	oauthSecret  = "client-secret-for-tests-0123456789"
	callbackPath = "/connect-account/callback"
)

// worldCaddyfile is the gateway of most tests; UPSTREAM_* and AS are filled in.
const worldCaddyfile = `{
	admin off
	integrated_accounts {
		storage sqlite {{DATA}}/linkgate.db
		api_token test-api-token-0123456789
		public_url http://{{GATEWAY}}
		allowed_origins http://{{GATEWAY}} {{APP}}
		webhook {{HOOK}} {
			secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
		}
		integration keyed {
			auth api_key
			base_url {{UPSTREAM_KEYED}}/v1
			api_key_header X-Api-Key
		}
		integration queried {
			auth api_key
			base_url {{UPSTREAM_QUERIED}}
			api_key_query api_key
		}
		integration basicauth {
			auth basic
			base_url {{UPSTREAM_BASIC}}
		}
		integration oauth {
			auth oauth2
			authorize_url {{AS}}/authorize
			token_url {{AS}}/token
			client_id linkgate
			client_secret client-secret-for-tests-0123456789
			base_url {{UPSTREAM_OAUTH}}
		}
		integration secure {
			auth api_key
			base_url {{UPSTREAM_SECURE}}
			api_key_header X-Api-Key
		}
	}
}

http://{{GATEWAY}} {
	handle /proxy/* {
		uri strip_prefix /proxy
		inject_credentials
		reverse_proxy {integrated_account.upstream} {
			flush_interval -1
			transport linkgate {
				# The upstreams are on this machine, where a dial fails at
				# once or succeeds; only a starved test process (a busy
				# machine, the race detector, a thousand calls at once)
				# misses Caddy's default of 3s, and answers 502.
				dial_timeout 1m
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

func newWorld(t *testing.T) *world {
	t.Helper()
	return newWorldWith(t, nil)
}

// newWorldWith is newWorld with its Caddyfile edited first (its {{…}}
// markers still in place), for tests that need another route or option.
func newWorldWith(t *testing.T, edit func(caddyfile string) string) *world {
	t.Helper()
	g := newGateway(t)
	w := &world{gateway: g}
	w.as = testenv.NewAuthServer(t, testenv.AuthServerOptions{Clients: []testenv.Client{{
		ID: oauthClient, Secret: oauthSecret, RedirectURIs: []string{g.base + callbackPath},
	}}})
	w.keyed = testenv.NewUpstream(t, testenv.UpstreamOptions{APIKey: upstreamKey, APIKeyHeader: "X-Api-Key"})
	w.queried = testenv.NewUpstream(t, testenv.UpstreamOptions{APIKey: queryKey, APIKeyQuery: "api_key"})
	w.basic = testenv.NewUpstream(t, testenv.UpstreamOptions{Username: basicUser, Password: basicPass})
	w.oauth = testenv.NewUpstream(t, testenv.UpstreamOptions{Auth: w.as})
	w.secure = testenv.NewTLSUpstream(t, testenv.UpstreamOptions{APIKey: upstreamKey, APIKeyHeader: "X-Api-Key"})
	w.hooks = testenv.NewWebhookReceiver(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	w.appListener = ln
	w.appOrigin = fmt.Sprintf("http://localhost:%d", ln.Addr().(*net.TCPAddr).Port)
	cfg := worldCaddyfile
	if edit != nil {
		cfg = edit(cfg)
	}
	w.caddyfile = g.expand(cfg,
		"{{UPSTREAM_KEYED}}", w.keyed.URL(),
		"{{UPSTREAM_QUERIED}}", w.queried.URL(),
		"{{UPSTREAM_BASIC}}", w.basic.URL(),
		"{{UPSTREAM_OAUTH}}", w.oauth.URL(),
		"{{UPSTREAM_SECURE}}", w.secure.URL(),
		"{{TRUST}}", base64.StdEncoding.EncodeToString(w.secure.Certificate().Raw),
		"{{AS}}", w.as.URL(),
		"{{HOOK}}", w.hooks.URL(),
		"{{APP}}", w.appOrigin,
	)
	if err := loadCaddyfile(t, w.caddyfile); err != nil {
		t.Fatalf("loading Caddy: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	return w
}

// importAll imports one account of each kind.
func (w *world) importAll(t *testing.T) {
	t.Helper()
	tok := w.as.Authorize(t, oauthClient, w.base+callbackPath, "alice", nil)
	w.accessToken, w.refreshToken = tok.AccessToken, tok.RefreshToken
	w.accountKeyed = w.importAccount(map[string]any{"tenant_id": "acme", "integration": "keyed",
		"context": map[string]any{"api_key": upstreamKey, "region": "eu"}})
	w.accountQueried = w.importAccount(map[string]any{"tenant_id": "acme", "integration": "queried",
		"context": map[string]any{"api_key": queryKey}})
	w.accountBasic = w.importAccount(map[string]any{"tenant_id": "globex", "integration": "basicauth",
		"context": map[string]any{"username": basicUser, "password": basicPass}})
	w.accountOAuth = w.importAccount(map[string]any{"tenant_id": "globex", "integration": "oauth",
		"context": map[string]any{"oauth": map[string]any{"token": map[string]any{
			"access_token": tok.AccessToken, "refresh_token": tok.RefreshToken, "expires_in": 3600}}}})
	w.accountSecure = w.importAccount(map[string]any{"tenant_id": "initech", "integration": "secure",
		"context": map[string]any{"api_key": upstreamKey}})
	w.secretsStored = []string{upstreamKey, queryKey, basicPass, tok.AccessToken, tok.RefreshToken}
}

func TestProxyInjectsEachKindOfCredential(t *testing.T) {
	w := newWorld(t)
	w.importAll(t)

	cases := []struct {
		name    string
		account string
		up      *testenv.Upstream
		path    string
		check   func(t *testing.T, r testenv.RecordedRequest)
	}{
		{"api key in a header, base path kept", w.accountKeyed, w.keyed, "/v1/contacts", func(t *testing.T, r testenv.RecordedRequest) {
			if r.Header.Get("X-Api-Key") != upstreamKey {
				t.Errorf("X-Api-Key = %q", r.Header.Get("X-Api-Key"))
			}
		}},
		{"api key in the query", w.accountQueried, w.queried, "/contacts", func(t *testing.T, r testenv.RecordedRequest) {
			if r.RawQuery != "limit=2&api_key="+queryKey {
				t.Errorf("query = %q, want the caller's parameters in order, then the key", r.RawQuery)
			}
		}},
		{"basic", w.accountBasic, w.basic, "/contacts", func(t *testing.T, r testenv.RecordedRequest) {
			u, p, ok := (&http.Request{Header: r.Header}).BasicAuth()
			if !ok || u != basicUser || p != basicPass {
				t.Errorf("basic auth = %q %q %v", u, p, ok)
			}
		}},
		{"oauth2 bearer", w.accountOAuth, w.oauth, "/contacts", func(t *testing.T, r testenv.RecordedRequest) {
			if r.Header.Get("Authorization") != "Bearer "+w.accessToken {
				t.Errorf("Authorization is not the account's access token")
			}
		}},
		{"https upstream", w.accountSecure, w.secure, "/contacts", func(t *testing.T, r testenv.RecordedRequest) {
			if r.Header.Get("X-Api-Key") != upstreamKey {
				t.Errorf("X-Api-Key = %q", r.Header.Get("X-Api-Key"))
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.up.Reset()
			status, body := w.do("GET", "/proxy/contacts?limit=2&integrated_account_id="+c.account, nil)
			if status != http.StatusOK {
				t.Fatalf("status %d: %s", status, body)
			}
			r, ok := c.up.Last()
			if !ok {
				t.Fatal("the upstream got no request")
			}
			if r.Path != c.path {
				t.Errorf("path = %q, want %q", r.Path, c.path)
			}
			if strings.Contains(r.RawQuery, "integrated_account_id") || !strings.Contains(r.RawQuery, "limit=2") {
				t.Errorf("query = %q: want limit kept and integrated_account_id removed", r.RawQuery)
			}
			if strings.Contains(r.Header.Get("Authorization"), apiToken) {
				t.Error("the caller's API token reached the upstream")
			}
			c.check(t, r)
		})
	}

	t.Run("account named by header", func(t *testing.T) {
		w.keyed.Reset()
		status, body := w.do("GET", "/proxy/deals", nil, "X-Integrated-Account-Id", w.accountKeyed)
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, body)
		}
		r, _ := w.keyed.Last()
		if r.Header.Get("X-Integrated-Account-Id") != "" || r.Header.Get("Authorization") != "" {
			t.Errorf("the upstream saw the caller's headers: %v", r.Header)
		}
	})

	t.Run("request body and method pass through", func(t *testing.T) {
		w.keyed.Reset()
		status, body := w.do("POST", "/proxy/echo/x?integrated_account_id="+w.accountKeyed, `{"name":"Ada"}`)
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, body)
		}
		r, _ := w.keyed.Last()
		if r.Method != "POST" || string(r.Body) != `{"name":"Ada"}` {
			t.Errorf("upstream got %s %q", r.Method, r.Body)
		}
	})

	t.Run("upstream status passes through", func(t *testing.T) {
		status, _ := w.do("GET", "/proxy/status/418?integrated_account_id="+w.accountQueried, nil)
		if status != 418 {
			t.Errorf("status %d, want 418", status)
		}
	})
}

func TestProxyStreamsWithoutBuffering(t *testing.T) {
	w := newWorld(t)
	w.importAll(t)
	for _, path := range []string{"/proxy/stream/sse?n=3&interval=400ms", "/proxy/stream/chunked?n=3&interval=400ms"} {
		t.Run(path, func(t *testing.T) {
			req, _ := http.NewRequest("GET", w.base+path+"&integrated_account_id="+w.accountQueried, nil)
			req.Header.Set("Authorization", "Bearer "+apiToken)
			start := time.Now()
			resp, err := w.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			// The first part must arrive while the upstream is still
			// sending the rest: read one line, then check the stream has
			// more to come.
			br := bufio.NewReader(resp.Body)
			first, err := br.ReadString('\n')
			if err != nil || strings.TrimSpace(first) == "" {
				t.Fatalf("first part: %q %v", first, err)
			}
			firstAt := time.Since(start)
			rest, err := io.ReadAll(br)
			if err != nil {
				t.Fatal(err)
			}
			total := time.Since(start)
			// Parts are 400ms apart: a buffered response would deliver the
			// first part only at the end.
			if total-firstAt < 600*time.Millisecond {
				t.Errorf("first part came %v into a %v response: the stream was buffered", firstAt, total)
			}
			if len(rest) == 0 {
				t.Error("nothing after the first part")
			}
		})
	}
}

func TestAccountsAPI(t *testing.T) {
	w := newWorld(t)
	w.importAll(t)

	t.Run("get redacts credentials", func(t *testing.T) {
		status, body := w.do("GET", "/integrated-account/"+w.accountOAuth, nil)
		if status != 200 {
			t.Fatalf("%d %s", status, body)
		}
		for _, s := range w.secretsStored {
			if strings.Contains(string(body), s) {
				t.Fatalf("GET shows a secret: %s", body)
			}
		}
		m := mustJSON(t, body)
		if m["status"] != "active" || m["authentication_method"] != "oauth2" || m["integration"].(map[string]any)["name"] != "oauth" {
			t.Errorf("account = %s", body)
		}
	})

	t.Run("list with filters and cursor", func(t *testing.T) {
		for i := range 5 {
			w.importAccount(map[string]any{"tenant_id": fmt.Sprintf("page-%d", i), "integration": "keyed",
				"context": map[string]any{"api_key": upstreamKey}})
		}
		seen := map[string]bool{}
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 10 {
				t.Fatal("pagination does not end")
			}
			path := "/integrated-account?integration=keyed&limit=2"
			if cursor != "" {
				path += "&next_cursor=" + cursor
			}
			status, body := w.do("GET", path, nil)
			if status != 200 {
				t.Fatalf("%d %s", status, body)
			}
			m := mustJSON(t, body)
			for _, a := range m["result"].([]any) {
				am := a.(map[string]any)
				if am["integration"].(map[string]any)["name"] != "keyed" {
					t.Errorf("filter let through %v", am)
				}
				if seen[am["id"].(string)] {
					t.Errorf("account %s listed twice", am["id"])
				}
				seen[am["id"].(string)] = true
			}
			if m["next_cursor"] == nil {
				break
			}
			cursor = m["next_cursor"].(string)
		}
		if len(seen) != 6 {
			t.Errorf("listed %d keyed accounts, want 6", len(seen))
		}
		status, body := w.do("GET", "/integrated-account?tenant_id=globex", nil)
		if status != 200 || len(mustJSON(t, body)["result"].([]any)) != 2 {
			t.Errorf("tenant filter: %d %s", status, body)
		}
		status, body = w.do("GET", "/integrated-account?status=needs_reauth", nil)
		if status != 200 || len(mustJSON(t, body)["result"].([]any)) != 0 {
			t.Errorf("status filter: %d %s", status, body)
		}
	})

	t.Run("patch merges context", func(t *testing.T) {
		status, body := w.do("PATCH", "/integrated-account/"+w.accountKeyed, map[string]any{"context": map[string]any{"plan": "pro"}})
		if status != 200 {
			t.Fatalf("%d %s", status, body)
		}
		ctx := mustJSON(t, body)["context"].(map[string]any)
		if ctx["plan"] != "pro" || ctx["region"] != "eu" {
			t.Errorf("context = %v", ctx)
		}
	})

	t.Run("patch credentials", func(t *testing.T) {
		status, body := w.do("PATCH", "/integrated-account/"+w.accountKeyed+"/credentials", map[string]any{"api_key": "wrong-key"})
		if status != 200 {
			t.Fatalf("%d %s", status, body)
		}
		status, _ = w.do("GET", "/proxy/x?integrated_account_id="+w.accountKeyed, nil)
		if status != 401 {
			t.Errorf("proxy with the replaced key: %d, want the upstream's 401", status)
		}
		status, body = w.do("PATCH", "/integrated-account/"+w.accountKeyed+"/credentials", map[string]any{"api_key": upstreamKey})
		if status != 200 {
			t.Fatalf("%d %s", status, body)
		}
		status, _ = w.do("GET", "/proxy/x?integrated_account_id="+w.accountKeyed, nil)
		if status != 200 {
			t.Errorf("proxy with the restored key: %d", status)
		}
	})

	t.Run("delete", func(t *testing.T) {
		status, body := w.do("DELETE", "/integrated-account/"+w.accountQueried, nil)
		if status != 200 {
			t.Fatalf("%d %s", status, body)
		}
		status, _ = w.do("GET", "/integrated-account/"+w.accountQueried, nil)
		if status != 404 {
			t.Errorf("deleted account: %d", status)
		}
		status, _ = w.do("GET", "/proxy/x?integrated_account_id="+w.accountQueried, nil)
		if status != 404 {
			t.Errorf("proxy to a deleted account: %d", status)
		}
	})
}

func TestBadInputChangesNothing(t *testing.T) {
	w := newWorld(t)
	w.importAll(t)
	count := func() int {
		_, body := w.do("GET", "/integrated-account?limit=1000", nil)
		return len(mustJSON(t, body)["result"].([]any))
	}
	before := count()
	upBefore := w.keyed.Count()

	cases := []struct {
		name, method, path, auth string
		body                     any
		want                     int
		wantMsg                  string
	}{
		{"no token", "GET", "/integrated-account", "-", nil, 401, "API token"},
		{"wrong token", "GET", "/integrated-account", "Bearer nope", nil, 401, "API token"},
		{"wrong token on proxy", "GET", "/proxy/x?integrated_account_id=" + w.accountKeyed, "Bearer nope", nil, 401, "API token"},
		{"proxy without account", "GET", "/proxy/x", "", nil, 400, "integrated_account_id"},
		{"proxy unknown account", "GET", "/proxy/x?integrated_account_id=nope", "", nil, 404, "not found"},
		{"unknown account", "GET", "/integrated-account/nope", "", nil, 404, "not found"},
		{"delete unknown account", "DELETE", "/integrated-account/nope", "", nil, 404, "not found"},
		{"malformed JSON", "POST", "/integrated-account", "", `{"tenant_id":`, 400, "malformed"},
		{"unknown field", "POST", "/integrated-account", "", `{"tenant_id":"t","integration":"keyed","colour":"red","context":{"api_key":"k"}}`, 400, "colour"},
		{"unknown integration", "POST", "/integrated-account", "", map[string]any{"tenant_id": "t", "integration": "nope", "context": map[string]any{"api_key": "k"}}, 400, "nope"},
		{"bad tenant", "POST", "/integrated-account", "", map[string]any{"tenant_id": "a b", "integration": "keyed", "context": map[string]any{"api_key": "k"}}, 400, "tenant_id"},
		{"missing credentials", "POST", "/integrated-account", "", map[string]any{"tenant_id": "t", "integration": "keyed"}, 400, "api_key"},
		{"wrong method for integration", "POST", "/integrated-account", "", map[string]any{"tenant_id": "t", "integration": "keyed", "authentication_method": "basic", "context": map[string]any{"api_key": "k"}}, 400, "authentication_method"},
		{"body over 1 MiB", "POST", "/integrated-account", "", `{"tenant_id":"` + strings.Repeat("a", 1<<20+10) + `"}`, 413, "larger"},
		{"bad status filter", "GET", "/integrated-account?status=sleeping", "", nil, 400, "status"},
		{"bad cursor", "GET", "/integrated-account?next_cursor=garbage", "", nil, 400, "cursor"},
		{"patch credential through context", "PATCH", "/integrated-account/" + w.accountKeyed, "", map[string]any{"context": map[string]any{"api_key": "x"}}, 400, "credentials"},
		{"unknown route", "GET", "/nowhere", "", nil, 404, "no route"},
		{"wrong method", "GET", "/link-token", "", nil, 404, "no route GET /link-token"},
		{"refresh an api key account", "POST", "/integrated-account/refresh-credentials", "", map[string]any{"id": w.accountKeyed}, 400, "api_key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			auth := c.auth
			switch auth {
			case "":
				auth = "Bearer " + apiToken
			case "-":
				auth = ""
			}
			status, body := w.doAuth(c.method, c.path, auth, c.body)
			if status != c.want {
				t.Fatalf("status %d, want %d: %s", status, c.want, body)
			}
			m := mustJSON(t, body)
			if int(m["statusCode"].(float64)) != c.want || !strings.Contains(strings.ToLower(m["message"].(string)), strings.ToLower(c.wantMsg)) {
				t.Errorf("body %s: want a message about %q", body, c.wantMsg)
			}
			if strings.Contains(string(body), "nope-secret") {
				t.Error("echoed input")
			}
		})
	}
	if after := count(); after != before {
		t.Errorf("bad requests changed the accounts: %d → %d", before, after)
	}
	if w.keyed.Count() != upBefore {
		t.Errorf("bad requests reached the upstream")
	}
}

func TestDatabaseHoldsNoSecret(t *testing.T) {
	w := newWorld(t)
	w.importAll(t)
	// Stop Caddy so SQLite checkpoints and closes the files.
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	keyFile, err := os.ReadFile(filepath.Join(w.dir, "xdg", "caddy", "linkgate", "encryption.key"))
	if err != nil {
		t.Fatalf("the generated key file: %v", err)
	}
	secrets := append(append([]string{}, w.secretsStored...), strings.TrimSpace(string(keyFile)))
	files, _ := filepath.Glob(filepath.Join(w.dir, "linkgate.db*"))
	if len(files) == 0 {
		t.Fatal("no database file")
	}
	var total int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		total += len(b)
		for _, s := range secrets {
			if strings.Contains(string(b), s) {
				t.Errorf("%s holds a secret in the clear (%d bytes of it)", filepath.Base(f), len(s))
			}
		}
	}
	if total == 0 {
		t.Fatal("database files are empty")
	}
	// The tenant, which is no secret, is there: the check reads real data.
	b, _ := os.ReadFile(files[0])
	if !strings.Contains(string(b), "globex") {
		t.Error("the database does not hold the tenant id: is this the right file?")
	}
}

func TestConfigErrorsRefuseToStart(t *testing.T) {
	g := newGateway(t)
	base := `{
	admin off
	integrated_accounts {
		storage sqlite {{DATA}}/linkgate.db
		api_token x
		public_url http://{{GATEWAY}}
		%s
	}
}
http://{{GATEWAY}} {
	accounts_api
}`
	cases := []struct{ name, opts, want string }{
		{"short key", "encryption_key c2hvcnQ=", "encryption_key"},
		{"malformed key", "encryption_key not-base64-!!", "encryption_key"},
		{"unknown auth", "integration x {\n auth magic\n base_url http://127.0.0.1:1\n }", "auth"},
		{"integration without base_url", "integration x {\n auth api_key\n }", "base_url"},
		{"oauth without token_url", "integration x {\n auth oauth2\n base_url http://127.0.0.1:1\n authorize_url http://127.0.0.1:1/a\n client_id c\n }", "token_url"},
		{"bad webhook secret", "webhook http://127.0.0.1:1/h {\n secret plain\n }", "webhook"},
		{"lease shorter than timeout", "webhook_timeout 30s\n webhook_lease 10s", "webhook_lease"},
		{"bad allowed origin", "allowed_origins https://app.example.com/path", "allowed_origins"},
		{"key in a hop-by-hop header", "integration x {\n auth api_key\n base_url http://127.0.0.1:1\n api_key_header Connection\n }", "api_key_header"},
		{"base_url with a query", "integration x {\n auth api_key\n base_url http://127.0.0.1:1/?v=1\n }", "base_url"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := loadCaddyfile(t, g.expand(fmt.Sprintf(base, c.opts)))
			_ = caddy.Stop()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one naming %q", err, c.want)
			}
		})
	}
	t.Run("unwritable database path", func(t *testing.T) {
		ro := filepath.Join(g.dir, "ro")
		if err := os.MkdirAll(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		// root ignores permissions: make the "directory" a file instead.
		blocker := filepath.Join(g.dir, "blocker")
		if err := os.WriteFile(blocker, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := strings.Replace(fmt.Sprintf(base, ""), "{{DATA}}/linkgate.db", blocker+"/sub/linkgate.db", 1)
		err := loadCaddyfile(t, g.expand(cfg))
		_ = caddy.Stop()
		if err == nil || !strings.Contains(err.Error(), "sqlite") || !strings.Contains(err.Error(), "blocker") {
			t.Fatalf("err = %v, want one naming the storage path", err)
		}
	})
}

func TestReloadUnderTrafficLeaksNothing(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	// Registered first, so it runs last: after Caddy and the test servers stop.
	t.Cleanup(func() {
		goleak.VerifyNone(t, ignore,
			// Caddy's own process-wide workers, started once and kept.
			goleak.IgnoreTopFunction("github.com/caddyserver/certmagic.(*Cache).maintainAssets"),
			goleak.IgnoreAnyFunction("github.com/caddyserver/caddy/v2.trapSignalsPosix"),
			// Caddy's storage-cleaning lock, refreshed until its next tick.
			goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
		)
	})
	w := newWorld(t)
	w.importAll(t)

	var failed, ok, retried atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				get := func() (*http.Response, error) {
					req, _ := http.NewRequest("GET", w.base+"/proxy/x?integrated_account_id="+w.accountKeyed, nil)
					req.Header.Set("Authorization", "Bearer "+apiToken)
					return w.client.Do(req)
				}
				resp, err := get()
				if err != nil {
					// A kept-alive connection the old server closed as idle
					// just as a request went out on it: the request never
					// reached a handler, and a client sends it again, as Go's
					// transport itself does when it can tell. Any answer the
					// gateway does give must be a success.
					retried.Add(1)
					resp, err = get()
				}
				if err != nil {
					failed.Add(1)
					t.Logf("request during reload: %v", err)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					ok.Add(1)
				} else {
					failed.Add(1)
					t.Logf("request during reload: %d %s", resp.StatusCode, body)
				}
			}
		}()
	}
	// Calls before, between and after the reloads: wait for answers, not
	// for a time, so that each config has served some.
	served := func(what string) {
		t.Helper()
		want := ok.Load() + 8
		deadline := time.Now().Add(time.Minute)
		for ok.Load()+failed.Load() < want {
			if time.Now().After(deadline) {
				close(stop)
				wg.Wait()
				t.Fatalf("no answers %s within a minute", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for i := range 3 {
		served(fmt.Sprintf("before reload %d", i))
		// A changed config (a new API token beside the old) forces a real reload.
		cfg := strings.Replace(w.caddyfile, "api_token test-api-token-0123456789",
			fmt.Sprintf("api_token test-api-token-0123456789\n\t\tapi_token reload-%d", i), 1)
		if err := loadCaddyfile(t, cfg); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
	}
	served("after the reloads")
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Errorf("during reloads: %d requests failed, %d succeeded", failed.Load(), ok.Load())
	}
	t.Logf("%d requests during 3 reloads; %d sent again after the old server closed their idle connection", ok.Load(), retried.Load())
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	w.client.CloseIdleConnections()
}
