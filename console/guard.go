package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"net/netip"
	"sync"
	"time"
)

// Defaults of GuardOptions.
const (
	// DefaultPasswordChecks password checks (bcrypt compares) run at once
	// in the whole server; more wait their turn.
	DefaultPasswordChecks = 1
	// DefaultFailedSignInBurst failed password sign-ins may happen at once
	// server-wide; then one more every DefaultFailedSignInEvery.
	DefaultFailedSignInBurst = 5
	DefaultFailedSignInEvery = time.Minute
	// DefaultPasswordCheckWait is how long a sign-in waits for a free
	// password check before it is told to try again.
	DefaultPasswordCheckWait = 10 * time.Second
	// preLoginTTL is how long a sign-in form may stay open.
	preLoginTTL = time.Hour
)

// GuardOptions configure a Guard. Zero values take the defaults.
type GuardOptions struct {
	// LoginBurst and LoginEvery rate-limit sign-in attempts per client
	// address (an IPv4 address, or an IPv6 /64): LoginBurst at once, then
	// one per LoginEvery.
	LoginBurst int
	LoginEvery time.Duration
	// PasswordChecks bounds the password checks that run at once in the
	// server. A bcrypt compare at the usual cost takes most of a second
	// of one core, so this bounds the CPU sign-ins can take.
	PasswordChecks int
	// FailedSignInBurst and FailedSignInEvery are the server-wide budget
	// of failed password sign-ins (wrong password or unknown user): once
	// spent, password sign-ins are refused without a check until it
	// refills. Sign-in with an API token does not draw on it.
	FailedSignInBurst int
	FailedSignInEvery time.Duration
	// PasswordCheckWait is the longest a sign-in waits for a password
	// check to be free.
	PasswordCheckWait time.Duration
}

// Guard is what protects the sign-in form from being used to burn the
// server's CPU or to guess passwords: a rate limit per client address, a
// server-wide bound on concurrent password checks, a server-wide budget of
// failed password sign-ins, and the key that signs the sign-in form's CSRF
// token. One Guard should serve every console of a server (and survive
// config reloads), so that the bounds are the server's, not a console's.
type Guard struct {
	perClient *limiter
	failures  *limiter
	checks    chan struct{}
	wait      time.Duration
	key       [32]byte

	mu     sync.Mutex
	paused bool
}

// NewGuard returns a Guard with a fresh signing key.
func NewGuard(o GuardOptions) *Guard {
	if o.LoginBurst <= 0 {
		o.LoginBurst = DefaultLoginBurst
	}
	if o.LoginEvery <= 0 {
		o.LoginEvery = DefaultLoginEvery
	}
	if o.PasswordChecks <= 0 {
		o.PasswordChecks = DefaultPasswordChecks
	}
	if o.FailedSignInBurst <= 0 {
		o.FailedSignInBurst = DefaultFailedSignInBurst
	}
	if o.FailedSignInEvery <= 0 {
		o.FailedSignInEvery = DefaultFailedSignInEvery
	}
	if o.PasswordCheckWait <= 0 {
		o.PasswordCheckWait = DefaultPasswordCheckWait
	}
	g := &Guard{
		perClient: newLimiter(o.LoginBurst, o.LoginEvery, 10000),
		failures:  newLimiter(o.FailedSignInBurst, o.FailedSignInEvery, 1),
		checks:    make(chan struct{}, o.PasswordChecks),
		wait:      o.PasswordCheckWait,
	}
	_, _ = rand.Read(g.key[:]) // never fails (crypto/rand documents it)
	return g
}

// clientKey is the rate-limit bucket of a client address: the address
// itself for IPv4, its /64 for IPv6 (one host usually holds a whole /64, so
// per-address buckets would give it 2^64 of them). A port, if any, is
// dropped: a client gets one bucket, not one per connection. Anything that
// is not an IP address is its own bucket.
func clientKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		ap, perr := netip.ParseAddrPort(ip)
		if perr != nil {
			return ip
		}
		a = ap.Addr()
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, err := a.WithZone("").Prefix(64)
	if err != nil {
		return ip
	}
	return p.String()
}

