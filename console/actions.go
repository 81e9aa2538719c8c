package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/tokenstore"
)

// maxTenantLinks bounds the connection links one click makes for a
// tenant's accounts that need reauthorization.
const maxTenantLinks = 200

// reauthCountCap is where the needs_reauth count on the list stops
// counting: past it the list says "999+".
const reauthCountCap = 999

// callJSON calls an in-process API handler (the link issuer, the webhook
// API) with the same JSON request the HTTP API takes, so that the console
// and the API share one code path, and decodes a 2xx answer into out.
func callJSON(ctx context.Context, h func(http.ResponseWriter, *http.Request), method, path string, body any, out any) (int, string) {
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequestWithContext(ctx, method, path, rd)
	if err != nil {
		return http.StatusInternalServerError, "the request could not be made"
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	h(rec, req)
	res := rec.Result()
	defer res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode > 299 {
		var eb wire.ErrorBody
		if json.NewDecoder(res.Body).Decode(&eb) == nil && eb.Message != "" {
			return res.StatusCode, eb.Message
		}
		return res.StatusCode, http.StatusText(res.StatusCode)
	}
	if out != nil {
		if err := json.NewDecoder(res.Body).Decode(out); err != nil {
			return http.StatusBadGateway, "the answer could not be read"
		}
	}
	return res.StatusCode, ""
}

// issuedLink is a link token as the link issuer answers it.
type issuedLink struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}

// countReauth counts the accounts that need reauthorization, up to
// reauthCountCap, for the quick filter on the list.
func (c *Console) countReauth(ctx context.Context) (string, error) {
	n, cursor := 0, ""
	for {
		p, err := c.opts.Store.ListAccounts(ctx, tokenstore.Filter{Status: account.StatusNeedsReauth, Cursor: cursor, Limit: reauthCountCap + 1 - n})
		if err != nil {
			return "", err
		}
		n += len(p.Accounts)
		if n > reauthCountCap {
			return strconv.Itoa(reauthCountCap) + "+", nil
		}
		if p.NextCursor == "" || len(p.Accounts) == 0 {
			if n == 0 {
				return "", nil
			}
			return strconv.Itoa(n), nil
		}
		cursor = p.NextCursor
	}
}

// newLinkData is the page that makes a connection link for a new
// connection.
type newLinkData struct {
	Tenant       string
	Integration  string
	Integrations []string
	Link         *linkView
	Problem      string
}

func (c *Console) newLinkPage(w http.ResponseWriter, r *http.Request) {
	d := newLinkData{Integrations: c.opts.Integrations, Tenant: strings.TrimSpace(r.URL.Query().Get("tenant"))}
	if len(d.Tenant) > 256 {
		d.Tenant = ""
	}
	c.render(w, r, http.StatusOK, "newlink", "New connection link", "accounts", d)
}

// createNewLink asks the link issuer for a link token for a new connection
// of tenant to integration (empty: the end user picks) and shows the link
// once, answered to this POST and never put in a URL or a log.
func (c *Console) createNewLink(w http.ResponseWriter, r *http.Request) {
	d := newLinkData{
		Integrations: c.opts.Integrations,
		Tenant:       strings.TrimSpace(r.PostForm.Get("tenant")),
		Integration:  strings.TrimSpace(r.PostForm.Get("integration")),
	}
	switch {
	case d.Tenant == "":
		d.Problem = "Enter the tenant: your application's id for the customer who connects."
	case len(d.Tenant) > 256:
		d.Problem = "The tenant is longer than 256 characters."
	case d.Integration != "" && len(c.opts.Integrations) > 0 && !slices.Contains(c.opts.Integrations, d.Integration):
		d.Problem = "Unknown integration: choose one from the list."
	}
	if d.Problem != "" {
		c.render(w, r, http.StatusBadRequest, "newlink", "New connection link", "accounts", d)
		return
	}
	body := map[string]string{"tenant_id": d.Tenant}
	if d.Integration != "" {
		body["integration"] = d.Integration
	}
	var lt issuedLink
	status, msg := callJSON(r.Context(), c.opts.Links.CreateLinkToken, http.MethodPost, "/link-token", body, &lt)
	if msg != "" || lt.URL == "" {
		if status < 400 {
			status = http.StatusBadGateway
		}
		d.Problem = "The connection link could not be created. " + msg
		c.render(w, r, status, "newlink", "New connection link", "accounts", d)
		return
	}
	c.log.Info("console created a connection link for a new connection", zap.String("tenant_id", d.Tenant),
		zap.String("integration", d.Integration), zap.String("user", sessionOf(r).user))
	d.Link = &linkView{URL: lt.URL, ExpiresAt: lt.ExpiresAt}
	c.render(w, r, http.StatusOK, "newlink", "New connection link", "accounts", d)
}

