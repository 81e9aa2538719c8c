package webhook

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/tokenstore"
)

// NewAPI serves the webhook routes of the accounts API to a caller the glue
// has already authenticated:
//
//	POST /webhook/test                         send a test event to {"id"}'s endpoint
//	                                           (or every one) now, and say how each answered
//	GET  /webhook                              the configured endpoints as Truto's webhook
//	                                           objects, never their secrets
//	GET  /webhook/{id}                         one endpoint
//	POST /webhook/{id}/enable                  enable an endpoint disabled by a 410
//	GET  /webhook-delivery                     the delivery log (status, event,
//	                                           integrated_account_id, next_cursor, limit)
//	GET  /webhook-delivery/{id}                one delivery
//	POST /webhook-delivery/{id}/redeliver      send a delivery again, same webhook-id
//
// Any other path under these answers a JSON 404.
func NewAPI(store tokenstore.Store, d *Dispatcher) http.Handler {
	a := &api{store: store, d: d, mux: http.NewServeMux()}
	a.mux.HandleFunc("/webhook", a.method(http.MethodGet, a.listEndpoints))
	a.mux.HandleFunc("/webhook/test", a.method(http.MethodPost, a.test))
	a.mux.HandleFunc("/webhook/{id}", a.method(http.MethodGet, a.getEndpoint))
	a.mux.HandleFunc("/webhook/{id}/enable", a.method(http.MethodPost, a.enable))
	a.mux.HandleFunc("/webhook-delivery", a.method(http.MethodGet, a.listDeliveries))
	a.mux.HandleFunc("/webhook-delivery/{id}", a.method(http.MethodGet, a.getDelivery))
	a.mux.HandleFunc("/webhook-delivery/{id}/redeliver", a.method(http.MethodPost, a.redeliver))
	return a
}

type api struct {
	store tokenstore.Store
	d     *Dispatcher
	mux   *http.ServeMux
}

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := a.mux.Handler(r); pattern == "" {
		wire.WriteError(w, http.StatusNotFound, "no such route: "+r.URL.Path)
		return
	}
	a.mux.ServeHTTP(w, r)
}

func (a *api) method(m string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != m {
			w.Header().Set("Allow", m)
			msg := r.URL.Path + " accepts " + m + " only"
			if strings.HasPrefix(r.URL.Path, "/webhook") && !strings.HasPrefix(r.URL.Path, "/webhook-delivery") {
				msg += ": webhook endpoints are configured in the integrated_accounts app (webhook <url> {…}), not through the API"
			}
			wire.WriteError(w, http.StatusMethodNotAllowed, msg)
			return
		}
		h(w, r)
	}
}

func (a *api) now() time.Time {
	if a.d != nil {
		return a.d.opts.Now()
	}
	return time.Now()
}

func (a *api) notify() {
	if a.d != nil {
		a.d.Notify()
	}
}

// environment is the dispatcher's environment, or an empty one.
func (a *api) environment() *wire.Environment {
	if a.d != nil && a.d.opts.Environment != nil {
		return a.d.opts.Environment
	}
	env := &wire.Environment{}
	if a.d != nil {
		env.ID = a.d.opts.EnvironmentID
	}
	return env
}

// webhookObject is ep as Truto's webhook object.
func (a *api) webhookObject(ep Endpoint, disabled map[string]string) wire.Webhook {
	env := a.environment()
	reason, off := disabled[ep.URL]
	return wire.Webhook{
		ID:             ep.WebhookID(),
		TargetURL:      redactURL(ep.URL),
		IsActive:       !off,
		EnvironmentID:  env.ID,
		EventTypes:     eventTypes(ep),
		CreatedAt:      wire.Time(env.CreatedAt),
		UpdatedAt:      wire.Time(env.CreatedAt),
		DisabledReason: reason,
	}
}

