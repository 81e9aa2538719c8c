package linkflow_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/testenv"
	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/linkflow"
	"github.com/linkgate/linkgate/tokenstore"
)

const (
	clientID     = "linkgate-test"
	clientSecret = "client-secret-for-tests"
	goodAPIKey   = "key-that-works"
	// appOriginForHandlers is an allowed application origin for tests that
	// need no real application page.
	appOriginForHandlers = "http://localhost:5555"
)

// clock is the service's settable clock.
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

// harness is a gateway serving linkflow on 127.0.0.1 under the public origin
// http://localhost:port, a real SQLite store, the fosite authorization
// server and a validation endpoint for API-key and basic integrations.
type harness struct {
	t       *testing.T
	store   *tokenstore.SQLite
	svc     *linkflow.Service
	srv     *httptest.Server
	public  string
	auth    *testenv.AuthServer
	clock   *clock
	commits atomic.Int64
	// validations counts requests to the validation endpoint.
	validations atomic.Int64
	ints        map[string]*account.Integration
	dbFile      string
	logs        *observer.ObservedLogs
	// key is the gateway's secret key: it seals, and keys the browser binding.
	key []byte
	// agent is the browser the harness's own requests come from.
	agent *agent
	// cache is the cache in front of store, with harnessOptions.cached.
	cache *tokenstore.Cached
}

