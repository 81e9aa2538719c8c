package tokenstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/linkgate/linkgate/account"
)

// Import is one new account of a bulk import, with the events its creation
// writes (none, for a migration that must not announce every account).
type Import struct {
	Account *account.Account
	Events  []Event
}

// Importer writes many new accounts at once. Each row is atomic: an account
// is written with all its events or not at all. The rows of one call are
// written in one transaction, so a failure of the store writes none of
// them.
//
// A bulk import runs in two steps so that the costly half runs on every
// core: SealImport encodes and seals a batch (no store access; safe to call
// from many goroutines at once), ImportSealed writes it (one writer).
// ImportAccounts does both.
type Importer interface {
	// ImportAccounts creates the accounts of rows. The slice it returns
	// has one entry per row: nil when the row was written, an error
	// wrapping ErrExists when its id is taken (the row is skipped), or an
	// error of the row's own (it cannot be sealed). The error is the
	// store's: when it is not nil, no row was written. Written accounts get
	// Version 1 and their CreatedAt/UpdatedAt filled in as CreateAccount
	// does.
	ImportAccounts(ctx context.Context, rows []Import) ([]error, error)
	// SealImport encodes and seals rows for ImportSealed.
	SealImport(rows []Import) *SealedImport
	// ImportSealed writes a sealed batch as ImportAccounts writes rows.
	ImportSealed(ctx context.Context, si *SealedImport) ([]error, error)
}

// SealedImport is a batch of imports encoded and sealed, ready to be
// written in one transaction.
type SealedImport struct {
	rows []Import
	errs []error // the rows' own errors (they cannot be encoded or sealed)
	enc  []importRow
	// order holds the indexes of the rows to write, sorted by id: the
	// primary key's B-tree then takes its inserts in key order, one page
	// after the next, instead of at random places. The sort is stable, so
	// of two rows with one id the first is written, as one row at a time.
	// SQLite sorts them by descending id (see SQLite.SealImport).
	order []int
}

// importRow is an account's columns as both stores write them.
type importRow struct {
	context     string
	lastError   *string
	credentials []byte
	expiresAt   int64
	probe       int64
	hasRefresh  bool
}

// sealImport encodes and seals rows with sl, as CreateAccount does one
// account, and orders them by id, descending when desc is set.
func sealImport(sl *Sealer, rows []Import, desc bool) *SealedImport {
	si := &SealedImport{rows: rows, errs: make([]error, len(rows)), enc: make([]importRow, len(rows)),
		order: make([]int, 0, len(rows))}
	for i, r := range rows {
		a := r.Account
		if a == nil || a.ID == "" {
			si.errs[i] = errors.New("account has no id")
			continue
		}
		ctxJSON, creds, err := accountSecrets(a)
		if err != nil {
			si.errs[i] = err
			continue
		}
		row := &si.enc[i]
		row.context = string(ctxJSON)
		if a.LastError != nil {
			b, err := json.Marshal(a.LastError)
			if err != nil {
				si.errs[i] = fmt.Errorf("encoding last error of account %s: %w", a.ID, err)
				continue
			}
			s := string(b)
			row.lastError = &s
		}
		if row.credentials, err = sl.Seal(creds, []byte(a.ID)); err != nil {
			si.errs[i] = fmt.Errorf("sealing credentials of account %s: %w", a.ID, err)
			continue
		}
		row.expiresAt = nanos(a.Credentials.Expiry)
		row.hasRefresh = a.Credentials.RefreshToken != ""
		row.probe = nanos(a.NextProbeAt)
		si.order = append(si.order, i)
	}
	slices.SortStableFunc(si.order, func(x, y int) int {
		if desc {
			return strings.Compare(rows[y].Account.ID, rows[x].Account.ID)
		}
		return strings.Compare(rows[x].Account.ID, rows[y].Account.ID)
	})
	return si
}

// importTimes fills in a's times as createAccount does and returns them.
func importTimes(a *account.Account, now time.Time) (created, updated time.Time) {
	created, updated = a.CreatedAt, a.UpdatedAt
	if created.IsZero() {
		created = now
	}
	if updated.IsZero() {
		updated = created
	}
	return created, updated
}

