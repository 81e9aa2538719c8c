package refresh

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

// gate holds the token endpoint's answers while it is shut: the server
// processes each token call (a refresh rotates at once, as at a slow
// provider), and the answer then waits until the test opens the gate. held
// receives one value per answer so held.
type gate struct {
	base http.RoundTripper
	held chan struct{}

	mu   sync.Mutex
	shut chan struct{} // nil while open
}

func (g *gate) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := g.base.RoundTrip(req)
	g.mu.Lock()
	shut := g.shut
	g.mu.Unlock()
	if shut == nil || !strings.HasSuffix(req.URL.Path, "/token") {
		return resp, err
	}
	g.held <- struct{}{}
	<-shut
	return resp, err
}

// hold makes the answers from now on wait for release.
func (g *gate) hold() {
	g.mu.Lock()
	if g.shut == nil {
		g.shut = make(chan struct{})
	}
	g.mu.Unlock()
}

// release lets every held and future answer through.
func (g *gate) release() {
	g.mu.Lock()
	if g.shut != nil {
		close(g.shut)
		g.shut = nil
	}
	g.mu.Unlock()
}

// gated builds an env whose refresher's token calls pass through a gate,
// open at first.
func gated(t *testing.T, kind string) (*env, *gate) {
	var g *gate
	e := newEnvOn(t, kind, func(o *Options) {
		g = &gate{base: o.Client.Transport, held: make(chan struct{}, 64)}
		o.Client = &http.Client{Transport: g}
	})
	t.Cleanup(g.release)
	return e, g
}

