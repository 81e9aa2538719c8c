package tokenstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/postgres/*.sql
var postgresMigrations embed.FS

// accountsChannel is the NOTIFY channel on which every account write names
// the account it changed, so that other instances drop their cached copy.
const accountsChannel = "linkgate_accounts"

// migrationLockKey is the advisory lock that serialises migrations of
// instances starting at once ("linkgate" in ASCII).
const migrationLockKey int64 = 0x6c696e6b67617465

// PostgresOptions tunes a Postgres store; the zero value is ready to use.
type PostgresOptions struct {
	// MaxConns bounds the pool of connections for queries; 0 means 12,
	// unless the DSN sets pool_max_conns.
	MaxConns int32
	// LockConns bounds the connections that hold refresh locks, a pool of
	// its own so that lock holders can never take every connection their
	// refreshes need; 0 means 8. Refreshes beyond it wait, bounded by their
	// callers' contexts.
	LockConns int32
	// LockPoll is how often a refresh lock waiter retries a lock held by
	// another instance; 0 means 20 ms.
	LockPoll time.Duration
	// Now is the clock for the leases and timestamps the store sets; nil
	// means time.Now.
	Now func() time.Time
}

// Postgres is the Store for several linkgate instances sharing one
// PostgreSQL database. Account writes NOTIFY the other instances (see
// Listen), the refresh lock is a transaction-scoped advisory lock that dies
// with its holder's connection, and sweeps and deliveries are claimed with
// FOR UPDATE SKIP LOCKED and leases, so instances split the work and a
// crashed one's share comes back when its leases run out.
type Postgres struct {
	pool     *pgxpool.Pool
	lockPool *pgxpool.Pool
	sealer   *Sealer
	now      func() time.Time
	lockPoll time.Duration
	// locks queues this process's waiters for one account in memory, so
	// that only one of them at a time polls the database lock.
	locks keyedMutex
	// closed ends Listen loops when the store is closed.
	closed chan struct{}
}

var _ Store = (*Postgres)(nil)

// OpenPostgres connects to the database at dsn (a postgres:// URL or
// key=value string; search_path may be set in it), brings its schema up to
// date and returns a Store that seals secrets with s. Instances starting at
// once migrate one after the other.
func OpenPostgres(ctx context.Context, dsn string, s *Sealer, opts PostgresOptions) (*Postgres, error) {
	if s == nil {
		return nil, errors.New("opening postgres database: a sealer is required")
	}
	if dsn == "" {
		return nil, errors.New("opening postgres database: empty dsn")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors can quote the DSN, password included.
		return nil, errors.New("opening postgres database: the dsn is malformed")
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = 12
		if opts.MaxConns > 0 {
			cfg.MaxConns = opts.MaxConns
		}
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		// While the server is down each call should fail fast (the API
		// answers 503) rather than hang until its caller gives up.
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	lockCfg := cfg.Copy()
	lockCfg.MaxConns, lockCfg.MinConns = 8, 0
	if opts.LockConns > 0 {
		lockCfg.MaxConns = opts.LockConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening postgres database: %w", storeErr("connecting", err))
	}
	lockPool, err := pgxpool.NewWithConfig(ctx, lockCfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("opening postgres database: %w", storeErr("connecting", err))
	}
	p := &Postgres{pool: pool, lockPool: lockPool, sealer: s, now: time.Now, lockPoll: 20 * time.Millisecond, closed: make(chan struct{})}
	if opts.Now != nil {
		p.now = opts.Now
	}
	if opts.LockPoll > 0 {
		p.lockPoll = opts.LockPoll
	}
	if err := p.migrate(ctx); err != nil {
		pool.Close()
		lockPool.Close()
		return nil, fmt.Errorf("opening postgres database: %w", err)
	}
	return p, nil
}

// Close stops Listen loops and closes the pool's connections; a refresh
// lock still held is released with its connection.
func (p *Postgres) Close() error {
	select {
	case <-p.closed:
	default:
		close(p.closed)
	}
	p.pool.Close()
	p.lockPool.Close()
	return nil
}

func (p *Postgres) migrate(ctx context.Context) error {
	files, err := fs.Glob(postgresMigrations, "migrations/postgres/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(files)
	return p.write(ctx, "migrating", func(tx pgx.Tx) error {
		// Held to the end of the transaction: a second instance starting
		// now waits here, then finds the schema current.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockKey); err != nil {
			return storeErr("waiting for the migration lock", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
			return storeErr("creating schema_migrations", err)
		}
		var current int
		if err := tx.QueryRow(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&current); err != nil {
			return storeErr("reading schema version", err)
		}
		for _, f := range files {
			base := filepath.Base(f)
			v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
			if err != nil {
				return fmt.Errorf("migration %s: name must start with its version number", base)
			}
			if v <= current {
				continue
			}
			body, err := postgresMigrations.ReadFile(f)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return storeErr("applying migration "+base, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", v, p.now().UnixNano()); err != nil {
				return storeErr("recording migration "+base, err)
			}
		}
		return nil
	})
}

// write runs fn in one transaction and commits it.
func (p *Postgres) write(ctx context.Context, op string, fn func(tx pgx.Tx) error) error {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return storeErr(op, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return storeErr(op, err)
	}
	return nil
}

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func pgUniqueViolation(err error) bool     { return pgCode(err) == "23505" }
func pgForeignKeyViolation(err error) bool { return pgCode(err) == "23503" }

// notifyAccount tells other instances, when tx commits, that account id
// changed.
func notifyAccount(ctx context.Context, tx pgx.Tx, id string) error {
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", accountsChannel, id); err != nil {
		return storeErr("notifying the change of account "+id, err)
	}
	return nil
}

// refreshLockKey maps an account id to the advisory lock key of its refresh
// lock. Two ids that collide only share a lock, which is safe.
func refreshLockKey(id string) int64 {
	h := fnv.New64a()
	h.Write([]byte("linkgate refresh lock\x00"))
	h.Write([]byte(id))
	return int64(h.Sum64())
}

// WithRefreshLock runs fn while holding the refresh lock of account id: an
// advisory lock scoped to a transaction held open, on a connection of the
// lock pool, while fn runs, so a holder whose process or connection dies
// releases it at once. Waiters in
// this process queue in memory; the one at the head polls the database
// lock until ctx ends. fn runs on a context that ctx does not cancel,
// because a refresh abandoned half way can lose the only copy of a rotated
// refresh token.
func (p *Postgres) WithRefreshLock(ctx context.Context, id string, fn func(ctx context.Context) error) error {
	unlock, err := p.locks.Lock(ctx, id)
	if err != nil {
		return fmt.Errorf("waiting for the refresh lock of account %s: %w", id, err)
	}
	defer unlock()

	conn, err := p.lockPool.Acquire(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for the refresh lock of account %s: %w", id, ctx.Err())
		}
		return storeErr("taking the refresh lock of account "+id, err)
	}
	defer conn.Release()
	detached := context.WithoutCancel(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		return storeErr("taking the refresh lock of account "+id, err)
	}
	// Rolling back ends the transaction and with it the lock; it runs on a
	// context of its own, as the caller may be gone.
	defer func() {
		relCtx, cancel := context.WithTimeout(detached, 10*time.Second)
		defer cancel()
		_ = tx.Rollback(relCtx)
	}()
	key := refreshLockKey(id)
	for {
		var took bool
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", key).Scan(&took); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("waiting for the refresh lock of account %s: %w", id, ctx.Err())
			}
			return storeErr("taking the refresh lock of account "+id, err)
		}
		if took {
			break
		}
		t := time.NewTimer(p.lockPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for the refresh lock of account %s: %w", id, ctx.Err())
		case <-t.C:
		}
	}
	return fn(detached)
}

// isDataException reports whether PostgreSQL refused a value itself
// (SQLSTATE class 22, e.g. 22021 for a NUL or invalid UTF-8 in text).
func isDataException(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && strings.HasPrefix(pe.Code, "22")
}
