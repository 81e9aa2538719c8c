package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"go.uber.org/goleak"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/testenv"
	"github.com/linkgate/linkgate/tokenstore"
)

// failAccount stores an active account and then the transition that makes
// it need reauthorization, with its outbox event, as the proxy path does.
func failAccount(t testing.TB, st tokenstore.Store, id string) {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	a := &account.Account{ID: id, TenantID: "tenant-1", Integration: "hubspot", Method: account.MethodOAuth2,
		Status: account.StatusActive, CreatedAt: now, UpdatedAt: now,
		Credentials: account.Credentials{AccessToken: "at-never-sent", RefreshToken: "rt-never-sent"}}
	if err := st.CreateAccount(ctx, a, nil); err != nil {
		t.Fatal(err)
	}
	c, err := a.Apply(account.AuthFailed, &account.Error{Code: "invalid_grant", Message: "refresh refused"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.UpdateAccount(ctx, a, tokenstore.EventsFor(c, a, now)); err != nil {
		t.Fatal(err)
	}
}

func addTestEvents(t testing.TB, st tokenstore.Outbox, n int) []tokenstore.Event {
	t.Helper()
	evs := make([]tokenstore.Event, 0, n)
	for i := range n {
		evs = append(evs, tokenstore.Event{ID: newEventID(), Name: account.EventTest,
			Payload: []byte(`{"n":` + strconv.Itoa(i) + `}`), CreatedAt: time.Now()})
	}
	if err := st.AddEvents(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestAuthenticationErrorDeliveredSigned(t *testing.T) {
	st := openStore(t)
	rc := newReceiver(t)
	cur, old := newSecret(t), newSecret(t)
	ep := Endpoint{ID: "wh_app", URL: rc.URL(), Secrets: []string{cur, old}, Events: []string{"integrated_account:*"}}

	var emitted []tokenstore.Event
	var emu sync.Mutex
	opts := fastOptions(t)
	opts.Emit = func(e tokenstore.Event) { emu.Lock(); emitted = append(emitted, e); emu.Unlock() }
	d := NewDispatcher(st, []Endpoint{ep}, opts)
	startDispatcher(t, d)

	failAccount(t, st, "acc_1")
	d.Notify()
	waitFor(t, "the delivery", 10*time.Second, func() bool { return rc.count() == 1 })

	got := rc.deliveries()[0]
	for name, sec := range map[string]string{"current": cur, "previous": old} {
		wh, _ := standardwebhooks.NewWebhook(sec)
		if err := wh.Verify(got.body, got.header); err != nil {
			t.Fatalf("%s secret: official library rejects the delivery: %v", name, err)
		}
	}
	if err := Verify([]string{cur}, got.header, got.body, 0); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if v, want := got.header.Get(HeaderTruto), "format=sha256,v="+TrutoSignature(cur, got.body, EncodingHex); v != want {
		t.Fatalf("X-Truto-Signature = %q, want %q", v, want)
	}
	if got.header.Get("User-Agent") != DefaultUserAgent || got.header.Get("Content-Type") != "application/json" {
		t.Fatalf("headers = %v", got.header)
	}
	var env struct {
		ID, Event, EnvironmentID, WebhookID, CreatedAt string
		Payload                                        account.View
	}
	if err := json.Unmarshal(got.body, &env); err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	_ = json.Unmarshal(got.body, &raw)
	if raw["event"] != account.EventAuthenticationError || raw["webhook_id"] != "wh_app" || raw["environment_id"] != "env_test" ||
		raw["id"] != got.header.Get(HeaderID) {
		t.Fatalf("envelope = %s", got.body)
	}
	if env.Payload.ID != "acc_1" || env.Payload.Status != account.StatusNeedsReauth || env.Payload.LastError == nil ||
		env.Payload.LastError.Code != "invalid_grant" {
		t.Fatalf("payload = %+v", env.Payload)
	}
	if strings.Contains(string(got.body), "at-never-sent") || strings.Contains(string(got.body), "rt-never-sent") {
		t.Fatal("a credential reached the webhook")
	}
	emu.Lock()
	if len(emitted) != 1 || emitted[0].Name != account.EventAuthenticationError {
		t.Fatalf("emitted %v", emitted)
	}
	emu.Unlock()
	waitFor(t, "the delivery to be recorded", 5*time.Second, func() bool {
		ds := deliveriesOf(t, st, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryDelivered})
		return len(ds) == 1 && ds[0].Attempts == 1 && ds[0].LastStatus == http.StatusNoContent
	})
}

func TestRetriesUntilReceiverRecovers(t *testing.T) {
	st := openStore(t)
	rc := testenv.NewWebhookReceiver(t)
	rc.FailNext(2, http.StatusInternalServerError)
	sec := newSecret(t)
	d := NewDispatcher(st, []Endpoint{{URL: rc.URL(), Secrets: []string{sec}}}, fastOptions(t))
	startDispatcher(t, d)
	failAccount(t, st, "acc_1")
	d.Notify()

	waitFor(t, "delivered", 10*time.Second, func() bool {
		return len(deliveriesOf(t, st, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryDelivered})) == 1
	})
	got := rc.Deliveries()
	if len(got) != 3 {
		t.Fatalf("receiver got %d requests, want 3", len(got))
	}
	for _, g := range got {
		if g.Header.Get(HeaderID) != got[0].Header.Get(HeaderID) || string(g.Body) != string(got[0].Body) {
			t.Fatal("a retry changed the webhook-id or the body")
		}
		if err := Verify([]string{sec}, g.Header, g.Body, 0); err != nil {
			t.Fatal(err)
		}
	}
	dl := deliveriesOf(t, st, tokenstore.DeliveryFilter{})[0]
	if dl.Attempts != 3 || dl.LastStatus != http.StatusOK || dl.LastError != "" {
		t.Fatalf("delivery = %+v", dl)
	}
}

func TestReceiverDownThenUp(t *testing.T) {
	st := openStore(t)
	rc := testenv.NewWebhookReceiver(t)
	rc.Down()

	opts := fastOptions(t)
	opts.Schedule = []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond,
		400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second, time.Second}
	d := NewDispatcher(st, []Endpoint{{URL: rc.URL(), Secrets: []string{newSecret(t)}}}, opts)
	startDispatcher(t, d)
	failAccount(t, st, "acc_1")
	d.Notify()

	waitFor(t, "a failed attempt", 10*time.Second, func() bool {
		ds := deliveriesOf(t, st, tokenstore.DeliveryFilter{})
		return len(ds) == 1 && ds[0].Attempts >= 1 && ds[0].LastError != ""
	})
	dl := deliveriesOf(t, st, tokenstore.DeliveryFilter{})[0]
	if dl.Status != tokenstore.DeliveryPending || dl.LastStatus != 0 || !strings.HasPrefix(dl.LastError, "connection failed") {
		t.Fatalf("after a refused connection: %+v", dl)
	}

	rc.Up()
	waitFor(t, "delivered after the receiver came up", 15*time.Second, func() bool {
		return len(deliveriesOf(t, st, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryDelivered})) == 1
	})
	got := rc.Deliveries()
	if len(got) != 1 || got[0].Header.Get(HeaderID) != dl.Event.ID {
		t.Fatalf("receiver got %d requests", len(got))
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	st := openStore(t)
	rc := testenv.NewWebhookReceiver(t)
	rc.FailNext(1, http.StatusTooManyRequests)
	rc.SetRetryAfter("1")
	d := NewDispatcher(st, []Endpoint{{URL: rc.URL(), Secrets: []string{newSecret(t)}}}, fastOptions(t))
	startDispatcher(t, d)
	addTestEvents(t, st, 1)
	d.Notify()

	waitFor(t, "delivered", 10*time.Second, func() bool {
		return len(deliveriesOf(t, st, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryDelivered})) == 1
	})
	got := rc.Deliveries()
	if len(got) != 2 || got[0].Status != http.StatusTooManyRequests {
		t.Fatalf("%d requests, want a 429 and a success", len(got))
	}
	// The schedule alone would retry after 20ms; Retry-After asked for 1s.
	if gap := got[1].Time.Sub(got[0].Time); gap < time.Second {
		t.Fatalf("retried %s after a 429 with Retry-After: 1", gap)
	}
}

