package webhook

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/linkgate/linkgate/tokenstore"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// openStore opens a real SQLite store in a fresh directory.
func openStore(t testing.TB) *tokenstore.SQLite {
	t.Helper()
	return openStoreAt(t, filepath.Join(t.TempDir(), "linkgate.db"))
}

func openStoreAt(t testing.TB, path string) *tokenstore.SQLite {
	t.Helper()
	key, err := tokenstore.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := tokenstore.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := tokenstore.OpenSQLite(context.Background(), path, sealer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// delivery is one request a receiver got.
type delivery struct {
	header http.Header
	body   []byte
	at     time.Time
}

// receiver is a webhook endpoint on 127.0.0.1 whose answers a test scripts.
type receiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	got      []delivery
	answer   func(n int, w http.ResponseWriter, r *http.Request) int // n counts requests from 1
	inFlight map[string]int
	maxDup   int // most concurrent requests seen for one webhook-id
}

func newReceiver(t testing.TB) *receiver {
	rc := &receiver{inFlight: map[string]int{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) URL() string { return rc.srv.URL + "/hooks" }

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id := r.Header.Get(HeaderID)
	rc.mu.Lock()
	rc.got = append(rc.got, delivery{header: r.Header.Clone(), body: body, at: time.Now()})
	n := len(rc.got)
	answer := rc.answer
	rc.inFlight[id]++
	rc.maxDup = max(rc.maxDup, rc.inFlight[id])
	rc.mu.Unlock()
	defer func() {
		rc.mu.Lock()
		rc.inFlight[id]--
		rc.mu.Unlock()
	}()
	status := http.StatusNoContent
	if answer != nil {
		status = answer(n, w, r)
	}
	w.WriteHeader(status)
}

func (rc *receiver) setAnswer(f func(n int, w http.ResponseWriter, r *http.Request) int) {
	rc.mu.Lock()
	rc.answer = f
	rc.mu.Unlock()
}

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.got)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testClient is a client whose idle connections are closed when the test
// ends, so goleak sees no leftover connection goroutines.
func testClient(t testing.TB) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// fastOptions retry within milliseconds so the tests run the whole schedule.
func fastOptions(t testing.TB) Options {
	return Options{
		Client:        testClient(t),
		Timeout:       2 * time.Second,
		Lease:         10 * time.Second,
		Schedule:      []time.Duration{0, 20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond},
		Jitter:        -1,
		PollInterval:  20 * time.Millisecond,
		EnvironmentID: "env_test",
	}
}

// startDispatcher starts d and stops it when the test ends.
func startDispatcher(t testing.TB, d *Dispatcher) {
	t.Helper()
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Stop(ctx); err != nil {
			t.Errorf("stopping the dispatcher: %v", err)
		}
	})
}

func deliveriesOf(t testing.TB, st tokenstore.Outbox, f tokenstore.DeliveryFilter) []tokenstore.Delivery {
	t.Helper()
	var out []tokenstore.Delivery
	for {
		p, err := st.ListDeliveries(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p.Deliveries...)
		if p.NextCursor == "" {
			return out
		}
		f.Cursor = p.NextCursor
	}
}

// observedLogger returns a logger whose entries the test can read.
func observedLogger() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zap.DebugLevel)
	return zap.New(core), logs
}

// doAPI calls the webhook API in process.
func doAPI(t testing.TB, h http.Handler, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}
