package linkgate_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/google/uuid"

	"github.com/linkgate/linkgate/internal/testenv"
)

// bulkGateway starts a gateway with an API-key and an OAuth integration
// whose webhooks go to recv.
func bulkGateway(t *testing.T, recv *testenv.WebhookReceiver) *gateway {
	t.Helper()
	g := newGateway(t)
	if err := loadCaddyfile(t, g.expand(`{
	admin off
	integrated_accounts {
		storage sqlite {{DATA}}/linkgate.db
		api_token test-api-token-0123456789
		public_url http://{{GATEWAY}}
		webhook {{HOOK}} {
			secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
		}
		integration keyed {
			auth api_key
			base_url http://127.0.0.1:1
		}
		integration crm {
			auth oauth2
			authorize_url http://127.0.0.1:1/authorize
			token_url http://127.0.0.1:1/token
			client_id id
			client_secret secret
			base_url http://127.0.0.1:1
		}
	}
}
http://{{GATEWAY}} {
	accounts_api
}`, "{{HOOK}}", recv.URL())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	return g
}

type bulkAnswer struct {
	Imported int `json:"imported"`
	Failed   int `json:"failed"`
	Result   []struct {
		Index      int    `json:"index"`
		ID         string `json:"id"`
		StatusCode int    `json:"statusCode"`
		Error      string `json:"error"`
		Message    string `json:"message"`
	} `json:"result"`
}

func TestBulkImportReportsEachRow(t *testing.T) {
	recv := testenv.NewWebhookReceiver(t)
	g := bulkGateway(t, recv)
	taken := g.importAccount(map[string]any{"tenant_id": "t0", "integration": "keyed", "context": map[string]any{"api_key": "first-key"}})
	given := uuid.NewString()
	rows := []string{
		fmt.Sprintf(`{"id":%q,"tenant_id":"t1","integration":"keyed","context":{"api_key":"bulk-secret-1","region":"eu"}}`, given),
		`{"tenant_id":"t2","integration":"crm","context":{"oauth":{"token":{"access_token":"bulk-at-2","refresh_token":"bulk-rt-2","expires_in":3600}}}}`,
		`{"tenant_id":"bad tenant","integration":"keyed","context":{"api_key":"bulk-secret-3"}}`,
		`{"tenant_id":"t4","integration":"nope","context":{"api_key":"bulk-secret-4"}}`,
		fmt.Sprintf(`{"id":%q,"tenant_id":"t5","integration":"keyed","context":{"api_key":"bulk-secret-5"}}`, taken),
		`{"tenant_id":"t6","integration":"keyed","context":{"api_key":"bulk-secret-6"}`, // malformed
		`{"tenant_id":"t7","integration":"crm","context":{}}`,                           // no token
		`{"tenant_id":"t8","integration":"keyed","context":{"api_key":"bulk-secret-8"},"extra":1}`,
		fmt.Sprintf(`{"id":%q,"tenant_id":"t9","integration":"keyed","context":{"api_key":"bulk-secret-9"}}`, given),
	}
	status, out := g.do("POST", "/integrated-account/bulk", strings.Join(rows, "\n")+"\n", "Content-Type", "application/x-ndjson")
	if status != http.StatusOK {
		t.Fatalf("bulk: %d %s", status, out)
	}
	for _, s := range []string{"bulk-secret", "bulk-at-2", "bulk-rt-2"} {
		if strings.Contains(string(out), s) {
			t.Fatalf("the answer shows a secret: %s", out)
		}
	}
	var ans bulkAnswer
	if err := json.Unmarshal(out, &ans); err != nil {
		t.Fatal(err)
	}
	want := []int{201, 201, 400, 400, 409, 400, 400, 400, 409}
	if len(ans.Result) != len(want) || ans.Imported != 2 || ans.Failed != 7 {
		t.Fatalf("answer %s", out)
	}
	for i, w := range want {
		r := ans.Result[i]
		if r.Index != i || r.StatusCode != w || (w >= 400 && r.Message == "") {
			t.Errorf("row %d: %+v, want status %d with a message", i, r, w)
		}
	}
	if ans.Result[0].ID != given || ans.Result[1].ID == "" {
		t.Fatalf("ids: %+v", ans.Result[:2])
	}
	// The imported rows are whole accounts; the refused ones left nothing.
	for i, r := range ans.Result[:2] {
		status, body := g.do("GET", "/integrated-account/"+r.ID, nil)
		if status != http.StatusOK {
			t.Fatalf("row %d: GET %d %s", i, status, body)
		}
		if a := mustJSON(t, body); a["status"] != "active" || a["tenant_id"] != fmt.Sprintf("t%d", i+1) {
			t.Fatalf("row %d: %s", i, body)
		}
	}
	status, body := g.do("GET", "/integrated-account?limit=100", nil)
	if status != http.StatusOK {
		t.Fatal(status)
	}
	if n := len(mustJSON(t, body)["result"].([]any)); n != 3 {
		t.Fatalf("%d accounts listed, want 3 (one before, two imported)", n)
	}
	// The taken id's account was not changed by the refused row.
	_, body = g.do("GET", "/integrated-account/"+taken, nil)
	if mustJSON(t, body)["tenant_id"] != "t0" {
		t.Fatalf("a refused row changed the account it collided with: %s", body)
	}
	// created and active for the first account and each imported one.
	got := recv.WaitFor(t, 6, 20*time.Second)
	perAccount := map[string][]string{}
	for _, d := range got {
		var env struct {
			Event   string         `json:"event"`
			Payload map[string]any `json:"payload"`
		}
		if err := json.Unmarshal(d.Body, &env); err != nil {
			t.Fatal(err)
		}
		id, _ := env.Payload["id"].(string)
		perAccount[id] = append(perAccount[id], env.Event)
	}
	for _, id := range []string{taken, given, ans.Result[1].ID} {
		if len(perAccount[id]) != 2 {
			t.Errorf("account %s: events %v, want created and active", id, perAccount[id])
		}
	}
}

func TestBulkImportWithoutEvents(t *testing.T) {
	recv := testenv.NewWebhookReceiver(t)
	g := bulkGateway(t, recv)
	var rows []map[string]any
	for i := range 2500 {
		rows = append(rows, map[string]any{"tenant_id": fmt.Sprintf("mig-%d", i), "integration": "keyed",
			"context": map[string]any{"api_key": fmt.Sprintf("key-%d", i)}})
	}
	status, out := g.do("POST", "/integrated-account/bulk?events=none", rows)
	if status != http.StatusOK {
		t.Fatalf("bulk: %d %s", status, out)
	}
	var ans bulkAnswer
	if err := json.Unmarshal(out, &ans); err != nil {
		t.Fatal(err)
	}
	if ans.Imported != 2500 || ans.Failed != 0 {
		t.Fatalf("imported %d, failed %d", ans.Imported, ans.Failed)
	}
	// A marker account imported afterwards with events: once its events
	// are delivered, any event of the migration would have been too.
	marker := g.importAccount(map[string]any{"tenant_id": "marker", "integration": "keyed", "context": map[string]any{"api_key": "m"}})
	got := recv.WaitFor(t, 2, 20*time.Second)
	for _, d := range recv.Deliveries() {
		if !strings.Contains(string(d.Body), marker) {
			t.Fatalf("an event of a migrated account was sent: %s", d.Body)
		}
	}
	if len(got) != 2 {
		t.Fatalf("%d deliveries, want the marker's two", len(got))
	}
}

func TestBulkImportRefusesWholeRequests(t *testing.T) {
	g := bulkGateway(t, testenv.NewWebhookReceiver(t))
	row := `{"tenant_id":"t","integration":"keyed","context":{"api_key":"k"}}`
	for _, c := range []struct {
		name, body, ctype, query string
		status                   int
	}{
		{"empty", "  \n", "application/json", "", http.StatusBadRequest},
		{"broken array", "[" + row + ",", "application/json", "", http.StatusBadRequest},
		{"wrong content type", row, "text/plain", "", http.StatusUnsupportedMediaType},
		{"bad events option", "[" + row + "]", "application/json", "?events=some", http.StatusBadRequest},
		{"too many rows", "[" + strings.TrimSuffix(strings.Repeat(row+",", 10_001), ",") + "]", "application/json", "", http.StatusRequestEntityTooLarge},
		{"too many lines", strings.Repeat(row+"\n", 10_001), "application/x-ndjson", "", http.StatusRequestEntityTooLarge},
	} {
		status, out := g.do("POST", "/integrated-account/bulk"+c.query, c.body, "Content-Type", c.ctype)
		if status != c.status {
			t.Errorf("%s: %d %s, want %d", c.name, status, out, c.status)
		}
	}
	_, body := g.do("GET", "/integrated-account", nil)
	if n := len(mustJSON(t, body)["result"].([]any)); n != 0 {
		t.Fatalf("a refused request imported %d accounts", n)
	}
	if status, _ := g.doAuth("POST", "/integrated-account/bulk", "", "["+row+"]"); status != http.StatusUnauthorized {
		t.Fatalf("without the API token: %d", status)
	}
}

// TestBulkDeleteIsCapped: one bulk delete handles at most 1,000 accounts and
// says has_more when the query matches more.
func TestBulkDeleteIsCapped(t *testing.T) {
	recv := testenv.NewWebhookReceiver(t)
	g := bulkGateway(t, recv)
	var rows []map[string]any
	for i := range 1001 {
		rows = append(rows, map[string]any{"tenant_id": "leaving", "integration": "keyed",
			"context": map[string]any{"api_key": fmt.Sprintf("key-%d", i)}})
	}
	keep := g.importAccount(map[string]any{"tenant_id": "staying", "integration": "keyed", "context": map[string]any{"api_key": "k"}})
	if status, out := g.do("POST", "/integrated-account/bulk?events=none", rows); status != http.StatusOK {
		t.Fatalf("bulk: %d %s", status, out)
	}
	type answer struct {
		Count   int      `json:"count"`
		IDs     []string `json:"ids"`
		HasMore bool     `json:"has_more"`
	}
	del := func(dry bool) answer {
		t.Helper()
		status, out := g.do("POST", "/integrated-account/bulk-delete", map[string]any{"query": map[string]any{"tenant_id": "leaving"}, "dry_run": dry})
		var a answer
		if status != http.StatusOK || json.Unmarshal(out, &a) != nil {
			t.Fatalf("bulk-delete: %d %s", status, out)
		}
		return a
	}
	// A dry run walks the same loop as a delete, without the deletes
	// (a thousand deletes, each its own transaction, outlast the test
	// client's timeout under -race on a busy machine).
	if a := del(true); a.Count != 1000 || len(a.IDs) != 1000 || !a.HasMore {
		t.Fatalf("dry run: count %d, %d ids, has_more %v; want 1000 and more", a.Count, len(a.IDs), a.HasMore)
	}
	status, out := g.do("POST", "/integrated-account/bulk-delete", map[string]any{"query": map[string]any{"tenant_id": "staying"}})
	var a answer
	if status != http.StatusOK || json.Unmarshal(out, &a) != nil || a.Count != 1 || a.HasMore {
		t.Fatalf("a delete of fewer than the cap: %d %s", status, out)
	}
	if status, out := g.do("GET", "/integrated-account/"+keep, nil); status != http.StatusNotFound {
		t.Fatalf("the deleted account: %d %s", status, out)
	}
}
