package clustertest

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// storages are the two stores compared side by side, interleaved in one run.
var storages = []struct {
	name string
	opts []option
}{
	{"sqlite", []option{withSQLite()}},
	{"postgres", nil},
}

// BenchmarkProxy measures proxied calls per second through one instance for
// one account with a valid token: the hot path, served from the cache.
func BenchmarkProxy(b *testing.B) {
	for _, st := range storages {
		b.Run(st.name, func(b *testing.B) {
			if st.name == "postgres" {
				pgSchema(b) // skip early without a database
			}
			c := newCluster(b, 1, st.opts...)
			tok := c.as.Authorize(b, oauthClient, redirectURI, "bench", nil)
			id := c.importAccount(c.nodes[0], "bench", map[string]any{
				"access_token": tok.AccessToken, "refresh_token": tok.RefreshToken, "expires_in": 3600})
			path := "/proxy/me?integrated_account_id=" + id
			if s, body, err := c.do(c.nodes[0], "GET", path, nil); s != http.StatusOK {
				b.Fatalf("warm-up call: %d %s %v", s, body, err)
			}
			b.SetParallelism(32) // 64 concurrent callers on two cores
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if s, body, err := c.do(c.nodes[0], "GET", path, nil); s != http.StatusOK {
						b.Errorf("%d %s %v", s, body, err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
		})
	}
}

// BenchmarkStampede measures how long 300 concurrent calls, spread over
// three instances sharing one store, take for an account whose token has
// just expired: one refresh, everyone else waits for it. Each op is one
// stampede on a fresh account.
func BenchmarkStampede(b *testing.B) {
	const calls = 300
	for _, st := range storages {
		b.Run(st.name, func(b *testing.B) {
			if st.name == "postgres" {
				pgSchema(b)
			}
			c := newCluster(b, 3, st.opts...)
			refreshes := 0
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				c.as.ResetCounts()
				id := c.importAccount(c.nodes[0], fmt.Sprintf("stampede-%d", i), c.expiredToken(fmt.Sprintf("user%d", i)))
				b.StartTimer()
				var wg sync.WaitGroup
				for j := range calls {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if s, body, err := c.do(c.nodes[j%3], "GET", "/proxy/me?integrated_account_id="+id, nil); s != http.StatusOK {
							b.Errorf("%d %s %v", s, body, err)
						}
					}()
				}
				wg.Wait()
				refreshes += c.as.TokenCalls("refresh_token")
			}
			b.ReportMetric(float64(refreshes)/float64(b.N), "refreshes/op")
		})
	}
}
