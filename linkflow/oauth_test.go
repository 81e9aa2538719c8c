package linkflow_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/account"
)

func TestOAuthStartSendsStateAndPKCE(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	lt := h.linkToken(map[string]any{"tenant_id": "t", "integration": "acme", "scopes": []string{"deals.read", "contacts.read"}})
	u := h.startOAuth(lt.LinkToken)
	if got := u.Scheme + "://" + u.Host + u.Path; got != h.auth.AuthorizeURL() {
		t.Fatalf("redirected to %s, want the authorize endpoint", got)
	}
	q := u.Query()
	for k, want := range map[string]string{
		"client_id": clientID, "redirect_uri": h.public + "/connect-account/callback", "response_type": "code",
		"scope": "contacts.read deals.read", "code_challenge_method": "S256",
	} {
		if q.Get(k) != want {
			t.Errorf("%s = %q, want %q", k, q.Get(k), want)
		}
	}
	if len(q.Get("state")) < 32 || len(q.Get("code_challenge")) != 43 {
		t.Errorf("state %q / code_challenge %q too short", q.Get("state"), q.Get("code_challenge"))
	}
	if again := h.startOAuth(lt.LinkToken).Query(); again.Get("state") == q.Get("state") || again.Get("code_challenge") == q.Get("code_challenge") {
		t.Errorf("two presses share a state or a verifier")
	}
}

func TestOAuthNewConnection(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	lt := h.linkToken(map[string]any{"tenant_id": "tenant-n", "integration": "acme", "context": map[string]any{"plan": "pro"}})
	r := h.connectOAuth(lt.LinkToken, "bob")
	if r.status != http.StatusOK || !strings.Contains(r.body, "Connection successful. You can close this tab.") {
		t.Fatalf("callback = %d:\n%s", r.status, r.body)
	}
	assertPageHeaders(t, r)
	accts := h.accountsOf("tenant-n")
	if len(accts) != 1 {
		t.Fatalf("%d accounts, want 1", len(accts))
	}
	a := h.account(accts[0].ID)
	if a.Status != account.StatusActive || a.Method != account.MethodOAuth2 || a.Integration != "acme" ||
		a.Context["plan"] != "pro" || a.Context["upstream_user_id"] != "bob" || a.Credentials.RefreshToken == "" || a.Credentials.Expiry.IsZero() {
		t.Errorf("account = %+v", a)
	}
	if sub, ok := h.auth.ValidAccessToken(a.Credentials.AccessToken); !ok || sub != "bob" {
		t.Errorf("stored access token is not bob's live token")
	}
	p := postedBy(t, r.body)
	if p.Message["result"] != "success" || p.Message["integrated_account_id"] != a.ID || p.Message["integration"] != "acme" {
		t.Errorf("posted %v", p.Message)
	}
	if ev := h.outbox(); strings.Join(ev, ",") != account.EventCreated+","+account.EventActive {
		t.Errorf("events = %v, want created, active", ev)
	}
	if h.commits.Load() != 1 {
		t.Errorf("OnCommit called %d times", h.commits.Load())
	}
	if r := h.get(lt.URL); r.status != http.StatusGone {
		t.Errorf("the spent link token still opens the page: %d", r.status)
	}
	h.assertNotLogged(lt.LinkToken, a.Credentials.AccessToken, a.Credentials.RefreshToken, clientSecret)
}

