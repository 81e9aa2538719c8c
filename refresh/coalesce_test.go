package refresh

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

// watchedStore is a real store that counts refresh-lock takes and can be
// made to fail account writes, as a full disk or a database that went away
// does.
type watchedStore struct {
	tokenstore.Store
	locks        atomic.Int64
	failUpdates  atomic.Bool
	failedWrites atomic.Int64
}

func (s *watchedStore) WithRefreshLock(ctx context.Context, id string, fn func(context.Context) error) error {
	s.locks.Add(1)
	return s.Store.WithRefreshLock(ctx, id, fn)
}

func (s *watchedStore) UpdateAccount(ctx context.Context, a *account.Account, events []tokenstore.Event) error {
	if s.failUpdates.Load() {
		s.failedWrites.Add(1)
		return errors.Join(tokenstore.ErrUnavailable, errors.New("disk full"))
	}
	return s.Store.UpdateAccount(ctx, a, events)
}

// TestUnsavedRotationHandsOutNoNewAccessToken: the token endpoint answers a
// refresh (the grant is rotated) but the store cannot keep the answer. The
// new access token must not be used: a request carrying it would succeed
// while the only copy of the new refresh token is about to be lost, hiding
// the loss until the access token expires.
func TestUnsavedRotationHandsOutNoNewAccessToken(t *testing.T) {
	onEachStore(t, func(t *testing.T, kind string) {
		e := newEnvOn(t, kind, nil)
		ws := &watchedStore{Store: e.store}
		r := e.newRefresherOn(ws, nil)
		t.Cleanup(func() { _ = r.Stop() })
		a := e.connect("acc-unsaved", e.clock.Now().Add(-time.Second))
		ws.failUpdates.Store(true)

		c, err := r.Credentials(context.Background(), a)
		if e.refreshCalls() != 1 {
			t.Fatalf("%d token calls, want 1", e.refreshCalls())
		}
		var re *Error
		if !errors.As(err, &re) || re.Class != Transient || re.Code != "store_unavailable" {
			t.Fatalf("Credentials = %v, want a transient store_unavailable error", err)
		}
		if c.AccessToken != "" || c.RefreshToken != "" {
			t.Fatalf("credentials handed out although they were not saved")
		}
		// Nor through the 401 path.
		e.clock.Add(time.Hour) // past any back-off
		c, retry, err := r.Unauthorized(context.Background(), a, a.Credentials)
		if err == nil || retry || c.AccessToken != "" {
			t.Fatalf("Unauthorized = retry %v, err %v, token handed out %v", retry, err, c.AccessToken != "")
		}
		if !e.logged(zapcore.ErrorLevel, "saving refreshed credentials failed") {
			t.Errorf("the lost rotation was not logged as an error")
		}
		if got := e.get(a.ID); got.Status != account.StatusActive || got.Credentials.AccessToken != a.Credentials.AccessToken {
			t.Errorf("the stored account changed although every write failed")
		}
	})
}

// TestConcurrentCallersTakeTheRefreshLockAboutOnce: callers on an expired
// token in one process share one flight, so the store's refresh lock (a
// database round trip, a row or advisory lock) is taken about once, not
// once per caller.
func TestConcurrentCallersTakeTheRefreshLockAboutOnce(t *testing.T) {
	onEachStore(t, func(t *testing.T, kind string) {
		e, g := gated(t, kind)
		ws := &watchedStore{Store: e.store}
		r := e.newRefresherOn(ws, func(o *Options) { o.Client = &http.Client{Transport: g} })
		t.Cleanup(func() { _ = r.Stop() })
		a := e.connect("acc-lock", e.clock.Now().Add(-time.Second))
		g.hold()

		const n = 200
		var wg sync.WaitGroup
		var started sync.WaitGroup
		started.Add(n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				// Each caller reads the account as the proxy path does,
				// before the flight's answer is saved.
				cur, err := ws.GetAccount(context.Background(), a.ID)
				started.Done()
				if err == nil {
					_, err = r.Credentials(context.Background(), cur)
				}
				errs[i] = err
			})
		}
		<-g.held // the one flight's token call is answered and held
		started.Wait()
		// Every caller has read the expired token; the answer is let
		// through once each waits on the flight. Releasing earlier would
		// leave callers that were merely slow to be scheduled to ask after
		// the flight ended, each with a flight (and a lock) of its own: on a
		// busy machine that is most of them, and it says nothing about
		// coalescing.
		eventually(t, "every caller to wait on the refresh", func() bool { return r.gate.waiting(a.ID) == n })
		g.release()
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("caller %d: %v", i, err)
			}
		}
		if n := e.refreshCalls(); n != 1 {
			t.Errorf("%d token calls, want 1", n)
		}
		// A caller that read the account just before the answer was saved
		// and asks just after the flight ended starts a flight of its own,
		// which finds the token fresh; that is the "about".
		if l := ws.locks.Load(); l > 3 {
			t.Errorf("%d callers took the refresh lock %d times, want about once", n, l)
		}
	})
}

// waiting is how many callers wait on account id's refresh.
func (g *callGate) waiting(id string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.urgent[id]
}
