package linkgate_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// keyCheckCaddyfile is a gateway on a SQLite store with no encryption_key:
// the key is generated in Caddy's data directory ({{XDG}}/caddy/linkgate).
const keyCheckCaddyfile = `{
	admin off
	integrated_accounts {
		storage sqlite {{DB}}
		api_token test-api-token-0123456789
		public_url http://{{GATEWAY}}
		%s
		integration keyed {
			auth api_key
			base_url http://127.0.0.1:1
		}
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
	handle {
		accounts_api
	}
}`

// TestStoreCopiedWithoutItsKeyRefusesToStart copies a SQLite store to a
// host whose Caddy data directory lacks the generated key: the gateway must
// refuse to start and say which key id is missing and what to do, instead
// of answering every call "store unavailable". With the key copied over, it
// starts and serves the account.
func TestStoreCopiedWithoutItsKeyRefusesToStart(t *testing.T) {
	g := newGateway(t) // sets XDG_DATA_HOME to g.dir/xdg: the first host
	db := filepath.Join(g.dir, "linkgate.db")
	cfg := strings.Replace(g.expand(keyCheckCaddyfile, "{{DB}}", db), "%s", "", 1)
	if err := loadCaddyfile(t, cfg); err != nil {
		t.Fatal(err)
	}
	id := g.importAccount(map[string]any{"tenant_id": "acme", "integration": "keyed", "context": map[string]any{"api_key": "k-1"}})
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	oldKey := filepath.Join(g.dir, "xdg", "caddy", "linkgate", "encryption.key")
	if _, err := os.Stat(oldKey); err != nil {
		t.Fatalf("the generated key is not where the test expects it: %v", err)
	}

	// The second host: a new data directory, the same database file.
	t.Setenv("XDG_DATA_HOME", filepath.Join(g.dir, "xdg2"))
	err := loadCaddyfile(t, cfg)
	_ = caddy.Stop()
	if err == nil {
		t.Fatal("the gateway started with a key that opens nothing in the store")
	}
	for _, want := range []string{"sealed with key id", "encryption.key", filepath.Join(g.dir, "xdg2")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "unavailable") {
		t.Errorf("error %q blames the store", err)
	}

	// Following the advice: copy the key file over the generated one.
	b, err := os.ReadFile(oldKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(g.dir, "xdg2", "caddy", "linkgate", "encryption.key"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := loadCaddyfile(t, cfg); err != nil {
		t.Fatalf("with the key copied over: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	if status, body := g.do("GET", "/integrated-account/"+id, nil); status != http.StatusOK {
		t.Fatalf("GET account: %d %s", status, body)
	}
}

// TestMissingOldKeyAnswersCannotDecrypt rotates a key without re-sealing
// and then drops the old key: the gateway still starts (the new key opens
// part of the store), and a call on an account sealed with the dropped key
// answers that its credentials cannot be decrypted, not that the store is
// unavailable.
func TestMissingOldKeyAnswersCannotDecrypt(t *testing.T) {
	g := newGateway(t)
	db := filepath.Join(g.dir, "linkgate.db")
	const keyA = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	const keyB = "HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4="
	load := func(keys string) {
		t.Helper()
		cfg := strings.Replace(g.expand(keyCheckCaddyfile, "{{DB}}", db), "%s", keys, 1)
		if err := loadCaddyfile(t, cfg); err != nil {
			t.Fatal(err)
		}
	}
	load("encryption_key " + keyA)
	old := g.importAccount(map[string]any{"tenant_id": "acme", "integration": "keyed", "context": map[string]any{"api_key": "k-old"}})
	_ = caddy.Stop()
	load("encryption_key " + keyB + "\n\t\tencryption_key " + keyA)
	fresh := g.importAccount(map[string]any{"tenant_id": "acme", "integration": "keyed", "context": map[string]any{"api_key": "k-new"}})
	_ = caddy.Stop()
	load("encryption_key " + keyB) // keyA dropped without caddy linkgate-reseal
	t.Cleanup(func() { _ = caddy.Stop() })

	status, body := g.do("GET", "/proxy/x?integrated_account_id="+old, nil)
	if status != http.StatusInternalServerError || !strings.Contains(string(body), "cannot be decrypted") {
		t.Fatalf("proxied call on the old key's account: %d %s; want 500 saying the credentials cannot be decrypted", status, body)
	}
	if status, body := g.do("GET", "/integrated-account/"+fresh, nil); status != http.StatusOK {
		t.Fatalf("the new key's account: %d %s", status, body)
	}
}
