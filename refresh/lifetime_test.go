package refresh

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/tokenstore"
)

// settle waits until no flight of r runs, background refreshes included.
func settle(r *Refresher) {
	r.life.Lock()
	for r.flights > 0 {
		r.lifeCond.Wait()
	}
	r.life.Unlock()
}

// TestShortLivedTokensAreRefreshedOncePerExpiry: tokens that live less than
// the refresh skew (60 s by default) must not be refreshed on every request
// after a refresh. 300 concurrent requests on an expired token make exactly
// one token call whatever the lifetime, on one instance or two sharing the
// store; requests during the first part of the new token's life make none;
// its expiry makes exactly one more.
func TestShortLivedTokensAreRefreshedOncePerExpiry(t *testing.T) {
	for _, life := range []time.Duration{2 * time.Second, 30 * time.Second} {
		for _, instances := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/%d-instances", life, instances), func(t *testing.T) {
				onEachStore(t, func(t *testing.T, kind string) {
					e := newEnvLife(t, kind, life, nil)
					a := e.connect("acc-short", e.clock.Now().Add(-time.Second))
					refs := []*Refresher{e.r}
					stores := []tokenstore.Store{e.store}
					if instances == 2 {
						st := e.openStore()
						other := e.newRefresherOn(st, nil)
						t.Cleanup(func() { _ = other.Stop() })
						refs, stores = append(refs, other), append(stores, st)
					}
					// round sends 300 concurrent requests, each reading the
					// account as the proxy path does, and returns the token
					// calls they caused.
					round := func(what string) int {
						t.Helper()
						before := e.refreshCalls()
						var wg sync.WaitGroup
						errs := make(chan error, 300)
						for i := range 300 {
							k := i % len(refs)
							wg.Go(func() {
								cur, err := stores[k].GetAccount(context.Background(), a.ID)
								if err == nil {
									_, err = refs[k].Credentials(context.Background(), cur)
								}
								if err != nil {
									errs <- err
								}
							})
						}
						wg.Wait()
						for _, r := range refs {
							settle(r)
						}
						close(errs)
						for err := range errs {
							t.Fatalf("%s: a request failed: %v", what, err)
						}
						n := e.refreshCalls() - before
						t.Logf("%s: 300 requests, %d token calls", what, n)
						return n
					}
					if n := round("expired token"); n != 1 {
						t.Errorf("300 requests on an expired %s token made %d token calls, want 1", life, n)
					}
					e.clock.Add(life / 3)
					if n := round("a third into the new token's life"); n != 0 {
						t.Errorf("300 requests on a %s token a third into its life made %d token calls, want 0", life, n)
					}
					e.clock.Add(life)
					if n := round("new token expired"); n != 1 {
						t.Errorf("300 requests on the next expired %s token made %d token calls, want 1", life, n)
					}
				})
			})
		}
	}
}

// TestSweeperPacesShortLivedTokensByTheirLifetime: the sweeper's look-ahead
// (10 min by default) is clamped to half a token's lifetime, so a 5-minute
// token is not refreshed on every pass, only in the second half of its
// life.
func TestSweeperPacesShortLivedTokensByTheirLifetime(t *testing.T) {
	onEachStore(t, func(t *testing.T, kind string) {
		e := newEnvLife(t, kind, 5*time.Minute, func(o *Options) { o.SweepJitter = time.Millisecond })
		a := e.connect("acc-sweep", e.clock.Now().Add(-time.Second))
		if err := e.r.Refresh(context.Background(), a.ID); err != nil {
			t.Fatal(err)
		}
		// fosite rounds expires_in down to whole seconds.
		if got := e.get(a.ID).Credentials; got.IssuedAt.IsZero() || lifetime(got) < 5*time.Minute-2*time.Second || lifetime(got) > 5*time.Minute {
			t.Fatalf("the refreshed token's lifetime was not recorded: issued %v, expires %v", got.IssuedAt, got.Expiry)
		}
		if n := e.r.Sweep(context.Background()); n != 1 {
			t.Fatalf("the sweeper claimed %d accounts, want the one expiring within its look-ahead", n)
		}
		settle(e.r)
		if n := e.refreshCalls(); n != 1 {
			t.Fatalf("a sweep refreshed a token issued a moment ago (%d token calls)", n)
		}
		// What the sweeper does with each account it claims, later on.
		e.clock.Add(2 * time.Minute)
		if _, err := e.r.wait(context.Background(), a.ID, modeAhead, ""); err != nil {
			t.Fatal(err)
		}
		if n := e.refreshCalls(); n != 1 {
			t.Fatalf("the sweeper refreshed a 5-minute token with 3 minutes left (%d token calls)", n)
		}
		e.clock.Add(time.Minute)
		if _, err := e.r.wait(context.Background(), a.ID, modeAhead, ""); err != nil {
			t.Fatal(err)
		}
		if n := e.refreshCalls(); n != 2 {
			t.Fatalf("the sweeper left a 5-minute token with 2 minutes left (%d token calls, want 2)", n)
		}
	})
}
