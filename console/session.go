package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"
)

// Cookie names. The pre-login cookie carries the CSRF token of the sign-in
// form, which has no session yet.
const (
	sessionCookie  = "linkgate_console"
	preLoginCookie = "linkgate_console_login"
)

// session is one signed-in operator.
type session struct {
	user     string
	csrf     string
	created  time.Time
	lastSeen time.Time
	// flash is a one-time notice shown on the next page.
	flash string
}

type sessionKey struct{}

// sessionOf returns the request's session (set by ServeHTTP).
func sessionOf(r *http.Request) *session {
	s, _ := r.Context().Value(sessionKey{}).(*session)
	return s
}

// Sessions keeps the console's sessions in memory, keyed by the SHA-256 of
// the cookie value, so that neither a map lookup's timing nor a heap dump
// gives a usable cookie away. It is bounded: when full, the least recently
// used session is dropped. Consoles that replace each other (a config
// reload) may share one Sessions so that operators stay signed in.
type Sessions struct {
	mu   sync.Mutex
	m    map[[sha256.Size]byte]*session
	max  int
	ttl  time.Duration
	idle time.Duration
}

// NewSessions returns an empty store of at most max sessions (default
// DefaultMaxSessions), each living at most ttl (default DefaultSessionTTL)
// and ended after idle unused (default DefaultIdleTimeout).
func NewSessions(max int, ttl, idle time.Duration) *Sessions {
	if max <= 0 {
		max = DefaultMaxSessions
	}
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	return &Sessions{m: make(map[[sha256.Size]byte]*session), max: max, ttl: ttl, idle: idle}
}

// randomString returns n random bytes, base64url.
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand documents it)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session and returns its cookie value.
func (ss *Sessions) create(user string, now time.Time) (string, *session) {
	id := randomString(32)
	s := &session{user: user, csrf: randomString(32), created: now, lastSeen: now}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.m) >= ss.max {
		ss.pruneLocked(now)
	}
	for len(ss.m) >= ss.max {
		var oldest [sha256.Size]byte
		var at time.Time
		first := true
		for k, v := range ss.m {
			if first || v.lastSeen.Before(at) {
				oldest, at, first = k, v.lastSeen, false
			}
		}
		delete(ss.m, oldest)
	}
	ss.m[sha256.Sum256([]byte(id))] = s
	return id, s
}

func (ss *Sessions) pruneLocked(now time.Time) {
	for k, v := range ss.m {
		if ss.expired(v, now) {
			delete(ss.m, k)
		}
	}
}

func (ss *Sessions) expired(s *session, now time.Time) bool {
	return now.Sub(s.created) >= ss.ttl || now.Sub(s.lastSeen) >= ss.idle
}

// get returns the live session of a cookie value and marks it used, or nil.
func (ss *Sessions) get(id string, now time.Time) *session {
	k := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[k]
	if !ok {
		return nil
	}
	if ss.expired(s, now) {
		delete(ss.m, k)
		return nil
	}
	s.lastSeen = now
	return s
}

func (ss *Sessions) delete(id string) {
	k := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	delete(ss.m, k)
	ss.mu.Unlock()
}

// setFlash and takeFlash keep a notice for the page after a redirect.
func (ss *Sessions) setFlash(s *session, msg string) {
	ss.mu.Lock()
	s.flash = msg
	ss.mu.Unlock()
}

func (ss *Sessions) takeFlash(s *session) string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	f := s.flash
	s.flash = ""
	return f
}

// session returns the request's live session, or nil.
func (c *Console) session(r *http.Request) *session {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return nil
	}
	return c.sessions.get(ck.Value, c.opts.Now())
}

// checkCSRF compares the form's csrf field with the session's, in constant
// time.
func (c *Console) checkCSRF(r *http.Request, s *session) bool {
	r.Body = http.MaxBytesReader(nil, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return false
	}
	got := r.PostForm.Get("csrf")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) == 1
}

// cookie builds a console cookie: HttpOnly, SameSite=Strict, scoped to the
// console's path, Secure when the request came over HTTPS.
func (c *Console) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	p := c.prefix
	if p == "" {
		p = "/"
	}
	return &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     p,
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	}
}

// loginData is the sign-in page.
type loginData struct {
	CSRF      string
	Users     bool
	Tokens    bool
	Username  string
	Error     string
	LoggedOut bool
}

