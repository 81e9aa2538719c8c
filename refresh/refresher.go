// Package refresh keeps integrated accounts' credentials usable: it refreshes
// OAuth tokens (golang.org/x/oauth2) before they expire, one refresh per
// account at a time in the process and across processes, classifies what the
// token endpoint answers, and moves accounts through the state machine of
// package account when they can no longer authenticate.
package refresh

import (
	"context"
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

// ErrNeedsReauth is returned for an account that can no longer authenticate
// until the end user reconnects it.
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

// Error is a classified refresh failure. Its message holds no secret.
type Error struct {
	Class Class
	// Code is the OAuth error code, or a short word for non-OAuth failures.
	Code    string
	Message string
	// RetryAfter is how long the token endpoint asked us to wait, if it did.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return "refresh failed: " + e.Code + ": " + e.Message }

// Options tune a Refresher; zero values take defaults.
type Options struct {
	Logger *zap.Logger
	// Client makes token-endpoint calls.
	Client *http.Client
	// TokenTimeout bounds one token-endpoint call. Default 30s.
	TokenTimeout time.Duration
	// RefreshAhead: the sweeper refreshes tokens expiring within this. Default 10m.
	RefreshAhead time.Duration
	// Now is the clock; tests replace it.
	Now func() time.Time
}

// Refresher keeps accounts' credentials usable.
type Refresher struct {
	store        tokenstore.Store
	integrations map[string]*account.Integration
	opts         Options
}

// New returns a Refresher over store for the given integrations (by name).
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
	return &Refresher{store: store, integrations: integrations, opts: opts}
}

// Credentials returns the credentials to inject for a now. a may be a shared
// cached account and is not modified.
func (r *Refresher) Credentials(ctx context.Context, a *account.Account) (account.Credentials, error) {
	return a.Credentials, nil
}

// Unauthorized handles an upstream 401 to a request sent with sent. It
// returns new credentials and true when the request should be retried once
// with them; otherwise the account has been marked as needing reauthorization
// (when the 401 was its first since it became active).
func (r *Refresher) Unauthorized(ctx context.Context, a *account.Account, sent account.Credentials) (account.Credentials, bool, error) {
	return account.Credentials{}, false, r.transition(ctx, a.ID, account.AuthFailed, &account.Error{Code: "unauthorized", Message: "the upstream API answered 401 Unauthorized"})
}

// Succeeded handles an upstream 2xx: an account in needs_reauth is active again.
func (r *Refresher) Succeeded(ctx context.Context, a *account.Account) {
	if a.Status == account.StatusNeedsReauth {
		_ = r.transition(ctx, a.ID, account.UpstreamOK, nil)
	}
}

// transition applies t to the stored account, retrying on a concurrent
// change, and writes the change with its events.
func (r *Refresher) transition(ctx context.Context, id string, t account.Trigger, cause *account.Error) error {
	for range 5 {
		a, err := r.store.GetAccount(ctx, id)
		if err != nil {
			return err
		}
		a = a.Clone()
		now := r.opts.Now()
		c, err := a.Apply(t, cause, now)
		if err != nil || !c.Changed() {
			return err
		}
		err = r.store.UpdateAccount(ctx, a, tokenstore.EventsFor(c, a, now))
		if !errors.Is(err, tokenstore.ErrConflict) {
			return err
		}
	}
	return tokenstore.ErrConflict
}

// Refresh refreshes account id now, whatever its expiry.
func (r *Refresher) Refresh(ctx context.Context, id string) error {
	return errors.New("refresh: not implemented yet")
}

// Start starts the proactive sweeper.
func (r *Refresher) Start() error { return nil }

// Stop stops the sweeper and waits for it.
func (r *Refresher) Stop() error { return nil }
