package refresh

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

// mode says when a flight, having re-read the account under the lock,
// actually calls the token endpoint.
type mode int

const (
	// modeExpiring: the token expires within the integration's skew.
	modeExpiring mode = iota
	// modeAhead: the token expires within RefreshAhead (the sweeper).
	modeAhead
	// modeStale: the stored access token is still the one the upstream
	// refused.
	modeStale
	// modeProbe: the account is in needs_reauth and its probe is due.
	modeProbe
	// modeForce: always (the refresh-credentials API).
	modeForce
	// modeRecover: apply what the journal kept of an earlier call, and
	// call nothing.
	modeRecover
)

func (m mode) String() string {
	return [...]string{"expiring", "ahead", "stale", "probe", "force", "recover"}[m]
}

// backoffState is one account's (or integration's) run of failed refreshes.
type backoffState struct {
	failures int
	until    time.Time
	last     *Error
	// integration is the integration whose token endpoint failed; at is
	// when, and spread how long after the endpoint's next success for
	// another account this one retries (see endpointAnswered).
	integration string
	at          time.Time
	spread      time.Duration
}

// wait joins or starts the flight of id in mode for a caller that needs its
// answer (it goes before the sweeper), and waits for it as long as ctx
// allows and at most LockTimeout + TokenTimeout. The flight itself goes on
// when the caller gives up: its answer may hold the only copy of a rotated
// refresh token.
func (r *Refresher) wait(ctx context.Context, id string, m mode, sent string) (*account.Account, error) {
	return r.await(ctx, id, m, sent, true)
}

// await is wait, with urgent false for refreshes nobody waits on (the
// sweeper's, a token inside its skew).
func (r *Refresher) await(ctx context.Context, id string, m mode, sent string, urgent bool) (*account.Account, error) {
	key := id + "|" + m.String()
	if m == modeStale {
		// Callers that saw different access tokens refused must not share
		// an answer; the key holds a digest, never the token.
		sum := sha256.Sum256([]byte(sent))
		key += "|" + hex.EncodeToString(sum[:8])
	}
	if urgent {
		defer r.gate.want(id)()
	}
	ch := r.sf.DoChan(key, func() (any, error) {
		r.begin()
		defer r.end()
		return r.run(id, m, sent)
	})
	limit := time.NewTimer(r.opts.LockTimeout + r.opts.TokenTimeout)
	defer limit.Stop()
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*account.Account), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the refresh of account %s: %w", id, ctx.Err())
	case <-limit.C:
		return nil, &Error{Class: Transient, Code: "timeout", Message: "the token endpoint has not answered in time; the refresh goes on in the background and its answer will be kept"}
	}
}

// refreshInBackground starts one refresh of id for a token inside its skew,
// unless one is already running.
func (r *Refresher) refreshInBackground(id string) {
	r.inBackground(id, func() { _, _ = r.await(context.Background(), id, modeExpiring, "", false) })
}

// inBackground runs fn in a goroutine that Stop waits for, unless one for
// key is already running.
func (r *Refresher) inBackground(key string, fn func()) {
	r.mu.Lock()
	if r.background[key] {
		r.mu.Unlock()
		return
	}
	r.background[key] = true
	r.mu.Unlock()
	r.begin()
	go func() {
		defer r.end()
		defer func() {
			r.mu.Lock()
			delete(r.background, key)
			r.mu.Unlock()
		}()
		fn()
	}()
}

// begin and end count running flights so that Stop can wait for them.
func (r *Refresher) begin() {
	r.life.Lock()
	r.flights++
	r.life.Unlock()
}

func (r *Refresher) end() {
	r.life.Lock()
	r.flights--
	if r.flights == 0 {
		r.lifeCond.Broadcast()
	}
	r.life.Unlock()
}

