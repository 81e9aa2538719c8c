package tokenstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/linkgate/linkgate/account"
)

// DefaultTTLCap is how long Cached keeps an account at most, whatever its
// token's expiry: the bound on how stale another instance's write can look
// when nothing (such as PostgreSQL NOTIFY) invalidates the entry.
const DefaultTTLCap = 5 * time.Minute

const cacheStripes = 256

// Cached is a Store that serves GetAccount from a cost-bounded ristretto
// cache of unsealed accounts and passes every other call to the store it
// wraps. Every write through Cached drops the account's entry once the write
// has returned. The wrapped store is the truth; a cache miss is never an
// error.
type Cached struct {
	inner  Store
	cache  *ristretto.Cache[string, *account.Account]
	ttlCap atomic.Int64
	now    func() time.Time
	seed   maphash.Seed
	// stripes guard against a stale fill: a reader that read a row before a
	// write committed must not put it in the cache after the write's
	// invalidation. Invalidate bumps the generation of the id's stripe under
	// the write lock; a reader records the generation before reading and
	// sets the entry under the read lock only if it is unchanged.
	stripes [cacheStripes]stripe
}

type stripe struct {
	mu  sync.RWMutex
	gen uint64
}

var _ Store = (*Cached)(nil)

// NewCached wraps s in a cache holding accounts whose estimated sizes add up
// to at most maxCost bytes.
func NewCached(s Store, maxCost int64) (*Cached, error) {
	if s == nil {
		return nil, errors.New("caching store: no store to wrap")
	}
	if maxCost <= 0 {
		return nil, fmt.Errorf("caching store: cache size must be positive, got %d", maxCost)
	}
	counters := maxCost / 64 // about ten counters per account of the smallest kind (~650 bytes)
	if counters < 1000 {
		counters = 1000
	}
	rc, err := ristretto.NewCache(&ristretto.Config[string, *account.Account]{
		NumCounters:        counters,
		MaxCost:            maxCost,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("caching store: %w", err)
	}
	c := &Cached{inner: s, cache: rc, now: time.Now, seed: maphash.MakeSeed()}
	c.ttlCap.Store(int64(DefaultTTLCap))
	return c, nil
}

// SetTTLCap changes how long an account stays cached at most; it applies to
// entries cached from now on.
func (c *Cached) SetTTLCap(d time.Duration) { c.ttlCap.Store(int64(d)) }

// Inner returns the wrapped store.
func (c *Cached) Inner() Store { return c.inner }

// Invalidate drops the cached entry of account id. Writes through Cached call
// it; a PostgreSQL listener calls it for other instances' writes.
func (c *Cached) Invalidate(id string) {
	st := c.stripe(id)
	st.mu.Lock()
	st.gen++
	c.cache.Del(id)
	st.mu.Unlock()
}

func (c *Cached) stripe(id string) *stripe {
	return &c.stripes[maphash.String(c.seed, id)%cacheStripes]
}

// GetAccount returns the account, from the cache when it is there.
//
// The returned account may be SHARED with the cache and with every other
// caller: treat it as read-only, and Clone before modifying it.
func (c *Cached) GetAccount(ctx context.Context, id string) (*account.Account, error) {
	if a, ok := c.cache.Get(id); ok {
		return a, nil
	}
	st := c.stripe(id)
	st.mu.RLock()
	gen := st.gen
	st.mu.RUnlock()
	a, err := c.inner.GetAccount(ctx, id)
	if err != nil {
		return nil, err
	}
	if ttl := c.ttl(a); ttl > 0 {
		st.mu.RLock()
		if st.gen == gen {
			c.cache.SetWithTTL(id, a, accountCost(a), ttl)
		}
		st.mu.RUnlock()
	}
	return a, nil
}

// ttl is how long a may be cached: until its access token expires, at most
// the cap. An account whose token has expired is not cached, so that the
// refresher sees the store's row.
func (c *Cached) ttl(a *account.Account) time.Duration {
	ttl := time.Duration(c.ttlCap.Load())
	if exp := a.Credentials.Expiry; !exp.IsZero() {
		if left := exp.Sub(c.now()); left < ttl {
			ttl = left
		}
	}
	return ttl
}

// accountCost is what an account costs the heap once cached, in bytes: the
// account and everything it points to, rounded up to the allocator's size
// classes, plus ristretto's own bookkeeping of the entry. The figures were
// measured (BenchmarkCacheFootprint) so that cache_size bounds the heap the
// cache really holds.
func accountCost(a *account.Account) int64 {
	cr := &a.Credentials
	n := cacheEntryOverhead + allocSize(int(unsafe.Sizeof(*a)))
	for _, s := range [...]string{a.ID, a.TenantID, a.Integration, string(a.Method), string(a.Status),
		cr.AccessToken, cr.RefreshToken, cr.TokenType, cr.Scope, cr.APIKey, cr.Username, cr.Password} {
		n += stringCost(s)
	}
	if a.Context != nil {
		n += valueCost(a.Context)
	}
	if a.LastError != nil {
		n += allocSize(int(unsafe.Sizeof(*a.LastError))) + stringCost(a.LastError.Code) + stringCost(a.LastError.Message)
	}
	return int64(n)
}

// cacheEntryOverhead is ristretto's bookkeeping of one entry: its store
// map's slot and item, the expiry bucket's entry and the policy's cost
// entry (measured with BenchmarkCacheFootprint).
const cacheEntryOverhead = 200

// allocSize rounds an allocation of n bytes up to (about) the size class
// the Go allocator serves it from.
func allocSize(n int) int {
	switch {
	case n == 0:
		return 0
	case n <= 16:
		return 16
	case n <= 128:
		return (n + 15) &^ 15
	case n <= 256:
		return (n + 31) &^ 31
	case n <= 512:
		return (n + 63) &^ 63
	case n <= 1024:
		return (n + 127) &^ 127
	}
	return (n + 255) &^ 255
}

func stringCost(s string) int { return allocSize(len(s)) }

// valueCost is the heap held by a value decoded from JSON into an any:
// maps, slices, boxed strings and numbers.
func valueCost(v any) int {
	switch v := v.(type) {
	case map[string]any:
		// A map's header plus its groups of eight slots of a string key
		// and an interface value, and their control words.
		n := 48 + allocSize(((len(v)+7)/8)*(8+8*(16+16)))
		for k, e := range v {
			n += stringCost(k) + valueCost(e)
		}
		return n
	case []any:
		n := allocSize(16 * cap(v))
		for _, e := range v {
			n += valueCost(e)
		}
		return n
	case string:
		return 16 + stringCost(v)
	case float64, json.Number:
		return 16
	}
	return 0
}

// CreateAccount creates a through the wrapped store.
func (c *Cached) CreateAccount(ctx context.Context, a *account.Account, events []Event) error {
	defer c.Invalidate(a.ID)
	return c.inner.CreateAccount(ctx, a, events)
}

// UpdateAccount updates a through the wrapped store and drops its entry,
// whether or not the write succeeded (a conflict means the entry is stale).
func (c *Cached) UpdateAccount(ctx context.Context, a *account.Account, events []Event) error {
	defer c.Invalidate(a.ID)
	return c.inner.UpdateAccount(ctx, a, events)
}

// DeleteAccount deletes the account through the wrapped store.
func (c *Cached) DeleteAccount(ctx context.Context, id string, events []Event) error {
	defer c.Invalidate(id)
	return c.inner.DeleteAccount(ctx, id, events)
}

// CompleteLink completes the link through the wrapped store.
func (c *Cached) CompleteLink(ctx context.Context, linkTokenHash []byte, a *account.Account, create bool, events []Event) error {
	defer c.Invalidate(a.ID)
	return c.inner.CompleteLink(ctx, linkTokenHash, a, create, events)
}

// ListAccounts passes through.
func (c *Cached) ListAccounts(ctx context.Context, f Filter) (Page, error) {
	return c.inner.ListAccounts(ctx, f)
}

// ClaimExpiring passes through.
func (c *Cached) ClaimExpiring(ctx context.Context, before time.Time, lease time.Duration, limit int) ([]string, error) {
	return c.inner.ClaimExpiring(ctx, before, lease, limit)
}

// WithRefreshLock passes through.
func (c *Cached) WithRefreshLock(ctx context.Context, id string, fn func(ctx context.Context) error) error {
	return c.inner.WithRefreshLock(ctx, id, fn)
}

// CreateLinkToken passes through.
func (c *Cached) CreateLinkToken(ctx context.Context, lt *LinkToken) error {
	return c.inner.CreateLinkToken(ctx, lt)
}

// GetLinkToken passes through.
func (c *Cached) GetLinkToken(ctx context.Context, hash []byte) (*LinkToken, error) {
	return c.inner.GetLinkToken(ctx, hash)
}

// CreateConnectState passes through.
func (c *Cached) CreateConnectState(ctx context.Context, s *ConnectState) error {
	return c.inner.CreateConnectState(ctx, s)
}

// TakeConnectState passes through.
func (c *Cached) TakeConnectState(ctx context.Context, hash []byte) (*ConnectState, error) {
	return c.inner.TakeConnectState(ctx, hash)
}

// AddEvents passes through.
func (c *Cached) AddEvents(ctx context.Context, events []Event) error {
	return c.inner.AddEvents(ctx, events)
}

// FanOut passes through.
func (c *Cached) FanOut(ctx context.Context, limit int, endpoints func(Event) []string) ([]Event, error) {
	return c.inner.FanOut(ctx, limit, endpoints)
}

// ClaimDeliveries passes through.
func (c *Cached) ClaimDeliveries(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]Delivery, error) {
	return c.inner.ClaimDeliveries(ctx, now, lease, limit)
}

