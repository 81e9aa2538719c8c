package console

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/refresh"
	"github.com/linkgate/linkgate/tokenstore"
)

// pageSize is the number of rows a listing shows.
const pageSize = 50

// statusOptions are the statuses in the filter, needs_reauth first: it is
// what an operator comes to the console for.
var statusOptions = []account.Status{account.StatusNeedsReauth, account.StatusActive, account.StatusConnecting}

func (c *Console) home(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, c.path("/accounts"), http.StatusSeeOther)
}

// accountsData is the Integrated Accounts page.
type accountsData struct {
	Status       string
	Integration  string
	Tenant       string
	Search       string
	Statuses     []account.Status
	Integrations []string
	Accounts     []account.View
	Next         string
	First        string
	Problem      string
	Filtered     bool
	// Reauth is how many accounts need reauthorization ("" for none).
	Reauth string
}

func (c *Console) accounts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := accountsData{
		Status:       q.Get("status"),
		Integration:  strings.TrimSpace(q.Get("integration")),
		Tenant:       strings.TrimSpace(q.Get("tenant")),
		Search:       strings.TrimSpace(q.Get("q")),
		Statuses:     statusOptions,
		Integrations: c.opts.Integrations,
	}
	d.Filtered = d.Status != "" || d.Integration != "" || d.Tenant != "" || d.Search != ""
	if d.Status != "" && !account.Status(d.Status).Valid() {
		d.Problem = "Unknown status: choose one from the list."
		c.render(w, r, http.StatusBadRequest, "accounts", "Integrated accounts", "accounts", d)
		return
	}
	if len(d.Search) > 256 || len(d.Tenant) > 256 || len(d.Integration) > 256 {
		d.Problem = "A filter is longer than 256 characters."
		c.render(w, r, http.StatusBadRequest, "accounts", "Integrated accounts", "accounts", d)
		return
	}
	cursor := q.Get("cursor")
	page, err := c.opts.Store.ListAccounts(r.Context(), tokenstore.Filter{
		Status:      account.Status(d.Status),
		TenantID:    d.Tenant,
		Integration: d.Integration,
		Search:      d.Search,
		Cursor:      cursor,
		Limit:       pageSize,
	})
	if errors.Is(err, tokenstore.ErrInvalidCursor) {
		d.Problem = "That page link is not valid any more. Start from the first page."
		d.First = c.accountsURL(d, "")
		c.render(w, r, http.StatusBadRequest, "accounts", "Integrated accounts", "accounts", d)
		return
	}
	if err != nil {
		c.storeFailed(w, r, "listing accounts", err)
		return
	}
	for _, a := range page.Accounts {
		d.Accounts = append(d.Accounts, a.View())
	}
	if d.Reauth, err = c.countReauth(r.Context()); err != nil {
		c.storeFailed(w, r, "counting accounts that need reauthorization", err)
		return
	}
	if page.NextCursor != "" {
		d.Next = c.accountsURL(d, page.NextCursor)
	}
	if cursor != "" {
		d.First = c.accountsURL(d, "")
	}
	c.render(w, r, http.StatusOK, "accounts", "Integrated accounts", "accounts", d)
}

// accountsURL is the listing with d's filters, at cursor.
func (c *Console) accountsURL(d accountsData, cursor string) string {
	v := url.Values{}
	for k, s := range map[string]string{"status": d.Status, "integration": d.Integration, "tenant": d.Tenant, "q": d.Search, "cursor": cursor} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if len(v) == 0 {
		return c.path("/accounts")
	}
	return c.path("/accounts?" + v.Encode())
}

// linkView is a connection link just created.
type linkView struct {
	URL       string
	ExpiresAt time.Time
}

// accountData is the account page.
type accountData struct {
	Account    account.View
	Linkable   bool
	Refresh    bool
	Link       *linkView
	LinkError  string
	Deliveries []deliveryRow
	MoreDeliv  string
	History    []historyItem
	// NoHistory says the store keeps no event history.
	NoHistory bool
}

func (c *Console) loadAccount(w http.ResponseWriter, r *http.Request) (*account.Account, bool) {
	id := r.PathValue("id")
	a, err := c.opts.Store.GetAccount(r.Context(), id)
	if errors.Is(err, tokenstore.ErrNotFound) {
		c.renderError(w, r, http.StatusNotFound, "There is no integrated account with that id.")
		return nil, false
	}
	if err != nil {
		c.storeFailed(w, r, "loading an account", err)
		return nil, false
	}
	return a, true
}

func (c *Console) accountPage(w http.ResponseWriter, r *http.Request) {
	a, ok := c.loadAccount(w, r)
	if !ok {
		return
	}
	c.showAccount(w, r, http.StatusOK, a, nil, "")
}

