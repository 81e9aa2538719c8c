// Package console is linkgate's admin web UI: the list of integrated accounts
// with the ones that need reauthorization a filter away, an account's page
// with its Connection section (get a connection link, the magic link an end
// user opens to re-authorize; refresh credentials now) and the webhook
// delivery log with redelivery.
//
// Pages are rendered on the server from html/template; CSS and a small
// script for the copy button and dialogs are embedded and served as files, so
// a strict Content-Security-Policy holds and reading works without
// JavaScript. Operators sign in with an API token or a configured user; the
// session lives on the server, behind an HttpOnly, SameSite=Strict cookie,
// and every form carries a per-session CSRF token.
//
// The Caddy handler accounts_console is a thin wrapper around Console; this
// package knows nothing of Caddy.
package console

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/tokenstore"
)

// DefaultPrefix is the path the console is mounted under when Options.Prefix
// is empty.
const DefaultPrefix = "/console"

// Defaults of Options.
const (
	DefaultSessionTTL  = 12 * time.Hour
	DefaultIdleTimeout = 30 * time.Minute
	DefaultMaxSessions = 1000
	// DefaultLoginBurst login attempts may be made at once from one IP
	// address; then one more every DefaultLoginEvery.
	DefaultLoginBurst = 5
	DefaultLoginEvery = 12 * time.Second
)

// LinkIssuer creates link tokens. (*linkflow.Service).CreateLinkToken is the
// one implementation: the console calls it in-process with the same JSON
// request the API takes, so there is one code path for link tokens.
type LinkIssuer interface {
	CreateLinkToken(w http.ResponseWriter, r *http.Request)
}

// Options configure a Console.
type Options struct {
	// Store holds the accounts and the webhook delivery log. Required.
	Store tokenstore.Store
	// Links issues connection links. Required.
	Links LinkIssuer
	// Refresh refreshes an account's credentials now; it returns nil,
	// refresh.ErrNeedsReauth or a *refresh.Error. Nil hides the button.
	Refresh func(ctx context.Context, id string) error
	// Redeliver makes a webhook delivery pending again. Default: the
	// store's Redeliver, due now; the Caddy wrapper also wakes the
	// dispatcher.
	Redeliver func(ctx context.Context, id string) error
	// Webhooks is the webhook API (webhook.NewAPI): the console lists
	// the endpoints, sends test events and enables endpoints through it,
	// with the requests the HTTP API takes. Nil hides the endpoints page.
	Webhooks http.Handler
	// Notify, if set, wakes the webhook dispatcher after the console wrote
	// events (an account deleted).
	Notify func()
	// Authenticate reports whether token is an API token that the client
	// sending r may use, in constant time. Nil disables sign-in with an
	// API token.
	Authenticate func(r *http.Request, token string) bool
	// Users are the operators who may sign in with a password: user name
	// to bcrypt hash.
	Users map[string]string
	// Integrations are the configured integration names, offered in the
	// accounts filter.
	Integrations []string
	// Prefix is the path the console is mounted under. Default "/console".
	Prefix string
	// SessionTTL is the longest a session lives. Default 12 h.
	SessionTTL time.Duration
	// IdleTimeout ends a session unused for this long. Default 30 min.
	IdleTimeout time.Duration
	// MaxSessions bounds the sessions kept in memory; when full, the least
	// recently used session is dropped. Default 1000.
	MaxSessions int
	// Sessions, if set, holds the sessions, and SessionTTL, IdleTimeout
	// and MaxSessions are its own. Share one across consoles that replace
	// each other so that a config reload signs nobody out.
	Sessions *Sessions
	// Guard bounds sign-in attempts: per client address, and server-wide
	// for password checks. Share one across every console of a server and
	// across reloads. Default: a Guard of this console's own, with
	// LoginBurst and LoginEvery.
	Guard *Guard
	// LoginBurst and LoginEvery rate-limit sign-in attempts per client
	// address (an IPv4 address or an IPv6 /64) when Guard is nil:
	// LoginBurst at once, then one per LoginEvery.
	LoginBurst int
	LoginEvery time.Duration
	// SecureCookies marks the console's cookies Secure even when the
	// request arrived in plain HTTP: set it when the console's public URL
	// is https and TLS ends at a proxy in front of the gateway.
	SecureCookies bool
	// ClientIP returns the client's IP address for rate limiting. Default:
	// the host of RemoteAddr. Behind a proxy, give the one Caddy trusts.
	ClientIP func(r *http.Request) string
	// Logger receives the console's logs; it never gets a secret.
	Logger *zap.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time
}

// Console serves the admin UI. It is an http.Handler.
type Console struct {
	opts     Options
	prefix   string
	log      *zap.Logger
	sessions *Sessions
	guard    *Guard
	pages    *pages
	routes   *http.ServeMux
	// dummyHash is compared against for an unknown user name, so that a
	// wrong name costs as much time as a wrong password.
	dummyHash []byte
	// compare checks a password against a bcrypt hash; tests watch it.
	compare func(hash, password []byte) error
}

