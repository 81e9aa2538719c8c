package tokenstore

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/linkgate/linkgate/account"
)

// countingStore is a real SQLite store that counts GetAccount calls and can
// hold a reader between its read and its return.
type countingStore struct {
	*SQLite
	gets atomic.Int32
	// When hold is set, GetAccount signals read after reading and waits on
	// hold before returning.
	hold, read chan struct{}
}

func (s *countingStore) GetAccount(ctx context.Context, id string) (*account.Account, error) {
	a, err := s.SQLite.GetAccount(ctx, id)
	s.gets.Add(1)
	if s.hold != nil {
		s.read <- struct{}{}
		<-s.hold
	}
	return a, err
}

func newCached(t testing.TB) (*Cached, *countingStore) {
	t.Helper()
	sl, err := NewSealer(mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	st, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "linkgate.db"), sl)
	if err != nil {
		t.Fatal(err)
	}
	inner := &countingStore{SQLite: st}
	c, err := NewCached(inner, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, inner
}

func cacheAccount(id string) *account.Account {
	return &account.Account{
		ID: id, TenantID: "t", Integration: "hubspot", Method: account.MethodOAuth2, Status: account.StatusActive,
		Credentials: account.Credentials{AccessToken: "at-1", RefreshToken: "rt-1", Expiry: time.Now().Add(time.Hour)},
	}
}

