package linkgate_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// definedMetrics are the caddy_linkgate_* names the code registers, read
// from its collectors' definitions.
func definedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	def := regexp.MustCompile(`(?:Name:\s*|name\()"([a-z_]+)"`)
	out := map[string]bool{}
	files, _ := filepath.Glob("*.go")
	more, _ := filepath.Glob("*/*.go")
	for _, f := range append(files, more...) {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"linkgate"`) {
			continue
		}
		for _, m := range def.FindAllStringSubmatch(string(b), -1) {
			base := "caddy_linkgate_" + m[1]
			out[base] = true
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				out[base+suffix] = true
			}
		}
	}
	if !out["caddy_linkgate_accounts"] || !out["caddy_linkgate_token_refreshes_total"] {
		t.Fatalf("the metric definitions were not found: %v", out)
	}
	return out
}

// TestAlertRulesUseExistingMetrics: the Prometheus alert rules and the
// Grafana dashboard shipped in ops/ parse, and every caddy_linkgate_*
// metric they query is one the gateway defines.
func TestAlertRulesUseExistingMetrics(t *testing.T) {
	defined := definedMetrics(t)
	used := regexp.MustCompile(`caddy_linkgate_[a-z_]+`)
	check := func(file, expr string) {
		names := used.FindAllString(expr, -1)
		if len(names) == 0 {
			t.Errorf("%s: %q queries no linkgate metric", file, expr)
		}
		for _, n := range names {
			if !defined[n] {
				t.Errorf("%s: %q uses %s, which linkgate does not define", file, expr, n)
			}
		}
	}

	b, err := os.ReadFile("ops/prometheus-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert string
				Expr  string
			}
		}
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("alert rules do not parse: %v", err)
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("a rule without alert or expr: %+v", r)
			}
			check("prometheus-alerts.yml "+r.Alert, r.Expr)
			n++
		}
	}
	if n < 4 {
		t.Fatalf("%d alert rules, want needs_reauth, webhook age, webhook failures and refresh failures", n)
	}

	b, err = os.ReadFile("ops/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard does not parse: %v", err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			check("grafana-dashboard.json "+p.Title, tg.Expr)
		}
	}
}