func TestOAuthReconnectOfRevokedAccount(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	a, old := h.seedAccount("alice", account.StatusNeedsReauth, map[string]any{"upstream_user_id": "alice", "stale": "yes"})
	h.auth.RevokeSubject("alice")
	lt := h.linkToken(map[string]any{"integrated_account_id": a.ID, "context": map[string]any{"plan": "new"}})
	r := h.connectOAuth(lt.LinkToken, "alice")
	if r.status != http.StatusOK {
		t.Fatalf("callback = %d:\n%s", r.status, r.body)
	}
	got := h.account(a.ID)
	if got.Status != account.StatusActive || got.LastError != nil || got.Credentials.RefreshToken == old.refresh || got.Credentials.AccessToken == old.access {
		t.Errorf("reconnected account = %+v", got)
	}
	if _, ok := h.auth.ValidAccessToken(got.Credentials.AccessToken); !ok {
		t.Errorf("the new access token is not live")
	}
	// Without persist_previous_context the old context goes; the identity stays.
	if got.Context["stale"] != nil || got.Context["plan"] != "new" || got.Context["upstream_user_id"] != "alice" {
		t.Errorf("context = %v", got.Context)
	}
	if n := len(h.accountsOf(a.TenantID)); n != 1 {
		t.Errorf("%d accounts, want the same one", n)
	}
	if ev := h.outbox(); strings.Join(ev, ",") != account.EventUpdated+","+account.EventActive {
		t.Errorf("events = %v, want updated, active", ev)
	}
	if p := postedBy(t, r.body); p.Message["integrated_account_id"] != a.ID {
		t.Errorf("posted %v", p.Message)
	}
}

func TestOAuthReconnectAsAnotherUserIsRefused(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	a, old := h.seedAccount("alice", account.StatusNeedsReauth, map[string]any{"upstream_user_id": "alice"})
	lt := h.linkToken(map[string]any{"integrated_account_id": a.ID})
	r := h.connectOAuth(lt.LinkToken, "mallory")
	if r.status != http.StatusConflict || !strings.Contains(r.body, "different user") {
		t.Fatalf("callback as mallory = %d:\n%s", r.status, r.body)
	}
	if p := postedBy(t, r.body); p.Message["result"] != "error" || p.Message["error_type"] != "connection_error" {
		t.Errorf("posted %v", p.Message)
	}
	got := h.account(a.ID)
	if got.Status != account.StatusNeedsReauth || got.Credentials.AccessToken != old.access || got.Credentials.RefreshToken != old.refresh || got.Version != a.Version {
		t.Errorf("the account changed: %+v", got)
	}
	if ev := h.outbox(); len(ev) != 0 {
		t.Errorf("events = %v", ev)
	}
	// The link is not spent: alice can still use it.
	if r := h.connectOAuth(lt.LinkToken, "alice"); r.status != http.StatusOK {
		t.Errorf("alice after mallory = %d", r.status)
	}
}

func TestOAuthPersistPreviousContext(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	a, _ := h.seedAccount("carol", account.StatusActive, map[string]any{"keep": "me", "plan": "old"})
	lt := h.linkToken(map[string]any{"integrated_account_id": a.ID, "persist_previous_context": true, "context": map[string]any{"plan": "new"}})
	if r := h.connectOAuth(lt.LinkToken, "carol"); r.status != http.StatusOK {
		t.Fatalf("callback = %d:\n%s", r.status, r.body)
	}
	got := h.account(a.ID)
	if got.Context["keep"] != "me" || got.Context["plan"] != "new" || got.Context["upstream_user_id"] != "carol" {
		t.Errorf("context = %v", got.Context)
	}
	if ev := h.outbox(); strings.Join(ev, ",") != account.EventUpdated+","+account.EventActive {
		t.Errorf("events = %v, want updated, active", ev)
	}
}

