package linkgate

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/refresh"
	"github.com/linkgate/linkgate/tokenstore"
)

// BenchmarkInject measures linkgate's work on the proxy path on a cache
// hit: inject_credentials (API token check, account lookup, placeholders,
// status watch) and the linkgate transport's preparation of the outgoing
// request (its copy, credentials, target), with a next handler that stands
// for reverse_proxy, prepares the request as the transport does and
// answers 200 at once.
func BenchmarkInject(b *testing.B) {
	for _, method := range []account.Method{account.MethodAPIKey, account.MethodOAuth2} {
		b.Run(string(method), func(b *testing.B) {
			h, id := benchInjector(b, method)
			plain := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				w.WriteHeader(http.StatusOK)
				return nil
			})
			dial := h.app.upstreams["crm"].target.dial
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				out, c, err := prepare(r, dial)
				if err != nil {
					return err
				}
				c.sent.Store(true)
				if out.Header.Get("Authorization") == "" && out.Header.Get("X-Api-Key") == "" {
					b.Fatal("no credentials")
				}
				w.WriteHeader(http.StatusOK)
				return nil
			})
			w := httptest.NewRecorder()
			b.Run("request_only", func(b *testing.B) {
				// What building the test request costs, to subtract.
				b.ReportAllocs()
				for b.Loop() {
					r := benchRequest(id)
					_ = plain.ServeHTTP(w, r)
				}
			})
			b.Run("inject", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					r := benchRequest(id)
					if err := h.ServeHTTP(w, r, next); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// benchInjector builds an Inject over a real SQLite store with a warm cache.
func benchInjector(b testing.TB, method account.Method) (*Inject, string) {
	b.Helper()
	key, _ := tokenstore.GenerateKey()
	sealer, err := tokenstore.NewSealer(key)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	inner, err := tokenstore.OpenSQLite(ctx, filepath.Join(b.TempDir(), "bench.db"), sealer)
	if err != nil {
		b.Fatal(err)
	}
	st, err := tokenstore.NewCached(inner, 1<<20)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	in := &account.Integration{Name: "crm", Auth: method, BaseURL: "https://api.example.com", APIKeyHeader: "X-Api-Key",
		AuthorizeURL: "https://example.com/a", TokenURL: "https://example.com/t", ClientID: "c"}
	now := time.Now()
	a := &account.Account{ID: "acct-bench", TenantID: "t", Integration: "crm", Method: method, Status: account.StatusActive,
		Credentials: account.Credentials{APIKey: "k", AccessToken: "at", RefreshToken: "rt", Expiry: now.Add(time.Hour)},
		CreatedAt:   now, UpdatedAt: now}
	if err := st.CreateAccount(ctx, a, nil); err != nil {
		b.Fatal(err)
	}
	app := &App{
		Integrations:   map[string]*account.Integration{"crm": in},
		RetryBodyLimit: 64 << 10,
		tokens:         []hashedToken{newHashedToken("bench-token", "", false)},
		logger:         zap.NewNop(),
		live:           new(liveRuntime),
	}
	app.metrics, _ = newMetrics(nil)
	up, err := newUpstream(in)
	if err != nil {
		b.Fatal(err)
	}
	app.upstreams = map[string]*upstream{"crm": up}
	app.live.run.Store(&runtime{app: app, store: st, refresher: refresh.New(st, app.Integrations, refresh.Options{})})
	// Warm the cache; ristretto admits asynchronously.
	for range 10 {
		if _, err := st.GetAccount(ctx, a.ID); err != nil {
			b.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &Inject{app: app, logger: zap.NewNop(), bypassed: new(sync.Once)}, a.ID
}

// benchRequest is a proxied request as Caddy hands it to a handler: with a
// replacer and the table of request variables Caddy fills in first.
func benchRequest(id string) *http.Request {
	r := httptest.NewRequest("GET", "/crm/v3/objects/contacts?limit=10&integrated_account_id="+id, nil)
	r.Header.Set("Authorization", "Bearer bench-token")
	vars := map[string]any{caddyhttp.TrustedProxyVarKey: false, caddyhttp.ClientIPVarKey: "192.0.2.10"}
	r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, vars))
	caddyhttp.NewTestReplacer(r)
	return r
}
