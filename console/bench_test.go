package console_test

import (
	"context"
	"crypto/subtle"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/console"
	"github.com/linkgate/linkgate/tokenstore"
)

// BenchmarkAccountsPage renders pages of the Integrated Accounts list over
// 100,000 accounts in SQLite: the first page, a filtered page
// (needs_reauth), a tenant-prefix search and a page deep in the listing
// reached by its keyset cursor. Each should cost about the same, whatever
// the table's size.
func BenchmarkAccountsPage(b *testing.B) {
	const n = 100_000
	ctx := context.Background()
	key, _ := tokenstore.GenerateKey()
	sealer, _ := tokenstore.NewSealer(key)
	st, err := tokenstore.OpenSQLite(ctx, filepath.Join(b.TempDir(), "bench.db"), sealer)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	base := time.Now().Add(-n * time.Second)
	for i := 0; i < n; i++ {
		status := account.StatusActive
		if i%50 == 0 {
			status = account.StatusNeedsReauth
		}
		a := &account.Account{
			ID: "acct-" + strconv.Itoa(i), TenantID: "tenant-" + strconv.Itoa(i%5000), Integration: "acme",
			Method: account.MethodOAuth2, Status: status, CreatedAt: base.Add(time.Duration(i) * time.Second),
		}
		a.UpdatedAt = a.CreatedAt
		if err := st.CreateAccount(ctx, a, nil); err != nil {
			b.Fatal(err)
		}
	}
	c, err := console.New(console.Options{
		Store: st,
		Links: linkIssuerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "unused", 500) }),
		Authenticate: func(_ *http.Request, tok string) bool {
			return subtle.ConstantTimeCompare([]byte(tok), []byte(apiToken)) == 1
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	cookie := benchSignIn(b, c)

	get := func(path string) string {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.AddCookie(cookie)
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%s: %d", path, rec.Code)
		}
		return rec.Body.String()
	}
	// Walk 100 pages in to find a deep cursor.
	deep := "/console/accounts"
	next := regexp.MustCompile(`href="([^"]+)" id="next-page"`)
	for range 100 {
		m := next.FindStringSubmatch(get(deep))
		if m == nil {
			b.Fatal("the listing ended early")
		}
		deep = strings.ReplaceAll(m[1], "&amp;", "&")
	}
	for _, bc := range []struct{ name, path string }{
		{"first", "/console/accounts"},
		{"needs_reauth", "/console/accounts?status=needs_reauth"},
		{"search", "/console/accounts?q=tenant-49"},
		{"deep", deep},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				get(bc.path)
			}
		})
	}
}

// linkIssuerFunc lets a plain handler stand for the link issuer where no
// link is made.
type linkIssuerFunc http.HandlerFunc

func (f linkIssuerFunc) CreateLinkToken(w http.ResponseWriter, r *http.Request) { f(w, r) }

func benchSignIn(b *testing.B, c *console.Console) *http.Cookie {
	page := httptest.NewRecorder()
	c.ServeHTTP(page, httptest.NewRequest(http.MethodGet, "/console/login", nil))
	pre := page.Result().Cookies()[0]
	req := httptest.NewRequest(http.MethodPost, "/console/login", strings.NewReader("secret="+apiToken+"&csrf="+pre.Value))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(pre)
	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, req)
	for _, ck := range rec.Result().Cookies() {
		if ck.Name == "linkgate_console" && ck.Value != "" {
			return ck
		}
	}
	b.Fatalf("signing in: %d", rec.Code)
	return nil
}
