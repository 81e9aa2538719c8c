package tokenstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/linkgate/linkgate/account"
)

// pgAccountRow is the stored form of an account's mutable fields.
type pgAccountRow struct {
	context     string
	lastError   *string
	credentials []byte
	expiresAt   int64
	hasRefresh  bool
	probe       int64
}

// encodeAccount seals a's credentials with its id as associated data, as
// the SQLite store does, so a blob means the same in either store.
func (p *Postgres) encodeAccount(a *account.Account) (pgAccountRow, error) {
	var r pgAccountRow
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
		s := string(b)
		r.lastError = &s
	}
	if r.credentials, err = p.sealer.Seal(creds, []byte(a.ID)); err != nil {
		return r, fmt.Errorf("sealing credentials of account %s: %w", a.ID, err)
	}
	r.expiresAt = nanos(a.Credentials.Expiry)
	r.hasRefresh = a.Credentials.RefreshToken != ""
	r.probe = nanos(a.NextProbeAt)
	return r, nil
}

// scanPgAccount reads one row of accountColumns; credentials are unsealed
// only when unseal is true, so listings never decrypt (and show a
// context's secrets redacted). pgx.ErrNoRows comes
// back as is, other database errors as ErrUnavailable.
func (p *Postgres) scanPgAccount(row pgx.Row, unseal bool) (*account.Account, error) {
	var (
		a                      account.Account
		method, status, ctxRaw string
		sealed                 []byte
		lastErr                *string
		created, updated, next int64
	)
	if err := row.Scan(&a.ID, &a.TenantID, &a.Integration, &method, &status, &ctxRaw, &sealed, &lastErr,
		&a.Version, &created, &updated, &next); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, err
		}
		return nil, storeErr("reading account", err)
	}
	a.Method, a.Status = account.Method(method), account.Status(status)
	a.CreatedAt, a.UpdatedAt, a.NextProbeAt = fromNanos(created), fromNanos(updated), fromNanos(next)
	if err := json.Unmarshal([]byte(ctxRaw), &a.Context); err != nil {
		return nil, fmt.Errorf("decoding context of account %s: %w", a.ID, err)
	}
	if lastErr != nil {
		a.LastError = new(account.Error)
		if err := json.Unmarshal([]byte(*lastErr), a.LastError); err != nil {
			return nil, fmt.Errorf("decoding last error of account %s: %w", a.ID, err)
		}
	}
	if unseal {
		pt, err := p.sealer.Open(sealed, []byte(a.ID))
		if err != nil {
			return nil, fmt.Errorf("credentials of account %s: %w", a.ID, err)
		}
		if err := openAccountSecrets(&a, pt); err != nil {
			return nil, err
		}
	}
	return &a, nil
}

func (p *Postgres) insertEvents(ctx context.Context, tx pgx.Tx, events []Event) error {
	for i := range events {
		e := &events[i]
		if e.ID == "" {
			e.ID = newEventID()
		}
		if e.CreatedAt.IsZero() {
			e.CreatedAt = p.now().UTC()
		}
		if e.Name == "" {
			return fmt.Errorf("event %s has no name", e.ID)
		}
		payload := e.Payload
		if payload == nil {
			payload = []byte("{}")
		}
		if _, err := tx.Exec(ctx,
			`INSERT INTO events (id, name, account_id, payload, created_at) VALUES ($1, $2, $3, $4, $5)`,
			e.ID, e.Name, e.AccountID, payload, nanos(e.CreatedAt)); err != nil {
			if pgUniqueViolation(err) {
				return fmt.Errorf("writing event %s: %w", e.ID, ErrExists)
			}
			return storeErr("writing event "+e.ID, err)
		}
	}
	return nil
}