// run is the body of one flight: take the cluster-wide refresh lock, re-read
// the account past any cache, and refresh it if mode says it still needs it.
func (r *Refresher) run(id string, m mode, sent string) (*account.Account, error) {
	// Detached from every caller: bounded by our own limits only, with a
	// minute to save an answer that came at the hard limit.
	ctx, cancel := context.WithTimeout(context.Background(), 2*r.opts.TokenHardLimit+r.opts.LockTimeout+time.Minute)
	defer cancel()
	// A slot is taken before the store lock, so that queued refreshes
	// hold no lock (on PostgreSQL, no connection) while they wait.
	gctx, gcancel := context.WithTimeout(ctx, r.opts.TokenHardLimit)
	err := r.gate.acquire(gctx, id)
	gcancel()
	if err != nil {
		if errors.Is(err, errStopping) {
			return nil, &Error{Class: Transient, Code: "stopping", Message: "the gateway is shutting down"}
		}
		return nil, &Error{Class: Transient, Code: "busy", Message: "too many token calls in progress"}
	}
	defer r.gate.release()
	var out *account.Account
	lockCtx, lockCancel := context.WithTimeout(ctx, r.opts.LockTimeout)
	defer lockCancel()
	err = r.store.WithRefreshLock(lockCtx, id, func(context.Context) error {
		var err error
		out, err = r.refreshLocked(ctx, id, m, sent)
		return err
	})
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			if e.Code == codeStoreUnavailable {
				// Saving failed after the token call (logged there).
				return nil, r.storeFailed(id, e, nil)
			}
			return nil, err
		}
		if errors.Is(err, ErrNeedsReauth) || errors.Is(err, tokenstore.ErrNotFound) {
			return nil, err
		}
		// The store failed (or its lock was not had in time): not the
		// account's fault, and nothing the caller can fix.
		return nil, r.storeFailed(id, &Error{Class: Transient, Code: codeStoreUnavailable, Message: "the account store did not answer in time"}, err)
	}
	return out, nil
}

func (r *Refresher) refreshLocked(ctx context.Context, id string, m mode, sent string) (*account.Account, error) {
	cur, err := r.fresh.GetAccount(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("loading account %s: %w", id, err)
	}
	r.storeAnswered()
	cur = cur.Clone()
	integ, err := r.integrationFor(cur)
	if err != nil {
		return nil, err
	}
	if cur.Method != account.MethodOAuth2 {
		return cur, nil
	}
	if out, done, err := r.recoverEntry(ctx, cur, integ); done {
		return out, err
	}
	if m == modeRecover {
		return cur, nil
	}
	now := r.opts.Now()
	switch cur.Status {
	case account.StatusActive:
	case account.StatusNeedsReauth:
		if cur.Credentials.RefreshToken == "" {
			return nil, ErrNeedsReauth
		}
		if m != modeForce && now.Before(cur.NextProbeAt) {
			r.setProbeUntil(id, cur.NextProbeAt)
			r.invalidate(id)
			return nil, ErrNeedsReauth
		}
		// Claim the probe before trying it, so that no other instance
		// probes the same account in this interval.
		next := now.Add(integ.Probe())
		cur, err = r.save(ctx, cur, nil, func(a *account.Account) ([]tokenstore.Event, error) {
			if a.Status != account.StatusNeedsReauth {
				return nil, nil
			}
			a.NextProbeAt = next
			return nil, nil
		})
		if err != nil {
			return nil, fmt.Errorf("claiming the probe of account %s: %w", id, err)
		}
		r.setProbeUntil(id, next)
		if cur.Status != account.StatusNeedsReauth {
			return cur, nil
		}
		m = modeForce
	default:
		return nil, ErrNeedsReauth
	}
	if cur.Credentials.RefreshToken == "" {
		return nil, &Error{Class: Revoked, Code: "no_refresh_token", Message: "the account has no refresh token; reconnect it through a link token"}
	}
	if !r.needed(cur, integ, m, sent, now) {
		// Another holder refreshed it already: our cache may be behind.
		r.invalidate(id)
		return cur, nil
	}
	if m != modeForce {
		if e := r.backingOff(id, now); e != nil {
			return nil, e
		}
	}
	res, cerr := r.exchange(ctx, cur, integ)
	if cerr != nil {
		return r.failed(ctx, cur, integ, res, cerr)
	}
	r.endpointAnswered(integ.Name)
	fields := r.answerFields(cur, integ, res.answer)
	var change account.Change
	saved, err := r.save(ctx, cur, &cur.Credentials, func(a *account.Account) ([]tokenstore.Event, error) {
		res.apply(&a.Credentials)
		for k, v := range fields {
			if a.Context == nil {
				a.Context = map[string]any{}
			}
			a.Context[k] = v
		}
		clearUnknown(a)
		at := r.opts.Now()
		c, err := a.Apply(account.UpstreamOK, nil, at)
		if err != nil {
			return nil, err
		}
		change = c
		return tokenstore.EventsFor(c, a, at), nil
	})
	r.settle(res, err)
	if errors.Is(err, errSuperseded) {
		return r.superseded(saved, integ, "refreshed credentials")
	}
	if err != nil {
		// The provider has rotated the grant and the store did not take
		// the answer: the journal keeps it for the next attempt; without
		// a journal this is how a refresh token gets lost. Say so.
		r.log.Error("saving refreshed credentials failed; the answer is kept in the refresh journal for the next attempt, or, without a journal, the account may need reconnecting if its provider rotates refresh tokens",
			zap.String("integrated_account_id", id), zap.String("integration", integ.Name), zap.Error(err))
		r.metrics.outcome(Transient)
		return nil, &Error{Class: Transient, Code: codeStoreUnavailable, Message: "the refreshed credentials could not be saved"}
	}
	r.logTransition(saved, change)
	r.clearBackoff(id)
	r.mu.Lock()
	delete(r.probeUntil, id)
	r.mu.Unlock()
	r.metrics.outcome(0)
	return saved, nil
}