// SealImport encodes and seals rows for ImportSealed, sorted by descending
// id (SealedImport.order): all rows of a
// batch get one created_at, so in the four listing indexes (created_at
// DESC, id DESC) the batch is one run of keys in descending id order:
// written in that order, each key lands just after the one before, and the
// pages fill up instead of splitting in halves (ascending order inserts
// each key before the last one, which left those indexes half full: at a
// million random ids the database is a fifth smaller and the import costs
// a fifth less CPU). Random primary keys take their inserts at random
// places either way.
func (s *SQLite) SealImport(rows []Import) *SealedImport { return sealImport(s.sealer, rows, true) }

// ImportAccounts seals rows and writes them.
func (s *SQLite) ImportAccounts(ctx context.Context, rows []Import) ([]error, error) {
	return s.ImportSealed(ctx, s.SealImport(rows))
}

// ImportSealed writes a sealed batch in one transaction, one row at a time
// through statements prepared once per call, in descending id order. A single-row
// insert needs no statement journal (a multi-row one keeps one to undo
// itself midway, and must be compiled for its parameters' count), and
// committing many rows at once is most of the speed of a bulk import. An id
// already taken is skipped by ON CONFLICT rather than failing the
// transaction; the changes count tells which rows were written, so that
// only their events are inserted.
func (s *SQLite) ImportSealed(ctx context.Context, si *SealedImport) ([]error, error) {
	rows := si.rows
	errs := slices.Clone(si.errs)
	now := s.now().UTC()
	written := make([]bool, len(rows))
	if s.ckpt != nil {
		s.ckpt.beforeImport()
	}
	err := s.write(ctx, "importing accounts", func(tx *sql.Tx) error {
		clear(written)
		insAccount, err := tx.PrepareContext(ctx, sqliteImportAccount)
		if err != nil {
			return storeErr("importing accounts", err)
		}
		defer insAccount.Close()
		var insEvent *sql.Stmt
		for _, i := range si.order {
			r, row := rows[i], &si.enc[i]
			a := r.Account
			created, updated := importTimes(a, now)
			var lastError, hasRefresh any
			if row.lastError != nil {
				lastError = *row.lastError
			}
			if hasRefresh = int64(0); row.hasRefresh {
				hasRefresh = int64(1)
			}
			res, err := insAccount.ExecContext(ctx, a.ID, a.TenantID, a.Integration, string(a.Method), string(a.Status),
				row.context, row.credentials, lastError, nanos(created), nanos(updated), row.probe,
				row.expiresAt, hasRefresh)
			if err != nil {
				return storeErr("importing accounts", err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return storeErr("importing accounts", err)
			} else if n == 0 {
				continue // the id is taken
			}
			written[i] = true
			for j := range r.Events {
				e := &r.Events[j]
				if err := e.fill(now); err != nil {
					return err
				}
				if insEvent == nil {
					if insEvent, err = tx.PrepareContext(ctx, sqliteImportEvent); err != nil {
						return storeErr("importing events", err)
					}
					defer insEvent.Close()
				}
				if _, err := insEvent.ExecContext(ctx, e.ID, e.Name, e.AccountID, e.payload(), nanos(e.CreatedAt)); err != nil {
					if isUniqueViolation(err) {
						return fmt.Errorf("importing events: %w", ErrExists)
					}
					return storeErr("importing events", err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if s.ckpt != nil {
		s.ckpt.afterImport()
	}
	finishImport(rows, errs, written, now)
	return errs, nil
}

// importCheckpointer checkpoints the write-ahead log on a connection of its
// own while the writer fills its next transaction. SQLite starts the log
// over from its beginning only when a transaction begins on a log wholly
// copied into the database, so every importCheckpointWait-th transaction
// waits for the checkpoint before it begins: the log stays within a few
// transactions' pages and is overwritten rather than grown.
type importCheckpointer struct {
	db   *sql.DB
	mu   sync.Mutex
	done chan struct{} // closed when the running checkpoint ends; nil when none runs
	n    int
}

const importCheckpointWait = 4

// CheckpointImportsAside moves the checkpoints after ImportSealed's
// transactions off the writer's connection, for a bulk import in a
// process of its own (linkgate-import): the writer's commits no longer
// copy the log into the database themselves (its wal_autocheckpoint is
// turned off), a second connection does, one transaction behind. At a
// million random ids this took 15 % of the writer's CPU off the import's
// critical path. Writers of other processes keep checkpointing as before.
func (s *SQLite) CheckpointImportsAside(ctx context.Context) error {
	if s.ckpt != nil {
		return nil
	}
	db, err := sql.Open("sqlite", s.wdsn)
	if err != nil {
		return storeErr("opening the import's checkpointer", err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxIdleTime(0)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return storeErr("opening the import's checkpointer", err)
	}
	if _, err := s.w.ExecContext(ctx, "PRAGMA wal_autocheckpoint(0)"); err != nil {
		db.Close()
		return storeErr("opening the import's checkpointer", err)
	}
	s.ckpt = &importCheckpointer{db: db}
	return nil
}

// beforeImport waits, every importCheckpointWait-th transaction, for the
// checkpoint under way.
func (c *importCheckpointer) beforeImport() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	if c.n%importCheckpointWait == 0 {
		c.wait()
	}
}

func (c *importCheckpointer) wait() {
	if c.done != nil {
		<-c.done
		c.done = nil
	}
}

// afterImport starts a checkpoint of what the writer committed, unless one
// still runs (the next one then catches up).
func (c *importCheckpointer) afterImport() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		select {
		case <-c.done:
		default:
			return
		}
	}
	done := make(chan struct{})
	c.done = done
	go func() {
		defer close(done)
		// PASSIVE: it copies what no reader still needs and never waits
		// on other connections. A failure leaves the log longer; the
		// next checkpoint, or the last connection's close, copies it.
		_, _ = c.db.Exec("PRAGMA wal_checkpoint(PASSIVE)")
	}()
}

// close waits for the checkpoint under way and closes the connection.
func (c *importCheckpointer) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wait()
	return c.db.Close()
}

const (
	sqliteImportAccount = `INSERT INTO accounts (id, tenant_id, integration, method, status, context, credentials, last_error,
		version, created_at, updated_at, next_probe_at, expires_at, has_refresh)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	sqliteImportEvent = `INSERT INTO events (id, name, account_id, payload, created_at) VALUES (?, ?, ?, ?, ?)`
)

// finishImport updates the callers' copies of written rows and marks the
// others that had no error of their own as taken.
func finishImport(rows []Import, errs []error, written []bool, now time.Time) {
	for i, r := range rows {
		switch {
		case written[i]:
			r.Account.Version = 1
			r.Account.CreatedAt, r.Account.UpdatedAt = importTimes(r.Account, now)
		case errs[i] == nil:
			errs[i] = fmt.Errorf("importing account %s: %w", r.Account.ID, ErrExists)
		}
	}
}

// SealImport encodes and seals rows for ImportSealed.
func (p *Postgres) SealImport(rows []Import) *SealedImport { return sealImport(p.sealer, rows, false) }

// ImportAccounts seals rows and writes them.
func (p *Postgres) ImportAccounts(ctx context.Context, rows []Import) ([]error, error) {
	return p.ImportSealed(ctx, p.SealImport(rows))
}

// pgImportDirect lets ImportSealed COPY straight into accounts once it has
// seen which ids are taken (tests turn it off to run the other path).
var pgImportDirect = true

// pgImportBeforeCopy, when set, runs between the probe of taken ids and the
// direct COPY (tests take an id there, as a concurrent writer would).
var pgImportBeforeCopy func()

// errImportRace is a direct COPY that met an id inserted after the
// transaction looked: the batch is written again the other way.
var errImportRace = errors.New("an id was taken while the batch was written")

// ImportSealed writes a sealed batch in one transaction with COPY, the
// fastest way into PostgreSQL (binary rows streamed in one round trip, no
// statement per row). It first asks which of the batch's ids are taken (one
// probe of the primary key) and COPYs the others directly into accounts.
// Should another writer take one of those ids in between, the COPY fails,
// nothing of the batch stays, and the batch is written again through a
// temporary table: COPY into it, then one INSERT … SELECT … ON CONFLICT
// (id) DO NOTHING RETURNING id tells which rows were written. Events of
// the written rows follow by COPY in the same transaction.
func (p *Postgres) ImportSealed(ctx context.Context, si *SealedImport) ([]error, error) {
	rows := si.rows
	errs := slices.Clone(si.errs)
	now := p.now().UTC()
	// The first row of each id; a later one is reported taken by
	// finishImport, as it would be one row at a time.
	todo := make([]int, 0, len(si.order))
	for k, i := range si.order {
		if k > 0 && rows[si.order[k-1]].Account.ID == rows[i].Account.ID {
			continue
		}
		todo = append(todo, i)
	}
	written := make([]bool, len(rows))
	direct := pgImportDirect
	for {
		err := p.write(ctx, "importing accounts", func(tx pgx.Tx) error {
			clear(written)
			if len(todo) == 0 {
				return nil
			}
			var err error
			if direct {
				err = p.copyAccounts(ctx, tx, si, todo, written, now)
			} else {
				err = p.copyAccountsOnConflict(ctx, tx, si, todo, written, now)
			}
			if err != nil {
				return err
			}
			return copyImportEvents(ctx, tx, rows, written, now)
		})
		if direct && errors.Is(err, errImportRace) {
			direct = false
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	finishImport(rows, errs, written, now)
	return errs, nil
}

// pgImportColumns are the columns a COPY of accounts fills, in the order
// of importValues.
var pgImportColumns = []string{"id", "tenant_id", "integration", "method", "status", "context", "credentials",
	"last_error", "version", "created_at", "updated_at", "next_probe_at", "expires_at", "has_refresh"}

// importSource streams the rows at rows[idx] to COPY.
func importSource(si *SealedImport, idx []int, now time.Time) pgx.CopyFromSource {
	return pgx.CopyFromSlice(len(idx), func(k int) ([]any, error) {
		i := idx[k]
		a, row := si.rows[i].Account, &si.enc[i]
		created, updated := importTimes(a, now)
		return []any{a.ID, a.TenantID, a.Integration, string(a.Method), string(a.Status), row.context,
			row.credentials, row.lastError, int64(1), nanos(created), nanos(updated), row.probe, row.expiresAt,
			row.hasRefresh}, nil
	})
}

// copyAccounts COPYs the rows of todo whose ids are free into accounts.
func (p *Postgres) copyAccounts(ctx context.Context, tx pgx.Tx, si *SealedImport, todo []int, written []bool, now time.Time) error {
	ids := make([]string, len(todo))
	for k, i := range todo {
		ids[k] = si.rows[i].Account.ID
	}
	taken, err := tx.Query(ctx, `SELECT id FROM accounts WHERE id = ANY($1::text[])`, ids)
	if err != nil {
		return storeErr("importing accounts", err)
	}
	var seen map[string]bool
	for taken.Next() {
		var id string
		if err := taken.Scan(&id); err != nil {
			taken.Close()
			return storeErr("importing accounts", err)
		}
		if seen == nil {
			seen = map[string]bool{}
		}
		seen[id] = true
	}
	taken.Close()
	if err := taken.Err(); err != nil {
		return storeErr("importing accounts", err)
	}
	fresh := todo
	if len(seen) > 0 {
		fresh = make([]int, 0, len(todo)-len(seen))
		for _, i := range todo {
			if !seen[si.rows[i].Account.ID] {
				fresh = append(fresh, i)
			}
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	if pgImportBeforeCopy != nil {
		pgImportBeforeCopy()
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"accounts"}, pgImportColumns, importSource(si, fresh, now)); err != nil {
		if pgUniqueViolation(err) {
			return errImportRace
		}
		return storeErr("importing accounts", err)
	}
	for _, i := range fresh {
		written[i] = true
	}
	return nil
}

// copyAccountsOnConflict COPYs the rows of todo into a temporary table
// and moves them into accounts with one insert that skips taken ids.
func (p *Postgres) copyAccountsOnConflict(ctx context.Context, tx pgx.Tx, si *SealedImport, todo []int, written []bool, now time.Time) error {
	if _, err := tx.Exec(ctx, `CREATE TEMPORARY TABLE linkgate_import (
		id text COLLATE "C", tenant_id text COLLATE "C", integration text, method text, status text, context text,
		credentials bytea, last_error text, version bigint, created_at bigint, updated_at bigint,
		next_probe_at bigint, expires_at bigint, has_refresh boolean) ON COMMIT DROP`); err != nil {
		return storeErr("importing accounts", err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"linkgate_import"}, pgImportColumns, importSource(si, todo, now)); err != nil {
		return storeErr("importing accounts", err)
	}
	index := make(map[string]int, len(todo))
	for _, i := range todo {
		index[si.rows[i].Account.ID] = i
	}
	cols := strings.Join(pgImportColumns, ", ")
	got, err := tx.Query(ctx, `INSERT INTO accounts (`+cols+`) SELECT `+cols+` FROM linkgate_import
		ON CONFLICT (id) DO NOTHING RETURNING id`)
	if err != nil {
		return storeErr("importing accounts", err)
	}
	for got.Next() {
		var id string
		if err := got.Scan(&id); err != nil {
			got.Close()
			return storeErr("importing accounts", err)
		}
		written[index[id]] = true
	}
	got.Close()
	if err := got.Err(); err != nil {
		return storeErr("importing accounts", err)
	}
	return nil
}

// copyImportEvents COPYs the events of the written rows.
func copyImportEvents(ctx context.Context, tx pgx.Tx, rows []Import, written []bool, now time.Time) error {
	var evs []*Event
	for i, r := range rows {
		if !written[i] {
			continue
		}
		for j := range r.Events {
			e := &r.Events[j]
			if err := e.fill(now); err != nil {
				return err
			}
			evs = append(evs, e)
		}
	}
	if len(evs) == 0 {
		return nil
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"events"}, []string{"id", "name", "account_id", "payload", "created_at"},
		pgx.CopyFromSlice(len(evs), func(k int) ([]any, error) {
			e := evs[k]
			return []any{e.ID, e.Name, e.AccountID, e.payload(), nanos(e.CreatedAt)}, nil
		}))
	if err != nil {
		if pgUniqueViolation(err) {
			return fmt.Errorf("importing events: %w", ErrExists)
		}
		return storeErr("importing events", err)
	}
	return nil
}

// SealImport seals through the wrapped store.
func (c *Cached) SealImport(rows []Import) *SealedImport {
	im, ok := c.inner.(Importer)
	if !ok {
		return &SealedImport{rows: rows, errs: make([]error, len(rows))}
	}
	return im.SealImport(rows)
}

// ImportSealed imports through the wrapped store. Nothing cached goes
// stale: a written row's id did not exist, and the cache holds only
// accounts that did; a row whose id was taken changed nothing.
func (c *Cached) ImportSealed(ctx context.Context, si *SealedImport) ([]error, error) {
	im, ok := c.inner.(Importer)
	if !ok {
		return nil, fmt.Errorf("importing accounts: the store cannot import in bulk")
	}
	return im.ImportSealed(ctx, si)
}

// ImportAccounts imports through the wrapped store.
func (c *Cached) ImportAccounts(ctx context.Context, rows []Import) ([]error, error) {
	return c.ImportSealed(ctx, c.SealImport(rows))
}

// ImportCacheSizer is a store whose writer can take a bigger page cache
// for a bulk import run in a process of its own (SQLite.SetImportCacheSize).
type ImportCacheSizer interface {
	SetImportCacheSize(ctx context.Context, bytes int64) error
}

// SetImportCacheSize sizes the wrapped store's writer cache for an import
// adding about bytes, if it has one (PostgreSQL's is the server's).
func (c *Cached) SetImportCacheSize(ctx context.Context, bytes int64) error {
	if s, ok := c.inner.(ImportCacheSizer); ok {
		return s.SetImportCacheSize(ctx, bytes)
	}
	return nil
}

// ImportCheckpointer is a store whose import checkpoints can move off the
// writer (SQLite.CheckpointImportsAside).
type ImportCheckpointer interface {
	CheckpointImportsAside(ctx context.Context) error
}

// CheckpointImportsAside moves the wrapped store's import checkpoints off
// its writer, if it has them.
func (c *Cached) CheckpointImportsAside(ctx context.Context) error {
	if s, ok := c.inner.(ImportCheckpointer); ok {
		return s.CheckpointImportsAside(ctx)
	}
	return nil
}

// fill gives e the id and time an insert would, and checks its name.
func (e *Event) fill(now time.Time) error {
	if e.ID == "" {
		e.ID = newEventID()
	}
	if e.CreatedAt.IsZero() {
		e.CreatedAt = now
	}
	if e.Name == "" {
		return fmt.Errorf("event %s has no name", e.ID)
	}
	return nil
}

func (e *Event) payload() []byte {
	if e.Payload == nil {
		return []byte("{}")
	}
	return e.Payload
}

var (
	_ Importer = (*SQLite)(nil)
	_ Importer = (*Postgres)(nil)
	_ Importer = (*Cached)(nil)

	_ ImportCacheSizer = (*SQLite)(nil)
	_ ImportCacheSizer = (*Cached)(nil)
)