func (a *api) listEndpoints(w http.ResponseWriter, r *http.Request) {
	disabled, err := a.store.DisabledEndpoints(r.Context())
	if err != nil {
		wire.WriteError(w, http.StatusServiceUnavailable, "reading the disabled endpoints failed; try again")
		return
	}
	out := []wire.Webhook{}
	if a.d != nil {
		for _, ep := range a.d.endpoints {
			out = append(out, a.webhookObject(ep, disabled))
		}
	}
	wire.WriteJSON(w, http.StatusOK, map[string]any{"result": out, "next_cursor": nil, "limit": len(out)})
}

func (a *api) getEndpoint(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if a.d != nil {
		for _, ep := range a.d.endpoints {
			if ep.WebhookID() != id {
				continue
			}
			disabled, err := a.store.DisabledEndpoints(r.Context())
			if err != nil {
				wire.WriteError(w, http.StatusServiceUnavailable, "reading the disabled endpoints failed; try again")
				return
			}
			wire.WriteJSON(w, http.StatusOK, a.webhookObject(ep, disabled))
			return
		}
	}
	wire.WriteError(w, http.StatusNotFound, "no webhook endpoint with id "+strconv.Quote(id))
}

// test sends a test event at once to the endpoint the body names (Truto's
// {"id"}), or to every endpoint when the body is empty or names none,
// regardless of the endpoints' event filters, and answers with what each
// endpoint answered: success is true only when every one answered 2xx.
func (a *api) test(w http.ResponseWriter, r *http.Request) {
	var req wire.WebhookTestRequest
	if r.ContentLength != 0 {
		if err := wire.DecodeJSON(r, &req); err != nil {
			var we *wire.Error
			if !errors.As(err, &we) || !strings.Contains(we.Message, "body is empty") {
				wire.WriteErr(w, err)
				return
			}
		}
	}
	id := ""
	if req.ID != nil {
		id = *req.ID
		if id == "" {
			wire.WriteError(w, http.StatusBadRequest, "id must name a webhook endpoint (GET /webhook lists them); leave it out to test every endpoint")
			return
		}
	}
	if a.d == nil {
		wire.WriteError(w, http.StatusNotFound, "no webhook endpoint is configured")
		return
	}
	res, err := a.d.SendTest(r.Context(), id)
	if errors.Is(err, ErrNoEndpoint) {
		wire.WriteError(w, http.StatusNotFound, "no webhook endpoint with id "+strconv.Quote(id))
		return
	}
	if err != nil {
		wire.WriteError(w, http.StatusServiceUnavailable, "sending the test event failed; try again")
		return
	}
	wire.WriteJSON(w, http.StatusOK, res)
}

func (a *api) enable(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var ep *Endpoint
	if a.d != nil {
		for i := range a.d.endpoints {
			if a.d.endpoints[i].WebhookID() == id {
				ep = &a.d.endpoints[i]
			}
		}
	}
	if ep == nil {
		wire.WriteError(w, http.StatusNotFound, "no webhook endpoint with id "+strconv.Quote(id))
		return
	}
	if err := a.store.EnableEndpoint(r.Context(), ep.URL); err != nil && !errors.Is(err, tokenstore.ErrNotFound) {
		wire.WriteError(w, http.StatusServiceUnavailable, "enabling the endpoint failed; try again")
		return
	}
	if a.d != nil {
		a.d.refreshDisabled(r.Context(), a.now(), true)
	}
	a.notify()
	wire.WriteJSON(w, http.StatusOK, map[string]any{"success": true})
}

// DeliveryView is a delivery as the API shows it.
type DeliveryView struct {
	ID                  string  `json:"id"`
	EventID             string  `json:"event_id"`
	Event               string  `json:"event"`
	IntegratedAccountID string  `json:"integrated_account_id,omitempty"`
	Endpoint            string  `json:"endpoint"`
	Status              string  `json:"status"`
	Attempts            int     `json:"attempts"`
	NextAttemptAt       *string `json:"next_attempt_at"`
	LastStatus          int     `json:"last_status"`
	LastError           string  `json:"last_error"`
	CreatedAt           string  `json:"created_at"`
	UpdatedAt           string  `json:"updated_at"`
}

