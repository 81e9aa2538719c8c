package linkgate

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/refresh"
	"github.com/linkgate/linkgate/tokenstore"
)

func init() {
	caddy.RegisterModule(API{})
}

// API is the accounts_api handler: the product backend's API, authenticated
// by the app's API tokens. It serves /integrated-account, /link-token,
// /webhook and /webhook-delivery, wire-compatible with Truto's, and answers
// every other request with a JSON 404: it ends the route, like a responder.
type API struct {
	app    *App
	logger *zap.Logger
	mux    *http.ServeMux
}

// CaddyModule returns the Caddy module information.
func (API) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.accounts_api",
		New: func() caddy.Module { return new(API) },
	}
}

// Provision finds the app and builds the routes.
func (h *API) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	app, err := loadApp(ctx)
	if err != nil {
		return err
	}
	h.app = app
	m := http.NewServeMux()
	m.HandleFunc("GET /integrated-account", h.list)
	m.HandleFunc("POST /integrated-account", h.create)
	m.HandleFunc("POST /integrated-account/refresh-credentials", h.refreshCredentials)
	m.HandleFunc("POST /integrated-account/bulk", h.bulkImport)
	m.HandleFunc("POST /integrated-account/bulk-delete", h.bulkDelete)
	m.HandleFunc("POST /integrated-account/token", h.accountToken)
	m.HandleFunc("GET /integrated-account/{id}", h.get)
	m.HandleFunc("PATCH /integrated-account/{id}", h.patch)
	m.HandleFunc("PATCH /integrated-account/{id}/credentials", h.patchCredentials)
	m.HandleFunc("DELETE /integrated-account/{id}", h.delete)
	m.HandleFunc("POST /link-token", h.withRuntime(func(rt *runtime, w http.ResponseWriter, r *http.Request) {
		rt.links.CreateLinkToken(w, r)
	}))
	webhooks := h.withRuntime(func(rt *runtime, w http.ResponseWriter, r *http.Request) {
		// Webhook endpoints and their deliveries are the whole gateway's,
		// every tenant's events mixed: a tenant's token is refused them.
		if callerOf(r.Context()).tenant != "" {
			wire.WriteError(w, http.StatusForbidden, "this API token is restricted to one tenant: webhook endpoints and deliveries concern every tenant; use an unrestricted API token")
			return
		}
		rt.webhookAPI.ServeHTTP(w, r)
	})
	m.HandleFunc("/webhook", webhooks)
	m.HandleFunc("/webhook/", webhooks)
	m.HandleFunc("/webhook-delivery", webhooks)
	m.HandleFunc("/webhook-delivery/", webhooks)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		wire.WriteError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	})
	h.mux = m
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *API) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	bearer := bearerToken(r)
	c, err := h.app.authorize(r, bearer)
	if err != nil {
		if isAccountToken(bearer) {
			err = wire.Errorf(http.StatusUnauthorized, "an integrated account token authorizes proxied calls of its account only, not the API: send an API token")
		}
		wire.WriteErr(w, err)
		return nil
	}
	r = r.WithContext(withCaller(r.Context(), c))
	if err := wire.CheckRequestText(r); err != nil {
		wire.WriteErr(w, err)
		return nil
	}
	h.mux.ServeHTTP(w, r)
	return nil
}

// withRuntime hands a handler the app's runtime, or answers 503.
func (h *API) withRuntime(f func(rt *runtime, w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if rt, ok := h.rt(w); ok {
			f(rt, w, r)
		}
	}
}

