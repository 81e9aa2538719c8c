package tokenstore_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
	"github.com/linkgate/linkgate/tokenstore/storetest"
)

var ctx = context.Background()

func newKey(t testing.TB) []byte {
	t.Helper()
	k, err := tokenstore.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func openSQLite(t testing.TB, path string, keys ...[]byte) *tokenstore.SQLite {
	t.Helper()
	s, err := tokenstore.NewSealer(keys...)
	if err != nil {
		t.Fatal(err)
	}
	st, err := tokenstore.OpenSQLite(ctx, path, s)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// openRaw opens the SQLite file directly, beside a store that may be
// writing to it: it waits for the store's write lock like the store's own
// connections do instead of failing with SQLITE_BUSY at once.
func openRaw(t testing.TB, path string) *sql.DB {
	t.Helper()
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestSQLiteConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) tokenstore.Store {
		return openSQLite(t, filepath.Join(t.TempDir(), "linkgate.db"), newKey(t))
	})
}

func TestSQLiteNoSecretsInTheFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "linkgate.db")
	key := newKey(t)
	st := openSQLite(t, path, key)
	defer st.Close()

	a := storetest.NewAccount("acc_secret")
	a.Credentials.Password = "hunter2-password-value"
	a.Credentials.APIKey = "sk_live_api_key_value"
	// Secrets an application put in the context, at any depth.
	a.Context = map[string]any{"region": "region-in-clear", "client_secret": "ctx-client-secret-value",
		"nested": map[string]any{"refresh_token": "ctx-refresh-token-value", "api-key": "ctx-api-key-value"}}
	b := storetest.NewAccount("acc_basic")
	b.Method = account.MethodBasic
	b.Credentials = account.Credentials{Username: "someone", Password: "basic-password-value"}
	for _, x := range []*account.Account{a, b} {
		if err := st.CreateAccount(ctx, x, nil); err != nil {
			t.Fatal(err)
		}
	}
	// An update leaves the old sealed blob in the WAL; that must be sealed too.
	firstAccess := a.Credentials.AccessToken
	a.Credentials.AccessToken = "at-second-generation-value"
	a.Context["session"] = "ctx-session-value"
	if err := st.UpdateAccount(ctx, a, nil); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	lt := &tokenstore.LinkToken{Hash: []byte("h"), TenantID: "t", Integration: "x", CreatedAt: now, ExpiresAt: now.Add(time.Hour),
		Context: map[string]any{"api_key": "lt-api-key-value", "signing_key": "lt-signing-key-value", "plan": "pro"}}
	if err := st.CreateLinkToken(ctx, lt); err != nil {
		t.Fatal(err)
	}
	verifier := "pkce-verifier-0123456789abcdefghijklmnopqrstuvwxyz"
	if err := st.CreateConnectState(ctx, &tokenstore.ConnectState{Hash: []byte("s"), LinkTokenHash: lt.Hash, Verifier: verifier, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	secrets := []string{
		firstAccess, a.Credentials.RefreshToken,
		"at-second-generation-value", "hunter2-password-value", "sk_live_api_key_value", "basic-password-value",
		verifier, string(key), base64.StdEncoding.EncodeToString(key),
		"ctx-client-secret-value", "ctx-refresh-token-value", "ctx-api-key-value", "ctx-session-value",
		"lt-api-key-value", "lt-signing-key-value",
	}
	scan := func(when string) {
		t.Helper()
		files, _ := filepath.Glob(path + "*")
		if len(files) == 0 {
			t.Fatal("no database files")
		}
		for _, f := range files {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range secrets {
				if bytes.Contains(raw, []byte(s)) {
					t.Fatalf("%s: %s contains a secret in the clear", when, filepath.Base(f))
				}
			}
			// The check can see: non-secret values are in the file.
			if filepath.Base(f) == "linkgate.db" && when == "after checkpoint" && (!bytes.Contains(raw, []byte("acc_secret")) || !bytes.Contains(raw, []byte("region-in-clear"))) {
				t.Fatal("the account id is not in the file: the scan reads the wrong thing")
			}
		}
	}
	scan("before checkpoint")
	if err := st.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	scan("after checkpoint")
}

func TestSQLiteReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "linkgate.db")
	key := newKey(t)
	st := openSQLite(t, path, key)
	a := storetest.NewAccount("acc_reopen")
	if err := st.CreateAccount(ctx, a, nil); err != nil {
		t.Fatal(err)
	}
	st.Close()

	st = openSQLite(t, path, key)
	got, err := st.GetAccount(ctx, a.ID)
	if err != nil || got.Credentials.AccessToken != a.Credentials.AccessToken {
		t.Fatalf("re-opened with the same key: %v", err)
	}
	st.Close()

	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	var n, v int
	if err := raw.QueryRow("SELECT COUNT(*), MAX(version) FROM schema_migrations").Scan(&n, &v); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	files, _ := filepath.Glob("migrations/sqlite/*.sql")
	sort.Strings(files)
	last := 0
	if len(files) > 0 {
		last, _ = strconv.Atoi(strings.SplitN(filepath.Base(files[len(files)-1]), "_", 2)[0])
	}
	if len(files) == 0 || n != len(files) || v != last {
		t.Fatalf("schema_migrations has %d rows up to %d after two opens, want %d up to %d", n, v, len(files), last)
	}

	st = openSQLite(t, path, newKey(t))
	defer st.Close()
	_, err = st.GetAccount(ctx, a.ID)
	if err == nil || !strings.Contains(err.Error(), "sealed with a key that is not configured") {
		t.Fatalf("re-opened with another key: %v", err)
	}
	if strings.Contains(err.Error(), a.Credentials.AccessToken) {
		t.Fatal("the error shows the token")
	}
	// A listing needs no key and still works.
	if p, err := st.ListAccounts(ctx, tokenstore.Filter{}); err != nil || len(p.Accounts) != 1 {
		t.Fatalf("listing under another key: %d, %v", len(p.Accounts), err)
	}
}

