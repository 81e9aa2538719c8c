// Package linkgate is the Caddy glue of linkgate: the integrated_accounts app,
// which owns the store, the refresher and the webhook dispatcher, the HTTP
// handlers inject_credentials, accounts_api, connect_account and
// accounts_console, and reverse_proxy's linkgate transport. The work itself
// is done by the packages below it (account, tokenstore, refresh, webhook,
// linkflow, console), which know nothing of Caddy.
package linkgate

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/linkflow"
	"github.com/linkgate/linkgate/tokenstore"
	"github.com/linkgate/linkgate/webhook"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the integrated_accounts app: the configuration and the long-lived
// parts of linkgate that every handler shares.
type App struct {
	// Storage says where accounts, link tokens and the webhook outbox live.
	// The default is SQLite in Caddy's data directory.
	Storage *StorageConfig `json:"storage,omitempty"`

	// EncryptionKeys seal credentials at rest: 32-byte AES-256 keys, base64
	// or hex. The first seals; all of them open, so a key can be rotated by
	// putting a new key first. With SQLite and no key, a key is generated in
	// Caddy's data directory on first start. PostgreSQL needs a key, shared by
	// every instance.
	EncryptionKeys []string `json:"encryption_keys,omitempty"`

	// APITokens are the bearer tokens the product's backend presents to the
	// API and to proxied calls. Several may be configured so tokens can be
	// rotated. At least one is required.
	APITokens []string `json:"api_tokens,omitempty"`

	// TenantAPITokens are API tokens restricted to one tenant each: every
	// route answers them only about that tenant's accounts, and refuses
	// them what concerns the whole gateway (webhook endpoints and
	// deliveries, the console).
	TenantAPITokens []TenantAPIToken `json:"tenant_api_tokens,omitempty"`

	// PublicURL is the gateway's public base URL, used to build magic links
	// and the OAuth redirect URI (PublicURL + "/connect-account/callback").
	PublicURL string `json:"public_url,omitempty"`

	// AllowedOrigins are the web origins of the product allowed as link
	// tokens' redirect_uri and as targets of the connect page's messages.
	AllowedOrigins []string `json:"allowed_origins,omitempty"`

	// LinkTokenTTL is how long a link token stays usable. Default 7 days.
	LinkTokenTTL caddy.Duration `json:"link_token_ttl,omitempty"`

	// Branding is the product's name, logo URL and primary colour on the
	// connect pages end users see. Optional.
	Branding *linkflow.Branding `json:"branding,omitempty"`

	// Integrations are the third-party APIs accounts connect to, by name.
	Integrations map[string]*account.Integration `json:"integrations,omitempty"`

	// Webhooks are the endpoints that receive account events.
	Webhooks []webhook.Endpoint `json:"webhooks,omitempty"`

	// WebhookTimeout bounds one delivery attempt, the answer included.
	// Default 15s.
	WebhookTimeout caddy.Duration `json:"webhook_timeout,omitempty"`

	// WebhookRetrySchedule is how long each retry waits after the previous
	// attempt; its length is the number of attempts. The first entry is the
	// first attempt's delay and is ignored (it is sent at once). Default,
	// Standard Webhooks': 0, 5s, 5m, 30m, 2h, 5h, 10h, 10h.
	WebhookRetrySchedule []caddy.Duration `json:"webhook_retry_schedule,omitempty"`

	// WebhookLease is how long a claimed delivery stays reserved for the
	// instance that claimed it; a crashed instance's deliveries are sent by
	// another (or by it, restarted) once their lease runs out. It must be
	// longer than WebhookTimeout. Default 1m.
	WebhookLease caddy.Duration `json:"webhook_lease,omitempty"`

	// EnvironmentID is the gateway's environment id, in every account and
	// webhook envelope (Truto's environment_id). When empty, the first
	// instance to start generates a UUID and stores it, so every instance
	// sharing the store, and every restart, uses the same; a receiver that
	// serves several gateways tells them apart by it.
	EnvironmentID string `json:"environment_id,omitempty"`

	// Refresh tunes token refresh.
	Refresh *RefreshConfig `json:"refresh,omitempty"`

	// CacheSize bounds the heap the cache of unsealed credentials holds,
	// in bytes (within about 10 %: each account's cost counts its strings,
	// context and the cache's own bookkeeping). Default 64 MiB, room for
	// about 50,000 OAuth accounts.
	CacheSize int64 `json:"cache_size,omitempty"`

	// RetryBodyLimit is the largest request body inject_credentials keeps so
	// that a request refused with 401 can be retried after a token refresh.
	// Default 64 KiB; larger bodies are streamed and not retried.
	RetryBodyLimit int64 `json:"retry_body_limit,omitempty"`

	ctx       caddy.Context
	logger    *zap.Logger
	tokens    []hashedToken
	keys      [][]byte
	poolKey   string
	storeHold *storeHolder
	metrics   *metrics
	events    *caddyevents.App
	upstreams map[string]*upstream

	// live is the runtime built on the open store; a pointer, because the
	// module value is copied by CaddyModule and must not carry a lock.
	live *liveRuntime
}

