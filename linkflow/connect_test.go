package linkflow_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/account"
)

func TestConnectPageNamesIntegrationAndAccount(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	a, _ := h.seedAccount("alice", account.StatusNeedsReauth, nil)
	lt := h.linkToken(map[string]any{"integrated_account_id": a.ID})

	r := h.get(lt.URL)
	if r.status != http.StatusOK {
		t.Fatalf("connect page = %d: %s", r.status, r.body)
	}
	assertPageHeaders(t, r)
	for _, want := range []string{"Reconnect acme", "Your acme connection has stopped working",
		`id="connect"`, `action="` + h.public + `/connect-account"`, h.public + "/connect-account/page.js",
		`lang="en"`, `name="viewport"`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// The application's ids mean nothing to the end user and are not shown.
	for _, never := range []string{a.ID, a.TenantID, "keeps its id"} {
		if strings.Contains(r.body, never) {
			t.Errorf("the connect page shows %q", never)
		}
	}
	if strings.Contains(r.body, "<style") || strings.Contains(r.body, "style=") || strings.Contains(r.body, "onclick") {
		t.Errorf("page has inline style or script, which its CSP forbids")
	}
	// The provider's origin is a form target: the connect button's POST is
	// redirected there, and browsers check form-action on redirects.
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "form-action "+h.public+" "+h.auth.URL()) {
		t.Errorf("CSP %q does not let the form reach the provider", csp)
	}

	nw := h.linkToken(map[string]any{"tenant_id": "tenant-9", "integration": "acme"})
	r = h.get(nw.URL + "&iframe=true")
	if r.status != http.StatusOK || !strings.Contains(r.body, "Connect acme") || strings.Contains(r.body, "stopped working") || strings.Contains(r.body, "tenant-9") ||
		!strings.Contains(r.body, `class="framed"`) || !strings.Contains(r.body, `name="iframe" value="true"`) {
		t.Errorf("new-connection page in a frame = %d:\n%s", r.status, r.body)
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors "+h.public+" "+appOriginForHandlers) {
		t.Errorf("CSP %q does not let the application frame the page", csp)
	}

	// The SDK's integration option must name the link token's integration.
	if r := h.get(nw.URL + "&integration=acme"); r.status != http.StatusOK {
		t.Errorf("matching integration = %d", r.status)
	}
	r = h.get(nw.URL + "&integration=keyco")
	if r.status != http.StatusBadRequest || postedBy(t, r.body).Message["error_type"] != "invalid_integration" {
		t.Errorf("another integration = %d:\n%s", r.status, r.body)
	}
}

func TestConnectPageAssets(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for path, ctype := range map[string]string{
		"/connect-account/sdk.js":    "text/javascript",
		"/connect-account/page.js":   "text/javascript",
		"/connect-account/style.css": "text/css",
	} {
		r := h.get(h.public + path)
		if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), ctype) || len(r.body) < 100 {
			t.Errorf("%s = %d %q (%d bytes)", path, r.status, r.header.Get("Content-Type"), len(r.body))
		}
	}
	if r := h.get(h.public + "/connect-account/sdk.js"); !strings.Contains(r.body, "export function authenticate(") ||
		r.header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("sdk.js is not a module exporting authenticate loadable from any origin")
	}
	if r := h.get(h.public + "/connect-account/nope"); r.status != http.StatusNotFound {
		t.Errorf("unknown path = %d", r.status)
	}
}

