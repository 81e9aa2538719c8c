package linkgate_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// trutoSDKHeaders are the headers Truto's TypeScript SDK sends on every
// call (apiClient.request); Content-Type is added for object bodies only.
func trutoSDKHeaders(h http.Header, token string) {
	h.Set("Accept", "application/json")
	h.Set("Authorization", "Bearer "+token)
	h.Set("User-Agent", "truto-ts-sdk/2.0.12")
}

// sdkCall replays one call of Truto's TypeScript SDK: method, the path with
// the query string qs.stringify makes (the SDK always appends "?"), and the
// body as the SDK sends it — an object body as JSON with Content-Type
// application/json, a string body (refresh-credentials) as fetch sends a
// string: text/plain.
func (w *world) sdkCall(t *testing.T, token, method, pathAndQuery string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd, ct = strings.NewReader(b), "text/plain;charset=UTF-8"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd, ct = strings.NewReader(string(j)), "application/json"
	}
	req, err := http.NewRequest(method, w.base+pathAndQuery, rd)
	if err != nil {
		t.Fatal(err)
	}
	trutoSDKHeaders(req.Header, token)
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, pathAndQuery, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

var (
	uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	timeRe = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)
)

// spec reads a documented shape of testdata/truto.
func spec(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile("testdata/truto/" + name + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m
}

// conforms checks that got has every key of the documented shape, each of
// the documented type, and returns what is wrong.
func conforms(got any, shape map[string]any, path string) []string {
	obj, ok := got.(map[string]any)
	if !ok {
		return []string{fmt.Sprintf("%s is %T, not an object", path, got)}
	}
	var bad []string
	for k, want := range shape {
		v, present := obj[k]
		p := path + "." + k
		if !present {
			bad = append(bad, p+" is missing")
			continue
		}
		if nested, ok := want.(map[string]any); ok {
			bad = append(bad, conforms(v, nested, p)...)
			continue
		}
		if msg := typeProblem(v, want.(string)); msg != "" {
			bad = append(bad, p+" "+msg)
		}
	}
	return bad
}

func typeProblem(v any, want string) string {
	kinds := strings.Split(want, "|")
	for _, k := range kinds {
		if v == nil && k == "null" {
			return ""
		}
		switch {
		case k == "string":
			if _, ok := v.(string); ok {
				return ""
			}
		case k == "uuid":
			if s, ok := v.(string); ok && uuidRe.MatchString(s) {
				return ""
			}
		case k == "time":
			if s, ok := v.(string); ok && timeRe.MatchString(s) {
				return ""
			}
		case k == "bool":
			if _, ok := v.(bool); ok {
				return ""
			}
		case k == "number":
			if _, ok := v.(float64); ok {
				return ""
			}
		case k == "object":
			if _, ok := v.(map[string]any); ok {
				return ""
			}
		case k == "array":
			if _, ok := v.([]any); ok {
				return ""
			}
		case strings.HasPrefix(k, "enum:"):
			if s, ok := v.(string); ok && slices.Contains(strings.Split(strings.TrimPrefix(k, "enum:"), ","), s) {
				return ""
			}
		}
	}
	return fmt.Sprintf("is %#v, not %s", v, want)
}

// mustConform decodes b and checks it against the named shape.
func mustConform(t *testing.T, what string, b []byte, shape string) map[string]any {
	t.Helper()
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: not a JSON object: %s", what, b)
	}
	if bad := conforms(got, spec(t, shape), shape); len(bad) > 0 {
		t.Fatalf("%s does not have Truto's documented shape:\n  %s\n%s", what, strings.Join(bad, "\n  "), b)
	}
	return got
}

const tenantToken = "tenant-token-acme-0123456789"