// deleteAccount deletes an account, with its deleted event, once the
// operator has confirmed: the form's confirm box (the dialog asks again
// when the script runs).
func (c *Console) deleteAccount(w http.ResponseWriter, r *http.Request) {
	a, ok := c.loadAccount(w, r)
	if !ok {
		return
	}
	if r.PostForm.Get("confirm") != a.ID {
		c.sessions.setFlash(sessionOf(r), "The account was not deleted: tick the box that confirms it first.")
		http.Redirect(w, r, c.path("/accounts/"+url.PathEscape(a.ID)), http.StatusSeeOther)
		return
	}
	gone := tokenstore.NewEvent(account.EventDeleted, &account.Account{ID: a.ID}, c.opts.Now().UTC())
	err := c.opts.Store.DeleteAccount(r.Context(), a.ID, []tokenstore.Event{gone})
	if errors.Is(err, tokenstore.ErrNotFound) {
		c.renderError(w, r, http.StatusNotFound, "There is no integrated account with that id.")
		return
	}
	if err != nil {
		c.storeFailed(w, r, "deleting an account", err)
		return
	}
	c.notify()
	c.log.Info("console deleted an account", zap.String("integrated_account_id", a.ID), zap.String("user", sessionOf(r).user))
	c.sessions.setFlash(sessionOf(r), "Account "+a.ID+" ("+a.Integration+", tenant "+a.TenantID+") was deleted.")
	http.Redirect(w, r, c.path("/accounts"), http.StatusSeeOther)
}

// notify wakes the webhook dispatcher after events were written.
func (c *Console) notify() {
	if c.opts.Notify != nil {
		c.opts.Notify()
	}
}

// tenantLink is one connection link of a tenant's account.
type tenantLink struct {
	AccountID   string
	Integration string
	URL         string
	Error       string
}

// tenantLinksData is the page of a tenant's connection links.
type tenantLinksData struct {
	Tenant    string
	Links     []tenantLink
	All       string
	Truncated bool
	ExpiresAt time.Time
}