// allowClient takes one attempt from the client address's bucket.
func (g *Guard) allowClient(ip string, now time.Time) (bool, time.Duration) {
	return g.perClient.allow(clientKey(ip), now)
}

// reserveFailure takes one failed sign-in from the server-wide budget
// before a password is checked; a sign-in that succeeds gives it back.
func (g *Guard) reserveFailure(now time.Time) (bool, time.Duration) {
	return g.failures.allow("", now)
}

func (g *Guard) refundFailure(now time.Time) { g.failures.refund("", now) }

// acquireCheck waits for a free password check, at most the Guard's wait
// and never past ctx. It reports whether the caller got one; it must then
// call releaseCheck.
func (g *Guard) acquireCheck(ctx context.Context) bool {
	select {
	case g.checks <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(g.wait)
	defer t.Stop()
	select {
	case g.checks <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func (g *Guard) releaseCheck() { <-g.checks }

// The sign-in form's CSRF token is issued by the server: a random nonce and
// an expiry, with an HMAC over both. A token the server did not issue (say,
// a value an attacker planted in the browser's cookie and the form alike)
// or one past its expiry is refused before any password is looked at.
const (
	formNonceSize = 16
	formTokenSize = formNonceSize + 8 + sha256.Size
)

// issueFormToken returns a new sign-in form token, valid until now+preLoginTTL.
func (g *Guard) issueFormToken(now time.Time) string {
	b := make([]byte, formNonceSize+8, formTokenSize)
	_, _ = rand.Read(b[:formNonceSize])
	binary.BigEndian.PutUint64(b[formNonceSize:], uint64(now.Add(preLoginTTL).Unix()))
	m := hmac.New(sha256.New, g.key[:])
	m.Write(b)
	return base64.RawURLEncoding.EncodeToString(m.Sum(b))
}

// checkFormToken reports whether the form's token equals the cookie's and is
// one this Guard issued that has not expired.
func (g *Guard) checkFormToken(form, cookie string, now time.Time) bool {
	if form == "" || subtle.ConstantTimeCompare([]byte(form), []byte(cookie)) != 1 {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(form)
	if err != nil || len(b) != formTokenSize {
		return false
	}
	m := hmac.New(sha256.New, g.key[:])
	m.Write(b[:formNonceSize+8])
	if !hmac.Equal(m.Sum(nil), b[formNonceSize+8:]) {
		return false
	}
	return now.Unix() < int64(binary.BigEndian.Uint64(b[formNonceSize:]))
}

// limiter is a token bucket per key, bounded in size: when full, buckets
// that have refilled are dropped, and if none has, the attempt is refused
// (an attacker filling the table locks sign-in rather than lifting the
// limit).
type limiter struct {
	mu    sync.Mutex
	m     map[string]*bucket
	burst float64
	every time.Duration
	max   int
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(burst int, every time.Duration, max int) *limiter {
	return &limiter{m: make(map[string]*bucket), burst: float64(burst), every: every, max: max}
}

// allow takes one token from key's bucket; when empty it says how long to
// wait.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.m[key]
	if !ok {
		if len(l.m) >= l.max {
			for k, v := range l.m {
				if l.level(v, now) >= l.burst {
					delete(l.m, k)
				}
			}
			if len(l.m) >= l.max {
				return false, l.every
			}
		}
		b = &bucket{tokens: l.burst, at: now}
		l.m[key] = b
	}
	b.tokens, b.at = l.level(b, now), now
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) * float64(l.every))
	}
	b.tokens--
	return true, 0
}

// refund gives key's bucket back the token an allow took.
func (l *limiter) refund(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.m[key]; ok {
		b.tokens, b.at = min(l.level(b, now)+1, l.burst), now
	}
}

func (l *limiter) level(b *bucket, now time.Time) float64 {
	t := b.tokens + float64(now.Sub(b.at))/float64(l.every)
	return min(t, l.burst)
}

// notePaused records whether password sign-in is paused and reports whether
// it just became so, so that a flood is logged once, not once a request.
func (g *Guard) notePaused(paused bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	was := g.paused
	g.paused = paused
	return paused && !was
}
