package tokenstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/linkgate/linkgate/account"
)

const accountColumns = `id, tenant_id, integration, method, status, context, credentials, last_error,
	version, created_at, updated_at, next_probe_at`

type rowScanner interface{ Scan(dest ...any) error }

// scanAccount reads one row of accountColumns; credentials are unsealed only
// when unseal is true, so listings never decrypt (and show a context's
// secrets redacted).
func (s *SQLite) scanAccount(row rowScanner, unseal bool) (*account.Account, error) {
	var (
		a                      account.Account
		method, status, ctxRaw string
		sealed                 []byte
		lastErr                sql.NullString
		created, updated, next int64
	)
	if err := row.Scan(&a.ID, &a.TenantID, &a.Integration, &method, &status, &ctxRaw, &sealed, &lastErr,
		&a.Version, &created, &updated, &next); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, err
		}
		return nil, storeErr("reading account row", err)
	}
	a.Method, a.Status = account.Method(method), account.Status(status)
	a.CreatedAt, a.UpdatedAt, a.NextProbeAt = fromNanos(created), fromNanos(updated), fromNanos(next)
	if err := json.Unmarshal([]byte(ctxRaw), &a.Context); err != nil {
		return nil, fmt.Errorf("decoding context of account %s: %w", a.ID, err)
	}
	if lastErr.Valid {
		a.LastError = new(account.Error)
		if err := json.Unmarshal([]byte(lastErr.String), a.LastError); err != nil {
			return nil, fmt.Errorf("decoding last error of account %s: %w", a.ID, err)
		}
	}
	if unseal {
		pt, err := s.sealer.Open(sealed, []byte(a.ID))
		if err != nil {
			return nil, fmt.Errorf("credentials of account %s: %w", a.ID, err)
		}
		if err := openAccountSecrets(&a, pt); err != nil {
			return nil, err
		}
	}
	return &a, nil
}

// accountRow is the stored form of an account's mutable fields.
type accountRow struct {
	context, lastError           any
	credentials                  []byte
	expiresAt, hasRefresh, probe int64
}

func (s *SQLite) encodeAccount(a *account.Account) (accountRow, error) {
	var r accountRow
	if a.ID == "" {
		return r, errors.New("account has no id")
	}
	ctxJSON, creds, err := accountSecrets(a)
	if err != nil {
		return r, err
	}
	r.context = string(ctxJSON)
	if a.LastError != nil {
		b, err := json.Marshal(a.LastError)
		if err != nil {
			return r, fmt.Errorf("encoding last error of account %s: %w", a.ID, err)
		}
		r.lastError = string(b)
	}
	if r.credentials, err = s.sealer.Seal(creds, []byte(a.ID)); err != nil {
		return r, fmt.Errorf("sealing credentials of account %s: %w", a.ID, err)
	}
	r.expiresAt = nanos(a.Credentials.Expiry)
	if a.Credentials.RefreshToken != "" {
		r.hasRefresh = 1
	}
	r.probe = nanos(a.NextProbeAt)
	return r, nil
}

