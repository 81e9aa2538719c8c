package tokenstore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/testenv"
)

// openPostgresPlanStore opens a store in a schema of its own holding n
// accounts written by one INSERT … SELECT (listings never unseal, so the
// credentials are a placeholder), analyzed as autovacuum would have done.
func openPostgresPlanStore(t testing.TB, n int) *Postgres {
	t.Helper()
	dsn, _ := testenv.PostgresSchema(t)
	sl, err := NewSealer(mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := OpenPostgres(ctx, dsn, sl, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	if _, err := st.pool.Exec(ctx, `INSERT INTO accounts (id, tenant_id, integration, method, status, credentials,
		version, created_at, updated_at, expires_at, has_refresh)
		SELECT 'acc_' || lpad(i::text, 7, '0'), 'tenant_' || lpad((i % 5000)::text, 5, '0'),
			(ARRAY['hubspot', 'salesforce', 'google'])[i % 3 + 1], 'oauth2',
			CASE WHEN i % 4 = 3 THEN 'needs_reauth' ELSE 'active' END, '\x00',
			1, $1::bigint + i * 1000000000, $1::bigint + i * 1000000000, $2::bigint + i, i % 2 = 1
		FROM generate_series(0::bigint, $3::bigint - 1) AS i`, base, base+int64(24*time.Hour), n); err != nil {
		t.Fatal(err)
	}
	if _, err := st.pool.Exec(ctx, "ANALYZE accounts"); err != nil {
		t.Fatal(err)
	}
	return st
}

// pgPlan is PostgreSQL's plan of q with args, one line a step.
func pgPlan(t testing.TB, st *Postgres, q string, args ...any) string {
	t.Helper()
	rows, err := st.pool.Query(context.Background(), "EXPLAIN "+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var lines []string
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, strings.TrimSpace(l))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

// TestPostgresListAccountsSeeks checks the plans of the listing on
// PostgreSQL: for every filter combination the cursor is an index bound
// (not a filter over the rows before the page), nothing is sorted and no
// table is scanned, so that a page a million rows deep costs what the
// first does.
func TestPostgresListAccountsSeeks(t *testing.T) {
	st := openPostgresPlanStore(t, 50_000)
	cur := cursor{at: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(25_000 * time.Second).UnixNano(), id: "acc_0025000"}.encode()
	for _, c := range []struct {
		name  string
		f     Filter
		index string
	}{
		// index is listIndex(f); spelt out so a change there shows here.
		{"none", Filter{}, "accounts_newest"},
		{"cursor", Filter{Cursor: cur}, "accounts_newest"},
		{"status", Filter{Status: account.StatusNeedsReauth, Cursor: cur}, "accounts_status_newest"},
		{"tenant", Filter{TenantID: "tenant_00042", Cursor: cur}, "accounts_tenant_newest"},
		{"integration", Filter{Integration: "hubspot", Cursor: cur}, "accounts_integration_newest"},
		{"status+integration", Filter{Status: account.StatusActive, Integration: "hubspot", Cursor: cur},
			"accounts_status_integration_newest"},
		{"status+tenant", Filter{Status: account.StatusActive, TenantID: "tenant_00042", Cursor: cur}, "accounts_tenant_newest"},
		{"tenant+integration", Filter{TenantID: "tenant_00042", Integration: "hubspot", Cursor: cur}, "accounts_tenant_newest"},
		{"all", Filter{Status: account.StatusActive, TenantID: "tenant_00042", Integration: "hubspot", Cursor: cur},
			"accounts_tenant_newest"},
	} {
		q, args, err := pgListAccountsQuery(c.f, 100)
		if err != nil {
			t.Fatal(err)
		}
		p := pgPlan(t, st, q, args...)
		t.Logf("%s:\n%s", c.name, p)
		if strings.Contains(p, "Seq Scan") {
			t.Errorf("%s: scans the table:\n%s", c.name, p)
		}
		ordered := strings.Contains(p, "Index Scan using "+c.index+" on accounts")
		// A tenant has few accounts: fetching them by the index and
		// sorting that handful is as good as walking in order.
		fetched := c.f.TenantID != "" && strings.Contains(p, "Bitmap Index Scan on "+c.index)
		if !ordered && !fetched {
			t.Errorf("%s: does not walk %s:\n%s", c.name, c.index, p)
		}
		if strings.Contains(p, "Sort") && !fetched {
			t.Errorf("%s: sorts instead of walking an index in order:\n%s", c.name, p)
		}
		bound := false
		for _, l := range strings.Split(p, "\n") {
			if strings.HasPrefix(l, "Filter:") && (strings.Contains(l, "created_at") || strings.Contains(l, "status") && c.index != "accounts_tenant_newest") {
				t.Errorf("%s: filters rows instead of seeking:\n%s", c.name, p)
			}
			if strings.HasPrefix(l, "Index Cond:") && strings.Contains(l, "ROW(") {
				bound = true
			}
		}
		if c.f.Cursor != "" && !bound {
			t.Errorf("%s: the cursor is not an index bound:\n%s", c.name, p)
		}
	}
}

// TestPostgresClaimExpiringSeeks checks that the sweeper's claim walks the
// expiring-tokens index in claim order.
func TestPostgresClaimExpiringSeeks(t *testing.T) {
	st := openPostgresPlanStore(t, 50_000)
	now := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC).UnixNano()
	p := pgPlan(t, st, strings.Replace(pgClaimExpiringQuery, "RETURNING id, expires_at", "", 1),
		now+int64(time.Minute), now+int64(time.Hour), now, 100)
	t.Log(p)
	if strings.Contains(p, "Seq Scan") || strings.Contains(p, "Sort") || !strings.Contains(p, "Index Scan using accounts_expiring") {
		t.Errorf("claim does not walk the expiring index:\n%s", p)
	}
}
