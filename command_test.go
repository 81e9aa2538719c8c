package linkgate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/testenv"
	"github.com/linkgate/linkgate/tokenstore"
	"github.com/linkgate/linkgate/tokenstore/storetest"
)

// resealKey returns a fresh key and its configured (base64) form.
func resealKey(t *testing.T) ([]byte, string) {
	t.Helper()
	k, err := tokenstore.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k, tokenstore.EncodeKey(k)
}

// openResealStore opens the SQLite file at path with only the given keys.
func openResealStore(t *testing.T, path string, keys ...[]byte) *tokenstore.SQLite {
	t.Helper()
	s, err := tokenstore.NewSealer(keys...)
	if err != nil {
		t.Fatal(err)
	}
	st, err := tokenstore.OpenSQLite(context.Background(), path, s)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// sealUnder fills a new SQLite store at path with accounts and one pending
// connect state, all sealed with key.
func sealUnder(t *testing.T, path string, key []byte) []*account.Account {
	t.Helper()
	ctx := context.Background()
	st := openResealStore(t, path, key)
	defer st.Close()
	var accounts []*account.Account
	for i := range 3 {
		a := storetest.NewAccount(fmt.Sprintf("acc_reseal_%d", i))
		if err := st.CreateAccount(ctx, a, nil); err != nil {
			t.Fatal(err)
		}
		accounts = append(accounts, a)
	}
	now := time.Now()
	lt := &tokenstore.LinkToken{Hash: []byte("reseal-lt"), CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := st.CreateLinkToken(ctx, lt); err != nil {
		t.Fatal(err)
	}
	cs := &tokenstore.ConnectState{Hash: []byte("reseal-state"), LinkTokenHash: lt.Hash, Verifier: "reseal-verifier", ExpiresAt: now.Add(time.Hour)}
	if err := st.CreateConnectState(ctx, cs); err != nil {
		t.Fatal(err)
	}
	return accounts
}

// resealCaddyfile is a gateway config on the SQLite file at path whose first
// key comes from the environment, as a deployment would configure it.
func resealCaddyfile(t *testing.T, path string, keys ...string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tadmin off\n\tintegrated_accounts {\n\t\tstorage sqlite %s\n", path)
	for _, k := range keys {
		fmt.Fprintf(&b, "\t\tencryption_key %s\n", k)
	}
	b.WriteString("\t\tapi_token reseal-api-token\n\t\tpublic_url http://127.0.0.1:1\n\t}\n}\n")
	file := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestResealRotatesSQLiteKeys(t *testing.T) {
	// The command closes the store it opened and leaves nothing running.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "linkgate.db")
	keyA, encA := resealKey(t)
	keyB, encB := resealKey(t)
	accounts := sealUnder(t, path, keyA)

	// The new key comes first, through a placeholder as in production.
	t.Setenv("LINKGATE_RESEAL_KEY_B", encB)
	file := resealCaddyfile(t, path, "{env.LINKGATE_RESEAL_KEY_B}", encA)

	var out bytes.Buffer
	if err := runReseal(ctx, file, "caddyfile", &out); err != nil {
		t.Fatalf("reseal: %v", err)
	}
	// Three accounts' credentials and one connect state's verifier.
	if !strings.Contains(out.String(), "re-sealed 4 secrets") {
		t.Fatalf("output %q does not report 4 re-sealed secrets", out.String())
	}
	for _, k := range [][]byte{keyA, keyB} {
		if strings.Contains(out.String(), tokenstore.EncodeKey(k)) {
			t.Fatal("the output prints a key")
		}
	}

	out.Reset()
	if err := runReseal(ctx, file, "caddyfile", &out); err != nil {
		t.Fatalf("second reseal: %v", err)
	}
	if !strings.Contains(out.String(), "re-sealed 0 secrets") {
		t.Fatalf("second run output %q: want nothing left to re-seal", out.String())
	}

	onlyB := openResealStore(t, path, keyB)
	defer onlyB.Close()
	for _, a := range accounts {
		got, err := onlyB.GetAccount(ctx, a.ID)
		if err != nil {
			t.Fatalf("account %s under the new key alone: %v", a.ID, err)
		}
		if got.Credentials.AccessToken != a.Credentials.AccessToken || got.Credentials.RefreshToken != a.Credentials.RefreshToken {
			t.Fatalf("account %s: credentials changed by re-sealing", a.ID)
		}
	}

	onlyA := openResealStore(t, path, keyA)
	defer onlyA.Close()
	for _, a := range accounts {
		if _, err := onlyA.GetAccount(ctx, a.ID); err == nil {
			t.Fatalf("account %s still opens with the old key", a.ID)
		}
	}
	cs, err := onlyB.TakeConnectState(ctx, []byte("reseal-state"))
	if err != nil || cs.Verifier != "reseal-verifier" {
		t.Fatalf("connect state under the new key alone: %v", err)
	}
}

func TestResealRefusesBadConfigs(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "linkgate.db")
	keyA, encA := resealKey(t)
	_, encB := resealKey(t)
	accounts := sealUnder(t, path, keyA)
	malformed := "bm90LWEta2V5LWF0LWFsbA" // base64 of 16 bytes, not 32

	tests := []struct {
		name   string
		config string
		want   string
	}{
		{
			name:   "malformed key",
			config: fmt.Sprintf(`{"apps":{"integrated_accounts":{"storage":{"path":%q},"encryption_keys":[%q,%q],"api_tokens":["t"],"public_url":"http://127.0.0.1:1"}}}`, path, malformed, encA),
			want:   "encryption_key #1: encryption key must be 32 random bytes",
		},
		{
			name:   "no app",
			config: `{"apps":{"http":{"servers":{}}}}`,
			want:   "no integrated_accounts app",
		},
		{
			name:   "postgres without a key",
			config: `{"apps":{"integrated_accounts":{"storage":{"driver":"postgres","dsn":"postgres://127.0.0.1:1/x"},"api_tokens":["t"],"public_url":"http://127.0.0.1:1"}}}`,
			want:   "encryption_key: required with storage postgres",
		},
		{
			// Neither configured key opens the data: nothing may change.
			name:   "old key missing",
			config: fmt.Sprintf(`{"apps":{"integrated_accounts":{"storage":{"path":%q},"encryption_keys":[%q],"api_tokens":["t"],"public_url":"http://127.0.0.1:1"}}}`, path, encB),
			want:   "sealed with a key that is not configured",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "caddy.json")
			if err := os.WriteFile(file, []byte(tt.config), 0o600); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err := runReseal(ctx, file, "", &out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			for _, k := range []string{malformed, encA, encB} {
				if strings.Contains(err.Error(), k) {
					t.Fatalf("the error %q prints a key", err)
				}
			}
			if out.Len() != 0 {
				t.Fatalf("a failed run reported %q", out.String())
			}
		})
	}

	if err := runReseal(ctx, "", "", new(bytes.Buffer)); err == nil || !strings.Contains(err.Error(), "--config is required") {
		t.Fatalf("no --config: err = %v", err)
	}
	missing := filepath.Join(t.TempDir(), "nope.json")
	if err := runReseal(ctx, missing, "", new(bytes.Buffer)); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("missing config file: err = %v", err)
	}

	// None of the refused runs touched the data.
	st := openResealStore(t, path, keyA)
	defer st.Close()
	for _, a := range accounts {
		if _, err := st.GetAccount(ctx, a.ID); err != nil {
			t.Fatalf("account %s after refused runs: %v", a.ID, err)
		}
	}
}

// TestResealCommandInCaddy runs the command in a real Caddy binary with
// linkgate compiled in: it is registered, succeeds with exit status 0, and a
// malformed key fails with a non-zero status and a message naming the option.
func TestResealCommandInCaddy(t *testing.T) {
	bin := testenv.CaddyBinary(t)
	path := filepath.Join(t.TempDir(), "linkgate.db")
	keyA, encA := resealKey(t)
	keyB, encB := resealKey(t)
	accounts := sealUnder(t, path, keyA)

	run := func(file string) (stdout, stderr string, err error) {
		cmd := exec.Command(bin, "linkgate-reseal", "--config", file, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		return o.String(), e.String(), err
	}

	stdout, stderr, err := run(resealCaddyfile(t, path, "short", encA))
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("malformed key: err = %v, want a non-zero exit\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "encryption_key #1") || strings.Contains(stderr+stdout, encA) {
		t.Fatalf("malformed key: stderr %q does not name the option, or prints a key", stderr)
	}

	stdout, stderr, err = run(resealCaddyfile(t, path, encB, encA))
	if err != nil {
		t.Fatalf("reseal: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "re-sealed 4 secrets") {
		t.Fatalf("stdout %q does not report 4 re-sealed secrets", stdout)
	}
	if strings.Contains(stdout+stderr, encA) || strings.Contains(stdout+stderr, encB) {
		t.Fatal("the command prints a key")
	}
	st := openResealStore(t, path, keyB)
	defer st.Close()
	for _, a := range accounts {
		if _, err := st.GetAccount(context.Background(), a.ID); err != nil {
			t.Fatalf("account %s under the new key alone: %v", a.ID, err)
		}
	}
}

// TestResealRotatesPostgresKeys re-seals a PostgreSQL store (in a schema of
// its own) through a JSON config whose DSN comes from a placeholder.
func TestResealRotatesPostgresKeys(t *testing.T) {
	ctx := context.Background()
	dsn, _ := testenv.PostgresSchema(t)

	open := func(keys ...[]byte) *tokenstore.Postgres {
		s, err := tokenstore.NewSealer(keys...)
		if err != nil {
			t.Fatal(err)
		}
		p, err := tokenstore.OpenPostgres(ctx, dsn, s, tokenstore.PostgresOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyA, encA := resealKey(t)
	keyB, encB := resealKey(t)
	p := open(keyA)
	var accounts []*account.Account
	for i := range 3 {
		a := storetest.NewAccount(fmt.Sprintf("acc_reseal_pg_%d", i))
		if err := p.CreateAccount(ctx, a, nil); err != nil {
			t.Fatal(err)
		}
		accounts = append(accounts, a)
	}
	p.Close()

	t.Setenv("LINKGATE_RESEAL_DSN", dsn)
	file := filepath.Join(t.TempDir(), "caddy.json")
	config := fmt.Sprintf(`{"apps":{"integrated_accounts":{"storage":{"driver":"postgres","dsn":"{env.LINKGATE_RESEAL_DSN}"},"encryption_keys":[%q,%q],"api_tokens":["t"],"public_url":"http://127.0.0.1:1"}}}`, encB, encA)
	if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runReseal(ctx, file, "", &out); err != nil {
		t.Fatalf("reseal: %v", err)
	}
	if !strings.Contains(out.String(), "re-sealed 3 secrets") {
		t.Fatalf("output %q does not report 3 re-sealed secrets", out.String())
	}

	onlyB := open(keyB)
	defer onlyB.Close()
	onlyA := open(keyA)
	defer onlyA.Close()
	for _, a := range accounts {
		got, err := onlyB.GetAccount(ctx, a.ID)
		if err != nil || got.Credentials.RefreshToken != a.Credentials.RefreshToken {
			t.Fatalf("account %s under the new key alone: %v", a.ID, err)
		}
		if _, err := onlyA.GetAccount(ctx, a.ID); err == nil {
			t.Fatalf("account %s still opens with the old key", a.ID)
		}
	}
}

// TestResealUsesTheGeneratedKey: with SQLite and no key configured, the
// command opens the store with the key the gateway generated in Caddy's data
// directory, as the gateway does; a store sealed with any other key fails.
func TestResealUsesTheGeneratedKey(t *testing.T) {
	ctx := context.Background()
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	generated, encGenerated := resealKey(t)
	if err := os.MkdirAll(filepath.Dir(keyFile()), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile(), []byte(encGenerated+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	other, _ := resealKey(t)
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		key  []byte
		ok   bool
	}{{"generated", generated, true}, {"other", other, false}} {
		path := filepath.Join(dir, tt.name+".db")
		sealUnder(t, path, tt.key)
		err := runReseal(ctx, resealCaddyfile(t, path), "caddyfile", new(bytes.Buffer))
		if (err == nil) != tt.ok {
			t.Fatalf("store sealed with the %s key: err = %v", tt.name, err)
		}
	}
}