// tenantIDPattern is what a tenant id may look like.
var tenantIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:@+\-]{1,256}$`)

// importRequest is the body of POST /integrated-account: Truto's
// documented fields, with linkgate's integration (by name) and id.
type importRequest struct {
	ID                       string         `json:"id,omitempty"`
	TenantID                 string         `json:"tenant_id"`
	Integration              string         `json:"integration"`
	EnvironmentIntegrationID string         `json:"environment_integration_id"`
	AuthenticationMethod     account.Method `json:"authentication_method,omitempty"`
	Context                  map[string]any `json:"context,omitempty"`
	// Accepted and ignored: a self-hosted gateway places accounts where
	// its store is.
	Region any `json:"region"`
}

// newImport checks an import request and builds its account and creation
// change; its errors are *wire.Error (400) that say what is wrong. The
// single and bulk imports share it.
func (a *App) newImport(req importRequest, now time.Time) (*account.Account, account.Change, error) {
	if !tenantIDPattern.MatchString(req.TenantID) {
		return nil, account.Change{}, wire.Errorf(http.StatusBadRequest, "tenant_id is required: 1 to 256 of A-Z a-z 0-9 . _ : @ + -")
	}
	if req.EnvironmentIntegrationID != "" {
		return nil, account.Change{}, wire.Errorf(http.StatusBadRequest, "environment_integration_id is read by the API only: name the integration with integration")
	}
	in, err := a.integration(req.Integration)
	if err != nil {
		return nil, account.Change{}, wire.Errorf(http.StatusBadRequest, "integration: %s", err)
	}
	if req.AuthenticationMethod == "" {
		req.AuthenticationMethod = in.Auth
	}
	if req.AuthenticationMethod != in.Auth {
		return nil, account.Change{}, wire.Errorf(http.StatusBadRequest, "authentication_method %q does not match integration %s, which uses %s", req.AuthenticationMethod, in.Name, in.Auth)
	}
	if req.ID == "" {
		req.ID = uuid.NewString()
	} else if _, err := uuid.Parse(req.ID); err != nil {
		return nil, account.Change{}, wire.Errorf(http.StatusBadRequest, "id must be a UUID when given")
	}
	meta, creds, err := splitCredentials(req.Context, now)
	if err != nil {
		return nil, account.Change{}, err
	}
	if err := requireCredentials(in.Auth, creds); err != nil {
		return nil, account.Change{}, err
	}
	// An imported account must be usable as it is: every connection field
	// its integration needs comes with it, whatever its usual source.
	if meta, err = in.CheckContext(meta, func(*account.ConnectionField) bool { return true }); err != nil {
		return nil, account.Change{}, connectionFieldError(err)
	}
	acc := &account.Account{
		ID: req.ID, TenantID: req.TenantID, Integration: in.Name, Method: in.Auth,
		Context: meta, Credentials: creds, CreatedAt: now, UpdatedAt: now,
	}
	c, err := acc.Apply(account.Created, nil, now)
	if err != nil {
		return nil, account.Change{}, wire.Errorf(http.StatusBadRequest, "%s", err)
	}
	return acc, c, nil
}

// resolveImport prepares an import request of an API caller: its
// environment_integration_id becomes the integration it names, and an
// account for a tenant the caller may not act for is refused (403).
func resolveImport(req *importRequest, env *wire.Environment, c caller) error {
	if tenantIDPattern.MatchString(req.TenantID) && !c.allows(req.TenantID) {
		return wire.Errorf(http.StatusForbidden, "this API token may not create accounts for tenant %s", req.TenantID)
	}
	if req.EnvironmentIntegrationID == "" {
		return nil
	}
	name, found := env.IntegrationByEnvironmentID(req.EnvironmentIntegrationID)
	if !found {
		return wire.Errorf(http.StatusBadRequest, "environment_integration_id %q is not an integration of this gateway", req.EnvironmentIntegrationID)
	}
	if req.Integration != "" && req.Integration != name {
		return wire.Errorf(http.StatusBadRequest, "integration %q and environment_integration_id %q name different integrations", req.Integration, req.EnvironmentIntegrationID)
	}
	req.Integration, req.EnvironmentIntegrationID = name, ""
	return nil
}

func (h *API) create(w http.ResponseWriter, r *http.Request) {
	var req importRequest
	if err := wire.DecodeJSON(r, &req); err != nil {
		wire.WriteErr(w, err)
		return
	}
	rt, ok := h.rt(w)
	if !ok {
		return
	}
	if err := resolveImport(&req, rt.env, callerOf(r.Context())); err != nil {
		wire.WriteErr(w, err)
		return
	}
	now := time.Now().UTC()
	a, c, err := h.app.newImport(req, now)
	if err != nil {
		wire.WriteErr(w, err)
		return
	}
	if err := rt.store.CreateAccount(r.Context(), a, tokenstore.EventsFor(c, a, now)); err != nil {
		if errors.Is(err, tokenstore.ErrExists) {
			wire.WriteError(w, http.StatusConflict, fmt.Sprintf("integrated account %s already exists", a.ID))
			return
		}
		h.storeFailed(w, err, a.ID)
		return
	}
	rt.dispatcher.Notify()
	wire.WriteJSON(w, http.StatusCreated, rt.env.Account(a.View()))
}

func (h *API) list(w http.ResponseWriter, r *http.Request) {
	rt, ok := h.rt(w)
	if !ok {
		return
	}
	q, err := parseAccountQuery(r.URL.Query(), rt.env, callerOf(r.Context()))
	if err != nil {
		wire.WriteErr(w, err)
		return
	}
	page, err := q.page(r.Context(), rt.store)
	if err != nil {
		if errors.Is(err, tokenstore.ErrInvalidCursor) {
			wire.WriteError(w, http.StatusBadRequest, "next_cursor is not a cursor this API gave out")
			return
		}
		h.storeFailed(w, err, "")
		return
	}
	result := make([]wire.IntegratedAccount, 0, len(page.Accounts))
	for _, a := range page.Accounts {
		result = append(result, rt.env.Account(a.View()))
	}
	var next any
	if page.NextCursor != "" {
		next = page.NextCursor
	}
	wire.WriteJSON(w, http.StatusOK, map[string]any{"result": result, "next_cursor": next, "limit": q.limit})
}

// load reads the account of the request's path for the caller: an account
// of another tenant than a restricted token's is answered 404, as if it
// did not exist.
func (h *API) load(r *http.Request, rt *runtime, id string) (*account.Account, error) {
	a, err := rt.store.GetAccount(r.Context(), id)
	if err != nil {
		return nil, storeError(err, id)
	}
	if !callerOf(r.Context()).allows(a.TenantID) {
		return nil, storeError(tokenstore.ErrNotFound, id)
	}
	return a, nil
}

func (h *API) get(w http.ResponseWriter, r *http.Request) {
	rt, ok := h.rt(w)
	if !ok {
		return
	}
	a, err := h.load(r, rt, r.PathValue("id"))
	if err != nil {
		wire.WriteErr(w, err)
		return
	}
	wire.WriteJSON(w, http.StatusOK, rt.env.Account(a.View()))
}

// patchRequest is the body of PATCH /integrated-account/{id}: Truto's
// tenant_id and context.
type patchRequest struct {
	TenantID *string        `json:"tenant_id"`
	Context  map[string]any `json:"context"`
}

func (h *API) patch(w http.ResponseWriter, r *http.Request) {
	var req patchRequest
	if err := wire.DecodeJSON(r, &req); err != nil {
		wire.WriteErr(w, err)
		return
	}
	if req.Context == nil && req.TenantID == nil {
		wire.WriteError(w, http.StatusBadRequest, "context or tenant_id is required: context is an object whose keys are merged into the account's context")
		return
	}
	if req.TenantID != nil {
		if !tenantIDPattern.MatchString(*req.TenantID) {
			wire.WriteError(w, http.StatusBadRequest, "tenant_id must be 1 to 256 of A-Z a-z 0-9 . _ : @ + -")
			return
		}
		if !callerOf(r.Context()).allows(*req.TenantID) {
			wire.WriteError(w, http.StatusForbidden, fmt.Sprintf("this API token may not move accounts to tenant %s", *req.TenantID))
			return
		}
	}
	for k := range req.Context {
		if credentialKeys[k] {
			wire.WriteError(w, http.StatusBadRequest, fmt.Sprintf("context.%s is a credential: change credentials with PATCH /integrated-account/{id}/credentials", k))
			return
		}
	}
	h.update(w, r, func(a *account.Account, now time.Time) ([]string, error) {
		if req.TenantID != nil {
			a.TenantID = *req.TenantID
		}
		if a.Context == nil {
			a.Context = map[string]any{}
		}
		// Connection fields in the context are checked as on import: a
		// value that fails its kind, or the removal of a required one,
		// is refused and nothing changes.
		patch := req.Context
		if in, ok := h.app.Integrations[a.Integration]; ok && len(in.ConnectionFields) > 0 {
			for k, v := range patch {
				if f := in.Field(k); f != nil && v == nil && !f.Optional {
					return nil, wire.Errorf(http.StatusBadRequest, "context.%s: connection field %s is required by integration %s and cannot be removed", k, k, in.Name)
				}
			}
			var err error
			if patch, err = in.CheckContext(patch, nil); err != nil {
				return nil, connectionFieldError(err)
			}
		}
		for k, v := range patch {
			if v == nil {
				delete(a.Context, k)
				continue
			}
			a.Context[k] = v
		}
		a.UpdatedAt = now
		return []string{account.EventUpdated}, nil
	})
}

func (h *API) patchCredentials(w http.ResponseWriter, r *http.Request) {
	var req map[string]any
	if err := wire.DecodeJSON(r, &req); err != nil {
		wire.WriteErr(w, err)
		return
	}
	h.update(w, r, func(a *account.Account, now time.Time) ([]string, error) {
		rest, creds, err := splitCredentials(req, now)
		if err != nil {
			return nil, err
		}
		if len(rest) > 0 {
			for k := range rest {
				return nil, wire.Errorf(http.StatusBadRequest, "unknown credential field %q: send oauth.token, api_key, or username and password", k)
			}
		}
		if err := requireCredentials(a.Method, creds); err != nil {
			return nil, err
		}
		a.Credentials = creds
		// New credentials from the application are a reconnection.
		c, err := a.Apply(account.Reconnected, nil, now)
		if err != nil {
			return nil, wire.Errorf(http.StatusConflict, "%s", err.Error())
		}
		return c.Events, nil
	})
}

// update reads, changes and writes an account, retrying when another writer
// got there first.
func (h *API) update(w http.ResponseWriter, r *http.Request, change func(a *account.Account, now time.Time) ([]string, error)) {
	rt, ok := h.rt(w)
	if !ok {
		return
	}
	id := r.PathValue("id")
	for range 5 {
		a, err := rt.store.Inner().GetAccount(r.Context(), id)
		if err == nil && !callerOf(r.Context()).allows(a.TenantID) {
			err = tokenstore.ErrNotFound
		}
		if err != nil {
			wire.WriteErr(w, storeError(err, id))
			return
		}
		now := time.Now().UTC()
		names, err := change(a, now)
		if err != nil {
			wire.WriteErr(w, err)
			return
		}
		err = rt.store.UpdateAccount(r.Context(), a, tokenstore.NewEvents(names, a, now))
		if errors.Is(err, tokenstore.ErrConflict) {
			continue
		}
		if err != nil {
			wire.WriteErr(w, storeError(err, id))
			return
		}
		rt.dispatcher.Notify()
		wire.WriteJSON(w, http.StatusOK, rt.env.Account(a.View()))
		return
	}
	wire.WriteErr(w, storeError(tokenstore.ErrConflict, id))
}

func (h *API) delete(w http.ResponseWriter, r *http.Request) {
	rt, ok := h.rt(w)
	if !ok {
		return
	}
	id := r.PathValue("id")
	// A restricted token must see the account is its tenant's first; an
	// unrestricted one deletes without reading (the deleted event carries
	// only the id; an unknown id is DeleteAccount's ErrNotFound, a 404).
	if callerOf(r.Context()).tenant != "" {
		if _, err := h.load(r, rt, id); err != nil {
			wire.WriteErr(w, err)
			return
		}
	}
	gone := tokenstore.NewEvent(account.EventDeleted, &account.Account{ID: id}, time.Now().UTC())
	if err := rt.store.DeleteAccount(r.Context(), id, []tokenstore.Event{gone}); err != nil {
		wire.WriteErr(w, storeError(err, id))
		return
	}
	rt.dispatcher.Notify()
	wire.WriteJSON(w, http.StatusOK, map[string]string{"id": id})
}

// refreshRequest is the body of POST /integrated-account/refresh-credentials.
type refreshRequest struct {
	ID string `json:"id"`
}

func (h *API) refreshCredentials(w http.ResponseWriter, r *http.Request) {
	var req refreshRequest
	if err := wire.DecodeJSON(r, &req); err != nil {
		wire.WriteErr(w, err)
		return
	}
	if req.ID == "" {
		wire.WriteError(w, http.StatusBadRequest, "id is required")
		return
	}
	rt, ok := h.rt(w)
	if !ok {
		return
	}
	a, err := h.load(r, rt, req.ID)
	if err != nil {
		wire.WriteErr(w, err)
		return
	}
	if a.Method != account.MethodOAuth2 && a.Method != account.MethodClientCredentials {
		wire.WriteErr(w, &wire.Error{Status: http.StatusBadRequest, AccountID: a.ID,
			Message: fmt.Sprintf("integrated account %s uses %s: it has no token to refresh", a.ID, a.Method)})
		return
	}
	if err := rt.refresher.Refresh(r.Context(), req.ID); err != nil {
		var re *refresh.Error
		if !errors.As(err, &re) && !errors.Is(err, refresh.ErrNeedsReauth) {
			h.logger.Warn("forced refresh failed", zap.String("integrated_account_id", req.ID), zap.Error(err))
		}
		wire.WriteErr(w, credentialsError(err, req.ID))
		return
	}
	rt.dispatcher.Notify()
	wire.WriteJSON(w, http.StatusOK, map[string]bool{"success": true})
}

// rt returns the runtime or answers 503.
func (h *API) rt(w http.ResponseWriter) (*runtime, bool) {
	return h.app.runtimeOr503(w, h.logger)
}

func (h *API) storeFailed(w http.ResponseWriter, err error, id string) {
	if !errors.Is(err, tokenstore.ErrInvalid) {
		h.logger.Error("store write failed", zap.String("integrated_account_id", id), zap.Error(err))
	}
	wire.WriteErr(w, storeError(err, id))
}

// Interface guards
var (
	_ caddy.Provisioner           = (*API)(nil)
	_ caddyhttp.MiddlewareHandler = (*API)(nil)
)

// connectionFieldError is the API's answer to a refused connection field:
// 400, naming it.
func connectionFieldError(err error) error {
	var fe *account.FieldError
	if errors.As(err, &fe) {
		return wire.Errorf(http.StatusBadRequest, "context.%s: %s", fe.Field, fe.Message)
	}
	return wire.Errorf(http.StatusBadRequest, "context: %s", err)
}
