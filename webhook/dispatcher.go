package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/prom"
	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/tokenstore"
)

// DefaultSchedule is Standard Webhooks' retry schedule: the first attempt at
// once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h after the previous
// one — about 28 hours in all.
var DefaultSchedule = []time.Duration{
	0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute,
	2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour,
}

// Defaults of Options.
const (
	DefaultTimeout      = 15 * time.Second
	DefaultJitter       = 0.2
	DefaultPollInterval = time.Second
	DefaultLease        = time.Minute
	DefaultConcurrency  = 4
	DefaultBatchSize    = 100
	DefaultUserAgent    = "linkgate-webhooks/1"
	// maxRetryAfter caps a receiver's Retry-After, so that a typo on its
	// side does not park a delivery for a year.
	maxRetryAfter = 24 * time.Hour
	// maxResponseRead is how much of a receiver's answer is read so the
	// connection can be reused; the rest is dropped.
	maxResponseRead = 64 << 10
)

// Options tune a Dispatcher; zero values take the defaults.
type Options struct {
	// Logger receives delivery failures and endpoint disablement.
	Logger *zap.Logger
	// Client sends the deliveries; its own Timeout should be zero or above
	// Timeout.
	Client *http.Client
	// Timeout bounds one attempt, the answer included. Default 15s.
	Timeout time.Duration
	// Schedule[n] is how long attempt n+1 waits after attempt n; its length
	// is the number of attempts before a delivery is failed. Schedule[0] is
	// the delay of the first attempt and is ignored (the first attempt is
	// sent at once). Default DefaultSchedule.
	Schedule []time.Duration
	// Jitter spreads retries by ± this fraction of their delay; default
	// 0.2, negative for none.
	Jitter float64
	// PollInterval is how often the outbox is read when nobody calls
	// Notify (other instances' events, due retries). Default 1s.
	PollInterval time.Duration
	// Lease is how long a claimed delivery stays reserved for this
	// dispatcher; a crashed dispatcher's deliveries return to the queue
	// after it. It must exceed Timeout. Default 1m.
	Lease time.Duration
	// Concurrency is the number of concurrent sends per endpoint, so that
	// a slow endpoint does not hold up the others. Default 4.
	Concurrency int
	// BatchSize is the most rows read from the outbox at a time. Default 100.
	BatchSize int
	// EnvironmentID is written in every envelope.
	EnvironmentID string
	// Environment, when set, turns account payloads into Truto's
	// integrated account shape, and its ID is the envelopes'
	// environment_id.
	Environment *wire.Environment
	// UserAgent of the deliveries. Default "linkgate-webhooks/1".
	UserAgent string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Emit, when set, is called once per event as it is fanned out to the
	// endpoints (the Caddy glue turns it into a Caddy event). It runs on
	// the dispatcher's loop and must return quickly.
	Emit func(e tokenstore.Event)
	// Registerer, when set, gets the dispatcher's counters. Registering
	// twice (config reloads) reuses the counters already registered.
	Registerer prometheus.Registerer
}

// Dispatcher delivers the outbox: it fans new events out to the endpoints
// that want them, claims due deliveries, signs and posts them, and records
// each attempt. Several dispatchers may share a store; claims keep them from
// sending the same delivery at the same time.
type Dispatcher struct {
	// transport is the dispatcher's own, when Options.Client was nil.
	transport *http.Transport
	store     tokenstore.Outbox
	endpoints []Endpoint
	opts      Options
	log       *zap.Logger
	metrics   *metrics

	mu         sync.Mutex
	state      int // stateNew, stateRunning, stateStopped
	targets    map[string]*target
	order      []*target
	disabled   map[string]string
	disabledAt time.Time
	wake       chan struct{}
	// slot wakes the loop to claim only: a worker finished a send.
	slot chan struct{}
	// strayAt is when the loop last looked for deliveries to endpoints it
	// does not have; only the loop touches it.
	strayAt     time.Time
	quit        chan struct{}
	loopCtx     context.Context
	cancelLoop  context.CancelFunc
	sendCtx     context.Context
	cancelSends context.CancelFunc
	wg          sync.WaitGroup
}

const (
	stateNew = iota
	stateRunning
	stateStopped
)

