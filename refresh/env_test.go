package refresh

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/testenv"
	"github.com/linkgate/linkgate/tokenstore"
)

const (
	clientID     = "linkgate-test"
	clientSecret = "client-secret-7f3a9c"
	redirectURI  = "http://127.0.0.1/callback"
)

// clock is a settable clock for the refresher; it starts at the real time
// so that the auth server's own expiry checks agree with it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// lockTimeout is the LockTimeout of tests that shorten TokenTimeout, which
// LockTimeout defaults to: taking a refresh lock is a store write, and on a
// busy machine a write outlasts a few hundred milliseconds, which would turn
// a test of a slow token endpoint into one of an unavailable store. A
// caller waits LockTimeout + TokenTimeout at most, so a fault meant to
// outlast the caller delays the token call longer than that.
const lockTimeout = 2 * time.Second

// env is one refresher over a real SQLite store and a real fosite
// authorization server.
type env struct {
	t    testing.TB
	auth *testenv.AuthServer
	path string
	// dsn is the PostgreSQL the env's stores use; empty for SQLite.
	dsn   string
	key   []byte
	store tokenstore.Store
	integ *account.Integration
	clock *clock
	core  zapcore.Core
	logs  *observer.ObservedLogs
	r     *Refresher
	http  *http.Client

	mu      sync.Mutex
	events  []tokenstore.Event
	secrets []string
}

func newEnv(t testing.TB, tune func(*Options)) *env {
	t.Helper()
	return newEnvOn(t, "sqlite", tune)
}

// storeKinds are the stores a test that says "on both stores" runs on.
var storeKinds = []string{"sqlite", "postgres"}

// onEachStore runs test once per store kind, as a subtest named after it.
// The PostgreSQL one skips, saying why, without LINKGATE_TEST_POSTGRES.
func onEachStore(t *testing.T, test func(t *testing.T, kind string)) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) { test(t, kind) })
	}
}

// newEnvOn is newEnv on a store of the given kind, "sqlite" or "postgres".
func newEnvOn(t testing.TB, kind string, tune func(*Options)) *env {
	t.Helper()
	return newEnvLife(t, kind, 0, tune)
}

// newEnvLife is newEnvOn with an authorization server whose access tokens
// live life (1h when zero).
func newEnvLife(t testing.TB, kind string, life time.Duration, tune func(*Options)) *env {
	t.Helper()
	var dsn string
	if kind == "postgres" {
		dsn, _ = testenv.PostgresSchema(t)
	}
	auth := testenv.NewAuthServer(t, testenv.AuthServerOptions{
		Clients:             []testenv.Client{{ID: clientID, Secret: clientSecret, RedirectURIs: []string{redirectURI}}},
		AccessTokenLifespan: life,
	})
	key, err := tokenstore.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, auth: auth, path: filepath.Join(t.TempDir(), "linkgate.db"), dsn: dsn, key: key, clock: newClock()}
	e.store = e.openStore()
	e.integ = &account.Integration{
		Name: "acme", Auth: account.MethodOAuth2, BaseURL: "http://127.0.0.1:1",
		AuthorizeURL: auth.AuthorizeURL(), TokenURL: auth.TokenURL(),
		ClientID: clientID, ClientSecret: clientSecret,
	}
	e.secrets = []string{clientSecret}
	e.http = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(e.http.CloseIdleConnections)
	e.core, e.logs = observer.New(zapcore.DebugLevel)
	e.r = e.newRefresher(tune)
	t.Cleanup(func() {
		if err := e.r.Stop(); err != nil {
			t.Errorf("stopping the refresher: %v", err)
		}
		e.assertNoSecretLogged()
	})
	return e
}

// openStore opens another connection to the env's store, as another
// instance sharing it would.
func (e *env) openStore() tokenstore.Store {
	e.t.Helper()
	sealer, err := tokenstore.NewSealer(e.key)
	if err != nil {
		e.t.Fatal(err)
	}
	if e.dsn != "" {
		p, err := tokenstore.OpenPostgres(context.Background(), e.dsn, sealer, tokenstore.PostgresOptions{})
		if err != nil {
			e.t.Fatalf("opening the store: %v", err)
		}
		e.t.Cleanup(func() { _ = p.Close() })
		return p
	}
	s, err := tokenstore.OpenSQLite(context.Background(), e.path, sealer)
	if err != nil {
		e.t.Fatalf("opening the store: %v", err)
	}
	e.t.Cleanup(func() { _ = s.Close() })
	return s
}

