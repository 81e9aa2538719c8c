package linkgate_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestHealthAndGauges: the health route answers without a token, liveness
// and readiness, naming each check; the gauges count accounts by status
// and the webhook backlog in Caddy's metrics.
func TestHealthAndGauges(t *testing.T) {
	g := newGateway(t)
	cfg := g.expand(`{
	admin off
	metrics
	integrated_accounts {
		storage sqlite {{DATA}}/linkgate.db
		api_token test-api-token-0123456789
		public_url http://{{GATEWAY}}
		webhook http://127.0.0.1:1/hooks {
			secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
		}
		integration keyed {
			auth api_key
			base_url http://127.0.0.1:1
		}
	}
}
http://{{GATEWAY}} {
	handle /healthz* {
		linkgate_health
	}
	handle /metrics {
		metrics
	}
	handle {
		accounts_api
	}
}`)
	if err := loadCaddyfile(t, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	for path, want := range map[string]string{
		"/healthz/live": `"status":"ok"`,
		"/healthz":      `"store":"ok"`,
	} {
		status, body := g.doAuth("GET", path, "", nil)
		if status != http.StatusOK || !strings.Contains(string(body), want) {
			t.Fatalf("GET %s without a token: %d %s; want 200 with %s", path, status, body, want)
		}
	}
	_, body := g.doAuth("GET", "/healthz", "", nil)
	for _, want := range []string{`"keys":"ok"`, `"postgres_listener":"not used"`, `"webhook_dispatcher":"running"`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("readiness %s lacks %s", body, want)
		}
	}

	g.importAccount(map[string]any{"tenant_id": "acme", "integration": "keyed", "context": map[string]any{"api_key": "k-1"}})
	resp, err := http.Get(g.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`caddy_linkgate_accounts{status="active"} 1`,
		`caddy_linkgate_accounts{status="needs_reauth"} 0`,
		`caddy_linkgate_webhook_pending `,
		`caddy_linkgate_webhook_oldest_pending_age_seconds `,
		`caddy_linkgate_webhook_retrying{endpoint="0"}`,
	} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
