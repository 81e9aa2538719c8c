package testenv

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Delivery is one webhook request as the receiver got it.
type Delivery struct {
	// Method is the HTTP method, POST from a well-behaved sender.
	Method string
	// Path is the URL path the delivery was posted to.
	Path string
	// Header holds every request header (webhook-id, webhook-signature...).
	Header http.Header
	// Body is the raw body, byte for byte, so signatures can be checked.
	Body []byte
	// Time is when the delivery arrived.
	Time time.Time
	// Status is what the receiver answered.
	Status int
}

// WebhookReceiver is an application's webhook endpoint: it records every
// delivery and answers as scripted (2xx by default).
type WebhookReceiver struct {
	t    testing.TB
	addr string

	mu         sync.Mutex
	srv        *http.Server
	deliveries []Delivery
	changed    chan struct{} // closed and replaced on every delivery
	failLeft   int
	failStatus int
	status     int
	retryAfter string
}

// NewWebhookReceiver starts a receiver on 127.0.0.1 and stops it when the
// test ends.
func NewWebhookReceiver(t testing.TB) *WebhookReceiver {
	t.Helper()
	ln := listenLoopback(t)
	w := &WebhookReceiver{t: t, addr: ln.Addr().String(), changed: make(chan struct{})}
	w.serveOn(ln)
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.srv != nil {
			_ = w.srv.Close()
			w.srv = nil
		}
	})
	return w
}

// serveOn starts a fresh http.Server on ln; one cannot be restarted once
// closed. Called with mu held or before the receiver is shared.
func (w *WebhookReceiver) serveOn(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(w.serve), ReadHeaderTimeout: 10 * time.Second}
	w.srv = srv
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			w.t.Errorf("webhook receiver stopped serving: %v", err)
		}
	}()
}

// URL is where to deliver, http://127.0.0.1:port/webhook.
func (w *WebhookReceiver) URL() string { return "http://" + w.addr + "/webhook" }

// Deliveries returns a copy of everything received, oldest first.
func (w *WebhookReceiver) Deliveries() []Delivery {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Delivery(nil), w.deliveries...)
}

// WaitFor waits until at least n deliveries have arrived and returns them;
// it fails the test if they have not arrived within timeout.
func (w *WebhookReceiver) WaitFor(t testing.TB, n int, timeout time.Duration) []Delivery {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		w.mu.Lock()
		if len(w.deliveries) >= n {
			out := append([]Delivery(nil), w.deliveries...)
			w.mu.Unlock()
			return out
		}
		got, changed := len(w.deliveries), w.changed
		w.mu.Unlock()
		select {
		case <-changed:
		case <-timer.C:
			t.Fatalf("webhook receiver got %d deliveries within %v, want %d", got, timeout, n)
			return nil
		}
	}
}

// FailNext answers the next n deliveries with status.
func (w *WebhookReceiver) FailNext(n, status int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failLeft, w.failStatus = n, status
}

// SetStatus answers every delivery with code until Reset (0 restores the
// default 200). FailNext takes precedence while it lasts.
func (w *WebhookReceiver) SetStatus(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.status = code
}

// SetRetryAfter sends s as the Retry-After header on every non-2xx answer;
// empty stops sending it.
func (w *WebhookReceiver) SetRetryAfter(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.retryAfter = s
}

// Reset forgets deliveries and scripted answers.
func (w *WebhookReceiver) Reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.deliveries = nil
	w.failLeft, w.status, w.retryAfter = 0, 0, ""
}

// Down stops accepting connections and drops open ones, as a crashed
// application would; the port stays reserved for Up.
func (w *WebhookReceiver) Down() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.srv != nil {
		_ = w.srv.Close()
		w.srv = nil
	}
}

// Up listens again on the same port after Down. It fails the test if the
// port was taken meanwhile.
func (w *WebhookReceiver) Up() {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.srv != nil {
		return
	}
	ln, err := net.Listen("tcp", w.addr)
	if err != nil {
		w.t.Errorf("webhook receiver listening again on %s: %v", w.addr, err)
		return
	}
	w.serveOn(ln)
}

func (w *WebhookReceiver) serve(rw http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		// The sender went away mid-body: nothing was delivered.
		return
	}
	w.mu.Lock()
	status := http.StatusOK
	switch {
	case w.failLeft > 0:
		w.failLeft--
		status = w.failStatus
	case w.status != 0:
		status = w.status
	}
	retryAfter := w.retryAfter
	w.deliveries = append(w.deliveries, Delivery{
		Method: r.Method,
		Path:   r.URL.Path,
		Header: r.Header.Clone(),
		Body:   body,
		Time:   time.Now(),
		Status: status,
	})
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()

	if (status < 200 || status > 299) && retryAfter != "" {
		rw.Header().Set("Retry-After", retryAfter)
	}
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rw.WriteHeader(status)
	_, _ = io.WriteString(rw, strconv.Itoa(status)+" "+http.StatusText(status)+"\n")
}
