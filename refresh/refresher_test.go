package refresh

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/testenv"
	"github.com/linkgate/linkgate/tokenstore"
)

func TestValidTokenIsUsedWithoutATokenCall(t *testing.T) {
	e := newEnv(t, nil)
	a := e.connect("acc-valid", e.clock.Now().Add(time.Hour))
	c, err := e.r.Credentials(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	if c.AccessToken != a.Credentials.AccessToken {
		t.Fatal("a valid token was not injected as is")
	}
	// Just outside the default 60s skew: still no call.
	a = e.setExpiry(a.ID, e.clock.Now().Add(61*time.Second))
	if _, err := e.r.Credentials(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if n := e.refreshCalls(); n != 0 {
		t.Fatalf("token endpoint called %d times for a valid token", n)
	}
}

func TestTokenInsideSkewIsUsedWhileOneBackgroundRefreshRuns(t *testing.T) {
	e := newEnv(t, nil)
	a := e.connect("acc-skew", e.clock.Now().Add(30*time.Second))
	// Hold the answer back so that many requests arrive during the refresh.
	e.auth.SetFault(testenv.Fault{Delay: 300 * time.Millisecond, Count: 1})
	for range 50 {
		c, err := e.r.Credentials(context.Background(), a)
		if err != nil {
			t.Fatal(err)
		}
		if c.AccessToken != a.Credentials.AccessToken {
			t.Fatal("a token inside the skew was not served while refreshing")
		}
	}
	eventually(t, "the background refresh is stored", func() bool {
		return e.get(a.ID).Credentials.AccessToken != a.Credentials.AccessToken
	})
	if n := e.refreshCalls(); n != 1 {
		t.Fatalf("token endpoint called %d times, want 1", n)
	}
	got := e.get(a.ID)
	if got.Credentials.RefreshToken == a.Credentials.RefreshToken {
		t.Fatal("the rotated refresh token was not stored")
	}
	if !got.Credentials.Expiry.After(e.clock.Now().Add(50 * time.Minute)) {
		t.Fatalf("new expiry %v is not about an hour from now", got.Credentials.Expiry)
	}
}

func TestExpiredTokenWaitsForTheRefresh(t *testing.T) {
	e := newEnv(t, nil)
	a := e.connect("acc-expired", e.clock.Now().Add(-time.Minute))
	// The gateway's clock runs a day ahead of the provider's: expires_in
	// must count from the gateway's receipt time, not the provider's.
	e.clock.Add(24 * time.Hour)
	a = e.setExpiry(a.ID, e.clock.Now().Add(-time.Minute))
	c, err := e.r.Credentials(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	stored := e.get(a.ID)
	if c.AccessToken == a.Credentials.AccessToken || c.AccessToken != stored.Credentials.AccessToken {
		t.Fatal("an expired token was not replaced by the stored new one")
	}
	if _, ok := e.auth.ValidAccessToken(c.AccessToken); !ok {
		t.Fatal("the new access token is not valid at the auth server")
	}
	if stored.Credentials.RefreshToken == a.Credentials.RefreshToken {
		t.Fatal("the rotated refresh token was not committed")
	}
	if left := stored.Credentials.Expiry.Sub(e.clock.Now()); left < 59*time.Minute || left > time.Hour {
		t.Fatalf("new token expires %v after the gateway's now, want about an hour", left)
	}
}

func TestCallerWhoGivesUpDoesNotAbortTheRefresh(t *testing.T) {
	e := newEnv(t, nil)
	a := e.connect("acc-giveup", e.clock.Now().Add(-time.Minute))
	// The server rotates the grant at once, then answers after a while.
	e.auth.SetFault(testenv.Fault{Delay: 500 * time.Millisecond, Count: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := e.r.Credentials(ctx, a)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting caller got %v, want its own deadline", err)
	}
	// The answer holds the only copy of the new refresh token: it must land.
	eventually(t, "the refresh finishes without the caller", func() bool {
		return e.get(a.ID).Credentials.RefreshToken != a.Credentials.RefreshToken
	})
	c, err := e.r.Credentials(context.Background(), e.get(a.ID))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := e.auth.ValidAccessToken(c.AccessToken); !ok {
		t.Fatal("the refreshed access token is not valid")
	}
	if n := e.refreshCalls(); n != 1 {
		t.Fatalf("token endpoint called %d times, want 1", n)
	}
	if got := e.get(a.ID).Status; got != account.StatusActive {
		t.Fatalf("status %s after a completed refresh", got)
	}
}

func TestThousandCallersOnAnExpiredTokenMakeOneTokenCall(t *testing.T) {
	e := newEnv(t, nil)
	a := e.connect("acc-stampede", e.clock.Now().Add(-time.Second))
	var wg sync.WaitGroup
	tokens := make([]string, 1000)
	errs := make([]error, 1000)
	for i := range 1000 {
		wg.Go(func() {
			c, err := e.r.Credentials(context.Background(), a)
			tokens[i], errs[i] = c.AccessToken, err
		})
	}
	wg.Wait()
	want := e.get(a.ID).Credentials.AccessToken
	for i := range 1000 {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if tokens[i] != want {
			t.Fatalf("caller %d got another token than the stored one", i)
		}
	}
	if n := e.refreshCalls(); n != 1 {
		t.Fatalf("token endpoint called %d times, want 1", n)
	}
}

func TestTwoInstancesSharingAStoreRefreshOnce(t *testing.T) {
	e := newEnv(t, nil)
	a := e.connect("acc-cluster", e.clock.Now().Add(-time.Second))
	// A second instance: its own store handle on the same file, its own
	// refresher. The stale account each caller holds is the same.
	other := e.newRefresherOn(e.openStore(), nil)
	t.Cleanup(func() { _ = other.Stop() })
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string]int{}
	for i := range 400 {
		r := e.r
		if i%2 == 1 {
			r = other
		}
		wg.Go(func() {
			c, err := r.Credentials(context.Background(), a)
			if err != nil {
				t.Errorf("caller %d: %v", i, err)
				return
			}
			mu.Lock()
			got[c.AccessToken]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if n := e.refreshCalls(); n != 1 {
		t.Fatalf("token endpoint called %d times by two instances, want 1", n)
	}
	if len(got) != 1 {
		t.Fatalf("callers got %d different tokens, want 1", len(got))
	}
	if e.get(a.ID).Status != account.StatusActive {
		t.Fatal("a rotation race killed the account")
	}
}

func TestRefreshRereadsTheStoreUnderTheLock(t *testing.T) {
	e := newEnv(t, nil)
	stale := e.connect("acc-reread", e.clock.Now().Add(-time.Second))
	other := e.newRefresherOn(e.openStore(), nil)
	if _, err := other.Credentials(context.Background(), stale); err != nil {
		t.Fatal(err)
	}
	// This instance still holds the stale account (as a cache would).
	c, err := e.r.Credentials(context.Background(), stale)
	if err != nil {
		t.Fatal(err)
	}
	if n := e.refreshCalls(); n != 1 {
		t.Fatalf("token endpoint called %d times: the stale refresh token was presented again", n)
	}
	if c.AccessToken != e.get(stale.ID).Credentials.AccessToken {
		t.Fatal("the other instance's token was not used")
	}
}

func TestAnswerWithoutRefreshTokenKeepsTheOldOne(t *testing.T) {
	// fosite always rotates, so this is the one place the rule is checked
	// on the conversion itself.
	res := &tokenResult{tok: tokenWith("new-access", ""), received: time.Unix(1000, 0)}
	c := account.Credentials{AccessToken: "old", RefreshToken: "keep-me"}
	res.apply(&c)
	if c.RefreshToken != "keep-me" || c.AccessToken != "new-access" {
		t.Fatalf("credentials after an answer without refresh_token: %+v", c)
	}
	if !c.Expiry.Equal(time.Unix(1000+3600, 0)) {
		t.Fatalf("expiry %v not counted from receipt", c.Expiry)
	}
}

func TestLostAnswerIsNotRetriedAndTheNextAttemptFindsOut(t *testing.T) {
	// The answer comes after the hard limit: it is lost for good.
	e := newEnv(t, func(o *Options) {
		o.TokenTimeout = 500 * time.Millisecond
		o.TokenHardLimit = 500 * time.Millisecond
		o.LockTimeout = lockTimeout
	})
	a := e.connect("acc-lost", e.clock.Now().Add(-time.Second))
	// The server rotates and then answers too late.
	e.auth.SetFault(testenv.Fault{Delay: 5 * time.Second, Count: 1})
	_, err := e.r.Credentials(context.Background(), a)
	var re *Error
	if !errors.As(err, &re) || re.Class != Transient || re.Code != "timeout" {
		t.Fatalf("got %v, want a transient timeout", err)
	}
	if n := e.refreshCalls(); n != 1 {
		t.Fatalf("token endpoint called %d times in one attempt: the refresh token was presented twice", n)
	}
	if !e.logged(zapcore.WarnLevel, "answer was lost") {
		t.Fatal("the uncertain outcome was not logged")
	}
	if got := e.get(a.ID); got.Status != account.StatusActive || len(e.eventsOf(a.ID)) != 0 {
		t.Fatalf("a lost answer changed the account: %s %v", got.Status, e.eventsOf(a.ID))
	}
	// The next attempt presents the same token; the provider has rotated
	// it away and says invalid_grant: now the account needs reauth.
	e.clock.Add(time.Second) // past the test's 5ms back-off cap
	if e.r.backingOff(a.ID, e.clock.Now()) != nil {
		t.Fatal("the back-off outlasts its cap")
	}
	// On a busy machine the second call may itself outlast its 500 ms
	// limits; that is another timeout, not the answer this test waits for:
	// try again past the back-off until the provider's verdict arrives.
	eventually(t, "the second attempt gets the provider's answer", func() bool {
		_, err = e.r.Credentials(context.Background(), a)
		if errors.As(err, &re) && re.Class == Transient && re.Code == "timeout" {
			e.clock.Add(time.Second)
			return false
		}
		return true
	})
	if !errors.Is(err, ErrNeedsReauth) {
		t.Fatalf("second attempt: %v, want ErrNeedsReauth", err)
	}
	// It is reported as a lost answer, not as the user's revocation, and
	// the log said the old token would be sent again.
	if got := e.get(a.ID); got.Status != account.StatusNeedsReauth || got.LastError == nil || got.LastError.Code != CodeAnswerLost {
		t.Fatalf("account after invalid_grant: %s %+v", got.Status, got.LastError)
	}
	if !e.logged(zapcore.WarnLevel, "old refresh token will be sent again") {
		t.Fatal("the log did not say that the old refresh token would be sent again")
	}
}

func TestRevokedGrantMovesToNeedsReauthOnce(t *testing.T) {
	var commits atomic.Int64
	e := newEnv(t, func(o *Options) { o.OnCommit = func() { commits.Add(1) } })
	a := e.connect("acc-revoked", e.clock.Now().Add(-time.Second))
	e.auth.RevokeSubject("user-" + a.ID)
	_, err := e.r.Credentials(context.Background(), a)
	var re *Error
	if !errors.Is(err, ErrNeedsReauth) || !errors.As(err, &re) || re.Class != Revoked || re.Code != "invalid_grant" {
		t.Fatalf("got %v, want a revoked invalid_grant", err)
	}
	e.assertNoSecretIn(err)
	got := e.get(a.ID)
	if got.Status != account.StatusNeedsReauth || got.LastError == nil || got.LastError.Code != "invalid_grant" || got.LastError.At.IsZero() {
		t.Fatalf("account: %s %+v", got.Status, got.LastError)
	}
	if !got.NextProbeAt.After(e.clock.Now()) {
		t.Fatal("no probe scheduled")
	}
	// Many more requests: fail fast, no token call, no second alarm.
	calls := e.refreshCalls()
	for range 20 {
		if _, err := e.r.Credentials(context.Background(), got); !errors.Is(err, ErrNeedsReauth) {
			t.Fatalf("request on a needs_reauth account: %v", err)
		}
	}
	if e.refreshCalls() != calls {
		t.Fatal("requests on a needs_reauth account called the token endpoint")
	}
	if evs := e.eventsOf(a.ID); !slices.Equal(evs, []string{account.EventAuthenticationError}) {
		t.Fatalf("events %v, want one authentication_error", evs)
	}
	// The alarm's commit woke the dispatcher once; writes without events
	// (the probe schedule) did not.
	if n := commits.Load(); n != 1 {
		t.Fatalf("OnCommit called %d times, want once, for the alarm", n)
	}
}

func TestProbeRunsOncePerIntervalAndHealsAMisclassifiedAccount(t *testing.T) {
	e := newEnv(t, nil)
	a := e.connect("acc-probe", e.clock.Now().Add(-time.Second))
	// Marked needs_reauth although the grant is fine: a misclassification.
	if err := e.r.markFailed(context.Background(), a, a.Credentials, &account.Error{Code: "unauthorized", Message: "401"}); !errors.Is(err, ErrNeedsReauth) {
		t.Fatal(err)
	}
	a = e.get(a.ID)
	if _, err := e.r.Credentials(context.Background(), a); !errors.Is(err, ErrNeedsReauth) {
		t.Fatalf("before the probe interval: %v", err)
	}
	if e.refreshCalls() != 0 {
		t.Fatal("probed before the interval")
	}
	e.clock.Add(e.integ.Probe() + time.Second)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { _, _ = e.r.Credentials(context.Background(), a) })
	}
	wg.Wait()
	if n := e.refreshCalls(); n != 1 {
		t.Fatalf("%d probes, want 1", n)
	}
	got := e.get(a.ID)
	if got.Status != account.StatusActive || got.LastError != nil {
		t.Fatalf("a successful probe left the account %s %+v", got.Status, got.LastError)
	}
	if evs := e.eventsOf(a.ID); !slices.Equal(evs, []string{account.EventAuthenticationError, account.EventReactivated}) {
		t.Fatalf("events %v", evs)
	}
}

// TestSerialisedProbesOfAHealedAccountMakeOneTokenCall: requests that
// still hold the needs_reauth copy of an account (the cache, or a caller
// that read it before the probe) come one after the other; the first probe
// heals the account, and the others must not refresh it again.
func TestSerialisedProbesOfAHealedAccountMakeOneTokenCall(t *testing.T) {
	onEachStore(t, func(t *testing.T, kind string) {
		e := newEnvOn(t, kind, nil)
		a := e.connect("acc-probe", e.clock.Now().Add(-time.Second))
		if err := e.r.markFailed(context.Background(), a, a.Credentials, &account.Error{Code: "unauthorized", Message: "401"}); !errors.Is(err, ErrNeedsReauth) {
			t.Fatal(err)
		}
		stale := e.get(a.ID)
		e.clock.Add(e.integ.Probe() + time.Second)
		for i := range 5 {
			c, err := e.r.Credentials(context.Background(), stale)
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			if _, ok := e.auth.ValidAccessToken(c.AccessToken); !ok {
				t.Fatalf("request %d got a dead access token", i)
			}
		}
		if n := e.refreshCalls(); n != 1 {
			t.Fatalf("%d token calls for one heal, want 1", n)
		}
		if evs := e.eventsOf(a.ID); !slices.Equal(evs, []string{account.EventAuthenticationError, account.EventReactivated}) {
			t.Fatalf("events %v", evs)
		}
	})
}

func TestFailedProbeWaitsForTheNextInterval(t *testing.T) {
	e := newEnv(t, nil)
	a := e.connect("acc-probe-fail", e.clock.Now().Add(-time.Second))
	e.auth.RevokeSubject("user-" + a.ID)
	if _, err := e.r.Credentials(context.Background(), a); !errors.Is(err, ErrNeedsReauth) {
		t.Fatal(err)
	}
	e.clock.Add(e.integ.Probe() + time.Second)
	stale := e.get(a.ID)
	for range 5 {
		if _, err := e.r.Credentials(context.Background(), stale); !errors.Is(err, ErrNeedsReauth) {
			t.Fatal(err)
		}
	}
	if n := e.refreshCalls(); n != 2 {
		t.Fatalf("%d token calls, want the refused refresh and one probe", n)
	}
	if got := e.get(a.ID); !got.NextProbeAt.After(e.clock.Now()) {
		t.Fatal("the probe did not schedule the next one")
	}
	if evs := e.eventsOf(a.ID); len(evs) != 1 {
		t.Fatalf("a failed probe sent events: %v", evs)
	}
}

func TestUnauthorizedRefreshesOnceAndReturnsFreshCredentials(t *testing.T) {
	e := newEnv(t, nil)
	a := e.connect("acc-401", e.clock.Now().Add(time.Hour))
	c, retry, err := e.r.Unauthorized(context.Background(), a, a.Credentials)
	if err != nil || !retry {
		t.Fatalf("Unauthorized: %v retry=%v", err, retry)
	}
	if c.AccessToken == a.Credentials.AccessToken {
		t.Fatal("retry credentials are the refused ones")
	}
	// A concurrent request that was refused with the same old token gets
	// the newer stored one without another call.
	c2, retry, err := e.r.Unauthorized(context.Background(), a, a.Credentials)
	if err != nil || !retry || c2.AccessToken != c.AccessToken {
		t.Fatalf("second request refused with the old token: %v %v", err, retry)
	}
	if n := e.refreshCalls(); n != 1 {
		t.Fatalf("%d token calls, want 1", n)
	}
	// The retried request got 401 too: the account needs reauth, once.
	if err := e.r.UnauthorizedAfterRetry(context.Background(), a, c); !errors.Is(err, ErrNeedsReauth) {
		t.Fatal(err)
	}
	if err := e.r.UnauthorizedAfterRetry(context.Background(), a, c); !errors.Is(err, ErrNeedsReauth) {
		t.Fatal(err)
	}
	if got := e.get(a.ID); got.Status != account.StatusNeedsReauth {
		t.Fatalf("status %s after a second 401", got.Status)
	}
	if evs := e.eventsOf(a.ID); !slices.Equal(evs, []string{account.EventAuthenticationError}) {
		t.Fatalf("events %v", evs)
	}
}

func TestSecondUnauthorizedOnTheRetryTokenNeedsReauth(t *testing.T) {
	e := newEnv(t, nil)
	a := e.connect("acc-401-twice", e.clock.Now().Add(time.Hour))
	c, retry, err := e.r.Unauthorized(context.Background(), a, a.Credentials)
	if err != nil || !retry {
		t.Fatalf("first 401: retry=%v %v", retry, err)
	}
	e.remember(c.AccessToken)
	// The caller reports the retry's 401 through Unauthorized again.
	_, retry, err = e.r.Unauthorized(context.Background(), a, c)
	if retry || !errors.Is(err, ErrNeedsReauth) {
		t.Fatalf("second 401: retry=%v %v", retry, err)
	}
	if n := e.refreshCalls(); n != 1 {
		t.Fatalf("%d token calls: the second 401 refreshed again", n)
	}
	if got := e.get(a.ID); got.Status != account.StatusNeedsReauth {
		t.Fatalf("status %s", got.Status)
	}
	if evs := e.eventsOf(a.ID); !slices.Equal(evs, []string{account.EventAuthenticationError}) {
		t.Fatalf("events %v", evs)
	}
}

func TestUnauthorizedWithARefusedRefreshNeedsReauth(t *testing.T) {
	e := newEnv(t, nil)
	a := e.connect("acc-401-revoked", e.clock.Now().Add(time.Hour))
	e.auth.RevokeSubject("user-" + a.ID)
	_, retry, err := e.r.Unauthorized(context.Background(), a, a.Credentials)
	if retry || !errors.Is(err, ErrNeedsReauth) {
		t.Fatalf("got retry=%v %v", retry, err)
	}
	if got := e.get(a.ID); got.Status != account.StatusNeedsReauth {
		t.Fatalf("status %s", got.Status)
	}
}

func TestUnauthorizedOnAnAPIKeyAccountNeedsReauthAndSuccessReactivates(t *testing.T) {
	e := newEnv(t, nil)
	a := &account.Account{
		ID: "acc-key", TenantID: "t", Integration: e.integ.Name, Method: account.MethodAPIKey,
		Status: account.StatusActive, Credentials: account.Credentials{APIKey: "key-abcdef123"},
	}
	e.remember("key-abcdef123")
	if err := e.store.CreateAccount(context.Background(), a, nil); err != nil {
		t.Fatal(err)
	}
	a = e.get(a.ID)
	_, retry, err := e.r.Unauthorized(context.Background(), a, a.Credentials)
	if retry || !errors.Is(err, ErrNeedsReauth) {
		t.Fatalf("retry=%v err=%v", retry, err)
	}
	a = e.get(a.ID)
	if a.Status != account.StatusNeedsReauth {
		t.Fatalf("status %s", a.Status)
	}
	// The key is still injected so that a later success can heal it.
	c, err := e.r.Credentials(context.Background(), a)
	if err != nil || c.APIKey != "key-abcdef123" {
		t.Fatalf("credentials of a needs_reauth api_key account: %v", err)
	}
	e.r.Succeeded(context.Background(), a, c)
	if got := e.get(a.ID); got.Status != account.StatusActive || got.LastError != nil {
		t.Fatalf("after success: %s %+v", got.Status, got.LastError)
	}
	if evs := e.eventsOf(a.ID); !slices.Equal(evs, []string{account.EventAuthenticationError, account.EventReactivated}) {
		t.Fatalf("events %v", evs)
	}
	if e.refreshCalls() != 0 {
		t.Fatal("an api_key account called the token endpoint")
	}
}

func TestRefreshForcesARefresh(t *testing.T) {
	e := newEnv(t, nil)
	a := e.connect("acc-force", e.clock.Now().Add(time.Hour))
	if err := e.r.Refresh(context.Background(), a.ID); err != nil {
		t.Fatal(err)
	}
	got := e.get(a.ID)
	if got.Credentials.AccessToken == a.Credentials.AccessToken || e.refreshCalls() != 1 {
		t.Fatal("Refresh did not refresh a valid token")
	}
	e.auth.RevokeSubject("user-" + a.ID)
	if err := e.r.Refresh(context.Background(), a.ID); !errors.Is(err, ErrNeedsReauth) {
		t.Fatalf("Refresh of a revoked grant: %v", err)
	}
	if err := e.r.Refresh(context.Background(), "no-such-account"); err == nil {
		t.Fatal("Refresh of an unknown account succeeded")
	}
}

func TestUnauthorizedThroughACacheUsesTheStoresNewerToken(t *testing.T) {
	e := newEnv(t, nil)
	a := e.connect("acc-cached", e.clock.Now().Add(time.Hour))
	cached, err := tokenstore.NewCached(e.store, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	r := e.newRefresherOn(cached, nil)
	stale, err := cached.GetAccount(context.Background(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Another instance (its own store handle, so this cache hears nothing)
	// refreshes the account.
	other := e.newRefresherOn(e.openStore(), nil)
	if err := other.Refresh(context.Background(), a.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the cache holds the stale entry", func() bool {
		got, err := cached.GetAccount(context.Background(), a.ID)
		return err == nil && got.Credentials.AccessToken == a.Credentials.AccessToken
	})
	// The upstream refuses the stale token: the newer stored one is used,
	// without presenting the dead refresh token.
	c, retry, err := r.Unauthorized(context.Background(), stale, stale.Credentials)
	if err != nil || !retry {
		t.Fatalf("retry=%v %v", retry, err)
	}
	stored := e.get(a.ID)
	if c.AccessToken != stored.Credentials.AccessToken || e.refreshCalls() != 1 {
		t.Fatalf("got another token than the store's, or called the endpoint again (%d calls)", e.refreshCalls())
	}
	if got, _ := cached.GetAccount(context.Background(), a.ID); got.Credentials.AccessToken != stored.Credentials.AccessToken {
		t.Fatal("the stale cache entry was not dropped")
	}
	if stored.Status != account.StatusActive {
		t.Fatal("the account was blamed")
	}
}
