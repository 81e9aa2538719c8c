package tokenstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed migrations/sqlite/*.sql
var sqliteMigrations embed.FS

// SQLite is the embedded Store: one database file, zero setup. SQLite lets
// one connection write at a time, so writes go through a single connection
// (they queue in Go, not in busy retries) and reads through a small pool that
// WAL lets run beside the writer. Other processes sharing the file wait on
// busy_timeout.
type SQLite struct {
	path   string
	wdsn   string // the writer's data source name
	w      *sql.DB
	r      *sql.DB
	sealer *Sealer
	// now is the clock seam for leases and timestamps the store sets.
	now   func() time.Time
	locks keyedMutex
	// lockLease is how long a refresh lock row holds without renewal; it is
	// renewed every lockLease/3 while fn runs. A holder known to have died
	// is taken over at once; one that cannot be judged frees the account
	// after at most lockLease.
	lockLease time.Duration
	// lockPoll is how often a waiter in another process retries the row.
	lockPoll time.Duration
	// getAccount is prepared once: parsing the query cost as much as
	// running it, on the path every cache miss takes.
	getAccount *sql.Stmt
	// ckpt, when a bulk import set it (CheckpointImportsAside), takes the
	// checkpoints after the import's transactions on a connection of its
	// own.
	ckpt *importCheckpointer
}

var _ Store = (*SQLite)(nil)

// OpenSQLite opens (creating if needed) the database file at path, brings its
// schema up to date and returns a Store that seals secrets with s.
func OpenSQLite(ctx context.Context, path string, s *Sealer) (*SQLite, error) {
	if s == nil {
		return nil, errors.New("opening sqlite database: a sealer is required")
	}
	if path == "" {
		return nil, errors.New("opening sqlite database: empty path")
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("opening sqlite database %s: path must not contain '?' or '#'", path)
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("opening sqlite database %s: directory %s: %w", path, dir, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("opening sqlite database %s: %s is not a directory", path, dir)
	}
	// SQLite would create the file with the umask's mode (often 0644), and
	// its -wal and -shm files after it: create it private first.
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
		_ = f.Close()
	} else if !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("opening sqlite database %s: %w", path, err)
	}

	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	// The single writer gets a larger page cache than SQLite's 2 MiB: with
	// a million accounts a write touches index pages all over the file,
	// and a bulk import's transaction must not spill its pages mid-way.
	wq := url.Values{}
	for k, v := range q {
		wq[k] = append([]string(nil), v...)
	}
	wq.Add("_pragma", fmt.Sprintf("cache_size(-%d)", sqliteWriterCacheKiB))
	// Statement journals (a multi-row insert keeps one to undo itself on a
	// conflict) and temporary tables stay in memory instead of temporary
	// files written and read back by syscalls.
	wq.Add("_pragma", "temp_store(MEMORY)")
	wdsn := "file:" + path + "?" + wq.Encode()
	w, err := sql.Open("sqlite", wdsn)
	if err != nil {
		return nil, fmt.Errorf("opening sqlite database %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxIdleTime(0)
	w.SetConnMaxLifetime(0)

	q.Set("_txlock", "deferred")
	q.Add("_pragma", "query_only(1)")
	r, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("opening sqlite database %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)

	st := &SQLite{
		path: path, wdsn: wdsn, w: w, r: r, sealer: s, now: time.Now,
		lockLease: 30 * time.Second, lockPoll: 25 * time.Millisecond,
	}
	if err := st.migrate(ctx); err != nil {
		st.Close()
		return nil, fmt.Errorf("opening sqlite database %s: %w", path, err)
	}
	if err := st.dropDeadLocks(ctx); err != nil {
		st.Close()
		return nil, fmt.Errorf("opening sqlite database %s: %w", path, err)
	}
	if st.getAccount, err = r.PrepareContext(ctx, "SELECT "+accountColumns+" FROM accounts WHERE id = ?"); err != nil {
		st.Close()
		return nil, fmt.Errorf("opening sqlite database %s: %w", path, err)
	}
	return st, nil
}

// sqliteWriterCacheKiB is the writer connection's page cache (32 MiB).
const sqliteWriterCacheKiB = 32 << 10

// SetImportCacheSize gives the writer connection a page cache big enough
// for the database and adding bytes more, at most 4 GiB, for a bulk import
// in a process of its own (linkgate-import). With random ids the primary
// key, tenant and expiry indexes take inserts all over B-trees larger than
// the writer's 32 MiB: each insert read its page back from the file, and a
// transaction's dirty pages spilled into the write-ahead log before its
// commit and were written again at the commit. The readers keep their
// caches; SQLite allocates the pages as it uses them. Should the writer's
// connection be reopened, the new one has the usual size.
func (s *SQLite) SetImportCacheSize(ctx context.Context, bytes int64) error {
	if fi, err := os.Stat(s.path); err == nil {
		bytes += fi.Size()
	}
	kib := min(max(bytes>>10, sqliteWriterCacheKiB), 4<<20)
	if _, err := s.w.ExecContext(ctx, fmt.Sprintf("PRAGMA cache_size(-%d)", kib)); err != nil {
		return storeErr("sizing the import's page cache", err)
	}
	return nil
}

// Close closes the database connections.
func (s *SQLite) Close() error {
	var err error
	if s.getAccount != nil {
		err = s.getAccount.Close()
	}
	if s.ckpt != nil {
		err = errors.Join(err, s.ckpt.close())
	}
	return errors.Join(err, s.r.Close(), s.w.Close())
}

// Checkpoint copies the write-ahead log into the database file and truncates
// it; backups of the file alone are then complete.
func (s *SQLite) Checkpoint(ctx context.Context) error {
	if _, err := s.w.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		return fmt.Errorf("checkpointing %s: %w", s.path, err)
	}
	return nil
}

func (s *SQLite) migrate(ctx context.Context) error {
	files, err := fs.Glob(sqliteMigrations, "migrations/sqlite/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(files)
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("starting migration: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	applied, err := appliedVersions(ctx, tx)
	if err != nil {
		return fmt.Errorf("reading schema versions: %w", err)
	}
	for _, f := range files {
		base := filepath.Base(f)
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: name must start with its version number", base)
		}
		if applied[v] {
			continue
		}
		body, err := sqliteMigrations.ReadFile(f)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			return fmt.Errorf("applying migration %s: %w", base, err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", v, s.now().UnixNano()); err != nil {
			return fmt.Errorf("recording migration %s: %w", base, err)
		}
	}
	return tx.Commit()
}

// appliedVersions are the migration versions recorded as applied. Every
// migration not among them is applied, in version order: a migration that
// a branch added with a lower number than one already applied is not
// skipped.
func appliedVersions(ctx context.Context, tx *sql.Tx) (map[int]bool, error) {
	rows, err := tx.QueryContext(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out[v] = true
	}
	return out, rows.Err()
}

// storeErr wraps a database failure for op. Cancellations keep their own
// identity; input the database refuses as such is ErrInvalid; anything else
// the database says is ErrUnavailable to callers.
func storeErr(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", op, err)
	}
	if isDataException(err) {
		return fmt.Errorf("%s: %w: %w", op, ErrInvalid, err)
	}
	return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
}

func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

func isUniqueViolation(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || c == sqlite3.SQLITE_CONSTRAINT_UNIQUE
}

func isForeignKeyViolation(err error) bool {
	return sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

// write runs fn in one write transaction and commits it.
func (s *SQLite) write(ctx context.Context, op string, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(op, err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		// database/sql rolls the transaction back when ctx ends and then
		// reports "already rolled back"; the caller needs to see why.
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			return storeErr(op, cerr)
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return storeErr(op, cerr)
		}
		return storeErr(op, err)
	}
	return nil
}
