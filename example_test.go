package linkgate_test

import (
	"bytes"
	"fmt"
	"net/http"
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
func loadExample(t *testing.T, file string) *gateway {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	g := newGateway(t)
	upstream := testenv.FreePort(t)
	gw := strings.TrimPrefix(g.base, "http://localhost")
	cfg := strings.NewReplacer(
		"localhost:8080", "localhost"+gw,
		`":8080"`, `"`+gw+`"`,
		"localhost:9090", fmt.Sprintf("localhost:%d", upstream),
		`":9090"`, fmt.Sprintf(`":%d"`, upstream),
		"./data/linkgate.db", filepath.Join(g.dir, "data", "linkgate.db"),
		"admin localhost:2019", "admin off",
		`"listen": "localhost:2019"`, `"disabled": true`,
	).Replace(string(raw))
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
