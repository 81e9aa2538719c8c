package tokenstore

import (
	"context"
	"errors"
)

// History lists an account's events, for the console's timeline of an
// account. SQLite, Postgres and Cached implement it; it is apart from
// Store so that other stores need not.
type History interface {
	// AccountEvents returns up to limit of the account's events, newest
	// first (events past the retention are purged and not returned).
	AccountEvents(ctx context.Context, accountID string, limit int) ([]Event, error)
}

// ErrNoHistory is Cached's answer when the store under it keeps no history.
var ErrNoHistory = errors.New("this store does not list an account's events")

// AccountEvents lists an account's events, newest first.
func (s *SQLite) AccountEvents(ctx context.Context, accountID string, limit int) ([]Event, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, name, account_id, payload, created_at FROM events INDEXED BY events_account_seq
		WHERE account_id = ? ORDER BY seq DESC LIMIT ?`, accountID, pageSize(limit))
	if err != nil {
		return nil, storeErr("listing an account's events", err)
	}
	defer rows.Close()
	return collect(rows, "listing an account's events", scanHistoryEvent)
}

// AccountEvents lists an account's events, newest first.
func (p *Postgres) AccountEvents(ctx context.Context, accountID string, limit int) ([]Event, error) {
	rows, err := p.pool.Query(ctx, `SELECT id, name, account_id, payload, created_at FROM events
		WHERE account_id = $1 ORDER BY seq DESC LIMIT $2`, accountID, pageSize(limit))
	if err != nil {
		return nil, storeErr("listing an account's events", err)
	}
	defer rows.Close()
	return collect(rows, "listing an account's events", scanHistoryEvent)
}

// AccountEvents asks the store under the cache; events are not cached.
func (c *Cached) AccountEvents(ctx context.Context, accountID string, limit int) ([]Event, error) {
	h, ok := c.inner.(History)
	if !ok {
		return nil, ErrNoHistory
	}
	return h.AccountEvents(ctx, accountID, limit)
}

var (
	_ History = (*SQLite)(nil)
	_ History = (*Postgres)(nil)
	_ History = (*Cached)(nil)
)

func scanHistoryEvent(r rowScanner) (Event, error) {
	var (
		e  Event
		at int64
	)
	err := r.Scan(&e.ID, &e.Name, &e.AccountID, &e.Payload, &at)
	e.CreatedAt = fromNanos(at)
	return e, err
}