type liveRuntime struct {
	mu  sync.Mutex
	run atomic.Pointer[runtime]
}

// StorageConfig selects the store.
type StorageConfig struct {
	// Driver is "sqlite" (default) or "postgres".
	Driver string `json:"driver,omitempty"`
	// Path is the SQLite database file. Default: linkgate.db in Caddy's data directory.
	Path string `json:"path,omitempty"`
	// DSN is the PostgreSQL connection string.
	DSN string `json:"dsn,omitempty"`
}

// RefreshConfig tunes token refresh.
type RefreshConfig struct {
	// TokenTimeout is how long a request waits for a call to a token
	// endpoint. Default 30s. The call is not abandoned then (the provider
	// may already have rotated the refresh token): it runs on, up to
	// TokenHardLimit, and its answer is stored.
	TokenTimeout caddy.Duration `json:"token_timeout,omitempty"`
	// TokenHardLimit bounds a token call that nobody waits for any more.
	// Default 4 × token_timeout, at least 2m.
	TokenHardLimit caddy.Duration `json:"token_hard_limit,omitempty"`
	// MaxInFlight bounds the token calls this instance has on the wire at
	// once; requests waiting on an expired token go before the sweeper. A
	// crash loses at most the answers of the calls on the wire, so this is
	// also the most grants a SIGKILL can cost. Default 4.
	MaxInFlight int `json:"max_in_flight,omitempty"`
	// RefreshAhead: tokens that expire within this are refreshed in the
	// background by the sweeper. Default 10m.
	RefreshAhead caddy.Duration `json:"refresh_ahead,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "integrated_accounts",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision resolves placeholders and checks the configuration. It opens
// nothing: Provision also runs for `caddy validate` and `caddy adapt`.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	a.live = new(liveRuntime)
	repl := caddy.NewReplacer()

	if a.Storage == nil {
		a.Storage = &StorageConfig{}
	}
	a.Storage.Driver = strings.ToLower(repl.ReplaceAll(a.Storage.Driver, ""))
	if a.Storage.Driver == "" {
		a.Storage.Driver = "sqlite"
	}
	a.Storage.Path = repl.ReplaceAll(a.Storage.Path, "")
	a.Storage.DSN = repl.ReplaceAll(a.Storage.DSN, "")

	for i, k := range a.EncryptionKeys {
		raw := repl.ReplaceAll(k, "")
		key, err := tokenstore.ParseKey(raw)
		if err != nil {
			return fmt.Errorf("encryption_key #%d: %w", i+1, err)
		}
		a.keys = append(a.keys, key)
	}
	seen := map[[sha256.Size]byte]bool{}
	for _, t := range a.APITokens {
		t = repl.ReplaceAll(t, "")
		if t == "" {
			continue
		}
		example := slices.Contains(exampleAPITokens, t)
		ht := newHashedToken(t, "", example)
		seen[ht.sum] = true
		a.tokens = append(a.tokens, ht)
		if example {
			a.logger.Warn("api_token is a published example token: it is accepted only from clients on this machine (loopback); configure a token of your own, e.g. from openssl rand -hex 32")
		}
	}
	for i, t := range a.TenantAPITokens {
		tok := repl.ReplaceAll(t.Token, "")
		tenant := repl.ReplaceAll(t.Tenant, "")
		if tok == "" || !tenantIDPattern.MatchString(tenant) {
			return fmt.Errorf("tenant api_token #%d: a token and a tenant id (1 to 256 of A-Z a-z 0-9 . _ : @ + -) are required", i+1)
		}
		if isAccountToken(tok) {
			return fmt.Errorf("tenant api_token #%d: an API token must not start with %q", i+1, accountTokenPrefix)
		}
		if slices.Contains(exampleAPITokens, tok) {
			return fmt.Errorf("tenant api_token #%d: a published example token cannot be restricted to a tenant; configure a token of your own", i+1)
		}
		ht := newHashedToken(tok, tenant, false)
		if seen[ht.sum] {
			return fmt.Errorf("tenant api_token #%d: the same token is configured twice; one token has one restriction", i+1)
		}
		seen[ht.sum] = true
		a.tokens = append(a.tokens, ht)
	}
	a.PublicURL = strings.TrimRight(repl.ReplaceAll(a.PublicURL, ""), "/")
	for i, o := range a.AllowedOrigins {
		a.AllowedOrigins[i] = strings.TrimRight(repl.ReplaceAll(o, ""), "/")
	}
	if b := a.Branding; b != nil {
		b.Name = repl.ReplaceAll(b.Name, "")
		b.LogoURL = repl.ReplaceAll(b.LogoURL, "")
		b.PrimaryColor = repl.ReplaceAll(b.PrimaryColor, "")
	}
	for name, in := range a.Integrations {
		if in == nil {
			return fmt.Errorf("integration %s: empty configuration", name)
		}
		in.Name = name
		if in.Preset != "" {
			merged, err := withPreset(in)
			if err != nil {
				return err
			}
			in = merged
			a.Integrations[name] = in
		}
		// ReplaceKnown: {env.X} and {file.X} resolve now, while an
		// account's {connection.<name>} stays for each request.
		in.BaseURL = repl.ReplaceKnown(in.BaseURL, "")
		in.AuthorizeURL = repl.ReplaceKnown(in.AuthorizeURL, "")
		in.TokenURL = repl.ReplaceKnown(in.TokenURL, "")
		in.UserinfoURL = repl.ReplaceKnown(in.UserinfoURL, "")
		in.ValidateURL = repl.ReplaceKnown(in.ValidateURL, "")
		in.ClientID = repl.ReplaceAll(in.ClientID, "")
		in.ClientSecret = repl.ReplaceAll(in.ClientSecret, "")
		for k, v := range in.Headers {
			in.Headers[k] = repl.ReplaceKnown(v, "")
		}
		if in.Discovery != nil {
			in.Discovery.URL = repl.ReplaceKnown(in.Discovery.URL, "")
			for k, v := range in.Discovery.Headers {
				in.Discovery.Headers[k] = repl.ReplaceKnown(v, "")
			}
		}
	}
	for i := range a.Webhooks {
		w := &a.Webhooks[i]
		w.URL = repl.ReplaceAll(w.URL, "")
		for i, s := range w.Secrets {
			w.Secrets[i] = repl.ReplaceAll(s, "")
		}
	}
	if a.CacheSize <= 0 {
		a.CacheSize = 64 << 20
	}
	if a.RetryBodyLimit == 0 {
		a.RetryBodyLimit = 64 << 10
	}
	if a.LinkTokenTTL == 0 {
		a.LinkTokenTTL = caddy.Duration(7 * 24 * time.Hour)
	}

	if err := a.validate(); err != nil {
		return err
	}
	a.warnUnvalidated()
	a.upstreams = make(map[string]*upstream, len(a.Integrations))
	for name, in := range a.Integrations {
		up, err := newUpstream(in)
		if err != nil {
			return err
		}
		a.upstreams[name] = up
	}

	ev, err := ctx.App("events")
	if err != nil {
		return fmt.Errorf("loading the events app: %w", err)
	}
	a.events = ev.(*caddyevents.App)

	m, err := newMetrics(ctx.GetMetricsRegistry())
	if err != nil {
		return err
	}
	a.metrics = m

	// The store outlives config reloads: the new config starts before the old
	// one stops, and both share one store (and one cache) through the pool.
	a.poolKey = a.storageKey()
	v, _, err := stores.LoadOrNew(a.poolKey, func() (caddy.Destructor, error) {
		return &storeHolder{cfg: *a.Storage, keys: a.keys, cacheSize: a.CacheSize}, nil
	})
	if err != nil {
		return err
	}
	a.storeHold = v.(*storeHolder)
	return nil
}

// warnUnvalidated warns about api_key and basic integrations without a
// validate_url: the connect page then saves any key the end user types,
// and a wrong one shows only when the first proxied call fails.
func (a *App) warnUnvalidated() {
	names := make([]string, 0, len(a.Integrations))
	for name := range a.Integrations {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		in := a.Integrations[name]
		if (in.Auth == account.MethodAPIKey || in.Auth == account.MethodBasic) && in.ValidateURL == "" {
			a.logger.Warn("this integration cannot check the credentials end users enter on the connect page: a wrong key is saved and fails only on the first proxied call; set validate_url to a cheap GET of its API that answers 2xx to good credentials",
				zap.String("integration", name), zap.String("auth", string(in.Auth)), zap.String("option", "validate_url"))
		}
	}
}

// validate checks the configuration and names the option that is wrong.
func (a *App) validate() error {
	switch a.Storage.Driver {
	case "sqlite":
	case "postgres":
		if a.Storage.DSN == "" {
			return fmt.Errorf("storage postgres: a dsn is required")
		}
		if len(a.keys) == 0 {
			return fmt.Errorf("encryption_key: required with storage postgres, and every instance must share it")
		}
	default:
		return fmt.Errorf("storage: driver %q is not sqlite or postgres", a.Storage.Driver)
	}
	if !slices.ContainsFunc(a.tokens, func(t hashedToken) bool { return t.tenant == "" }) {
		return fmt.Errorf("api_token: at least one API token without a tenant restriction is required")
	}
	if a.PublicURL == "" {
		return fmt.Errorf("public_url is required: the gateway's public base URL, used in magic links and in the OAuth redirect URI")
	}
	if u, err := url.Parse(a.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return fmt.Errorf("public_url %q: must be an absolute http(s) URL", a.PublicURL)
	}
	for _, o := range a.AllowedOrigins {
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("allowed_origins: %q is not an origin like https://app.example.com", o)
		}
	}
	if err := a.Branding.Validate(); err != nil {
		return err
	}
	for _, in := range a.Integrations {
		if err := in.Validate(); err != nil {
			return err
		}
	}
	timeout, lease := time.Duration(a.WebhookTimeout), time.Duration(a.WebhookLease)
	if timeout <= 0 {
		timeout = webhook.DefaultTimeout
	}
	if lease <= 0 {
		lease = webhook.DefaultLease
	}
	if lease <= timeout {
		return fmt.Errorf("webhook_lease %s must be longer than webhook_timeout %s", lease, timeout)
	}
	for i, w := range a.Webhooks {
		if err := w.Validate(); err != nil {
			return fmt.Errorf("webhook #%d: %w", i+1, err)
		}
	}
	return nil
}

// storageKey identifies the store in the pool: the same storage with the same
// keys is the same store.
func (a *App) storageKey() string {
	h := sha256.New()
	b, _ := json.Marshal(a.Storage)
	h.Write(b)
	for _, k := range a.keys {
		h.Write([]byte{0})
		h.Write(k)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// Start opens the store, so that an unusable database refuses to start, and
// starts the background workers.
func (a *App) Start() error {
	rt, err := a.runtime()
	if err != nil {
		return err
	}
	return rt.start()
}

// Stop stops the background workers. The store stays open until Cleanup
// releases it, because handlers of this config may still be serving.
func (a *App) Stop() error {
	if a.live == nil {
		return nil
	}
	rt := a.live.run.Load()
	if rt == nil {
		return nil
	}
	return rt.stop()
}

// Cleanup releases the store; the last config to release it closes it.
func (a *App) Cleanup() error {
	if a.poolKey == "" {
		return nil
	}
	_, err := stores.Delete(a.poolKey)
	return err
}

// runtime returns the parts built on the open store, building them on first
// use. Handlers may be called before the app has started (apps start in any
// order), so they call this too.
func (a *App) runtime() (*runtime, error) {
	if rt := a.live.run.Load(); rt != nil {
		return rt, nil
	}
	a.live.mu.Lock()
	defer a.live.mu.Unlock()
	if rt := a.live.run.Load(); rt != nil {
		return rt, nil
	}
	st, err := a.storeHold.open(a.logger)
	if err != nil {
		return nil, err
	}
	rt, err := newRuntime(a, st)
	if err != nil {
		return nil, err
	}
	a.live.run.Store(rt)
	return rt, nil
}

// runtimeOr503 returns the runtime for a handler, or logs why the store
// could not be opened and answers 503 (the cause may hold a DSN: it goes to
// the log, not to the caller).
func (a *App) runtimeOr503(w http.ResponseWriter, logger *zap.Logger) (*runtime, bool) {
	rt, err := a.runtime()
	if err != nil {
		logger.Error("opening the store", zap.Error(err))
		wire.WriteError(w, http.StatusServiceUnavailable, errStoreUnavailable.Error())
		return nil, false
	}
	return rt, true
}

// exampleAPITokens are the API tokens published in linkgate's README and
// example configurations. The gateway accepts them only from clients on its
// own machine (loopback), so that a configuration copied from an example
// never opens the accounts to the network.
var exampleAPITokens = []string{"dev-api-token"}

// authorize checks the API token a request presents and returns whom it
// belongs to: it must be one of the configured tokens, compared in constant
// time, and a published example token only counts when the client is on
// this machine. The error is a *wire.Error to answer with.
func (a *App) authorize(r *http.Request, bearer string) (caller, error) {
	i := a.tokenIndex(bearer)
	if i < 0 {
		return caller{}, errBadAPIToken
	}
	if a.tokens[i].example && !loopbackClient(r) {
		return caller{}, errExampleAPIToken
	}
	return caller{tenant: a.tokens[i].tenant}, nil
}

// tokenIndex returns which API token bearer is, or -1, in constant time
// whatever the token's length and whichever token it is.
func (a *App) tokenIndex(bearer string) int {
	if bearer == "" {
		return -1
	}
	idx := -1
	for i := range a.tokens {
		idx = subtle.ConstantTimeSelect(a.tokens[i].matches(bearer), i, idx)
	}
	return idx
}

// loopbackClient reports whether a request comes from this machine: its
// connection's peer is a loopback address (or a Unix socket's), and so is
// the client address Caddy determined, which differs when the server
// trusts a proxy in front of it. A proxy on this machine that Caddy does
// not trust would make every client look local, so any client address a
// forwarding header names must be loopback too.
func loopbackClient(r *http.Request) bool {
	if r.RemoteAddr != "@" && !loopbackAddr(r.RemoteAddr) {
		return false
	}
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" && ip != "@" && !loopbackAddr(ip) {
		return false
	}
	for _, name := range []string{"X-Forwarded-For", "X-Real-Ip", "Forwarded"} {
		for _, v := range r.Header[name] {
			for elem := range strings.SplitSeq(v, ",") {
				if name == "Forwarded" {
					elem = forwardedFor(elem)
					if elem == "" {
						continue
					}
				}
				if !loopbackAddr(strings.Trim(strings.TrimSpace(elem), `"[]`)) {
					return false
				}
			}
		}
	}
	return true
}

