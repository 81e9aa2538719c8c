package refresh

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

// lockFailingStore is a real store whose refresh lock can be made to fail,
// as it does when the disk is full or the database is down.
type lockFailingStore struct {
	tokenstore.Store
	down  bool
	tries int
}

func (s *lockFailingStore) WithRefreshLock(ctx context.Context, id string, fn func(context.Context) error) error {
	s.tries++
	if s.down {
		return fmt.Errorf("taking the refresh lock of %s: %w", id, tokenstore.ErrUnavailable)
	}
	return s.Store.WithRefreshLock(ctx, id, fn)
}

// warnings counts the log entries at level whose message contains s.
func (e *env) count(level zapcore.Level, s string) int {
	n := 0
	for _, en := range e.logs.FilterMessageSnippet(s).All() {
		if en.Level == level {
			n++
		}
	}
	return n
}

// TestStoreOutageIsBackedOffAndLoggedOncePerOutage: while the store fails,
// refreshes back off per account (a request during the back-off does not
// touch the store) and the log gets one warning when the outage starts and
// one line with the count when it ends, not a warning per attempt.
func TestStoreOutageIsBackedOffAndLoggedOncePerOutage(t *testing.T) {
	e := newEnv(t, nil)
	fs := &lockFailingStore{Store: e.store}
	r := e.newRefresherOn(fs, func(o *Options) {
		o.BackoffBase = time.Second
		o.BackoffMax = time.Minute
	})
	t.Cleanup(func() { _ = r.Stop() })
	var accts []*account.Account
	for i := range 5 {
		accts = append(accts, e.connect(fmt.Sprintf("acc-%d", i), e.clock.Now().Add(-time.Second)))
	}
	const starts = "the account store is failing"
	const ends = "the account store answers refreshes again"

	for outage := 1; outage <= 2; outage++ {
		fs.down, fs.tries = true, 0
		requests := 0
		for range 30 { // 30 s of requests, one a second per account
			for _, a := range accts {
				requests++
				_, err := r.Credentials(context.Background(), a)
				var re *Error
				if !errors.As(err, &re) || re.Class != Transient || re.Code != codeStoreUnavailable {
					t.Fatalf("during the outage: %v, want a transient store_unavailable", err)
				}
			}
			e.clock.Add(time.Second)
		}
		if fs.tries >= requests/3 {
			t.Errorf("%d requests during the outage tried the store %d times: not backed off", requests, fs.tries)
		}
		t.Logf("outage %d: %d requests, %d store attempts", outage, requests, fs.tries)
		if n := e.count(zapcore.WarnLevel, starts); n != outage {
			t.Errorf("%d warnings for %d outages, want one each", n, outage)
		}
		failed := fs.tries

		fs.down = false
		e.clock.Add(time.Minute) // past every back-off
		for _, a := range accts {
			if _, err := r.Credentials(context.Background(), a); err != nil {
				t.Fatalf("after the outage: %v", err)
			}
			e.setExpiry(a.ID, e.clock.Now().Add(-time.Second))
		}
		ended := e.logs.FilterMessageSnippet(ends).All()
		if len(ended) != outage {
			t.Fatalf("%d end-of-outage lines for %d outages", len(ended), outage)
		}
		if got := ended[outage-1].ContextMap()["failed_attempts"]; fmt.Sprint(got) != fmt.Sprint(failed) {
			t.Errorf("the end of the outage reports %v failed attempts, want %d", got, failed)
		}
		accts = accts[:0]
		for i := range 5 {
			accts = append(accts, e.get(fmt.Sprintf("acc-%d", i)))
		}
	}
	if n := e.count(zapcore.WarnLevel, "refreshing integrated account"); n != 0 {
		t.Errorf("%d per-attempt warnings", n)
	}
}