func TestOAuthDeniedLeavesLinkUsable(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	lt := h.linkToken(map[string]any{"tenant_id": "tenant-d", "integration": "acme", "redirect_uri": appOriginForHandlers + "/cb"})
	cb := h.consent(h.startOAuth(lt.LinkToken), "dan", "deny")
	if cb.Query().Get("error") != "access_denied" {
		t.Fatalf("provider redirected with %s", cb.RawQuery)
	}
	r := h.get(cb.String())
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, "denied") {
		t.Fatalf("denied callback = %d:\n%s", r.status, r.body)
	}
	p := postedBy(t, r.body)
	if p.Message["result"] != "error" || p.Message["error_type"] != "connection_error" || len(p.Targets) != 1 || p.Targets[0] != appOriginForHandlers {
		t.Errorf("posted %v to %v", p.Message, p.Targets)
	}
	if len(h.accountsOf("tenant-d")) != 0 || len(h.outbox()) != 0 {
		t.Fatalf("a denied authorization changed something")
	}
	if r := h.get(lt.URL); r.status != http.StatusOK {
		t.Fatalf("link token after denial = %d", r.status)
	}
	if r := h.connectOAuth(lt.LinkToken, "dan"); r.status != http.StatusOK {
		t.Errorf("second try = %d", r.status)
	}
}

func TestOAuthCallbackRefusesForgedAndReplayedAnswers(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	lt := h.linkToken(map[string]any{"tenant_id": "tenant-r", "integration": "acme"})
	cb := h.consent(h.startOAuth(lt.LinkToken), "erin", "allow")

	forged := *cb
	q := forged.Query()
	q.Set("state", "forged-state-value")
	forged.RawQuery = q.Encode()
	for name, c := range map[string]struct {
		u      string
		status int
	}{
		// A state this browser did not start is refused before the store
		// is asked about it.
		"forged state":  {forged.String(), http.StatusForbidden},
		"missing state": {h.public + "/connect-account/callback?code=" + url.QueryEscape(cb.Query().Get("code")), http.StatusBadRequest},
	} {
		if r := h.get(c.u); r.status != c.status || postedBy(t, r.body).Message["result"] != "error" {
			t.Errorf("%s = %d, want %d:\n%s", name, r.status, c.status, r.body)
		}
	}
	if len(h.accountsOf("tenant-r")) != 0 {
		t.Fatal("a forged state created an account")
	}

	head, _ := http.NewRequest(http.MethodHead, h.local(cb.String()), nil)
	if r := h.do(head); r.status != http.StatusMethodNotAllowed {
		t.Errorf("HEAD callback = %d, want 405", r.status)
	}
	if r := h.get(cb.String()); r.status != http.StatusOK {
		t.Fatalf("the real callback = %d:\n%s", r.status, r.body)
	}
	h.outbox()
	if r := h.get(cb.String()); r.status != http.StatusBadRequest {
		t.Errorf("replayed callback = %d", r.status)
	}

	// A used code presented again with a fresh, valid state is refused by
	// the provider, and nothing changes.
	lt2 := h.linkToken(map[string]any{"tenant_id": "tenant-r2", "integration": "acme"})
	fresh := h.startOAuth(lt2.LinkToken).Query().Get("state")
	replay := url.Values{"state": {fresh}, "code": {cb.Query().Get("code")}}
	r := h.get(h.public + "/connect-account/callback?" + replay.Encode())
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, "refused the sign-in") {
		t.Fatalf("replayed code = %d:\n%s", r.status, r.body)
	}
	if len(h.accountsOf("tenant-r2")) != 0 || len(h.outbox()) != 0 || len(h.accountsOf("tenant-r")) != 1 {
		t.Errorf("a replayed code changed something")
	}
	if r := h.get(lt2.URL); r.status != http.StatusOK {
		t.Errorf("link token after a replayed code = %d", r.status)
	}

	// A state is good for StateTTL only.
	lt3 := h.linkToken(map[string]any{"tenant_id": "tenant-r3", "integration": "acme"})
	late := h.consent(h.startOAuth(lt3.LinkToken), "erin", "allow")
	h.clock.Advance(11 * time.Minute)
	if r := h.get(late.String()); r.status != http.StatusBadRequest || !strings.Contains(r.body, "took too long") {
		t.Errorf("late callback = %d:\n%s", r.status, r.body)
	}
	if len(h.accountsOf("tenant-r3")) != 0 {
		t.Errorf("a late callback created an account")
	}
	h.assertNotLogged(cb.Query().Get("code"), cb.Query().Get("state"), late.Query().Get("code"), fresh, lt.LinkToken, lt2.LinkToken)
}

