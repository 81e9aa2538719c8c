package tokenstore

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/testenv"
)

// openPostgresPlanStore opens a store in a schema of its own holding n
// accounts written by one INSERT … SELECT (listings never unseal, so the
// credentials are a placeholder), not analyzed.
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
	return st
}

// pgAnalyzed runs check on tables without statistics (as they are right
// after a bulk import, before autovacuum has looked) and again once ANALYZE
// has run, so that a plan holds either way.
func pgAnalyzed(t *testing.T, st *Postgres, check func(t *testing.T)) {
	t.Run("no_statistics", check)
	if _, err := st.pool.Exec(context.Background(), "ANALYZE"); err != nil {
		t.Fatal(err)
	}
	t.Run("analyzed", check)
}

// pgPinnedPlan is the plan of q as ListAccounts runs it: in pinnedRead.
func pgPinnedPlan(t testing.TB, st *Postgres, q string, args ...any) string {
	t.Helper()
	var lines []string
	err := st.pinnedRead(context.Background(), "explaining", func(tx pgQuerier) error {
		rows, err := tx.Query(context.Background(), "EXPLAIN "+q, args...)
		if err != nil {
			return err
		}
		lines, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, "\n")
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
// first does — before statistics exist (right after a bulk import) and
// after.
func TestPostgresListAccountsSeeks(t *testing.T) {
	st := openPostgresPlanStore(t, 50_000)
	cur := cursor{at: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(25_000 * time.Second).UnixNano(), id: "acc_0025000"}.encode()
	from, before := time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC), time.Date(2026, 1, 1, 6, 0, 0, 0, time.UTC)
	pgAnalyzed(t, st, func(t *testing.T) {
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
			{"created", Filter{CreatedFrom: from, CreatedBefore: before}, "accounts_newest"},
			{"created+cursor", Filter{CreatedFrom: from, CreatedBefore: before, Cursor: cur}, "accounts_newest"},
			{"status+created", Filter{Status: account.StatusNeedsReauth, CreatedFrom: from, Cursor: cur}, "accounts_status_newest"},
			{"integration+created", Filter{Integration: "hubspot", CreatedBefore: before}, "accounts_integration_newest"},
			{"status+integration+created", Filter{Status: account.StatusActive, Integration: "hubspot", CreatedFrom: from, CreatedBefore: before},
				"accounts_status_integration_newest"},
		} {
			q, args, err := pgListAccountsQuery(c.f, 100)
			if err != nil {
				t.Fatal(err)
			}
			p := pgPinnedPlan(t, st, q, args...)
			t.Logf("%s:\n%s", c.name, p)
			if strings.Contains(p, "Seq Scan") {
				t.Errorf("%s: scans the table:\n%s", c.name, p)
			}
			if !strings.Contains(p, "Index Scan using "+c.index+" on accounts") {
				t.Errorf("%s: does not walk %s:\n%s", c.name, c.index, p)
			}
			if strings.Contains(p, "Sort") || strings.Contains(p, "Bitmap") {
				t.Errorf("%s: fetches and sorts instead of walking an index in order:\n%s", c.name, p)
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
			if (c.f.Cursor != "" || !c.f.CreatedBefore.IsZero()) && !bound {
				t.Errorf("%s: the cursor is not an index bound:\n%s", c.name, p)
			}
		}
	})
}

// TestPostgresClaimExpiringSeeks checks that the sweeper's claim walks the
// expiring-tokens index in claim order.
func TestPostgresClaimExpiringSeeks(t *testing.T) {
	st := openPostgresPlanStore(t, 50_000)
	now := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC).UnixNano()
	pgAnalyzed(t, st, func(t *testing.T) {
		p := pgPlan(t, st, strings.Replace(pgClaimExpiringQuery, "RETURNING id, expires_at", "", 1),
			now+int64(time.Minute), now+int64(time.Hour), now, 100)
		t.Log(p)
		if strings.Contains(p, "Seq Scan") || strings.Contains(p, "Sort") || !strings.Contains(p, "Index Scan using accounts_expiring") {
			t.Errorf("claim does not walk the expiring index:\n%s", p)
		}
	})
}