func (s *SQLite) insertEvents(ctx context.Context, tx *sql.Tx, events []Event) error {
	for i := range events {
		e := &events[i]
		if e.ID == "" {
			e.ID = newEventID()
		}
		if e.CreatedAt.IsZero() {
			e.CreatedAt = s.now().UTC()
		}
		if e.Name == "" {
			return fmt.Errorf("event %s has no name", e.ID)
		}
		payload := e.Payload
		if payload == nil {
			payload = []byte("{}")
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO events (id, name, account_id, payload, created_at) VALUES (?, ?, ?, ?, ?)`,
			e.ID, e.Name, e.AccountID, payload, nanos(e.CreatedAt)); err != nil {
			if isUniqueViolation(err) {
				return fmt.Errorf("writing event %s: %w", e.ID, ErrExists)
			}
			return storeErr("writing event "+e.ID, err)
		}
	}
	return nil
}

// CreateAccount stores a new account and its events; it sets a.Version to 1
// and fills a zero CreatedAt/UpdatedAt with the current time.
func (s *SQLite) CreateAccount(ctx context.Context, a *account.Account, events []Event) error {
	var commit func()
	err := s.write(ctx, "creating account "+a.ID, func(tx *sql.Tx) error {
		var err error
		commit, err = s.createAccount(ctx, tx, a, events)
		return err
	})
	if err != nil {
		return err
	}
	commit()
	return nil
}

// createAccount inserts a; the returned func updates the caller's copy and
// must run only once the transaction has committed.
func (s *SQLite) createAccount(ctx context.Context, tx *sql.Tx, a *account.Account, events []Event) (func(), error) {
	row, err := s.encodeAccount(a)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC()
	created, updated := a.CreatedAt, a.UpdatedAt
	if created.IsZero() {
		created = now
	}
	if updated.IsZero() {
		updated = created
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO accounts (id, tenant_id, integration, method, status, context,
		credentials, last_error, version, created_at, updated_at, next_probe_at, expires_at, has_refresh)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?)`,
		a.ID, a.TenantID, a.Integration, string(a.Method), string(a.Status), row.context,
		row.credentials, row.lastError, nanos(created), nanos(updated), row.probe, row.expiresAt, row.hasRefresh)
	if err != nil {
		if isUniqueViolation(err) {
			return nil, fmt.Errorf("creating account %s: %w", a.ID, ErrExists)
		}
		return nil, storeErr("creating account "+a.ID, err)
	}
	if err := s.insertEvents(ctx, tx, events); err != nil {
		return nil, err
	}
	return func() { a.Version, a.CreatedAt, a.UpdatedAt = 1, created, updated }, nil
}

// GetAccount reads one account with its unsealed credentials.
func (s *SQLite) GetAccount(ctx context.Context, id string) (*account.Account, error) {
	row := s.getAccount.QueryRowContext(ctx, id)
	a, err := s.scanAccount(row, true)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("account %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading account %s: %w", id, err)
	}
	return a, nil
}

// UpdateAccount writes a if the stored version equals a.Version, then
// increments a.Version.
func (s *SQLite) UpdateAccount(ctx context.Context, a *account.Account, events []Event) error {
	var next int64
	err := s.write(ctx, "updating account "+a.ID, func(tx *sql.Tx) error {
		var err error
		next, err = s.updateAccount(ctx, tx, a, events)
		return err
	})
	if err != nil {
		return err
	}
	a.Version = next
	return nil
}

func (s *SQLite) updateAccount(ctx context.Context, tx *sql.Tx, a *account.Account, events []Event) (int64, error) {
	row, err := s.encodeAccount(a)
	if err != nil {
		return 0, err
	}
	updated := a.UpdatedAt
	if updated.IsZero() {
		updated = s.now().UTC()
	}
	res, err := tx.ExecContext(ctx, `UPDATE accounts SET tenant_id = ?, integration = ?, method = ?, status = ?,
		context = ?, credentials = ?, last_error = ?, version = version + 1, updated_at = ?, next_probe_at = ?,
		expires_at = ?, has_refresh = ?
		WHERE id = ? AND version = ?`,
		a.TenantID, a.Integration, string(a.Method), string(a.Status), row.context, row.credentials, row.lastError,
		nanos(updated), row.probe, row.expiresAt, row.hasRefresh, a.ID, a.Version)
	if err != nil {
		return 0, storeErr("updating account "+a.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		var v int64
		err := tx.QueryRowContext(ctx, "SELECT version FROM accounts WHERE id = ?", a.ID).Scan(&v)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, fmt.Errorf("updating account %s: %w", a.ID, ErrNotFound)
		}
		if err != nil {
			return 0, storeErr("updating account "+a.ID, err)
		}
		return 0, fmt.Errorf("updating account %s at version %d (stored %d): %w", a.ID, a.Version, v, ErrConflict)
	}
	if err := s.insertEvents(ctx, tx, events); err != nil {
		return 0, err
	}
	return a.Version + 1, nil
}

// DeleteAccount removes an account and writes its events.
func (s *SQLite) DeleteAccount(ctx context.Context, id string, events []Event) error {
	return s.write(ctx, "deleting account "+id, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM accounts WHERE id = ?", id)
		if err != nil {
			return storeErr("deleting account "+id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("deleting account %s: %w", id, ErrNotFound)
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM refresh_locks WHERE account_id = ? AND lease_until < ?", id, s.now().UnixNano()); err != nil {
			return storeErr("deleting account "+id, err)
		}
		return s.insertEvents(ctx, tx, events)
	})
}