// needed reports whether the re-read account still needs the refresh that
// mode asked for.
func (r *Refresher) needed(a *account.Account, integ *account.Integration, m mode, sent string, now time.Time) bool {
	c := a.Credentials
	exp := c.Expiry
	switch m {
	case modeExpiring, modeProbe:
		// A probe that finds the account active again (an earlier probe,
		// another instance or a reconnect healed it while this caller held
		// an old copy) has nothing to find out: refreshing now would only
		// spend a rotation.
		return !exp.IsZero() && exp.Sub(now) <= skewFor(integ, c)
	case modeAhead:
		return !exp.IsZero() && exp.Sub(now) <= clampTo(r.opts.RefreshAhead, c, aheadFraction)
	case modeStale:
		return sameSecret(a.Credentials.AccessToken, sent)
	case modeRecover:
		return false
	}
	return true
}

// failed handles a refused or failed token call on cur.
func (r *Refresher) failed(ctx context.Context, cur *account.Account, integ *account.Integration, res *tokenResult, e *Error) (*account.Account, error) {
	id := cur.ID
	r.metrics.outcome(e.Class)
	e = r.answerLost(cur, res, e)
	log := r.log.With(zap.String("integrated_account_id", id), zap.String("integration", integ.Name), zap.String("code", e.Code), zap.String("reason", e.Message))
	if res != nil && res.salvage != "" {
		// A malformed answer that still rotated the refresh token: keep the
		// new refresh token, or the next attempt presents a dead one.
		if _, err := r.save(ctx, cur, &cur.Credentials, func(a *account.Account) ([]tokenstore.Event, error) {
			a.Credentials.RefreshToken = res.salvage
			return nil, nil
		}); err != nil && !errors.Is(err, errSuperseded) {
			log.Error("saving the rotated refresh token of a malformed answer failed", zap.Error(err))
		}
	}
	switch e.Class {
	case Revoked:
		at := r.opts.Now()
		var change account.Change
		held, err := r.save(ctx, cur, &cur.Credentials, func(a *account.Account) ([]tokenstore.Event, error) {
			c, err := a.Apply(account.AuthFailed, &account.Error{Code: e.Code, Message: e.Message}, at)
			if err != nil {
				return nil, err
			}
			change = c
			a.NextProbeAt = at.Add(integ.Probe())
			return tokenstore.EventsFor(c, a, at), nil
		})
		if errors.Is(err, errSuperseded) {
			// The refused token was replaced meanwhile: the refusal says
			// nothing about the credentials the account holds now.
			return r.superseded(held, integ, "refusal of the replaced refresh token")
		}
		if err != nil {
			log.Error("marking the account as needing reauthorization failed", zap.Error(err))
			return nil, fmt.Errorf("marking account %s as needing reauthorization: %w", id, err)
		}
		log.Warn("token endpoint refused the refresh; the account needs reauthorization")
		r.logTransition(held, change)
		r.setProbeUntil(id, at.Add(integ.Probe()))
		r.clearBackoff(id)
		return nil, e
	case Misconfigured:
		log.Error("token endpoint rejected the integration's client: check its client_id, client_secret and auth_style")
	default:
		if res != nil && res.uncertain {
			log.Warn("token endpoint's answer was lost after the refresh was sent: the provider may have rotated the refresh token; the old refresh token will be sent again at the next attempt, and if the provider refuses it the account is reported with refresh_answer_lost")
		} else {
			log.Warn("token endpoint failed; backing off")
		}
	}
	return nil, r.setBackoff(id, integ.Name, e)
}

