package linkgate_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestTenantAPIToken: an API token restricted to one tenant reaches that
// tenant's accounts on every route, and nothing of another tenant's —
// other tenants' accounts look as if they did not exist — nor the routes
// about the whole gateway.
func TestTenantAPIToken(t *testing.T) {
	w := conformanceWorld(t)
	w.importAll(t)
	own := w.importAccount(map[string]any{"tenant_id": "acme-1", "integration": "keyed", "context": map[string]any{"api_key": upstreamKey}})
	other := w.accountKeyed // tenant acme
	call := func(method, path string, body any) (int, string) {
		t.Helper()
		status, b := w.sdkCall(t, tenantToken, method, path, body)
		return status, string(b)
	}
	expect := func(what string, status int, body string, want int) {
		t.Helper()
		if status != want {
			t.Errorf("%s: %d %s, want %d", what, status, body, want)
		}
	}

	// Listing: its tenant only, whatever the filter asks.
	status, body := call("GET", "/integrated-account?next_cursor=", nil)
	if status != 200 || !strings.Contains(body, own) || strings.Contains(body, other) || strings.Count(body, `"tenant_id":"acme-1"`) != 1 {
		t.Errorf("list: %d %s", status, body)
	}
	status, body = call("GET", "/integrated-account?tenant_id=acme", nil)
	if status != 200 || !strings.Contains(body, `"result":[]`) {
		t.Errorf("list of another tenant: %d %s", status, body)
	}

	// Another tenant's account, on every route that names an account.
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/integrated-account/" + other, nil},
		{"PATCH", "/integrated-account/" + other, map[string]any{"context": map[string]any{"x": 1}}},
		{"PATCH", "/integrated-account/" + other + "/credentials", map[string]any{"api_key": "stolen-key-0123456789"}},
		{"DELETE", "/integrated-account/" + other, nil},
		{"POST", "/integrated-account/refresh-credentials", map[string]any{"id": w.accountOAuth}},
		{"POST", "/integrated-account/token", map[string]any{"integrated_account_id": other}},
		{"POST", "/link-token", map[string]any{"integrated_account_id": other}},
		{"GET", "/proxy/contacts?integrated_account_id=" + other, nil},
	} {
		status, body := call(c.method, c.path, c.body)
		expect(c.method+" "+c.path, status, body, http.StatusNotFound)
	}
	// Creating or moving into another tenant.
	status, body = call("POST", "/integrated-account", map[string]any{"tenant_id": "acme", "integration": "keyed", "context": map[string]any{"api_key": "k-0123456789"}})
	expect("import for another tenant", status, body, http.StatusForbidden)
	status, body = call("PATCH", "/integrated-account/"+own, map[string]any{"tenant_id": "acme"})
	expect("move to another tenant", status, body, http.StatusForbidden)
	status, body = call("POST", "/link-token", map[string]any{"tenant_id": "acme"})
	expect("link token for another tenant", status, body, http.StatusForbidden)
	// A bulk import's row for another tenant fails on its own.
	status, body = call("POST", "/integrated-account/bulk", []map[string]any{
		{"tenant_id": "acme-1", "integration": "keyed", "context": map[string]any{"api_key": "k-0123456789"}},
		{"tenant_id": "acme", "integration": "keyed", "context": map[string]any{"api_key": "k-0123456789"}},
	})
	if status != 200 || !strings.Contains(body, `"imported":1`) || !strings.Contains(body, `"statusCode":403`) {
		t.Errorf("bulk import across tenants: %d %s", status, body)
	}
	// The gateway's webhook endpoints and deliveries are every tenant's.
	for _, c := range [][2]string{{"GET", "/webhook"}, {"GET", "/webhook/wh_x"}, {"POST", "/webhook/test"},
		{"GET", "/webhook-delivery"}, {"GET", "/webhook-delivery/dlv_x"}, {"POST", "/webhook-delivery/dlv_x/redeliver"}, {"POST", "/webhook/wh_x/enable"}} {
		status, body := call(c[0], c[1], nil)
		expect(c[0]+" "+c[1], status, body, http.StatusForbidden)
	}
	// Bulk delete: only its tenant's accounts match.
	status, body = call("POST", "/integrated-account/bulk-delete", map[string]any{"query": map[string]any{"integration.name": "keyed"}, "dry_run": true})
	if status != 200 || !strings.Contains(body, own) || strings.Contains(body, other) || !strings.Contains(body, `"count":2`) { // own, and the one the bulk import added
		t.Errorf("bulk-delete dry run: %d %s", status, body)
	}
	// Nothing of the other tenant changed.
	if status, body := w.do("GET", "/integrated-account/"+other, nil); status != 200 || strings.Contains(string(body), `"x":1`) {
		t.Errorf("the other tenant's account: %d %s", status, body)
	}

	// Its own tenant's account, on the same routes.
	for _, c := range []struct {
		method, path string
		body         any
		want         int
	}{
		{"GET", "/integrated-account/" + own, nil, 200},
		{"PATCH", "/integrated-account/" + own, map[string]any{"context": map[string]any{"plan": "pro"}}, 200},
		{"POST", "/integrated-account/token", map[string]any{"integrated_account_id": own}, 201},
		{"POST", "/link-token", map[string]any{"integrated_account_id": own}, 201},
		{"POST", "/link-token", map[string]any{"tenant_id": "acme-1", "integration": "keyed"}, 201},
		{"POST", "/integrated-account", map[string]any{"tenant_id": "acme-1", "integration": "keyed", "context": map[string]any{"api_key": "k-0123456789"}}, 201},
		{"GET", "/proxy/contacts?integrated_account_id=" + own, nil, 200},
		{"POST", "/integrated-account/bulk-delete", map[string]any{"query": map[string]any{"tenant_id": "acme-1"}}, 200},
	} {
		status, body := call(c.method, c.path, c.body)
		expect(c.method+" "+c.path, status, body, c.want)
	}
	if status, _ := w.do("GET", "/integrated-account/"+other, nil); status != 200 {
		t.Errorf("the tenant's bulk delete reached another tenant: %d", status)
	}
}
