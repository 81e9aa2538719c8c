package console_test

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/console"
	"github.com/linkgate/linkgate/internal/testenv"
	"github.com/linkgate/linkgate/linkflow"
	"github.com/linkgate/linkgate/refresh"
	"github.com/linkgate/linkgate/tokenstore"
	"github.com/linkgate/linkgate/webhook"
)

const (
	apiToken     = "console-test-api-token"
	clientID     = "linkgate-console"
	clientSecret = "console-client-secret"
	userName     = "ops"
	userPassword = "correct horse battery staple"
)

// clock is a settable clock shared by the console and the link flow.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// countingIssuer counts link tokens asked for, so tests can prove that a
// refused request asked for none.
type countingIssuer struct {
	svc   *linkflow.Service
	calls atomic.Int64
}

func (c *countingIssuer) CreateLinkToken(w http.ResponseWriter, r *http.Request) {
	c.calls.Add(1)
	c.svc.CreateLinkToken(w, r)
}

// harness is a gateway on 127.0.0.1 serving the console under /console and
// the connect flow under /connect-account, over a real SQLite store, with
// the fosite authorization server as the "acme" provider.
type harness struct {
	t       *testing.T
	store   *tokenstore.SQLite
	auth    *testenv.AuthServer
	links   *countingIssuer
	console *console.Console
	srv     *httptest.Server
	clock   *clock
	ints    map[string]*account.Integration
	refr    *refresh.Refresher
	// hooks are two webhook endpoints: good answers 204, broken 500;
	// broken starts disabled, as after a 410.
	good, broken string
	notified     atomic.Int64
}