// tenantLinks makes a connection link for every account of a tenant that
// needs reauthorization, so that the operator can send them all at once.
func (c *Console) tenantLinks(w http.ResponseWriter, r *http.Request) {
	tenant := strings.TrimSpace(r.PostForm.Get("tenant"))
	if tenant == "" || len(tenant) > 256 {
		c.renderError(w, r, http.StatusBadRequest, "Name the tenant whose links to make.")
		return
	}
	d := tenantLinksData{Tenant: tenant}
	var accounts []*account.Account
	cursor := ""
	for len(accounts) <= maxTenantLinks {
		p, err := c.opts.Store.ListAccounts(r.Context(), tokenstore.Filter{Status: account.StatusNeedsReauth, TenantID: tenant, Cursor: cursor, Limit: maxTenantLinks + 1})
		if err != nil {
			c.storeFailed(w, r, "listing a tenant's accounts", err)
			return
		}
		accounts = append(accounts, p.Accounts...)
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	if len(accounts) > maxTenantLinks {
		accounts, d.Truncated = accounts[:maxTenantLinks], true
	}
	var all []string
	for _, a := range accounts {
		if a.Method == account.MethodClientCredentials {
			continue
		}
		var lt issuedLink
		_, msg := callJSON(r.Context(), c.opts.Links.CreateLinkToken, http.MethodPost, "/link-token", map[string]string{"integrated_account_id": a.ID}, &lt)
		row := tenantLink{AccountID: a.ID, Integration: a.Integration, URL: lt.URL, Error: msg}
		if msg == "" && lt.URL != "" {
			all = append(all, a.Integration+"\t"+a.ID+"\t"+lt.URL)
			if d.ExpiresAt.IsZero() || lt.ExpiresAt.Before(d.ExpiresAt) {
				d.ExpiresAt = lt.ExpiresAt
			}
		} else if row.Error == "" {
			row.Error = "the link could not be read"
		}
		d.Links = append(d.Links, row)
	}
	d.All = strings.Join(all, "\n")
	c.log.Info("console created connection links for a tenant's accounts", zap.String("tenant_id", tenant),
		zap.Int("links", len(all)), zap.String("user", sessionOf(r).user))
	c.render(w, r, http.StatusOK, "tenantlinks", "Connection links for "+tenant, "accounts", d)
}

// endpointRow is a webhook endpoint as the console shows it.
type endpointRow struct {
	wire.Webhook
	Result *wire.WebhookTestTarget
}

// webhooksData is the webhook endpoints page.
type webhooksData struct {
	Endpoints []endpointRow
	Tested    bool
	TestOK    bool
	Problem   string
}

func (c *Console) webhooks(w http.ResponseWriter, r *http.Request) {
	c.showWebhooks(w, r, http.StatusOK, nil)
}

// showWebhooks lists the endpoints with their state, and the answers of a
// test event just sent when there is one.
func (c *Console) showWebhooks(w http.ResponseWriter, r *http.Request, status int, test *wire.WebhookTestResult) {
	d := webhooksData{}
	if c.opts.Webhooks == nil {
		d.Problem = "Webhook endpoints are not available here."
		c.render(w, r, status, "webhooks", "Webhook endpoints", "webhooks", d)
		return
	}
	var list struct {
		Result []wire.Webhook `json:"result"`
	}
	if code, msg := callJSON(r.Context(), c.opts.Webhooks.ServeHTTP, http.MethodGet, "/webhook", nil, &list); msg != "" {
		c.log.Warn("console could not list webhook endpoints", zap.Int("status", code), zap.String("error", msg))
		d.Problem = "The webhook endpoints could not be read: " + msg
		c.render(w, r, http.StatusServiceUnavailable, "webhooks", "Webhook endpoints", "webhooks", d)
		return
	}
	for _, ep := range list.Result {
		row := endpointRow{Webhook: ep}
		if test != nil {
			for i := range test.Results {
				if test.Results[i].ID == ep.ID {
					row.Result = &test.Results[i]
				}
			}
		}
		d.Endpoints = append(d.Endpoints, row)
	}
	if test != nil {
		d.Tested, d.TestOK = true, test.Success
	}
	c.render(w, r, status, "webhooks", "Webhook endpoints", "webhooks", d)
}

// testWebhooks sends a test event to one endpoint (the form's id) or to
// every one, and shows what each answered.
func (c *Console) testWebhooks(w http.ResponseWriter, r *http.Request) {
	if c.opts.Webhooks == nil {
		c.renderError(w, r, http.StatusNotFound, "Webhook endpoints are not available here.")
		return
	}
	var body any = map[string]any{}
	if id := r.PostForm.Get("id"); id != "" {
		body = map[string]string{"id": id}
	}
	var res wire.WebhookTestResult
	if code, msg := callJSON(r.Context(), c.opts.Webhooks.ServeHTTP, http.MethodPost, "/webhook/test", body, &res); msg != "" {
		if code < 400 {
			code = http.StatusBadGateway
		}
		c.renderError(w, r, code, "The test event could not be sent: "+msg)
		return
	}
	c.log.Info("console sent a test event", zap.String("event_id", res.EventID), zap.Bool("success", res.Success), zap.String("user", sessionOf(r).user))
	c.showWebhooks(w, r, http.StatusOK, &res)
}

// enableWebhook enables an endpoint that was disabled (it answered 410).
func (c *Console) enableWebhook(w http.ResponseWriter, r *http.Request) {
	if c.opts.Webhooks == nil {
		c.renderError(w, r, http.StatusNotFound, "Webhook endpoints are not available here.")
		return
	}
	id := r.PathValue("id")
	code, msg := callJSON(r.Context(), c.opts.Webhooks.ServeHTTP, http.MethodPost, "/webhook/"+url.PathEscape(id)+"/enable", map[string]any{}, nil)
	if msg != "" {
		if code < 400 {
			code = http.StatusBadGateway
		}
		c.renderError(w, r, code, "The endpoint could not be enabled: "+msg)
		return
	}
	c.log.Info("console enabled a webhook endpoint", zap.String("webhook_id", id), zap.String("user", sessionOf(r).user))
	c.sessions.setFlash(sessionOf(r), "The endpoint is enabled: its pending deliveries are sent again.")
	http.Redirect(w, r, c.path("/webhooks"), http.StatusSeeOther)
}
