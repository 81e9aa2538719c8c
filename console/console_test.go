package console_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/console"
	"github.com/linkgate/linkgate/tokenstore"
)

func TestEveryPageNeedsASession(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.seed("acct-secret-1", "tenant-x", "acme", account.StatusNeedsReauth, h.clock.Now(), account.Credentials{}, nil)
	c := h.newClient()
	for _, p := range []string{"", "/", "/accounts", "/accounts?status=needs_reauth", "/accounts/acct-secret-1", "/deliveries", "/no-such-page"} {
		r := c.get(h.url(p))
		if r.status != http.StatusSeeOther || r.header.Get("Location") != "/console/login" {
			t.Fatalf("GET %q without a session: %d → %q; want 303 to /console/login", p, r.status, r.header.Get("Location"))
		}
		mustNotContain(t, r.body, "acct-secret-1", "tenant-x")
	}
	r := c.do(http.MethodPost, h.url("/accounts/acct-secret-1/link"), url.Values{"csrf": {"anything"}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("POST without a session: %d; want 303 to the login page", r.status)
	}
	if n := h.links.calls.Load(); n != 0 {
		t.Fatalf("a POST without a session asked for %d link tokens", n)
	}
}

func TestWrongTokenIsRefused(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	c := h.newClient()
	r := c.login("", "not-the-api-token")
	if r.status != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d; want 401", r.status)
	}
	mustContain(t, r.body, "That API token is not valid.")
	mustNotContain(t, r.body, "not-the-api-token")
	for _, ck := range c.jar.Cookies(mustParse(t, h.url("/"))) {
		if ck.Name == "linkgate_console" {
			t.Fatal("a refused sign-in set a session cookie")
		}
	}
	if r := c.get(h.url("/accounts")); r.status != http.StatusSeeOther {
		t.Fatalf("after a refused sign-in /accounts answered %d; want a redirect to sign in", r.status)
	}
	r = c.login(userName, "wrong password")
	if r.status != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d; want 401", r.status)
	}
	r = c.login("nobody", userPassword)
	if r.status != http.StatusUnauthorized {
		t.Fatalf("unknown user: %d; want 401", r.status)
	}
}

func TestUserSignsInWithPassword(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	c := h.newClient()
	r := c.login(userName, userPassword)
	if r.status != http.StatusSeeOther {
		t.Fatalf("user sign-in: %d; want 303\n%s", r.status, r.body)
	}
	page := c.get(h.url("/accounts"))
	if page.status != http.StatusOK {
		t.Fatalf("accounts after sign-in: %d", page.status)
	}
	mustContain(t, page.body, `<span class="who">ops</span>`)
}

func TestLoginFormNeedsItsCSRFToken(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	c := h.newClient()
	_ = c.get(h.url("/login"))
	r := c.do(http.MethodPost, h.url("/login"), url.Values{"secret": {apiToken}})
	if r.status != http.StatusForbidden {
		t.Fatalf("sign-in without the form's CSRF token: %d; want 403", r.status)
	}
	if r := c.get(h.url("/accounts")); r.status != http.StatusSeeOther {
		t.Fatal("a sign-in without CSRF token made a session")
	}
}

func TestSessionCookieAttributes(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	// Over HTTPS the cookie is Secure; over plain HTTP it cannot be.
	for _, overTLS := range []bool{true, false} {
		page := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/console/login", nil)
		if overTLS {
			req.TLS = &tls.ConnectionState{}
		}
		h.console.ServeHTTP(page, req)
		pre := page.Result().Cookies()[0]

		rec := httptest.NewRecorder()
		form := url.Values{"csrf": {pre.Value}, "secret": {apiToken}}
		req = httptest.NewRequest(http.MethodPost, "/console/login", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(pre)
		if overTLS {
			req.TLS = &tls.ConnectionState{}
		}
		h.console.ServeHTTP(rec, req)
		var sess *http.Cookie
		for _, ck := range rec.Result().Cookies() {
			if ck.Name == "linkgate_console" {
				sess = ck
			}
		}
		if sess == nil {
			t.Fatalf("TLS %t: no session cookie (status %d)", overTLS, rec.Code)
		}
		if !sess.HttpOnly || sess.SameSite != http.SameSiteStrictMode || sess.Path != "/console" || sess.Secure != overTLS {
			t.Fatalf("TLS %t: cookie %+v; want HttpOnly, SameSite=Strict, Path=/console, Secure=%t", overTLS, sess, overTLS)
		}
		if len(sess.Value) < 40 {
			t.Fatalf("session id of %d characters is too short", len(sess.Value))
		}
		csp := rec.Header().Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
			t.Fatalf("CSP %q", csp)
		}
	}
}

