package tokenstore_test

import (
	"context"
	"encoding/base64"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/linkgate/linkgate/tokenstore"
	"github.com/linkgate/linkgate/tokenstore/storetest"
)

// A sealed blob is bound to its row: one copied into another account's row
// (or another link token's) by someone who can write to the database but
// holds no key must not open there, or he could hand one tenant's
// credentials to another.
func testSealedBlobsStayInTheirRow(t *testing.T, st tokenstore.Store, exec func(q string, args ...any)) {
	t.Helper()
	a := storetest.NewAccount("acc_victim")
	a.Context = map[string]any{"client_secret": "victim-context-secret"}
	b := storetest.NewAccount("acc_attacker")
	if err := st.CreateAccount(ctx, a, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateAccount(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, h := range []string{"lt-victim", "lt-attacker"} {
		lt := &tokenstore.LinkToken{Hash: []byte(h), TenantID: "t", Integration: "x", CreatedAt: now, ExpiresAt: now.Add(time.Hour),
			Context: map[string]any{"api_key": "key-of-" + h}}
		if err := st.CreateLinkToken(ctx, lt); err != nil {
			t.Fatal(err)
		}
	}
	exec("UPDATE accounts SET credentials = (SELECT credentials FROM accounts WHERE id = 'acc_victim') WHERE id = 'acc_attacker'")
	got, err := st.GetAccount(ctx, b.ID)
	if err == nil {
		same := got.Credentials.AccessToken == a.Credentials.AccessToken
		t.Fatalf("an account row holding another account's sealed blob opened (victim's token: %t)", same)
	}
	if strings.Contains(err.Error(), a.Credentials.AccessToken) {
		t.Fatal("the error quotes the token")
	}
	// The victim's own row still opens: the check reads the right thing.
	if got, err := st.GetAccount(ctx, a.ID); err != nil || got.Credentials.AccessToken != a.Credentials.AccessToken {
		t.Fatalf("the victim's own row: %v", err)
	}
	exec("UPDATE link_tokens SET context = (SELECT context FROM link_tokens WHERE hash = $1) WHERE hash = $2", []byte("lt-victim"), []byte("lt-attacker"))
	if lt, err := st.GetLinkToken(ctx, []byte("lt-attacker")); err == nil {
		t.Fatalf("a link token row holding another's sealed context opened: %v", lt.Context)
	}
	if lt, err := st.GetLinkToken(ctx, []byte("lt-victim")); err != nil || lt.Context["api_key"] != "key-of-lt-victim" {
		t.Fatalf("the victim's own link token: %v", err)
	}
}

func TestSQLiteSealedBlobsStayInTheirRow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "linkgate.db")
	st := openSQLite(t, path, newKey(t))
	defer st.Close()
	raw := openRaw(t, path)
	defer raw.Close()
	testSealedBlobsStayInTheirRow(t, st, func(q string, args ...any) {
		t.Helper()
		if _, err := raw.ExecContext(context.Background(), strings.NewReplacer("$1", "?", "$2", "?").Replace(q), args...); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPostgresSealedBlobsStayInTheirRow(t *testing.T) {
	dsn := pgSchema(t)
	st := openPostgres(t, dsn, newKey(t))
	raw, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close(ctx)
	testSealedBlobsStayInTheirRow(t, st, func(q string, args ...any) {
		t.Helper()
		if _, err := raw.Exec(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPostgresRefusedTextIsInvalidNotUnavailable: text PostgreSQL will not
// hold (a NUL, invalid UTF-8) is the caller's fault, ErrInvalid, and never
// ErrUnavailable, which callers answer with 503.
func TestPostgresRefusedTextIsInvalidNotUnavailable(t *testing.T) {
	st := openPostgres(t, pgSchema(t), newKey(t))
	for _, id := range []string{"a\x00b", "\xff\xfe", "caf\xc3"} {
		_, err := st.GetAccount(ctx, id)
		if !errors.Is(err, tokenstore.ErrInvalid) || errors.Is(err, tokenstore.ErrUnavailable) {
			t.Errorf("GetAccount(%q): %v; want ErrInvalid", id, err)
		}
		_, err = st.ListAccounts(ctx, tokenstore.Filter{TenantID: id})
		if !errors.Is(err, tokenstore.ErrInvalid) || errors.Is(err, tokenstore.ErrUnavailable) {
			t.Errorf("ListAccounts(tenant %q): %v; want ErrInvalid", id, err)
		}
	}
	// A cursor whose id is not text is not a cursor this store gave out.
	for _, c := range []string{"0.1.a\x00", "0.1.\xff"} {
		_, err := st.ListAccounts(ctx, tokenstore.Filter{Cursor: base64.RawURLEncoding.EncodeToString([]byte(c))})
		if !errors.Is(err, tokenstore.ErrInvalidCursor) {
			t.Errorf("ListAccounts(cursor %q): %v; want ErrInvalidCursor", c, err)
		}
	}
}