func TestConnectPageRefusesBadLinkTokens(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	used := h.linkToken(map[string]any{"tenant_id": "t-used", "integration": "keyco", "redirect_uri": appOriginForHandlers + "/x"})
	if r := h.postForm(h.public+"/connect-account", url.Values{"link_token": {used.LinkToken}, "api_key": {goodAPIKey}}); r.status != http.StatusOK {
		t.Fatalf("spending the link token = %d: %s", r.status, r.body)
	}
	expired := h.linkToken(map[string]any{"tenant_id": "t-exp", "integration": "acme"})
	h.clock.Advance(7*24*time.Hour + time.Second)
	h.outbox()

	cases := []struct {
		name, url string
		status    int
		says      string
	}{
		{"unknown", h.public + "/connect-account?link_token=3f1d2c9e-0000-4000-8000-000000000000", 404, "not valid"},
		{"missing", h.public + "/connect-account", 400, "no valid link token"},
		{"expired", expired.URL, 410, "expired"},
		{"used", used.URL, 410, "already used"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := h.get(c.url)
			if r.status != c.status || !strings.Contains(r.body, c.says) {
				t.Fatalf("= %d, want %d saying %q:\n%s", r.status, c.status, c.says, r.body)
			}
			assertPageHeaders(t, r)
			p := postedBy(t, r.body)
			if p.Message["is_truto"] != true || p.Message["result"] != "error" || p.Message["error_type"] != "invalid_token" || p.Message["error"] == "" {
				t.Errorf("posted %v", p.Message)
			}
			if len(p.Targets) != 1 || p.Targets[0] != appOriginForHandlers {
				t.Errorf("posted to %v, want the allowed origin only", p.Targets)
			}
		})
	}
	// The OAuth button of an expired token starts nothing.
	r := h.postForm(h.public+"/connect-account", url.Values{"link_token": {expired.LinkToken}})
	if r.status != http.StatusGone || r.header.Get("Location") != "" {
		t.Errorf("connect with an expired token = %d to %q", r.status, r.header.Get("Location"))
	}
	if ev := h.outbox(); len(ev) != 0 {
		t.Errorf("events written: %v", ev)
	}
	if got := h.accountsOf("t-exp"); len(got) != 0 {
		t.Errorf("accounts created: %v", got)
	}
}

func TestAPIKeyConnectValidatesBeforeSaving(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	lt := h.linkToken(map[string]any{"tenant_id": "tenant-k", "integration": "keyco", "context": map[string]any{"region": "eu"},
		"redirect_uri": appOriginForHandlers + "/connected?x=1"})
	r := h.get(lt.URL)
	if r.status != http.StatusOK || !strings.Contains(r.body, `id="api_key"`) || !strings.Contains(r.body, `type="password"`) {
		t.Fatalf("API-key page = %d:\n%s", r.status, r.body)
	}

	r = h.postForm(h.public+"/connect-account", url.Values{"link_token": {lt.LinkToken}, "api_key": {"wrong-key"}})
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, "did not accept these credentials") || !strings.Contains(r.body, `id="api_key"`) {
		t.Fatalf("wrong key = %d:\n%s", r.status, r.body)
	}
	if strings.Contains(r.body, "wrong-key") {
		t.Errorf("the page echoes the refused key")
	}
	// The application hears of the refusal at once, as Truto tells it.
	if p := postedBy(t, r.body); p.Message["result"] != "error" || p.Message["error_type"] != "validation_error" ||
		len(p.Targets) != 1 || p.Targets[0] != appOriginForHandlers {
		t.Errorf("a refused key posts %+v, want an error of type validation_error to the redirect_uri origin", p)
	}
	if got := h.accountsOf("tenant-k"); len(got) != 0 || h.validations.Load() != 1 {
		t.Fatalf("after a refused key: %d accounts, %d validations", len(got), h.validations.Load())
	}
	if r := h.postForm(h.public+"/connect-account", url.Values{"link_token": {lt.LinkToken}, "api_key": {" "}}); r.status != http.StatusBadRequest ||
		!strings.Contains(r.body, "Enter the API key") {
		t.Errorf("empty key = %d", r.status)
	}
	if ev := h.outbox(); len(ev) != 0 {
		t.Fatalf("events after refused keys: %v", ev)
	}

	r = h.postForm(h.public+"/connect-account", url.Values{"link_token": {lt.LinkToken}, "api_key": {goodAPIKey}})
	if r.status != http.StatusOK || !strings.Contains(r.body, "Connection successful. You can close this tab.") {
		t.Fatalf("good key = %d:\n%s", r.status, r.body)
	}
	assertPageHeaders(t, r)
	accts := h.accountsOf("tenant-k")
	if len(accts) != 1 {
		t.Fatalf("%d accounts, want 1", len(accts))
	}
	a := h.account(accts[0].ID)
	if a.Status != account.StatusActive || a.Method != account.MethodAPIKey || a.Credentials.APIKey != goodAPIKey || a.Context["region"] != "eu" {
		t.Errorf("account = %+v", a)
	}
	p := postedBy(t, r.body)
	if p.Message["result"] != "success" || p.Message["integration"] != "keyco" || p.Message["integrated_account_id"] != a.ID || p.Message["is_truto"] != true {
		t.Errorf("posted %v", p.Message)
	}
	if len(p.Targets) != 1 || p.Targets[0] != appOriginForHandlers {
		t.Errorf("posted to %v, want the redirect_uri's origin", p.Targets)
	}
	wantRedirect := appOriginForHandlers + "/connected?integrated_account_id=" + a.ID + "&integration=keyco&result=success&x=1"
	if p.Redirect != wantRedirect {
		t.Errorf("same-window redirect = %q, want %q", p.Redirect, wantRedirect)
	}
	if ev := h.outbox(); strings.Join(ev, ",") != account.EventCreated+","+account.EventActive {
		t.Errorf("events = %v, want created, active", ev)
	}
	if h.commits.Load() != 1 {
		t.Errorf("OnCommit called %d times, want 1", h.commits.Load())
	}
	// Single use: the same link cannot connect a second account.
	r = h.postForm(h.public+"/connect-account", url.Values{"link_token": {lt.LinkToken}, "api_key": {goodAPIKey}})
	if r.status != http.StatusGone || len(h.accountsOf("tenant-k")) != 1 {
		t.Errorf("second use = %d, %d accounts", r.status, len(h.accountsOf("tenant-k")))
	}
	h.assertNotLogged(goodAPIKey, "wrong-key", lt.LinkToken)
}

