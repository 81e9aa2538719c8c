package linkgate

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

// openJanitorStore opens a real SQLite store behind the cache, as the
// runtime holds it.
func openJanitorStore(t *testing.T) (*tokenstore.Cached, *tokenstore.SQLite) {
	t.Helper()
	key, err := tokenstore.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := tokenstore.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	inner, err := tokenstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "linkgate.db"), s)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tokenstore.NewCached(inner, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, inner
}

// purgeCountingStore counts the purges made through it.
type purgeCountingStore struct {
	tokenstore.Store
	calls atomic.Int64
}

func (c *purgeCountingStore) Purge(ctx context.Context, now time.Time, r tokenstore.Retention) (tokenstore.PurgeCounts, error) {
	defer c.calls.Add(1)
	return c.Store.Purge(ctx, now, r)
}

func waitForJanitor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestJanitorPurgesLogsAndStops(t *testing.T) {
	ctx := context.Background()
	st, _ := openJanitorStore(t)
	now := time.Now()
	for _, lt := range []*tokenstore.LinkToken{
		{Hash: []byte("lt-old"), ExpiresAt: now.Add(-31 * 24 * time.Hour)},
		{Hash: []byte("lt-live"), ExpiresAt: now.Add(time.Hour)},
	} {
		if err := st.CreateLinkToken(ctx, lt); err != nil {
			t.Fatal(err)
		}
	}
	a := &account.Account{ID: "acc_janitor"}
	old := []tokenstore.Event{
		tokenstore.NewEvent(account.EventTest, a, now.AddDate(-1, 0, 0)),
		tokenstore.NewEvent(account.EventTest, a, now.AddDate(-1, 0, 0)),
		tokenstore.NewEvent(account.EventTest, a, now.AddDate(-1, 0, 0)),
	}
	pending := tokenstore.NewEvent(account.EventTest, a, now.AddDate(-1, 0, 0))
	if err := st.AddEvents(ctx, append(old, pending)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.FanOut(ctx, 10, func(e tokenstore.Event) []string {
		if e.ID == pending.ID {
			return []string{"https://receiver.example"}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	core, logs := observer.New(zap.InfoLevel)
	counting := &purgeCountingStore{Store: st}
	ignore := goleak.IgnoreCurrent()
	stop := startJanitor(counting, zap.New(core), 5*time.Millisecond, tokenstore.DefaultRetention)
	// Several purges, so that the ones with nothing to delete are seen to
	// stay quiet.
	waitForJanitor(t, "three purges", func() bool { return counting.calls.Load() >= 3 })
	stop()
	stop()
	goleak.VerifyNone(t, ignore)

	entries := logs.All()
	if len(entries) != 1 || entries[0].Level != zapcore.InfoLevel || entries[0].Message != "purged expired and old rows" {
		t.Fatalf("log = %+v, want one info line for the one purge that deleted something", entries)
	}
	want := map[string]int64{"link_tokens": 1, "connect_states": 0, "delivered": 0, "failed": 0, "events": 3}
	if got := entries[0].ContextMap(); len(got) != len(want) {
		t.Fatalf("logged counts = %v, want %v", got, want)
	} else {
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("logged counts = %v, want %v", got, want)
			}
		}
	}
	if _, err := st.GetLinkToken(ctx, []byte("lt-old")); !errors.Is(err, tokenstore.ErrNotFound) {
		t.Fatalf("expired link token after the janitor ran: %v, want ErrNotFound", err)
	}
	if _, err := st.GetLinkToken(ctx, []byte("lt-live")); err != nil {
		t.Fatalf("live link token after the janitor ran: %v", err)
	}
	if n, err := st.PendingDeliveries(ctx); err != nil || n != 1 {
		t.Fatalf("PendingDeliveries = %d, %v; want the pending delivery kept", n, err)
	}
}

func TestJanitorLogsFailuresAndTriesAgain(t *testing.T) {
	st, inner := openJanitorStore(t)
	// A closed database fails every purge.
	if err := inner.Close(); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	ignore := goleak.IgnoreCurrent()
	stop := startJanitor(st, zap.New(core), 5*time.Millisecond, tokenstore.DefaultRetention)
	waitForJanitor(t, "two failed purges logged", func() bool {
		return logs.FilterMessage("purging expired and old rows").FilterLevelExact(zapcore.ErrorLevel).Len() >= 2
	})
	stop()
	goleak.VerifyNone(t, ignore)
	if n := logs.Len(); n != logs.FilterLevelExact(zapcore.ErrorLevel).Len() {
		t.Fatalf("log = %+v, want failures only", logs.All())
	}
}

// blockingPurger stands for a purge still running when the janitor stops.
type blockingPurger struct {
	tokenstore.Store
	started chan struct{}
}

func (b *blockingPurger) Purge(ctx context.Context, _ time.Time, _ tokenstore.Retention) (tokenstore.PurgeCounts, error) {
	close(b.started)
	<-ctx.Done()
	return tokenstore.PurgeCounts{}, ctx.Err()
}

func TestJanitorStopCancelsAPurgeUnderWay(t *testing.T) {
	st, _ := openJanitorStore(t)
	b := &blockingPurger{Store: st, started: make(chan struct{})}
	core, logs := observer.New(zap.InfoLevel)
	ignore := goleak.IgnoreCurrent()
	stop := startJanitor(b, zap.New(core), time.Millisecond, tokenstore.DefaultRetention)
	<-b.started
	stop()
	goleak.VerifyNone(t, ignore)
	if logs.Len() != 0 {
		t.Fatalf("log = %+v, want nothing for a purge cancelled by stop", logs.All())
	}
}

func TestJanitorWithoutAnInterval(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	st, _ := openJanitorStore(t)
	stop := startJanitor(st, zap.New(core), 0, tokenstore.DefaultRetention)
	stop()
	if logs.FilterLevelExact(zapcore.WarnLevel).Len() != 1 {
		t.Fatalf("log = %+v, want one warning that nothing is purged", logs.All())
	}
}

func TestJitteredStaysNearTheInterval(t *testing.T) {
	every := time.Minute
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := jittered(every)
		if d < every*9/10 || d > every*11/10 {
			t.Fatalf("jittered(%v) = %v, outside ±10%%", every, d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Fatalf("jittered gave %d distinct intervals in 1000, want a spread", len(seen))
	}
}
