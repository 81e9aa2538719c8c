package linkgate

import (
	"context"
	"net/http"
	"time"

	"go.uber.org/zap"

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
	app        *App
	store      *tokenstore.Cached
	refresher  *refresh.Refresher
	dispatcher *webhook.Dispatcher
	webhookAPI http.Handler
	links      *linkflow.Service
}

func newRuntime(a *App, st *tokenstore.Cached) (*runtime, error) {
	rt := &runtime{app: a, store: st}

	var schedule []time.Duration
	for _, d := range a.WebhookRetrySchedule {
		schedule = append(schedule, time.Duration(d))
	}
	rt.dispatcher = webhook.NewDispatcher(st, a.Webhooks, webhook.Options{
		Timeout:       time.Duration(a.WebhookTimeout),
		Schedule:      schedule,
		Lease:         time.Duration(a.WebhookLease),
		Logger:        a.logger.Named("webhook"),
		EnvironmentID: a.EnvironmentID,
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
		ropts.RefreshAhead = time.Duration(a.Refresh.RefreshAhead)
	}
	rt.refresher = refresh.New(st, a.Integrations, ropts)

	links, err := linkflow.New(st, a.Integrations, linkflow.Options{
		PublicURL:      a.PublicURL,
		AllowedOrigins: a.AllowedOrigins,
		LinkTokenTTL:   time.Duration(a.LinkTokenTTL),
		Logger:         a.logger.Named("linkflow"),
		OnCommit:       rt.dispatcher.Notify,
		SecretKeys:     a.storeHold.secretKeys(),
	})
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
	return rt.refresher.Start()
}

func (rt *runtime) stop() error {
	err := rt.refresher.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if derr := rt.dispatcher.Stop(ctx); err == nil {
		err = derr
	}
	return err
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
