package linkgate

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
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
	m.HandleFunc("GET /integrated-account/{id}", h.get)
	m.HandleFunc("PATCH /integrated-account/{id}", h.patch)
	m.HandleFunc("PATCH /integrated-account/{id}/credentials", h.patchCredentials)
	m.HandleFunc("DELETE /integrated-account/{id}", h.delete)
	m.HandleFunc("POST /link-token", h.withRuntime(func(rt *runtime, w http.ResponseWriter, r *http.Request) {
		rt.links.CreateLinkToken(w, r)
	}))
	webhooks := h.withRuntime(func(rt *runtime, w http.ResponseWriter, r *http.Request) {
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
	if err := h.app.authorize(r, bearerToken(r)); err != nil {
		wire.WriteErr(w, err)
		return nil
	}
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

// importRequest is the body of POST /integrated-account.
type importRequest struct {
	ID                   string         `json:"id,omitempty"`
	TenantID             string         `json:"tenant_id"`
	Integration          string         `json:"integration"`
	AuthenticationMethod account.Method `json:"authentication_method,omitempty"`
	Context              map[string]any `json:"context,omitempty"`
}

// newImport checks an import request and builds its account and creation
// change; its errors are *wire.Error (400) that say what is wrong. The
// single and bulk imports share it.
func (a *App) newImport(req importRequest, now time.Time) (*account.Account, account.Change, error) {
	if !tenantIDPattern.MatchString(req.TenantID) {
		return nil, account.Change{}, wire.Errorf(http.StatusBadRequest, "tenant_id is required: 1 to 256 of A-Z a-z 0-9 . _ : @ + -")
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

func (h *API) create(w http.ResponseWriter, r *http.Request) {
	var req importRequest
	if err := wire.DecodeJSON(r, &req); err != nil {
		wire.WriteErr(w, err)
		return
	}
	now := time.Now().UTC()
	a, c, err := h.app.newImport(req, now)
	if err != nil {
		wire.WriteErr(w, err)
		return
	}
	rt, ok := h.rt(w)
	if !ok {
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
	wire.WriteJSON(w, http.StatusCreated, a.View())
}

func (h *API) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := tokenstore.Filter{
		Status:      account.Status(q.Get("status")),
		TenantID:    q.Get("tenant_id"),
		Integration: q.Get("integration"),
		Cursor:      q.Get("next_cursor"),
	}
	if f.Status != "" && !f.Status.Valid() {
		wire.WriteError(w, http.StatusBadRequest, "status must be connecting, active or needs_reauth")
		return
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			wire.WriteError(w, http.StatusBadRequest, "limit must be a number from 1 to 1000")
			return
		}
		f.Limit = n
	}
	rt, ok := h.rt(w)
	if !ok {
		return
	}
	page, err := rt.store.ListAccounts(r.Context(), f)
	if err != nil {
		if errors.Is(err, tokenstore.ErrInvalidCursor) {
			wire.WriteError(w, http.StatusBadRequest, "next_cursor is not a cursor this API gave out")
			return
		}
		h.storeFailed(w, err, "")
		return
	}
	result := make([]account.View, 0, len(page.Accounts))
	for _, a := range page.Accounts {
		result = append(result, a.View())
	}
	var next any
	if page.NextCursor != "" {
		next = page.NextCursor
	}
	wire.WriteJSON(w, http.StatusOK, map[string]any{"result": result, "next_cursor": next})
}

func (h *API) get(w http.ResponseWriter, r *http.Request) {
	rt, ok := h.rt(w)
	if !ok {
		return
	}
	id := r.PathValue("id")
	a, err := rt.store.GetAccount(r.Context(), id)
	if err != nil {
		wire.WriteErr(w, storeError(err, id))
		return
	}
	wire.WriteJSON(w, http.StatusOK, a.View())
}

// patchRequest is the body of PATCH /integrated-account/{id}.
type patchRequest struct {
	Context map[string]any `json:"context"`
}

func (h *API) patch(w http.ResponseWriter, r *http.Request) {
	var req patchRequest
	if err := wire.DecodeJSON(r, &req); err != nil {
		wire.WriteErr(w, err)
		return
	}
	if req.Context == nil {
		wire.WriteError(w, http.StatusBadRequest, "context is required: an object whose keys are merged into the account's context")
		return
	}
	for k := range req.Context {
		if credentialKeys[k] {
			wire.WriteError(w, http.StatusBadRequest, fmt.Sprintf("context.%s is a credential: change credentials with PATCH /integrated-account/{id}/credentials", k))
			return
		}
	}
	h.update(w, r, func(a *account.Account, now time.Time) ([]string, error) {
		if a.Context == nil {
			a.Context = map[string]any{}
		}
		for k, v := range req.Context {
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
		wire.WriteJSON(w, http.StatusOK, a.View())
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
	// The deleted event carries only the id, so there is nothing to read
	// first; an unknown id is DeleteAccount's ErrNotFound, a 404.
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
	a, err := rt.store.GetAccount(r.Context(), req.ID)
	if err != nil {
		wire.WriteErr(w, storeError(err, req.ID))
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