// errSuperseded says that the credentials a refresh started from were
// replaced (a reconnect, a credentials PATCH) before its result was saved.
var errSuperseded = errors.New("the credentials were replaced while they were being refreshed")

// save applies change to a (re-reading it after a concurrent change) and
// writes it with the events change returns. The caller holds the refresh
// lock, so no other refresh writes meanwhile; but a reconnect or a
// credentials PATCH may. When from is set, change is the result of a token
// call made with those credentials, and it applies only to them: if the
// account holds other credentials now, nothing is written and save returns
// the account as stored with errSuperseded. Other concurrent changes
// (context, status) are kept and change is applied on top of them.
func (r *Refresher) save(ctx context.Context, a *account.Account, from *account.Credentials, change func(*account.Account) ([]tokenstore.Event, error)) (*account.Account, error) {
	for i := range 5 {
		if i > 0 {
			fresh, err := r.fresh.GetAccount(ctx, a.ID)
			if err != nil {
				return nil, err
			}
			a = fresh.Clone()
		}
		if from != nil && !sameGrant(a.Credentials, *from) {
			return a, errSuperseded
		}
		events, err := change(a)
		if err != nil {
			return nil, err
		}
		err = r.update(ctx, a, events)
		if err == nil {
			return a, nil
		}
		if !errors.Is(err, tokenstore.ErrConflict) {
			return nil, err
		}
	}
	return nil, tokenstore.ErrConflict
}

// superseded ends a flight whose result was dropped because the account's
// credentials were replaced meanwhile: the replacement wins, and the flight's
// callers get the account as it is now.
func (r *Refresher) superseded(now *account.Account, integ *account.Integration, what string) (*account.Account, error) {
	r.log.Info("the account's credentials were replaced while they were being refreshed; the "+what+" is dropped",
		zap.String("integrated_account_id", now.ID), zap.String("integration", integ.Name))
	r.invalidate(now.ID)
	r.clearBackoff(now.ID)
	r.mu.Lock()
	delete(r.probeUntil, now.ID)
	r.mu.Unlock()
	return now, nil
}

// sameGrant reports whether two credentials are the same tokens, comparing
// in constant time.
func sameGrant(a, b account.Credentials) bool {
	return sameSecret(a.RefreshToken, b.RefreshToken) && sameSecret(a.AccessToken, b.AccessToken)
}

func (r *Refresher) setProbeUntil(id string, t time.Time) {
	r.mu.Lock()
	r.probeUntil[id] = t
	r.mu.Unlock()
}

