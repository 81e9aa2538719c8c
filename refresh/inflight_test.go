package refresh

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/testenv"
	"github.com/linkgate/linkgate/tokenstore"
)

func TestCallGateGivesWaitingCallersPriority(t *testing.T) {
	g := newCallGate(1)
	ctx := context.Background()
	if err := g.acquire(ctx, "busy"); err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 2)
	var wg sync.WaitGroup
	start := func(id string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := g.acquire(ctx, id); err != nil {
				t.Errorf("%s: %v", id, err)
				return
			}
			order <- id
			g.release()
		}()
	}
	queued := func(n int) {
		eventually(t, "the waiters queue", func() bool {
			g.mu.Lock()
			defer g.mu.Unlock()
			return len(g.queue) == n
		})
	}
	start("sweeper")
	queued(1)
	unwant := g.want("caller")
	start("caller")
	queued(2)
	g.release()
	wg.Wait()
	unwant()
	if first := <-order; first != "caller" {
		t.Fatalf("first slot went to %s; a caller waiting on an expired token goes before the sweeper", first)
	}

	// Once stopping, queued refreshes nobody waits for are dropped; a
	// waited-for one still runs.
	if err := g.acquire(ctx, "busy"); err != nil {
		t.Fatal(err)
	}
	dropped := make(chan error, 1)
	go func() { dropped <- g.acquire(ctx, "background") }()
	queued(1)
	g.stop()
	if err := <-dropped; !errors.Is(err, errStopping) {
		t.Fatalf("a queued background refresh at stop: %v, want errStopping", err)
	}
	defer g.want("waited")()
	got := make(chan error, 1)
	go func() { got <- g.acquire(ctx, "waited") }()
	queued(1)
	g.release()
	if err := <-got; err != nil {
		t.Fatalf("a waited-for refresh at stop: %v", err)
	}
}

// countingTransport counts the token calls on the wire at once.
type countingTransport struct {
	base          http.RoundTripper
	now, maxSeen  atomic.Int32
	sentRefreshes atomic.Int32
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/token") {
		n := c.now.Add(1)
		defer c.now.Add(-1)
		for {
			m := c.maxSeen.Load()
			if n <= m || c.maxSeen.CompareAndSwap(m, n) {
				break
			}
		}
	}
	return c.base.RoundTrip(req)
}

// A burst of refreshes puts at most MaxInFlight token calls on the wire, so
// that a crash can lose no more grants than that; every refresh succeeds.
func TestTokenCallsInFlightAreBounded(t *testing.T) {
	ct := &countingTransport{}
	e := newEnv(t, func(o *Options) {
		o.MaxInFlight = 2
		ct.base = o.Client.Transport
		if ct.base == nil {
			ct.base = http.DefaultTransport
		}
		o.Client = &http.Client{Transport: ct}
	})
	const n = 12
	var ids []string
	for i := range n {
		ids = append(ids, e.connect("acc-burst-"+string(rune('a'+i)), e.clock.Now().Add(-time.Second)).ID)
	}
	e.auth.SetFault(testenv.Fault{Delay: 100 * time.Millisecond})
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.r.Refresh(context.Background(), id); err != nil {
				t.Errorf("refresh of %s: %v", id, err)
			}
		}()
	}
	wg.Wait()
	if m := ct.maxSeen.Load(); m > 2 {
		t.Fatalf("%d token calls on the wire at once; the bound is 2", m)
	}
	for _, id := range ids {
		if a := e.get(id); a.Status != account.StatusActive || !e.auth.ValidRefreshToken(a.Credentials.RefreshToken) {
			t.Fatalf("%s after the burst: %s, refresh token valid %v", id, a.Status, e.auth.ValidRefreshToken(a.Credentials.RefreshToken))
		}
	}
}

// A token endpoint slower than token_timeout with rotating refresh tokens:
// callers stop waiting at the timeout, the calls run to completion and their
// answers are stored, so no grant is lost.
func TestSlowTokenEndpointLosesNoGrant(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.TokenTimeout, o.LockTimeout = 200*time.Millisecond, lockTimeout })
	const n = 6
	var accts []*account.Account
	for i := range n {
		accts = append(accts, e.connect("acc-slow-"+string(rune('a'+i)), e.clock.Now().Add(-time.Second)))
	}
	// Slower than the callers' wait, however soon the lock is had.
	e.auth.SetFault(testenv.Fault{Delay: lockTimeout + time.Second})
	var wg sync.WaitGroup
	for _, a := range accts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.r.Credentials(context.Background(), a)
			var re *Error
			if !errors.As(err, &re) || re.Class != Transient || re.Code != "timeout" {
				t.Errorf("caller of %s: %v, want a transient timeout", a.ID, err)
			}
		}()
	}
	wg.Wait()
	for _, a := range accts {
		eventually(t, a.ID+"'s answer is stored", func() bool {
			return e.get(a.ID).Credentials.RefreshToken != a.Credentials.RefreshToken
		})
	}
	e.auth.ClearFault()
	for _, a := range accts {
		// On a busy machine a healthy call can still outlast the 200 ms
		// timeout: that is a timeout, not a lost grant, and its answer is
		// kept; ask again until the call fits.
		var err error
		eventually(t, "a refresh of "+a.ID+" fits its timeout", func() bool {
			err = e.r.Refresh(context.Background(), a.ID)
			var re *Error
			return !errors.As(err, &re) || re.Class != Transient || re.Code != "timeout"
		})
		if err != nil {
			t.Fatalf("refresh of %s after the slow answers: %v (the grant was lost)", a.ID, err)
		}
		if got := e.get(a.ID); got.Status != account.StatusActive || got.LastError != nil {
			t.Fatalf("%s: %s %+v", a.ID, got.Status, got.LastError)
		}
	}
}

