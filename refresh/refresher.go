// Package refresh keeps integrated accounts' credentials usable: it refreshes
// OAuth tokens (golang.org/x/oauth2) before they expire, one refresh per
// account at a time in the process and across processes, classifies what the
// token endpoint answers, and moves accounts through the state machine of
// package account when they can no longer authenticate.
//
// The request path calls Credentials before every proxied call, Unauthorized
// (and, after a retried request, UnauthorizedAfterRetry) when the upstream
// answers 401, and Succeeded when it answers 2xx. Refresh forces a refresh
// for the API; Start and Stop run the proactive sweeper.
package refresh

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

// ErrNeedsReauth is returned for an account that can no longer authenticate
// until the end user reconnects it. A *Error of class Revoked matches it with
// errors.Is.
var ErrNeedsReauth = errors.New("integrated account needs reauthorization")

// Class says who is to blame for a failed refresh.
type Class int

// Failure classes of a token endpoint's answer.
const (
	// Transient: network error, timeout, 5xx, 429, malformed answer. Back
	// off, keep serving a still-valid token, no alarm.
	Transient Class = iota + 1
	// Revoked: the grant is gone (invalid_grant and friends): needs_reauth.
	Revoked
	// Misconfigured: invalid_client / unauthorized_client: the integration's
	// configuration is wrong; the end user is not to blame.
	Misconfigured
)

// String names the class as it appears in logs and metrics.
func (c Class) String() string {
	switch c {
	case Transient:
		return "transient"
	case Revoked:
		return "revoked"
	case Misconfigured:
		return "misconfigured"
	}
	return "unknown"
}

