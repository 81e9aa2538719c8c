package linkgate_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/linkgate/linkgate/internal/testenv"
)

// loadExample loads an example config as a newcomer runs it, with its ports
// moved to free ones, its data directory to a temporary one and the admin
// endpoint off.
func loadExample(t *testing.T, file string, replace ...string) *gateway {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	g := newGateway(t)
	upstream := testenv.FreePort(t)
	gw := strings.TrimPrefix(g.base, "http://localhost")
	cfg := strings.NewReplacer(append(replace,
		"localhost:8080", "localhost"+gw,
		`"127.0.0.1:8080"`, `"127.0.0.1`+gw+`"`,
		"localhost:9090", fmt.Sprintf("localhost:%d", upstream),
		`"127.0.0.1:9090"`, fmt.Sprintf(`"127.0.0.1:%d"`, upstream),
		"./data/linkgate.db", filepath.Join(g.dir, "data", "linkgate.db"),
		"admin localhost:2019", "admin off",
		`"listen": "localhost:2019"`, `"disabled": true`,
	)...).Replace(string(raw))
	if strings.HasSuffix(file, ".json.example") {
		err = caddy.Load([]byte(cfg), true)
	} else {
		err = loadCaddyfile(t, cfg)
	}
	if err != nil {
		t.Fatalf("loading %s: %v", file, err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	return g
}

// TestExampleTour runs the README's tour against each example config.
func TestExampleTour(t *testing.T) {
	for _, file := range []string{"Caddyfile.example", "caddy.json.example"} {
		t.Run(file, func(t *testing.T) {
			g := loadExample(t, file)
			status, body := g.doAuth("POST", "/integrated-account", "Bearer dev-api-token",
				`{"tenant_id":"acme","integration":"demo","context":{"api_key":"sk_live_demo_123","region":"eu"}}`)
			if status != http.StatusCreated {
				t.Fatalf("import: %d %s", status, body)
			}
			id := mustJSON(t, body)["id"].(string)
			// The README's tour takes the id out of this answer with sed.
			if got := readmeSedID(t, body); got != id {
				t.Errorf("the README's sed takes %q out of the import answer, not the id %s", got, id)
			}

			status, body = g.doAuth("GET", "/proxy/contacts?limit=2&integrated_account_id="+id, "Bearer dev-api-token", nil)
			if status != http.StatusOK {
				t.Fatalf("proxy: %d %s", status, body)
			}
			echo := mustJSON(t, body)
			if echo["x_api_key"] != "sk_live_demo_123" || echo["path"] != "/v1/contacts" || echo["query"] != "limit=2" || echo["authorization"] != "" {
				t.Errorf("the stand-in upstream saw %s", body)
			}

			status, body = g.doAuth("GET", "/integrated-account", "Bearer dev-api-token", nil)
			if status != http.StatusOK || !strings.Contains(string(body), id) || strings.Contains(string(body), "sk_live_demo_123") {
				t.Errorf("list: %d %s", status, body)
			}

			// The created and active events reach the example's webhook sink.
			deadline := time.Now().Add(10 * time.Second)
			for {
				_, body = g.doAuth("GET", "/webhook-delivery?status=delivered", "Bearer dev-api-token", nil)
				if strings.Count(string(body), `"status":"delivered"`) >= 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("deliveries: %s", body)
				}
				time.Sleep(50 * time.Millisecond)
			}

			// No key configured: one was generated, private to its owner.
			fi, err := os.Stat(filepath.Join(g.dir, "xdg", "caddy", "linkgate", "encryption.key"))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("generated key: %v %v", fi, err)
			}
		})
	}
}