// CreateAccount stores a new account and its events; it sets a.Version to 1
// and fills a zero CreatedAt/UpdatedAt with the current time.
func (p *Postgres) CreateAccount(ctx context.Context, a *account.Account, events []Event) error {
	var commit func()
	err := p.write(ctx, "creating account "+a.ID, func(tx pgx.Tx) error {
		var err error
		commit, err = p.createAccount(ctx, tx, a, events)
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
func (p *Postgres) createAccount(ctx context.Context, tx pgx.Tx, a *account.Account, events []Event) (func(), error) {
	row, err := p.encodeAccount(a)
	if err != nil {
		return nil, err
	}
	now := p.now().UTC()
	created, updated := a.CreatedAt, a.UpdatedAt
	if created.IsZero() {
		created = now
	}
	if updated.IsZero() {
		updated = created
	}
	_, err = tx.Exec(ctx, `INSERT INTO accounts (id, tenant_id, integration, method, status, context,
		credentials, last_error, version, created_at, updated_at, next_probe_at, expires_at, has_refresh)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10, $11, $12, $13)`,
		a.ID, a.TenantID, a.Integration, string(a.Method), string(a.Status), row.context,
		row.credentials, row.lastError, nanos(created), nanos(updated), row.probe, row.expiresAt, row.hasRefresh)
	if err != nil {
		if pgUniqueViolation(err) {
			return nil, fmt.Errorf("creating account %s: %w", a.ID, ErrExists)
		}
		return nil, storeErr("creating account "+a.ID, err)
	}
	if err := p.insertEvents(ctx, tx, events); err != nil {
		return nil, err
	}
	if err := notifyAccount(ctx, tx, a.ID); err != nil {
		return nil, err
	}
	return func() { a.Version, a.CreatedAt, a.UpdatedAt = 1, created, updated }, nil
}

// GetAccount reads one account with its unsealed credentials.
func (p *Postgres) GetAccount(ctx context.Context, id string) (*account.Account, error) {
	a, err := p.scanPgAccount(p.pool.QueryRow(ctx, "SELECT "+accountColumns+" FROM accounts WHERE id = $1", id), true)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("account %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading account %s: %w", id, err)
	}
	return a, nil
}

// UpdateAccount writes a if the stored version equals a.Version, then
// increments a.Version.
func (p *Postgres) UpdateAccount(ctx context.Context, a *account.Account, events []Event) error {
	var next int64
	err := p.write(ctx, "updating account "+a.ID, func(tx pgx.Tx) error {
		var err error
		next, err = p.updateAccount(ctx, tx, a, events)
		return err
	})
	if err != nil {
		return err
	}
	a.Version = next
	return nil
}

func (p *Postgres) updateAccount(ctx context.Context, tx pgx.Tx, a *account.Account, events []Event) (int64, error) {
	row, err := p.encodeAccount(a)
	if err != nil {
		return 0, err
	}
	updated := a.UpdatedAt
	if updated.IsZero() {
		updated = p.now().UTC()
	}
	tag, err := tx.Exec(ctx, `UPDATE accounts SET tenant_id = $1, integration = $2, method = $3, status = $4,
		context = $5, credentials = $6, last_error = $7, version = version + 1, updated_at = $8, next_probe_at = $9,
		expires_at = $10, has_refresh = $11, changed_at = now()
		WHERE id = $12 AND version = $13`,
		a.TenantID, a.Integration, string(a.Method), string(a.Status), row.context, row.credentials, row.lastError,
		nanos(updated), row.probe, row.expiresAt, row.hasRefresh, a.ID, a.Version)
	if err != nil {
		return 0, storeErr("updating account "+a.ID, err)
	}
	if tag.RowsAffected() == 0 {
		var v int64
		err := tx.QueryRow(ctx, "SELECT version FROM accounts WHERE id = $1", a.ID).Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, fmt.Errorf("updating account %s: %w", a.ID, ErrNotFound)
		}
		if err != nil {
			return 0, storeErr("updating account "+a.ID, err)
		}
		return 0, fmt.Errorf("updating account %s at version %d (stored %d): %w", a.ID, a.Version, v, ErrConflict)
	}
	if err := p.insertEvents(ctx, tx, events); err != nil {
		return 0, err
	}
	if err := notifyAccount(ctx, tx, a.ID); err != nil {
		return 0, err
	}
	return a.Version + 1, nil
}

// tombstoneKeep is how long a deleted account's id is kept for cache
// listeners catching up after a lost connection.
const tombstoneKeep = 24 * time.Hour

// DeleteAccount removes an account and writes its events.
func (p *Postgres) DeleteAccount(ctx context.Context, id string, events []Event) error {
	return p.write(ctx, "deleting account "+id, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "DELETE FROM accounts WHERE id = $1", id)
		if err != nil {
			return storeErr("deleting account "+id, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("deleting account %s: %w", id, ErrNotFound)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO account_tombstones (id) VALUES ($1)", id); err != nil {
			return storeErr("deleting account "+id, err)
		}
		if _, err := tx.Exec(ctx, "DELETE FROM account_tombstones WHERE deleted_at < now() - $1::interval",
			tombstoneKeep.String()); err != nil {
			return storeErr("deleting account "+id, err)
		}
		if err := p.insertEvents(ctx, tx, events); err != nil {
			return err
		}
		return notifyAccount(ctx, tx, id)
	})
}

// ListAccounts returns one page of accounts, newest first, without
// credentials.
func (p *Postgres) ListAccounts(ctx context.Context, f Filter) (Page, error) {
	limit := pageSize(f.Limit)
	query, args, err := pgListAccountsQuery(f, limit)
	if err != nil {
		return Page{}, err
	}
	var pg Page
	read := func(q pgQuerier) error {
		rows, err := q.Query(ctx, query, args...)
		if err != nil {
			return storeErr("listing accounts", err)
		}
		defer rows.Close()
		for rows.Next() {
			a, err := p.scanPgAccount(rows, false)
			if err != nil {
				return fmt.Errorf("listing accounts: %w", err)
			}
			pg.Accounts = append(pg.Accounts, a)
		}
		if err := rows.Err(); err != nil {
			return storeErr("listing accounts", err)
		}
		return nil
	}
	if f.Search != "" {
		err = read(p.pool)
	} else {
		err = p.pinnedRead(ctx, "listing accounts", read)
	}
	if err != nil {
		return Page{}, err
	}
	if len(pg.Accounts) > limit {
		pg.Accounts = pg.Accounts[:limit]
		last := pg.Accounts[limit-1]
		pg.NextCursor = cursor{at: nanos(last.CreatedAt), id: last.ID}.encode()
	}
	return pg, nil
}

