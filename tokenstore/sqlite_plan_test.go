package tokenstore

import (
	"context"
	"database/sql"
	"fmt"
	"math"
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
// listings never unseal, so one sealed blob serves every row. Every other
// account is an oauth2 account with a refresh token expiring in a day. The
// database is left without statistics, as a gateway's is: nothing runs
// ANALYZE.
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
		credentials, version, created_at, updated_at, expires_at, has_refresh)
		VALUES (?, ?, ?, 'oauth2', ?, '{}', ?, 1, ?, ?, ?, ?)`)
	if err != nil {
		t.Fatal(err)
	}
	statuses := []account.Status{account.StatusActive, account.StatusActive, account.StatusActive, account.StatusNeedsReauth}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	for i := range n {
		at := base + int64(i)*int64(time.Second)
		if _, err := ins.ExecContext(ctx, fmt.Sprintf("acc_%07d", i), fmt.Sprintf("tenant_%05d", i%5000),
			[]string{"hubspot", "salesforce", "google"}[i%3], string(statuses[i%4]), blob, at, at,
			base+int64(24*time.Hour)+int64(i), i%2); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// queryPlan is SQLite's plan of q, its steps joined by "; ".
func queryPlan(t testing.TB, db interface {
	Query(string, ...any) (*sql.Rows, error)
}, q string, args ...any) string {
	t.Helper()
	rows, err := db.Query("EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "; ")
}

// analyzed runs check on a database without statistics (as every gateway's
// is: nothing runs ANALYZE) and again once ANALYZE has run, so that a plan
// holds either way.
func analyzed(t *testing.T, st *SQLite, check func(t *testing.T)) {
	t.Run("no_statistics", check)
	if _, err := st.w.Exec("ANALYZE"); err != nil {
		t.Fatal(err)
	}
	t.Run("analyzed", check)
}

// TestListAccountsUsesIndexes checks the query plans of the listing: every
// filter combination seeks in the index that matches its equalities and
// walks it in page order, the cursor included in the seek, so that a page
// a million rows deep reads no more rows than the first.
func TestListAccountsUsesIndexes(t *testing.T) {
	st := openPlanStore(t)
	fillAccounts(t, st, 2000)
	cur := cursor{at: time.Now().UnixNano(), id: "acc_x"}.encode()
	from, before := time.Date(2026, 1, 1, 0, 10, 0, 0, time.UTC), time.Date(2026, 1, 1, 0, 20, 0, 0, time.UTC)
	cases := []struct {
		name string
		f    Filter
		want string // the SEARCH step expected, empty for a search
	}{
		{"none", Filter{}, "SCAN accounts USING INDEX accounts_newest"},
		{"cursor", Filter{Cursor: cur}, "SEARCH accounts USING INDEX accounts_newest ((created_at,id)<(?,?))"},
		{"status", Filter{Status: account.StatusNeedsReauth, Cursor: cur},
			"SEARCH accounts USING INDEX accounts_status_newest (status=? AND (created_at,id)<(?,?))"},
		{"tenant", Filter{TenantID: "tenant_00042", Cursor: cur},
			"SEARCH accounts USING INDEX accounts_tenant_newest (tenant_id=? AND (created_at,id)<(?,?))"},
		{"integration", Filter{Integration: "hubspot", Cursor: cur},
			"SEARCH accounts USING INDEX accounts_integration_newest (integration=? AND (created_at,id)<(?,?))"},
		{"status+integration", Filter{Status: account.StatusActive, Integration: "hubspot", Cursor: cur},
			"SEARCH accounts USING INDEX accounts_status_integration_newest (status=? AND integration=? AND (created_at,id)<(?,?))"},
		{"status+tenant", Filter{Status: account.StatusActive, TenantID: "tenant_00042", Cursor: cur},
			"SEARCH accounts USING INDEX accounts_tenant_newest (tenant_id=? AND (created_at,id)<(?,?))"},
		{"tenant+integration", Filter{TenantID: "tenant_00042", Integration: "hubspot", Cursor: cur},
			"SEARCH accounts USING INDEX accounts_tenant_newest (tenant_id=? AND (created_at,id)<(?,?))"},
		{"all", Filter{Status: account.StatusActive, TenantID: "tenant_00042", Integration: "hubspot", Cursor: cur},
			"SEARCH accounts USING INDEX accounts_tenant_newest (tenant_id=? AND (created_at,id)<(?,?))"},
		{"search", Filter{Search: "acc_00001", Cursor: cur}, ""},
		{"created", Filter{CreatedFrom: from, CreatedBefore: before},
			"SEARCH accounts USING INDEX accounts_newest (created_at>? AND (created_at,id)<(?,?))"},
		{"created+cursor", Filter{CreatedFrom: from, CreatedBefore: before, Cursor: cur},
			"SEARCH accounts USING INDEX accounts_newest (created_at>? AND (created_at,id)<(?,?))"},
		{"status+created", Filter{Status: account.StatusNeedsReauth, CreatedFrom: from, Cursor: cur},
			"SEARCH accounts USING INDEX accounts_status_newest (status=? AND created_at>? AND (created_at,id)<(?,?))"},
		{"tenant+created", Filter{TenantID: "tenant_00042", CreatedFrom: from},
			"SEARCH accounts USING INDEX accounts_tenant_newest (tenant_id=? AND created_at>?)"},
		{"status+integration+created", Filter{Status: account.StatusActive, Integration: "hubspot", CreatedBefore: before},
			"SEARCH accounts USING INDEX accounts_status_integration_newest (status=? AND integration=? AND (created_at,id)<(?,?))"},
	}
	analyzed(t, st, func(t *testing.T) {
		for _, c := range cases {
			q, args, err := listAccountsQuery(c.f, 100)
			if err != nil {
				t.Fatal(err)
			}
			p := queryPlan(t, st.r, q, args...)
			t.Logf("%s: %s", c.name, p)
			if strings.Contains(p, "SCAN accounts") && !strings.Contains(p, "USING") {
				t.Errorf("%s: full table scan: %s", c.name, p)
			}
			if c.want == "" {
				continue
			}
			if strings.Contains(p, "TEMP B-TREE") {
				t.Errorf("%s: sorts instead of walking an index: %s", c.name, p)
			}
			if !strings.HasPrefix(p, c.want) {
				t.Errorf("%s: plan %q, want %q", c.name, p, c.want)
			}
		}
	})
}

// TestClaimExpiringSeeksTheExpiringIndex checks the sweeper's claim: it
// must seek the expiring-tokens index in claim order, never walk the
// active accounts, whether or not statistics exist.
func TestClaimExpiringSeeksTheExpiringIndex(t *testing.T) {
	st := openPlanStore(t)
	fillAccounts(t, st, 2000)
	analyzed(t, st, func(t *testing.T) {
		p := queryPlan(t, st.w, claimExpiringQuery, time.Now().UnixNano(), time.Now().UnixNano(), 100)
		t.Log(p)
		if want := "SEARCH accounts USING INDEX accounts_expiring (expires_at>? AND expires_at<?)"; p != want {
			t.Errorf("claim plan %q, want %q", p, want)
		}
	})
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

// fillOutbox writes n events, two an account (so that half the deliveries
// wait for the one before them), and a pending delivery of each to three
// endpoints, as a burst of alarms leaves the outbox.
func fillOutbox(t testing.TB, st *SQLite, n int) {
	t.Helper()
	for _, q := range []string{
		`WITH RECURSIVE i(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM i WHERE i < ?)
		INSERT INTO events (id, name, account_id, payload, created_at)
			SELECT printf('evt_%07d', i), 'integrated_account:authentication_error', printf('acc_%07d', i / 2), '{}', i FROM i`,
		`WITH RECURSIVE i(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM i WHERE i < ?)
		INSERT INTO deliveries (id, event_id, endpoint, status, next_attempt_at, created_at, updated_at)
			SELECT printf('dlv_%07d_%d', i, ep), printf('evt_%07d', i), 'http://127.0.0.1:' || ep || '/hook', 'pending', 5000, 5000, 5000
			FROM i, (SELECT 1 AS ep UNION ALL SELECT 2 UNION ALL SELECT 3)`,
	} {
		if _, err := st.w.Exec(q, n); err != nil {
			t.Fatal(err)
		}
	}
}

// TestClaimEndpointSeeks checks the dispatcher's claim of one endpoint's
// deliveries: a seek into that endpoint's part of deliveries_endpoint_due
// in claim order, and for the order check a seek per candidate into the
// account's earlier events and their pending deliveries to that endpoint —
// never a walk of the backlog, with or without statistics.
func TestClaimEndpointSeeks(t *testing.T) {
	st := openPlanStore(t)
	fillOutbox(t, st, 2000)
	analyzed(t, st, func(t *testing.T) {
		p := queryPlan(t, st.w, sqliteClaimEndpointQuery, "http://127.0.0.1:2/hook", int64(10_000), int64(10_000), int64(math.MaxInt64), 4)
		t.Log(p)
		for _, want := range []string{
			"SEARCH d USING INDEX deliveries_endpoint_due (endpoint=? AND next_attempt_at<?)",
			"SEARCH e USING INDEX sqlite_autoindex_events_1 (id=?)",
			"SEARCH pe USING INDEX events_account_seq (account_id=? AND seq<?)",
			"SEARCH p USING COVERING INDEX deliveries_event_pending (event_id=? AND endpoint=?)",
		} {
			if !strings.Contains(p, want) {
				t.Errorf("claim plan lacks %q", want)
			}
		}
		if strings.Contains(p, "TEMP B-TREE") {
			t.Errorf("claim sorts instead of walking the index: %s", p)
		}
	})
}