// target is one endpoint at run time.
type target struct {
	index  int
	ep     Endpoint
	id     string
	label  string
	signer *signer
	queue  chan job
}

// job is a claimed delivery waiting for a worker of its endpoint.
type job struct {
	d         tokenstore.Delivery
	claimedAt time.Time
}

// NewDispatcher returns a dispatcher for endpoints over store. It does
// nothing until Start.
func NewDispatcher(store tokenstore.Outbox, endpoints []Endpoint, opts Options) *Dispatcher {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	var own *http.Transport
	if opts.Client == nil {
		// Keep a connection per concurrent send (the default keeps two per
		// host), and close them in Stop so nothing outlives the dispatcher.
		own = http.DefaultTransport.(*http.Transport).Clone()
		own.MaxIdleConnsPerHost = max(opts.Concurrency, DefaultConcurrency)
		// A redirect is answered as a failure, not followed: a receiver
		// that moved must be reconfigured, and a redirect must not steer
		// signed events elsewhere.
		opts.Client = &http.Client{Transport: own, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if len(opts.Schedule) == 0 {
		opts.Schedule = DefaultSchedule
	}
	if opts.Jitter == 0 {
		opts.Jitter = DefaultJitter
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.Lease <= 0 {
		opts.Lease = DefaultLease
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if opts.UserAgent == "" {
		opts.UserAgent = DefaultUserAgent
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Dispatcher{
		transport: own,
		store:     store,
		endpoints: append([]Endpoint(nil), endpoints...),
		opts:      opts,
		log:       opts.Logger,
		metrics:   newMetrics(opts.Registerer),
		wake:      make(chan struct{}, 1),
		slot:      make(chan struct{}, 1),
		quit:      make(chan struct{}),
	}
}

// Endpoints returns the configured endpoints (with their secrets: callers
// showing them must leave the secrets out).
func (d *Dispatcher) Endpoints() []Endpoint {
	return append([]Endpoint(nil), d.endpoints...)
}

// Start checks the configuration and starts delivering in the background.
func (d *Dispatcher) Start() error {
	if d.opts.Lease <= d.opts.Timeout {
		return fmt.Errorf("webhook lease %s must be longer than the attempt timeout %s", d.opts.Lease, d.opts.Timeout)
	}
	targets := make(map[string]*target, len(d.endpoints))
	order := make([]*target, 0, len(d.endpoints))
	ids := make(map[string]bool, len(d.endpoints))
	for i, ep := range d.endpoints {
		if err := ep.Validate(); err != nil {
			return err
		}
		if _, dup := targets[ep.URL]; dup {
			return fmt.Errorf("webhook %s is configured twice", redactURL(ep.URL))
		}
		if ids[ep.WebhookID()] {
			return fmt.Errorf("webhook %s: id %q is already used by another endpoint", redactURL(ep.URL), ep.WebhookID())
		}
		ids[ep.WebhookID()] = true
		s, err := newSigner(ep.Secrets, ep.SignatureEncoding)
		if err != nil {
			return fmt.Errorf("webhook %s: %w", redactURL(ep.URL), err)
		}
		t := &target{
			index:  i,
			ep:     ep,
			id:     ep.WebhookID(),
			label:  strconv.Itoa(i),
			signer: s,
			queue:  make(chan job, d.opts.Concurrency),
		}
		targets[ep.URL] = t
		order = append(order, t)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state != stateNew {
		return errors.New("webhook dispatcher already started")
	}
	d.state = stateRunning
	d.targets, d.order = targets, order
	d.loopCtx, d.cancelLoop = context.WithCancel(context.Background())
	d.sendCtx, d.cancelSends = context.WithCancel(context.Background())
	d.wg.Add(1)
	go d.loop()
	for _, t := range order {
		for range d.opts.Concurrency {
			d.wg.Add(1)
			go d.worker(t)
		}
	}
	return nil
}

// Notify wakes the dispatcher to read the outbox now; call it after
// committing events so they go out without waiting for the next poll. It
// never blocks.
func (d *Dispatcher) Notify() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Running reports whether the dispatcher has started and not stopped, for
// the gateway's readiness answer.
func (d *Dispatcher) Running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state == stateRunning
}

// Stop stops fanning out and claiming, and waits for the sends in flight.
// When ctx ends first, those sends are abandoned: their leases run out and
// the deliveries are claimed again (at-least-once), and Stop returns
// ctx.Err(). Claimed deliveries not yet sent are handed back at once. No
// goroutine of the dispatcher is left running when Stop returns.
func (d *Dispatcher) Stop(ctx context.Context) error {
	d.mu.Lock()
	if d.state != stateRunning {
		d.state = stateStopped
		d.mu.Unlock()
		return nil
	}
	d.state = stateStopped
	close(d.quit)
	d.cancelLoop()
	d.mu.Unlock()

	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		d.cancelSends()
		<-done
	}
	d.cancelSends()
	d.releaseQueued()
	if d.transport != nil {
		d.transport.CloseIdleConnections()
	}
	return err
}

func (d *Dispatcher) loop() {
	defer d.wg.Done()
	tick := time.NewTicker(d.opts.PollInterval)
	defer tick.Stop()
	fanOut := true
	for {
		more := d.cycle(d.loopCtx, fanOut)
		if more {
			select {
			case <-d.quit:
				return
			default:
				fanOut = true
				continue
			}
		}
		select {
		case <-d.quit:
			return
		case <-d.wake:
			fanOut = true
		case <-tick.C:
			fanOut = true
		case <-d.slot:
			// A send finished: its endpoint can take another delivery.
			// New events come with Notify or the next poll, so this
			// wake-up claims without reading the events.
			fanOut = false
		}
	}
}

// cycle fans out one batch of events (when fanOut is set) and claims what
// the endpoints' queues can take. It reports whether there is probably more
// to do at once.
func (d *Dispatcher) cycle(ctx context.Context, fanOut bool) bool {
	now := d.opts.Now()
	d.refreshDisabled(ctx, now, false)

	more := false
	if fanOut {
		events, err := d.store.FanOut(ctx, d.opts.BatchSize, d.endpointsFor)
		if err != nil {
			if ctx.Err() == nil {
				d.log.Error("fanning out webhook events", zap.Error(err))
			}
			return false
		}
		for _, e := range events {
			d.metrics.events.Inc()
			if d.opts.Emit != nil {
				d.opts.Emit(e)
			}
		}
		more = len(events) == d.opts.BatchSize
	}

	// Each endpoint claims what its queue can take, so a busy endpoint
	// claims nothing (its backlog waits in the store at no cost) and never
	// stands in the way of the others.
	claims := make([]tokenstore.EndpointClaim, 0, len(d.order))
	for _, t := range d.order {
		if free := cap(t.queue) - len(t.queue); free > 0 {
			claims = append(claims, tokenstore.EndpointClaim{Endpoint: t.ep.URL, Limit: min(free, d.opts.BatchSize)})
		}
	}
	claims = append(claims, d.strayClaims(ctx, now)...)
	if len(claims) == 0 {
		return more
	}
	claimedAt := d.opts.Now()
	claimed, err := d.store.ClaimEndpointDeliveries(ctx, claimedAt, d.opts.Lease, claims)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("claiming webhook deliveries", zap.Error(err))
		}
		return more
	}
	// Deliveries failed at once (a disabled endpoint) left their queue's
	// room free: claim again without waiting for the next poll.
	return d.dispatch(ctx, claimed, claimedAt) > 0 || more
}

// strayClaims asks, at most once per lease, for the deliveries to
// endpoints this dispatcher does not have that are older than the whole
// retry schedule: nobody has delivered them, and they are failed. Younger
// ones are left alone: during a config reload, or with instances
// configured differently, another dispatcher may have the endpoint.
func (d *Dispatcher) strayClaims(ctx context.Context, now time.Time) []tokenstore.EndpointClaim {
	if !d.strayAt.IsZero() && now.Sub(d.strayAt) < d.opts.Lease {
		return nil
	}
	d.strayAt = now
	eps, err := d.store.PendingEndpoints(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("reading webhook endpoints with pending deliveries", zap.Error(err))
		}
		return nil
	}
	var claims []tokenstore.EndpointClaim
	for _, ep := range eps {
		if d.targets[ep] == nil {
			claims = append(claims, tokenstore.EndpointClaim{Endpoint: ep, Limit: d.opts.BatchSize, CreatedBefore: now.Add(-d.horizon())})
		}
	}
	return claims
}

// dispatch hands claimed deliveries to their endpoints' workers; each
// endpoint claimed no more than its queue has room for. It returns how many
// deliveries to configured endpoints it failed without sending.
func (d *Dispatcher) dispatch(ctx context.Context, claimed []tokenstore.Delivery, claimedAt time.Time) (failed int) {
	// An endpoint may have been enabled since the disabled set was read
	// (the API, another instance); read it again before failing anything.
	for _, dl := range claimed {
		if _, off := d.isDisabled(dl.Endpoint); off {
			d.refreshDisabled(ctx, claimedAt, true)
			break
		}
	}
	for i := range claimed {
		dl := claimed[i]
		t := d.targets[dl.Endpoint]
		if t == nil {
			d.fail(&dl, "endpoint is no longer configured; redeliver once it is")
			continue
		}
		if reason, off := d.isDisabled(dl.Endpoint); off {
			d.fail(&dl, "endpoint disabled: "+reason)
			d.metrics.deliveries.WithLabelValues(t.label, "failed").Inc()
			failed++
			continue
		}
		select {
		case t.queue <- job{d: dl, claimedAt: claimedAt}:
		default:
			// Only this loop fills the queues, and it claimed no more
			// than they had room for: this does not happen. Should it,
			// the delivery goes back, due at once.
			d.release(&dl, claimedAt)
		}
	}
	return failed
}

// horizon is how long a delivery may be retried: the whole schedule, at
// least an hour.
func (d *Dispatcher) horizon() time.Duration {
	var h time.Duration
	for _, w := range d.opts.Schedule {
		h += w
	}
	return max(h, time.Hour)
}

// endpointsFor is the fan-out filter: the enabled endpoints that want e.
func (d *Dispatcher) endpointsFor(e tokenstore.Event) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, t := range d.order {
		if _, off := d.disabled[t.ep.URL]; off {
			continue
		}
		if t.ep.Matches(e.Name) {
			out = append(out, t.ep.URL)
		}
	}
	return out
}

