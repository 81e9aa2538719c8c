package tokenstore

import (
	"context"
	"database/sql"
	"time"
)

// Stats are the store-wide counts that the gateway's gauges show: how many
// accounts are in each status, and how far behind the webhook outbox is.
type Stats struct {
	// AccountsByStatus counts accounts by status.
	AccountsByStatus map[string]int64
	// PendingDeliveries counts deliveries not yet delivered nor failed for
	// good, and events not yet fanned out to endpoints.
	PendingDeliveries int64
	// OldestPending is when the oldest of them was created; zero when
	// there is none.
	OldestPending time.Time
	// RetryingByEndpoint counts, by endpoint URL, pending deliveries that
	// have failed at least once and wait for their next attempt.
	RetryingByEndpoint map[string]int64
}

// StatsReader is a store that can count for the gauges.
type StatsReader interface {
	Stats(ctx context.Context) (Stats, error)
}

// Ping checks that the store answers a query.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Stats implements StatsReader.
func (s *SQLite) Stats(ctx context.Context) (Stats, error) {
	st := Stats{AccountsByStatus: map[string]int64{}, RetryingByEndpoint: map[string]int64{}}
	if err := sqlGroupCount(ctx, s.r, "SELECT status, COUNT(*) FROM accounts GROUP BY status", st.AccountsByStatus); err != nil {
		return st, err
	}
	if err := sqlGroupCount(ctx, s.r, "SELECT endpoint, COUNT(*) FROM deliveries WHERE status = 'pending' AND attempts > 0 GROUP BY endpoint", st.RetryingByEndpoint); err != nil {
		return st, err
	}
	var (
		pending, events  int64
		oldestD, oldestE sql.NullInt64
	)
	if err := s.r.QueryRowContext(ctx, "SELECT COUNT(*), MIN(created_at) FROM deliveries WHERE status = 'pending'").Scan(&pending, &oldestD); err != nil {
		return st, storeErr("counting pending deliveries", err)
	}
	if err := s.r.QueryRowContext(ctx, "SELECT COUNT(*), MIN(created_at) FROM events WHERE fanned_out = 0").Scan(&events, &oldestE); err != nil {
		return st, storeErr("counting pending events", err)
	}
	st.PendingDeliveries = pending + events
	for _, o := range []sql.NullInt64{oldestD, oldestE} {
		if o.Valid && o.Int64 > 0 {
			if t := fromNanos(o.Int64); st.OldestPending.IsZero() || t.Before(st.OldestPending) {
				st.OldestPending = t
			}
		}
	}
	return st, nil
}

// Ping implements Pinger.
func (s *SQLite) Ping(ctx context.Context) error {
	var one int
	if err := s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return storeErr("pinging the database", err)
	}
	return nil
}

func sqlGroupCount(ctx context.Context, db *sql.DB, q string, into map[string]int64) error {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return storeErr("counting", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var n int64
		if err := rows.Scan(&k, &n); err != nil {
			return storeErr("counting", err)
		}
		into[k] = n
	}
	return rows.Err()
}

// Stats implements StatsReader.
func (p *Postgres) Stats(ctx context.Context) (Stats, error) {
	st := Stats{AccountsByStatus: map[string]int64{}, RetryingByEndpoint: map[string]int64{}}
	for q, into := range map[string]map[string]int64{
		"SELECT status, COUNT(*) FROM accounts GROUP BY status":                                                 st.AccountsByStatus,
		"SELECT endpoint, COUNT(*) FROM deliveries WHERE status = 'pending' AND attempts > 0 GROUP BY endpoint": st.RetryingByEndpoint,
	} {
		rows, err := p.pool.Query(ctx, q)
		if err != nil {
			return st, storeErr("counting", err)
		}
		for rows.Next() {
			var k string
			var n int64
			if err := rows.Scan(&k, &n); err != nil {
				rows.Close()
				return st, storeErr("counting", err)
			}
			into[k] = n
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return st, storeErr("counting", err)
		}
	}
	var (
		pending, events  int64
		oldestD, oldestE *int64
	)
	if err := p.pool.QueryRow(ctx, "SELECT COUNT(*), MIN(created_at) FROM deliveries WHERE status = 'pending'").Scan(&pending, &oldestD); err != nil {
		return st, storeErr("counting pending deliveries", err)
	}
	if err := p.pool.QueryRow(ctx, "SELECT COUNT(*), MIN(created_at) FROM events WHERE NOT fanned_out").Scan(&events, &oldestE); err != nil {
		return st, storeErr("counting pending events", err)
	}
	st.PendingDeliveries = pending + events
	for _, o := range []*int64{oldestD, oldestE} {
		if o == nil || *o <= 0 {
			continue
		}
		if t := fromNanos(*o); st.OldestPending.IsZero() || t.Before(st.OldestPending) {
			st.OldestPending = t
		}
	}
	return st, nil
}

// Ping implements Pinger.
func (p *Postgres) Ping(ctx context.Context) error {
	if err := p.pool.Ping(ctx); err != nil {
		return storeErr("pinging the database", err)
	}
	return nil
}

var (
	_ StatsReader = (*SQLite)(nil)
	_ StatsReader = (*Postgres)(nil)
	_ Pinger      = (*SQLite)(nil)
	_ Pinger      = (*Postgres)(nil)
)
