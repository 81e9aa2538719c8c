package tokenstore

import (
	"context"
	"database/sql"
	"fmt"
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
type Importer interface {
	// ImportAccounts creates the accounts of rows. The slice it returns
	// has one entry per row: nil when the row was written, an error
	// wrapping ErrExists when its id is taken (the row is skipped), or an
	// error of the row's own (it cannot be sealed). The error is the
	// store's: when it is not nil, no row was written. Written accounts get
	// Version 1 and their CreatedAt/UpdatedAt filled in as CreateAccount
	// does.
	ImportAccounts(ctx context.Context, rows []Import) ([]error, error)
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

// ImportAccounts writes rows in one transaction, one row at a time through
// statements prepared once per call. A single-row insert needs no
// statement journal (a multi-row one keeps one to undo itself midway, and
// must be compiled for its parameters' count), and committing a thousand
// rows at once is most of the speed of a bulk import. An id already taken
// is skipped by ON CONFLICT rather than failing the transaction; the
// changes count tells which rows were written, so that only their events
// are inserted.
func (s *SQLite) ImportAccounts(ctx context.Context, rows []Import) ([]error, error) {
	errs := make([]error, len(rows))
	enc := make([]accountRow, len(rows))
	// Sealing happens before the write transaction, so that the single
	// writer is held only for the inserts.
	for i, r := range rows {
		var err error
		if enc[i], err = s.encodeAccount(r.Account); err != nil {
			errs[i] = err
		}
	}
	now := s.now().UTC()
	written := make([]bool, len(rows))
	err := s.write(ctx, "importing accounts", func(tx *sql.Tx) error {
		clear(written)
		insAccount, err := tx.PrepareContext(ctx, sqliteImportAccount)
		if err != nil {
			return storeErr("importing accounts", err)
		}
		defer insAccount.Close()
		var insEvent *sql.Stmt
		for i, r := range rows {
			if errs[i] != nil {
				continue
			}
			a, row := r.Account, &enc[i]
			created, updated := importTimes(a, now)
			res, err := insAccount.ExecContext(ctx, a.ID, a.TenantID, a.Integration, string(a.Method), string(a.Status),
				row.context, row.credentials, row.lastError, nanos(created), nanos(updated), row.probe,
				row.expiresAt, row.hasRefresh)
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
	finishImport(rows, errs, written, now)
	return errs, nil
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

// ImportAccounts writes rows with one multi-row insert (arrays unnested on
// the server) and one for their events, in one transaction. Ids already
// taken are skipped by ON CONFLICT; RETURNING tells which rows were
// written, and only their events are inserted.
func (p *Postgres) ImportAccounts(ctx context.Context, rows []Import) ([]error, error) {
	errs := make([]error, len(rows))
	now := p.now().UTC()
	n := len(rows)
	var (
		ids, tenants, integrations, methods, statuses, contexts = make([]string, 0, n), make([]string, 0, n),
			make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
		lastErrors                            = make([]*string, 0, n)
		creds                                 = make([][]byte, 0, n)
		createds, updateds, probes, expiresAt = make([]int64, 0, n), make([]int64, 0, n), make([]int64, 0, n), make([]int64, 0, n)
		hasRefresh                            = make([]bool, 0, n)
		index                                 = make(map[string]int, n)
	)
	for i, r := range rows {
		a := r.Account
		row, err := p.encodeAccount(a)
		if err != nil {
			errs[i] = err
			continue
		}
		if _, dup := index[a.ID]; dup {
			// The second of two rows with one id: the first wins, as it
			// would one row at a time.
			errs[i] = fmt.Errorf("importing account %s: %w", a.ID, ErrExists)
			continue
		}
		index[a.ID] = i
		created, updated := importTimes(a, now)
		ids, tenants, integrations = append(ids, a.ID), append(tenants, a.TenantID), append(integrations, a.Integration)
		methods, statuses, contexts = append(methods, string(a.Method)), append(statuses, string(a.Status)), append(contexts, row.context)
		lastErrors, creds = append(lastErrors, row.lastError), append(creds, row.credentials)
		createds, updateds, probes = append(createds, nanos(created)), append(updateds, nanos(updated)), append(probes, row.probe)
		expiresAt, hasRefresh = append(expiresAt, row.expiresAt), append(hasRefresh, row.hasRefresh)
	}
	written := make([]bool, len(rows))
	err := p.write(ctx, "importing accounts", func(tx pgx.Tx) error {
		clear(written)
		if len(ids) == 0 {
			return nil
		}
		got, err := tx.Query(ctx, `INSERT INTO accounts (id, tenant_id, integration, method, status, context,
			credentials, last_error, version, created_at, updated_at, next_probe_at, expires_at, has_refresh)
			SELECT id, tenant_id, integration, method, status, context, credentials, last_error, 1,
				created_at, updated_at, next_probe_at, expires_at, has_refresh
			FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[],
				$8::text[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bool[])
				AS t (id, tenant_id, integration, method, status, context, credentials, last_error,
				created_at, updated_at, next_probe_at, expires_at, has_refresh)
			ON CONFLICT (id) DO NOTHING
			RETURNING id`,
			ids, tenants, integrations, methods, statuses, contexts, creds, lastErrors, createds, updateds, probes,
			expiresAt, hasRefresh)
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
		var (
			evIDs, evNames, evAccounts []string
			evPayloads                 [][]byte
			evAt                       []int64
		)
		for i, r := range rows {
			if !written[i] {
				continue
			}
			for j := range r.Events {
				e := &r.Events[j]
				if err := e.fill(now); err != nil {
					return err
				}
				evIDs, evNames, evAccounts = append(evIDs, e.ID), append(evNames, e.Name), append(evAccounts, e.AccountID)
				evPayloads, evAt = append(evPayloads, e.payload()), append(evAt, nanos(e.CreatedAt))
			}
		}
		if len(evIDs) == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `INSERT INTO events (id, name, account_id, payload, created_at)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[])`,
			evIDs, evNames, evAccounts, evPayloads, evAt); err != nil {
			if pgUniqueViolation(err) {
				return fmt.Errorf("importing events: %w", ErrExists)
			}
			return storeErr("importing events", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	finishImport(rows, errs, written, now)
	return errs, nil
}

// ImportAccounts imports through the wrapped store. Nothing cached goes
// stale: a written row's id did not exist, and the cache holds only
// accounts that did; a row whose id was taken changed nothing.
func (c *Cached) ImportAccounts(ctx context.Context, rows []Import) ([]error, error) {
	im, ok := c.inner.(Importer)
	if !ok {
		return nil, fmt.Errorf("importing accounts: the store cannot import in bulk")
	}
	return im.ImportAccounts(ctx, rows)
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
)