func TestOAuthRacingCallbacksOneWins(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	lt := h.linkToken(map[string]any{"tenant_id": "tenant-race", "integration": "acme"})
	cb := h.local(h.consent(h.startOAuth(lt.LinkToken), "fay", "allow").String())

	const n = 6
	statuses := make([]int, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := noRedirects.Do(withCookies(cb, h.agent))
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			statuses[i] = resp.StatusCode
		}()
	}
	close(start)
	wg.Wait()
	ok := 0
	for _, s := range statuses {
		switch s {
		case http.StatusOK:
			ok++
		case http.StatusBadRequest:
		default:
			t.Errorf("a racing callback answered %d", s)
		}
	}
	if ok != 1 {
		t.Fatalf("%d callbacks succeeded (%v), want exactly 1", ok, statuses)
	}
	if n := len(h.accountsOf("tenant-race")); n != 1 {
		t.Errorf("%d accounts", n)
	}
	if ev := h.outbox(); strings.Join(ev, ",") != account.EventCreated+","+account.EventActive {
		t.Errorf("events = %v", ev)
	}
}

func TestOAuthIssuerIsChecked(t *testing.T) {
	h := newHarness(t, harnessOptions{issuer: true})
	lt := h.linkToken(map[string]any{"tenant_id": "tenant-iss", "integration": "acme"})
	cb := h.consent(h.startOAuth(lt.LinkToken), "gus", "allow")
	if cb.Query().Get("iss") != h.auth.URL() {
		t.Fatalf("the provider sent no iss: %s", cb.RawQuery)
	}
	mixed := *cb
	q := mixed.Query()
	q.Set("iss", "https://other-provider.example")
	mixed.RawQuery = q.Encode()
	if r := h.get(mixed.String()); r.status != http.StatusBadRequest || !strings.Contains(r.body, "does not come from acme") {
		t.Fatalf("wrong iss = %d:\n%s", r.status, r.body)
	}
	if len(h.accountsOf("tenant-iss")) != 0 {
		t.Fatal("a mixed-up answer created an account")
	}
	// The state was spent by the refused answer; a fresh attempt works.
	if r := h.connectOAuth(lt.LinkToken, "gus"); r.status != http.StatusOK {
		t.Errorf("fresh attempt = %d:\n%s", r.status, r.body)
	}
}

func TestOAuthTwoAuthorizationsOfOneLinkOneWins(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	lt := h.linkToken(map[string]any{"tenant_id": "tenant-two", "integration": "acme"})
	// The user pressed connect in two tabs and approved both.
	cbs := []string{
		h.local(h.consent(h.startOAuth(lt.LinkToken), "hal", "allow").String()),
		h.local(h.consent(h.startOAuth(lt.LinkToken), "hal", "allow").String()),
	}
	statuses := make([]int, len(cbs))
	var wg sync.WaitGroup
	for i, cb := range cbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := noRedirects.Do(withCookies(cb, h.agent))
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			statuses[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	ok, refused := 0, 0
	for _, s := range statuses {
		switch s {
		case http.StatusOK:
			ok++
		case http.StatusConflict, http.StatusGone:
			refused++
		}
	}
	if ok != 1 || refused != 1 {
		t.Fatalf("statuses %v, want one success and one 4xx", statuses)
	}
	if n := len(h.accountsOf("tenant-two")); n != 1 {
		t.Errorf("%d accounts, want 1", n)
	}
	if ev := h.outbox(); strings.Join(ev, ",") != account.EventCreated+","+account.EventActive {
		t.Errorf("events = %v", ev)
	}
}

// withCookies is a GET of u carrying a's cookies, for requests sent from
// several goroutines at once.
func withCookies(u string, a *agent) *http.Request {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Cookie", a.cookieHeader())
	return req
}
