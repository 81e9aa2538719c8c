// Package linkflow lets an end user connect or reconnect an integrated
// account: it issues link tokens, serves the hosted connect-account page, runs
// the OAuth authorization-code flow (state bound to the link token, PKCE S256)
// or the API-key / basic form, stores the new credentials with their webhook
// events in one transaction, and serves a Link SDK that speaks the message
// protocol of Truto's published Link SDK.
//
// The Caddy handlers connect_account and accounts_api are thin wrappers
// around Service; this package knows nothing of Caddy.
package linkflow

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/tokenstore"
)

// Defaults of Options.
const (
	DefaultLinkTokenTTL = 7 * 24 * time.Hour
	DefaultStateTTL     = 10 * time.Minute
	// defaultHTTPTimeout bounds token exchange, userinfo and validation
	// calls when the caller gives no client of its own.
	defaultHTTPTimeout = 30 * time.Second
)

// Paths served by ServeHTTP, matched as suffixes of the request path so that
// a route that keeps or strips a prefix in front of them works alike.
const (
	PathConnect  = "/connect-account"
	PathCallback = "/connect-account/callback"
	PathSDK      = "/connect-account/sdk.js"
	pathPageJS   = "/connect-account/page.js"
	pathStyle    = "/connect-account/style.css"
	pathBrand    = "/connect-account/brand.css"
)

// Options configure a Service.
type Options struct {
	// PublicURL is the origin (and optional path prefix) end users reach
	// linkgate on, e.g. "https://gateway.example.com". Link URLs, the
	// page's assets and the OAuth redirect URI
	// (PublicURL + "/connect-account/callback") are built from it, so the
	// callback is served on the same origin as the connect page, which the
	// Link SDK requires.
	PublicURL string
	// AllowedOrigins are the application origins a link token's
	// redirect_uri may point to, that may frame the connect page, and to
	// which the pages post their result.
	AllowedOrigins []string
	// LinkTokenTTL is how long a link token stays usable. Default 7 days.
	LinkTokenTTL time.Duration
	// StateTTL is how long an OAuth state stays usable. Default 10 minutes.
	StateTTL time.Duration
	// SecretKeys are the gateway's secret keys (its encryption keys, the
	// first current), from which the key that binds an OAuth state to the
	// browser that started it is derived (HKDF-SHA256). Every instance
	// serving the same public_url must have the same keys, as a cluster
	// sharing one database does; keys after the first still verify, so a
	// key rotation does not break flows in progress. Required.
	SecretKeys [][]byte
	// Client makes the token exchange, userinfo and validation calls.
	// Default: a client with a 30 s timeout.
	Client *http.Client
	// Logger receives the flow's logs; it never gets a secret.
	Logger *zap.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time
	// OnCommit, if set, is called after a commit that wrote webhook
	// events, to wake the dispatcher.
	OnCommit func()
	// Environment maps Truto's environment_integration_id to integration
	// names. Optional.
	Environment *wire.Environment
	// Branding is the product's name, logo and colour on the connect
	// pages. Optional; New checks it.
	Branding *Branding
	// TenantAllowed, if set, tells whether the API caller whose request
	// carries ctx may act for a tenant; a link token for another tenant is
	// refused. Nil allows every tenant.
	TenantAllowed func(ctx context.Context, tenant string) bool
}

// Service serves link tokens and the connect-account flow.
type Service struct {
	store        tokenstore.Store
	integrations map[string]*account.Integration
	opts         Options
	publicURL    string // without a trailing slash
	publicOrigin string
	origins      []string // normalised AllowedOrigins
	log          *zap.Logger
	binding      *binding
	submits      *submitLimiter
	openers      openerWarnings
	// logoOrigin is the origin of Branding.LogoURL, for img-src.
	logoOrigin string
}