// readmeSedID runs the README's `ID=$(sed … account.json)` line on body.
func readmeSedID(t *testing.T, body []byte) string {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`ID=\$\(sed '([^']+)' account.json\)`).FindSubmatch(readme)
	if m == nil {
		t.Fatal("the README's tour has no ID=$(sed '…' account.json) line")
	}
	sed, err := exec.LookPath("sed")
	if err != nil {
		t.Skip("no sed on this machine")
	}
	cmd := exec.Command(sed, string(m[1]))
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sed: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestExamplesListenOnLoopbackOnly: the README's first command opens
// nothing to the network. A site address's host name only matches
// requests; without bind Caddy listens on every interface.
func TestExamplesListenOnLoopbackOnly(t *testing.T) {
	raw, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := adapt(t, string(raw))
	if err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		Admin struct {
			Listen string `json:"listen"`
		} `json:"admin"`
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Listen []string `json:"listen"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfg, &parsed); err != nil {
		t.Fatal(err)
	}
	addrs := []string{parsed.Admin.Listen}
	for _, s := range parsed.Apps.HTTP.Servers {
		addrs = append(addrs, s.Listen...)
	}
	if len(addrs) < 3 {
		t.Fatalf("listen addresses %v: expected the admin endpoint and two servers", addrs)
	}
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(strings.TrimPrefix(a, "tcp/"))
		if err != nil {
			t.Fatalf("listen address %q: %v", a, err)
		}
		ip, err := netip.ParseAddr(host)
		if host != "localhost" && (err != nil || !ip.IsLoopback()) {
			t.Errorf("the example listens on %s: not loopback", a)
		}
	}

	// And for real: through an address of this machine that is not
	// loopback, the running example cannot be reached.
	g := loadExample(t, "Caddyfile.example")
	_, port, _ := strings.Cut(strings.TrimPrefix(g.base, "http://localhost"), ":")
	external := nonLoopbackAddrs(t)
	for _, ip := range external {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(ip.String(), port), 2*time.Second)
		if err == nil {
			conn.Close()
			t.Errorf("the example answers on %s", ip)
		}
	}
	t.Logf("checked %d non-loopback addresses of this machine: %v", len(external), external)
	if status, _ := g.doAuth("GET", "/integrated-account", "Bearer dev-api-token", nil); status != http.StatusOK {
		t.Errorf("the example does not answer on loopback: %d", status)
	}
}

// nonLoopbackAddrs lists this machine's addresses that are not loopback.
func nonLoopbackAddrs(t *testing.T) []netip.Addr {
	t.Helper()
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, a := range ifAddrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil || p.Addr().IsLoopback() || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		out = append(out, p.Addr())
	}
	return out
}

// TestExampleAccessLogHidesConnectSecrets runs the example with its access
// log in a file and opens connect URLs: no link token, OAuth code or state
// is written, in the URI or in a Referer.
func TestExampleAccessLogHidesConnectSecrets(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "access.log")
	g := loadExample(t, "Caddyfile.example", "\tlog {\n\t\tformat filter {", "\tlog {\n\t\toutput file "+logFile+"\n\t\tformat filter {")
	status, body := g.doAuth("POST", "/integrated-account", "Bearer dev-api-token",
		`{"tenant_id":"acme","integration":"demo","context":{"api_key":"sk_live_demo_123"}}`)
	if status != http.StatusCreated {
		t.Fatalf("import: %d %s", status, body)
	}
	id := mustJSON(t, body)["id"].(string)
	status, body = g.doAuth("POST", "/link-token", "Bearer dev-api-token", `{"integrated_account_id":"`+id+`"}`)
	if status != http.StatusCreated {
		t.Fatalf("link token: %d %s", status, body)
	}
	link := mustJSON(t, body)["link_token"].(string)

	secrets := []string{link, "lt-guess-6b1d9e", "code-8f2a77", "state-41c0d2", "lt-encoded-0a9f3c", "lt-referer-77d1e0", "code-ref-1b2c3d"}
	requests := []struct{ path, referer string }{
		{"/connect-account?link_token=" + link, ""},
		{"/connect-account?link_token=" + link + "&iframe=true", ""},
		{"/connect-account?link_token=lt-guess-6b1d9e", ""},
		{"/connect-account?link%5Ftoken=lt-encoded-0a9f3c", ""},
		{"/connect-account/callback?code=code-8f2a77&state=state-41c0d2", ""},
		{"/connect-account/sdk.js", g.base + "/connect-account?link_token=lt-referer-77d1e0&code=code-ref-1b2c3d"},
	}
	for _, r := range requests {
		req, _ := http.NewRequest("GET", g.base+r.path, nil)
		if r.referer != "" {
			req.Header.Set("Referer", r.referer)
		}
		resp, err := g.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	// Caddy writes an access log line once the answer has gone out.
	var logged string
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(logFile)
		logged = string(b)
		if strings.Count(logged, "/connect-account") >= len(requests) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d access log lines for %d connect requests:\n%s", strings.Count(logged, "\n"), len(requests), logged)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, s := range secrets {
		if strings.Contains(logged, s) {
			t.Errorf("the access log holds %q", s)
		}
	}
	if !strings.Contains(logged, "link_token=REDACTED") || !strings.Contains(logged, "state=REDACTED") {
		t.Errorf("the access log shows no redaction:\n%s", logged)
	}
}

// TestExampleKeepsSecretsOutOfAdaptedConfig: the secrets the example reads
// from the environment are resolved when the config loads, so the adapted
// JSON (which the admin API serves and autosave.json keeps) never holds
// them.
func TestExampleKeepsSecretsOutOfAdaptedConfig(t *testing.T) {
	secrets := map[string]string{
		"LINKGATE_API_TOKEN":    "api-token-from-env-9f8e7d",
		"HUBSPOT_CLIENT_SECRET": "hubspot-secret-from-env-1a2b3c",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	raw, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := adapt(t, string(raw))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range secrets {
		if strings.Contains(string(cfg), v) {
			t.Errorf("the adapted config holds %s", k)
		}
	}
	if !strings.Contains(string(cfg), "{env.LINKGATE_API_TOKEN}") {
		t.Error("the example reads no API token from the environment")
	}
	// And the token from the environment works.
	g := loadExample(t, "Caddyfile.example")
	if status, body := g.doAuth("GET", "/integrated-account", "Bearer "+secrets["LINKGATE_API_TOKEN"], nil); status != http.StatusOK {
		t.Errorf("the environment's API token: %d %s", status, body)
	}
}
