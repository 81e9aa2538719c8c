// Command scale measures how linkgate's store-side costs grow with the
// number of accounts. bench/scale.sh drives it; each subcommand prints one
// JSON object of figures.
//
//	scale gen -n N                           JSON lines of N accounts for caddy linkgate-import
//	scale mark -store S -db D -n N            1 % of the accounts needs_reauth, as a live base has
//	scale measure -store S -db D -key K -n N  claim time, list pages at depth, cache heap and RSS
//	scale webhooks -store S -db D -key K      drain times of 10,000 alarms with a slow endpoint
//	                                          (-slow 0: three healthy endpoints)
//
// S is sqlite or postgres; D is the SQLite file or the PostgreSQL DSN; K
// is the base64 encryption key the accounts were sealed with.
package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
	"github.com/linkgate/linkgate/webhook"
)

func main() {
	log.SetFlags(0)
	if len(os.Args) < 2 {
		log.Fatal("usage: scale gen|mark|measure|webhooks [flags]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	n := fs.Int("n", 10_000, "number of accounts")
	store := fs.String("store", "sqlite", "sqlite or postgres")
	db := fs.String("db", "", "SQLite file or PostgreSQL DSN")
	key := fs.String("key", "", "base64 encryption key")
	touch := fs.Int("touch", 200_000, "accounts read through the cache (at most -n)")
	cacheSize := fs.Int64("cache", 64<<20, "cache_size in bytes")
	alarms := fs.Int("alarms", 10_000, "webhook events")
	slowDelay := fs.Duration("slow", 2*time.Second, "answer time of the slow endpoint")
	ids := fs.String("ids", "seq", "gen: seq (ids in insertion order, which measure names) or random (UUIDs, as a migration brings)")
	_ = fs.Parse(os.Args[2:])
	var out any
	switch os.Args[1] {
	case "gen":
		gen(*n, *ids == "random")
		return
	case "mark":
		out = mark(*store, *db, *n)
	case "measure":
		pgDSN := ""
		if *store == "postgres" {
			pgDSN = *db
		}
		out = measure(openStore(*store, *db, *key), *n, min(*touch, *n), *cacheSize, pgDSN)
	case "webhooks":
		emptyOutbox(*store, *db)
		pgDSN := ""
		if *store == "postgres" {
			pgDSN = *db
		}
		out = webhooks(openStore(*store, *db, *key), *alarms, *slowDelay, pgDSN)
	default:
		log.Fatalf("unknown subcommand %q", os.Args[1])
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}

// accountID is the UUID of the i-th generated account, so that measure can
// name accounts without reading them.
func accountID(i int) string {
	return fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
}

// gen writes n import rows: two in three OAuth accounts (on two
// integrations) whose tokens expire 2 to 30 days out, so that an idle
// gateway has nothing to refresh; the others API-key accounts; three
// accounts a tenant. With random, ids are random UUIDs and tenants and
// expiries are shuffled, as in a migration from another vendor: every
// index then takes its inserts at random places.
func gen(n int, random bool) {
	w := bufio.NewWriterSize(os.Stdout, 1<<20)
	defer w.Flush()
	now := time.Now().UTC()
	for i := range n {
		id, tenant, minute := accountID(i), fmt.Sprintf("tenant-%07d", i/3), i%(28*24*60)
		if random {
			id, tenant, minute = uuid.NewString(), fmt.Sprintf("tenant-%016x", uint64(i/3)*0x9E3779B97F4A7C15), mrand.IntN(28*24*60)
		}
		switch i % 3 {
		case 0, 1:
			integ := []string{"crm", "mail"}[i%2]
			exp := now.Add(48*time.Hour + time.Duration(minute)*time.Minute).Format(time.RFC3339)
			fmt.Fprintf(w, `{"id":%q,"tenant_id":%q,"integration":%q,"context":{"portal_id":"%d","oauth":{"token":{"access_token":"at-%d-0123456789abcdef0123456789abcdef0123456789abcdef","refresh_token":"rt-%d-0123456789abcdef","token_type":"bearer","scope":"crm.objects.contacts.read","expiry":%q}}}}`+"\n",
				id, tenant, integ, i, i, i, exp)
		default:
			fmt.Fprintf(w, `{"id":%q,"tenant_id":%q,"integration":"keyed","context":{"api_key":"key-%d-0123456789abcdef"}}`+"\n",
				id, tenant, i)
		}
	}
}

// mark turns every hundredth account needs_reauth, directly in SQL (an
// import makes every account active).
func mark(store, db string, n int) map[string]any {
	ctx := context.Background()
	ids := make([]string, 0, n/100+1)
	for i := 50; i < n; i += 100 {
		ids = append(ids, accountID(i))
	}
	switch store {
	case "sqlite":
		d, err := sql.Open("sqlite", "file:"+db+"?_pragma=busy_timeout(10000)")
		if err != nil {
			log.Fatal(err)
		}
		defer d.Close()
		tx, err := d.Begin()
		if err != nil {
			log.Fatal(err)
		}
		for _, id := range ids {
			if _, err := tx.Exec("UPDATE accounts SET status = 'needs_reauth' WHERE id = ?", id); err != nil {
				log.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			log.Fatal(err)
		}
	default:
		c, err := pgx.Connect(ctx, db)
		if err != nil {
			log.Fatal(err)
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "UPDATE accounts SET status = 'needs_reauth' WHERE id = ANY($1)", ids); err != nil {
			log.Fatal(err)
		}
		if _, err := c.Exec(ctx, "ANALYZE accounts"); err != nil {
			log.Fatal(err)
		}
	}
	return map[string]any{"needs_reauth": len(ids)}
}

// emptyOutbox deletes the events and deliveries an earlier run left, so
// that runs on a kept database measure the same backlog.
func emptyOutbox(store, db string) {
	ctx := context.Background()
	switch store {
	case "sqlite":
		d, err := sql.Open("sqlite", "file:"+db+"?_pragma=busy_timeout(10000)")
		if err != nil {
			log.Fatal(err)
		}
		defer d.Close()
		for _, q := range []string{"DELETE FROM deliveries", "DELETE FROM events"} {
			if _, err := d.Exec(q); err != nil {
				log.Fatal(err)
			}
		}
	default:
		c, err := pgx.Connect(ctx, db)
		if err != nil {
			log.Fatal(err)
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DELETE FROM deliveries; DELETE FROM events"); err != nil {
			log.Fatal(err)
		}
	}
}

// loadAverage is the one-minute load average, to read timings against.
func loadAverage() string {
	b, _ := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return ""
}

type closer interface {
	tokenstore.Store
	tokenstore.Importer
}

func openStore(store, db, key string) closer {
	k, err := tokenstore.ParseKey(key)
	if err != nil {
		log.Fatal(err)
	}
	s, err := tokenstore.NewSealer(k)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if store == "sqlite" {
		st, err := tokenstore.OpenSQLite(ctx, db, s)
		if err != nil {
			log.Fatal(err)
		}
		return st
	}
	st, err := tokenstore.OpenPostgres(ctx, db, s, tokenstore.PostgresOptions{})
	if err != nil {
		log.Fatal(err)
	}
	return st
}

// timeIt runs f reps times and returns the median and the worst, in ms.
func timeIt(reps int, f func()) (median, worst float64) {
	ds := make([]float64, reps)
	for i := range ds {
		t0 := time.Now()
		f()
		ds[i] = float64(time.Since(t0).Microseconds()) / 1000
	}
	slices.Sort(ds)
	return ds[len(ds)/2], ds[len(ds)-1]
}

// cpuPerCall is the CPU time in ms one call of f costs, this process's and
// the PostgreSQL backends' of pgDSN (when set) together, over reps calls:
// steadier than wall time on a loaded machine.
func cpuPerCall(ctx context.Context, pgDSN string, reps int, f func()) float64 {
	c0, d0 := cpuSeconds(), dbCPUSeconds(ctx, pgDSN)
	for range reps {
		f()
	}
	total := cpuSeconds() - c0
	if d0 >= 0 {
		total += dbCPUSeconds(ctx, pgDSN) - d0
	}
	return total * 1000 / float64(reps)
}

func measure(st closer, n, touch int, cacheSize int64, pgDSN string) map[string]any {
	ctx := context.Background()
	out := map[string]any{"accounts": n, "load_start": loadAverage()}
	defer func() { out["load_end"] = loadAverage() }()

	// The idle sweeper's claim: nothing expires within its window.
	med, worst := timeIt(50, func() {
		ids, err := st.ClaimExpiring(ctx, time.Now().Add(10*time.Minute), time.Minute, 100)
		if err != nil || len(ids) != 0 {
			log.Fatalf("idle claim: %d, %v", len(ids), err)
		}
	})
	out["claim_idle_ms"], out["claim_idle_worst_ms"] = med, worst
	out["claim_idle_cpu_ms"] = cpuPerCall(ctx, pgDSN, 300, func() {
		if _, err := st.ClaimExpiring(ctx, time.Now().Add(10*time.Minute), time.Minute, 100); err != nil {
			log.Fatal(err)
		}
	})
	// A claim with work: a full batch of 100 (leases of 1 ns, so the same
	// accounts come back each time).
	med, worst = timeIt(50, func() {
		ids, err := st.ClaimExpiring(ctx, time.Now().Add(40*24*time.Hour), time.Nanosecond, 100)
		if err != nil || len(ids) != 100 {
			log.Fatalf("claim: %d, %v", len(ids), err)
		}
	})
	out["claim_100_ms"], out["claim_100_worst_ms"] = med, worst
	out["claim_100_cpu_ms"] = cpuPerCall(ctx, pgDSN, 100, func() {
		if _, err := st.ClaimExpiring(ctx, time.Now().Add(40*24*time.Hour), time.Nanosecond, 100); err != nil {
			log.Fatal(err)
		}
	})

	// Pages of 100, 90 % deep, for each filter.
	filters := map[string]tokenstore.Filter{
		"none":               {},
		"status":             {Status: account.StatusNeedsReauth},
		"integration":        {Integration: "crm"},
		"status+integration": {Status: account.StatusActive, Integration: "mail"},
		"tenant":             {TenantID: fmt.Sprintf("tenant-%07d", n/3/10)},
	}
	filters["status+tenant"] = tokenstore.Filter{Status: account.StatusActive, TenantID: fmt.Sprintf("tenant-%07d", n/3/10)}
	pages := map[string]any{}
	// The first page of a created_at range 90 % down the listing: a seek,
	// not a walk from the newest account.
	if p, err := st.ListAccounts(ctx, tokenstore.Filter{Cursor: deepCursor(ctx, st, tokenstore.Filter{}, 0.9), Limit: 1}); err == nil && len(p.Accounts) == 1 {
		before := p.Accounts[0].CreatedAt
		for name, f := range map[string]tokenstore.Filter{
			"created_range":        {CreatedFrom: before.Add(-10 * time.Second), CreatedBefore: before, Limit: 100},
			"status+created_range": {Status: account.StatusNeedsReauth, CreatedFrom: before.Add(-10 * time.Second), CreatedBefore: before, Limit: 100},
		} {
			var got int
			med, worst := timeIt(30, func() {
				p, err := st.ListAccounts(ctx, f)
				if err != nil {
					log.Fatal(err)
				}
				got = len(p.Accounts)
			})
			cpu := cpuPerCall(ctx, pgDSN, 300, func() {
				if _, err := st.ListAccounts(ctx, f); err != nil {
					log.Fatal(err)
				}
			})
			pages[name] = map[string]float64{"median_ms": med, "worst_ms": worst, "rows": float64(got), "cpu_ms": cpu}
		}
	}
	for name, f := range filters {
		cur := deepCursor(ctx, st, f, 0.9)
		f.Cursor, f.Limit = cur, 100
		med, worst := timeIt(30, func() {
			if _, err := st.ListAccounts(ctx, f); err != nil {
				log.Fatal(err)
			}
		})
		cpu := cpuPerCall(ctx, pgDSN, 300, func() {
			if _, err := st.ListAccounts(ctx, f); err != nil {
				log.Fatal(err)
			}
		})
		pages[name] = map[string]float64{"median_ms": med, "worst_ms": worst, "cpu_ms": cpu}
	}
	out["page_90pct_deep"] = pages

	// Heap and RSS after reading touch accounts through the cache.
	c, err := tokenstore.NewCached(st, cacheSize)
	if err != nil {
		log.Fatal(err)
	}
	heap0, rss0 := heapAndRSS()
	for i := range touch {
		if _, err := c.GetAccount(ctx, accountID(i)); err != nil {
			log.Fatalf("account %d: %v", i, err)
		}
	}
	time.Sleep(100 * time.Millisecond) // ristretto applies its buffered sets
	heap1, rss1 := heapAndRSS()
	out["cache_size_mib"] = float64(cacheSize) / (1 << 20)
	out["touched"] = touch
	out["cache_heap_mib"] = float64(heap1-heap0) / (1 << 20)
	out["rss_mib"] = float64(rss1) / (1 << 20)
	out["rss_growth_mib"] = float64(rss1-rss0) / (1 << 20)
	runtime.KeepAlive(c)
	return out
}

// deepCursor finds the cursor of the page that starts at fraction of the
// listing of f, by walking pages of 1000 (a one-off, not timed).
func deepCursor(ctx context.Context, st tokenstore.Store, f tokenstore.Filter, fraction float64) string {
	var total int
	var cursors []string
	f.Limit = 1000
	for {
		p, err := st.ListAccounts(ctx, f)
		if err != nil {
			log.Fatal(err)
		}
		total += len(p.Accounts)
		if p.NextCursor == "" {
			break
		}
		cursors = append(cursors, p.NextCursor)
		f.Cursor = p.NextCursor
	}
	if len(cursors) == 0 {
		return ""
	}
	return cursors[min(len(cursors)-1, int(float64(len(cursors))*fraction))]
}

func heapAndRSS() (heap, rss uint64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	b, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmRSS:") {
				f := strings.Fields(l)
				kb, _ := strconv.ParseUint(f[1], 10, 64)
				rss = kb << 10
			}
		}
	}
	return m.HeapAlloc, rss
}

// countingOutbox counts the dispatcher's fan-outs, claims and finished
// attempts.
type countingOutbox struct {
	tokenstore.Outbox
	fanOuts, claims, finishes atomic.Int64
}

func (c *countingOutbox) FanOut(ctx context.Context, limit int, f func(tokenstore.Event) []string) ([]tokenstore.Event, error) {
	c.fanOuts.Add(1)
	return c.Outbox.FanOut(ctx, limit, f)
}

func (c *countingOutbox) ClaimEndpointDeliveries(ctx context.Context, now time.Time, lease time.Duration, claims []tokenstore.EndpointClaim) ([]tokenstore.Delivery, error) {
	c.claims.Add(1)
	return c.Outbox.ClaimEndpointDeliveries(ctx, now, lease, claims)
}

func (c *countingOutbox) FinishAttempt(ctx context.Context, d *tokenstore.Delivery) error {
	c.finishes.Add(1)
	return c.Outbox.FinishAttempt(ctx, d)
}

func (c *countingOutbox) snapshot() [3]int64 {
	return [3]int64{c.fanOuts.Load(), c.claims.Load(), c.finishes.Load()}
}

// dbCPUSeconds is the CPU time of the PostgreSQL backends connected to the
// database of dsn (they run on this machine), from /proc; -1 without a
// dsn (SQLite's work is in this process's own CPU time).
func dbCPUSeconds(ctx context.Context, dsn string) float64 {
	if dsn == "" {
		return -1
	}
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
	if err != nil {
		log.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		log.Fatal(err)
	}
	tick := 100.0 // USER_HZ on Linux
	var total float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		u, _ := strconv.ParseFloat(f[11], 64)
		s, _ := strconv.ParseFloat(f[12], 64)
		total += (u + s) / tick
	}
	return total
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// webhooks sends alarms events to three endpoints, one answering in
// slowDelay, and reports when each healthy endpoint had them all, and the
// CPU the process spends per minute while only the slow endpoint's backlog
// is left. With slowDelay 0 all three are healthy and all three drains are
// reported.
func webhooks(st closer, alarms int, slowDelay time.Duration, pgDSN string) map[string]any {
	ctx := context.Background()
	var counts [3]atomic.Int64
	done := [3]chan struct{}{make(chan struct{}), make(chan struct{}), make(chan struct{})}
	var once [3]sync.Once
	var eps []webhook.Endpoint
	for i := range 3 {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if i == 0 && slowDelay > 0 {
				select {
				case <-time.After(slowDelay):
				case <-r.Context().Done():
					return
				}
			}
			if counts[i].Add(1) == int64(alarms) {
				once[i].Do(func() { close(done[i]) })
			}
		}))
		defer srv.Close()
		eps = append(eps, webhook.Endpoint{URL: srv.URL + "/hook", Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
	}
	for i := 0; i < alarms; i += 1000 {
		var evs []tokenstore.Event
		for j := i; j < min(i+1000, alarms); j++ {
			evs = append(evs, tokenstore.Event{Name: account.EventAuthenticationError, AccountID: accountID(j), Payload: []byte(`{"id":"` + accountID(j) + `"}`)})
		}
		if err := st.AddEvents(ctx, evs); err != nil {
			log.Fatal(err)
		}
	}
	cs := &countingOutbox{Outbox: st}
	d := webhook.NewDispatcher(cs, eps, webhook.Options{})
	t0, cpu0, db0 := time.Now(), cpuSeconds(), dbCPUSeconds(ctx, pgDSN)
	if err := d.Start(); err != nil {
		log.Fatal(err)
	}
	out := map[string]any{"alarms": alarms, "slow_answer_s": slowDelay.Seconds(), "endpoints": 3, "load_start": loadAverage()}
	first := 1
	if slowDelay == 0 {
		first = 0
	}
	for i := first; i < 3; i++ {
		select {
		case <-done[i]:
			out[fmt.Sprintf("healthy_%d_drained_s", i)] = time.Since(t0).Seconds()
		case <-time.After(10 * time.Minute):
			out[fmt.Sprintf("healthy_%d_drained_s", i)] = "not within 10 min"
		}
	}
	out["load_drained"] = loadAverage()
	// CPU to drain, against the load: this process (dispatcher, receivers)
	// and the database's backends, per delivery made in that time.
	delivered := counts[0].Load() + counts[1].Load() + counts[2].Load()
	out["delivered_by_then"] = delivered
	out["cpu_s_to_drain"] = cpuSeconds() - cpu0
	if db0 >= 0 {
		out["db_cpu_s_to_drain"] = dbCPUSeconds(ctx, pgDSN) - db0
	}
	if slowDelay == 0 {
		_ = d.Stop(ctx)
		return out
	}
	// Only the slow endpoint's backlog is left: what does waiting cost?
	c0, w0, db0, calls0, n0 := cpuSeconds(), time.Now(), dbCPUSeconds(ctx, pgDSN), cs.snapshot(), counts[0].Load()
	time.Sleep(20 * time.Second)
	minutes := time.Since(w0).Minutes()
	out["cpu_s_per_min_slow_backlog_only"] = (cpuSeconds() - c0) / minutes
	if db0 >= 0 {
		out["db_cpu_s_per_min_slow_backlog_only"] = (dbCPUSeconds(ctx, pgDSN) - db0) / minutes
	}
	calls := cs.snapshot()
	out["slow_delivered_in_that_time"] = counts[0].Load() - n0
	out["store_calls_in_that_time"] = map[string]int64{"fan_outs": calls[0] - calls0[0], "claims": calls[1] - calls0[1], "finishes": calls[2] - calls0[2]}
	out["load_end"] = loadAverage()
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = d.Stop(stopCtx)
	return out
}