// backingOff returns the last failure of key while its back-off lasts. A
// back-off for a failure of the token endpoint ends soon after the endpoint
// has answered another account of the integration since: the outage is
// over, and each account waiting out its own doubling wait would keep
// failing requests for minutes after it.
func (r *Refresher) backingOff(key string, now time.Time) *Error {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.backoff[key]
	if b == nil {
		return nil
	}
	if endpointOutage(b.last) {
		if ep := r.endpoints[b.integration]; ep != nil && ep.recovered.After(b.at) {
			b.until = minTime(b.until, ep.recovered.Add(b.spread))
		}
	}
	if b.last.Code == codeStoreUnavailable && r.outage.recovered.After(b.at) {
		// The store answers again: its outage is no reason to wait.
		b.until = b.at
	}
	if !now.Before(b.until) {
		return nil
	}
	e := *b.last
	e.RetryAfter = b.until.Sub(now)
	return &e
}

// setBackoff records a failure of key: exponential back-off with jitter,
// capped, and never shorter than the endpoint's Retry-After.
func (r *Refresher) setBackoff(key, integration string, e *Error) *Error {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.backoff[key]
	if b == nil {
		b = &backoffState{}
		r.backoff[key] = b
	}
	b.integration, b.at = integration, r.opts.Now()
	if endpointOutage(e) {
		r.endpoint(integration).failed = b.at
	}
	// Accounts released by the endpoint's recovery retry spread over
	// BackoffBase, not all at once.
	b.spread = rand.N(r.opts.BackoffBase + 1)
	b.failures++
	d := r.opts.BackoffBase << min(b.failures-1, 20)
	if d <= 0 || d > r.opts.BackoffMax {
		d = r.opts.BackoffMax
	}
	d = d/2 + rand.N(d/2+1)
	if e.RetryAfter > d {
		d = e.RetryAfter
	}
	b.until = r.opts.Now().Add(d)
	b.last = e
	out := *e
	out.RetryAfter = d
	return &out
}

// endpointState is what the refresher knows of one integration's token
// endpoint: when it last failed and when it first answered after that.
type endpointState struct {
	failed, recovered time.Time
}

// endpoint returns integration's endpoint state; r.mu is held.
func (r *Refresher) endpoint(integration string) *endpointState {
	ep := r.endpoints[integration]
	if ep == nil {
		ep = &endpointState{}
		r.endpoints[integration] = ep
	}
	return ep
}

// endpointAnswered records that integration's token endpoint issued a
// token. The first answer after a failure ends the outage: back-offs for
// earlier failures end soon after it (see backingOff); later answers do
// not move that moment.
func (r *Refresher) endpointAnswered(integration string) {
	now := r.opts.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	ep := r.endpoint(integration)
	if !ep.recovered.After(ep.failed) {
		ep.recovered = now
	}
}