type harnessOptions struct {
	prefix string
	// realClock uses time.Now; the browser flow needs real expiries.
	realClock bool
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening: %v", err)
	}
	public := "http://" + l.Addr().String()
	h := &harness{t: t, clock: &clock{t: time.Now().UTC().Truncate(time.Second)}}
	now := h.clock.Now
	if o.realClock {
		now = time.Now
	}
	h.auth = testenv.NewAuthServer(t, testenv.AuthServerOptions{
		Clients: []testenv.Client{{ID: clientID, Secret: clientSecret, RedirectURIs: []string{public + linkflow.PathCallback}}},
	})
	h.ints = map[string]*account.Integration{
		"acme": {
			Name: "acme", Auth: account.MethodOAuth2, BaseURL: h.auth.URL(),
			AuthorizeURL: h.auth.AuthorizeURL(), TokenURL: h.auth.TokenURL(),
			ClientID: clientID, ClientSecret: clientSecret, AuthStyle: "header",
			Scopes: []string{"contacts.read"},
		},
		"keyco": {Name: "keyco", Auth: account.MethodAPIKey, BaseURL: h.auth.URL()},
	}
	for _, in := range h.ints {
		if err := in.Validate(); err != nil {
			t.Fatalf("integration: %v", err)
		}
	}
	key, err := tokenstore.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := tokenstore.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	h.store, err = tokenstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "linkgate.db"), sealer)
	if err != nil {
		t.Fatalf("opening sqlite: %v", err)
	}
	t.Cleanup(func() { _ = h.store.Close() })

	svc, err := linkflow.New(h.store, h.ints, linkflow.Options{PublicURL: public, Now: now, SecretKeys: [][]byte{key}})
	if err != nil {
		t.Fatalf("linkflow.New: %v", err)
	}
	h.links = &countingIssuer{svc: svc}
	h.refr = refresh.New(h.store, h.ints, refresh.Options{Now: now})

	hash, err := bcrypt.GenerateFromPassword([]byte(userPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	prefix := o.prefix
	if prefix == "" {
		prefix = console.DefaultPrefix
	}
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/good") {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(receiver.Close)
	h.good, h.broken = receiver.URL+"/hooks/good", receiver.URL+"/hooks/broken"
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("console-test-webhook-secret-0123"))
	dispatcher := webhook.NewDispatcher(h.store, []webhook.Endpoint{
		{URL: h.good, Secrets: []string{secret}, Events: []string{"integrated_account:*"}},
		{URL: h.broken, Secrets: []string{secret}, Events: []string{"integrated_account:authentication_error"}},
	}, webhook.Options{Now: now})
	if err := h.store.DisableEndpoint(context.Background(), h.broken, "the endpoint answered 410 Gone", now()); err != nil {
		t.Fatal(err)
	}
	h.console, err = console.New(console.Options{
		Webhooks: webhook.NewAPI(h.store, dispatcher),
		Notify:   func() { h.notified.Add(1) },
		Store:    h.store,
		Links:    h.links,
		Refresh:  h.refr.Refresh,
		Authenticate: func(_ *http.Request, tok string) bool {
			return subtle.ConstantTimeCompare([]byte(tok), []byte(apiToken)) == 1
		},
		Users:        map[string]string{userName: string(hash)},
		Integrations: []string{"acme", "keyco"},
		Prefix:       prefix,
		Now:          now,
	})
	if err != nil {
		t.Fatalf("console.New: %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle(prefix+"/", h.console)
	mux.Handle(prefix, h.console)
	mux.Handle("/connect-account", svc)
	mux.Handle("/connect-account/", svc)
	h.srv = httptest.NewUnstartedServer(mux)
	_ = h.srv.Listener.Close()
	h.srv.Listener = l
	h.srv.Start()
	t.Cleanup(h.srv.Close)
	return h
}

// url is a console URL on the test server.
func (h *harness) url(sub string) string { return h.srv.URL + console.DefaultPrefix + sub }

// seed stores an account and returns it.
func (h *harness) seed(id, tenant, integration string, status account.Status, created time.Time, creds account.Credentials, ctx map[string]any) *account.Account {
	h.t.Helper()
	method := h.ints[integration].Auth
	a := &account.Account{
		ID: id, TenantID: tenant, Integration: integration, Method: method, Status: status,
		Credentials: creds, Context: ctx, CreatedAt: created, UpdatedAt: created,
	}
	if status == account.StatusNeedsReauth {
		a.LastError = &account.Error{Code: "invalid_grant", Message: "the provider refused the refresh token", At: created}
	}
	if err := h.store.CreateAccount(context.Background(), a, nil); err != nil {
		h.t.Fatalf("seeding %s: %v", id, err)
	}
	return a
}

// client is a browser-like HTTP client with a cookie jar that does not
// follow redirects.
type client struct {
	t   *testing.T
	h   *harness
	hc  *http.Client
	ip  string
	jar *cookiejar.Jar
}

func (h *harness) newClient() *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: h.t, h: h, jar: jar, hc: &http.Client{
		Jar:           jar,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

type response struct {
	status int
	header http.Header
	body   string
}

func (c *client) do(method, u string, form url.Values) response {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, string(b)}
}

func (c *client) get(u string) response { return c.do(http.MethodGet, u, nil) }

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the CSRF token from a page.
func csrf(t *testing.T, body string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF field on the page:\n%s", body)
	}
	return m[1]
}

// login signs in with the given user name and secret and returns the answer.
func (c *client) login(username, secret string) response {
	c.t.Helper()
	page := c.get(c.h.url("/login"))
	if page.status != http.StatusOK {
		c.t.Fatalf("login page: %d", page.status)
	}
	return c.do(http.MethodPost, c.h.url("/login"), url.Values{"csrf": {csrf(c.t, page.body)}, "username": {username}, "secret": {secret}})
}

// signedIn returns a client signed in with the API token.
func (h *harness) signedIn() *client {
	h.t.Helper()
	c := h.newClient()
	r := c.login("", apiToken)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != console.DefaultPrefix+"/accounts" {
		h.t.Fatalf("signing in: %d %s\n%s", r.status, r.header.Get("Location"), r.body)
	}
	return c
}

func mustContain(t *testing.T, body string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(body, p) {
			t.Fatalf("page lacks %q:\n%s", p, body)
		}
	}
}

func mustNotContain(t *testing.T, body string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if strings.Contains(body, p) {
			t.Fatalf("page shows %q, which it must not", p)
		}
	}
}

func accountID(i int) string { return fmt.Sprintf("acct-%04d", i) }
