package presets_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/presets"
)

var update = flag.Bool("update", false, "rewrite the README's presets table from the catalogue")

const (
	readme     = "../README.md"
	tableBegin = "<!-- presets table: generated from presets/catalogue by `go test ./presets -run TestREADMETable -update`; do not edit by hand -->\n"
	tableEnd   = "<!-- end of presets table -->\n"
)

// presetsTable is the README's table of presets, made from the catalogue.
func presetsTable(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("| preset | provider | category | auth |\n|---|---|---|---|\n")
	for _, n := range presets.Names() {
		raw, _ := presets.Lookup(n)
		var e struct {
			DisplayName string `json:"display_name"`
			Category    string `json:"category"`
			Auth        string `json:"auth"`
			Docs        string `json:"docs"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		fmt.Fprintf(&b, "| `%s` | [%s](%s) | %s | %s |\n", n, e.DisplayName, e.Docs, e.Category, e.Auth)
	}
	return b.String()
}

// The README's table of presets is the catalogue's: a preset added,
// removed or renamed without regenerating the table fails here.
func TestREADMETable(t *testing.T) {
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i, j := strings.Index(s, tableBegin), strings.Index(s, tableEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md has no presets table between %q and %q", tableBegin, tableEnd)
	}
	got, want := s[i+len(tableBegin):j], presetsTable(t)
	if got == want {
		return
	}
	if *update {
		s = s[:i+len(tableBegin)] + want + s[j:]
		if err := os.WriteFile(readme, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README.md's presets table differs from the catalogue; run go test ./presets -run TestREADMETable -update\ngot:\n%s\nwant:\n%s", got, want)
}