// refreshDisabled rereads the disabled endpoints, at most once per poll
// interval unless forced: another instance, or the API, may change them.
func (d *Dispatcher) refreshDisabled(ctx context.Context, now time.Time, force bool) {
	d.mu.Lock()
	due := force || d.disabled == nil || now.Sub(d.disabledAt) >= d.opts.PollInterval
	d.mu.Unlock()
	if !due {
		return
	}
	m, err := d.store.DisabledEndpoints(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("reading disabled webhook endpoints", zap.Error(err))
		}
		return
	}
	if m == nil {
		m = map[string]string{}
	}
	d.mu.Lock()
	d.disabled, d.disabledAt = m, now
	d.mu.Unlock()
}

func (d *Dispatcher) isDisabled(u string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.disabled[u]
	return r, ok
}

func (d *Dispatcher) worker(t *target) {
	defer d.wg.Done()
	for {
		// Stopping wins over queued work: Stop hands queued deliveries
		// back instead of sending them.
		select {
		case <-d.quit:
			return
		default:
		}
		select {
		case <-d.quit:
			return
		case j := <-t.queue:
			d.attempt(t, j)
			select { // a slot is free
			case d.slot <- struct{}{}:
			default:
			}
		}
	}
}

// attempt sends one claimed delivery and records the outcome.
func (d *Dispatcher) attempt(t *target, j job) {
	dl := j.d
	now := d.opts.Now()
	if reason, off := d.isDisabled(t.ep.URL); off {
		d.fail(&dl, "endpoint disabled: "+reason)
		d.metrics.deliveries.WithLabelValues(t.label, "failed").Inc()
		return
	}
	// Start a send only while the lease surely outlasts it, so that no
	// other dispatcher can claim the delivery while it is on the wire.
	if now.Sub(j.claimedAt) > (d.opts.Lease-d.opts.Timeout)/2 {
		d.release(&dl, now)
		return
	}

	body, err := d.envelope(dl.Event, t.id).Marshal()
	if err != nil {
		d.fail(&dl, "encoding the envelope failed")
		return
	}
	status, retryAfter, sendErr := d.send(t, dl.Event.ID, now, body)
	if d.sendCtx.Err() != nil {
		// Stopping without time to finish: the lease hands the delivery
		// back; recording a failure would count an attempt that a
		// receiver may well have processed.
		return
	}
	d.metrics.attempts.WithLabelValues(t.label, outcome(status, sendErr)).Inc()

	dl.Attempts++
	dl.LastStatus = status
	done := d.opts.Now()
	switch {
	case sendErr == nil && status >= 200 && status < 300:
		dl.Status = tokenstore.DeliveryDelivered
		dl.LastError = ""
		dl.NextAttemptAt = time.Time{}
		d.metrics.deliveries.WithLabelValues(t.label, "delivered").Inc()
		if dl.Event.Name == account.EventAuthenticationError {
			// The alarm an operator may be asked about: say it went out.
			d.log.Info("authentication_error alarm delivered",
				zap.String("integrated_account_id", dl.Event.AccountID), zap.String("endpoint", redactURL(t.ep.URL)),
				zap.String("event_id", dl.Event.ID), zap.Int("attempts", dl.Attempts))
		}
	case sendErr == nil && status == http.StatusGone:
		reason := fmt.Sprintf("answered 410 Gone at %s", formatTime(done))
		dl.Status = tokenstore.DeliveryFailed
		dl.LastError = "endpoint " + reason + "; it is disabled until enabled again"
		dl.NextAttemptAt = time.Time{}
		if err := d.store.DisableEndpoint(d.sendCtx, t.ep.URL, reason, done); err != nil {
			d.log.Error("disabling webhook endpoint", zap.String("endpoint", redactURL(t.ep.URL)), zap.Error(err))
		}
		d.log.Error("webhook endpoint answered 410 Gone: disabled, no more deliveries go to it until it is enabled again",
			zap.String("endpoint", redactURL(t.ep.URL)), zap.String("webhook_id", t.id))
		d.refreshDisabled(d.sendCtx, done, true)
		d.metrics.deliveries.WithLabelValues(t.label, "failed").Inc()
	default:
		if sendErr != nil {
			dl.LastError = sendErr.Error()
		} else {
			dl.LastError = fmt.Sprintf("answered %d %s", status, http.StatusText(status))
		}
		if dl.Attempts >= len(d.opts.Schedule) {
			dl.Status = tokenstore.DeliveryFailed
			dl.NextAttemptAt = time.Time{}
			d.metrics.deliveries.WithLabelValues(t.label, "failed").Inc()
			d.log.Error("webhook delivery failed for good",
				zap.String("endpoint", redactURL(t.ep.URL)), zap.String("event_id", dl.Event.ID),
				zap.String("integrated_account_id", dl.Event.AccountID),
				zap.String("event", dl.Event.Name), zap.Int("attempts", dl.Attempts), zap.String("last_error", dl.LastError))
		} else {
			wait := d.jitter(d.opts.Schedule[dl.Attempts])
			if retryAfter > 0 && (status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable) {
				wait = max(wait, retryAfter)
			}
			dl.Status = tokenstore.DeliveryPending
			dl.NextAttemptAt = done.Add(wait)
			d.log.Warn("webhook attempt failed; retrying",
				zap.String("endpoint", redactURL(t.ep.URL)), zap.String("event_id", dl.Event.ID),
				zap.String("event", dl.Event.Name), zap.String("integrated_account_id", dl.Event.AccountID),
				zap.Int("attempts", dl.Attempts), zap.Duration("retry_in", wait), zap.String("error", dl.LastError))
		}
	}
	d.finish(&dl)
}