// ClaimEndpointDeliveries passes through.
func (c *Cached) ClaimEndpointDeliveries(ctx context.Context, now time.Time, lease time.Duration, claims []EndpointClaim) ([]Delivery, error) {
	return c.inner.ClaimEndpointDeliveries(ctx, now, lease, claims)
}

// PendingEndpoints passes through.
func (c *Cached) PendingEndpoints(ctx context.Context) ([]string, error) {
	return c.inner.PendingEndpoints(ctx)
}

// FinishAttempt passes through.
func (c *Cached) FinishAttempt(ctx context.Context, d *Delivery) error {
	return c.inner.FinishAttempt(ctx, d)
}

// GetDelivery passes through.
func (c *Cached) GetDelivery(ctx context.Context, id string) (*Delivery, error) {
	return c.inner.GetDelivery(ctx, id)
}

// ListDeliveries passes through.
func (c *Cached) ListDeliveries(ctx context.Context, f DeliveryFilter) (DeliveryPage, error) {
	return c.inner.ListDeliveries(ctx, f)
}

// Redeliver passes through.
func (c *Cached) Redeliver(ctx context.Context, id string, now time.Time) error {
	return c.inner.Redeliver(ctx, id, now)
}

// DisableEndpoint passes through.
func (c *Cached) DisableEndpoint(ctx context.Context, endpoint, reason string, at time.Time) error {
	return c.inner.DisableEndpoint(ctx, endpoint, reason, at)
}

// EnableEndpoint passes through.
func (c *Cached) EnableEndpoint(ctx context.Context, endpoint string) error {
	return c.inner.EnableEndpoint(ctx, endpoint)
}

// DisabledEndpoints passes through.
func (c *Cached) DisabledEndpoints(ctx context.Context) (map[string]string, error) {
	return c.inner.DisabledEndpoints(ctx)
}

// PendingDeliveries passes through.
func (c *Cached) PendingDeliveries(ctx context.Context) (int, error) {
	return c.inner.PendingDeliveries(ctx)
}

// Purge passes through: purged rows are never accounts, so nothing cached goes stale.
func (c *Cached) Purge(ctx context.Context, now time.Time, r Retention) (PurgeCounts, error) {
	return c.inner.Purge(ctx, now, r)
}

// Close closes the cache and the wrapped store.
func (c *Cached) Close() error {
	c.cache.Close()
	return c.inner.Close()
}