// fillPostgresOutbox writes n events, two an account (so that half the
// deliveries wait for the one before them), and a pending delivery of each
// to three endpoints, as a burst of alarms leaves the outbox, and
// leases the first endpoint's first deliveries as if they were on the wire.
// Nothing is analyzed: a burst is claimed before autovacuum has looked.
func fillPostgresOutbox(t testing.TB, st *Postgres, n int) {
	t.Helper()
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO events (id, name, account_id, payload, created_at)
			SELECT 'evt_' || lpad(i::text, 7, '0'), 'integrated_account:authentication_error',
				'acc_' || lpad((i / 2)::text, 7, '0'), '{}', i
			FROM generate_series(1, $1::int) AS i`,
		`INSERT INTO deliveries (id, event_id, endpoint, status, next_attempt_at, created_at, updated_at)
			SELECT 'dlv_' || lpad(i::text, 7, '0') || '_' || ep, 'evt_' || lpad(i::text, 7, '0'), 'http://127.0.0.1:' || ep || '/hook', 'pending', 5000, 5000, 5000
			FROM generate_series(1, $1::int) AS i, generate_series(1, 3) AS ep`,
		`UPDATE deliveries SET lease_until = 9000000000000000000
			WHERE endpoint = 'http://127.0.0.1:1/hook' AND event_id IN ('evt_0000001', 'evt_0000002', 'evt_0000003', 'evt_0000004') AND $1::int > 0`,
	} {
		if _, err := st.pool.Exec(ctx, q, n); err != nil {
			t.Fatal(err)
		}
	}
}

// pgBuffers is the number of shared buffers EXPLAIN ANALYZE says q touched
// (the top node's count), run in a transaction that is rolled back.
func pgBuffers(t testing.TB, st *Postgres, q string, args ...any) (int, string) {
	t.Helper()
	ctx := context.Background()
	tx, err := st.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	plan := strings.Join(lines, "\n")
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if rest, ok := strings.CutPrefix(l, "Buffers: shared hit="); ok {
			n, _ := strconv.Atoi(strings.FieldsFunc(rest, func(r rune) bool { return r < '0' || r > '9' })[0])
			return n, plan
		}
	}
	return 0, plan
}

// TestPostgresClaimEndpointSeeks checks the dispatcher's claim on an outbox
// holding a burst of 10,000 alarms to three endpoints, before and after
// ANALYZE: each endpoint's claim walks its own part of
// deliveries_endpoint_due and stops at its limit, and the order check is a
// seek into deliveries_event_pending per candidate, so that a claim reads a
// few dozen buffers whatever the backlog. (Planned on its own, the check
// read every pending delivery of the endpoint for each candidate: about
// 200,000 buffers a claim at 10,000 alarms.)
func TestPostgresClaimEndpointSeeks(t *testing.T) {
	st := openPostgresPlanStore(t, 0)
	fillPostgresOutbox(t, st, 10_000)
	check := func(t *testing.T) {
		q, args := pgClaimQuery(10_000, 1, []EndpointClaim{
			{Endpoint: "http://127.0.0.1:1/hook", Limit: 4},
			{Endpoint: "http://127.0.0.1:2/hook", Limit: 4},
		})
		bufs, plan := pgBuffers(t, st, q, args...)
		t.Logf("%d buffers\n%s", bufs, plan)
		for _, want := range []string{"Index Scan using deliveries_endpoint_due on deliveries d",
			"using deliveries_event_pending on deliveries q", "Index Scan using events_id_key on events e",
			"deliveries_pkey"} {
			if !strings.Contains(plan, want) {
				t.Errorf("claim plan lacks %q", want)
			}
		}
		if n := strings.Count(plan, "Index Scan using deliveries_endpoint_due on deliveries d"); n != 2 {
			t.Errorf("claim plan seeks deliveries_endpoint_due %d times, want once per endpoint", n)
		}
		for _, bad := range []string{"Seq Scan", "deliveries_endpoint_due on deliveries q"} {
			if strings.Contains(plan, bad) {
				t.Errorf("claim plan has %q", bad)
			}
		}
		// Measured: about 150; the statement planned by statistics read
		// about 200,000 at 10,000 alarms.
		if bufs == 0 || bufs > 400 {
			t.Errorf("a claim of 8 read %d buffers, want a few hundred at most", bufs)
		}
	}
	pgAnalyzed(t, st, check)
}