func TestGoneDisablesEndpoint(t *testing.T) {
	st := openStore(t)
	gone, ok := testenv.NewWebhookReceiver(t), testenv.NewWebhookReceiver(t)
	gone.SetStatus(http.StatusGone)
	core, logs := observedLogger()
	opts := fastOptions(t)
	opts.Logger = core
	d := NewDispatcher(st, []Endpoint{
		{URL: gone.URL(), Secrets: []string{newSecret(t)}},
		{URL: ok.URL(), Secrets: []string{newSecret(t)}},
	}, opts)
	startDispatcher(t, d)
	addTestEvents(t, st, 1)
	d.Notify()
	waitFor(t, "the 410 recorded", 10*time.Second, func() bool {
		return len(deliveriesOf(t, st, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryFailed})) == 1
	})
	dis, err := st.DisabledEndpoints(context.Background())
	if err != nil || dis[gone.URL()] == "" {
		t.Fatalf("disabled endpoints = %v, %v", dis, err)
	}
	if logs.FilterMessageSnippet("410 Gone").Len() == 0 {
		t.Fatal("no error log for the disabled endpoint")
	}

	// Later events go to the healthy endpoint only.
	second := addTestEvents(t, st, 1)[0]
	d.Notify()
	ok.WaitFor(t, 2, 10*time.Second)
	for _, dl := range deliveriesOf(t, st, tokenstore.DeliveryFilter{}) {
		if dl.Event.ID == second.ID && dl.Endpoint == gone.URL() {
			t.Fatalf("a delivery was created for the disabled endpoint: %+v", dl)
		}
	}
	if n := len(gone.Deliveries()); n != 1 {
		t.Fatalf("the gone endpoint got %d requests", n)
	}
}