// forwardedFor returns the for= node of one element of a Forwarded header
// (RFC 7239), without quotes, or "".
func forwardedFor(elem string) string {
	for pair := range strings.SplitSeq(elem, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(pair), "=")
		if strings.EqualFold(k, "for") {
			v = strings.Trim(v, `"`)
			if strings.HasPrefix(v, "[") {
				if end := strings.IndexByte(v, ']'); end > 0 {
					return v[1:end]
				}
			}
			if h, _, err := net.SplitHostPort(v); err == nil {
				return h
			}
			return v
		}
	}
	return ""
}

// loopbackAddr reports whether an address, with or without a port, is a
// loopback IP address.
func loopbackAddr(s string) bool {
	if h, _, err := net.SplitHostPort(s); err == nil {
		s = h
	}
	ip, err := netip.ParseAddr(s)
	return err == nil && ip.Unmap().IsLoopback()
}

// The answers to a refused API token.
var (
	errBadAPIToken     = &wire.Error{Status: http.StatusUnauthorized, Message: "missing or invalid API token: send Authorization: Bearer <api token>"}
	errExampleAPIToken = &wire.Error{Status: http.StatusUnauthorized, Message: "this API token is a published example, accepted only from clients on the gateway's machine: configure an api_token of your own"}
)

// integration returns the configured integration name, or an error that names it.
func (a *App) integration(name string) (*account.Integration, error) {
	in, ok := a.Integrations[name]
	if !ok {
		return nil, fmt.Errorf("integration %q is not configured in this gateway", name)
	}
	return in, nil
}

// stores holds the open stores, shared across config reloads.
var stores = caddy.NewUsagePool()

// errStoreUnavailable is what handlers answer when the store cannot be opened.
var errStoreUnavailable = errors.New("the account store is unavailable")

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
