package linkgate_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// normalize re-encodes JSON so that formatting does not matter.
func normalize(t *testing.T, b []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	out, _ := json.MarshalIndent(v, "", "  ")
	return string(out)
}

// TestAdaptGolden adapts each testdata/*.caddyfiletest (a Caddyfile, a line
// of dashes, the JSON it must adapt to) and compares.
func TestAdaptGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.caddyfiletest")
	if len(files) == 0 {
		t.Fatal("no golden files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			caddyfile, want, ok := strings.Cut(string(raw), "\n----------\n")
			if !ok {
				t.Fatal("no ---------- separator")
			}
			got, err := adapt(t, caddyfile)
			if err != nil {
				t.Fatal(err)
			}
			if g, w := normalize(t, got), normalize(t, []byte(want)); g != w {
				t.Errorf("adapted JSON differs\n--- got\n%s\n--- want\n%s", g, w)
			}
		})
	}
}

// TestExamplesAgree keeps caddy.json.example equal to what
// Caddyfile.example adapts to (with none of its {$VARS} set).
func TestExamplesAgree(t *testing.T) {
	for _, v := range []string{"LINKGATE_API_TOKEN", "LINKGATE_WEBHOOK_SECRET", "HUBSPOT_CLIENT_ID", "HUBSPOT_CLIENT_SECRET", "LINKGATE_KEY"} {
		if _, set := os.LookupEnv(v); set {
			t.Setenv(v, "")
			os.Unsetenv(v)
		}
	}
	caddyfile, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	jsonCfg, err := os.ReadFile("caddy.json.example")
	if err != nil {
		t.Fatal(err)
	}
	got, err := adapt(t, string(caddyfile))
	if err != nil {
		t.Fatal(err)
	}
	if g, w := normalize(t, got), normalize(t, jsonCfg); g != w {
		t.Errorf("Caddyfile.example and caddy.json.example differ: regenerate with\n  go run ./cmd/caddy adapt --config Caddyfile.example --pretty > caddy.json.example\n--- adapted\n%s\n--- caddy.json.example\n%s", g, w)
	}
	if !bytes.Contains(jsonCfg, []byte(`"integrated_accounts"`)) {
		t.Error("caddy.json.example has no integrated_accounts app")
	}
}