func TestExhaustedScheduleFailsAndRedeliverWorks(t *testing.T) {
	st := openStore(t)
	rc := testenv.NewWebhookReceiver(t)
	rc.SetStatus(http.StatusBadGateway)
	sec := newSecret(t)
	d := NewDispatcher(st, []Endpoint{{URL: rc.URL(), Secrets: []string{sec}}}, fastOptions(t))
	startDispatcher(t, d)
	failAccount(t, st, "acc_1")
	d.Notify()

	waitFor(t, "failed", 10*time.Second, func() bool {
		return len(deliveriesOf(t, st, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryFailed})) == 1
	})
	dl := deliveriesOf(t, st, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryFailed})[0]
	if n := len(rc.Deliveries()); dl.Attempts != 4 || n != 4 || dl.LastStatus != http.StatusBadGateway || dl.LastError == "" {
		t.Fatalf("after the schedule: %+v, receiver got %d", dl, n)
	}

	rc.SetStatus(0)
	api := NewAPI(st, d)
	rec := doAPI(t, api, http.MethodPost, "/webhook-delivery/"+dl.ID+"/redeliver")
	if rec.Code != http.StatusOK || rec.Body.String() != "{\"success\":true}\n" {
		t.Fatalf("redeliver: %d %s", rec.Code, rec.Body)
	}
	waitFor(t, "redelivered", 10*time.Second, func() bool {
		g, err := st.GetDelivery(context.Background(), dl.ID)
		return err == nil && g.Status == tokenstore.DeliveryDelivered
	})
	got := rc.Deliveries()
	if last := got[len(got)-1]; len(got) != 5 || last.Header.Get(HeaderID) != got[0].Header.Get(HeaderID) || last.Status != http.StatusOK {
		t.Fatal("redelivery changed the webhook-id")
	}
}

func TestTwoDispatchersNeverSendTwiceAtOnce(t *testing.T) {
	path := t.TempDir() + "/shared.db"
	st1 := openStoreAt(t, path)
	st2 := openStoreAt(t, path)
	rc := newReceiver(t)
	rc.setAnswer(func(int, http.ResponseWriter, *http.Request) int { time.Sleep(time.Millisecond); return http.StatusOK })
	eps := []Endpoint{{URL: rc.URL(), Secrets: []string{newSecret(t)}}}
	// A send that outlived fastOptions' 2 s timeout on a busy machine was
	// retried until its short schedule ran out, and the delivery failed:
	// this test is about two senders, not about timeouts.
	opts := fastOptions(t)
	opts.Timeout, opts.Lease = 30*time.Second, time.Minute
	d1 := NewDispatcher(st1, eps, opts)
	d2 := NewDispatcher(st2, eps, opts)
	startDispatcher(t, d1)
	startDispatcher(t, d2)

	const n = 150
	evs := addTestEvents(t, st1, n)
	d1.Notify()
	d2.Notify()
	waitFor(t, "every event delivered", 2*time.Minute, func() bool {
		return len(deliveriesOf(t, st1, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryDelivered})) == n
	})
	seen := map[string]int{}
	for _, g := range rc.deliveries() {
		seen[g.header.Get(HeaderID)]++
	}
	for _, e := range evs {
		if seen[e.ID] != 1 {
			t.Fatalf("event %s sent %d times", e.ID, seen[e.ID])
		}
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.maxDup > 1 {
		t.Fatalf("one delivery was on the wire %d times at once", rc.maxDup)
	}
}