func TestSQLiteReseal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "linkgate.db")
	oldKey, newKeyB := newKey(t), newKey(t)
	st := openSQLite(t, path, oldKey)
	var accounts []*account.Account
	for i := range 5 {
		a := storetest.NewAccount(fmt.Sprintf("acc_%d", i))
		if err := st.CreateAccount(ctx, a, nil); err != nil {
			t.Fatal(err)
		}
		accounts = append(accounts, a)
	}
	now := time.Now()
	lt := &tokenstore.LinkToken{Hash: []byte("lt"), CreatedAt: now, ExpiresAt: now.Add(time.Hour), Context: map[string]any{"api_key": "lt-key"}}
	if err := st.CreateLinkToken(ctx, lt); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateConnectState(ctx, &tokenstore.ConnectState{Hash: []byte("st"), LinkTokenHash: lt.Hash, Verifier: "the-verifier", ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	st = openSQLite(t, path, newKeyB, oldKey)
	n, err := st.Reseal(ctx)
	if err != nil || n != 7 {
		t.Fatalf("Reseal = %d, %v; want 7 (5 accounts, a link token's context, a connect state)", n, err)
	}
	if n, err := st.Reseal(ctx); err != nil || n != 0 {
		t.Fatalf("second Reseal = %d, %v; want 0", n, err)
	}
	st.Close()

	st = openSQLite(t, path, newKeyB)
	defer st.Close()
	for _, a := range accounts {
		got, err := st.GetAccount(ctx, a.ID)
		if err != nil || got.Credentials.RefreshToken != a.Credentials.RefreshToken {
			t.Fatalf("after rotation, account %s: %v", a.ID, err)
		}
	}
	cs, err := st.TakeConnectState(ctx, []byte("st"))
	if err != nil || cs.Verifier != "the-verifier" {
		t.Fatalf("after rotation, connect state: %v", err)
	}
	if got, err := st.GetLinkToken(ctx, lt.Hash); err != nil || got.Context["api_key"] != "lt-key" {
		t.Fatalf("after rotation, link token context: %v", err)
	}
}

func TestSQLiteBadPath(t *testing.T) {
	s, _ := tokenstore.NewSealer(newKey(t))
	dir := t.TempDir()
	file := filepath.Join(dir, "plain-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{
		filepath.Join(dir, "no", "such", "dir", "linkgate.db"),
		filepath.Join(file, "linkgate.db"),
		dir, // a directory, not a database file
	} {
		st, err := tokenstore.OpenSQLite(ctx, path, s)
		if err == nil {
			st.Close()
			t.Fatalf("OpenSQLite(%s) succeeded", path)
		}
		if !strings.Contains(err.Error(), path) {
			t.Fatalf("error %q does not name the path %s", err, path)
		}
	}
}

func TestSQLiteRefreshLockAcrossHandles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "linkgate.db")
	key := newKey(t)
	h1, h2 := openSQLite(t, path, key), openSQLite(t, path, key)
	defer h1.Close()
	defer h2.Close()
	for _, h := range []*tokenstore.SQLite{h1, h2} {
		tokenstore.SetLockTiming(h, 30*time.Second, 2*time.Millisecond)
	}
	var inside, maxInside, runs atomic.Int32
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := h1
			if i%2 == 1 {
				h = h2
			}
			err := h.WithRefreshLock(ctx, "acc_shared", func(context.Context) error {
				n := inside.Add(1)
				if n > maxInside.Load() {
					maxInside.Store(n)
				}
				time.Sleep(2 * time.Millisecond)
				inside.Add(-1)
				runs.Add(1)
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if runs.Load() != 16 || maxInside.Load() != 1 {
		t.Fatalf("%d runs, at most %d holders at once across two handles; want 16 and 1", runs.Load(), maxInside.Load())
	}

	// A live holder renews its lease: a waiter on the other handle does not
	// get in after one lease length. The test waits for the renewal to be
	// seen in the row rather than for a time, so a busy machine cannot
	// make it pass or fail by chance; the lease is long enough that a
	// renewal every third of it does not lapse on a loaded machine.
	raw := openRaw(t, path)
	defer raw.Close()
	leaseOf := func(id string) (owner string, until time.Time) {
		t.Helper()
		var n int64
		if err := raw.QueryRow("SELECT owner, lease_until FROM refresh_locks WHERE account_id = ?", id).Scan(&owner, &n); err != nil {
			t.Fatalf("reading the lock row of %s: %v", id, err)
		}
		return owner, time.Unix(0, n)
	}
	tokenstore.SetLockTiming(h1, 2*time.Second, 5*time.Millisecond)
	held := make(chan struct{})
	release := make(chan struct{})
	holderDone := make(chan error, 1)
	go func() {
		holderDone <- h1.WithRefreshLock(ctx, "acc_lease", func(context.Context) error {
			close(held)
			<-release
			return nil
		})
	}()
	<-held
	owner, first := leaseOf("acc_lease")
	for {
		o, until := leaseOf("acc_lease")
		if o != owner {
			t.Fatalf("the lock changed owner while its holder ran: %q, then %q", owner, o)
		}
		// Past the first lease, and the row's lease (a renewed one) still
		// runs: that is the state the waiter must respect.
		if now := time.Now(); until.After(first) && now.After(first) && until.After(now) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	ran := false
	err := h2.WithRefreshLock(waitCtx, "acc_lease", func(context.Context) error { ran = true; return nil })
	cancel()
	if ran || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("other handle while the lock is held past its first lease: ran %v, %v, want DeadlineExceeded", ran, err)
	}
	close(release)
	if err := <-holderDone; err != nil {
		t.Fatal(err)
	}
	if err := h2.WithRefreshLock(ctx, "acc_lease", func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}

	// A holder that cannot be identified as a process of this machine
	// keeps the lock for its whole lease; once the lease has run out the
	// account is free again.
	if _, err := raw.Exec("INSERT INTO refresh_locks (account_id, owner, lease_until) VALUES (?, ?, ?)",
		"acc_unknown", "crashed-process", time.Now().Add(time.Hour).UnixNano()); err != nil {
		t.Fatal(err)
	}
	waitCtx, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
	err = h2.WithRefreshLock(waitCtx, "acc_unknown", func(context.Context) error { return nil })
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("while an unidentified holder's lease runs: %v, want DeadlineExceeded", err)
	}
	if _, err := raw.Exec("UPDATE refresh_locks SET lease_until = ? WHERE account_id = ?", time.Now().Add(-time.Second).UnixNano(), "acc_unknown"); err != nil {
		t.Fatal(err)
	}
	if err := h2.WithRefreshLock(ctx, "acc_unknown", func(context.Context) error { return nil }); err != nil {
		t.Fatalf("after an unidentified holder's lease ran out: %v", err)
	}
}