// ListAccounts returns one page of accounts, newest first, without
// credentials.
func (s *SQLite) ListAccounts(ctx context.Context, f Filter) (Page, error) {
	limit := pageSize(f.Limit)
	q, args, err := listAccountsQuery(f, limit)
	if err != nil {
		return Page{}, err
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return Page{}, storeErr("listing accounts", err)
	}
	defer rows.Close()
	var p Page
	for rows.Next() {
		a, err := s.scanAccount(rows, false)
		if err != nil {
			return Page{}, fmt.Errorf("listing accounts: %w", err)
		}
		p.Accounts = append(p.Accounts, a)
	}
	if err := rows.Err(); err != nil {
		return Page{}, storeErr("listing accounts", err)
	}
	if len(p.Accounts) > limit {
		p.Accounts = p.Accounts[:limit]
		last := p.Accounts[limit-1]
		p.NextCursor = cursor{at: nanos(last.CreatedAt), id: last.ID}.encode()
	}
	return p, nil
}

// claimExpiringQuery selects the accounts ClaimExpiring leases. INDEXED BY
// pins its plan: without statistics (nothing runs ANALYZE) SQLite prefers
// the status index and reads every active account on every claim.
const claimExpiringQuery = `SELECT id FROM accounts INDEXED BY accounts_expiring
	WHERE status = 'active' AND method = 'oauth2' AND has_refresh = 1 AND expires_at > 0
	AND expires_at < ? AND sweep_lease_until <= ?
	ORDER BY expires_at, id LIMIT ?`

// ClaimExpiring leases up to limit active oauth2 accounts with a refresh
// token whose access token expires before before, soonest first.
func (s *SQLite) ClaimExpiring(ctx context.Context, before time.Time, lease time.Duration, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	var ids []string
	err := s.write(ctx, "claiming expiring accounts", func(tx *sql.Tx) error {
		now := s.now()
		rows, err := tx.QueryContext(ctx, claimExpiringQuery, nanos(before), now.UnixNano(), limit)
		if err != nil {
			return storeErr("claiming expiring accounts", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return storeErr("claiming expiring accounts", err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return storeErr("claiming expiring accounts", err)
		}
		until := now.Add(lease).UnixNano()
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, "UPDATE accounts SET sweep_lease_until = ? WHERE id = ?", until, id); err != nil {
				return storeErr("claiming expiring accounts", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// listAccountsQuery builds the keyset query of one page (limit+1 rows, the
// extra one telling whether there is a next page). Each filter combination
// names the index that seeks to the cursor and walks in page order, so that
// any page costs the same at any depth and size, with or without the
// planner's statistics. A search is an OR of two prefix ranges and is left
// to the planner.
func listAccountsQuery(f Filter, limit int) (string, []any, error) {
	var (
		where []string
		args  []any
	)
	if f.Status != "" {
		where, args = append(where, "status = ?"), append(args, string(f.Status))
	}
	if f.TenantID != "" {
		where, args = append(where, "tenant_id = ?"), append(args, f.TenantID)
	}
	if f.Integration != "" {
		where, args = append(where, "integration = ?"), append(args, f.Integration)
	}
	if f.Search != "" {
		where = append(where, "((id >= ? AND id < ?) OR (tenant_id >= ? AND tenant_id < ?))")
		args = append(args, f.Search, prefixEnd(f.Search), f.Search, prefixEnd(f.Search))
	}
	from, hasFrom, upper, hasUpper, err := createdBounds(f)
	if err != nil {
		return "", nil, err
	}
	if hasUpper {
		where = append(where, "(created_at, id) < (?, ?)")
		args = append(args, upper.at, upper.id)
	}
	if hasFrom {
		where = append(where, "created_at >= ?")
		args = append(args, from)
	}
	q := "SELECT " + accountColumns + " FROM accounts"
	if f.Search == "" {
		q += " INDEXED BY " + listIndex(f)
	}
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at DESC, id DESC LIMIT ?"
	return q, append(args, limit+1), nil
}
