package tokenstore

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/account"
)

func openPlanStore(t testing.TB) *SQLite {
	t.Helper()
	sl, err := NewSealer(mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	st, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "linkgate.db"), sl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// fillAccounts inserts n accounts in one transaction, bypassing sealing:
// listings never unseal, so one sealed blob serves every row.
func fillAccounts(t testing.TB, st *SQLite, n int) {
	t.Helper()
	blob, err := st.sealer.Seal([]byte("{}"), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tx, err := st.w.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	ins, err := tx.PrepareContext(ctx, `INSERT INTO accounts (id, tenant_id, integration, method, status, context,
		credentials, version, created_at, updated_at) VALUES (?, ?, ?, 'oauth2', ?, '{}', ?, 1, ?, ?)`)
	if err != nil {
		t.Fatal(err)
	}
	statuses := []account.Status{account.StatusActive, account.StatusActive, account.StatusActive, account.StatusNeedsReauth}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	for i := range n {
		at := base + int64(i)*int64(time.Second)
		if _, err := ins.ExecContext(ctx, fmt.Sprintf("acc_%07d", i), fmt.Sprintf("tenant_%05d", i%5000),
			[]string{"hubspot", "salesforce", "google"}[i%3], string(statuses[i%4]), blob, at, at); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.ExecContext(ctx, "ANALYZE"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestListAccountsUsesIndexes checks the query plans of the listing: no
// filter may need a full table scan with a sort, which at 100,000 accounts
// would read every row for every page.
func TestListAccountsUsesIndexes(t *testing.T) {
	st := openPlanStore(t)
	fillAccounts(t, st, 2000)
	cur := cursor{at: time.Now().UnixNano(), id: "acc_x"}.encode()
	for name, f := range map[string]Filter{
		"none":               {},
		"cursor":             {Cursor: cur},
		"status":             {Status: account.StatusNeedsReauth, Cursor: cur},
		"tenant":             {TenantID: "tenant_00042", Cursor: cur},
		"integration":        {Integration: "hubspot"},
		"status+integration": {Status: account.StatusActive, Integration: "hubspot", Cursor: cur},
		"search":             {Search: "acc_00001", Cursor: cur},
	} {
		q, args, err := listAccountsQuery(f, 100)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := st.r.Query("EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		p := strings.Join(plan, "; ")
		t.Logf("%s: %s", name, p)
		if strings.Contains(p, "SCAN accounts") && !strings.Contains(p, "USING") {
			t.Errorf("%s: full table scan: %s", name, p)
		}
		if f.Search == "" && strings.Contains(p, "TEMP B-TREE") {
			t.Errorf("%s: sorts instead of walking an index: %s", name, p)
		}
	}
}

// BenchmarkSQLiteListAccounts100k reads a deep page of a filtered listing of
// 100,000 accounts.
func BenchmarkSQLiteListAccounts100k(b *testing.B) {
	st := openPlanStore(b)
	fillAccounts(b, st, 100_000)
	ctx := context.Background()
	first, err := st.ListAccounts(ctx, Filter{Status: account.StatusActive, Limit: 100})
	if err != nil || first.NextCursor == "" {
		b.Fatal(err)
	}
	// A cursor half way down the listing.
	deep := cursor{at: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(50_000 * time.Second).UnixNano(), id: "acc_0050000"}.encode()
	b.ReportAllocs()
	for b.Loop() {
		p, err := st.ListAccounts(ctx, Filter{Status: account.StatusActive, Cursor: deep, Limit: 100})
		if err != nil || len(p.Accounts) != 100 {
			b.Fatal(len(p.Accounts), err)
		}
	}
}
