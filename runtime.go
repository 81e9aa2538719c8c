package linkgate

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/linkgate/linkgate/internal/hostmap"
	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/linkflow"
	"github.com/linkgate/linkgate/refresh"
	"github.com/linkgate/linkgate/tokenstore"
	"github.com/linkgate/linkgate/webhook"
)

// runtime is what one loaded config builds on the shared store: the
// refresher, the webhook dispatcher and the connect flow. Each config has its
// own, started in the app's Start and stopped in its Stop; on a reload the two
// overlap briefly, which the store's locks and claims make safe.
type runtime struct {
	app *App
	// env is the gateway's environment: its stable id and integrations,
	// for Truto's shapes.
	env        *wire.Environment
	tokens     *accountTokens
	store      *tokenstore.Cached
	refresher  *refresh.Refresher
	dispatcher *webhook.Dispatcher
	webhookAPI http.Handler
	links      *linkflow.Service
	// gauges is what this runtime pointed the store gauges at.
	gauges *gaugeSource
}

func newRuntime(a *App, st *tokenstore.Cached) (*runtime, error) {
	rt := &runtime{app: a, store: st}
	env, err := a.environment(st)
	if err != nil {
		return nil, err
	}
	rt.env = env
	if rt.tokens, err = newAccountTokens(a.storeHold.secretKeys()); err != nil {
		return nil, err
	}

	var schedule []time.Duration
	for _, d := range a.WebhookRetrySchedule {
		schedule = append(schedule, time.Duration(d))
	}
	rt.dispatcher = webhook.NewDispatcher(st, a.Webhooks, webhook.Options{
		Timeout:       time.Duration(a.WebhookTimeout),
		Schedule:      schedule,
		Lease:         time.Duration(a.WebhookLease),
		Logger:        a.logger.Named("webhook"),
		EnvironmentID: env.ID,
		Environment:   env,
		Registerer:    a.ctx.GetMetricsRegistry(),
		Emit:          a.emitCaddyEvent,
	})
	rt.webhookAPI = webhook.NewAPI(st, rt.dispatcher)

	ropts := refresh.Options{
		Logger:     a.logger.Named("refresh"),
		Registerer: a.ctx.GetMetricsRegistry(),
		// An alarm goes out as soon as its transition commits.
		OnCommit: rt.dispatcher.Notify,
	}
	if a.Refresh != nil {
		ropts.TokenTimeout = time.Duration(a.Refresh.TokenTimeout)
		ropts.TokenHardLimit = time.Duration(a.Refresh.TokenHardLimit)
		ropts.MaxInFlight = a.Refresh.MaxInFlight
		ropts.RefreshAhead = time.Duration(a.Refresh.RefreshAhead)
	}
	ropts.Journal = a.storeHold.refreshJournal()
	// Set only by tests, which point providers' host names at servers on
	// this machine; nil otherwise, and the clients keep their defaults.
	testTransport := hostmap.Transport()
	if testTransport != nil {
		ropts.Client = &http.Client{Transport: testTransport}
	}
	rt.refresher = refresh.New(st, a.Integrations, ropts)

	lopts := linkflow.Options{
		PublicURL:      a.PublicURL,
		AllowedOrigins: a.AllowedOrigins,
		LinkTokenTTL:   time.Duration(a.LinkTokenTTL),
		Logger:         a.logger.Named("linkflow"),
		OnCommit:       rt.dispatcher.Notify,
		SecretKeys:     a.storeHold.secretKeys(),
		Environment:    env,
		Branding:       a.Branding,
		TenantAllowed: func(ctx context.Context, tenant string) bool {
			return callerOf(ctx).allows(tenant)
		},
	}
	if testTransport != nil {
		lopts.Client = &http.Client{Transport: testTransport, Timeout: 30 * time.Second}
	}
	links, err := linkflow.New(st, a.Integrations, lopts)
	if err != nil {
		return nil, err
	}
	rt.links = links
	if len(a.Integrations) > 0 {
		a.logger.Info("register this OAuth redirect URI with each provider", zap.String("redirect_uri", links.RedirectURI()))
	}
	return rt, nil
}

func (rt *runtime) start() error {
	if err := rt.dispatcher.Start(); err != nil {
		return err
	}
	if err := rt.refresher.Start(); err != nil {
		return err
	}
	if src := rt.gaugeSource(); src != nil {
		rt.gauges = src
		rt.app.gauges.setSource(src)
	}
	return nil
}

func (rt *runtime) stop() error {
	if rt.gauges != nil {
		rt.app.gauges.clearSource(rt.gauges)
	}
	err := rt.refresher.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if derr := rt.dispatcher.Stop(ctx); err == nil {
		err = derr
	}
	return err
}

// environment reads the gateway's environment from the store, choosing it
// on first start: the configured environment_id when there is one, else a
// new UUID that every instance sharing the store then reads back.
func (a *App) environment(st tokenstore.Environments) (*wire.Environment, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	proposal := a.EnvironmentID
	if proposal == "" {
		proposal = uuid.NewString()
	}
	id, createdAt, err := st.Environment(ctx, proposal, time.Now().UTC())
	if err != nil {
		return nil, fmt.Errorf("reading the environment: %w", err)
	}
	if a.EnvironmentID != "" {
		id = a.EnvironmentID
	}
	env := &wire.Environment{ID: id, CreatedAt: createdAt, Integrations: map[string]wire.IntegrationInfo{}}
	for name, in := range a.Integrations {
		env.Integrations[name] = wire.IntegrationInfo{Category: in.Category}
	}
	return env, nil
}

// emitCaddyEvent hands an account event to Caddy's event system, so other
// modules can subscribe to it. The data names the event and the account,
// never a secret: subscribers that need more read the account by the API.
func (a *App) emitCaddyEvent(e tokenstore.Event) {
	if a.events == nil {
		return
	}
	a.events.Emit(a.ctx, e.Name, map[string]any{
		"id":                    e.ID,
		"event":                 e.Name,
		"integrated_account_id": e.AccountID,
		"created_at":            e.CreatedAt,
	})
}