func TestPostWithoutCSRFChangesNothing(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.seed("acct-1", "tenant-a", "acme", account.StatusNeedsReauth, h.clock.Now(), account.Credentials{}, nil)
	c := h.signedIn()
	for _, form := range []url.Values{{}, {"csrf": {"forged-token"}}} {
		r := c.do(http.MethodPost, h.url("/accounts/acct-1/link"), form)
		if r.status != http.StatusForbidden {
			t.Fatalf("POST with csrf %q: %d; want 403", form.Get("csrf"), r.status)
		}
		mustNotContain(t, r.body, "link_token=")
	}
	if n := h.links.calls.Load(); n != 0 {
		t.Fatalf("refused POSTs asked for %d link tokens", n)
	}
	// Logging out needs the token too: a forged logout does nothing.
	if r := c.do(http.MethodPost, h.url("/logout"), url.Values{}); r.status != http.StatusForbidden {
		t.Fatalf("logout without CSRF: %d; want 403", r.status)
	}
	if r := c.get(h.url("/accounts")); r.status != http.StatusOK {
		t.Fatalf("session gone after a forged logout: %d", r.status)
	}
}

func TestSessionsExpire(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	c := h.signedIn()
	if r := c.get(h.url("/accounts")); r.status != http.StatusOK {
		t.Fatalf("fresh session: %d", r.status)
	}
	h.clock.Advance(console.DefaultIdleTimeout - time.Minute)
	if r := c.get(h.url("/accounts")); r.status != http.StatusOK {
		t.Fatalf("session used within the idle timeout: %d", r.status)
	}
	h.clock.Advance(console.DefaultIdleTimeout + time.Second)
	if r := c.get(h.url("/accounts")); r.status != http.StatusSeeOther {
		t.Fatalf("idle session: %d; want a redirect to sign in", r.status)
	}

	// A session kept busy still ends at its absolute lifetime.
	c = h.signedIn()
	for elapsed := time.Duration(0); elapsed < console.DefaultSessionTTL-20*time.Minute; elapsed += 20 * time.Minute {
		h.clock.Advance(20 * time.Minute)
		if r := c.get(h.url("/accounts")); r.status != http.StatusOK {
			t.Fatalf("busy session died after %s", elapsed)
		}
	}
	h.clock.Advance(21 * time.Minute)
	if r := c.get(h.url("/accounts")); r.status != http.StatusSeeOther {
		t.Fatalf("session past its lifetime: %d; want a redirect", r.status)
	}
}

func TestLogoutEndsTheSession(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	c := h.signedIn()
	page := c.get(h.url("/accounts"))
	var sess string
	for _, ck := range c.jar.Cookies(mustParse(t, h.url("/"))) {
		if ck.Name == "linkgate_console" {
			sess = ck.Value
		}
	}
	r := c.do(http.MethodPost, h.url("/logout"), url.Values{"csrf": {csrf(t, page.body)}})
	if r.status != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/console/login") {
		t.Fatalf("logout: %d %q", r.status, r.header.Get("Location"))
	}
	// The old cookie value is dead on the server, not merely deleted in the browser.
	req := httptest.NewRequest(http.MethodGet, "/console/accounts", nil)
	req.AddCookie(&http.Cookie{Name: "linkgate_console", Value: sess})
	rec := httptest.NewRecorder()
	h.console.ServeHTTP(rec, req)
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("replayed cookie after logout: %d; want a redirect", rec.Code)
	}
}

