package linkgate

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/tokenstore"
)

func init() {
	caddy.RegisterModule(Health{})
	httpcaddyfile.RegisterHandlerDirective("linkgate_health", parseHandler(func() caddyhttp.MiddlewareHandler { return new(Health) }))
	httpcaddyfile.RegisterDirectiveOrder("linkgate_health", httpcaddyfile.Before, "respond")
}

// Health answers a load balancer's liveness and readiness probes, without
// authentication: a path ending in /live answers 200 while the process
// serves; any other path is the readiness check, 200 when this instance can
// serve (the store answers, the configured keys open what it holds, the
// PostgreSQL change listener is connected, the webhook dispatcher runs) and
// 503 otherwise. Both answer JSON that names each check's state, never an
// error's text (it could hold a DSN): the reason goes to the log.
//
// Mount it on its own route, e.g.
//
//	handle /healthz* {
//		linkgate_health
//	}
type Health struct {
	app    *App
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Health) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.linkgate_health",
		New: func() caddy.Module { return new(Health) },
	}
}

// Provision finds the integrated_accounts app.
func (h *Health) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	app, err := loadApp(ctx)
	if err != nil {
		return err
	}
	h.app = app
	return nil
}

// healthTimeout bounds the store's answer to a probe: a load balancer
// waits a few seconds at most.
const healthTimeout = 2 * time.Second

// ServeHTTP answers the probe.
func (h *Health) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		wire.WriteError(w, http.StatusMethodNotAllowed, "health checks answer GET and HEAD")
		return nil
	}
	w.Header().Set("Cache-Control", "no-store")
	if strings.HasSuffix(strings.TrimRight(r.URL.Path, "/"), "/live") {
		wire.WriteJSON(w, http.StatusOK, map[string]any{"status": "ok"})
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	ready, checks := h.app.readiness(ctx, h.logger)
	status, word := http.StatusOK, "ok"
	if !ready {
		status, word = http.StatusServiceUnavailable, "unavailable"
	}
	wire.WriteJSON(w, status, map[string]any{"status": word, "checks": checks})
	return nil
}

// readiness runs the checks of the readiness probe and says whether this
// instance can serve, with each check's state.
func (a *App) readiness(ctx context.Context, logger *zap.Logger) (bool, map[string]string) {
	checks := map[string]string{}
	rt, err := a.runtime()
	if err != nil {
		logger.Error("readiness: opening the store", zap.Error(err))
		checks["store"] = "unavailable"
		return false, checks
	}
	ready := true
	if p, ok := rt.store.Inner().(tokenstore.Pinger); ok {
		if err := p.Ping(ctx); err != nil {
			logger.Error("readiness: the store does not answer", zap.Error(err))
			checks["store"] = "unavailable"
			ready = false
		} else {
			checks["store"] = "ok"
		}
	}
	// A store the keys open nothing of does not start; one that lacks
	// some key serves the accounts it can and says so here.
	if missing := a.storeHold.missingKeyIDs(); len(missing) > 0 {
		checks["keys"] = "missing key id " + strings.Join(missing, ", ")
	} else {
		checks["keys"] = "ok"
	}
	switch a.storeHold.listener.Load() {
	case listenerUnused:
		checks["postgres_listener"] = "not used"
	case listenerUp:
		checks["postgres_listener"] = "connected"
	default:
		checks["postgres_listener"] = "disconnected"
		ready = false
	}
	if rt.dispatcher.Running() {
		checks["webhook_dispatcher"] = "running"
	} else {
		checks["webhook_dispatcher"] = "stopped"
		ready = false
	}
	return ready, checks
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Health)(nil)
	_ caddyhttp.MiddlewareHandler = (*Health)(nil)
)
