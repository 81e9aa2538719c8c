package linkgate

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/tokenstore"
)

// bulkDeleteRequest is the body of POST /integrated-account/bulk-delete
// (Truto's): the filters of a listing, as an object or as a string holding
// one (Truto's own example sends a string), and dry_run.
type bulkDeleteRequest struct {
	Query  json.RawMessage `json:"query"`
	DryRun bool            `json:"dry_run"`
}

// bulkDeleteResult is its answer: Truto's success, and what linkgate did.
// Truto deletes in a batch job and reports through batch_job webhooks;
// linkgate deletes before it answers, each account with its own
// integrated_account:deleted event, and says which.
type bulkDeleteResult struct {
	Success bool     `json:"success"`
	DryRun  bool     `json:"dry_run"`
	Count   int      `json:"count"`
	IDs     []string `json:"ids"`
	// HasMore: the query matches more accounts than one request deletes
	// (maxBulkDelete); send it again for the next ones.
	HasMore bool `json:"has_more"`
}

// bulkDelete deletes the accounts a query matches, at most maxBulkDelete a
// request; a query must filter on something, so that a mistyped body
// cannot empty the store.
func (h *API) bulkDelete(w http.ResponseWriter, r *http.Request) {
	release, ok := h.bulkTurn(w)
	if !ok {
		return
	}
	defer release()
	var req bulkDeleteRequest
	if err := wire.DecodeJSON(r, &req); err != nil {
		wire.WriteErr(w, err)
		return
	}
	obj, err := bulkQuery(req.Query)
	if err != nil {
		wire.WriteErr(w, err)
		return
	}
	vals, err := queryValues(obj)
	if err != nil {
		wire.WriteErr(w, err)
		return
	}
	rt, ok := h.rt(w)
	if !ok {
		return
	}
	q, err := parseAccountQuery(vals, rt.env, callerOf(r.Context()))
	if err != nil {
		wire.WriteErr(w, err)
		return
	}
	q.limit = maxListLimit
	res := bulkDeleteResult{Success: true, DryRun: req.DryRun, IDs: []string{}}
pages:
	for {
		page, err := q.page(r.Context(), rt.store)
		if err != nil {
			h.storeFailed(w, err, "")
			return
		}
		for _, a := range page.Accounts {
			if len(res.IDs) == maxBulkDelete {
				res.HasMore = true
				break pages
			}
			if !req.DryRun {
				gone := tokenstore.NewEvent(account.EventDeleted, &account.Account{ID: a.ID}, time.Now().UTC())
				err := rt.store.DeleteAccount(r.Context(), a.ID, []tokenstore.Event{gone})
				if errors.Is(err, tokenstore.ErrNotFound) {
					continue // deleted meanwhile
				}
				if err != nil {
					h.storeFailed(w, err, a.ID)
					return
				}
			}
			res.IDs = append(res.IDs, a.ID)
		}
		if page.NextCursor == "" {
			break
		}
		q.filter.Cursor = page.NextCursor
	}
	res.Count = len(res.IDs)
	if !req.DryRun && res.Count > 0 {
		rt.dispatcher.Notify()
		h.logger.Info("accounts deleted in bulk", zap.Int("count", res.Count))
	}
	wire.WriteJSON(w, http.StatusOK, res)
}

// bulkQuery reads the query of a bulk delete: an object, or a string that
// holds one. It must hold at least one filter.
func bulkQuery(raw json.RawMessage) (map[string]any, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, wire.Errorf(http.StatusBadRequest, "query is required: the filters of the accounts to delete, e.g. {\"tenant_id\": \"acme-1\"}")
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		raw = json.RawMessage(s)
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, wire.Errorf(http.StatusBadRequest, "query must be an object of filters (or a string holding one)")
	}
	if len(obj) == 0 {
		return nil, wire.Errorf(http.StatusBadRequest, "query has no filter: deleting every account at once is refused; filter on tenant_id, status, integration.name, …")
	}
	return obj, nil
}

// accountTokenRequest is the body of POST /integrated-account/token.
type accountTokenRequest struct {
	IntegratedAccountID string `json:"integrated_account_id"`
}

// accountTokenResponse is its answer: Truto's integrated_account_token,
// and when it expires.
type accountTokenResponse struct {
	IntegratedAccountToken string    `json:"integrated_account_token"`
	ExpiresAt              wire.Time `json:"expires_at"`
}

// accountToken issues a token that authorizes the proxied calls of one
// account for 15 minutes, for a front end or a worker that should reach
// that account and nothing else.
func (h *API) accountToken(w http.ResponseWriter, r *http.Request) {
	var req accountTokenRequest
	if err := wire.DecodeJSON(r, &req); err != nil {
		wire.WriteErr(w, err)
		return
	}
	if req.IntegratedAccountID == "" {
		wire.WriteError(w, http.StatusBadRequest, "integrated_account_id is required")
		return
	}
	rt, ok := h.rt(w)
	if !ok {
		return
	}
	a, err := h.load(r, rt, req.IntegratedAccountID)
	if err != nil {
		wire.WriteErr(w, err)
		return
	}
	tok, exp := rt.tokens.issue(a.ID)
	h.logger.Info("integrated account token issued", zap.String("integrated_account_id", a.ID), zap.Time("expires_at", exp))
	wire.WriteJSON(w, http.StatusCreated, accountTokenResponse{IntegratedAccountToken: tok, ExpiresAt: wire.Time(exp)})
}