func TestLoginAttemptsAreRateLimitedPerIP(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	attempt := func(ip, secret string) *httptest.ResponseRecorder {
		page := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/console/login", nil)
		h.console.ServeHTTP(page, req)
		pre := page.Result().Cookies()[0]
		form := url.Values{"csrf": {pre.Value}, "secret": {secret}}
		req = httptest.NewRequest(http.MethodPost, "/console/login", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = ip + ":40000"
		req.AddCookie(pre)
		rec := httptest.NewRecorder()
		h.console.ServeHTTP(rec, req)
		return rec
	}
	for i := 0; i < console.DefaultLoginBurst; i++ {
		if rec := attempt("192.0.2.1", "guess-"+strconv.Itoa(i)); rec.Code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d; want 401", i+1, rec.Code)
		}
	}
	// Even the right token waits once the bucket is empty.
	rec := attempt("192.0.2.1", apiToken)
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("attempt past the burst: %d, Retry-After %q; want 429 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	if rec := attempt("192.0.2.2", apiToken); rec.Code != http.StatusSeeOther {
		t.Fatalf("another address: %d; want a sign-in", rec.Code)
	}
	h.clock.Advance(console.DefaultLoginEvery)
	if rec := attempt("192.0.2.1", apiToken); rec.Code != http.StatusSeeOther {
		t.Fatalf("after waiting: %d; want a sign-in", rec.Code)
	}
}

var rowID = regexp.MustCompile(`<tr data-account="([^"]+)">`)

func TestAccountsFilterSearchAndPages(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	base := h.clock.Now().Add(-time.Hour)
	needs := map[string]bool{}
	for i := 0; i < 130; i++ {
		status := account.StatusActive
		if i%3 == 0 {
			status = account.StatusNeedsReauth
			needs[accountID(i)] = true
		}
		integ := "acme"
		if i%2 == 1 {
			integ = "keyco"
		}
		h.seed(accountID(i), "tenant-"+strconv.Itoa(i%10), integ, status, base.Add(time.Duration(i)*time.Second), account.Credentials{}, nil)
	}
	c := h.signedIn()

	all := c.get(h.url("/accounts"))
	// needs_reauth comes first among the statuses offered.
	mustContain(t, all.body, `<option value="">Any status</option>
      <option value="needs_reauth">needs reauth</option>`)
	first := rowID.FindAllStringSubmatch(all.body, -1)
	if len(first) != 50 || first[0][1] != accountID(129) {
		t.Fatalf("first page: %d rows starting %v; want 50 newest first", len(first), first[0])
	}

	// Filter needs_reauth and walk every page with the Next link.
	seen := map[string]bool{}
	next := h.url("/accounts?status=needs_reauth")
	pages := 0
	for next != "" {
		r := c.get(next)
		if r.status != http.StatusOK {
			t.Fatalf("page %d: %d", pages+1, r.status)
		}
		for _, m := range rowID.FindAllStringSubmatch(r.body, -1) {
			if !needs[m[1]] {
				t.Fatalf("account %s is not in needs_reauth but was listed", m[1])
			}
			if seen[m[1]] {
				t.Fatalf("account %s listed twice", m[1])
			}
			seen[m[1]] = true
		}
		mustContain(t, r.body, `<option value="needs_reauth" selected>`)
		next = ""
		if m := regexp.MustCompile(`href="([^"]+)" id="next-page"`).FindStringSubmatch(r.body); m != nil {
			next = h.srv.URL + strings.ReplaceAll(m[1], "&amp;", "&")
		}
		pages++
	}
	if len(seen) != len(needs) || pages < 1 {
		t.Fatalf("walked %d needs_reauth accounts in %d pages; want %d", len(seen), pages, len(needs))
	}

	// Filters combine.
	r := c.get(h.url("/accounts?status=active&integration=keyco&tenant=tenant-1"))
	for _, m := range rowID.FindAllStringSubmatch(r.body, -1) {
		var i int
		_, _ = fmtSscan(m[1], &i)
		if i%10 != 1 || i%2 != 1 || needs[m[1]] {
			t.Fatalf("%s does not match active+keyco+tenant-1", m[1])
		}
	}
	// Search by id prefix and by tenant prefix.
	r = c.get(h.url("/accounts?q=acct-012"))
	got := rowID.FindAllStringSubmatch(r.body, -1)
	if len(got) != 10 {
		t.Fatalf("search acct-012: %d rows; want 10", len(got))
	}
	r = c.get(h.url("/accounts?q=tenant-7"))
	if got := rowID.FindAllStringSubmatch(r.body, -1); len(got) != 13 {
		t.Fatalf("search tenant-7: %d rows; want 13", len(got))
	}
	// Bad input: a clear 400 and a way back.
	if r := c.get(h.url("/accounts?status=broken")); r.status != http.StatusBadRequest {
		t.Fatalf("unknown status: %d; want 400", r.status)
	}
	if r := c.get(h.url("/accounts?cursor=garbage!")); r.status != http.StatusBadRequest || !strings.Contains(r.body, "first page") {
		t.Fatalf("bad cursor: %d; want 400 with a link to the first page", r.status)
	}
}