// conformanceWorld is the test world with a tenant-restricted token and an
// integration category.
func conformanceWorld(t *testing.T) *world {
	return newWorldWith(t, func(c string) string {
		c = strings.Replace(c, "api_token test-api-token-0123456789",
			"api_token test-api-token-0123456789\n\t\tapi_token "+tenantToken+" {\n\t\t\ttenant acme-1\n\t\t}", 1)
		return strings.Replace(c, "integration oauth {\n\t\t\tauth oauth2", "integration oauth {\n\t\t\tauth oauth2\n\t\t\tcategory crm", 1)
	})
}

// TestTrutoConformance replays the calls of Truto's TypeScript SDK (the
// paths, query strings, headers and bodies its source sends) and of Truto's
// API reference against a real Caddy with linkgate, and checks every answer,
// and the webhook events, against Truto's documented shapes.
func TestTrutoConformance(t *testing.T) {
	w := conformanceWorld(t)
	w.importAll(t)

	// Import an account as Truto documents it: environment_integration_id,
	// authentication_method, region; credentials in context.oauth.token.
	status, body := w.sdkCall(t, apiToken, "GET", "/integrated-account?integration.name=oauth&next_cursor=", nil)
	list := mustConform(t, "GET /integrated-account", body, "list")
	if status != 200 || len(list["result"].([]any)) != 1 {
		t.Fatalf("integration.name=oauth: %d %s", status, body)
	}
	existing := mustConform(t, "a listed account", mustMarshal(t, list["result"].([]any)[0]), "integrated_account")
	envIntegration := existing["environment_integration_id"].(string)
	envID := existing["environment_id"].(string)
	if existing["integration"].(map[string]any)["category"] != "crm" {
		t.Errorf("integration.category = %v, want the configured crm", existing["integration"])
	}
	tok := w.as.Authorize(t, oauthClient, w.base+callbackPath, "conformance", nil)
	status, body = w.sdkCall(t, apiToken, "POST", "/integrated-account?", map[string]any{
		"tenant_id": "acme-1", "environment_integration_id": envIntegration,
		"authentication_method": "oauth2", "region": "wnam",
		"context": map[string]any{"oauth": map[string]any{"token": map[string]any{
			"access_token": tok.AccessToken, "refresh_token": tok.RefreshToken, "expires_in": 3600}}},
	})
	if status != http.StatusCreated {
		t.Fatalf("import: %d %s", status, body)
	}
	acct := mustConform(t, "POST /integrated-account", body, "integrated_account")
	id := acct["id"].(string)
	if acct["integration"].(map[string]any)["name"] != "oauth" || acct["environment_id"] != envID || acct["is_sandbox"] != false || acct["last_error"] != nil {
		t.Fatalf("imported account: %s", body)
	}

	// integratedAccount.list: the Cursor's first call sends next_cursor=.
	for _, q := range []string{
		"tenant_id=acme-1&next_cursor=",
		"integration.name=oauth&tenant_id=acme-1&next_cursor=",
		"integration%5Bname%5D=oauth&tenant_id=acme-1&next_cursor=", // qs of {integration: {name}}
		"environment_integration_id=" + envIntegration + "&tenant_id=acme-1&next_cursor=",
		"status=active&environment_id=" + envID + "&is_sandbox=false&tenant_id=acme-1&next_cursor=",
		"created_at%5Bgte%5D=" + acct["created_at"].(string) + "&tenant_id=acme-1&next_cursor=",
		"created_at=" + acct["created_at"].(string) + "&tenant_id=acme-1&next_cursor=",
	} {
		status, body := w.sdkCall(t, apiToken, "GET", "/integrated-account?"+q, nil)
		l := mustConform(t, "list "+q, body, "list")
		res := l["result"].([]any)
		if status != 200 || len(res) != 1 || res[0].(map[string]any)["id"] != id {
			t.Errorf("list ?%s: %d %s, want the imported account alone", q, status, body)
		}
	}
	// Filters that match nothing here answer an empty list; none is ignored.
	for _, q := range []string{
		"integration.name=keyed&tenant_id=acme-1", "status=needs_reauth&tenant_id=acme-1",
		"status=validation_error", "status=post_install_error", "is_sandbox=true",
		"environment_id=another-environment", "created_at%5Blt%5D=2001-01-01T00:00:00.000Z",
		"updated_at%5Bgt%5D=2999-01-01T00:00:00.000Z",
	} {
		status, body := w.sdkCall(t, apiToken, "GET", "/integrated-account?"+q+"&next_cursor=", nil)
		if l := mustConform(t, "list "+q, body, "list"); status != 200 || len(l["result"].([]any)) != 0 {
			t.Errorf("list ?%s: %d %s, want nothing", q, status, body)
		}
	}
	for _, q := range []string{"integration.nam=oauth", "tenant=acme-1", "status%5Bne%5D=active", "features.super_query=apac", "created_at=yesterday"} {
		status, body := w.sdkCall(t, apiToken, "GET", "/integrated-account?"+q, nil)
		mustConform(t, "refused ?"+q, body, "error")
		if status != http.StatusBadRequest {
			t.Errorf("list ?%s: %d %s, want 400 rather than a filter silently ignored", q, status, body)
		}
	}
	// A limit over 1000 is clamped, and the answer says so.
	status, body = w.sdkCall(t, apiToken, "GET", "/integrated-account?limit=5000&next_cursor=", nil)
	if l := mustConform(t, "limit=5000", body, "list"); status != 200 || l["limit"] != float64(1000) {
		t.Errorf("limit=5000: %d %s", status, body)
	}

	// get, update (context and tenant_id), refreshCredentials.
	status, body = w.sdkCall(t, apiToken, "GET", "/integrated-account/"+id+"?", nil)
	mustConform(t, "GET /integrated-account/{id}", body, "integrated_account")
	status, body = w.sdkCall(t, apiToken, "PATCH", "/integrated-account/"+id+"?", map[string]any{"context": map[string]any{"zendesk_subdomain": "truto"}})
	if a := mustConform(t, "PATCH /integrated-account/{id}", body, "integrated_account"); status != 200 || a["context"].(map[string]any)["zendesk_subdomain"] != "truto" {
		t.Fatalf("update: %d %s", status, body)
	}
	status, body = w.sdkCall(t, apiToken, "POST", "/integrated-account/refresh-credentials", `{"id":"`+id+`"}`)
	if s := mustConform(t, "refresh-credentials", body, "success"); status != 200 || s["success"] != true {
		t.Fatalf("refreshCredentials: %d %s", status, body)
	}

	// linkToken.createForNewIntegration / createForExistingIntegratedAccount.
	status, body = w.sdkCall(t, apiToken, "POST", "/link-token?", map[string]any{"tenant_id": "acme-1"})
	if mustConform(t, "createForNewIntegration", body, "link_token"); status != http.StatusCreated {
		t.Fatalf("link token for a new connection: %d %s", status, body)
	}
	status, body = w.sdkCall(t, apiToken, "POST", "/link-token?", map[string]any{"integrated_account_id": id, "unified_model_id": "4a4de828-f4db-4c9e-adfd-434e0864c3c7"})
	if mustConform(t, "createForExistingIntegratedAccount", body, "link_token"); status != http.StatusCreated {
		t.Fatalf("link token for a reconnect: %d %s", status, body)
	}

	// webhook.list, webhook.get, webhook.test.
	status, body = w.sdkCall(t, apiToken, "GET", "/webhook?next_cursor=", nil)
	wl := mustConform(t, "GET /webhook", body, "list")
	if status != 200 || len(wl["result"].([]any)) != 1 {
		t.Fatalf("webhook list: %d %s", status, body)
	}
	hook := mustConform(t, "a webhook", mustMarshal(t, wl["result"].([]any)[0]), "webhook")
	hookID := hook["id"].(string)
	status, body = w.sdkCall(t, apiToken, "GET", "/webhook/"+hookID+"?", nil)
	if mustConform(t, "GET /webhook/{id}", body, "webhook"); status != 200 {
		t.Fatalf("webhook get: %d %s", status, body)
	}
	before := len(w.hooks.Deliveries())
	status, body = w.sdkCall(t, apiToken, "POST", "/webhook/test", map[string]any{"id": hookID})
	if s := mustConform(t, "POST /webhook/test", body, "success"); status != 200 || s["success"] != true {
		t.Fatalf("webhook test: %d %s", status, body)
	}
	tested := false
	for _, d := range w.hooks.Deliveries()[before:] {
		tested = tested || strings.Contains(string(d.Body), `"event":"test"`)
	}
	if !tested {
		t.Fatal("the test event was not delivered before the answer")
	}

	// The integrated account token of Truto's API reference: proxied calls
	// of that account, and nothing else.
	status, body = w.sdkCall(t, apiToken, "POST", "/integrated-account/token", map[string]any{"integrated_account_id": id})
	at := mustConform(t, "POST /integrated-account/token", body, "integrated_account_token")["integrated_account_token"].(string)
	if status != http.StatusCreated {
		t.Fatalf("token: %d %s", status, body)
	}
	if status, body := w.sdkCall(t, at, "GET", "/proxy/me?integrated_account_id="+id, nil); status != 200 || !strings.Contains(string(body), "conformance") {
		t.Fatalf("proxy with the account token: %d %s", status, body)
	}
	if status, body := w.sdkCall(t, at, "GET", "/proxy/me?integrated_account_id="+w.accountOAuth, nil); status != http.StatusNotFound {
		t.Fatalf("the account token reached another account: %d %s", status, body)
	}
	if status, body := w.sdkCall(t, at, "GET", "/integrated-account/"+id+"?", nil); status != http.StatusUnauthorized {
		t.Fatalf("the account token reached the API: %d %s", status, body)
	}

	// Webhook events: Truto's envelope, the account in Truto's shape.
	for _, d := range w.hooks.Deliveries() {
		mustConform(t, "a webhook event", d.Body, "webhook_event")
	}
	for _, env := range w.waitEvents(t, "integrated_account:created", id, 1) {
		mustConform(t, "an integrated_account:created payload", mustMarshal(t, env["payload"]), "integrated_account")
	}

	// delete, then bulk-delete as Truto's reference shows it (the query
	// as a string holding the object).
	status, body = w.sdkCall(t, apiToken, "DELETE", "/integrated-account/"+id+"?", nil)
	if mustConform(t, "DELETE /integrated-account/{id}", body, "deleted"); status != 200 {
		t.Fatalf("delete: %d %s", status, body)
	}
	status, body = w.sdkCall(t, apiToken, "POST", "/integrated-account/bulk-delete", map[string]any{"query": "{\n  \"tenant_id\": \"acme\",\n  \"integration.name\": \"keyed\"\n}\n", "dry_run": true})
	if s := mustConform(t, "bulk-delete dry run", body, "success"); status != 200 || s["success"] != true || s["count"] != float64(1) {
		t.Fatalf("bulk-delete dry run: %d %s", status, body)
	}
	status, body = w.sdkCall(t, apiToken, "POST", "/integrated-account/bulk-delete", map[string]any{"query": map[string]any{"integration.name": "keyed"}})
	if s := mustConform(t, "bulk-delete", body, "success"); status != 200 || s["count"] != float64(1) {
		t.Fatalf("bulk-delete: %d %s", status, body)
	}
	if status, _ := w.sdkCall(t, apiToken, "GET", "/integrated-account/"+w.accountKeyed+"?", nil); status != http.StatusNotFound {
		t.Fatalf("the bulk-deleted account is still there: %d", status)
	}
	w.waitEvents(t, "integrated_account:deleted", w.accountKeyed, 1)
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
