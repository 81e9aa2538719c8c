package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/linkgate/linkgate/internal/testenv"
	"github.com/linkgate/linkgate/tokenstore"
)

const (
	apiToken      = "cluster-api-token-0123456789"
	oauthClient   = "linkgate"
	oauthSecret   = "cluster-client-secret-0123456789"
	webhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	// redirectURI is only registered, never served: Authorize does not
	// follow it, and a 127.0.0.1 URI matches any port.
	redirectURI = "http://127.0.0.1/connect-account/callback"
)

var ()

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveCaddyBinary()
	os.Exit(code)
}

// caddyBinary builds ./cmd/caddy once per test run and returns its path.
func caddyBinary(t testing.TB) string { return testenv.CaddyBinary(t) }

// pgSchema returns the DSN and name of a fresh schema of t's own, or skips t
// without LINKGATE_TEST_POSTGRES.
func pgSchema(t testing.TB) (dsn, schema string) { return testenv.PostgresSchema(t) }

// cluster is several linkgate processes on one schema, with the real
// authorization server, upstream API and webhook receiver they talk to.
type cluster struct {
	t      testing.TB
	dsn    string
	schema string
	key    string
	as     *testenv.AuthServer
	api    *testenv.Upstream
	hooks  *testenv.WebhookReceiver
	nodes  []*node
	client *http.Client
	// hookURL is where the instances post webhooks: the receiver, or a
	// slow front of it.
	hookURL   string
	hookDelay time.Duration
	// sqlitePath, when set, makes every instance share this SQLite file
	// instead of the PostgreSQL schema (for benchmarks side by side).
	sqlitePath string
	// global is more integrated_accounts options for every instance.
	global string
}

// withSQLite makes the instances share one SQLite file.
func withSQLite() option {
	return func(c *cluster) { c.sqlitePath = filepath.Join(c.t.TempDir(), "linkgate.db") }
}

// withGlobal adds options to every instance's integrated_accounts block.
func withGlobal(opts string) option { return func(c *cluster) { c.global = opts } }

// option changes a cluster before its instances start.
type option func(*cluster)

// withSlowWebhooks makes every webhook delivery take d before it reaches
// the receiver, as a slow application would, so that deliveries are in
// flight for a while.
func withSlowWebhooks(d time.Duration) option { return func(c *cluster) { c.hookDelay = d } }

// node is one Caddy process.
type node struct {
	name    string
	base    string
	dir     string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
}

const nodeCaddyfile = `{
	admin off
	integrated_accounts {
		storage {{STORAGE}}
		encryption_key {{KEY}}
		api_token ` + apiToken + `
		public_url {{BASE}}
		{{GLOBAL}}
		# A short lease, so that deliveries a killed node had claimed come
		# back within seconds rather than the default minute.
		webhook_timeout 2s
		webhook_lease 5s
		webhook {{HOOK}} {
			secret ` + webhookSecret + `
			events integrated_account:*
		}
		integration oauth {
			auth oauth2
			authorize_url {{AS}}/authorize
			token_url {{AS}}/token
			client_id ` + oauthClient + `
			client_secret ` + oauthSecret + `
			base_url {{API}}
		}
	}
}

{{BASE}} {
	handle /proxy/* {
		uri strip_prefix /proxy
		inject_credentials
		reverse_proxy {integrated_account.upstream} {
			transport linkgate {
				keepalive_idle_conns_per_host 128
			}
		}
	}
	handle {
		accounts_api
	}
}
`

// newCluster starts n instances and waits until each answers.
func newCluster(t testing.TB, n int, opts ...option) *cluster {
	t.Helper()
	key, err := tokenstore.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{
		t: t, key: tokenstore.EncodeKey(key),
		client: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128}},
	}
	for _, o := range opts {
		o(c)
	}
	if c.sqlitePath == "" {
		c.dsn, c.schema = pgSchema(t)
	}
	bin := caddyBinary(t)
	c.as = testenv.NewAuthServer(t, testenv.AuthServerOptions{Clients: []testenv.Client{{
		ID: oauthClient, Secret: oauthSecret, RedirectURIs: []string{redirectURI},
	}}})
	c.api = testenv.NewUpstream(t, testenv.UpstreamOptions{Auth: c.as, Discard: true})
	c.hooks = testenv.NewWebhookReceiver(t)
	c.hookURL = c.hooks.URL()
	if c.hookDelay > 0 {
		target, err := url.Parse(c.hooks.URL())
		if err != nil {
			t.Fatal(err)
		}
		proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: target.Scheme, Host: target.Host})
		// A sender killed mid-delivery cancels its requests; that is the
		// point of the tests that use this, not an error worth a log line.
		proxy.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) { w.WriteHeader(http.StatusBadGateway) }
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(c.hookDelay):
				proxy.ServeHTTP(w, r)
			case <-r.Context().Done():
			}
		}))
		t.Cleanup(slow.Close)
		c.hookURL = slow.URL + target.Path
	}
	for i := range n {
		c.nodes = append(c.nodes, c.startNode(t, bin, i))
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			nd.stop()
		}
		if t.Failed() {
			for _, nd := range c.nodes {
				t.Logf("--- log of %s (last lines) ---\n%s", nd.name, nd.logTail(40))
			}
		}
	})
	for _, nd := range c.nodes {
		c.waitReady(nd)
	}
	return c
}

