package webhook

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

// BenchmarkDeliveries measures how many deliveries per second one
// dispatcher sends to a local receiver, the outbox read and written for each.
func BenchmarkDeliveries(b *testing.B) {
	st := openStore(b)
	rc := newReceiver(b)
	opts := fastOptions(b)
	opts.Client = nil // the dispatcher's own transport, as in production
	opts.Concurrency = 8
	d := NewDispatcher(st, []Endpoint{{URL: rc.URL(), Secrets: []string{newSecret(b)}}}, opts)
	for done := 0; done < b.N; done += 5000 {
		addTestEvents(b, st, min(5000, b.N-done))
	}
	b.ResetTimer()
	start := time.Now()
	startDispatcher(b, d)
	waitFor(b, "every delivery recorded", 10*time.Minute, func() bool {
		n, err := st.PendingDeliveries(context.Background())
		return err == nil && n == 0 && rc.count() >= b.N
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
}

// BenchmarkDeliveriesOfAccounts is BenchmarkDeliveries with account events,
// three for each of many accounts, so every claim checks that no earlier
// event of the same account to the endpoint is still pending.
func BenchmarkDeliveriesOfAccounts(b *testing.B) {
	st := openStore(b)
	rc := newReceiver(b)
	opts := fastOptions(b)
	opts.Client = nil
	opts.Concurrency = 8
	d := NewDispatcher(st, []Endpoint{{URL: rc.URL(), Secrets: []string{newSecret(b)}}}, opts)
	names := []string{account.EventCreated, account.EventActive, account.EventUpdated}
	for done := 0; done < b.N; done += 5000 {
		n := min(5000, b.N-done)
		evs := make([]tokenstore.Event, 0, n)
		for i := range n {
			k := done + i
			evs = append(evs, tokenstore.Event{ID: newEventID(), Name: names[k%3], AccountID: "acc_" + strconv.Itoa(k/3),
				Payload: []byte(`{}`), CreatedAt: time.Now()})
		}
		if err := st.AddEvents(context.Background(), evs); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	startDispatcher(b, d)
	waitFor(b, "every delivery recorded", 10*time.Minute, func() bool {
		n, err := st.PendingDeliveries(context.Background())
		return err == nil && n == 0 && rc.count() >= b.N
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
}

// BenchmarkTransitionToDelivery measures the time from committing an
// account's active → needs_reauth transition to its webhook arriving.
func BenchmarkTransitionToDelivery(b *testing.B) {
	st := openStore(b)
	arrived := make(chan string, 1)
	rc := newReceiver(b)
	rc.setAnswer(func(_ int, _ http.ResponseWriter, r *http.Request) int {
		arrived <- r.Header.Get(HeaderID)
		return http.StatusOK
	})
	opts := fastOptions(b)
	opts.PollInterval = time.Second // latency must come from Notify, not polling
	d := NewDispatcher(st, []Endpoint{{URL: rc.URL(), Secrets: []string{newSecret(b)}}}, opts)
	startDispatcher(b, d)
	ctx := context.Background()

	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		now := time.Now()
		a := &account.Account{ID: "acc_" + strconv.Itoa(i), TenantID: "t", Integration: "hubspot",
			Method: account.MethodOAuth2, Status: account.StatusActive, CreatedAt: now, UpdatedAt: now}
		if err := st.CreateAccount(ctx, a, nil); err != nil {
			b.Fatal(err)
		}
		c, err := a.Apply(account.AuthFailed, nil, now)
		if err != nil {
			b.Fatal(err)
		}
		evs := tokenstore.EventsFor(c, a, now)
		b.StartTimer()
		t0 := time.Now()
		if err := st.UpdateAccount(ctx, a, evs); err != nil {
			b.Fatal(err)
		}
		d.Notify()
		if id := <-arrived; id != evs[0].ID {
			b.Fatalf("got %s, want %s", id, evs[0].ID)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkFirstDeliveryWithBacklog measures how soon a starting dispatcher
// sends its first delivery when 100,000 events wait in the outbox (a long
// outage of the application, or a restart after one): the backlog is read
// in batches, so the first delivery does not wait for all of it.
func BenchmarkFirstDeliveryWithBacklog(b *testing.B) {
	st := openStore(b)
	for done := 0; done < 100_000; done += 5000 {
		addTestEvents(b, st, 5000)
	}
	rc := newReceiver(b)
	eps := []Endpoint{{URL: rc.URL(), Secrets: []string{newSecret(b)}}}
	b.ResetTimer()
	for range b.N {
		before := rc.count()
		d := NewDispatcher(st, eps, fastOptions(b))
		if err := d.Start(); err != nil {
			b.Fatal(err)
		}
		waitFor(b, "the first delivery", time.Minute, func() bool { return rc.count() > before })
		b.StopTimer()
		if err := d.Stop(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