func TestStopWaitsForSendInFlight(t *testing.T) {
	st := openStore(t)
	rc := newReceiver(t)
	release := make(chan struct{})
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	// Runs before the receiver's cleanup, which waits for its handlers.
	t.Cleanup(free)
	rc.setAnswer(func(int, http.ResponseWriter, *http.Request) int { <-release; return http.StatusOK })
	d := NewDispatcher(st, []Endpoint{{URL: rc.URL(), Secrets: []string{newSecret(t)}}}, fastOptions(t))
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	addTestEvents(t, st, 1)
	d.Notify()
	waitFor(t, "the send in flight", 10*time.Second, func() bool { return rc.count() == 1 })

	stopped := make(chan error, 1)
	go func() { stopped <- d.Stop(context.Background()) }()
	// Stop parked, waiting: a Stop that did not wait for the send would
	// have returned by then.
	waitFor(t, "Stop waiting for the send in flight", 30*time.Second, func() bool {
		select {
		case err := <-stopped:
			t.Fatalf("Stop returned %v with a send in flight", err)
		default:
		}
		return parkedIn("webhook.(*Dispatcher).Stop(")
	})
	free()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if ds := deliveriesOf(t, st, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryDelivered}); len(ds) != 1 {
		t.Fatalf("the send finished during Stop was not recorded: %v", ds)
	}
	goleak.VerifyNone(t, goleak.IgnoreCurrent())
}

