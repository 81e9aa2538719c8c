package refresh

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/linkgate/linkgate/account"
)

// reauthLogs are the warn entries that announce a move to needs_reauth.
func reauthLogs(logs *observer.ObservedLogs, id string) []observer.LoggedEntry {
	var out []observer.LoggedEntry
	for _, e := range logs.FilterMessage("integrated account needs reauthorization").All() {
		if e.Level == zapcore.WarnLevel && e.ContextMap()["integrated_account_id"] == id {
			out = append(out, e)
		}
	}
	return out
}

// TestEveryMoveToNeedsReauthIsLoggedOnce: an api_key account refused with
// 401 and an OAuth account whose refresh is refused each log one warn line
// naming the account under integrated_account_id, with the method and the
// reason, however many requests fail afterwards.
func TestEveryMoveToNeedsReauthIsLoggedOnce(t *testing.T) {
	e := newEnv(t, nil)
	key := &account.Account{
		ID: "acc-key-log", TenantID: "t", Integration: e.integ.Name, Method: account.MethodAPIKey,
		Status: account.StatusActive, Credentials: account.Credentials{APIKey: "key-log-123456"},
	}
	e.remember("key-log-123456")
	if err := e.store.CreateAccount(context.Background(), key, nil); err != nil {
		t.Fatal(err)
	}
	key = e.get(key.ID)
	for range 3 {
		_, _, _ = e.r.Unauthorized(context.Background(), key, key.Credentials)
	}
	got := reauthLogs(e.logs, key.ID)
	if len(got) != 1 {
		t.Fatalf("api_key account: %d needs_reauth log entries, want 1", len(got))
	}
	if f := got[0].ContextMap(); f["authentication_method"] != "api_key" || f["code"] != "unauthorized" || f["from"] != "active" {
		t.Fatalf("api_key account's entry lacks method, code or previous status: %v", f)
	}

	oauth := e.connect("acc-oauth-log", e.clock.Now().Add(-time.Second))
	e.auth.RevokeSubject("user-" + oauth.ID)
	for range 3 {
		_, _ = e.r.Credentials(context.Background(), e.get(oauth.ID))
	}
	got = reauthLogs(e.logs, oauth.ID)
	if len(got) != 1 {
		t.Fatalf("oauth account: %d needs_reauth log entries, want 1", len(got))
	}
	if f := got[0].ContextMap(); f["authentication_method"] != "oauth2" || f["code"] != "invalid_grant" {
		t.Fatalf("oauth account's entry lacks method or code: %v", f)
	}
	// No entry anywhere names the account under another field.
	for _, entry := range e.logs.All() {
		if _, ok := entry.ContextMap()["account"]; ok {
			t.Fatalf("entry %q names the account under \"account\"", entry.Message)
		}
	}
}
