package linkgate_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/webhook"
)

// importOAuth imports an oauth account for a fresh grant of user, with the
// given access-token expiry, and returns its id and the grant.
func (w *world) importOAuth(t *testing.T, user string, expiry time.Time) (string, string, string) {
	t.Helper()
	tok := w.as.Authorize(t, oauthClient, w.base+callbackPath, user, nil)
	id := w.importAccount(map[string]any{"tenant_id": "t-" + user, "integration": "oauth",
		"context": map[string]any{"oauth": map[string]any{"token": map[string]any{
			"access_token": tok.AccessToken, "refresh_token": tok.RefreshToken,
			"expiry": expiry.UTC().Format(time.RFC3339)}}}})
	return id, tok.AccessToken, tok.RefreshToken
}

// events returns the webhook envelopes received so far with the given event
// name and account id, after checking every delivery's signature with the
// configured secret.
func (w *world) events(t *testing.T, name, accountID string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, d := range w.hooks.Deliveries() {
		if err := webhook.Verify([]string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, d.Header, d.Body, 5*time.Minute); err != nil {
			t.Errorf("a delivery does not verify: %v", err)
		}
		var env map[string]any
		if err := json.Unmarshal(d.Body, &env); err != nil {
			t.Fatalf("delivery body: %v", err)
		}
		p, _ := env["payload"].(map[string]any)
		if env["event"] == name && p["id"] == accountID {
			out = append(out, env)
		}
	}
	return out
}

// waitEvents waits until n events of name for accountID have arrived.
func (w *world) waitEvents(t *testing.T, name, accountID string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := w.events(t, name, accountID)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s events for %s after 15s, want %d", len(got), name, accountID, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (w *world) proxyAs(t *testing.T, id, path string) (int, []byte) {
	t.Helper()
	return w.do("GET", "/proxy"+path+"?integrated_account_id="+id, nil)
}

func TestExpiredTokenIsRefreshedOnceForAStampede(t *testing.T) {
	w := newWorld(t)
	id, oldAccess, _ := w.importOAuth(t, "stampede", time.Now().Add(-time.Minute))
	w.as.ResetCounts()

	const n = 300
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i], _ = w.proxyAs(t, id, "/me")
		}()
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Fatalf("request %d: status %d", i, s)
		}
	}
	if calls := w.as.TokenCalls("refresh_token"); calls != 1 {
		t.Fatalf("%d refresh calls for %d concurrent requests, want 1", calls, n)
	}
	last, _ := w.oauth.Last()
	if last.Header.Get("Authorization") == "Bearer "+oldAccess {
		t.Error("the upstream still got the expired token")
	}
	// The rotated refresh token was kept: a later forced refresh works.
	status, body := w.do("POST", "/integrated-account/refresh-credentials", map[string]any{"id": id})
	if status != 200 || !strings.Contains(string(body), `"success":true`) {
		t.Fatalf("forced refresh after rotation: %d %s", status, body)
	}
}

func TestUpstream401RefreshesAndRetriesOnce(t *testing.T) {
	w := newWorld(t)
	id, access, _ := w.importOAuth(t, "early", time.Now().Add(time.Hour))
	// The provider drops the access token early; the refresh token still works.
	w.as.ExpireAccessToken(access)
	w.as.ResetCounts()
	w.oauth.Reset()

	status, body := w.do("POST", "/proxy/echo/retry?integrated_account_id="+id, `{"replayed":true}`)
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	if calls := w.as.TokenCalls("refresh_token"); calls != 1 {
		t.Errorf("%d refresh calls, want 1", calls)
	}
	reqs := w.oauth.Requests()
	if len(reqs) != 2 {
		t.Fatalf("upstream got %d requests, want the first and one retry", len(reqs))
	}
	if string(reqs[1].Body) != `{"replayed":true}` {
		t.Errorf("the retry's body = %q", reqs[1].Body)
	}
	if reqs[0].Header.Get("Authorization") == reqs[1].Header.Get("Authorization") {
		t.Error("the retry used the refused token")
	}
	if len(w.events(t, "integrated_account:authentication_error", id)) != 0 {
		t.Error("a healed 401 raised an alarm")
	}
}