func TestStopGivesUpAndLeaseReturnsDelivery(t *testing.T) {
	st := openStore(t)
	rc := newReceiver(t)
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	rc.setAnswer(func(n int, _ http.ResponseWriter, r *http.Request) int {
		if n == 1 {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		}
		return http.StatusOK
	})
	opts := fastOptions(t)
	opts.Timeout, opts.Lease = 500*time.Millisecond, 1500*time.Millisecond
	eps := []Endpoint{{URL: rc.URL(), Secrets: []string{newSecret(t)}}}
	d := NewDispatcher(st, eps, opts)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	ev := addTestEvents(t, st, 1)[0]
	d.Notify()
	waitFor(t, "the send in flight", 10*time.Second, func() bool { return rc.count() == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no time to wait
	if err := d.Stop(ctx); err != context.Canceled {
		t.Fatalf("Stop = %v, want context.Canceled", err)
	}
	dl := deliveriesOf(t, st, tokenstore.DeliveryFilter{})[0]
	if dl.Status != tokenstore.DeliveryPending || dl.Attempts != 0 {
		t.Fatalf("an abandoned send was recorded: %+v", dl)
	}

	// Another instance takes it over once the lease has run out.
	d2 := NewDispatcher(st, eps, opts)
	startDispatcher(t, d2)
	waitFor(t, "delivered by the next dispatcher", 10*time.Second, func() bool {
		g, err := st.GetDelivery(context.Background(), dl.ID)
		return err == nil && g.Status == tokenstore.DeliveryDelivered
	})
	got := rc.deliveries()
	if len(got) != 2 || got[1].header.Get(HeaderID) != ev.ID {
		t.Fatalf("receiver got %d requests", len(got))
	}
}

func TestSlowEndpointDoesNotDelayOthers(t *testing.T) {
	slowEndpointDoesNotDelayOthers(t, openStore(t))
}

// TestSlowEndpointDoesNotDelayOthersPostgres is the same on PostgreSQL,
// whose claims skip rows other claimers hold.
func TestSlowEndpointDoesNotDelayOthersPostgres(t *testing.T) {
	dsn, _ := testenv.PostgresSchema(t)
	key, err := tokenstore.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := tokenstore.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := tokenstore.OpenPostgres(context.Background(), dsn, sealer, tokenstore.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	slowEndpointDoesNotDelayOthers(t, st)
}

func slowEndpointDoesNotDelayOthers(t *testing.T, st tokenstore.Store) {
	slow, fast := newReceiver(t), newReceiver(t)
	unblock := make(chan struct{})
	slow.setAnswer(func(_ int, _ http.ResponseWriter, r *http.Request) int {
		select {
		case <-unblock:
		case <-r.Context().Done():
		}
		return http.StatusOK
	})
	opts := fastOptions(t)
	opts.Concurrency = 2
	opts.Timeout, opts.Lease = 30*time.Second, time.Minute
	d := NewDispatcher(st, []Endpoint{
		{URL: slow.URL(), Secrets: []string{newSecret(t)}},
		{URL: fast.URL(), Secrets: []string{newSecret(t)}},
	}, opts)
	startDispatcher(t, d)
	t.Cleanup(func() { close(unblock) }) // runs before Stop: cleanups are LIFO

	const n = 40
	addTestEvents(t, st, n)
	d.Notify()
	waitFor(t, "every event at the fast endpoint while the slow one hangs", 20*time.Second, func() bool {
		return fast.count() == n
	})
	if c := slow.count(); c > opts.Concurrency {
		t.Fatalf("slow endpoint has %d requests open, more than its concurrency %d", c, opts.Concurrency)
	}
}

// limitRecorder is a real store that remembers the largest batch asked of it.
type limitRecorder struct {
	tokenstore.Outbox
	mu                  sync.Mutex
	maxFanOut, maxClaim int
	unfinished          int // claimed and not yet finished
	maxUnfinished       int
}

func (l *limitRecorder) FanOut(ctx context.Context, limit int, f func(tokenstore.Event) []string) ([]tokenstore.Event, error) {
	l.mu.Lock()
	l.maxFanOut = max(l.maxFanOut, limit)
	l.mu.Unlock()
	return l.Outbox.FanOut(ctx, limit, f)
}

func (l *limitRecorder) ClaimEndpointDeliveries(ctx context.Context, now time.Time, lease time.Duration, claims []tokenstore.EndpointClaim) ([]tokenstore.Delivery, error) {
	ds, err := l.Outbox.ClaimEndpointDeliveries(ctx, now, lease, claims)
	l.mu.Lock()
	for _, c := range claims {
		l.maxClaim = max(l.maxClaim, c.Limit)
	}
	l.unfinished += len(ds)
	l.maxUnfinished = max(l.maxUnfinished, l.unfinished)
	l.mu.Unlock()
	return ds, err
}

func (l *limitRecorder) FinishAttempt(ctx context.Context, d *tokenstore.Delivery) error {
	l.mu.Lock()
	l.unfinished--
	l.mu.Unlock()
	return l.Outbox.FinishAttempt(ctx, d)
}

func TestLargeBacklogIsBatched(t *testing.T) {
	n := 100_000
	if testing.Short() || raceEnabled {
		n = 10_000
	}
	st := openStore(t)
	t0 := time.Now()
	for done := 0; done < n; done += 5000 {
		addTestEvents(t, st, min(5000, n-done))
	}
	t.Logf("%d events written in %s", n, time.Since(t0))
	t0 = time.Now()
	rc := newReceiver(t)
	rec := &limitRecorder{Outbox: st}
	opts := fastOptions(t)
	d := NewDispatcher(rec, []Endpoint{{URL: rc.URL(), Secrets: []string{newSecret(t)}}}, opts)
	startDispatcher(t, d)
	// The first delivery goes out long before the backlog is fanned out.
	waitFor(t, "the first delivery", 20*time.Second, func() bool { return rc.count() > 0 })
	t.Logf("first delivery after %s", time.Since(t0))
	waitFor(t, "fifty deliveries", 60*time.Second, func() bool { return rc.count() >= 50 })
	t.Logf("50 deliveries after %s", time.Since(t0))
	pending, err := st.PendingDeliveries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.maxFanOut > DefaultBatchSize || rec.maxClaim > DefaultBatchSize {
		t.Fatalf("batches of %d events and %d claims, want at most %d", rec.maxFanOut, rec.maxClaim, DefaultBatchSize)
	}
	// Held in memory at once: at most the endpoint's workers and queue.
	if limit := 2 * DefaultConcurrency; rec.maxUnfinished > limit {
		t.Fatalf("%d deliveries claimed at once, want at most %d", rec.maxUnfinished, limit)
	}
	t.Logf("%d events, %d deliveries pending when stopping", n, pending)
}

func TestMetricsRegisterTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	m1, m2 := newMetrics(reg), newMetrics(reg)
	if m1.attempts != m2.attempts || m1.deliveries != m2.deliveries || m1.events != m2.events {
		t.Fatal("a second registration did not reuse the registered counters")
	}
	st := openStore(t)
	rc := newReceiver(t)
	opts := fastOptions(t)
	opts.Registerer = reg
	d := NewDispatcher(st, []Endpoint{{URL: rc.URL() + "?token=receiver-secret", Secrets: []string{newSecret(t)}}}, opts)
	startDispatcher(t, d)
	addTestEvents(t, st, 1)
	d.Notify()
	waitFor(t, "the delivered counter", 10*time.Second, func() bool {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "caddy_linkgate_webhook_deliveries_total" {
				for _, m := range mf.GetMetric() {
					if m.GetCounter().GetValue() == 1 {
						return true
					}
				}
			}
		}
		return false
	})
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), "receiver-secret") || strings.Contains(l.GetValue(), "http") {
					t.Fatalf("metric label %s=%s", l.GetName(), l.GetValue())
				}
			}
		}
	}
}