// Stop waits for a token call on the wire and stores its answer.
func TestStopDrainsTokenCallsOnTheWire(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.TokenTimeout, o.LockTimeout = 100*time.Millisecond, lockTimeout })
	a := e.connect("acc-drain", e.clock.Now().Add(-time.Second))
	e.auth.SetFault(testenv.Fault{Delay: lockTimeout + time.Second, Count: 1})
	if err := e.r.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.r.Credentials(context.Background(), a); err == nil {
		t.Fatal("the caller got a token from a call slower than its timeout")
	}
	if err := e.r.Stop(); err != nil {
		t.Fatal(err)
	}
	got := e.get(a.ID)
	if got.Credentials.RefreshToken == a.Credentials.RefreshToken || !e.auth.ValidRefreshToken(got.Credentials.RefreshToken) {
		t.Fatal("Stop returned before the answer of the call on the wire was stored")
	}
}

// What a killed process left in its journal: an answer that had not reached
// the store is applied at start (the grant survives), and a call sent without
// an answer is reported, when the provider refuses the old token, as
// refresh_answer_lost. The journal holds no token in clear.
func TestJournalRecoversAfterACrash(t *testing.T) {
	e := newEnv(t, nil)
	path := filepath.Join(t.TempDir(), "refresh.journal")
	sealer := e.sealer()
	ctx := context.Background()

	saved := e.connect("acc-answered", e.clock.Now().Add(-time.Second))
	unanswered := e.connect("acc-unanswered", e.clock.Now().Add(-time.Second))

	// The crashed process: it sent both refreshes; the provider rotated
	// both grants; one answer reached its journal, neither the store.
	crashed, err := OpenJournal(path, sealer)
	if err != nil {
		t.Fatal(err)
	}
	en, err := crashed.sent(saved.ID, saved.Credentials.RefreshToken, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	res, cerr := e.r.callRefresh(e.integ, saved.Credentials.RefreshToken)
	if cerr != nil {
		t.Fatal(cerr)
	}
	answer := saved.Credentials
	res.apply(&answer)
	e.remember(answer.AccessToken, answer.RefreshToken)
	if err := crashed.answered(en, answer); err != nil {
		t.Fatal(err)
	}
	if _, err := crashed.sent(unanswered.ID, unanswered.Credentials.RefreshToken, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if _, cerr := e.r.callRefresh(e.integ, unanswered.Credentials.RefreshToken); cerr != nil {
		t.Fatal(cerr)
	}
	if err := crashed.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{answer.AccessToken, answer.RefreshToken, saved.Credentials.RefreshToken, unanswered.Credentials.RefreshToken} {
		if bytes.Contains(raw, []byte(s)) {
			t.Fatal("the journal holds a token in clear")
		}
	}

	// The restarted process.
	j, err := OpenJournal(path, sealer)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	r := e.newRefresher(func(o *Options) { o.Journal = j })
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	got := e.get(saved.ID)
	if got.Credentials.RefreshToken != answer.RefreshToken || got.Status != account.StatusActive {
		t.Fatalf("the journaled answer was not applied at start: %s", got.Status)
	}
	if err := r.Refresh(ctx, saved.ID); err != nil {
		t.Fatalf("refresh after recovery: %v (the grant was lost)", err)
	}
	if got := e.get(unanswered.ID); got.Status != account.StatusActive || got.LastError == nil || got.LastError.Code != CodeOutcomeUnknown {
		t.Fatalf("the unanswered call left the account %s %+v, want active and marked %s", got.Status, got.LastError, CodeOutcomeUnknown)
	}
	if !e.logged(zapcore.WarnLevel, "old refresh token will be sent again") {
		t.Fatal("the log did not say that the old refresh token would be sent again")
	}
	if err := r.Refresh(ctx, unanswered.ID); !errors.Is(err, ErrNeedsReauth) {
		t.Fatalf("refresh with the rotated-away token: %v, want needs reauth", err)
	}
	if got := e.get(unanswered.ID); got.LastError == nil || got.LastError.Code != CodeAnswerLost {
		t.Fatalf("the lost grant reads %+v, want %s", got.LastError, CodeAnswerLost)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Fatalf("the journal is not emptied once nothing in it is needed: %v %v", fi.Size(), err)
	}
}

func (e *env) sealer() Sealer {
	e.t.Helper()
	s, err := tokenstore.NewSealer(e.key)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// Two processes on one machine sharing a store never share a journal: one
// would empty the file while the other's records are still needed.
func TestJournalBelongsToOneProcess(t *testing.T) {
	base := filepath.Join(t.TempDir(), "journal")
	s := (&env{t: t, key: mustKey(t)}).sealer()
	a, err := OpenJournalExclusive(base, s)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenJournalExclusive(base, s)
	if err != nil {
		t.Fatal(err)
	}
	if a.Path() == b.Path() {
		t.Fatalf("two holders of %s", a.Path())
	}
	b.Close()
	a.Close()
	c, err := OpenJournalExclusive(base, s)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Path() != base {
		t.Fatalf("a freed journal is not reused: %s", c.Path())
	}
}

func mustKey(t *testing.T) []byte {
	k, err := tokenstore.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