// TestSQLiteRefreshLockOfDeadProcess: a lock row left by a process that was
// killed (SIGKILL runs no cleanup) does not block the account for its
// 30-second lease: a process that finds it takes it over at once, and
// opening the file drops such rows. A row of a live process is respected.
func TestSQLiteRefreshLockOfDeadProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("process identities are read from /proc, which this system lacks; locks fall back to their lease")
	}
	path := filepath.Join(t.TempDir(), "linkgate.db")
	key := newKey(t)
	h := openSQLite(t, path, key)
	defer h.Close()

	// A real process that has exited: its pid and start time are what its
	// lock rows would carry.
	child := exec.Command("sleep", "0.01")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	own, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	childStat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Wait(); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	owner := func(pid int, stat []byte) string {
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		return fmt.Sprintf("%s host=%s boot=%s pid=%d start=%s", uuid.NewString(), host, strings.TrimSpace(string(boot)), pid, f[19])
	}
	raw := openRaw(t, path)
	defer raw.Close()
	lease := time.Now().Add(time.Hour).UnixNano()
	insert := func(id, owner string) {
		t.Helper()
		if _, err := raw.Exec("INSERT INTO refresh_locks (account_id, owner, lease_until) VALUES (?, ?, ?)", id, owner, lease); err != nil {
			t.Fatal(err)
		}
	}
	insert("acc_dead", owner(child.Process.Pid, childStat))
	// Our own pid with another start time: a dead process whose pid was
	// given to a new one.
	insert("acc_reused", owner(os.Getpid(), []byte("1 (x) S 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1")))
	insert("acc_live", owner(os.Getpid(), own))

	for _, id := range []string{"acc_dead", "acc_reused"} {
		waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ran := false
		err := h.WithRefreshLock(waitCtx, id, func(context.Context) error { ran = true; return nil })
		cancel()
		if err != nil || !ran {
			t.Fatalf("lock of %s held by a dead process (lease 1h): %v, want taken over at once", id, err)
		}
	}
	waitCtx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	err = h.WithRefreshLock(waitCtx, "acc_live", func(context.Context) error { return nil })
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lock held by a live process: %v, want DeadlineExceeded", err)
	}

	// Opening the file drops a dead process's rows and keeps a live one's.
	insert("acc_dead2", owner(child.Process.Pid, childStat))
	h2 := openSQLite(t, path, key)
	defer h2.Close()
	var left []string
	rows, err := raw.Query("SELECT account_id FROM refresh_locks ORDER BY account_id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		left = append(left, id)
	}
	rows.Close()
	if strings.Join(left, ",") != "acc_live" {
		t.Fatalf("lock rows after opening the file: %v, want only acc_live", left)
	}
}