func TestAccountPageRedactsSecrets(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.seed("acct-r", "tenant-r", "acme", account.StatusActive, h.clock.Now(),
		account.Credentials{AccessToken: "access-token-shown-nowhere", RefreshToken: "refresh-token-shown-nowhere"},
		map[string]any{"region": "eu", "api_token": "context-secret-shown-nowhere"})
	c := h.signedIn()
	r := c.get(h.url("/accounts/acct-r"))
	if r.status != http.StatusOK {
		t.Fatalf("account page: %d", r.status)
	}
	mustContain(t, r.body, "tenant-r", `&#34;region&#34;: &#34;eu&#34;`, account.Redacted, "Refresh credentials now", "Re-authorize connection")
	mustNotContain(t, r.body, "access-token-shown-nowhere", "refresh-token-shown-nowhere", "context-secret-shown-nowhere")
	if r := c.get(h.url("/accounts/does-not-exist")); r.status != http.StatusNotFound {
		t.Fatalf("unknown account: %d; want 404", r.status)
	}
}

var magicLink = regexp.MustCompile(`id="magic-link" readonly value="([^"]+)"`)

func TestGetConnectionLink(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.seed("acct-l", "tenant-l", "acme", account.StatusNeedsReauth, h.clock.Now(), account.Credentials{}, nil)
	c := h.signedIn()
	page := c.get(h.url("/accounts/acct-l"))
	mustContain(t, page.body, "This account can no longer authenticate", `id="get-link"`)
	r := c.do(http.MethodPost, h.url("/accounts/acct-l/link"), url.Values{"csrf": {csrf(t, page.body)}})
	if r.status != http.StatusOK {
		t.Fatalf("get link: %d\n%s", r.status, r.body)
	}
	m := magicLink.FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("no magic link on the page:\n%s", r.body)
	}
	link := strings.ReplaceAll(m[1], "&amp;", "&")
	if !strings.HasPrefix(link, h.srv.URL+"/connect-account?link_token=") {
		t.Fatalf("link %q is not the gateway's connect-account URL", link)
	}
	// Without JavaScript the link is still there to select; the Copy
	// button, which needs the script, stays hidden.
	mustContain(t, r.body, `<button type="button" id="copy-link" data-copy="magic-link" hidden>Copy</button>`, `id="link-expiry"`, h.clock.Now().Add(7*24*time.Hour).UTC().Format("2006-01-02 15:04"))
	// Nothing inline, so the strict CSP runs the page as written.
	if inline := regexp.MustCompile(`<script>|<script [^>]*>[^<]|<style|\sstyle=|\son[a-z]+=`).FindString(r.body); inline != "" {
		t.Fatalf("the page has inline code %q, which the CSP blocks", inline)
	}
	// The link is the real thing: its page offers to re-authorize acme.
	connect := h.newClient().get(link)
	if connect.status != http.StatusOK {
		t.Fatalf("opening the link: %d", connect.status)
	}
	mustContain(t, connect.body, "Reconnect acme")
	// The end user is not shown the application's account id.
	mustNotContain(t, connect.body, "acct-l")
	// Reloading the account page does not show the link again.
	mustNotContain(t, c.get(h.url("/accounts/acct-l")).body, "link_token=")

	// A link for an account that does not exist: 404, nothing issued.
	before := h.links.calls.Load()
	if r := c.do(http.MethodPost, h.url("/accounts/nope/link"), url.Values{"csrf": {csrf(t, page.body)}}); r.status != http.StatusNotFound {
		t.Fatalf("link for an unknown account: %d; want 404", r.status)
	}
	if h.links.calls.Load() != before {
		t.Fatal("a link was asked for an unknown account")
	}
}