// send posts body to t and returns the status, the Retry-After delay the
// receiver asked for, and a network error whose text holds no secret.
func (d *Dispatcher) send(t *target, id string, now time.Time, body []byte) (int, time.Duration, error) {
	ctx, cancel := context.WithTimeout(d.sendCtx, d.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.ep.URL, bytes.NewReader(body))
	if err != nil {
		return 0, 0, errors.New("building the request failed")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", d.opts.UserAgent)
	t.signer.sign(req.Header, id, now, body)
	resp, err := d.opts.Client.Do(req)
	if err != nil {
		return 0, 0, describeSendError(err, d.opts.Timeout)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseRead))
	_ = resp.Body.Close()
	return resp.StatusCode, parseRetryAfter(resp.Header.Get("Retry-After"), d.opts.Now()), nil
}

// describeSendError drops the URL (which may hold a receiver's token) from a
// client error.
func describeSendError(err error, timeout time.Duration) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Errorf("no answer within %s", timeout)
		}
		err = ue.Err
	}
	msg := err.Error()
	if strings.Contains(msg, "://") {
		msg = "the request failed"
	}
	return errors.New("connection failed: " + msg)
}

// parseRetryAfter reads seconds or an HTTP date; 0 when absent or invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var wait time.Duration
	if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		wait = time.Duration(n) * time.Second
	} else if at, err := http.ParseTime(v); err == nil {
		wait = at.Sub(now)
	}
	return min(max(wait, 0), maxRetryAfter)
}

