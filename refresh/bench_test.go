package refresh

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

// BenchmarkCredentials measures the proxy path — read the account through
// the ristretto cache, then Credentials — over 100,000 accounts, without and
// with the sweeper refreshing the 1% that expire within RefreshAhead against
// the real auth server and the SQLite store.
func BenchmarkCredentials(b *testing.B) {
	const total, expiring = 100_000, 1_000
	e := newEnv(b, func(o *Options) {
		o.Now = time.Now
		o.SweepInterval = 100 * time.Millisecond
		o.SweepConcurrency = 8
		o.SweepJitter = time.Millisecond
	})
	ctx := context.Background()
	ids := make([]string, 0, total)
	for i := range expiring {
		ids = append(ids, e.connect(fmt.Sprintf("acc-exp-%06d", i), time.Now().Add(5*time.Minute)).ID)
	}
	now := time.Now()
	for i := expiring; i < total; i++ {
		a := &account.Account{
			ID: fmt.Sprintf("acc-%06d", i), TenantID: "t", Integration: e.integ.Name, Method: account.MethodOAuth2,
			Status: account.StatusActive,
			Credentials: account.Credentials{
				AccessToken: fmt.Sprintf("at-%d", i), RefreshToken: fmt.Sprintf("rt-%d", i), TokenType: "bearer",
				Expiry: now.Add(time.Hour + time.Duration(i)*time.Millisecond),
			},
			CreatedAt: now, UpdatedAt: now,
		}
		if err := e.store.CreateAccount(ctx, a, nil); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	cached, err := tokenstore.NewCached(e.store, 256<<20)
	if err != nil {
		b.Fatal(err)
	}
	// Warm the cache as a running proxy's would be.
	var warm sync.WaitGroup
	for w := range 2 {
		warm.Go(func() {
			for i := w; i < len(ids); i += 2 {
				if _, err := cached.GetAccount(ctx, ids[i]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	warm.Wait()
	// The proxy's refresher: cached reads, uncached under the lock.
	e.r = e.newRefresherOn(cached, func(o *Options) {
		o.Now = time.Now
		o.SweepInterval = 100 * time.Millisecond
		o.SweepConcurrency = 8
		o.SweepJitter = time.Millisecond
	})
	run := func(b *testing.B) {
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				a, err := cached.GetAccount(ctx, ids[rand.N(len(ids))])
				if err != nil {
					b.Error(err)
					return
				}
				if _, err := e.r.Credentials(ctx, a); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	}
	b.Run("sweeper=off", run)
	if err := e.r.Start(); err != nil {
		b.Fatal(err)
	}
	b.Run("sweeper=on", func(b *testing.B) {
		before := e.refreshCalls()
		run(b)
		b.ReportMetric(float64(e.refreshCalls()-before), "sweeper-refreshes")
	})
}

// BenchmarkStampede: 1,000 concurrent callers on an expired token against
// the fosite server. Reports token calls per stampede (must be 1) and the
// callers' p50/p99 wait beyond the token endpoint's own latency.
func BenchmarkStampede(b *testing.B) {
	const callers = 1000
	e := newEnv(b, nil)
	a := e.connect("acc-bench-stampede", e.clock.Now().Add(time.Hour))
	var waits []time.Duration
	calls := 0
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		a = e.setExpiry(a.ID, e.clock.Now().Add(-time.Second))
		before, sumBefore := e.refreshCalls(), histogramSum(e.r.metrics.duration)
		start := make(chan struct{})
		var wg sync.WaitGroup
		got := make([]time.Duration, callers)
		for i := range callers {
			wg.Go(func() {
				<-start
				t0 := time.Now()
				if _, err := e.r.Credentials(context.Background(), a); err != nil {
					b.Error(err)
				}
				got[i] = time.Since(t0)
			})
		}
		b.StartTimer()
		close(start)
		wg.Wait()
		b.StopTimer()
		calls += e.refreshCalls() - before
		endpoint := time.Duration((histogramSum(e.r.metrics.duration) - sumBefore) * float64(time.Second))
		for _, w := range got {
			waits = append(waits, max(w-endpoint, 0))
		}
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(waits)
	b.ReportMetric(float64(calls)/float64(b.N), "token-calls/op")
	b.ReportMetric(float64(waits[len(waits)/2].Microseconds())/1000, "p50-extra-ms")
	b.ReportMetric(float64(waits[len(waits)*99/100].Microseconds())/1000, "p99-extra-ms")
	if calls != b.N {
		b.Fatalf("%d token calls for %d stampedes", calls, b.N)
	}
}

func histogramSum(h prometheus.Histogram) float64 {
	var m dto.Metric
	if err := h.(prometheus.Metric).Write(&m); err != nil {
		return 0
	}
	return m.GetHistogram().GetSampleSum()
}