type harnessOptions struct {
	origins []string
	issuer  bool
	// cached puts the store behind tokenstore.Cached, as the gateway does.
	cached bool
	// configure may change integrations before the service is built.
	configure func(map[string]*account.Integration)
	// branding is the product's branding on the pages.
	branding *linkflow.Branding
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening: %v", err)
	}
	h := &harness{t: t, clock: &clock{t: time.Now().UTC().Truncate(time.Second)}}
	h.agent = h.newAgent()
	h.public = "http://localhost:" + portOf(l.Addr().String())

	h.auth = testenv.NewAuthServer(t, testenv.AuthServerOptions{
		Clients: []testenv.Client{{ID: clientID, Secret: clientSecret, RedirectURIs: []string{h.public + "/connect-account/callback"}}},
	})
	if o.issuer {
		h.auth.SetIssuer(h.auth.URL())
	}
	validate := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.validations.Add(1)
		user, pass, basic := r.BasicAuth()
		if r.Header.Get("Authorization") == "Bearer "+goodAPIKey || (basic && user == "ann" && pass == "right-password") {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(validate.Close)

	h.ints = map[string]*account.Integration{
		"acme": {
			Name: "acme", Auth: account.MethodOAuth2, BaseURL: h.auth.URL(),
			AuthorizeURL: h.auth.AuthorizeURL(), TokenURL: h.auth.TokenURL(),
			ClientID: clientID, ClientSecret: clientSecret, AuthStyle: "header",
			Scopes:      []string{"contacts.read"},
			UserinfoURL: h.auth.UserinfoURL(), UserIDField: "sub",
		},
		"keyco":   {Name: "keyco", Auth: account.MethodAPIKey, BaseURL: validate.URL, ValidateURL: validate.URL + "/me"},
		"basicco": {Name: "basicco", Auth: account.MethodBasic, BaseURL: validate.URL, ValidateURL: validate.URL + "/me"},
		"machine": {Name: "machine", Auth: account.MethodClientCredentials, BaseURL: h.auth.URL(), TokenURL: h.auth.TokenURL(), ClientID: clientID},
	}
	if o.issuer {
		h.ints["acme"].Issuer = h.auth.URL()
	}
	if o.configure != nil {
		o.configure(h.ints)
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
	h.key = key
	sealer, err := tokenstore.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	h.dbFile = filepath.Join(t.TempDir(), "linkgate.db")
	h.store, err = tokenstore.OpenSQLite(context.Background(), h.dbFile, sealer)
	if err != nil {
		t.Fatalf("opening sqlite: %v", err)
	}
	t.Cleanup(func() { _ = h.store.Close() })
	var svcStore tokenstore.Store = h.store
	if o.cached {
		h.cache, err = tokenstore.NewCached(h.store, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		svcStore = h.cache
	}

	origins := o.origins
	if origins == nil {
		origins = []string{appOriginForHandlers}
	}
	core, logs := observer.New(zap.DebugLevel)
	h.logs = logs
	h.svc, err = linkflow.New(svcStore, h.ints, linkflow.Options{
		Logger:         zap.New(core),
		PublicURL:      h.public,
		AllowedOrigins: origins,
		Now:            h.clock.Now,
		OnCommit:       func() { h.commits.Add(1) },
		SecretKeys:     [][]byte{key},
		Branding:       o.branding,
	})
	if err != nil {
		t.Fatalf("linkflow.New: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/link-token", h.svc.CreateLinkToken)
	mux.Handle("/connect-account", h.svc)
	mux.Handle("/connect-account/", h.svc)
	h.srv = httptest.NewUnstartedServer(mux)
	_ = h.srv.Listener.Close()
	h.srv.Listener = l
	h.srv.Start()
	t.Cleanup(h.srv.Close)
	return h
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// response is an answer read in full.
type response struct {
	status int
	header http.Header
	body   string
}

var noRedirects = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// agent is one browser seen at the HTTP level: it keeps the cookies the
// gateway sets and sends them back to the gateway, as a browser does. (Go's
// cookiejar never sends a Secure cookie over plain http; browsers do to
// localhost, which the harness's public origin is.)
type agent struct {
	h       *harness
	mu      sync.Mutex
	cookies map[string]*http.Cookie
}

// newAgent is another browser, with no cookies.
func (h *harness) newAgent() *agent {
	return &agent{h: h, cookies: map[string]*http.Cookie{}}
}

// cookieHeader is the Cookie header the agent sends to the gateway.
func (a *agent) cookieHeader() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var parts []string
	for _, c := range a.cookies {
		parts = append(parts, c.Name+"="+c.Value)
	}
	return strings.Join(parts, "; ")
}

// cookie is the agent's cookie of that name, or nil.
func (a *agent) cookie(name string) *http.Cookie {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cookies[name]
}

func (a *agent) do(req *http.Request) response {
	a.h.t.Helper()
	toGateway := req.URL.Host == a.h.srv.Listener.Addr().String()
	if c := a.cookieHeader(); toGateway && c != "" {
		req.Header.Set("Cookie", c)
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		a.h.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if toGateway {
		a.mu.Lock()
		for _, c := range resp.Cookies() {
			if c.MaxAge < 0 {
				delete(a.cookies, c.Name)
			} else {
				a.cookies[c.Name] = c
			}
		}
		a.mu.Unlock()
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

func (a *agent) get(u string) response {
	a.h.t.Helper()
	req, err := http.NewRequest(http.MethodGet, a.h.local(u), nil)
	if err != nil {
		a.h.t.Fatal(err)
	}
	return a.do(req)
}

func (a *agent) postForm(u string, form url.Values) response {
	a.h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, a.h.local(u), strings.NewReader(form.Encode()))
	if err != nil {
		a.h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return a.do(req)
}

// startOAuth presses the connect button of the page of token and returns
// the provider's authorization URL it redirects to.
func (a *agent) startOAuth(token string) *url.URL {
	a.h.t.Helper()
	r := a.postForm(a.h.public+"/connect-account", url.Values{"link_token": {token}})
	if r.status != http.StatusSeeOther {
		a.h.t.Fatalf("connect button = %d, want 303: %s", r.status, r.body)
	}
	u, err := url.Parse(r.header.Get("Location"))
	if err != nil {
		a.h.t.Fatalf("redirect: %v", err)
	}
	return u
}

// consent plays the user on the provider's consent page: loads it, types
// username and presses allow or deny. It returns where the provider sends
// the browser (the callback URL).
func (a *agent) consent(authorize *url.URL, username, action string) *url.URL {
	h := a.h
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, authorize.String(), nil)
	if r := a.do(req); r.status != http.StatusOK {
		h.t.Fatalf("consent page = %d: %s", r.status, r.body)
	}
	form := authorize.Query()
	form.Set("username", username)
	form.Set("action", action)
	req, _ = http.NewRequest(http.MethodPost, h.auth.AuthorizeURL(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r := a.do(req)
	loc, err := url.Parse(r.header.Get("Location"))
	if err != nil || loc.Host == "" {
		h.t.Fatalf("consent answered %d without redirect: %s", r.status, r.body)
	}
	return loc
}

// connectOAuth runs the whole flow for token as username and returns the
// callback's answer.
func (a *agent) connectOAuth(token, username string) response {
	a.h.t.Helper()
	cb := a.consent(a.startOAuth(token), username, "allow")
	return a.get(cb.String())
}

// do sends req from the harness's own browser.
func (h *harness) do(req *http.Request) response {
	h.t.Helper()
	return h.agent.do(req)
}

// local turns a public URL (localhost) into one on the listener (127.0.0.1).
func (h *harness) local(u string) string {
	return strings.Replace(u, h.public, h.srv.URL, 1)
}

func (h *harness) get(u string) response {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodGet, h.local(u), nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.do(req)
}

func (h *harness) postForm(u string, form url.Values) response {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.local(u), strings.NewReader(form.Encode()))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return h.do(req)
}

func (h *harness) postJSON(u, body string) response {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.local(u), strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return h.do(req)
}

// linkToken creates a link token through the API and returns the answer.
func (h *harness) linkToken(body any) wire.LinkToken {
	h.t.Helper()
	b, _ := json.Marshal(body)
	r := h.postJSON(h.public+"/link-token", string(b))
	if r.status != http.StatusCreated {
		h.t.Fatalf("POST /link-token %s = %d %s", b, r.status, r.body)
	}
	var lt wire.LinkToken
	if err := json.Unmarshal([]byte(r.body), &lt); err != nil {
		h.t.Fatalf("decoding the link token answer: %v", err)
	}
	return lt
}

func (h *harness) startOAuth(token string) *url.URL {
	h.t.Helper()
	return h.agent.startOAuth(token)
}

func (h *harness) consent(authorize *url.URL, username, action string) *url.URL {
	h.t.Helper()
	return h.agent.consent(authorize, username, action)
}

func (h *harness) connectOAuth(token, username string) response {
	h.t.Helper()
	return h.agent.connectOAuth(token, username)
}

// outbox returns the names of the events written since the last call.
func (h *harness) outbox() []string {
	h.t.Helper()
	evs, err := h.store.FanOut(context.Background(), 100, func(tokenstore.Event) []string { return nil })
	if err != nil {
		h.t.Fatalf("reading the outbox: %v", err)
	}
	var names []string
	for _, e := range evs {
		names = append(names, e.Name)
	}
	return names
}

// seedAccount stores an oauth2 account of acme holding a real grant of
// username, as if connected earlier.
func (h *harness) seedAccount(username string, status account.Status, ctx map[string]any) (*account.Account, *oauth2Token) {
	h.t.Helper()
	tok := h.auth.Authorize(h.t, clientID, h.public+"/connect-account/callback", username, []string{"contacts.read"})
	now := time.Now().UTC()
	a := &account.Account{
		ID: "acct-" + username, TenantID: "tenant-1", Integration: "acme", Method: account.MethodOAuth2,
		Status: status, Context: ctx,
		Credentials: account.Credentials{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenType: "bearer", Expiry: tok.Expiry},
		CreatedAt:   now, UpdatedAt: now,
	}
	if err := h.store.CreateAccount(context.Background(), a, nil); err != nil {
		h.t.Fatalf("seeding account: %v", err)
	}
	return a, &oauth2Token{access: tok.AccessToken, refresh: tok.RefreshToken}
}

type oauth2Token struct{ access, refresh string }

func (h *harness) account(id string) *account.Account {
	h.t.Helper()
	a, err := h.store.GetAccount(context.Background(), id)
	if err != nil {
		h.t.Fatalf("reading account %s: %v", id, err)
	}
	return a
}

func (h *harness) accountsOf(tenant string) []*account.Account {
	h.t.Helper()
	p, err := h.store.ListAccounts(context.Background(), tokenstore.Filter{TenantID: tenant})
	if err != nil {
		h.t.Fatalf("listing accounts: %v", err)
	}
	return p.Accounts
}

var postedRE = regexp.MustCompile(`(?s)<script type="application/json" id="linkgate-result">(.*?)</script>`)

// posted is what a page posts to the application.
type posted struct {
	Message  map[string]any `json:"message"`
	Targets  []string       `json:"targets"`
	Redirect string         `json:"redirect"`
}

func postedBy(t *testing.T, body string) posted {
	t.Helper()
	m := postedRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("the page posts nothing to the application:\n%s", body)
	}
	var p posted
	if err := json.Unmarshal(bytes.TrimSpace([]byte(m[1])), &p); err != nil {
		t.Fatalf("the posted message is not JSON: %v\n%s", err, m[1])
	}
	return p
}

// assertPageHeaders checks what every connect page must send.
func assertPageHeaders(t *testing.T, r response) {
	t.Helper()
	if got := r.header.Get("Referrer-Policy"); got != "no-referrer" {
		t.Errorf("Referrer-Policy = %q, want no-referrer", got)
	}
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
	if got := r.header.Get("Cross-Origin-Opener-Policy"); got != "" {
		t.Errorf("Cross-Origin-Opener-Policy = %q: it cuts the opener the Link SDK listens to", got)
	}
	csp := r.header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "base-uri 'none'", "frame-ancestors "} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("Content-Security-Policy %q allows inline or eval'd script", csp)
	}
}

// newServiceWithTTL is a second service over h's store with another link
// token lifetime.
func newServiceWithTTL(h *harness, ttl time.Duration) (*linkflow.Service, error) {
	return linkflow.New(h.store, h.ints, linkflow.Options{
		PublicURL: h.public, AllowedOrigins: []string{appOriginForHandlers}, LinkTokenTTL: ttl, Now: h.clock.Now,
		SecretKeys: [][]byte{h.key},
	})
}

func postRecorder(t *testing.T, hf http.HandlerFunc, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/link-token", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	hf(rec, req)
	return rec
}

// assertNotLogged fails if any log entry so far holds one of secrets.
func (h *harness) assertNotLogged(secrets ...string) {
	h.t.Helper()
	if h.logs.Len() == 0 {
		h.t.Fatal("nothing was logged: the check would prove nothing")
	}
	for _, e := range h.logs.All() {
		b, _ := json.Marshal(e.ContextMap())
		line := e.Message + " " + string(b)
		for _, s := range secrets {
			if s != "" && strings.Contains(line, s) {
				h.t.Errorf("a log line holds a secret: %s", line)
			}
		}
	}
}
