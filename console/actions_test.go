package console_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

func TestNewConnectionLinkFromTheConsole(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	c := h.signedIn()
	page := c.get(h.url("/accounts/new"))
	mustContain(t, page.body, `id="n-tenant"`, `<option value="keyco">`)
	token := csrf(t, page.body)

	// A forged form (no CSRF token) makes no link.
	if r := c.do(http.MethodPost, h.url("/accounts/new"), url.Values{"tenant": {"tenant-new"}, "integration": {"acme"}}); r.status != http.StatusForbidden {
		t.Fatalf("without the CSRF token: %d", r.status)
	}
	if r := c.do(http.MethodPost, h.url("/accounts/new"), url.Values{"csrf": {token}, "tenant": {""}}); r.status != http.StatusBadRequest ||
		!strings.Contains(r.body, "Enter the tenant") {
		t.Fatalf("empty tenant: %d", r.status)
	}
	if r := c.do(http.MethodPost, h.url("/accounts/new"), url.Values{"csrf": {token}, "tenant": {"t"}, "integration": {"nope"}}); r.status != http.StatusBadRequest {
		t.Fatalf("unknown integration: %d", r.status)
	}
	if n := h.links.calls.Load(); n != 0 {
		t.Fatalf("refused forms asked for %d links", n)
	}
	r := c.do(http.MethodPost, h.url("/accounts/new"), url.Values{"csrf": {token}, "tenant": {"tenant-new"}, "integration": {"keyco"}})
	m := magicLink.FindStringSubmatch(r.body)
	if r.status != http.StatusOK || m == nil {
		t.Fatalf("creating a link: %d\n%s", r.status, r.body)
	}
	connect := h.newClient().get(strings.ReplaceAll(m[1], "&amp;", "&"))
	mustContain(t, connect.body, "Connect keyco", `id="api_key"`)
}

