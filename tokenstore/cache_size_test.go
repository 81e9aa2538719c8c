package tokenstore

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/linkgate/linkgate/account"
)

// generatedStore makes a fresh account for every GetAccount, decoded from
// JSON as the stores decode their rows, and keeps none: the heap it leaves
// behind is the cache's alone.
type generatedStore struct {
	Store
	expiry time.Time
	// small makes api_key accounts with a short key and no context, where
	// the fixed part of the cost dominates.
	small bool
}

func (g *generatedStore) GetAccount(_ context.Context, id string) (*account.Account, error) {
	if g.small {
		return &account.Account{
			ID: id, TenantID: "t" + id[len(id)-6:], Integration: "crm",
			Method: account.MethodAPIKey, Status: account.StatusActive, Version: 1,
			Credentials: account.Credentials{APIKey: "k-" + id},
		}, nil
	}
	a := &account.Account{
		ID: id, TenantID: "tenant_" + id[len(id)-6:], Integration: "hubspot",
		Method: account.MethodOAuth2, Status: account.StatusActive, Version: 3,
		CreatedAt: g.expiry, UpdatedAt: g.expiry,
	}
	ctxJSON := fmt.Appendf(nil, `{"portal_id":"%s","region":"eu1","user_count":12}`, id[len(id)-6:])
	if err := json.Unmarshal(ctxJSON, &a.Context); err != nil {
		return nil, err
	}
	// Token shapes of a typical provider: opaque access and refresh tokens
	// of a few dozen to a few hundred characters.
	creds := fmt.Appendf(nil, `{"access_token":"%s","refresh_token":"%s","token_type":"bearer","scope":"crm.objects.contacts.read crm.objects.contacts.write oauth","expiry":%q}`,
		"at-"+id+"-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"rt-"+id+"-0123456789abcdef0123456789abcdef",
		g.expiry.Format(time.RFC3339Nano))
	if err := json.Unmarshal(creds, &a.Credentials); err != nil {
		return nil, err
	}
	return a, nil
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// cacheFootprint fills a cache of maxCost bytes by touching twice as many
// accounts as it is estimated to hold, and returns the heap the cache
// holds afterwards and the number of accounts in it.
func cacheFootprint(t testing.TB, maxCost int64, small bool) (heap uint64, held int) {
	g := &generatedStore{expiry: time.Now().Add(time.Hour), small: small}
	sample, _ := g.GetAccount(context.Background(), "acc_000000")
	n := int(2 * maxCost / accountCost(sample))
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("acc_%06d", i)
	}
	before := heapInUse()
	c, err := NewCached(g, maxCost)
	if err != nil {
		t.Fatal(err)
	}
	defer c.cache.Close()
	ctx := context.Background()
	for pass := 0; pass < 2; pass++ {
		for _, id := range ids {
			if _, err := c.GetAccount(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		c.cache.Wait()
	}
	after := heapInUse()
	for _, id := range ids {
		if _, ok := c.cache.Get(id); ok {
			held++
		}
	}
	runtime.KeepAlive(ids)
	return after - before, held
}

// BenchmarkCacheFootprint measures the heap a full cache holds against its
// configured size (cache_size): heap/cache_size should be close to 1.
//
//	go test -run XXX -bench CacheFootprint -benchtime 1x ./tokenstore/
func BenchmarkCacheFootprint(b *testing.B) {
	for _, shape := range []string{"oauth2", "small_api_key"} {
		for _, size := range []int64{16 << 20, 64 << 20} {
			b.Run(fmt.Sprintf("%s/cache_size=%dMiB", shape, size>>20), func(b *testing.B) {
				var heap uint64
				var held int
				for b.Loop() {
					heap, held = cacheFootprint(b, size, shape != "oauth2")
				}
				b.ReportMetric(float64(heap)/float64(size), "heap/cache_size")
				b.ReportMetric(float64(heap)/float64(held), "heap_B/account")
				b.ReportMetric(float64(held), "accounts")
			})
		}
	}
}

// TestCacheSizeBoundsTheHeap checks that a full cache holds about the heap
// it was configured for (cache_size), whatever the accounts look like: an
// estimate that misses ristretto's bookkeeping or the allocator's rounding
// lets the heap grow well past the configured size.
func TestCacheSizeBoundsTheHeap(t *testing.T) {
	for _, small := range []bool{false, true} {
		heap, held := cacheFootprint(t, 4<<20, small)
		ratio := float64(heap) / float64(4<<20)
		t.Logf("small=%v: %d accounts held, heap %.2f × cache_size", small, held, ratio)
		if ratio < 0.8 || ratio > 1.2 {
			t.Errorf("small=%v: a full cache of 4 MiB holds %.2f MiB of heap", small, float64(heap)/(1<<20))
		}
	}
}
