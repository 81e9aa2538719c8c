package linkgate_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/linkgate/linkgate"
	"github.com/linkgate/linkgate/internal/testenv"
)

// apiToken is the API token every test gateway accepts.
const apiToken = "test-api-token-0123456789"

// gateway is a Caddy with linkgate loaded in this process from a Caddyfile,
// listening on a free port of localhost.
type gateway struct {
	t      testing.TB
	base   string
	dir    string
	client *http.Client
}

// adapt turns a Caddyfile into Caddy's JSON config.
func adapt(t testing.TB, caddyfile string) ([]byte, error) {
	t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	cfg, warns, err := adapter.Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return nil, fmt.Errorf("adapting the Caddyfile: %w", err)
	}
	for _, w := range warns {
		t.Logf("adapt warning: %s", w.String())
	}
	return cfg, nil
}

// loadCaddyfile adapts and loads a Caddyfile, returning the error of either.
func loadCaddyfile(t testing.TB, caddyfile string) error {
	t.Helper()
	cfg, err := adapt(t, caddyfile)
	if err != nil {
		return err
	}
	return caddy.Load(cfg, true)
}

// newGateway picks the port and the data directory of a gateway, and points
// Caddy's data directory (the generated key) into it.
func newGateway(t testing.TB) *gateway {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "xdg"))
	port := testenv.FreePort(t)
	return &gateway{
		t:      t,
		base:   fmt.Sprintf("http://localhost:%d", port),
		dir:    dir,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
	}
}

// expand fills in {{GATEWAY}} (host:port), {{PORT}}, {{DATA}} and the given
// old, new pairs, in one pass so that no filled-in value is scanned again.
func (g *gateway) expand(caddyfile string, pairs ...string) string {
	hostPort := strings.TrimPrefix(g.base, "http://")
	_, port, _ := strings.Cut(hostPort, ":")
	pairs = append(pairs, "{{GATEWAY}}", hostPort, "{{PORT}}", port, "{{DATA}}", g.dir)
	return strings.NewReplacer(pairs...).Replace(caddyfile)
}

// do sends a request with the API token and returns the status and body.
func (g *gateway) do(method, path string, body any, header ...string) (int, []byte) {
	g.t.Helper()
	return g.doAuth(method, path, "Bearer "+apiToken, body, header...)
}

// doAuth is do with a chosen Authorization header ("" for none).
func (g *gateway) doAuth(method, path, auth string, body any, header ...string) (int, []byte) {
	g.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			g.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, g.base+path, rd)
	if err != nil {
		g.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := g.client.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, out
}

// mustJSON decodes b into a map, failing the test on malformed JSON.
func mustJSON(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return m
}

// importAccount imports an account and returns its id.
func (g *gateway) importAccount(body map[string]any) string {
	g.t.Helper()
	status, out := g.do("POST", "/integrated-account", body)
	if status != http.StatusCreated {
		g.t.Fatalf("import: %d %s", status, out)
	}
	return mustJSON(g.t, out)["id"].(string)
}

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveCaddyBinary()
	os.Exit(code)
}