func TestDeleteAccountNeedsConfirmationAndCSRF(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.seed("acct-del", "tenant-d", "acme", account.StatusActive, h.clock.Now(), account.Credentials{}, nil)
	c := h.signedIn()
	page := c.get(h.url("/accounts/acct-del"))
	mustContain(t, page.body, `id="delete-account"`, `name="confirm" value="acct-del"`, "data-confirm=")
	token := csrf(t, page.body)
	exists := func() bool {
		_, err := h.store.GetAccount(context.Background(), "acct-del")
		return err == nil
	}
	if r := c.do(http.MethodPost, h.url("/accounts/acct-del/delete"), url.Values{"confirm": {"acct-del"}}); r.status != http.StatusForbidden || !exists() {
		t.Fatalf("without the CSRF token: %d, account exists %v", r.status, exists())
	}
	if r := c.do(http.MethodPost, h.url("/accounts/acct-del/delete"), url.Values{"csrf": {token}}); r.status != http.StatusSeeOther || !exists() {
		t.Fatalf("without confirmation: %d, account exists %v", r.status, exists())
	}
	mustContain(t, c.get(h.url("/accounts/acct-del")).body, "was not deleted")
	r := c.do(http.MethodPost, h.url("/accounts/acct-del/delete"), url.Values{"csrf": {token}, "confirm": {"acct-del"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/console/accounts" || exists() {
		t.Fatalf("confirmed delete: %d %s, account exists %v", r.status, r.header.Get("Location"), exists())
	}
	mustContain(t, c.get(h.url("/accounts")).body, "acct-del (acme, tenant tenant-d) was deleted")
	if h.notified.Load() == 0 {
		t.Error("the dispatcher was not woken for the deleted event")
	}
	evs, err := h.store.FanOut(context.Background(), 10, func(tokenstore.Event) []string { return nil })
	if err != nil || len(evs) != 1 || evs[0].Name != account.EventDeleted || evs[0].AccountID != "acct-del" {
		t.Fatalf("events after the delete: %+v, %v", evs, err)
	}
}

func TestWebhookEndpointsTestAndEnable(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	c := h.signedIn()
	page := c.get(h.url("/webhooks"))
	if page.status != http.StatusOK {
		t.Fatalf("webhooks page: %d", page.status)
	}
	mustContain(t, page.body, h.good, h.broken, ">enabled<", ">disabled<", "answered 410 Gone", `id="test-all"`)
	token := csrf(t, page.body)

	r := c.do(http.MethodPost, h.url("/webhooks/test"), url.Values{"csrf": {token}})
	if r.status != http.StatusOK {
		t.Fatalf("test event: %d\n%s", r.status, r.body)
	}
	mustContain(t, r.body, `id="test-summary"`, "Not every endpoint accepted", "HTTP 204", "HTTP 500")

	if r := c.do(http.MethodPost, h.url("/webhooks/nope/enable"), url.Values{"csrf": {token}}); r.status != http.StatusNotFound {
		t.Fatalf("enabling an unknown endpoint: %d", r.status)
	}
	// Find the broken endpoint's id from its row.
	i := strings.Index(page.body, h.broken)
	j := strings.LastIndex(page.body[:i], `data-endpoint="`)
	id := page.body[j+len(`data-endpoint="`):]
	id = id[:strings.IndexByte(id, '"')]
	if r := c.do(http.MethodPost, h.url("/webhooks/"+id+"/enable"), url.Values{}); r.status != http.StatusForbidden {
		t.Fatalf("enabling without the CSRF token: %d", r.status)
	}
	if off, _ := h.store.DisabledEndpoints(context.Background()); len(off) != 1 {
		t.Fatalf("a forged form enabled the endpoint: %v", off)
	}
	if r := c.do(http.MethodPost, h.url("/webhooks/"+id+"/enable"), url.Values{"csrf": {token}}); r.status != http.StatusSeeOther {
		t.Fatalf("enabling: %d\n%s", r.status, r.body)
	}
	if off, err := h.store.DisabledEndpoints(context.Background()); err != nil || len(off) != 0 {
		t.Fatalf("disabled endpoints after enabling: %v, %v", off, err)
	}
	mustContain(t, c.get(h.url("/webhooks")).body, "The endpoint is enabled")
}

func TestTenantLinksForAccountsThatNeedReauth(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	now := h.clock.Now()
	h.seed("acct-r1", "tenant-r", "acme", account.StatusNeedsReauth, now, account.Credentials{}, nil)
	h.seed("acct-r2", "tenant-r", "keyco", account.StatusNeedsReauth, now.Add(time.Second), account.Credentials{}, nil)
	h.seed("acct-r3", "tenant-r", "acme", account.StatusActive, now, account.Credentials{}, nil)
	h.seed("acct-o1", "tenant-other", "acme", account.StatusNeedsReauth, now, account.Credentials{}, nil)
	c := h.signedIn()
	list := c.get(h.url("/accounts?tenant=tenant-r"))
	mustContain(t, list.body, `id="tenant-links"`, `<span class="count">3</span> need reauthorization`)
	r := c.do(http.MethodPost, h.url("/tenant-links"), url.Values{"csrf": {csrf(t, list.body)}, "tenant": {"tenant-r"}})
	if r.status != http.StatusOK {
		t.Fatalf("tenant links: %d\n%s", r.status, r.body)
	}
	if n := h.links.calls.Load(); n != 2 {
		t.Fatalf("%d links made, want one per needs_reauth account of the tenant", n)
	}
	mustContain(t, r.body, `id="all-links"`, `id="copy-all"`, "acme\tacct-r1\t"+h.srv.URL+"/connect-account?link_token=",
		"keyco\tacct-r2\t"+h.srv.URL+"/connect-account?link_token=")
	mustNotContain(t, r.body, "acct-r3", "acct-o1")
	if r := c.do(http.MethodPost, h.url("/tenant-links"), url.Values{"tenant": {"tenant-r"}}); r.status != http.StatusForbidden || h.links.calls.Load() != 2 {
		t.Fatalf("tenant links without the CSRF token: %d", r.status)
	}
}

func TestAccountHistory(t *testing.T) {
	h := newHarness(t, harnessOptions{realClock: true})
	target := seedDemo(t, h)
	c := h.signedIn()
	page := c.get(h.url("/accounts/" + target))
	i := strings.Index(page.body, `id="history"`)
	if i < 0 {
		t.Fatalf("no history on the account page:\n%s", page.body)
	}
	hist := page.body[i:]
	hist = hist[:strings.Index(hist, "</ol>")]
	for _, want := range []string{"Needs reauthorization", "invalid_grant: the provider refused the refresh token",
		"Webhook integrated_account:authentication_error failed", "answered HTTP 503 (8 tries)", "Account created"} {
		if !strings.Contains(hist, want) {
			t.Errorf("history lacks %q:\n%s", want, hist)
		}
	}
	// Newest first: the failure's delivery after the failure itself.
	if strings.Index(hist, "Webhook integrated_account:authentication_error") > strings.Index(hist, "Account created") {
		t.Errorf("history is not newest first:\n%s", hist)
	}
}