// Error is a classified refresh failure. Its message holds no secret.
type Error struct {
	Class Class
	// Code is the OAuth error code, or a short word for non-OAuth failures.
	Code    string
	Message string
	// RetryAfter is how long the token endpoint asked us to wait, if it did,
	// or how much of the refresher's own back-off remains.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return "refresh failed: " + e.Code + ": " + e.Message }

// Is makes a Revoked error match ErrNeedsReauth: a refused refresh is what
// puts an account in needs_reauth.
func (e *Error) Is(target error) bool { return target == ErrNeedsReauth && e.Class == Revoked }

// Options tune a Refresher; zero values take defaults.
type Options struct {
	Logger *zap.Logger
	// Client makes token-endpoint calls. Its Timeout, if any, applies on
	// top of TokenTimeout.
	Client *http.Client
	// TokenTimeout is how long callers wait for a token-endpoint call.
	// Default 30s. The call itself is not abandoned then: the provider may
	// already have rotated the refresh token, so it runs on in the
	// background, up to TokenHardLimit, and its answer is kept.
	TokenTimeout time.Duration
	// TokenHardLimit bounds one token-endpoint call that nobody waits for
	// any more. Default 4 × TokenTimeout, at least 2m.
	TokenHardLimit time.Duration
	// MaxInFlight bounds the token calls of this Refresher on the wire at
	// once; callers waiting on an expired token go before the sweeper.
	// A crash loses at most the answers of the calls on the wire, so this
	// is also the most grants a SIGKILL can cost. Default 4.
	MaxInFlight int
	// Journal, when set, makes each token call durable on the local disk
	// before its answer waits for the store, and recovers after a crash.
	Journal *Journal
	// LockTimeout bounds the wait for the store's refresh lock. Default
	// TokenTimeout.
	LockTimeout time.Duration
	// RefreshAhead: the sweeper refreshes tokens expiring within this. Default 10m.
	RefreshAhead time.Duration
	// SweepInterval is how often the sweeper looks for expiring tokens.
	// Default 1m.
	SweepInterval time.Duration
	// SweepBatch is how many accounts the sweeper claims at once. Default 100.
	SweepBatch int
	// SweepConcurrency is how many refreshes the sweeper runs at once.
	// Default 4.
	SweepConcurrency int
	// SweepJitter spreads the sweeper's refreshes: each waits a random
	// time up to this before it starts. Default 2s.
	SweepJitter time.Duration
	// BackoffBase is the first wait after a failed refresh; it doubles with
	// each further failure of the same account. Default 1s.
	BackoffBase time.Duration
	// BackoffMax caps the wait between failed refreshes. Default 5m.
	BackoffMax time.Duration
	// Registerer receives the refresh metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
	// OnCommit is called after a write that committed outbox events (an
	// account that needs reauthorization, or one reactivated), so that the
	// webhook dispatcher sends them at once instead of at its next poll.
	OnCommit func()
	// Now is the clock; tests replace it.
	Now func() time.Time
}

// Refresher keeps accounts' credentials usable. It is safe for concurrent
// use.
type Refresher struct {
	store tokenstore.Store
	// fresh reads past any cache: after taking the refresh lock the account
	// must be read as the store has it, or a refresh by another instance
	// would be repeated with a dead refresh token.
	fresh        tokenstore.Store
	integrations map[string]*account.Integration
	opts         Options
	log          *zap.Logger
	metrics      *metrics

	sf singleflight.Group
	// gate bounds the token calls on the wire.
	gate *callGate

	mu         sync.Mutex
	backoff    map[string]*backoffState
	probeUntil map[string]time.Time
	// endpoints tracks each integration's token endpoint's outages, to
	// end accounts' back-offs when it recovers.
	endpoints  map[string]*endpointState
	outage     storeOutage
	background map[string]bool
	tokens     map[string]account.Credentials // client-credentials tokens by integration
	fetchedAt  map[string]time.Time           // when each of tokens was fetched
	retried    map[string]retriedToken
	// unknown holds, by account id, the digest of a refresh token whose
	// call was sent and whose answer was lost in this process, for when
	// the durable mark in the store could not be written.
	unknown map[string]string

	life     sync.Mutex
	lifeCond *sync.Cond
	flights  int
	cancel   context.CancelFunc
	sweeping sync.WaitGroup
}

// New returns a Refresher over store for the given integrations (by name).
// If store has an Inner() method (a cache in front of the real store), the
// refresher reads through it after taking the refresh lock, and if store has
// Invalidate(id) it drops cache entries it knows are stale.
func New(store tokenstore.Store, integrations map[string]*account.Integration, opts Options) *Refresher {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Client == nil {
		opts.Client = http.DefaultClient
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.TokenTimeout <= 0 {
		opts.TokenTimeout = 30 * time.Second
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = opts.TokenTimeout
	}
	if opts.TokenHardLimit <= 0 {
		opts.TokenHardLimit = max(4*opts.TokenTimeout, 2*time.Minute)
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 4
	}
	if opts.RefreshAhead <= 0 {
		opts.RefreshAhead = 10 * time.Minute
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = time.Minute
	}
	if opts.SweepBatch <= 0 {
		opts.SweepBatch = 100
	}
	if opts.SweepConcurrency <= 0 {
		opts.SweepConcurrency = 4
	}
	if opts.SweepJitter <= 0 {
		opts.SweepJitter = 2 * time.Second
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = time.Second
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = 5 * time.Minute
	}
	fresh := store
	if c, ok := store.(interface{ Inner() tokenstore.Store }); ok {
		fresh = c.Inner()
	}
	r := &Refresher{
		store:        store,
		fresh:        fresh,
		integrations: integrations,
		opts:         opts,
		log:          opts.Logger,
		metrics:      newMetrics(opts.Registerer),
		backoff:      map[string]*backoffState{},
		endpoints:    map[string]*endpointState{},
		probeUntil:   map[string]time.Time{},
		background:   map[string]bool{},
		tokens:       map[string]account.Credentials{},
		fetchedAt:    map[string]time.Time{},
		retried:      map[string]retriedToken{},
		unknown:      map[string]string{},
		gate:         newCallGate(opts.MaxInFlight),
	}
	r.lifeCond = sync.NewCond(&r.life)
	return r
}

// Credentials returns the credentials to inject for a now. a may be a shared
// cached account and is not modified.
//
// A token valid for longer than the integration's skew is returned at once;
// one inside the skew is returned while a refresh runs in the background; an
// expired one waits for the refresh, as long as ctx allows. An OAuth account
// in needs_reauth gets ErrNeedsReauth without a token call, except for one
// probe per probe interval.
func (r *Refresher) Credentials(ctx context.Context, a *account.Account) (account.Credentials, error) {
	switch a.Method {
	case account.MethodClientCredentials:
		integ, err := r.integration(a.Integration)
		if err != nil {
			return account.Credentials{}, err
		}
		return r.clientToken(ctx, integ)
	case account.MethodOAuth2:
	default:
		// api_key and basic: nothing to refresh. An account in
		// needs_reauth is still tried so that a success can reactivate it.
		return a.Credentials, nil
	}
	integ, err := r.integration(a.Integration)
	if err != nil {
		return account.Credentials{}, err
	}
	now := r.opts.Now()
	if a.Status == account.StatusNeedsReauth {
		return r.probe(ctx, a, now)
	}
	if a.Status != account.StatusActive {
		return account.Credentials{}, ErrNeedsReauth
	}
	c := a.Credentials
	// Expiry.After(now+skew) is Expiry.Sub(now) > skew without Sub's
	// slow path: a stored expiry has no monotonic reading, and Sub then
	// checks its arithmetic with an Add and an Equal, on every request.
	if c.RefreshToken == "" || c.Expiry.IsZero() || c.Expiry.After(now.Add(skewFor(integ, c))) {
		return c, nil
	}
	if c.Expiry.After(now) {
		if r.backingOff(a.ID, now) == nil {
			r.refreshInBackground(a.ID)
		}
		return c, nil
	}
	if e := r.backingOff(a.ID, now); e != nil {
		return account.Credentials{}, e
	}
	fresh, err := r.wait(ctx, a.ID, modeExpiring, "")
	if err != nil {
		return account.Credentials{}, err
	}
	if fresh.Status != account.StatusActive {
		return account.Credentials{}, ErrNeedsReauth
	}
	return fresh.Credentials, nil
}

// probe handles a request for an OAuth account in needs_reauth: fail fast,
// except that once per probe interval one refresh is tried, so that a
// failure classified wrongly heals by itself.
func (r *Refresher) probe(ctx context.Context, a *account.Account, now time.Time) (account.Credentials, error) {
	if a.Credentials.RefreshToken == "" || now.Before(a.NextProbeAt) {
		return account.Credentials{}, ErrNeedsReauth
	}
	r.mu.Lock()
	until := r.probeUntil[a.ID]
	r.mu.Unlock()
	if now.Before(until) {
		return account.Credentials{}, ErrNeedsReauth
	}
	fresh, err := r.wait(ctx, a.ID, modeProbe, "")
	if err != nil {
		if ctx.Err() != nil {
			return account.Credentials{}, err
		}
		return account.Credentials{}, ErrNeedsReauth
	}
	if fresh.Status != account.StatusActive {
		return account.Credentials{}, ErrNeedsReauth
	}
	return fresh.Credentials, nil
}

// Unauthorized handles an upstream 401 to a request sent with sent. It
// returns new credentials and true when the request should be retried once
// with them; otherwise the account has been marked as needing reauthorization
// (when the 401 was its first since it became active) and the error is
// ErrNeedsReauth, or the refresh failed for a reason that is not the end
// user's (a *Error of class Transient or Misconfigured) and nothing changed.
// A 401 judges only the credentials it was sent with: if the account holds
// others by now (a reconnect, a credentials change, while the request was on
// its way), nothing changes and the error is nil.
//
// For an OAuth account with a refresh token the cached entry is dropped and
// the token refreshed once, unless the store already holds a newer access
// token than sent (then that one is returned). The caller retries once; if
// the retry gets 401 too it should call UnauthorizedAfterRetry. A caller
// that calls Unauthorized again instead is understood as well: a 401 to an
// access token that Unauthorized handed out for a retry within the last
// minute counts as the second 401 (needs_reauth, no second refresh).
func (r *Refresher) Unauthorized(ctx context.Context, a *account.Account, sent account.Credentials) (account.Credentials, bool, error) {
	switch {
	case a.Method == account.MethodClientCredentials:
		integ, err := r.integration(a.Integration)
		if err != nil {
			return account.Credentials{}, false, err
		}
		if !r.dropClientToken(integ.Name, sent.AccessToken) {
			// The upstream refused a token fetched within retryWindow:
			// another one will not do better, and fetching one per 401
			// would hammer the token endpoint.
			return account.Credentials{}, false, r.UnauthorizedAfterRetry(ctx, a, sent)
		}
		c, err := r.clientToken(ctx, integ)
		if err != nil {
			return account.Credentials{}, false, err
		}
		return c, true, nil
	case a.Method == account.MethodOAuth2 && a.Credentials.RefreshToken != "":
		if r.handedForRetry(a.ID, sent.AccessToken) {
			return account.Credentials{}, false, r.UnauthorizedAfterRetry(ctx, a, sent)
		}
		r.invalidate(a.ID)
		fresh, err := r.wait(ctx, a.ID, modeStale, sent.AccessToken)
		if err != nil {
			return account.Credentials{}, false, err
		}
		if fresh.Status != account.StatusActive {
			return account.Credentials{}, false, ErrNeedsReauth
		}
		r.handForRetry(a.ID, fresh.Credentials.AccessToken)
		return fresh.Credentials, true, nil
	}
	return account.Credentials{}, false, r.markFailed(ctx, a, sent, &account.Error{Code: "unauthorized", Message: "the upstream API answered 401 Unauthorized"})
}

// retryWindow is how long an access token handed out for a retry marks a
// 401 to it as the second one.
const retryWindow = time.Minute

// handForRetry records that token was handed out for a retry of a request
// the upstream refused; only a digest is kept.
func (r *Refresher) handForRetry(id, token string) {
	r.mu.Lock()
	r.retried[id] = retriedToken{sum: sha256.Sum256([]byte(token)), at: r.opts.Now()}
	r.mu.Unlock()
}

// handedForRetry reports whether sent is the token handed out for a retry of
// account id within retryWindow, and forgets it.
func (r *Refresher) handedForRetry(id, sent string) bool {
	sum := sha256.Sum256([]byte(sent))
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.retried[id]
	if !ok {
		return false
	}
	if r.opts.Now().Sub(h.at) > retryWindow {
		delete(r.retried, id)
		return false
	}
	if subtle.ConstantTimeCompare(h.sum[:], sum[:]) != 1 {
		return false
	}
	delete(r.retried, id)
	return true
}

type retriedToken struct {
	sum [sha256.Size]byte
	at  time.Time
}

// UnauthorizedAfterRetry handles a 401 to the request retried with sent,
// the credentials Unauthorized returned: fresh credentials were refused, so
// the account needs reauthorization. It returns ErrNeedsReauth, nil if the
// account holds other credentials than sent by now (they were replaced while
// the request was on its way: the 401 says nothing about them), or the
// store's error if the change could not be written.
func (r *Refresher) UnauthorizedAfterRetry(ctx context.Context, a *account.Account, sent account.Credentials) error {
	return r.markFailed(ctx, a, sent, &account.Error{Code: "unauthorized", Message: "the upstream API answered 401 Unauthorized to freshly refreshed credentials"})
}

// Succeeded handles an upstream 2xx to a request sent with sent: an account
// in needs_reauth is active again (event reactivated), unless it holds
// other credentials than sent by now: the success vouches for the
// credentials it was sent with only.
func (r *Refresher) Succeeded(ctx context.Context, a *account.Account, sent account.Credentials) {
	if a.Status != account.StatusNeedsReauth {
		return
	}
	r.mu.Lock()
	delete(r.probeUntil, a.ID)
	r.mu.Unlock()
	err := r.transition(ctx, a.ID, account.UpstreamOK, nil, judged(a, sent))
	if errors.Is(err, errSuperseded) {
		r.judgedReplaced(a, "success")
		return
	}
	if err != nil {
		r.log.Warn("reactivating integrated account", zap.String("integrated_account_id", a.ID), zap.Error(err))
	}
}

// markFailed moves an account to needs_reauth after an upstream 401 to a
// request sent with sent and schedules its first probe. It returns
// ErrNeedsReauth; nil when the account holds other credentials than sent by
// now, and nothing changed; or the store's error.
func (r *Refresher) markFailed(ctx context.Context, a *account.Account, sent account.Credentials, cause *account.Error) error {
	err := r.transition(ctx, a.ID, account.AuthFailed, cause, judged(a, sent))
	if errors.Is(err, errSuperseded) {
		r.judgedReplaced(a, "401")
		return nil
	}
	if err != nil {
		return fmt.Errorf("marking account %s as needing reauthorization: %w", a.ID, err)
	}
	return ErrNeedsReauth
}

// judged returns the credentials that an upstream's answer to a request for
// account a, sent with sent, is a verdict on: sent, or nil for an
// oauth2_client_credentials account, whose token is its integration's and
// not stored with it (the answer then concerns the account whatever it
// holds).
func judged(a *account.Account, sent account.Credentials) *account.Credentials {
	if a.Method == account.MethodClientCredentials {
		return nil
	}
	return &sent
}

// judgedReplaced logs an upstream answer dropped because the credentials it
// judged were replaced while the request was on its way.
func (r *Refresher) judgedReplaced(a *account.Account, answer string) {
	r.log.Info("the upstream's "+answer+" concerns credentials the account no longer holds (it was reconnected or its credentials changed while the request was on its way); its status is left as is",
		zap.String("integrated_account_id", a.ID), zap.String("integration", a.Integration))
	r.invalidate(a.ID)
}

// transition applies t to the stored account, retrying on a concurrent
// change, and writes the change with its events. When sent is set, t is an
// upstream's answer to a request sent with those credentials, and it applies
// only while the account holds them: otherwise nothing is written and the
// error is errSuperseded. The comparison is made on the copy whose version
// the write checks, so credentials replaced after it make the write
// conflict, and the comparison is made again on the account as it is then.
func (r *Refresher) transition(ctx context.Context, id string, t account.Trigger, cause *account.Error, sent *account.Credentials) error {
	for range 5 {
		a, err := r.fresh.GetAccount(ctx, id)
		if err != nil {
			return err
		}
		if sent != nil && !sameSent(a.Credentials, *sent) {
			return errSuperseded
		}
		a = a.Clone()
		now := r.opts.Now()
		c, err := a.Apply(t, cause, now)
		if err != nil || !c.Changed() {
			return err
		}
		if a.Status == account.StatusNeedsReauth {
			a.NextProbeAt = now.Add(r.probeInterval(a.Integration))
		}
		err = r.update(ctx, a, tokenstore.EventsFor(c, a, now))
		if err == nil {
			r.logTransition(a, c)
		}
		if !errors.Is(err, tokenstore.ErrConflict) {
			return err
		}
	}
	return tokenstore.ErrConflict
}

// logTransition logs a committed change of status: the move to
// needs_reauth at warn (an end user has to reconnect, and the alarm webhook
// is on its way), any other at info. Every method's transitions pass here,
// api_key and basic ones (an upstream 401) included.
func (r *Refresher) logTransition(a *account.Account, c account.Change) {
	if a == nil || c.From == c.To {
		return
	}
	fields := []zap.Field{
		zap.String("integrated_account_id", a.ID), zap.String("tenant_id", a.TenantID),
		zap.String("integration", a.Integration), zap.String("authentication_method", string(a.Method)),
		zap.String("from", string(c.From)), zap.String("to", string(c.To)), zap.Strings("events", c.Events),
	}
	if a.LastError != nil {
		fields = append(fields, zap.String("code", a.LastError.Code), zap.String("reason", a.LastError.Message))
	}
	if c.To == account.StatusNeedsReauth {
		r.log.Warn("integrated account needs reauthorization", fields...)
		return
	}
	r.log.Info("integrated account status changed", fields...)
}

// update writes a with its events and, when events were committed, tells
// OnCommit.
func (r *Refresher) update(ctx context.Context, a *account.Account, events []tokenstore.Event) error {
	err := r.store.UpdateAccount(ctx, a, events)
	if err == nil && len(events) > 0 && r.opts.OnCommit != nil {
		r.opts.OnCommit()
	}
	return err
}

// Refresh refreshes account id now, whatever its expiry, and returns nil,
// a classified *Error, or ErrNeedsReauth. For an
// oauth2_client_credentials account it fetches a new token for its
// integration; api_key and basic accounts have nothing to refresh.
func (r *Refresher) Refresh(ctx context.Context, id string) error {
	a, err := r.fresh.GetAccount(ctx, id)
	if err != nil {
		return fmt.Errorf("loading account %s: %w", id, err)
	}
	switch a.Method {
	case account.MethodOAuth2:
	case account.MethodClientCredentials:
		integ, err := r.integration(a.Integration)
		if err != nil {
			return err
		}
		r.dropClientToken(integ.Name, "")
		_, err = r.clientToken(ctx, integ)
		return err
	default:
		return nil
	}
	if a.Credentials.RefreshToken == "" {
		if a.Status == account.StatusNeedsReauth {
			return ErrNeedsReauth
		}
		return &Error{Class: Revoked, Code: "no_refresh_token", Message: "the account has no refresh token; reconnect it through a link token"}
	}
	r.invalidate(id)
	fresh, err := r.wait(ctx, id, modeForce, "")
	if err != nil {
		return err
	}
	if fresh.Status != account.StatusActive {
		return ErrNeedsReauth
	}
	return nil
}

func (r *Refresher) integration(name string) (*account.Integration, error) {
	integ := r.integrations[name]
	if integ == nil {
		return nil, &Error{Class: Misconfigured, Code: "unknown_integration", Message: fmt.Sprintf("integration %q is not configured", name)}
	}
	return integ, nil
}

// integrationFor is a's integration with its token_url resolved for a: a
// token_url that uses a's connection fields (a Zendesk subdomain) is
// filled in, and its host must match the integration's allowed_hosts, or
// no refresh token is sent.
func (r *Refresher) integrationFor(a *account.Account) (*account.Integration, error) {
	integ, err := r.integration(a.Integration)
	if err != nil || !strings.Contains(integ.TokenURL, "{connection.") {
		return integ, err
	}
	u, err := integ.ResolveURL("token_url", integ.TokenURL, integ.Connection(a.Context))
	if err != nil {
		return nil, &Error{Class: Misconfigured, Code: "connection_field", Message: err.Error()}
	}
	own := *integ
	own.TokenURL = u
	return &own, nil
}

func (r *Refresher) probeInterval(integration string) time.Duration {
	if integ := r.integrations[integration]; integ != nil {
		return integ.Probe()
	}
	return account.DefaultProbeInterval
}

// invalidate drops the cache entry of id, if the store caches.
func (r *Refresher) invalidate(id string) {
	if c, ok := r.store.(interface{ Invalidate(string) }); ok {
		c.Invalidate(id)
	}
}

// sameSent reports whether stored holds the credentials that a request sent
// with sent carried to the upstream (the access token, API key, or user
// name and password; a refresh token never goes there), comparing in
// constant time.
func sameSent(stored, sent account.Credentials) bool {
	return sameSecret(stored.AccessToken, sent.AccessToken) && sameSecret(stored.APIKey, sent.APIKey) &&
		sameSecret(stored.Username, sent.Username) && sameSecret(stored.Password, sent.Password)
}

// sameSecret compares two secrets in constant time.
func sameSecret(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
