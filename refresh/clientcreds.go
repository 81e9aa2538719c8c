package refresh

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/linkgate/linkgate/account"
)

// clientToken returns the gateway's own token for an
// oauth2_client_credentials integration: cached until the integration's
// skew before it expires, fetched once at a time, refreshed in the
// background inside the skew. A failure never changes an account's status:
// the integration, not an end user, holds these credentials.
func (r *Refresher) clientToken(ctx context.Context, integ *account.Integration) (account.Credentials, error) {
	now := r.opts.Now()
	key := "cc|" + integ.Name
	r.mu.Lock()
	c, ok := r.tokens[integ.Name]
	r.mu.Unlock()
	if ok && (c.Expiry.IsZero() || c.Expiry.Sub(now) > skewFor(integ, c)) {
		return c, nil
	}
	if ok && c.Expiry.After(now) {
		if r.backingOff(key, now) == nil {
			r.inBackground(key, func() { _, _ = r.waitClientToken(context.Background(), integ) })
		}
		return c, nil
	}
	if e := r.backingOff(key, now); e != nil {
		return account.Credentials{}, e
	}
	return r.waitClientToken(ctx, integ)
}

func (r *Refresher) waitClientToken(ctx context.Context, integ *account.Integration) (account.Credentials, error) {
	ch := r.sf.DoChan("cc|"+integ.Name, func() (any, error) {
		r.begin()
		defer r.end()
		return r.fetchClientToken(integ)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return account.Credentials{}, res.Err
		}
		return res.Val.(account.Credentials), nil
	case <-ctx.Done():
		return account.Credentials{}, fmt.Errorf("waiting for the token of integration %s: %w", integ.Name, ctx.Err())
	}
}

func (r *Refresher) fetchClientToken(integ *account.Integration) (account.Credentials, error) {
	key := "cc|" + integ.Name
	now := r.opts.Now()
	r.mu.Lock()
	c, ok := r.tokens[integ.Name]
	r.mu.Unlock()
	if ok && (c.Expiry.IsZero() || c.Expiry.Sub(now) > skewFor(integ, c)) {
		return c, nil
	}
	res, e := r.callClientCredentials(integ)
	if e != nil {
		r.metrics.outcome(e.Class)
		log := r.log.With(zap.String("integration", integ.Name), zap.String("code", e.Code), zap.String("reason", e.Message))
		if e.Class == Transient {
			log.Warn("token endpoint failed to issue the integration's client-credentials token; backing off")
		} else {
			log.Error("token endpoint refused the integration's client credentials: check its client_id, client_secret, scopes and auth_style")
		}
		return account.Credentials{}, r.setBackoff(key, integ.Name, e)
	}
	r.endpointAnswered(integ.Name)
	var out account.Credentials
	res.apply(&out)
	r.mu.Lock()
	r.tokens[integ.Name] = out
	r.fetchedAt[integ.Name] = r.opts.Now()
	r.mu.Unlock()
	r.clearBackoff(key)
	r.metrics.outcome(0)
	return out, nil
}

// dropClientToken forgets integration's cached token if it is still sent
// (or whatever it is, when sent is empty), and reports whether a new token
// is worth fetching: not when sent is a token fetched within retryWindow.
func (r *Refresher) dropClientToken(integration, sent string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.tokens[integration]
	if !ok || (sent != "" && !sameSecret(c.AccessToken, sent)) {
		return true
	}
	if sent != "" && r.opts.Now().Sub(r.fetchedAt[integration]) < retryWindow {
		return false
	}
	delete(r.tokens, integration)
	delete(r.fetchedAt, integration)
	return true
}