// TestSQLiteManyConcurrentWriters: 1,000 concurrent requests on two handles
// of one file (two Caddy processes) all succeed; none sees SQLITE_BUSY.
func TestSQLiteManyConcurrentWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "linkgate.db")
	key := newKey(t)
	h1, h2 := openSQLite(t, path, key), openSQLite(t, path, key)
	defer h1.Close()
	defer h2.Close()
	base := storetest.NewAccount("acc_hot")
	if err := h1.CreateAccount(ctx, base, nil); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var conflicts atomic.Int32
	for i := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := h1
			if i%8 >= 4 {
				st = h2
			}
			var err error
			switch i % 4 {
			case 0:
				err = st.CreateAccount(ctx, storetest.NewAccount(fmt.Sprintf("acc_%d", i)), nil)
			case 1:
				err = st.UpdateAccount(ctx, base.Clone(), nil)
				if errors.Is(err, tokenstore.ErrConflict) {
					conflicts.Add(1)
					err = nil
				}
			case 2:
				_, err = st.GetAccount(ctx, base.ID)
			default:
				err = st.AddEvents(ctx, []tokenstore.Event{tokenstore.NewEvent(account.EventTest, base, time.Now())})
			}
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if conflicts.Load() != 249 {
		t.Fatalf("%d of 250 racing updates conflicted, want 249", conflicts.Load())
	}
}