// pinnedRead runs read in a read-only transaction whose planner may
// neither sort nor build bitmaps, so that a listing walks its index in page
// order and stops at the page's end whatever the statistics say. Without
// statistics (a bulk-filled table autovacuum has not analyzed yet) the
// planner guesses 0.5 % of the rows for any equality and prefers fetching
// them all and sorting: every active account of a million, for one page.
func (p *Postgres) pinnedRead(ctx context.Context, op string, read func(pgQuerier) error) error {
	tx, err := p.pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return storeErr(op, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off"); err != nil {
		return storeErr(op, err)
	}
	if err := read(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return storeErr(op, err)
	}
	return nil
}

// pgListAccountsQuery builds the keyset query of one page (limit+1 rows).
// The cursor is a row comparison, which PostgreSQL turns into an index
// bound: an OR of the two halves would be a filter over every row before
// the page. Each equality filter has an index that leads with it and then
// walks (created_at, id) in page order.
func pgListAccountsQuery(f Filter, limit int) (string, []any, error) {
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	// An equality the listing's index does not lead with is written so
	// that no index can take it (col || ''), which leaves the planner one
	// index to walk, the one listIndex names.
	idx := listIndex(f)
	eq := func(col string, indexed bool, v string) {
		if !indexed && f.Search == "" {
			col = "(" + col + " || '')"
		}
		where = append(where, col+" = "+arg(v))
	}
	if f.Status != "" {
		eq("status", idx == "accounts_status_newest" || idx == "accounts_status_integration_newest", string(f.Status))
	}
	if f.TenantID != "" {
		eq("tenant_id", idx == "accounts_tenant_newest", f.TenantID)
	}
	if f.Integration != "" {
		eq("integration", idx == "accounts_integration_newest" || idx == "accounts_status_integration_newest", f.Integration)
	}
	if f.Search != "" {
		s := arg(f.Search)
		where = append(where, "(starts_with(id, "+s+") OR starts_with(tenant_id, "+s+"))")
	}
	// Listings with an equality filter order by created_at itself, which
	// only their own indexes give; the others by created_at + 0, which only
	// accounts_newest gives.
	at := "created_at"
	if f.Status == "" && f.TenantID == "" && f.Integration == "" {
		at = "(created_at + 0)"
	}
	from, hasFrom, upper, hasUpper, err := createdBounds(f)
	if err != nil {
		return "", nil, err
	}
	if hasUpper {
		where = append(where, "("+at+", id) < ("+arg(upper.at)+"::bigint, "+arg(upper.id)+"::text)")
	}
	if hasFrom {
		where = append(where, at+" >= "+arg(from)+"::bigint")
	}
	q := "SELECT " + accountColumns + " FROM accounts"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY " + at + " DESC, id DESC LIMIT " + arg(limit+1)
	return q, args, nil
}

// pgClaimExpiringQuery leases the accounts ClaimExpiring returns.
const pgClaimExpiringQuery = `UPDATE accounts SET sweep_lease_until = $1
	WHERE id IN (SELECT id FROM accounts
		WHERE status = 'active' AND method = 'oauth2' AND has_refresh AND expires_at > 0
		AND expires_at < $2 AND sweep_lease_until <= $3
		ORDER BY expires_at, id LIMIT $4 FOR UPDATE SKIP LOCKED)
	RETURNING id, expires_at`

// ClaimExpiring leases up to limit active oauth2 accounts with a refresh
// token whose access token expires before before, soonest first. Rows
// another instance is claiming at the same moment are skipped, not waited
// for.
func (p *Postgres) ClaimExpiring(ctx context.Context, before time.Time, lease time.Duration, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	now := p.now()
	rows, err := p.pool.Query(ctx, pgClaimExpiringQuery, now.Add(lease).UnixNano(), nanos(before), now.UnixNano(), limit)
	if err != nil {
		return nil, storeErr("claiming expiring accounts", err)
	}
	defer rows.Close()
	type claimed struct {
		id  string
		exp int64
	}
	var cs []claimed
	for rows.Next() {
		var c claimed
		if err := rows.Scan(&c.id, &c.exp); err != nil {
			return nil, storeErr("claiming expiring accounts", err)
		}
		cs = append(cs, c)
	}
	if err := rows.Err(); err != nil {
		return nil, storeErr("claiming expiring accounts", err)
	}
	// RETURNING has no order of its own.
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].exp != cs[j].exp {
			return cs[i].exp < cs[j].exp
		}
		return cs[i].id < cs[j].id
	})
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.id
	}
	return ids, nil
}