// get reads id through c and lets ristretto apply the buffered set.
func get(t *testing.T, c *Cached, id string) *account.Account {
	t.Helper()
	a, err := c.GetAccount(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	c.cache.Wait()
	return a
}

func TestCachedHitAndMiss(t *testing.T) {
	ctx := context.Background()
	c, inner := newCached(t)
	if err := c.CreateAccount(ctx, cacheAccount("acc_1"), nil); err != nil {
		t.Fatal(err)
	}
	first := get(t, c, "acc_1")
	second := get(t, c, "acc_1")
	if inner.gets.Load() != 1 {
		t.Fatalf("store read %d times for two gets, want 1", inner.gets.Load())
	}
	if first != second || second.Credentials.AccessToken != "at-1" {
		t.Fatal("the hit did not return the cached account")
	}
	for range 2 {
		if _, err := c.GetAccount(ctx, "acc_missing"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing account: %v", err)
		}
		c.cache.Wait()
	}
	if inner.gets.Load() != 3 {
		t.Fatalf("a missing account was cached: %d store reads, want 3", inner.gets.Load())
	}
}

func TestCachedInvalidatesOnWrite(t *testing.T) {
	ctx := context.Background()
	c, inner := newCached(t)
	a := cacheAccount("acc_w")
	if err := c.CreateAccount(ctx, a, nil); err != nil {
		t.Fatal(err)
	}
	cached := get(t, c, a.ID)
	upd := cached.Clone()
	upd.Credentials.AccessToken = "at-2"
	if err := c.UpdateAccount(ctx, upd, nil); err != nil {
		t.Fatal(err)
	}
	if cached.Credentials.AccessToken != "at-1" {
		t.Fatal("updating a clone changed the cached account")
	}
	if got := get(t, c, a.ID); got.Credentials.AccessToken != "at-2" || got.Version != 2 {
		t.Fatalf("after update: %q v%d", got.Credentials.AccessToken, got.Version)
	}

	// A failed (conflicting) update also drops the entry: it was stale.
	get(t, c, a.ID)
	before := inner.gets.Load()
	stale := upd.Clone()
	stale.Version = 1
	if err := c.UpdateAccount(ctx, stale, nil); !errors.Is(err, ErrConflict) {
		t.Fatal(err)
	}
	get(t, c, a.ID)
	if inner.gets.Load() != before+1 {
		t.Fatal("a conflicting update left the entry cached")
	}

	// Another instance's write, announced through Invalidate.
	other := get(t, c, a.ID).Clone()
	other.Credentials.AccessToken = "at-3"
	if err := inner.SQLite.UpdateAccount(ctx, other, nil); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, a.ID); got.Credentials.AccessToken != "at-2" {
		t.Fatal("the test needs the entry to be cached before Invalidate")
	}
	c.Invalidate(a.ID)
	if got := get(t, c, a.ID); got.Credentials.AccessToken != "at-3" {
		t.Fatalf("after Invalidate: %q", got.Credentials.AccessToken)
	}

	// Reconnect through CompleteLink.
	now := time.Now()
	if err := c.CreateLinkToken(ctx, &LinkToken{Hash: []byte("lt"), AccountID: a.ID, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	re := get(t, c, a.ID).Clone()
	re.Credentials.AccessToken = "at-4"
	if err := c.CompleteLink(ctx, []byte("lt"), re, false, nil); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, a.ID); got.Credentials.AccessToken != "at-4" {
		t.Fatalf("after CompleteLink: %q", got.Credentials.AccessToken)
	}

	if err := c.DeleteAccount(ctx, a.ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetAccount(ctx, a.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted account still served: %v", err)
	}
}

// TestCachedStaleFill: a reader that read the row before a write committed
// must not put the old row in the cache after the write's invalidation.
func TestCachedStaleFill(t *testing.T) {
	ctx := context.Background()
	c, inner := newCached(t)
	a := cacheAccount("acc_race")
	if err := c.CreateAccount(ctx, a, nil); err != nil {
		t.Fatal(err)
	}
	inner.hold, inner.read = make(chan struct{}), make(chan struct{})
	got := make(chan *account.Account)
	go func() {
		a, err := c.GetAccount(ctx, "acc_race")
		if err != nil {
			t.Error(err)
		}
		got <- a
	}()
	<-inner.read // the reader has the version-1 row in hand

	upd := a.Clone()
	upd.Credentials.AccessToken = "at-new"
	if err := c.UpdateAccount(ctx, upd, nil); err != nil {
		t.Fatal(err)
	}
	inner.hold <- struct{}{}
	if old := <-got; old.Credentials.AccessToken != "at-1" {
		t.Fatal("the test needs the reader to return the old row")
	}
	inner.hold, inner.read = nil, nil
	c.cache.Wait()

	if now := get(t, c, "acc_race"); now.Credentials.AccessToken != "at-new" || now.Version != 2 {
		t.Fatalf("stale fill: the cache serves %q v%d after the update", now.Credentials.AccessToken, now.Version)
	}
}

func TestCachedTTL(t *testing.T) {
	ctx := context.Background()
	c, inner := newCached(t)
	waitRefetch := func(id string) {
		t.Helper()
		before := inner.gets.Load()
		deadline := time.Now().Add(10 * time.Second)
		for inner.gets.Load() == before {
			if time.Now().After(deadline) {
				t.Fatalf("account %s never left the cache", id)
			}
			time.Sleep(5 * time.Millisecond)
			get(t, c, id)
		}
	}

	// The cap bounds an entry whose token lives long.
	c.SetTTLCap(50 * time.Millisecond)
	if err := c.CreateAccount(ctx, cacheAccount("acc_cap"), nil); err != nil {
		t.Fatal(err)
	}
	get(t, c, "acc_cap")
	waitRefetch("acc_cap")

	// The token's expiry bounds an entry under a long cap.
	c.SetTTLCap(time.Hour)
	soon := cacheAccount("acc_soon")
	soon.Credentials.Expiry = time.Now().Add(150 * time.Millisecond)
	if err := c.CreateAccount(ctx, soon, nil); err != nil {
		t.Fatal(err)
	}
	get(t, c, "acc_soon")
	waitRefetch("acc_soon")

	// An expired token is not cached at all.
	gone := cacheAccount("acc_expired")
	gone.Credentials.Expiry = time.Now().Add(-time.Minute)
	if err := c.CreateAccount(ctx, gone, nil); err != nil {
		t.Fatal(err)
	}
	before := inner.gets.Load()
	get(t, c, "acc_expired")
	get(t, c, "acc_expired")
	if inner.gets.Load() != before+2 {
		t.Fatal("an account with an expired token was cached")
	}

	// An account without expiry (API key) is cached for the cap.
	key := cacheAccount("acc_key")
	key.Method, key.Credentials = account.MethodAPIKey, account.Credentials{APIKey: "k"}
	if err := c.CreateAccount(ctx, key, nil); err != nil {
		t.Fatal(err)
	}
	before = inner.gets.Load()
	get(t, c, "acc_key")
	get(t, c, "acc_key")
	if inner.gets.Load() != before+1 {
		t.Fatal("an account without token expiry was not cached")
	}
}

func TestNewCachedRejects(t *testing.T) {
	if _, err := NewCached(nil, 1<<20); err == nil {
		t.Fatal("nil store accepted")
	}
	c, _ := newCached(t)
	if _, err := NewCached(c.Inner(), 0); err == nil {
		t.Fatal("zero size accepted")
	}
}

func BenchmarkCachedGetAccount(b *testing.B) {
	ctx := context.Background()
	c, _ := newCached(b)
	a := cacheAccount("acc_bench")
	if err := c.CreateAccount(ctx, a, nil); err != nil {
		b.Fatal(err)
	}
	if _, err := c.GetAccount(ctx, a.ID); err != nil {
		b.Fatal(err)
	}
	c.cache.Wait()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.GetAccount(ctx, a.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCachedCloseLeaksNothing: a config reload closes the old store; its
// cache and connections must not leave goroutines behind.
func TestCachedCloseLeaksNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	sl, err := NewSealer(mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	st, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "linkgate.db"), sl)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCached(st, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CreateAccount(context.Background(), cacheAccount("acc_1"), nil); err != nil {
		t.Fatal(err)
	}
	get(t, c, "acc_1")
	if err := c.WithRefreshLock(context.Background(), "acc_1", func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}