func BenchmarkSQLiteGetAccount(b *testing.B) {
	st := openSQLite(b, filepath.Join(b.TempDir(), "linkgate.db"), newKey(b))
	defer st.Close()
	a := storetest.NewAccount("acc_bench")
	if err := st.CreateAccount(ctx, a, nil); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := st.GetAccount(ctx, a.ID); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSQLiteClosedIsUnavailable(t *testing.T) {
	st := openSQLite(t, filepath.Join(t.TempDir(), "linkgate.db"), newKey(t))
	if err := st.CreateAccount(ctx, storetest.NewAccount("acc_1"), nil); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if _, err := st.GetAccount(ctx, "acc_1"); !errors.Is(err, tokenstore.ErrUnavailable) {
		t.Fatalf("GetAccount on a closed store: %v, want ErrUnavailable", err)
	}
	if err := st.CreateAccount(ctx, storetest.NewAccount("acc_2"), nil); !errors.Is(err, tokenstore.ErrUnavailable) {
		t.Fatalf("CreateAccount on a closed store: %v, want ErrUnavailable", err)
	}
	if _, err := st.ListAccounts(ctx, tokenstore.Filter{}); !errors.Is(err, tokenstore.ErrUnavailable) {
		t.Fatalf("ListAccounts on a closed store: %v, want ErrUnavailable", err)
	}
}

// TestSQLiteOddPaths: Caddy's data directory on macOS is under
// "Application Support"; paths are taken literally.
func TestSQLiteOddPaths(t *testing.T) {
	for _, name := range []string{"Application Support", "100% sure", "a&b=c"} {
		dir := filepath.Join(t.TempDir(), name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "linkgate.db")
		st := openSQLite(t, path, newKey(t))
		if err := st.CreateAccount(ctx, storetest.NewAccount("acc_1"), nil); err != nil {
			t.Fatal(err)
		}
		st.Close()
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("%q: the database is not where it was asked to be: %v", name, err)
		}
	}
}

// TestCachedConformance: the cache in front of SQLite is still a Store.
func TestCachedConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) tokenstore.Store {
		c, err := tokenstore.NewCached(openSQLite(t, filepath.Join(t.TempDir(), "linkgate.db"), newKey(t)), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		return c
	})
}

// BenchmarkSQLiteUpdateAccount is the write a refresh makes: re-seal the
// credentials, bump the version, all in one transaction.
func BenchmarkSQLiteUpdateAccount(b *testing.B) {
	st := openSQLite(b, filepath.Join(b.TempDir(), "linkgate.db"), newKey(b))
	defer st.Close()
	a := storetest.NewAccount("acc_bench")
	if err := st.CreateAccount(ctx, a, nil); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := st.UpdateAccount(ctx, a, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSQLiteAppliesAnEarlierMigrationAddedLater: a migration whose version
// is below one already applied (two branches numbered theirs apart) is
// applied when it is missing, not skipped.
func TestSQLiteAppliesAnEarlierMigrationAddedLater(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	key := newKey(t)
	openSQLite(t, path, key).Close()
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	// As if 0002 had not been there when a later one was applied.
	for _, q := range []string{"DROP INDEX link_tokens_used", "DROP INDEX connect_states_expires", "DROP INDEX deliveries_delivered",
		"DROP INDEX deliveries_failed", "DROP INDEX events_fanned_created", "DELETE FROM schema_migrations WHERE version = 2"} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	raw.Close()
	openSQLite(t, path, key).Close()
	raw, _ = sql.Open("sqlite", path)
	defer raw.Close()
	var applied, index int
	if err := raw.QueryRow("SELECT COUNT(*) FROM schema_migrations WHERE version = 2").Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if err := raw.QueryRow("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'link_tokens_used'").Scan(&index); err != nil {
		t.Fatal(err)
	}
	if applied != 1 || index != 1 {
		t.Fatalf("migration 2 missing below applied ones: recorded %d, its index there %d; want it applied", applied, index)
	}
}

// TestSQLiteFilesArePrivate: a database created in a directory that already
// exists (and is readable by others) is readable by its owner alone, and so
// are the write-ahead log and shared-memory files SQLite creates beside it.
func TestSQLiteFilesArePrivate(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "linkgate.db")
	st := openSQLite(t, path, newKey(t))
	defer st.Close()
	// A write, so that the -wal and -shm files exist.
	if err := st.CreateAccount(ctx, storetest.NewAccount("acc_private"), nil); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(f), fi.Mode().Perm())
		}
	}
}