func TestRevokedGrantNeedsReauthWithOneAlarm(t *testing.T) {
	w := newWorld(t)
	id, _, _ := w.importOAuth(t, "revoked", time.Now().Add(time.Hour))
	w.waitEvents(t, "integrated_account:active", id, 1)
	w.as.RevokeSubject("revoked")

	// 1,000 callers hit the revoked account at once: one incident. On a
	// busy machine with the race detector these calls take long; each gets
	// a generous deadline of its own instead of the harness client's, and
	// the goroutines only record what they got (t.Fatal belongs to the
	// test's goroutine).
	const n = 1000
	client := &http.Client{Transport: w.client.Transport}
	type answer struct {
		status int
		body   string
		err    error
	}
	answers := make([]answer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, "GET", w.base+"/proxy/contacts?integrated_account_id="+id, nil)
			if err != nil {
				answers[i].err = err
				return
			}
			req.Header.Set("Authorization", "Bearer "+apiToken)
			resp, err := client.Do(req)
			if err != nil {
				answers[i].err = err
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			answers[i] = answer{status: resp.StatusCode, body: string(body), err: err}
		}()
	}
	wg.Wait()
	wrong := map[string]int{}
	for _, a := range answers {
		if a.err != nil {
			wrong["error: "+a.err.Error()]++
		} else if a.status != http.StatusUnauthorized {
			wrong[fmt.Sprintf("status %d: %q", a.status, a.body)]++
		}
	}
	for what, count := range wrong {
		t.Errorf("%d of %d calls: %s, want 401", count, n, what)
	}

	status, body := w.do("GET", "/integrated-account/"+id, nil)
	m := mustJSON(t, body)
	if status != 200 || m["status"] != "needs_reauth" || m["last_error"] == nil {
		t.Fatalf("account after revocation: %s", body)
	}

	// Now it fails fast: no upstream call, no token call.
	w.oauth.Reset()
	w.as.ResetCounts()
	status, body = w.do("GET", "/proxy/contacts?integrated_account_id="+id, nil)
	if status != http.StatusUnauthorized || !strings.Contains(string(body), "integrated account needs reauthorization") || !strings.Contains(string(body), id) {
		t.Fatalf("fail fast: %d %s", status, body)
	}
	if w.oauth.Count() != 0 || w.as.TokenCalls("refresh_token") != 0 {
		t.Errorf("a needs_reauth account reached the upstream (%d) or the token endpoint (%d)", w.oauth.Count(), w.as.TokenCalls("refresh_token"))
	}

	// Every call has answered, so every event those calls caused is in the
	// outbox. An account's events reach an endpoint in commit order, so
	// once a later event of the account (a context change made now) has
	// arrived, a second alarm from the revocation would have arrived
	// before it.
	if status, body := w.do("PATCH", "/integrated-account/"+id, map[string]any{"context": map[string]any{"marker": "after-the-calls"}}); status != http.StatusOK {
		t.Fatalf("changing the account's context: %d %s", status, body)
	}
	w.waitEvents(t, "integrated_account:updated", id, 1)
	alarms := w.events(t, "integrated_account:authentication_error", id)
	if len(alarms) != 1 {
		t.Fatalf("%d authentication_error events, want exactly 1", len(alarms))
	}
	if order := w.eventOrder(t, id); strings.Index(order, "authentication_error") > strings.Index(order, "updated") {
		t.Fatalf("the alarm arrived after a later event of the account: %s", order)
	}
	p := alarms[0]["payload"].(map[string]any)
	if p["status"] != "needs_reauth" || p["last_error"] == nil {
		t.Errorf("payload = %v", p)
	}
	raw, _ := json.Marshal(alarms[0])
	if strings.Contains(string(raw), "access_token") || strings.Contains(string(raw), "refresh_token") {
		t.Errorf("the alarm carries credentials: %s", raw)
	}
}

// eventOrder lists the names of the account's events in the order the
// receiver got them, for a failure message or an order check.
func (w *world) eventOrder(t *testing.T, accountID string) string {
	t.Helper()
	var names []string
	for _, d := range w.hooks.Deliveries() {
		var env struct {
			Event   string         `json:"event"`
			Payload map[string]any `json:"payload"`
		}
		if err := json.Unmarshal(d.Body, &env); err != nil {
			t.Fatalf("delivery body: %v", err)
		}
		if env.Payload["id"] == accountID {
			names = append(names, strings.TrimPrefix(env.Event, "integrated_account:"))
		}
	}
	return strings.Join(names, " ")
}

func TestAPIKeyUpstream401NeedsReauthThenReactivates(t *testing.T) {
	w := newWorld(t)
	id := w.importAccount(map[string]any{"tenant_id": "k", "integration": "keyed",
		"context": map[string]any{"api_key": upstreamKey}})
	w.keyed.ForceStatus(http.StatusUnauthorized, 1)
	if status, _ := w.proxyAs(t, id, "/contacts"); status != http.StatusUnauthorized {
		t.Fatalf("status %d, want the upstream's 401", status)
	}
	_, body := w.do("GET", "/integrated-account/"+id, nil)
	if mustJSON(t, body)["status"] != "needs_reauth" {
		t.Fatalf("after a 401: %s", body)
	}
	w.waitEvents(t, "integrated_account:authentication_error", id, 1)

	// api_key accounts keep being tried: a later success heals them.
	if status, body := w.proxyAs(t, id, "/contacts"); status != http.StatusOK {
		t.Fatalf("later call: %d %s", status, body)
	}
	_, body = w.do("GET", "/integrated-account/"+id, nil)
	if m := mustJSON(t, body); m["status"] != "active" || m["last_error"] != nil {
		t.Fatalf("after a success: %s", body)
	}
	w.waitEvents(t, "integrated_account:reactivated", id, 1)
}