// login serves the sign-in page (GET) and signs in (POST).
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if c.session(r) != nil {
			http.Redirect(w, r, c.path("/accounts"), http.StatusSeeOther)
			return
		}
		c.renderLogin(w, r, http.StatusOK, loginData{LoggedOut: r.URL.Query().Get("signed_out") == "1"})
	case http.MethodPost:
		c.loginSubmit(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		c.renderError(w, r, http.StatusMethodNotAllowed, "Use the sign-in form.")
	}
}

// renderLogin renders the form with a fresh pre-login CSRF token.
func (c *Console) renderLogin(w http.ResponseWriter, r *http.Request, status int, d loginData) {
	d.CSRF = randomString(24)
	d.Users = len(c.opts.Users) > 0
	d.Tokens = c.opts.Authenticate != nil
	http.SetCookie(w, c.cookie(r, preLoginCookie, d.CSRF, 3600))
	c.render(w, r, status, "login", "Sign in", "", d)
}

func (c *Console) loginSubmit(w http.ResponseWriter, r *http.Request) {
	now := c.opts.Now()
	ip := c.opts.ClientIP(r)
	if ok, wait := c.limiter.allow(ip, now); !ok {
		secs := int(wait/time.Second) + 1
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		c.log.Warn("console sign-in rate limited", zap.String("client_ip", ip))
		c.renderLogin(w, r, http.StatusTooManyRequests, loginData{Error: "Too many sign-in attempts from your address. Wait " + strconv.Itoa(secs) + " seconds and try again."})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		c.renderLogin(w, r, http.StatusBadRequest, loginData{Error: "The sign-in form could not be read. Try again."})
		return
	}
	pre, err := r.Cookie(preLoginCookie)
	got := r.PostForm.Get("csrf")
	if err != nil || got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(pre.Value)) != 1 {
		c.renderLogin(w, r, http.StatusForbidden, loginData{Error: "The sign-in form expired. Try again."})
		return
	}
	username := r.PostForm.Get("username")
	secret := r.PostForm.Get("secret")
	user, ok := c.verify(username, secret)
	if !ok {
		c.log.Info("console sign-in refused", zap.String("client_ip", ip), zap.Bool("with_username", username != ""))
		msg := "That API token is not valid."
		if username != "" {
			msg = "That user name and password do not match."
		}
		c.renderLogin(w, r, http.StatusUnauthorized, loginData{Error: msg, Username: username})
		return
	}
	// A new session id on every sign-in, so a planted cookie is worthless.
	if old, err := r.Cookie(sessionCookie); err == nil {
		c.sessions.delete(old.Value)
	}
	id, _ := c.sessions.create(user, now)
	http.SetCookie(w, c.cookie(r, sessionCookie, id, int(c.sessions.ttl/time.Second)))
	http.SetCookie(w, c.cookie(r, preLoginCookie, "", -1))
	c.log.Info("console sign-in", zap.String("user", user), zap.String("client_ip", ip))
	http.Redirect(w, r, c.path("/accounts"), http.StatusSeeOther)
}

// verify checks a user's password or, without a user name, an API token.
// It returns the name the session is shown under.
func (c *Console) verify(username, secret string) (string, bool) {
	if secret == "" || len(secret) > 4096 {
		return "", false
	}
	if username == "" {
		if c.opts.Authenticate == nil {
			return "", false
		}
		return "API token", c.opts.Authenticate(secret)
	}
	hash, known := c.opts.Users[username]
	if !known {
		_ = bcrypt.CompareHashAndPassword(c.dummyHash, []byte(secret))
		return "", false
	}
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(secret)) != nil {
		return "", false
	}
	return username, true
}

// logout ends the session.
func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(sessionCookie); err == nil {
		c.sessions.delete(ck.Value)
	}
	http.SetCookie(w, c.cookie(r, sessionCookie, "", -1))
	http.Redirect(w, r, c.path("/login?signed_out=1"), http.StatusSeeOther)
}

// limiter is a token bucket per client IP address, bounded in size: when
// full, buckets that have refilled are dropped, and if none has, the
// attempt is refused (an attacker filling the table locks sign-in rather
// than lifting the limit).
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

// allow takes one attempt from ip's bucket; when empty it says how long to
// wait.
func (l *limiter) allow(ip string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.m[ip]
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
		l.m[ip] = b
	}
	b.tokens, b.at = l.level(b, now), now
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) * float64(l.every))
	}
	b.tokens--
	return true, 0
}

func (l *limiter) level(b *bucket, now time.Time) float64 {
	t := b.tokens + float64(now.Sub(b.at))/float64(l.every)
	return min(t, l.burst)
}
