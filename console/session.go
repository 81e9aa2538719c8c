package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
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
// console's path, Secure when the console's public URL is https or the
// request came over TLS. Behind a proxy that terminates TLS the request
// arrives in plain HTTP, so the request alone cannot tell.
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
		Secure:   c.opts.SecureCookies || r.TLS != nil,
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
	d.CSRF = c.guard.issueFormToken(c.opts.Now())
	d.Users = len(c.opts.Users) > 0
	d.Tokens = c.opts.Authenticate != nil
	http.SetCookie(w, c.cookie(r, preLoginCookie, d.CSRF, 3600))
	c.render(w, r, status, "login", "Sign in", "", d)
}

func (c *Console) loginSubmit(w http.ResponseWriter, r *http.Request) {
	now := c.opts.Now()
	ip := c.opts.ClientIP(r)
	if ok, wait := c.guard.allowClient(ip, now); !ok {
		secs := retryAfter(w, wait)
		c.log.Warn("console sign-in rate limited", zap.String("client_ip", ip))
		c.renderLogin(w, r, http.StatusTooManyRequests, loginData{Error: "Too many sign-in attempts from your address. Wait " + strconv.Itoa(secs) + " seconds and try again."})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		c.renderLogin(w, r, http.StatusBadRequest, loginData{Error: "The sign-in form could not be read. Try again."})
		return
	}
	var preValue string
	if pre, err := r.Cookie(preLoginCookie); err == nil {
		preValue = pre.Value
	}
	if !c.guard.checkFormToken(r.PostForm.Get("csrf"), preValue, now) {
		c.renderLogin(w, r, http.StatusForbidden, loginData{Error: "The sign-in form expired. Try again."})
		return
	}
	username := r.PostForm.Get("username")
	secret := r.PostForm.Get("secret")
	var (
		user string
		ok   bool
	)
	if username == "" {
		user, ok = c.verifyToken(r, secret)
	} else {
		var refused *loginRefusal
		user, ok, refused = c.verifyPassword(r.Context(), username, secret, now)
		if refused != nil {
			secs := retryAfter(w, refused.wait)
			msg := refused.message + " Try again in " + strconv.Itoa(secs) + " seconds"
			if c.opts.Authenticate != nil {
				msg += ", or sign in with an API token"
			}
			c.renderLogin(w, r, refused.status, loginData{Error: msg + ".", Username: username})
			return
		}
	}
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

// retryAfter sets the Retry-After header for wait and returns it in whole
// seconds.
func retryAfter(w http.ResponseWriter, wait time.Duration) int {
	secs := int(wait/time.Second) + 1
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return secs
}

// loginRefusal is a password sign-in refused before the password was
// checked, to keep the server's CPU for its real work.
type loginRefusal struct {
	status  int
	wait    time.Duration
	message string
}

// verifyToken checks an API token; it is cheap (one hash), so it draws on
// no server-wide budget.
func (c *Console) verifyToken(r *http.Request, secret string) (string, bool) {
	if secret == "" || len(secret) > 4096 || c.opts.Authenticate == nil {
		return "", false
	}
	return "API token", c.opts.Authenticate(r, secret)
}

// verifyPassword checks a user's password. A bcrypt compare costs up to a
// second of CPU and the sign-in form is open to anyone, so every check
// first takes a failure from the server-wide budget (given back when the
// password is right) and then one of the few check slots; when either is
// out, the sign-in is refused unchecked. An unknown user name is compared
// against a dummy hash of the same cost, under the same bounds, so that it
// cannot be told apart from a wrong password.
func (c *Console) verifyPassword(ctx context.Context, username, secret string, now time.Time) (string, bool, *loginRefusal) {
	if secret == "" || len(secret) > 4096 {
		return "", false, nil
	}
	if ok, wait := c.guard.reserveFailure(now); !ok {
		if c.guard.notePaused(true) {
			c.log.Warn("console password sign-in paused: the server-wide budget of failed sign-ins is spent",
				zap.Duration("refills_in", wait))
		}
		return "", false, &loginRefusal{http.StatusTooManyRequests, wait,
			"Too many failed sign-ins on this gateway: signing in with a password is paused."}
	}
	c.guard.notePaused(false)
	if !c.guard.acquireCheck(ctx) {
		c.guard.refundFailure(now)
		return "", false, &loginRefusal{http.StatusServiceUnavailable, 5 * time.Second,
			"Too many sign-ins at once on this gateway."}
	}
	defer c.guard.releaseCheck()
	hash, known := c.opts.Users[username]
	if !known {
		_ = c.compare(c.dummyHash, []byte(secret))
		return "", false, nil
	}
	if c.compare([]byte(hash), []byte(secret)) != nil {
		return "", false, nil
	}
	c.guard.refundFailure(now)
	return username, true, nil
}

// logout ends the session.
func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(sessionCookie); err == nil {
		c.sessions.delete(ck.Value)
	}
	http.SetCookie(w, c.cookie(r, sessionCookie, "", -1))
	http.Redirect(w, r, c.path("/login?signed_out=1"), http.StatusSeeOther)
}
