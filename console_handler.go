package linkgate

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/linkgate/linkgate/console"
	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/linkflow"
)

func init() {
	caddy.RegisterModule(Console{})
	httpcaddyfile.RegisterHandlerDirective("accounts_console", parseConsole)
	// Its order is registered in caddyfile.go, before accounts_api's.
}

// Console is the accounts_console handler: the admin web UI where an
// operator finds the integrated accounts that need reauthorization, gets a
// connection link (the magic link) for the end user, refreshes credentials
// and redelivers webhooks. Operators sign in with one of the app's API
// tokens or as a configured user. Requests outside Prefix go to the next
// handler.
type Console struct {
	// Prefix is the path the console is served under, e.g. "/console" for
	// `handle /console* { accounts_console }`. Links and the session
	// cookie's Path use it. Default "/console".
	Prefix string `json:"prefix,omitempty"`

	// Users are operators who may sign in with a password, by user name:
	// the value is a bcrypt hash (`caddy hash-password` makes one). The
	// app's API tokens always work too.
	Users map[string]string `json:"users,omitempty"`

	// SessionTTL is the longest a console session lives. Default 12h.
	SessionTTL caddy.Duration `json:"session_ttl,omitempty"`

	// IdleTimeout ends a session that has not been used for this long.
	// Default 30m.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	app         *App
	logger      *zap.Logger
	sessions    *console.Sessions
	sessionsKey string
	guard       *console.Guard
	// lazy holds the UI, built on first use: it needs the app's store,
	// which is opened when the app starts, after this handler is
	// provisioned. A pointer, because CaddyModule copies the module value.
	lazy *lazyConsole
}

type lazyConsole struct {
	mu sync.Mutex
	ui *console.Console
}

// CaddyModule returns the Caddy module information.
func (Console) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.accounts_console",
		New: func() caddy.Module { return new(Console) },
	}
}

// Provision finds the app and checks the users.
func (h *Console) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.lazy = new(lazyConsole)
	app, err := loadApp(ctx)
	if err != nil {
		return err
	}
	h.app = app
	if h.Prefix == "" {
		h.Prefix = console.DefaultPrefix
	}
	h.Prefix = strings.TrimRight(h.Prefix, "/")
	if h.Prefix == "" || !strings.HasPrefix(h.Prefix, "/") {
		return fmt.Errorf("accounts_console: prefix %q must be a path like /console", h.Prefix)
	}
	repl := caddy.NewReplacer()
	users := make(map[string]string, len(h.Users))
	for name, hash := range h.Users {
		hash = repl.ReplaceAll(hash, "")
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return fmt.Errorf("accounts_console: user %s: the password must be a bcrypt hash (caddy hash-password makes one)", name)
		}
		users[name] = hash
	}
	h.Users = users

	// Sessions outlive config reloads, so a reload signs nobody out; a
	// change of who may sign in (users, API tokens, prefix or session
	// lifetimes) gives a fresh store and so ends every session.
	h.sessionsKey = h.sessionStoreKey()
	v, _, err := consoleSessions.LoadOrNew(h.sessionsKey, func() (caddy.Destructor, error) {
		return sessionHolder{console.NewSessions(0, time.Duration(h.SessionTTL), time.Duration(h.IdleTimeout))}, nil
	})
	if err != nil {
		return err
	}
	h.sessions = v.(sessionHolder).Sessions

	// One guard for every console of the process, kept across reloads:
	// the bounds on password checks are the server's CPU's, and a reload
	// must not hand an attacker a fresh budget.
	g, _, err := consoleGuards.LoadOrNew(consoleGuardKey, func() (caddy.Destructor, error) {
		return guardHolder{console.NewGuard(console.GuardOptions{})}, nil
	})
	if err != nil {
		return err
	}
	h.guard = g.(guardHolder).Guard
	return nil
}

// Cleanup releases the session store and the guard; the last console to
// hold them drops them.
func (h *Console) Cleanup() error {
	if h.guard != nil {
		if _, err := consoleGuards.Delete(consoleGuardKey); err != nil {
			return err
		}
		h.guard = nil
	}
	if h.sessionsKey == "" {
		return nil
	}
	_, err := consoleSessions.Delete(h.sessionsKey)
	return err
}

// sessionStoreKey identifies the session store in the pool by everything
// that decides who may sign in.
func (h *Console) sessionStoreKey() string {
	sum := sha256.New()
	fmt.Fprintf(sum, "%s\x00%d\x00%d", h.Prefix, h.SessionTTL, h.IdleTimeout)
	names := make([]string, 0, len(h.Users))
	for name := range h.Users {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(sum, "\x00u%s\x00%s", name, h.Users[name])
	}
	for _, t := range h.app.tokens {
		if t.tenant != "" {
			continue // the console takes unrestricted tokens only
		}
		sum.Write([]byte{0, 't'})
		sum.Write(t.sum[:])
	}
	return fmt.Sprintf("%x", sum.Sum(nil))
}

// consoleSessions holds the consoles' session stores across config reloads.
var consoleSessions = caddy.NewUsagePool()

// consoleGuards holds the one sign-in guard of the process.
var consoleGuards = caddy.NewUsagePool()