// New returns a Console, or an error that names the option that is wrong.
func New(opts Options) (*Console, error) {
	if opts.Store == nil {
		return nil, errors.New("console: a store is required")
	}
	if opts.Links == nil {
		return nil, errors.New("console: a link issuer is required")
	}
	if opts.Authenticate == nil && len(opts.Users) == 0 {
		return nil, errors.New("console: no way to sign in: configure an API token or users")
	}
	for name, hash := range opts.Users {
		if name == "" {
			return nil, errors.New("console: a user name is empty")
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("console: user %s: the password must be a bcrypt hash (caddy hash-password makes one): %w", name, err)
		}
	}
	prefix := strings.TrimRight(opts.Prefix, "/")
	if opts.Prefix == "" {
		prefix = DefaultPrefix
	}
	if prefix != "" && !strings.HasPrefix(prefix, "/") {
		return nil, fmt.Errorf("console: prefix %q must start with /", opts.Prefix)
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = DefaultSessionTTL
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = DefaultMaxSessions
	}
	if opts.Sessions == nil {
		opts.Sessions = NewSessions(opts.MaxSessions, opts.SessionTTL, opts.IdleTimeout)
	}
	if opts.Guard == nil {
		opts.Guard = NewGuard(GuardOptions{LoginBurst: opts.LoginBurst, LoginEvery: opts.LoginEvery})
	}
	if opts.ClientIP == nil {
		opts.ClientIP = remoteIP
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Redeliver == nil {
		st, now := opts.Store, opts.Now
		opts.Redeliver = func(ctx context.Context, id string) error { return st.Redeliver(ctx, id, now()) }
	}
	// The dummy hash costs what the configured hashes cost, so an unknown
	// user name takes as long to refuse as a wrong password.
	var dummy []byte
	for _, hash := range opts.Users {
		cost, _ := bcrypt.Cost([]byte(hash))
		h, err := bcrypt.GenerateFromPassword([]byte("linkgate console"), cost)
		if err != nil {
			return nil, fmt.Errorf("console: preparing the password check: %w", err)
		}
		dummy = h
		break
	}
	pg, err := loadPages()
	if err != nil {
		return nil, err
	}
	c := &Console{
		opts:      opts,
		prefix:    prefix,
		log:       opts.Logger,
		sessions:  opts.Sessions,
		guard:     opts.Guard,
		pages:     pg,
		dummyHash: dummy,
		compare:   bcrypt.CompareHashAndPassword,
	}
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", c.home)
	m.HandleFunc("GET /accounts", c.accounts)
	m.HandleFunc("GET /accounts/{id}", c.accountPage)
	m.HandleFunc("POST /accounts/{id}/link", c.createLink)
	m.HandleFunc("POST /accounts/{id}/refresh", c.refresh)
	m.HandleFunc("POST /accounts/{id}/delete", c.deleteAccount)
	m.HandleFunc("GET /accounts/new", c.newLinkPage)
	m.HandleFunc("POST /accounts/new", c.createNewLink)
	m.HandleFunc("POST /tenant-links", c.tenantLinks)
	m.HandleFunc("GET /webhooks", c.webhooks)
	m.HandleFunc("POST /webhooks/test", c.testWebhooks)
	m.HandleFunc("POST /webhooks/{id}/enable", c.enableWebhook)
	m.HandleFunc("GET /deliveries", c.deliveries)
	m.HandleFunc("POST /deliveries/{id}/redeliver", c.redeliver)
	m.HandleFunc("POST /logout", c.logout)
	c.routes = m
	return c, nil
}

// ServeHTTP serves the console. Requests may arrive with the prefix (a
// `handle /console*` route) or without it (after `uri strip_prefix`); links
// always carry the prefix.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sub := r.URL.Path
	if c.prefix != "" && (sub == c.prefix || strings.HasPrefix(sub, c.prefix+"/")) {
		sub = strings.TrimPrefix(sub, c.prefix)
	}
	if sub == "" {
		sub = "/"
	}
	securityHeaders(w.Header())
	if err := wire.CheckRequestText(r); err != nil {
		c.renderError(w, r, http.StatusBadRequest, err.Error())
		return
	}

	switch {
	case strings.HasPrefix(sub, "/assets/"):
		c.serveAsset(w, r, strings.TrimPrefix(sub, "/assets/"))
		return
	case sub == "/login":
		c.login(w, r)
		return
	}

	s := c.session(r)
	if s == nil {
		// Reveal nothing, not even whether the page exists.
		http.Redirect(w, r, c.prefix+"/login", http.StatusSeeOther)
		return
	}
	r2 := new(http.Request)
	*r2 = *r
	u := *r.URL
	u.Path, u.RawPath = sub, ""
	r2.URL = &u
	r2 = r2.WithContext(context.WithValue(r.Context(), sessionKey{}, s))
	if r2.Method == http.MethodPost && !c.checkCSRF(r2, s) {
		c.renderError(w, r2, http.StatusForbidden, "This form has expired or did not come from the console. Reload the page and try again.")
		return
	}
	if _, pattern := c.routes.Handler(r2); pattern == "" {
		c.renderError(w, r2, http.StatusNotFound, "There is no such page in the console.")
		return
	}
	c.routes.ServeHTTP(w, r2)
}

// securityHeaders are on every answer: no caching (pages show account data
// and magic links), no framing, no referrer, and a CSP that runs only the
// console's own script and style files.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

// remoteIP is the host part of RemoteAddr.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// path returns a console URL path for the sub-path sub.
func (c *Console) path(sub string) string { return c.prefix + sub }