func TestStartRejectsBadConfig(t *testing.T) {
	st := openStore(t)
	sec := newSecret(t)
	for name, c := range map[string]struct {
		eps  []Endpoint
		opts Options
	}{
		"invalid endpoint": {[]Endpoint{{URL: "nope", Secrets: []string{sec}}}, Options{}},
		"duplicate":        {[]Endpoint{{URL: "http://127.0.0.1:1/x", Secrets: []string{sec}}, {URL: "http://127.0.0.1:1/x", Secrets: []string{sec}}}, Options{}},
		"lease too short":  {nil, Options{Timeout: time.Minute, Lease: time.Second}},
		"duplicate id": {[]Endpoint{{ID: "wh", URL: "http://127.0.0.1:1/a", Secrets: []string{sec}},
			{ID: "wh", URL: "http://127.0.0.1:1/b", Secrets: []string{sec}}}, Options{}},
	} {
		t.Run(name, func(t *testing.T) {
			d := NewDispatcher(st, c.eps, c.opts)
			if err := d.Start(); err == nil {
				d.Stop(context.Background())
				t.Fatal("started")
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":     0,
		"3":    3 * time.Second,
		"-1":   0,
		"soon": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		"999999999": maxRetryAfter,
	} {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", v, got, want)
		}
	}
}

func TestRedirectIsAFailureNotFollowed(t *testing.T) {
	st := openStore(t)
	target := testenv.NewWebhookReceiver(t)
	redirector := newReceiver(t)
	redirector.setAnswer(func(_ int, w http.ResponseWriter, _ *http.Request) int {
		w.Header().Set("Location", target.URL())
		return http.StatusTemporaryRedirect
	})
	opts := fastOptions(t)
	opts.Client = nil // the default client
	opts.Schedule = []time.Duration{0}
	d := NewDispatcher(st, []Endpoint{{URL: redirector.URL(), Secrets: []string{newSecret(t)}}}, opts)
	startDispatcher(t, d)
	addTestEvents(t, st, 1)
	d.Notify()
	waitFor(t, "the redirect recorded", 10*time.Second, func() bool {
		return len(deliveriesOf(t, st, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryFailed})) == 1
	})
	dl := deliveriesOf(t, st, tokenstore.DeliveryFilter{})[0]
	if dl.LastStatus != http.StatusTemporaryRedirect || len(target.Deliveries()) != 0 {
		t.Fatalf("redirect followed or not recorded: %+v, target got %d", dl, len(target.Deliveries()))
	}
}

func TestUnknownEndpointIsLeftToOthers(t *testing.T) {
	st := openStore(t)
	old := testenv.NewWebhookReceiver(t)
	oldEPs := []Endpoint{{URL: old.URL(), Secrets: []string{newSecret(t)}}}
	// An instance with an older config fans the event out to its endpoint
	// and stops before sending it.
	fanner := NewDispatcher(st, oldEPs, fastOptions(t))
	addTestEvents(t, st, 1)
	if err := fanner.Start(); err != nil {
		t.Fatal(err)
	}
	old.Down()
	fanner.Notify()
	waitFor(t, "the delivery created", 10*time.Second, func() bool {
		ds := deliveriesOf(t, st, tokenstore.DeliveryFilter{})
		return len(ds) == 1 && ds[0].Attempts >= 1
	})
	if err := fanner.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := deliveriesOf(t, st, tokenstore.DeliveryFilter{})[0]
	if err := st.Redeliver(context.Background(), before.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if g, err := st.GetDelivery(context.Background(), before.ID); err == nil {
		before = *g
	}

	// An instance without that endpoint must not touch it: the old
	// instance may still deliver it. Its own endpoint's deliveries, fanned
	// out after, prove it ran past it.
	other := testenv.NewWebhookReceiver(t)
	opts := fastOptions(t)
	d := NewDispatcher(st, []Endpoint{{URL: other.URL(), Secrets: []string{newSecret(t)}}}, opts)
	startDispatcher(t, d)
	addTestEvents(t, st, 3)
	d.Notify()
	other.WaitFor(t, 3, 10*time.Second)
	d.Notify()
	other.WaitFor(t, 3, 10*time.Second)
	g, err := st.GetDelivery(context.Background(), before.ID)
	if err != nil {
		t.Fatal(err)
	}
	if g.Status != tokenstore.DeliveryPending || g.Attempts != before.Attempts || !g.NextAttemptAt.Equal(before.NextAttemptAt) ||
		!g.UpdatedAt.Equal(before.UpdatedAt) {
		t.Fatalf("a delivery for an endpoint another instance has was changed:\n%+v\nwas\n%+v", g, before)
	}
}

func TestUnknownEndpointFailsPastTheSchedule(t *testing.T) {
	st := openStore(t)
	gone := testenv.NewWebhookReceiver(t)
	gone.Down()
	fanner := NewDispatcher(st, []Endpoint{{URL: gone.URL(), Secrets: []string{newSecret(t)}}}, fastOptions(t))
	addTestEvents(t, st, 1)
	if err := fanner.Start(); err != nil {
		t.Fatal(err)
	}
	fanner.Notify()
	waitFor(t, "the delivery created", 10*time.Second, func() bool {
		ds := deliveriesOf(t, st, tokenstore.DeliveryFilter{})
		return len(ds) == 1 && ds[0].Attempts >= 1
	})
	if err := fanner.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Two hours on (past the whole schedule, at least an hour), an
	// instance that has never had the endpoint fails the delivery: nobody
	// delivered it.
	opts := fastOptions(t)
	opts.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	d := NewDispatcher(st, []Endpoint{{URL: testenv.NewWebhookReceiver(t).URL(), Secrets: []string{newSecret(t)}}}, opts)
	startDispatcher(t, d)
	waitFor(t, "the stray delivery failed", 10*time.Second, func() bool {
		ds := deliveriesOf(t, st, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryFailed})
		return len(ds) == 1 && strings.Contains(ds[0].LastError, "no longer configured")
	})
}

func TestNoSecretInLogsOrDeliveryLog(t *testing.T) {
	st := openStore(t)
	rc := testenv.NewWebhookReceiver(t)
	rc.Down()
	sec := newSecret(t)
	core, logs := observedLogger()
	opts := fastOptions(t)
	opts.Logger = core
	opts.Schedule = []time.Duration{0, time.Millisecond}
	d := NewDispatcher(st, []Endpoint{{URL: rc.URL() + "?token=receiver-secret", Secrets: []string{sec}}}, opts)
	startDispatcher(t, d)
	failAccount(t, st, "acc_1")
	d.Notify()
	waitFor(t, "the delivery failed", 10*time.Second, func() bool {
		return len(deliveriesOf(t, st, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryFailed})) == 1
	})
	if logs.Len() == 0 {
		t.Fatal("a failing endpoint logged nothing")
	}
	secrets := []string{"receiver-secret", strings.TrimPrefix(sec, SecretPrefix), "at-never-sent", "rt-never-sent"}
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + fmt.Sprint(v)
		}
		for _, s := range secrets {
			if strings.Contains(line, s) {
				t.Fatalf("log line shows a secret: %s", line)
			}
		}
	}
	dl := deliveriesOf(t, st, tokenstore.DeliveryFilter{})[0]
	for _, s := range secrets {
		if strings.Contains(dl.LastError, s) {
			t.Fatalf("last_error shows a secret: %s", dl.LastError)
		}
	}
}