func (d *Dispatcher) jitter(wait time.Duration) time.Duration {
	if d.opts.Jitter <= 0 || wait <= 0 {
		return wait
	}
	f := 1 + d.opts.Jitter*(2*rand.Float64()-1)
	return time.Duration(float64(wait) * f)
}

func outcome(status int, err error) string {
	switch {
	case err != nil:
		return "network_error"
	case status >= 200 && status < 300:
		return "success"
	case status == http.StatusGone:
		return "gone"
	case status == http.StatusTooManyRequests:
		return "rate_limited"
	case status >= 500:
		return "server_error"
	}
	return "client_error"
}

// fail marks a claimed delivery failed without sending it.
func (d *Dispatcher) fail(dl *tokenstore.Delivery, reason string) {
	dl.Status = tokenstore.DeliveryFailed
	dl.LastError = reason
	dl.NextAttemptAt = time.Time{}
	d.finish(dl)
}

// release hands a claimed delivery back unsent, due at due.
func (d *Dispatcher) release(dl *tokenstore.Delivery, due time.Time) {
	dl.NextAttemptAt = due
	d.finish(dl)
}

// finish records a delivery. It runs on its own context: an outcome
// learnt just before Stop is still worth writing.
func (d *Dispatcher) finish(dl *tokenstore.Delivery) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := d.store.FinishAttempt(ctx, dl)
	switch {
	case errors.Is(err, tokenstore.ErrConflict):
		// The lease ran out while this attempt ran; whoever claimed the
		// delivery next owns its record now.
		d.log.Warn("a webhook attempt outlived its lease; its outcome is not recorded",
			zap.String("delivery_id", dl.ID), zap.Duration("lease", d.opts.Lease))
	case err != nil:
		d.log.Error("recording a webhook attempt", zap.String("delivery_id", dl.ID), zap.Error(err))
	}
}