// newRefresher builds another refresher on the env's store and log.
func (e *env) newRefresher(tune func(*Options)) *Refresher {
	return e.newRefresherOn(e.store, tune)
}

func (e *env) newRefresherOn(store tokenstore.Store, tune func(*Options)) *Refresher {
	opts := Options{
		Logger:       zap.New(e.core),
		Client:       e.http,
		TokenTimeout: 5 * time.Second,
		BackoffBase:  time.Millisecond,
		BackoffMax:   5 * time.Millisecond,
		Now:          e.clock.Now,
	}
	if tune != nil {
		tune(&opts)
	}
	return New(store, map[string]*account.Integration{e.integ.Name: e.integ}, opts)
}

// connect mints a real grant for user and stores an active account with it
// whose access token expires at expiry (by the refresher's clock).
func (e *env) connect(id string, expiry time.Time) *account.Account {
	e.t.Helper()
	tok := e.auth.Authorize(e.t, clientID, redirectURI, "user-"+id, nil)
	e.remember(tok.AccessToken, tok.RefreshToken)
	a := &account.Account{
		ID: id, TenantID: "tenant-1", Integration: e.integ.Name, Method: account.MethodOAuth2,
		Status: account.StatusActive,
		Credentials: account.Credentials{
			AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenType: tok.TokenType, Expiry: expiry,
		},
		CreatedAt: e.clock.Now(), UpdatedAt: e.clock.Now(),
	}
	if err := e.store.CreateAccount(context.Background(), a, nil); err != nil {
		e.t.Fatalf("creating account %s: %v", id, err)
	}
	return e.get(id)
}

// get reads an account as the store has it.
func (e *env) get(id string) *account.Account {
	e.t.Helper()
	a, err := e.store.GetAccount(context.Background(), id)
	if err != nil {
		e.t.Fatalf("reading account %s: %v", id, err)
	}
	e.remember(a.Credentials.AccessToken, a.Credentials.RefreshToken)
	return a
}

// setExpiry rewrites the stored expiry of an account's access token.
func (e *env) setExpiry(id string, expiry time.Time) *account.Account {
	e.t.Helper()
	a := e.get(id).Clone()
	a.Credentials.Expiry = expiry
	if err := e.store.UpdateAccount(context.Background(), a, nil); err != nil {
		e.t.Fatalf("updating account %s: %v", id, err)
	}
	return e.get(id)
}

func (e *env) refreshCalls() int { return e.auth.TokenCalls("refresh_token") }

func (e *env) remember(secrets ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range secrets {
		if s != "" {
			e.secrets = append(e.secrets, s)
		}
	}
}

// eventsOf returns the outbox events written so far for account id.
func (e *env) eventsOf(id string) []string {
	e.t.Helper()
	for {
		evs, err := e.store.FanOut(context.Background(), 100, func(tokenstore.Event) []string { return nil })
		if err != nil {
			e.t.Fatalf("reading the outbox: %v", err)
		}
		e.mu.Lock()
		e.events = append(e.events, evs...)
		e.mu.Unlock()
		if len(evs) == 0 {
			break
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.events {
		if ev.AccountID == id {
			out = append(out, ev.Name)
		}
	}
	return out
}

// eventually waits for cond, failing the test after a generous bound.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logged reports whether some log entry's message contains s.
func (e *env) logged(level zapcore.Level, s string) bool {
	for _, en := range e.logs.All() {
		if en.Level == level && strings.Contains(en.Message, s) {
			return true
		}
	}
	return false
}

// assertNoSecretLogged checks every log line, message and fields, against
// every token and secret the test has seen.
func (e *env) assertNoSecretLogged() {
	e.t.Helper()
	e.mu.Lock()
	secrets := append([]string(nil), e.secrets...)
	e.mu.Unlock()
	for _, en := range e.logs.All() {
		line := en.Message + " " + fmt.Sprint(en.ContextMap())
		for _, s := range secrets {
			if strings.Contains(line, s) {
				e.t.Errorf("a secret appears in the log line %q", en.Message)
			}
		}
	}
}

// assertNoSecretIn checks that an error's text holds no token or secret the
// test has seen.
func (e *env) assertNoSecretIn(err error) {
	e.t.Helper()
	if err == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.secrets {
		if strings.Contains(err.Error(), s) {
			e.t.Errorf("a secret appears in the error %q", err.Error())
		}
	}
}