// New returns a Service over store for the given integrations (by name).
func New(store tokenstore.Store, integrations map[string]*account.Integration, opts Options) (*Service, error) {
	if store == nil {
		return nil, errors.New("linkflow: a store is required")
	}
	pu, err := url.Parse(opts.PublicURL)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" || pu.RawQuery != "" || pu.Fragment != "" {
		return nil, fmt.Errorf("linkflow: public_url %q is not an absolute http(s) URL without query", opts.PublicURL)
	}
	s := &Service{
		store:        store,
		integrations: integrations,
		opts:         opts,
		publicURL:    strings.TrimSuffix(opts.PublicURL, "/"),
		publicOrigin: originOf(pu),
	}
	if err := opts.Branding.Validate(); err != nil {
		return nil, fmt.Errorf("linkflow: %w", err)
	}
	if opts.Branding != nil && opts.Branding.LogoURL != "" {
		s.logoOrigin, _ = logoOrigin(opts.Branding.LogoURL)
	}
	for _, o := range opts.AllowedOrigins {
		n, err := normalizeOrigin(o)
		if err != nil {
			return nil, fmt.Errorf("linkflow: allowed origin %q: %w", o, err)
		}
		s.origins = append(s.origins, n)
	}
	if s.opts.LinkTokenTTL <= 0 {
		s.opts.LinkTokenTTL = DefaultLinkTokenTTL
	}
	if s.opts.StateTTL <= 0 {
		s.opts.StateTTL = DefaultStateTTL
	}
	if s.opts.Client == nil {
		s.opts.Client = &http.Client{Timeout: defaultHTTPTimeout}
	}
	if s.opts.Now == nil {
		s.opts.Now = time.Now
	}
	s.log = opts.Logger
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.binding, err = newBinding(opts.SecretKeys, pu, s.opts.StateTTL); err != nil {
		return nil, err
	}
	if !s.binding.secure {
		s.log.Warn("public_url is plain http on a host other than localhost: the browser binding of OAuth states uses a cookie without Secure, and the connect page does not work in an iframe of another site; serve public_url over https",
			zap.String("public_url", s.publicURL))
	}
	s.submits = newSubmitLimiter()
	return s, nil
}

// RedirectURI is the OAuth redirect URI to register at every provider.
func (s *Service) RedirectURI() string { return s.publicURL + PathCallback }

// ServeHTTP serves the end user's side of the flow. It matches the request
// path by suffix, so it may be mounted under any prefix, stripped or not:
//
//	GET  …/connect-account           the connect page (?link_token=…[&iframe=true])
//	POST …/connect-account           start OAuth, or submit the API-key / basic form
//	GET  …/connect-account/callback  the provider's redirect
//	GET  …/connect-account/sdk.js    the Link SDK (an ES module)
//
// plus the page's own script and style sheet beside sdk.js.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case strings.HasSuffix(p, PathCallback):
		// GET only: a HEAD (a link checker) must not spend the state.
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		s.callback(w, r)
	case strings.HasSuffix(p, PathSDK):
		if !allowMethods(w, r, http.MethodGet) {
			return
		}
		serveAsset(w, r, "sdk.js", "text/javascript; charset=utf-8", true)
	case strings.HasSuffix(p, pathPageJS):
		if !allowMethods(w, r, http.MethodGet) {
			return
		}
		serveAsset(w, r, "page.js", "text/javascript; charset=utf-8", false)
	case strings.HasSuffix(p, pathStyle):
		if !allowMethods(w, r, http.MethodGet) {
			return
		}
		serveAsset(w, r, "style.css", "text/css; charset=utf-8", false)
	case strings.HasSuffix(p, pathBrand):
		if !allowMethods(w, r, http.MethodGet) {
			return
		}
		s.serveBrand(w, r)
	case strings.HasSuffix(p, PathConnect):
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			s.connectPage(w, r)
		case http.MethodPost:
			s.connectSubmit(w, r)
		default:
			w.Header().Set("Allow", "GET, HEAD, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	default:
		http.NotFound(w, r)
	}
}

func allowMethods(w http.ResponseWriter, r *http.Request, m string) bool {
	if r.Method == m || (m == http.MethodGet && r.Method == http.MethodHead) {
		return true
	}
	w.Header().Set("Allow", m)
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

// committed wakes the webhook dispatcher after events were written.
func (s *Service) committed() {
	if s.opts.OnCommit != nil {
		s.opts.OnCommit()
	}
}

// originOf is the ASCII serialisation of u's origin, as browsers write it
// in event.origin: lowercase, default port left out.
func originOf(u *url.URL) string {
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	if (scheme == "http" && strings.HasSuffix(host, ":80")) || (scheme == "https" && strings.HasSuffix(host, ":443")) {
		host = host[:strings.LastIndexByte(host, ':')]
	}
	return scheme + "://" + host
}

// normalizeOrigin reads "https://app.example.com[/]" as an origin.
func normalizeOrigin(o string) (string, error) {
	u, err := url.Parse(strings.TrimSuffix(o, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
		return "", errors.New("not an origin like https://app.example.com")
	}
	return originOf(u), nil
}

// allowedOrigin reports whether origin is one of AllowedOrigins.
func (s *Service) allowedOrigin(origin string) bool {
	for _, o := range s.origins {
		if o == origin {
			return true
		}
	}
	return false
}
