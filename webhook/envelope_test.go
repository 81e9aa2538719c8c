package webhook

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

func TestEnvelope(t *testing.T) {
	a := &account.Account{ID: "acc_1", TenantID: "t1", Integration: "hubspot", Method: account.MethodOAuth2,
		Status: account.StatusNeedsReauth, Credentials: account.Credentials{AccessToken: "at-secret-123", RefreshToken: "rt-secret-456"}}
	at := time.Date(2026, 3, 4, 5, 6, 7, 891_234_567, time.FixedZone("CET", 3600))
	ev := tokenstore.NewEvent(account.EventAuthenticationError, a, at)

	b, err := NewEnvelope(ev, "env_1", "wh_1").Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got["id"] != ev.ID || got["event"] != "integrated_account:authentication_error" ||
		got["environment_id"] != "env_1" || got["webhook_id"] != "wh_1" ||
		got["created_at"] != "2026-03-04T04:06:07.891Z" {
		t.Fatalf("envelope = %s", b)
	}
	p, _ := got["payload"].(map[string]any)
	if p["id"] != "acc_1" || p["status"] != "needs_reauth" {
		t.Fatalf("payload = %v", p)
	}
	for _, s := range []string{"at-secret-123", "rt-secret-456"} {
		if strings.Contains(string(b), s) {
			t.Fatalf("envelope carries a credential: %s", b)
		}
	}
	// Same event, same bytes: retries sign the same body.
	b2, _ := NewEnvelope(ev, "env_1", "wh_1").Marshal()
	if string(b) != string(b2) {
		t.Fatal("envelope is not stable")
	}
	empty, _ := NewEnvelope(tokenstore.Event{ID: "evt_x", Name: "test"}, "", "wh").Marshal()
	if !json.Valid(empty) {
		t.Fatalf("envelope without payload is not JSON: %s", empty)
	}
}
