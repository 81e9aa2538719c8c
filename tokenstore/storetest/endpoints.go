package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/tokenstore"
)

// testClaimEndpointDeliveries checks per-endpoint claims: each endpoint gets
// at most its limit, soonest due first, in the order of the claims; leased
// deliveries are not claimed again; CreatedBefore bounds what is taken;
// concurrent claimers never get the same delivery; PendingEndpoints names
// every endpoint with pending deliveries.
func testClaimEndpointDeliveries(t *testing.T, s tokenstore.Store) {
	const a, b, c = "https://a.example/h", "https://b.example/h", "https://c.example/h"
	var evs []tokenstore.Event
	for i := range 6 {
		evs = append(evs, tokenstore.Event{Name: "test", AccountID: fmt.Sprintf("acc_%d", i), Payload: []byte(`{}`)})
	}
	if err := s.AddEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	// a gets every event, b the even ones, c the first only.
	fanned, err := s.FanOut(ctx, 100, func(e tokenstore.Event) []string {
		eps := []string{a}
		var n int
		fmt.Sscanf(e.AccountID, "acc_%d", &n)
		if n%2 == 0 {
			eps = append(eps, b)
		}
		if n == 0 {
			eps = append(eps, c)
		}
		return eps
	})
	if err != nil || len(fanned) != 6 {
		t.Fatalf("FanOut = %d, %v", len(fanned), err)
	}
	eps, err := s.PendingEndpoints(ctx)
	if err != nil || fmt.Sprint(eps) != fmt.Sprint([]string{a, b, c}) {
		t.Fatalf("PendingEndpoints = %v, %v", eps, err)
	}

	now := time.Now()
	got, err := s.ClaimEndpointDeliveries(ctx, now, time.Minute, []tokenstore.EndpointClaim{{Endpoint: b, Limit: 2}, {Endpoint: a, Limit: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[0].Endpoint != b || got[1].Endpoint != b || got[2].Endpoint != a || got[3].Endpoint != a {
		t.Fatalf("claimed %d deliveries, want b's two then a's two: %+v", len(got), got)
	}
	first := map[string]bool{}
	for i, d := range got {
		first[d.ID] = true
		if d.LeaseUntil.Sub(now.Add(time.Minute)).Abs() > time.Microsecond {
			t.Errorf("lease %s, want %s", d.LeaseUntil, now.Add(time.Minute))
		}
		if i%2 == 1 {
			p := got[i-1]
			if d.NextAttemptAt.Before(p.NextAttemptAt) || (d.NextAttemptAt.Equal(p.NextAttemptAt) && d.ID < p.ID) {
				t.Errorf("%s: not soonest due first: %+v before %+v", d.Endpoint, p, d)
			}
		}
	}
	// Leased deliveries are not claimed again; the next ones are.
	got, err = s.ClaimEndpointDeliveries(ctx, now, time.Minute, []tokenstore.EndpointClaim{{Endpoint: a, Limit: 1}, {Endpoint: c, Limit: 0}})
	if err != nil || len(got) != 1 || got[0].Endpoint != a || first[got[0].ID] {
		t.Fatalf("second claim = %+v, %v; want one of a's not yet claimed", got, err)
	}
	// Nothing was created before a time long past.
	got, err = s.ClaimEndpointDeliveries(ctx, now, time.Minute, []tokenstore.EndpointClaim{{Endpoint: c, Limit: 5, CreatedBefore: now.Add(-time.Hour)}})
	if err != nil || len(got) != 0 {
		t.Fatalf("claim of deliveries created an hour ago = %d, %v; want none", len(got), err)
	}

	// Concurrent claimers of one endpoint share its deliveries without
	// overlap: a's three remaining go to exactly one claimer each.
	var (
		mu   sync.Mutex
		seen = map[string]int{}
		wg   sync.WaitGroup
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 {
				ds, err := s.ClaimEndpointDeliveries(ctx, now, time.Hour, []tokenstore.EndpointClaim{{Endpoint: a, Limit: 1}})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, d := range ds {
					seen[d.ID]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 3 {
		t.Fatalf("concurrent claimers got %d distinct deliveries, want a's 3 remaining", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("delivery %s claimed %d times", id, n)
		}
	}
}