// endpointOutage reports whether e is a failure of the token endpoint that
// its success for another account disproves: not one it asked us to wait
// out (Retry-After), and not one of the store or of the gateway itself.
func endpointOutage(e *Error) bool {
	if e == nil || e.RetryAfter > 0 {
		return false
	}
	switch e.Code {
	case codeStoreUnavailable, "busy", "stopping":
		return false
	}
	return e.Class == Transient || e.Class == Misconfigured
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func (r *Refresher) clearBackoff(key string) {
	r.mu.Lock()
	delete(r.backoff, key)
	r.mu.Unlock()
}

// Fractions of a token's lifetime as issued that pace its refreshes, so that
// a token living less than the configured skew or look-ahead is not
// refreshed on every request or every sweep. Neither path refreshes a token
// in the first half of its life: only a refused or expired one, or the
// refresh-credentials API, refreshes younger tokens.
const (
	// skewFraction: the request path refreshes a token only in the last
	// 1/skewFraction of its lifetime (or the configured skew, if shorter).
	skewFraction = 4
	// aheadFraction: the sweeper refreshes a token only in the last
	// 1/aheadFraction of its lifetime (or RefreshAhead, if shorter).
	aheadFraction = 2
)

// lifetime is how long c's access token was valid for when it was issued;
// 0 when that is unknown.
func lifetime(c account.Credentials) time.Duration {
	if c.IssuedAt.IsZero() || c.Expiry.IsZero() || !c.Expiry.After(c.IssuedAt) {
		return 0
	}
	return c.Expiry.Sub(c.IssuedAt)
}

// clampTo shortens d to 1/frac of c's lifetime, when that is known and
// shorter.
func clampTo(d time.Duration, c account.Credentials, frac int64) time.Duration {
	if l := lifetime(c); l > 0 {
		return min(d, l/time.Duration(frac))
	}
	return d
}

// skewFor is integ's refresh skew clamped to c's lifetime.
func skewFor(integ *account.Integration, c account.Credentials) time.Duration {
	return clampTo(integ.Skew(), c, skewFraction)
}

// codeStoreUnavailable is the Error code of a refresh that failed on the
// account store rather than at the token endpoint.
const codeStoreUnavailable = "store_unavailable"

// storeOutage is a run of refreshes failing on the account store. It is
// logged when it starts and when it ends, with how many attempts failed,
// rather than once per attempt: a full disk or a database restart would
// otherwise write a warning per account per try.
type storeOutage struct {
	open      bool
	since     time.Time
	failures  int
	recovered time.Time
}

// storeFailed records a refresh of id that failed on the store with e
// (cause, when set, is the store's error, logged when the outage starts)
// and backs the account off.
func (r *Refresher) storeFailed(id string, e *Error, cause error) *Error {
	r.storeFailing(id, cause)
	return r.setBackoff(id, "", e)
}

// storeFailing counts a failure on the store and logs it if it starts an
// outage. id is the account concerned, if any.
func (r *Refresher) storeFailing(id string, cause error) {
	now := r.opts.Now()
	r.mu.Lock()
	first := !r.outage.open
	if first {
		r.outage.open, r.outage.since, r.outage.failures = true, now, 0
	}
	r.outage.failures++
	r.mu.Unlock()
	if first {
		var fields []zap.Field
		if id != "" {
			fields = append(fields, zap.String("integrated_account_id", id))
		}
		if cause != nil {
			fields = append(fields, zap.Error(cause))
		}
		r.log.Warn("the account store is failing; refreshes back off until it answers again, and further failures are counted, not logged", fields...)
	}
}

// storeAnswered records that the store answered a refresh: an outage is
// over, and the back-offs it caused end.
func (r *Refresher) storeAnswered() {
	r.mu.Lock()
	if !r.outage.open {
		r.mu.Unlock()
		return
	}
	now := r.opts.Now()
	o := r.outage
	r.outage = storeOutage{recovered: now}
	r.mu.Unlock()
	r.log.Info("the account store answers refreshes again",
		zap.Int("failed_attempts", o.failures), zap.Duration("outage", now.Sub(o.since)))
}

// answerFields reads again, from a refresh's answer, the connection fields
// that come from the token response (a Salesforce instance_url, which moves
// when an org is migrated), so that later calls follow the provider. Each
// value is checked as at connect time, against its kind and the
// integration's allowed_hosts: a refused one is dropped with a warning and
// the account keeps the value it has, so an answer cannot steer the
// account's credentials to another host. A field the answer leaves out
// keeps its value too.
func (r *Refresher) answerFields(a *account.Account, integ *account.Integration, answer any) map[string]string {
	if answer == nil || len(integ.ConnectionFields) == 0 {
		return nil
	}
	var out map[string]string
	for k := range integ.ConnectionFields {
		f := &integ.ConnectionFields[k]
		if !f.From(account.SourceTokenResponse) {
			continue
		}
		v, ok := account.LookupPath(answer, f.Path)
		if !ok {
			continue
		}
		nv, err := integ.Normalize(f, v)
		if err != nil {
			r.log.Warn("the refresh answer carries a connection field that is refused; the account keeps its value",
				zap.String("integrated_account_id", a.ID), zap.String("integration", integ.Name),
				zap.String("field", f.Name), zap.Error(err))
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[f.Name] = nv
	}
	return out
}