func (c *cluster) startNode(t testing.TB, bin string, i int) *node {
	t.Helper()
	dir := t.TempDir()
	nd := &node{
		name:    fmt.Sprintf("node%d", i),
		base:    fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)),
		dir:     dir,
		logPath: filepath.Join(dir, "caddy.log"),
		exited:  make(chan struct{}),
	}
	// Each instance's pool connections carry its name, so a test can see
	// in pg_locks which instance holds a refresh lock.
	storage := "sqlite " + c.sqlitePath
	if c.sqlitePath == "" {
		u, err := url.Parse(c.dsn)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("application_name", c.appName(nd.name))
		u.RawQuery = q.Encode()
		storage = "postgres " + u.String()
	}
	cfg := strings.NewReplacer(
		"{{STORAGE}}", storage, "{{KEY}}", c.key, "{{BASE}}", nd.base, "{{HOOK}}", c.hookURL,
		"{{AS}}", c.as.URL(), "{{API}}", c.api.URL(), "{{GLOBAL}}", c.global,
	).Replace(nodeCaddyfile)
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(nd.logPath)
	if err != nil {
		t.Fatal(err)
	}
	nd.cmd = exec.Command(bin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	nd.cmd.Dir = dir
	nd.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	nd.cmd.Stdout, nd.cmd.Stderr = logf, logf
	if err := nd.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting %s: %v", nd.name, err)
	}
	go func() {
		_ = nd.cmd.Wait()
		logf.Close()
		close(nd.exited)
	}()
	return nd
}

// appName is the application_name of a node's database connections.
func (c *cluster) appName(node string) string { return "lg-" + c.schema + "-" + node }

func (c *cluster) waitReady(nd *node) {
	c.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case <-nd.exited:
			c.t.Fatalf("%s exited while starting:\n%s", nd.name, nd.logTail(40))
		default:
		}
		req, _ := http.NewRequest("GET", nd.base+"/integrated-account?limit=1", nil)
		req.Header.Set("Authorization", "Bearer "+apiToken)
		resp, err := c.client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s not ready within 90s (last: %v):\n%s", nd.name, err, nd.logTail(40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill ends the process at once, as a crash would: no cleanup runs.
func (nd *node) kill() {
	_ = nd.cmd.Process.Signal(syscall.SIGKILL)
	<-nd.exited
}

// stop asks the process to shut down, killing it if it does not.
func (nd *node) stop() {
	select {
	case <-nd.exited:
		return
	default:
	}
	_ = nd.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-nd.exited:
	case <-time.After(15 * time.Second):
		nd.kill()
	}
}

func (nd *node) logTail(n int) string {
	b, _ := os.ReadFile(nd.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// do sends a request with the API token; a transport error is status 0.
func (c *cluster) do(nd *node, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, nd.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// importAccount imports an oauth account through nd with the given token
// fields and returns its id.
func (c *cluster) importAccount(nd *node, tenant string, token map[string]any) string {
	c.t.Helper()
	status, body, err := c.do(nd, "POST", "/integrated-account", map[string]any{
		"tenant_id": tenant, "integration": "oauth",
		"context": map[string]any{"oauth": map[string]any{"token": token}},
	})
	if err != nil || status != http.StatusCreated {
		c.t.Fatalf("importing an account through %s: %d %s %v", nd.name, status, body, err)
	}
	var m struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &m); err != nil || m.ID == "" {
		c.t.Fatalf("import answer %s: %v", body, err)
	}
	return m.ID
}

// expiredToken is a real grant for username whose access token linkgate
// believes expired a minute ago, so the first use must refresh.
func (c *cluster) expiredToken(username string) map[string]any {
	tok := c.as.Authorize(c.t, oauthClient, redirectURI, username, nil)
	return map[string]any{"access_token": tok.AccessToken, "refresh_token": tok.RefreshToken,
		"expiry": time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)}
}

// db connects to the cluster's schema.
func (c *cluster) db() *pgx.Conn {
	c.t.Helper()
	conn, err := testenv.ConnectPostgres(c.dsn, 30*time.Second)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// store opens the cluster's database with the cluster's key, to read what
// the instances stored.
func (c *cluster) store() *tokenstore.Postgres {
	c.t.Helper()
	key, err := tokenstore.ParseKey(c.key)
	if err != nil {
		c.t.Fatal(err)
	}
	s, err := tokenstore.NewSealer(key)
	if err != nil {
		c.t.Fatal(err)
	}
	st, err := tokenstore.OpenPostgres(context.Background(), c.dsn, s, tokenstore.PostgresOptions{MaxConns: 2})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { st.Close() })
	return st
}

// webhookEvent is what the test reads of one delivery.
type webhookEvent struct {
	WebhookID string
	Event     string
	AccountID string
}

func parseDeliveries(t testing.TB, ds []testenv.Delivery) []webhookEvent {
	t.Helper()
	out := make([]webhookEvent, 0, len(ds))
	for _, d := range ds {
		var env struct {
			ID      string         `json:"id"`
			Event   string         `json:"event"`
			Payload map[string]any `json:"payload"`
		}
		if err := json.Unmarshal(d.Body, &env); err != nil {
			t.Fatalf("a delivery is not JSON: %v: %s", err, d.Body)
		}
		id, _ := env.Payload["id"].(string)
		out = append(out, webhookEvent{WebhookID: d.Header.Get("webhook-id"), Event: env.Event, AccountID: id})
	}
	return out
}

// waitFor polls cond until it holds or within passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}