func TestJitterStaysWithinItsFraction(t *testing.T) {
	d := NewDispatcher(nil, nil, Options{})
	base := 10 * time.Minute
	lo, hi := base, base
	for range 2000 {
		w := d.jitter(base)
		lo, hi = min(lo, w), max(hi, w)
	}
	if lo < 8*time.Minute || hi > 12*time.Minute {
		t.Fatalf("jitter spread %s..%s, want within ±20%% of %s", lo, hi, base)
	}
	if lo == hi {
		t.Fatal("no jitter at all: retries of many deliveries would arrive in lockstep")
	}
	if none := NewDispatcher(nil, nil, Options{Jitter: -1}); none.jitter(base) != base {
		t.Fatal("negative Jitter must disable jitter")
	}
}

func TestBusyEndpointBacklogDoesNotStarveOthers(t *testing.T) {
	st := openStore(t)
	slow, fast := newReceiver(t), testenv.NewWebhookReceiver(t)
	unblock := make(chan struct{})
	slow.setAnswer(func(_ int, _ http.ResponseWriter, r *http.Request) int {
		select {
		case <-unblock:
		case <-r.Context().Done():
		}
		return http.StatusOK
	})
	opts := fastOptions(t)
	opts.Concurrency = 2
	opts.Timeout, opts.Lease = 30*time.Second, time.Minute
	// Only Notify wakes the dispatcher: the alarm must not wait for polls
	// to wade through the slow endpoint's backlog a few rows at a time.
	opts.PollInterval = time.Hour
	d := NewDispatcher(st, []Endpoint{
		{URL: slow.URL(), Secrets: []string{newSecret(t)}, Events: []string{"test"}},
		{URL: fast.URL(), Secrets: []string{newSecret(t)}, Events: []string{"integrated_account:*"}},
	}, opts)
	startDispatcher(t, d)
	t.Cleanup(func() { close(unblock) })

	addTestEvents(t, st, 300) // a backlog for the slow endpoint only
	d.Notify()
	waitFor(t, "the slow endpoint busy", 10*time.Second, func() bool { return slow.count() == opts.Concurrency })
	failAccount(t, st, "acc_1")
	d.Notify()
	got := fast.WaitFor(t, 1, 10*time.Second)
	if got[0].Header.Get(HeaderID) == "" {
		t.Fatal("no webhook-id")
	}
}

