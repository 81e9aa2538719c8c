package console

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/linkgate/linkgate/tokenstore"
)

const (
	guardToken    = "guard-test-api-token"
	guardUser     = "ops"
	guardPassword = "the operator's password"
)

type noLinks struct{}

func (noLinks) CreateLinkToken(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusTeapot)
}

// guardClock is a settable clock.
type guardClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *guardClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *guardClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// watchedConsole is a console whose password compares are counted, and
// held until the test lets them go when hold is set.
type watchedConsole struct {
	*Console
	clock    *guardClock
	compares atomic.Int64
	running  atomic.Int64
	maxRun   atomic.Int64
	hold     chan struct{} // nil: compares return at once
}

func newWatchedConsole(t *testing.T, g *Guard, hold chan struct{}) *watchedConsole {
	t.Helper()
	key, err := tokenstore.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := tokenstore.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := tokenstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "linkgate.db"), sealer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	hash, err := bcrypt.GenerateFromPassword([]byte(guardPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	w := &watchedConsole{clock: &guardClock{t: time.Now().UTC()}, hold: hold}
	c, err := New(Options{
		Store: st, Links: noLinks{},
		Authenticate: func(_ *http.Request, tok string) bool { return tok == guardToken },
		Users:        map[string]string{guardUser: string(hash)},
		Guard:        g,
		Now:          w.clock.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.compare = func(hash, pw []byte) error {
		w.compares.Add(1)
		n := w.running.Add(1)
		defer w.running.Add(-1)
		for {
			m := w.maxRun.Load()
			if n <= m || w.maxRun.CompareAndSwap(m, n) {
				break
			}
		}
		if w.hold != nil {
			<-w.hold
		}
		return bcrypt.CompareHashAndPassword(hash, pw)
	}
	w.Console = c
	return w
}

// signIn fetches the sign-in form from addr and posts it with the user
// name and secret.
func (w *watchedConsole) signIn(addr, username, secret string) *httptest.ResponseRecorder {
	page := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/console/login", nil)
	req.RemoteAddr = addr
	w.ServeHTTP(page, req)
	pre := page.Result().Cookies()[0]
	return w.post(addr, pre.Value, pre.Value, username, secret)
}

// post posts the sign-in form with the given CSRF field and cookie.
func (w *watchedConsole) post(addr, field, cookie, username, secret string) *httptest.ResponseRecorder {
	form := url.Values{"csrf": {field}, "username": {username}, "secret": {secret}}
	req := httptest.NewRequest(http.MethodPost, "/console/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.RemoteAddr = addr
	req.AddCookie(&http.Cookie{Name: preLoginCookie, Value: cookie})
	rec := httptest.NewRecorder()
	w.ServeHTTP(rec, req)
	return rec
}

func addr(i int) string { return "198.51.100." + string(rune('0'+i%10)) + ":4000" }

func TestClientKeyBucketsIPv6By64(t *testing.T) {
	for _, tt := range []struct{ ip, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"192.0.2.7:4000", "192.0.2.7"},
		{"[2001:db8:1:2::1]:443", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"},
		{"2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"::1", "::/64"},
		{"not an address", "not an address"},
	} {
		if got := clientKey(tt.ip); got != tt.want {
			t.Errorf("clientKey(%q) = %q; want %q", tt.ip, got, tt.want)
		}
	}
}

func TestSignInRateLimitCoversAnIPv6Slash64(t *testing.T) {
	w := newWatchedConsole(t, NewGuard(GuardOptions{LoginBurst: 2}), nil)
	// Two addresses of one /64 share the bucket...
	for i, a := range []string{"[2001:db8:5:6::1]:4000", "[2001:db8:5:6::ffff]:4000"} {
		if rec := w.signIn(a, "", "wrong"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d; want 401", i+1, rec.Code)
		}
	}
	if rec := w.signIn("[2001:db8:5:6:1:2:3:4]:4000", "", guardToken); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("third address of the same /64: %d; want 429", rec.Code)
	}
	// ...another /64 has its own.
	if rec := w.signIn("[2001:db8:5:7::1]:4000", "", guardToken); rec.Code != http.StatusSeeOther {
		t.Fatalf("another /64: %d; want a sign-in", rec.Code)
	}
}

func TestFailedPasswordSignInsHaveAServerWideBudget(t *testing.T) {
	g := NewGuard(GuardOptions{FailedSignInBurst: 3, FailedSignInEvery: time.Minute})
	w := newWatchedConsole(t, g, nil)
	// Three failures from three addresses (no per-address limit is hit)
	// spend the budget: wrong passwords and unknown users alike.
	for i, user := range []string{guardUser, "nobody", guardUser} {
		if rec := w.signIn(addr(i), user, "guess"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d; want 401", i+1, rec.Code)
		}
	}
	if n := w.compares.Load(); n != 3 {
		t.Fatalf("%d password checks; want 3", n)
	}
	// Then password sign-ins are refused without a check, from any
	// address, even with the right password: during a flood the
	// operator signs in with an API token instead.
	for i, secret := range []string{"guess", guardPassword} {
		rec := w.signIn(addr(5+i), guardUser, secret)
		if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
			t.Fatalf("password sign-in with the budget spent: %d, Retry-After %q; want 429", rec.Code, rec.Header().Get("Retry-After"))
		}
		if !strings.Contains(rec.Body.String(), "sign in with an API token") {
			t.Fatalf("the refusal does not say the API token still works:\n%s", rec.Body.String())
		}
	}
	if n := w.compares.Load(); n != 3 {
		t.Fatalf("%d password checks; want none past the budget", n)
	}
	if rec := w.signIn(addr(8), "", guardToken); rec.Code != http.StatusSeeOther {
		t.Fatalf("API token sign-in with the password budget spent: %d; want a sign-in", rec.Code)
	}
	// The budget refills; a right password gives its share back, so a
	// success does not count as a failure.
	w.clock.advance(time.Minute)
	if rec := w.signIn(addr(9), guardUser, guardPassword); rec.Code != http.StatusSeeOther {
		t.Fatalf("right password after the refill: %d; want a sign-in", rec.Code)
	}
	if rec := w.signIn(addr(0), guardUser, "guess"); rec.Code != http.StatusUnauthorized {
		t.Fatalf("wrong password after a success: %d; want 401 (the success spent nothing)", rec.Code)
	}
	if rec := w.signIn(addr(1), guardUser, "guess"); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("second failure after one refill: %d; want 429", rec.Code)
	}
}

func TestPasswordChecksAreBoundedServerWide(t *testing.T) {
	hold := make(chan struct{})
	g := NewGuard(GuardOptions{PasswordChecks: 1, FailedSignInBurst: 100, PasswordCheckWait: time.Hour})
	// Two consoles (two sites of one server) share the guard and its bound.
	a := newWatchedConsole(t, g, hold)
	b := newWatchedConsole(t, g, hold)
	const n = 6
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for i := range n {
		c := a
		if i%2 == 1 {
			c = b
		}
		wg.Go(func() { codes <- c.signIn(addr(i), guardUser, "guess").Code })
	}
	// Let the checks through one at a time; each must be alone.
	for done := 0; done < n; done++ {
		waitFor(t, func() bool { return a.running.Load()+b.running.Load() == 1 })
		hold <- struct{}{}
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusUnauthorized {
			t.Fatalf("sign-in answered %d; want 401", c)
		}
	}
	if a.maxRun.Load() != 1 || b.maxRun.Load() != 1 || a.compares.Load()+b.compares.Load() != n {
		t.Fatalf("checks at once: %d and %d, compares %d; want one at a time, %d in all", a.maxRun.Load(), b.maxRun.Load(), a.compares.Load()+b.compares.Load(), n)
	}
}

func TestPasswordCheckQueueGivesUp(t *testing.T) {
	hold := make(chan struct{})
	g := NewGuard(GuardOptions{PasswordChecks: 1, FailedSignInBurst: 2, FailedSignInEvery: time.Hour, PasswordCheckWait: 20 * time.Millisecond})
	w := newWatchedConsole(t, g, hold)
	first := make(chan int, 1)
	go func() { first <- w.signIn(addr(1), guardUser, "guess").Code }()
	waitFor(t, func() bool { return w.running.Load() == 1 })
	// The only check is busy: the next sign-in waits, then is told to come
	// back, and the budget it reserved is given back.
	rec := w.signIn(addr(2), guardUser, "guess")
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("sign-in while the check is busy: %d; want 503 with Retry-After", rec.Code)
	}
	hold <- struct{}{}
	if c := <-first; c != http.StatusUnauthorized {
		t.Fatalf("first sign-in: %d; want 401", c)
	}
	go func() { hold <- struct{}{} }()
	if rec := w.signIn(addr(3), guardUser, "guess"); rec.Code != http.StatusUnauthorized {
		t.Fatalf("sign-in after the busy one: %d; want 401 (its budget share was given back)", rec.Code)
	}
}

func TestSignInFormTokenMustComeFromTheServer(t *testing.T) {
	g := NewGuard(GuardOptions{})
	w := newWatchedConsole(t, g, nil)
	other := NewGuard(GuardOptions{})
	now := w.clock.now()
	issued := g.issueFormToken(now)
	n := 0
	for _, tt := range []struct{ name, field, cookie string }{
		{"attacker-chosen value in cookie and form", "fixed-by-the-attacker", "fixed-by-the-attacker"},
		{"a token of another server", other.issueFormToken(now), ""},
		{"form and cookie differ", issued, g.issueFormToken(now)},
		{"no cookie", issued, ""},
		{"truncated", issued[:len(issued)-2], issued[:len(issued)-2]},
	} {
		cookie := tt.cookie
		if tt.name == "a token of another server" {
			cookie = tt.field
		}
		for _, user := range []string{"", guardUser} {
			secret := guardToken
			if user != "" {
				secret = guardPassword
			}
			n++
			from := "[2001:db8:" + strconv.Itoa(n) + "::1]:4000"
			if rec := w.post(from, tt.field, cookie, user, secret); rec.Code != http.StatusForbidden {
				t.Fatalf("%s (user %q): %d; want 403", tt.name, user, rec.Code)
			}
		}
	}
	if n := w.compares.Load(); n != 0 {
		t.Fatalf("forged forms cost %d password checks; want none", n)
	}
	// The server's own token works, until it expires.
	if rec := w.post(addr(2), issued, issued, "", guardToken); rec.Code != http.StatusSeeOther {
		t.Fatalf("the issued token: %d; want a sign-in", rec.Code)
	}
	w.clock.advance(preLoginTTL)
	if rec := w.post(addr(3), issued, issued, "", guardToken); rec.Code != http.StatusForbidden {
		t.Fatalf("an expired form token: %d; want 403", rec.Code)
	}
}

// waitFor polls cond until it holds, failing after 30 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 30 s")
		}
		time.Sleep(time.Millisecond)
	}
}