// reconnect replaces an account's grant with a new one of user, as the
// OAuth callback does: through a link token, in CompleteLink's one
// transaction, retrying when the account changed meanwhile.
func (e *env) reconnect(id, user string) account.Credentials {
	e.t.Helper()
	tok := e.auth.Authorize(e.t, clientID, redirectURI, user, nil)
	e.remember(tok.AccessToken, tok.RefreshToken)
	creds := account.Credentials{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenType: tok.TokenType, Expiry: e.clock.Now().Add(time.Hour)}
	hash := make([]byte, 32)
	_, _ = rand.Read(hash)
	ctx := context.Background()
	now := e.clock.Now()
	lt := &tokenstore.LinkToken{Hash: hash, AccountID: id, TenantID: "tenant-1", Integration: e.integ.Name, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := e.store.CreateLinkToken(ctx, lt); err != nil {
		e.t.Fatalf("creating a link token: %v", err)
	}
	for range 5 {
		a := e.get(id).Clone()
		a.Credentials = creds
		c, err := a.Apply(account.Reconnected, nil, now)
		if err != nil {
			e.t.Fatal(err)
		}
		err = e.store.CompleteLink(ctx, hash, a, false, tokenstore.EventsFor(c, a, now))
		if errors.Is(err, tokenstore.ErrConflict) {
			continue
		}
		if err != nil {
			e.t.Fatalf("reconnecting %s: %v", id, err)
		}
		return creds
	}
	e.t.Fatalf("reconnecting %s: the account kept changing", id)
	return creds
}

// patchCredentials replaces an account's credentials with a new grant of
// user, as PATCH /integrated-account/{id}/credentials does: a versioned
// update that counts as a reconnection.
func (e *env) patchCredentials(id, user string) account.Credentials {
	e.t.Helper()
	tok := e.auth.Authorize(e.t, clientID, redirectURI, user, nil)
	e.remember(tok.AccessToken, tok.RefreshToken)
	creds := account.Credentials{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenType: tok.TokenType, Expiry: e.clock.Now().Add(time.Hour)}
	for range 5 {
		a := e.get(id).Clone()
		now := e.clock.Now()
		a.Credentials = creds
		c, err := a.Apply(account.Reconnected, nil, now)
		if err != nil {
			e.t.Fatal(err)
		}
		err = e.store.UpdateAccount(context.Background(), a, tokenstore.NewEvents(c.Events, a, now))
		if errors.Is(err, tokenstore.ErrConflict) {
			continue
		}
		if err != nil {
			e.t.Fatalf("patching %s: %v", id, err)
		}
		return creds
	}
	e.t.Fatalf("patching %s: the account kept changing", id)
	return creds
}

func count(names []string, name string) int {
	n := 0
	for _, s := range names {
		if s == name {
			n++
		}
	}
	return n
}

// TestReplacedCredentialsWinOverARefreshInFlight: while a refresh of
// alice's expired token waits for the token endpoint's answer, the account
// is reconnected as bob (or its credentials PATCHed to bob's grant). The
// late answer for alice's grant must not overwrite bob's: bob's refresh
// token is the only copy of his grant.
func TestReplacedCredentialsWinOverARefreshInFlight(t *testing.T) {
	for _, how := range []string{"reconnect", "patch"} {
		t.Run(how, func(t *testing.T) {
			onEachStore(t, func(t *testing.T, kind string) {
				e, g := gated(t, kind)
				a := e.connect("acct-1", e.clock.Now().Add(-time.Minute))
				g.hold()

				type result struct {
					c   account.Credentials
					err error
				}
				done := make(chan result, 1)
				go func() {
					c, err := e.r.Credentials(context.Background(), a)
					done <- result{c, err}
				}()
				<-g.held // alice's refresh token is rotated at the provider; the answer is held

				var bob account.Credentials
				if how == "reconnect" {
					bob = e.reconnect(a.ID, "user-bob")
				} else {
					bob = e.patchCredentials(a.ID, "user-bob")
				}
				g.release()
				res := <-done
				if res.err != nil {
					t.Fatalf("Credentials: %v", res.err)
				}
				if !sameGrant(res.c, bob) {
					t.Errorf("the waiting caller got alice's refreshed token, not bob's")
				}
				got := e.get(a.ID)
				if !sameGrant(got.Credentials, bob) {
					t.Fatalf("the stored credentials are not bob's any more: the refresh of the replaced grant undid the %s", how)
				}
				if got.Status != account.StatusActive {
					t.Errorf("status = %s, want active", got.Status)
				}
				if sub, ok := e.auth.ValidAccessToken(got.Credentials.AccessToken); !ok || sub != "user-bob" {
					t.Errorf("stored access token: valid %v, subject %q", ok, sub)
				}
				if !e.auth.ValidRefreshToken(got.Credentials.RefreshToken) {
					t.Errorf("bob's refresh token is dead")
				}
				if ev := e.eventsOf(a.ID); count(ev, account.EventAuthenticationError) != 0 {
					t.Errorf("events = %v", ev)
				}
				if !e.logged(zapcore.InfoLevel, "replaced while they were being refreshed") {
					t.Errorf("dropping the late answer was not logged")
				}
			})
		})
	}
}

// TestReconnectDuringADeadTokenProbeRaisesNoSecondAlarm: an account in
// needs_reauth (one authentication_error raised) gets its probe; the probe
// presents the dead refresh token, and while the provider's invalid_grant is
// on its way the end user reconnects. The late refusal concerns the old
// grant: the account stays active with the new one, no second alarm is
// raised, and requests get the new credentials, not 401s.
func TestReconnectDuringADeadTokenProbeRaisesNoSecondAlarm(t *testing.T) {
	for _, how := range []string{"reconnect", "patch"} {
		t.Run(how, func(t *testing.T) {
			onEachStore(t, func(t *testing.T, kind string) {
				e, g := gated(t, kind)
				a := e.connect("acct-1", e.clock.Now().Add(time.Hour))
				e.auth.RevokeSubject("user-acct-1")

				// The revocation is found: needs_reauth, one alarm.
				if _, _, err := e.r.Unauthorized(context.Background(), a, a.Credentials); !errors.Is(err, ErrNeedsReauth) {
					t.Fatalf("Unauthorized on a revoked grant: %v", err)
				}
				if ev := e.eventsOf(a.ID); count(ev, account.EventAuthenticationError) != 1 {
					t.Fatalf("events after the revocation = %v", ev)
				}
				g.hold()

				// The probe is due.
				e.clock.Add(2 * account.DefaultProbeInterval)
				a = e.get(a.ID)
				if a.Status != account.StatusNeedsReauth {
					t.Fatalf("status = %s", a.Status)
				}
				done := make(chan error, 1)
				var got account.Credentials
				go func() {
					var err error
					got, err = e.r.Credentials(context.Background(), a)
					done <- err
				}()
				<-g.held // invalid_grant for the dead token, held

				var fresh account.Credentials
				if how == "reconnect" {
					fresh = e.reconnect(a.ID, "user-acct-1")
				} else {
					fresh = e.patchCredentials(a.ID, "user-acct-1")
				}
				g.release()
				if err := <-done; err != nil {
					t.Errorf("the probing request got %v, want the new credentials", err)
				} else if !sameGrant(got, fresh) {
					t.Errorf("the probing request got other credentials than the new ones")
				}
				stored := e.get(a.ID)
				if stored.Status != account.StatusActive || !sameGrant(stored.Credentials, fresh) {
					t.Fatalf("after the late refusal: status %s, new credentials kept %v", stored.Status, sameGrant(stored.Credentials, fresh))
				}
				if ev := e.eventsOf(a.ID); count(ev, account.EventAuthenticationError) != 1 {
					t.Errorf("events = %v, want one authentication_error in all", ev)
				}
				// Requests now get the new credentials, without a token call.
				calls := e.refreshCalls()
				c, err := e.r.Credentials(context.Background(), stored)
				if err != nil || !sameGrant(c, fresh) {
					t.Errorf("a request after the reconnect: %v", err)
				}
				if e.refreshCalls() != calls {
					t.Errorf("a request after the reconnect made a token call")
				}
			})
		})
	}
}

// TestSecond401ToAReplacedRetryTokenRaisesNoAlarm: a request refused with
// alice's token gets a refreshed one for its retry; the account is then
// reconnected as bob (or its credentials PATCHed), and the retry's 401 comes
// back through Unauthorized (a caller that reports the second 401 so). That
// 401 judged the replaced retry token, not bob's credentials: nothing
// changes, and no alarm is raised.
func TestSecond401ToAReplacedRetryTokenRaisesNoAlarm(t *testing.T) {
	for _, how := range []string{"reconnect", "patch"} {
		t.Run(how, func(t *testing.T) {
			onEachStore(t, func(t *testing.T, kind string) {
				e := newEnvOn(t, kind, nil)
				a := e.connect("acct-1", e.clock.Now().Add(time.Hour))
				retryWith, retry, err := e.r.Unauthorized(context.Background(), a, a.Credentials)
				if err != nil || !retry {
					t.Fatalf("first 401: retry=%v %v", retry, err)
				}
				e.remember(retryWith.AccessToken, retryWith.RefreshToken)
				var bob account.Credentials
				if how == "reconnect" {
					bob = e.reconnect(a.ID, "user-bob")
				} else {
					bob = e.patchCredentials(a.ID, "user-bob")
				}
				_, retry, err = e.r.Unauthorized(context.Background(), a, retryWith)
				if retry || err != nil {
					t.Errorf("the retry's late 401: retry=%v %v, want nothing to do", retry, err)
				}
				got := e.get(a.ID)
				if got.Status != account.StatusActive || got.LastError != nil || !sameGrant(got.Credentials, bob) {
					t.Fatalf("after the late 401: status %s, last error %+v, bob's grant kept %v", got.Status, got.LastError, sameGrant(got.Credentials, bob))
				}
				if ev := e.eventsOf(a.ID); count(ev, account.EventAuthenticationError) != 0 {
					t.Errorf("events = %v", ev)
				}
				if !e.logged(zapcore.InfoLevel, "concerns credentials the account no longer holds") {
					t.Errorf("dropping the late 401 was not logged")
				}
			})
		})
	}
}

// replaceBeforeWrite is a store that lets a replacement of an account's
// credentials commit between the refresher's read of the account and its
// write: replace runs once, just before the first UpdateAccount.
type replaceBeforeWrite struct {
	tokenstore.Store
	once    sync.Once
	replace func()
}

func (s *replaceBeforeWrite) UpdateAccount(ctx context.Context, a *account.Account, events []tokenstore.Event) error {
	s.once.Do(s.replace)
	return s.Store.UpdateAccount(ctx, a, events)
}

// TestA401JudgedWhileItsCredentialsAreReplacedChangesNothing: an api_key
// account's 401 is being recorded when a PATCH of its key commits between
// the refresher's read and its write. The write must not succeed on the
// new key's account: its version check fails and the comparison is made
// again on the account as the PATCH left it.
func TestA401JudgedWhileItsCredentialsAreReplacedChangesNothing(t *testing.T) {
	onEachStore(t, func(t *testing.T, kind string) {
		e := newEnvOn(t, kind, nil)
		ctx := context.Background()
		a := &account.Account{ID: "acct-key", TenantID: "t", Integration: e.integ.Name, Method: account.MethodAPIKey,
			Status: account.StatusActive, Credentials: account.Credentials{APIKey: "key-rotated-away-5c1"}}
		e.remember("key-rotated-away-5c1", "key-new-working-9d2")
		if err := e.store.CreateAccount(ctx, a, nil); err != nil {
			t.Fatal(err)
		}
		a = e.get(a.ID)
		store := &replaceBeforeWrite{Store: e.store, replace: func() {
			b := e.get(a.ID).Clone()
			b.Credentials = account.Credentials{APIKey: "key-new-working-9d2"}
			c, err := b.Apply(account.Reconnected, nil, e.clock.Now())
			if err != nil {
				t.Error(err)
				return
			}
			if err := e.store.UpdateAccount(ctx, b, tokenstore.NewEvents(c.Events, b, e.clock.Now())); err != nil {
				t.Errorf("patching the key: %v", err)
			}
		}}
		r := e.newRefresherOn(store, nil)
		t.Cleanup(func() { _ = r.Stop() })
		if _, retry, err := r.Unauthorized(ctx, a, a.Credentials); retry || err != nil {
			t.Errorf("the 401 to the old key: retry=%v %v, want nothing to do", retry, err)
		}
		got := e.get(a.ID)
		if got.Status != account.StatusActive || got.Credentials.APIKey != "key-new-working-9d2" {
			t.Fatalf("after the 401 to the old key: status %s, new key kept %v", got.Status, got.Credentials.APIKey == "key-new-working-9d2")
		}
		if ev := e.eventsOf(a.ID); count(ev, account.EventAuthenticationError) != 0 {
			t.Errorf("events = %v", ev)
		}
	})
}

// TestLateSuccessOfReplacedCredentialsDoesNotReactivate: an api_key
// account in needs_reauth with key X gets its key PATCHed to Y, and Y is
// refused in turn (needs_reauth again, a second alarm). Then the 2xx to a
// request sent earlier with X comes back. It vouches for X, not for Y: the
// account stays in needs_reauth, and no reactivated event is sent.
func TestLateSuccessOfReplacedCredentialsDoesNotReactivate(t *testing.T) {
	onEachStore(t, func(t *testing.T, kind string) {
		e := newEnvOn(t, kind, nil)
		ctx := context.Background()
		a := &account.Account{ID: "acct-key", TenantID: "t", Integration: e.integ.Name, Method: account.MethodAPIKey,
			Status: account.StatusActive, Credentials: account.Credentials{APIKey: "key-x-7e0"}}
		e.remember("key-x-7e0", "key-y-1b4")
		if err := e.store.CreateAccount(ctx, a, nil); err != nil {
			t.Fatal(err)
		}
		a = e.get(a.ID)
		if _, _, err := e.r.Unauthorized(ctx, a, a.Credentials); !errors.Is(err, ErrNeedsReauth) {
			t.Fatalf("401 to X: %v", err)
		}
		stale := e.get(a.ID) // in needs_reauth with X: the request's copy
		sentX := stale.Credentials

		b := stale.Clone()
		b.Credentials = account.Credentials{APIKey: "key-y-1b4"}
		c, err := b.Apply(account.Reconnected, nil, e.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := e.store.UpdateAccount(ctx, b, tokenstore.NewEvents(c.Events, b, e.clock.Now())); err != nil {
			t.Fatal(err)
		}
		b = e.get(a.ID)
		if _, _, err := e.r.Unauthorized(ctx, b, b.Credentials); !errors.Is(err, ErrNeedsReauth) {
			t.Fatalf("401 to Y: %v", err)
		}

		e.r.Succeeded(ctx, stale, sentX)
		if got := e.get(a.ID); got.Status != account.StatusNeedsReauth || got.LastError == nil {
			t.Fatalf("a late success with the replaced key left the account %s (last error %+v): Y was refused", got.Status, got.LastError)
		}
		if ev := e.eventsOf(a.ID); count(ev, account.EventReactivated) != 0 || count(ev, account.EventAuthenticationError) != 2 {
			t.Errorf("events = %v, want two authentication_error and no reactivated", ev)
		}
		// A success with Y does reactivate it.
		y := e.get(a.ID)
		e.r.Succeeded(ctx, y, y.Credentials)
		if got := e.get(a.ID); got.Status != account.StatusActive {
			t.Fatalf("a success with the stored key left the account %s", got.Status)
		}
	})
}