// showAccount renders the account page, with a fresh connection link when
// one was just made.
func (c *Console) showAccount(w http.ResponseWriter, r *http.Request, status int, a *account.Account, link *linkView, linkErr string) {
	d := accountData{
		Account:   a.View(),
		Linkable:  a.Method == account.MethodOAuth2 || a.Method == account.MethodAPIKey || a.Method == account.MethodBasic,
		Refresh:   c.opts.Refresh != nil && (a.Method == account.MethodOAuth2 || a.Method == account.MethodClientCredentials),
		Link:      link,
		LinkError: linkErr,
	}
	dp, err := c.opts.Store.ListDeliveries(r.Context(), tokenstore.DeliveryFilter{AccountID: a.ID, Limit: 20})
	if err != nil {
		c.storeFailed(w, r, "listing an account's deliveries", err)
		return
	}
	d.Deliveries = deliveryRows(dp.Deliveries)
	if dp.NextCursor != "" {
		d.MoreDeliv = c.path("/deliveries")
	}
	var events []tokenstore.Event
	if h, ok := c.opts.Store.(tokenstore.History); ok {
		events, err = h.AccountEvents(r.Context(), a.ID, historySize)
		if errors.Is(err, tokenstore.ErrNoHistory) {
			d.NoHistory, err = true, nil
		}
		if err != nil {
			c.storeFailed(w, r, "listing an account's events", err)
			return
		}
	} else {
		d.NoHistory = true
	}
	d.History = history(a, events, dp.Deliveries)
	c.render(w, r, status, "account", "Account "+a.ID, "accounts", d)
}

// createLink gets a connection link for the account from the link issuer,
// through the same request the API takes, and shows it once. The link is
// answered to this POST and never put in a URL or a log.
func (c *Console) createLink(w http.ResponseWriter, r *http.Request) {
	a, ok := c.loadAccount(w, r)
	if !ok {
		return
	}
	body, _ := json.Marshal(map[string]string{"integrated_account_id": a.ID})
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, "/link-token", strings.NewReader(string(body)))
	if err != nil {
		c.renderError(w, r, http.StatusInternalServerError, "The connection link could not be requested.")
		return
	}
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	c.opts.Links.CreateLinkToken(rec, req)
	res := rec.Result()
	defer res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		var eb wire.ErrorBody
		msg := "The connection link could not be created."
		if json.NewDecoder(res.Body).Decode(&eb) == nil && eb.Message != "" {
			msg += " " + eb.Message
		}
		c.log.Warn("console could not create a link token", zap.String("integrated_account_id", a.ID), zap.Int("status", res.StatusCode))
		status := res.StatusCode
		if status < 400 {
			status = http.StatusBadGateway
		}
		c.showAccount(w, r, status, a, nil, msg)
		return
	}
	var lt struct {
		URL       string    `json:"url"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.NewDecoder(res.Body).Decode(&lt); err != nil || lt.URL == "" {
		c.showAccount(w, r, http.StatusBadGateway, a, nil, "The connection link could not be read.")
		return
	}
	c.log.Info("console created a connection link", zap.String("integrated_account_id", a.ID), zap.String("user", sessionOf(r).user))
	c.showAccount(w, r, http.StatusOK, a, &linkView{URL: lt.URL, ExpiresAt: lt.ExpiresAt}, "")
}

// refresh refreshes the account's credentials now and says how it went.
func (c *Console) refresh(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if c.opts.Refresh == nil {
		c.renderError(w, r, http.StatusNotFound, "Refreshing credentials is not available here.")
		return
	}
	err := c.opts.Refresh(r.Context(), id)
	var re *refresh.Error
	var msg string
	switch {
	case err == nil:
		msg = "Credentials refreshed."
	case errors.Is(err, tokenstore.ErrNotFound):
		c.renderError(w, r, http.StatusNotFound, "There is no integrated account with that id.")
		return
	case errors.As(err, &re):
		// A classified error's code and message hold no secret.
		msg = "The refresh failed (" + re.Class.String() + ", " + re.Code + "): " + re.Message
		if re.Class == refresh.Revoked {
			msg += " This account needs reauthorization: get a connection link for the end user."
		}
	case errors.Is(err, refresh.ErrNeedsReauth):
		msg = "The provider refused the refresh: this account needs reauthorization. Get a connection link for the end user."
	default:
		c.log.Error("console refresh failed", zap.String("integrated_account_id", id), zap.Error(err))
		msg = "The refresh failed; the gateway's log has the details."
	}
	c.sessions.setFlash(sessionOf(r), msg)
	http.Redirect(w, r, c.path("/accounts/"+url.PathEscape(id)), http.StatusSeeOther)
}

// storeFailed answers a store error without its details, which go to the log.
func (c *Console) storeFailed(w http.ResponseWriter, r *http.Request, what string, err error) {
	c.log.Error("console: "+what, zap.Error(err))
	c.renderError(w, r, http.StatusServiceUnavailable, "The account store did not answer. Try again in a moment.")
}