const consoleGuardKey = "console sign-in guard"

// guardHolder lets a guard live in a caddy.UsagePool.
type guardHolder struct{ *console.Guard }

// Destruct drops nothing: the guard is plain memory.
func (guardHolder) Destruct() error { return nil }

// sessionHolder lets a session store live in a caddy.UsagePool.
type sessionHolder struct{ *console.Sessions }

// Destruct drops nothing: the sessions are plain memory.
func (sessionHolder) Destruct() error { return nil }

// handles reports whether r is for the console: its path, or the path it
// had before a `uri strip_prefix`, is under Prefix.
func (h *Console) handles(r *http.Request) bool {
	under := func(p string) bool { return p == h.Prefix || strings.HasPrefix(p, h.Prefix+"/") }
	if under(r.URL.Path) {
		return true
	}
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
		return under(orig.URL.Path)
	}
	return false
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Console) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !h.handles(r) {
		return next.ServeHTTP(w, r)
	}
	ui, err := h.console()
	if err != nil {
		h.logger.Error("opening the console", zap.Error(err))
		wire.WriteError(w, http.StatusServiceUnavailable, errStoreUnavailable.Error())
		return nil
	}
	ui.ServeHTTP(w, r)
	return nil
}

// console returns the UI, building it on the app's runtime on first use.
func (h *Console) console() (*console.Console, error) {
	h.lazy.mu.Lock()
	defer h.lazy.mu.Unlock()
	if h.lazy.ui != nil {
		return h.lazy.ui, nil
	}
	rt, err := h.app.runtime()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(h.app.Integrations))
	for name := range h.app.Integrations {
		names = append(names, name)
	}
	slices.Sort(names)
	ui, err := console.New(console.Options{
		Store:   rt.store,
		Links:   consoleLinks{rt.links},
		Refresh: rt.refresher.Refresh,
		Redeliver: func(ctx context.Context, id string) error {
			if err := rt.store.Redeliver(ctx, id, time.Now()); err != nil {
				return err
			}
			rt.dispatcher.Notify()
			return nil
		},
		Webhooks: rt.webhookAPI,
		Notify:   rt.dispatcher.Notify,
		// The console shows every tenant: unrestricted API tokens only.
		Authenticate: func(r *http.Request, token string) bool {
			c, err := h.app.authorize(r, token)
			return err == nil && c.tenant == ""
		},
		Users:        h.Users,
		Integrations: names,
		Prefix:       h.Prefix,
		Sessions:     h.sessions,
		Guard:        h.guard,
		// Behind a proxy that ends TLS the request is plain HTTP; the
		// public URL says what the browser sees.
		SecureCookies: strings.HasPrefix(strings.ToLower(h.app.PublicURL), "https://"),
		ClientIP:      clientIP,
		Logger:        h.logger,
	})
	if err != nil {
		return nil, err
	}
	h.lazy.ui = ui
	return ui, nil
}

// clientIP is the client address Caddy determined, which honours the
// server's trusted_proxies, so sign-in rate limits apply to the real client.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	return r.RemoteAddr
}

// parseConsole sets up the handler from Caddyfile tokens. Syntax:
//
//	accounts_console [<matcher>] {
//		prefix       <path>
//		users {
//			<name> <bcrypt hash>
//		}
//		session_ttl  <duration>
//		idle_timeout <duration>
//	}
func parseConsole(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	c := new(Console)
	if err := c.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return c, nil
}

// UnmarshalCaddyfile reads the accounts_console directive (see parseConsole).
func (h *Console) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	// A path right after the directive is a request matcher to Caddy, so
	// the prefix is set in the block.
	if d.NextArg() {
		return d.Errf("accounts_console takes no argument: set the path with `prefix %s` in its block", d.Val())
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "prefix":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.Prefix = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "users":
			if d.NextArg() {
				return d.ArgErr()
			}
			if h.Users == nil {
				h.Users = map[string]string{}
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				name := d.Val()
				if !d.NextArg() {
					return d.Errf("user %s: a bcrypt hash is required", name)
				}
				if _, dup := h.Users[name]; dup {
					return d.Errf("user %s is configured twice", name)
				}
				h.Users[name] = d.Val()
				if d.NextArg() {
					return d.ArgErr()
				}
			}
		case "session_ttl", "idle_timeout":
			opt := d.Val()
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("%s %q: a positive duration like 30m is required", opt, d.Val())
			}
			if opt == "session_ttl" {
				h.SessionTTL = caddy.Duration(dur)
			} else {
				h.IdleTimeout = caddy.Duration(dur)
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("accounts_console: unknown option %q", d.Val())
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Console)(nil)
	_ caddy.CleanerUpper          = (*Console)(nil)
	_ caddyhttp.MiddlewareHandler = (*Console)(nil)
	_ caddyfile.Unmarshaler       = (*Console)(nil)
)

// consoleLinks issues link tokens for the console, whose users are signed
// in with an unrestricted API token (or a configured user): every tenant.
type consoleLinks struct{ links *linkflow.Service }

func (c consoleLinks) CreateLinkToken(w http.ResponseWriter, r *http.Request) {
	c.links.CreateLinkToken(w, r.WithContext(withCaller(r.Context(), caller{})))
}
