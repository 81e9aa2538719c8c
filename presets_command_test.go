package linkgate

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/internal/testenv"
	"github.com/linkgate/linkgate/presets"
)

// caddy linkgate-presets lists every preset, and --json prints each in
// full, in a real caddy binary.
func TestPresetsCommandInCaddy(t *testing.T) {
	bin := testenv.CaddyBinary(t)
	out, err := exec.Command(bin, "linkgate-presets").Output()
	if err != nil {
		t.Fatalf("caddy linkgate-presets: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if got, want := len(lines), len(presets.Names())+1; got != want {
		t.Fatalf("%d lines, want a header and %d presets:\n%s", got, want-1, out)
	}
	if f := strings.Fields(lines[0]); strings.Join(f, " ") != "NAME DISPLAY NAME AUTH DOCS" {
		t.Errorf("header %q", lines[0])
	}
	zendesk := ""
	for _, l := range lines[1:] {
		if strings.HasPrefix(l, "zendesk ") {
			zendesk = l
		}
	}
	for _, want := range []string{"Zendesk", "oauth2", "https://developer.zendesk.com/"} {
		if !strings.Contains(zendesk, want) {
			t.Errorf("zendesk line %q lacks %q", zendesk, want)
		}
	}

	out, err = exec.Command(bin, "linkgate-presets", "--json").Output()
	if err != nil {
		t.Fatalf("caddy linkgate-presets --json: %v", err)
	}
	var entries []map[string]any
	if err := json.NewDecoder(bytes.NewReader(out)).Decode(&entries); err != nil {
		t.Fatalf("--json output: %v", err)
	}
	if len(entries) != len(presets.Names()) {
		t.Fatalf("%d entries, want %d", len(entries), len(presets.Names()))
	}
	for i, e := range entries {
		name, _ := e["name"].(string)
		if name != presets.Names()[i] {
			t.Fatalf("entry %d is %q, want %q", i, name, presets.Names()[i])
		}
		raw, _ := presets.Lookup(name)
		var want map[string]any
		if err := json.Unmarshal(raw, &want); err != nil {
			t.Fatal(err)
		}
		want["name"] = name
		gotJSON, _ := json.Marshal(e)
		wantJSON, _ := json.Marshal(want)
		if !bytes.Equal(gotJSON, wantJSON) {
			t.Errorf("%s: --json printed %s, want the whole preset %s", name, gotJSON, wantJSON)
		}
		for _, k := range []string{"name", "display_name", "auth", "base_url", "docs"} {
			if e[k] == nil {
				t.Errorf("%s: no %s", name, k)
			}
		}
		if e["auth"] == "oauth2" && (e["authorize_url"] == nil || e["token_url"] == nil) {
			t.Errorf("%s: oauth2 without authorize_url and token_url", name)
		}
	}
}
