package linkflow_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/wire"
)

func TestCreateLinkTokenForNewConnection(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	lt := h.linkToken(map[string]any{
		"tenant_id": "tenant-42", "integration": "acme",
		"redirect_uri": appOriginForHandlers + "/done", "scopes": []string{"deals.read"},
		"context": map[string]any{"plan": "pro"},
	})
	id, err := uuid.Parse(lt.LinkToken)
	if err != nil || id.Version() != 4 {
		t.Fatalf("link_token %q is not a v4 UUID", lt.LinkToken)
	}
	if want := h.public + "/connect-account?link_token=" + lt.LinkToken; lt.URL != want {
		t.Errorf("url = %q, want %q", lt.URL, want)
	}
	if want := h.clock.Now().Add(7 * 24 * time.Hour); !time.Time(lt.ExpiresAt).Equal(want) {
		t.Errorf("expires_at = %s, want %s (7 days)", time.Time(lt.ExpiresAt), want)
	}

	sum := sha256.Sum256([]byte(lt.LinkToken))
	stored, err := h.store.GetLinkToken(context.Background(), sum[:])
	if err != nil {
		t.Fatalf("the link token is not stored under its SHA-256: %v", err)
	}
	if stored.TenantID != "tenant-42" || stored.Integration != "acme" || stored.AccountID != "" ||
		stored.RedirectURI != appOriginForHandlers+"/done" || len(stored.Scopes) != 1 || stored.Context["plan"] != "pro" {
		t.Errorf("stored link token = %+v", stored)
	}
	// Only the hash is stored: the database files never hold the token.
	if err := h.store.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(h.dbFile + "*")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if strings.Contains(string(b), lt.LinkToken) {
			t.Errorf("%s holds the link token in clear", f)
		}
	}
}

// TestCreateLinkTokenTrutoFields: the body Truto's TypeScript SDK sends
// for a new connection — tenant_id alone, with unified_model_id — and the
// other documented fields are accepted; the token leaves the integration
// to the end user, and expires_at has milliseconds, as every time.
func TestCreateLinkTokenTrutoFields(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	r := h.postJSON(h.public+"/link-token", `{"tenant_id":"acme-1","unified_model_id":"4a4de828-f4db-4c9e-adfd-434e0864c3c7",`+
		`"truto_static_gate_id":"gate","region":"wnam","persist_previous_context":false}`)
	if r.status != http.StatusCreated {
		t.Fatalf("= %d %s", r.status, r.body)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(r.body), &got); err != nil {
		t.Fatal(err)
	}
	exp, _ := got["expires_at"].(string)
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`).MatchString(exp) {
		t.Errorf("expires_at %q is not RFC 3339 UTC with milliseconds", exp)
	}
	sum := sha256.Sum256([]byte(got["link_token"].(string)))
	stored, err := h.store.GetLinkToken(context.Background(), sum[:])
	if err != nil {
		t.Fatal(err)
	}
	if stored.TenantID != "acme-1" || stored.Integration != "" || stored.AccountID != "" {
		t.Errorf("stored link token = %+v, want tenant acme-1 and no integration (the end user picks)", stored)
	}
}

func TestCreateLinkTokenForReconnect(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	a, _ := h.seedAccount("alice", account.StatusNeedsReauth, nil)
	lt := h.linkToken(map[string]any{"integrated_account_id": a.ID, "persist_previous_context": true})
	sum := sha256.Sum256([]byte(lt.LinkToken))
	stored, err := h.store.GetLinkToken(context.Background(), sum[:])
	if err != nil {
		t.Fatal(err)
	}
	if stored.AccountID != a.ID || stored.TenantID != a.TenantID || stored.Integration != "acme" || !stored.PersistPreviousContext {
		t.Errorf("stored link token = %+v", stored)
	}
}

func TestCreateLinkTokenTTLIsConfigurable(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	svc, err := newServiceWithTTL(h, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rec := postRecorder(t, svc.CreateLinkToken, `{"tenant_id":"t","integration":"acme"}`)
	var lt struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	if rec.Code != http.StatusCreated || json.Unmarshal(rec.Body.Bytes(), &lt) != nil {
		t.Fatalf("= %d %s", rec.Code, rec.Body)
	}
	if want := h.clock.Now().Add(time.Hour); !time.Time(lt.ExpiresAt).Equal(want) {
		t.Errorf("expires_at = %s, want %s", time.Time(lt.ExpiresAt), want)
	}
}

func TestCreateLinkTokenRejectsBadInput(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	a, _ := h.seedAccount("alice", account.StatusActive, nil)
	cases := []struct {
		name, body string
		status     int
		says       string
	}{
		{"both", `{"integrated_account_id":"` + a.ID + `","tenant_id":"t","integration":"acme"}`, 400, "not both"},
		{"neither", `{"redirect_uri":"` + appOriginForHandlers + `"}`, 400, "give integrated_account_id"},
		{"tenant with an empty integration", `{"tenant_id":"t","integration":""}`, 400, "leave it out"},
		{"reconnect naming an integration", `{"integrated_account_id":"` + a.ID + `","integration":"acme"}`, 400, "keeps the account's integration"},
		{"unknown environment integration", `{"tenant_id":"t","environment_integration_id":"0f3b8e0e-0000-4000-8000-000000000000"}`, 400, "not an integration of this gateway"},
		{"bad tenant id", `{"tenant_id":"a b","integration":"acme"}`, 400, "tenant_id"},
		{"long tenant id", `{"tenant_id":"` + strings.Repeat("x", 257) + `","integration":"acme"}`, 400, "tenant_id"},
		{"unknown integration", `{"tenant_id":"t","integration":"nope"}`, 400, "not configured"},
		{"client credentials", `{"tenant_id":"t","integration":"machine"}`, 400, "nothing for an end user"},
		{"unknown account", `{"integrated_account_id":"missing"}`, 404, "does not exist"},
		{"disallowed redirect", `{"tenant_id":"t","integration":"acme","redirect_uri":"https://evil.example/cb"}`, 400, "not one of the allowed origins"},
		{"relative redirect", `{"tenant_id":"t","integration":"acme","redirect_uri":"/cb"}`, 400, "absolute"},
		{"bad scope", `{"tenant_id":"t","integration":"acme","scopes":["a b"]}`, 400, "scope"},
		{"malformed JSON", `{"tenant_id":`, 400, "malformed JSON"},
		{"unknown field", `{"tenant_id":"t","integration":"acme","admin":true}`, 400, "unknown field"},
		{"wrong type", `{"tenant_id":7,"integration":"acme"}`, 400, "tenant_id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := h.postJSON(h.public+"/link-token", c.body)
			if r.status != c.status {
				t.Fatalf("= %d %s, want %d", r.status, r.body, c.status)
			}
			var e wire.ErrorBody
			if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.StatusCode != c.status || e.Error != http.StatusText(c.status) {
				t.Fatalf("error body %s is not {statusCode,error,message}", r.body)
			}
			if !strings.Contains(e.Message, c.says) {
				t.Errorf("message %q does not say %q", e.Message, c.says)
			}
		})
	}
	// Nothing was created: the account is untouched and no event was written.
	if got := h.account(a.ID); got.Version != a.Version || got.Status != account.StatusActive {
		t.Errorf("account changed: %+v", got)
	}
	if ev := h.outbox(); len(ev) != 0 {
		t.Errorf("events written: %v", ev)
	}
}