func TestBasicConnectReconnectsKeepingTheAccount(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	now := time.Now().UTC()
	a := &account.Account{ID: "acct-basic", TenantID: "tenant-b", Integration: "basicco", Method: account.MethodBasic,
		Status: account.StatusNeedsReauth, Context: map[string]any{"keep": "me", "plan": "old"},
		Credentials: account.Credentials{Username: "ann", Password: "old-password"}, CreatedAt: now, UpdatedAt: now}
	if err := h.store.CreateAccount(t.Context(), a, nil); err != nil {
		t.Fatal(err)
	}
	lt := h.linkToken(map[string]any{"integrated_account_id": a.ID, "persist_previous_context": true, "context": map[string]any{"plan": "new"}})
	r := h.postForm(h.public+"/connect-account", url.Values{"link_token": {lt.LinkToken}, "username": {"ann"}, "password": {"wrong"}})
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, `value="ann"`) {
		t.Fatalf("wrong password = %d:\n%s", r.status, r.body)
	}
	if got := h.account(a.ID); got.Status != account.StatusNeedsReauth || got.Credentials.Password != "old-password" {
		t.Fatalf("a refused password changed the account: %+v", got)
	}
	r = h.postForm(h.public+"/connect-account", url.Values{"link_token": {lt.LinkToken}, "username": {"ann"}, "password": {"right-password"}})
	if r.status != http.StatusOK {
		t.Fatalf("right password = %d:\n%s", r.status, r.body)
	}
	got := h.account(a.ID)
	if got.Status != account.StatusActive || got.Credentials.Password != "right-password" || got.Context["keep"] != "me" || got.Context["plan"] != "new" {
		t.Errorf("reconnected account = %+v", got)
	}
	if ev := h.outbox(); strings.Join(ev, ",") != account.EventUpdated+","+account.EventActive {
		t.Errorf("events = %v, want updated, active", ev)
	}
}

func TestConnectFormRefusesCrossSitePosts(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	lt := h.linkToken(map[string]any{"tenant_id": "tenant-x", "integration": "keyco"})
	for _, site := range []string{"cross-site", "same-site"} {
		req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/connect-account",
			strings.NewReader(url.Values{"link_token": {lt.LinkToken}, "api_key": {goodAPIKey}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", site)
		if r := h.do(req); r.status != http.StatusForbidden {
			t.Errorf("%s post = %d, want 403", site, r.status)
		}
	}
	if len(h.accountsOf("tenant-x")) != 0 || h.validations.Load() != 0 {
		t.Fatal("a cross-site post did something")
	}
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/connect-account",
		strings.NewReader(url.Values{"link_token": {lt.LinkToken}, "api_key": {goodAPIKey}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if r := h.do(req); r.status != http.StatusOK {
		t.Errorf("same-origin post = %d", r.status)
	}
}