// releaseQueued hands back the claimed deliveries no worker took before Stop.
func (d *Dispatcher) releaseQueued() {
	now := d.opts.Now()
	for _, t := range d.order {
		for {
			select {
			case j := <-t.queue:
				d.release(&j.d, now)
				continue
			default:
			}
			break
		}
	}
}

// metrics are the dispatcher's counters, labelled by endpoint index (never
// by account or URL).
type metrics struct {
	attempts   *prometheus.CounterVec
	deliveries *prometheus.CounterVec
	events     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caddy", Subsystem: "linkgate", Name: "webhook_attempts_total",
			Help: "Webhook delivery attempts by endpoint index and outcome.",
		}, []string{"endpoint", "outcome"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caddy", Subsystem: "linkgate", Name: "webhook_deliveries_total",
			Help: "Webhook deliveries finished, by endpoint index and result (delivered, failed).",
		}, []string{"endpoint", "result"}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "caddy", Subsystem: "linkgate", Name: "webhook_events_total",
			Help: "Webhook events fanned out to endpoints.",
		}),
	}
	if reg == nil {
		return m
	}
	m.attempts = prom.Register(reg, m.attempts)
	m.deliveries = prom.Register(reg, m.deliveries)
	m.events = prom.Register(reg, m.events)
	return m
}