func TestRefreshNow(t *testing.T) {
	h := newHarness(t, harnessOptions{realClock: true})
	tok := h.auth.Authorize(t, clientID, h.srv.URL+"/connect-account/callback", "alice", []string{"contacts.read"})
	now := time.Now()
	h.seed("acct-ok", "t", "acme", account.StatusActive, now, account.Credentials{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry}, nil)
	h.seed("acct-dead", "t", "acme", account.StatusActive, now, account.Credentials{AccessToken: "x", RefreshToken: "refresh-token-the-provider-never-issued", Expiry: now.Add(time.Hour)}, nil)
	c := h.signedIn()
	page := c.get(h.url("/accounts/acct-ok"))
	token := csrf(t, page.body)

	r := c.do(http.MethodPost, h.url("/accounts/acct-ok/refresh"), url.Values{"csrf": {token}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/console/accounts/acct-ok" {
		t.Fatalf("refresh: %d %q", r.status, r.header.Get("Location"))
	}
	after := c.get(h.url("/accounts/acct-ok"))
	mustContain(t, after.body, `id="flash">Credentials refreshed.`)
	a, err := h.store.GetAccount(context.Background(), "acct-ok")
	if err != nil || a.Credentials.RefreshToken == tok.RefreshToken {
		t.Fatalf("the refresh did not rotate the refresh token (err %v)", err)
	}

	r = c.do(http.MethodPost, h.url("/accounts/acct-dead/refresh"), url.Values{"csrf": {token}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("refused refresh: %d", r.status)
	}
	after = c.get(h.url("/accounts/acct-dead"))
	mustContain(t, after.body, "needs reauthorization", `<span class="badge s-needs_reauth" id="status">`)
	mustNotContain(t, after.body, "refresh-token-the-provider-never-issued")
}

func TestDeliveriesFailedFirstAndRedeliver(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	a := h.seed("acct-d", "tenant-d", "acme", account.StatusNeedsReauth, h.clock.Now(), account.Credentials{}, nil)
	ev1 := tokenstore.NewEvent("integrated_account:authentication_error", a, h.clock.Now())
	ev2 := tokenstore.NewEvent("integrated_account:updated", a, h.clock.Now().Add(time.Second))
	if err := h.store.AddEvents(ctx, []tokenstore.Event{ev1, ev2}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.FanOut(ctx, 10, func(tokenstore.Event) []string {
		return []string{"https://app.example.com/hooks?secret=hidden-in-query"}
	}); err != nil {
		t.Fatal(err)
	}
	claimed, err := h.store.ClaimDeliveries(ctx, time.Now().Add(time.Minute), time.Minute, 10)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("claiming: %d, %v", len(claimed), err)
	}
	var failedID string
	for i := range claimed {
		d := &claimed[i]
		d.Attempts = 1
		if d.Event.ID == ev1.ID {
			d.Status, d.LastStatus, d.LastError = tokenstore.DeliveryFailed, 500, "endpoint answered 500"
			failedID = d.ID
		} else {
			d.Status, d.LastStatus = tokenstore.DeliveryDelivered, 200
		}
		if err := h.store.FinishAttempt(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	c := h.signedIn()
	r := c.get(h.url("/deliveries"))
	if r.status != http.StatusOK {
		t.Fatalf("deliveries: %d", r.status)
	}
	rows := regexp.MustCompile(`<tr data-delivery="([^"]+)">`).FindAllStringSubmatch(r.body, -1)
	if len(rows) != 2 || rows[0][1] != failedID {
		t.Fatalf("deliveries %v; want the failed one (%s) first", rows, failedID)
	}
	mustContain(t, r.body, "https://app.example.com/hooks", "endpoint answered 500")
	mustNotContain(t, r.body, "hidden-in-query")

	// Redeliver from the account page goes back there.
	page := c.get(h.url("/accounts/acct-d"))
	mustContain(t, page.body, failedID, "integrated_account:authentication_error")
	r = c.do(http.MethodPost, h.url("/deliveries/"+failedID+"/redeliver"), url.Values{"csrf": {csrf(t, page.body)}, "account": {"acct-d"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/console/accounts/acct-d" {
		t.Fatalf("redeliver: %d %q", r.status, r.header.Get("Location"))
	}
	d, err := h.store.GetDelivery(ctx, failedID)
	if err != nil || d.Status != tokenstore.DeliveryPending {
		t.Fatalf("after redeliver: %+v, %v; want pending", d, err)
	}
	mustContain(t, c.get(h.url("/accounts/acct-d")).body, "will be sent again now")
	if r := c.do(http.MethodPost, h.url("/deliveries/nope/redeliver"), url.Values{"csrf": {csrf(t, page.body)}}); r.status != http.StatusNotFound {
		t.Fatalf("redeliver unknown: %d; want 404", r.status)
	}
	if r := c.get(h.url("/deliveries?status=failed")); r.status != http.StatusOK || strings.Contains(r.body, failedID) {
		t.Fatalf("failed filter still lists the redelivered delivery (status %d)", r.status)
	}
}

func TestServedUnderAnyPrefixAndStripped(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.seed("acct-p", "tenant-p", "acme", account.StatusActive, h.clock.Now(), account.Credentials{}, nil)
	c := h.signedIn()
	cookies := c.jar.Cookies(mustParse(t, h.url("/")))
	// After `uri strip_prefix /console` the request has no prefix; links keep it.
	req := httptest.NewRequest(http.MethodGet, "/accounts/acct-p", nil)
	for _, ck := range cookies {
		req.AddCookie(ck)
	}
	rec := httptest.NewRecorder()
	h.console.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("stripped path: %d", rec.Code)
	}
	mustContain(t, rec.Body.String(), `href="/console/assets/console.css"`, `action="/console/accounts/acct-p/link"`)

	for _, asset := range []string{"/console/assets/console.css", "/console/assets/console.js"} {
		r := h.newClient().get(h.srv.URL + asset)
		if r.status != http.StatusOK {
			t.Fatalf("%s without a session: %d; want 200 (assets hold nothing secret)", asset, r.status)
		}
	}
	if r := h.newClient().get(h.srv.URL + "/console/assets/../templates/layout.html"); r.status == http.StatusOK {
		t.Fatal("an asset path escaped the assets")
	}
}

func mustParse(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func fmtSscan(id string, i *int) (int, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(id, "acct-"))
	*i = n
	return 1, err
}

func TestSessionsAreBounded(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	small, err := console.New(console.Options{
		Store:        h.store,
		Links:        h.links,
		Authenticate: func(_ *http.Request, tok string) bool { return tok == apiToken },
		Sessions:     console.NewSessions(2, time.Hour, time.Hour),
		Now:          h.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	signIn := func() *http.Cookie {
		page := httptest.NewRecorder()
		small.ServeHTTP(page, httptest.NewRequest(http.MethodGet, "/console/login", nil))
		pre := page.Result().Cookies()[0]
		req := httptest.NewRequest(http.MethodPost, "/console/login", strings.NewReader(url.Values{"csrf": {pre.Value}, "secret": {apiToken}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = "198.51.100.7:1234"
		req.AddCookie(pre)
		rec := httptest.NewRecorder()
		small.ServeHTTP(rec, req)
		for _, ck := range rec.Result().Cookies() {
			if ck.Name == "linkgate_console" {
				return ck
			}
		}
		t.Fatalf("no session: %d", rec.Code)
		return nil
	}
	alive := func(ck *http.Cookie) bool {
		req := httptest.NewRequest(http.MethodGet, "/console/accounts", nil)
		req.AddCookie(ck)
		rec := httptest.NewRecorder()
		small.ServeHTTP(rec, req)
		return rec.Code == http.StatusOK
	}
	first := signIn()
	h.clock.Advance(time.Second)
	second := signIn()
	h.clock.Advance(time.Second)
	if !alive(first) { // first is now the most recently used
		t.Fatal("first session died early")
	}
	h.clock.Advance(time.Second)
	third := signIn()
	if alive(second) {
		t.Fatal("a third session in a store of two kept the least recently used one")
	}
	if !alive(first) || !alive(third) {
		t.Fatal("the bounded store dropped a recently used session")
	}
}