// callCounter is a real store that counts the dispatcher's calls.
type callCounter struct {
	tokenstore.Outbox
	mu                              sync.Mutex
	fanOuts, finishes, claimsOfSlow int
	slow                            string
}

func (c *callCounter) FanOut(ctx context.Context, limit int, f func(tokenstore.Event) []string) ([]tokenstore.Event, error) {
	c.mu.Lock()
	c.fanOuts++
	c.mu.Unlock()
	return c.Outbox.FanOut(ctx, limit, f)
}

func (c *callCounter) ClaimEndpointDeliveries(ctx context.Context, now time.Time, lease time.Duration, claims []tokenstore.EndpointClaim) ([]tokenstore.Delivery, error) {
	c.mu.Lock()
	for _, cl := range claims {
		if cl.Endpoint == c.slow {
			c.claimsOfSlow++
		}
	}
	c.mu.Unlock()
	return c.Outbox.ClaimEndpointDeliveries(ctx, now, lease, claims)
}

func (c *callCounter) FinishAttempt(ctx context.Context, d *tokenstore.Delivery) error {
	c.mu.Lock()
	c.finishes++
	c.mu.Unlock()
	return c.Outbox.FinishAttempt(ctx, d)
}

func (c *callCounter) counts() (fanOuts, finishes, claimsOfSlow int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fanOuts, c.finishes, c.claimsOfSlow
}

// TestBusyEndpointBacklogWaitsInTheStore checks that a backlog behind a
// busy endpoint costs nothing while it waits: the dispatcher neither reads
// it again nor hands deliveries back, poll after poll.
func TestBusyEndpointBacklogWaitsInTheStore(t *testing.T) {
	st := openStore(t)
	slow := newReceiver(t)
	unblock := make(chan struct{})
	slow.setAnswer(func(_ int, _ http.ResponseWriter, r *http.Request) int {
		select {
		case <-unblock:
		case <-r.Context().Done():
		}
		return http.StatusOK
	})
	cc := &callCounter{Outbox: st, slow: slow.URL()}
	opts := fastOptions(t)
	opts.Concurrency = 2
	opts.Timeout, opts.Lease = 30*time.Second, time.Minute
	d := NewDispatcher(cc, []Endpoint{{URL: slow.URL(), Secrets: []string{newSecret(t)}}}, opts)
	startDispatcher(t, d)
	t.Cleanup(func() { close(unblock) })

	addTestEvents(t, st, 300)
	d.Notify()
	waitFor(t, "the slow endpoint busy", 10*time.Second, func() bool { return slow.count() == opts.Concurrency })
	// Its workers are busy and its queue is full once claims stop: four
	// polls in a row without a claim.
	f0, fin0, c0 := cc.counts()
	waitFor(t, "the queue full", 10*time.Second, func() bool {
		f, fin, c := cc.counts()
		if c != c0 {
			f0, fin0, c0 = f, fin, c
			return false
		}
		return f >= f0+4
	})
	f0, fin0, c0 = cc.counts()
	waitFor(t, "fifty more polls", 20*time.Second, func() bool {
		f, _, _ := cc.counts()
		return f >= f0+50
	})
	_, fin, c := cc.counts()
	if fin != fin0 || c != c0 {
		t.Fatalf("over fifty polls the waiting backlog cost %d claims and %d hand-backs, want none", c-c0, fin-fin0)
	}
}

// parkedIn reports whether a goroutine whose stack holds fn is blocked (in
// a select, a channel operation or a lock), as the runtime reports it.
func parkedIn(fn string) bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for _, g := range strings.Split(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		blocked := strings.Contains(header, "[select") || strings.Contains(header, "[chan ") ||
			strings.Contains(header, "[sync.") || strings.Contains(header, "[semacquire")
		if blocked && strings.Contains(g, fn) {
			return true
		}
	}
	return false
}
