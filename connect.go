package linkgate

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Connect{})
}

// Connect is the connect_account handler: the end user's side of a link
// token — the /connect-account page (the magic link), the OAuth callback and
// the Link SDK at /connect-account/sdk.js. It needs no API token: the link
// token is the end user's credential. Serve it on the gateway's public_url
// origin, since the OAuth redirect URI and the SDK's origin checks use it.
type Connect struct {
	app    *App
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Connect) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.connect_account",
		New: func() caddy.Module { return new(Connect) },
	}
}

// Provision finds the integrated_accounts app.
func (h *Connect) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	app, err := loadApp(ctx)
	if err != nil {
		return err
	}
	h.app = app
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Connect) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if rt, ok := h.app.runtimeOr503(w, h.logger); ok {
		rt.links.ServeHTTP(w, r)
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Connect)(nil)
	_ caddyhttp.MiddlewareHandler = (*Connect)(nil)
)