// NewDeliveryView returns the API form of dl.
func NewDeliveryView(dl tokenstore.Delivery) DeliveryView {
	v := DeliveryView{
		ID:                  dl.ID,
		EventID:             dl.Event.ID,
		Event:               dl.Event.Name,
		IntegratedAccountID: dl.Event.AccountID,
		Endpoint:            redactURL(dl.Endpoint),
		Status:              string(dl.Status),
		Attempts:            dl.Attempts,
		LastStatus:          dl.LastStatus,
		LastError:           dl.LastError,
		CreatedAt:           formatTime(dl.CreatedAt),
		UpdatedAt:           formatTime(dl.UpdatedAt),
	}
	if dl.Status == tokenstore.DeliveryPending && !dl.NextAttemptAt.IsZero() {
		s := formatTime(dl.NextAttemptAt)
		v.NextAttemptAt = &s
	}
	return v
}

func (a *api) listDeliveries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := tokenstore.DeliveryFilter{
		Status:    tokenstore.DeliveryStatus(q.Get("status")),
		Event:     q.Get("event"),
		AccountID: q.Get("integrated_account_id"),
		Cursor:    q.Get("next_cursor"),
	}
	switch f.Status {
	case "", tokenstore.DeliveryPending, tokenstore.DeliveryDelivered, tokenstore.DeliveryFailed, tokenstore.DeliveryRetrying:
	default:
		wire.WriteError(w, http.StatusBadRequest, "status must be pending, retrying, delivered or failed")
		return
	}
	if f.Event != "" && !slices.Contains(account.Events, f.Event) {
		wire.WriteError(w, http.StatusBadRequest, "event "+strconv.Quote(f.Event)+" is not a known event")
		return
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			wire.WriteError(w, http.StatusBadRequest, "limit must be a number from 1 to 1000")
			return
		}
		f.Limit = n
	}
	page, err := a.store.ListDeliveries(r.Context(), f)
	if err != nil {
		if f.Cursor != "" {
			wire.WriteError(w, http.StatusBadRequest, "next_cursor is not one this API returned, or the listing failed")
			return
		}
		wire.WriteError(w, http.StatusServiceUnavailable, "listing deliveries failed; try again")
		return
	}
	out := make([]DeliveryView, 0, len(page.Deliveries))
	for _, dl := range page.Deliveries {
		out = append(out, NewDeliveryView(dl))
	}
	var next any
	if page.NextCursor != "" {
		next = page.NextCursor
	}
	wire.WriteJSON(w, http.StatusOK, map[string]any{"result": out, "next_cursor": next})
}

func (a *api) getDelivery(w http.ResponseWriter, r *http.Request) {
	dl, err := a.store.GetDelivery(r.Context(), r.PathValue("id"))
	if err != nil {
		a.storeErr(w, err, r.PathValue("id"))
		return
	}
	wire.WriteJSON(w, http.StatusOK, NewDeliveryView(*dl))
}

func (a *api) redeliver(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := a.store.Redeliver(r.Context(), id, a.now()); err != nil {
		a.storeErr(w, err, id)
		return
	}
	a.notify()
	wire.WriteJSON(w, http.StatusOK, map[string]any{"success": true})
}

func (a *api) storeErr(w http.ResponseWriter, err error, id string) {
	if errors.Is(err, tokenstore.ErrNotFound) {
		wire.WriteError(w, http.StatusNotFound, "no webhook delivery with id "+strconv.Quote(id))
		return
	}
	wire.WriteError(w, http.StatusServiceUnavailable, "the store failed; try again")
}

var _ http.Handler = (*api)(nil)
