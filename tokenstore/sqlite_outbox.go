package tokenstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/google/uuid"
)

const deliveryColumns = `d.id, d.endpoint, d.status, d.attempts, d.next_attempt_at, d.last_status, d.last_error,
	d.created_at, d.updated_at, e.id, e.name, e.account_id, e.payload, e.created_at`

const deliveryFrom = " FROM deliveries d JOIN events e ON e.id = d.event_id"

func scanDelivery(row rowScanner) (Delivery, error) {
	var (
		d                                    Delivery
		status                               string
		next, created, updated, eventCreated int64
	)
	err := row.Scan(&d.ID, &d.Endpoint, &status, &d.Attempts, &next, &d.LastStatus, &d.LastError,
		&created, &updated, &d.Event.ID, &d.Event.Name, &d.Event.AccountID, &d.Event.Payload, &eventCreated)
	if err != nil {
		return d, err
	}
	d.Status = DeliveryStatus(status)
	d.NextAttemptAt, d.CreatedAt, d.UpdatedAt = fromNanos(next), fromNanos(created), fromNanos(updated)
	d.Event.CreatedAt = fromNanos(eventCreated)
	return d, nil
}

// AddEvents writes events that come with no account change.
func (s *SQLite) AddEvents(ctx context.Context, events []Event) error {
	return s.write(ctx, "adding events", func(tx *sql.Tx) error {
		return s.insertEvents(ctx, tx, events)
	})
}

// FanOut turns up to limit events not yet fanned out, oldest first, into one
// pending delivery per endpoint (disabled endpoints excepted).
func (s *SQLite) FanOut(ctx context.Context, limit int, endpoints func(Event) []string) ([]Event, error) {
	if limit <= 0 {
		return nil, nil
	}
	// Dispatchers poll every second: when there is nothing to fan out,
	// say so from a read, without taking the write lock.
	var one int
	switch err := s.r.QueryRowContext(ctx, "SELECT 1 FROM events INDEXED BY events_unfanned WHERE fanned_out = 0 LIMIT 1").Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, storeErr("fanning out events", err)
	}
	var out []Event
	err := s.write(ctx, "fanning out events", func(tx *sql.Tx) error {
		out = out[:0]
		rows, err := tx.QueryContext(ctx, `SELECT seq, id, name, account_id, payload, created_at FROM events INDEXED BY events_unfanned
			WHERE fanned_out = 0 ORDER BY seq LIMIT ?`, limit)
		if err != nil {
			return storeErr("fanning out events", err)
		}
		var seqs []int64
		for rows.Next() {
			var (
				e       Event
				seq, at int64
			)
			if err := rows.Scan(&seq, &e.ID, &e.Name, &e.AccountID, &e.Payload, &at); err != nil {
				rows.Close()
				return storeErr("fanning out events", err)
			}
			e.CreatedAt = fromNanos(at)
			out, seqs = append(out, e), append(seqs, seq)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return storeErr("fanning out events", err)
		}
		if len(out) == 0 {
			return nil
		}
		disabled, err := disabledIn(ctx, tx)
		if err != nil {
			return err
		}
		now := s.now().UnixNano()
		for i, e := range out {
			for _, ep := range endpoints(e) {
				if _, off := disabled[ep]; off {
					continue
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO deliveries (id, event_id, endpoint, status, next_attempt_at,
					created_at, updated_at) VALUES (?, ?, ?, 'pending', ?, ?, ?)`,
					"dlv_"+uuid.NewString(), e.ID, ep, now, now, now); err != nil {
					return storeErr("fanning out event "+e.ID, err)
				}
			}
			if _, err := tx.ExecContext(ctx, "UPDATE events SET fanned_out = 1 WHERE seq = ?", seqs[i]); err != nil {
				return storeErr("fanning out event "+e.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ClaimDeliveries leases up to limit pending deliveries due at now.
func (s *SQLite) ClaimDeliveries(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]Delivery, error) {
	if limit <= 0 {
		return nil, nil
	}
	var out []Delivery
	err := s.write(ctx, "claiming deliveries", func(tx *sql.Tx) error {
		at := now.UnixNano()
		var err error
		out, err = s.claim(ctx, tx, now, lease, `SELECT id FROM deliveries
			WHERE status = 'pending' AND next_attempt_at <= ? AND lease_until <= ?
			ORDER BY next_attempt_at, id LIMIT ?`, at, at, limit)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ClaimEndpointDeliveries leases each endpoint's due deliveries by a seek
// in its own part of deliveries_endpoint_due (named, so that the plan does
// not depend on statistics).
func (s *SQLite) ClaimEndpointDeliveries(ctx context.Context, now time.Time, lease time.Duration, claims []EndpointClaim) ([]Delivery, error) {
	var out []Delivery
	err := s.write(ctx, "claiming deliveries", func(tx *sql.Tx) error {
		out = out[:0]
		at := now.UnixNano()
		for _, c := range claims {
			if c.Limit <= 0 {
				continue
			}
			before := int64(math.MaxInt64)
			if !c.CreatedBefore.IsZero() {
				before = c.CreatedBefore.UnixNano()
			}
			got, err := s.claim(ctx, tx, now, lease, sqliteClaimEndpointQuery, c.Endpoint, at, at, before, c.Limit)
			if err != nil {
				return err
			}
			out = append(out, got...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// sqliteClaimEndpointQuery selects one endpoint's due deliveries, but not a
// delivery of an account's event while a delivery of an earlier event of
// the same account to the same endpoint is pending (due later, or leased
// and on its way): so each account's events reach each endpoint one at a
// time, in the order they were committed.
const sqliteClaimEndpointQuery = `SELECT d.id FROM deliveries AS d INDEXED BY deliveries_endpoint_due
	WHERE d.status = 'pending' AND d.endpoint = ? AND d.next_attempt_at <= ? AND d.lease_until <= ? AND d.created_at < ?
		AND NOT EXISTS (SELECT 1 FROM events e
			JOIN events pe INDEXED BY events_account_seq ON pe.account_id = e.account_id AND pe.seq < e.seq
			JOIN deliveries p INDEXED BY deliveries_event_pending ON p.event_id = pe.id
			WHERE e.id = d.event_id AND e.account_id <> '' AND p.endpoint = d.endpoint AND p.status = 'pending')
	ORDER BY d.next_attempt_at, d.id LIMIT ?`

// claim leases the deliveries pick selects and reads them with their
// events, soonest due first.
func (s *SQLite) claim(ctx context.Context, tx *sql.Tx, now time.Time, lease time.Duration, pick string, args ...any) ([]Delivery, error) {
	until := now.Add(lease).UnixNano()
	rows, err := tx.QueryContext(ctx, `UPDATE deliveries SET lease_until = ? WHERE id IN (`+pick+`) RETURNING id`,
		append([]any{until}, args...)...)
	if err != nil {
		return nil, storeErr("claiming deliveries", err)
	}
	var ids []any
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, storeErr("claiming deliveries", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, storeErr("claiming deliveries", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	q := "SELECT " + deliveryColumns + deliveryFrom + " WHERE d.id IN (?" + strings.Repeat(", ?", len(ids)-1) +
		") ORDER BY d.next_attempt_at, d.id"
	rows, err = tx.QueryContext(ctx, q, ids...)
	if err != nil {
		return nil, storeErr("claiming deliveries", err)
	}
	defer rows.Close()
	return claimedDeliveries(rows, until)
}

// PendingEndpoints walks deliveries_endpoint_due from one endpoint to the
// next, a seek each, rather than reading every pending delivery.
func (s *SQLite) PendingEndpoints(ctx context.Context) ([]string, error) {
	var out []string
	last := ""
	for {
		var ep string
		err := s.r.QueryRowContext(ctx, `SELECT endpoint FROM deliveries INDEXED BY deliveries_endpoint_due
			WHERE status = 'pending' AND endpoint > ? ORDER BY endpoint LIMIT 1`, last).Scan(&ep)
		if errors.Is(err, sql.ErrNoRows) {
			return out, nil
		}
		if err != nil {
			return nil, storeErr("reading pending endpoints", err)
		}
		out, last = append(out, ep), ep
	}
}

// FinishAttempt records an attempt's outcome and drops the lease.
func (s *SQLite) FinishAttempt(ctx context.Context, d *Delivery) error {
	switch d.Status {
	case DeliveryPending, DeliveryDelivered, DeliveryFailed:
	default:
		return fmt.Errorf("finishing delivery %s: unknown status %q", d.ID, d.Status)
	}
	now := s.now().UTC()
	return s.write(ctx, "finishing delivery "+d.ID, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?,
			last_status = ?, last_error = ?, lease_until = 0, updated_at = ? WHERE id = ? AND lease_until = ?`,
			string(d.Status), d.Attempts, nanos(d.NextAttemptAt), d.LastStatus, d.LastError, now.UnixNano(), d.ID, nanos(d.LeaseUntil))
		if err != nil {
			return storeErr("finishing delivery "+d.ID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			var one int
			if err := tx.QueryRowContext(ctx, "SELECT 1 FROM deliveries WHERE id = ?", d.ID).Scan(&one); errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("finishing delivery %s: %w", d.ID, ErrNotFound)
			}
			return fmt.Errorf("finishing delivery %s: its lease ran out: %w", d.ID, ErrConflict)
		}
		d.UpdatedAt = now
		return nil
	})
}

// GetDelivery reads one delivery with its event.
func (s *SQLite) GetDelivery(ctx context.Context, id string) (*Delivery, error) {
	d, err := scanDelivery(s.r.QueryRowContext(ctx, "SELECT "+deliveryColumns+deliveryFrom+" WHERE d.id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("delivery %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, storeErr("reading delivery "+id, err)
	}
	return &d, nil
}

// ListDeliveries returns one page of deliveries, failed first, then newest.
func (s *SQLite) ListDeliveries(ctx context.Context, f DeliveryFilter) (DeliveryPage, error) {
	limit := pageSize(f.Limit)
	var (
		where []string
		args  []any
	)
	switch f.Status {
	case "":
	case DeliveryRetrying:
		where = append(where, "d.status = 'pending' AND d.attempts > 0")
	default:
		where, args = append(where, "d.status = ?"), append(args, string(f.Status))
	}
	if f.Event != "" {
		where, args = append(where, "e.name = ?"), append(args, f.Event)
	}
	if f.AccountID != "" {
		where, args = append(where, "e.account_id = ?"), append(args, f.AccountID)
	}
	if f.Cursor != "" {
		c, err := decodeCursor(f.Cursor)
		if err != nil {
			return DeliveryPage{}, err
		}
		where = append(where, "(d.failed, d.created_at, d.id) < (?, ?, ?)")
		args = append(args, c.rank, c.at, c.id)
	}
	q := "SELECT " + deliveryColumns + deliveryFrom
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY d.failed DESC, d.created_at DESC, d.id DESC LIMIT ?"
	args = append(args, limit+1)
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return DeliveryPage{}, storeErr("listing deliveries", err)
	}
	defer rows.Close()
	var p DeliveryPage
	if p.Deliveries, err = collect(rows, "listing deliveries", scanDelivery); err != nil {
		return DeliveryPage{}, err
	}
	if len(p.Deliveries) > limit {
		p.Deliveries = p.Deliveries[:limit]
		last := p.Deliveries[limit-1]
		var rank int64
		if last.Status == DeliveryFailed {
			rank = 1
		}
		p.NextCursor = cursor{rank: rank, at: nanos(last.CreatedAt), id: last.ID}.encode()
	}
	return p, nil
}

// Redeliver makes a delivery pending again, due now.
func (s *SQLite) Redeliver(ctx context.Context, id string, now time.Time) error {
	return s.write(ctx, "redelivering "+id, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE deliveries SET status = 'pending', next_attempt_at = ?, lease_until = 0,
			updated_at = ? WHERE id = ?`, now.UnixNano(), s.now().UnixNano(), id)
		if err != nil {
			return storeErr("redelivering "+id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("redelivering %s: %w", id, ErrNotFound)
		}
		return nil
	})
}

// DisableEndpoint records that endpoint answered 410 Gone.
func (s *SQLite) DisableEndpoint(ctx context.Context, endpoint, reason string, at time.Time) error {
	return s.write(ctx, "disabling endpoint", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO disabled_endpoints (endpoint, reason, disabled_at) VALUES (?, ?, ?)
			ON CONFLICT (endpoint) DO UPDATE SET reason = excluded.reason, disabled_at = excluded.disabled_at`,
			endpoint, reason, nanos(at))
		if err != nil {
			return storeErr("disabling endpoint", err)
		}
		return nil
	})
}

// EnableEndpoint lets a disabled endpoint get deliveries again.
func (s *SQLite) EnableEndpoint(ctx context.Context, endpoint string) error {
	return s.write(ctx, "enabling endpoint", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "DELETE FROM disabled_endpoints WHERE endpoint = ?", endpoint); err != nil {
			return storeErr("enabling endpoint", err)
		}
		return nil
	})
}

// DisabledEndpoints maps each disabled endpoint to the reason it was disabled.
func (s *SQLite) DisabledEndpoints(ctx context.Context) (map[string]string, error) {
	rows, err := s.r.QueryContext(ctx, "SELECT endpoint, reason FROM disabled_endpoints")
	if err != nil {
		return nil, storeErr("listing disabled endpoints", err)
	}
	return scanDisabled(rows)
}

func disabledIn(ctx context.Context, tx *sql.Tx) (map[string]string, error) {
	rows, err := tx.QueryContext(ctx, "SELECT endpoint, reason FROM disabled_endpoints")
	if err != nil {
		return nil, storeErr("listing disabled endpoints", err)
	}
	return scanDisabled(rows)
}

func scanDisabled(rows *sql.Rows) (map[string]string, error) {
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var ep, reason string
		if err := rows.Scan(&ep, &reason); err != nil {
			return nil, storeErr("listing disabled endpoints", err)
		}
		out[ep] = reason
	}
	if err := rows.Err(); err != nil {
		return nil, storeErr("listing disabled endpoints", err)
	}
	return out, nil
}

// PendingDeliveries counts deliveries not yet delivered nor failed.
func (s *SQLite) PendingDeliveries(ctx context.Context) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'").Scan(&n); err != nil {
		return 0, storeErr("counting pending deliveries", err)
	}
	return n, nil
}

// Reseal re-seals every secret that is not sealed with the first key, so
// that an old key can be removed from the configuration. It returns how many
// values it re-sealed.
func (s *SQLite) Reseal(ctx context.Context) (int, error) {
	n := 0
	err := s.write(ctx, "resealing", func(tx *sql.Tx) error {
		type blob struct {
			key []byte
			ad  []byte
			v   []byte
		}
		collect := func(q string, ad func(key []byte) []byte) ([]blob, error) {
			rows, err := tx.QueryContext(ctx, q)
			if err != nil {
				return nil, storeErr("resealing", err)
			}
			defer rows.Close()
			var out []blob
			for rows.Next() {
				var b blob
				if err := rows.Scan(&b.key, &b.v); err != nil {
					return nil, storeErr("resealing", err)
				}
				if !s.sealer.sealedWithPrimary(b.v) {
					b.ad = ad(b.key)
					out = append(out, b)
				}
			}
			return out, rows.Err()
		}
		same := func(k []byte) []byte { return k }
		for _, t := range []struct {
			sel, upd string
			textKey  bool // accounts are keyed by a TEXT id, states by a BLOB hash
		}{
			{"SELECT id, credentials FROM accounts", "UPDATE accounts SET credentials = ? WHERE id = ?", true},
			{"SELECT hash, verifier FROM connect_states", "UPDATE connect_states SET verifier = ? WHERE hash = ?", false},
		} {
			blobs, err := collect(t.sel, same)
			if err != nil {
				return err
			}
			for _, b := range blobs {
				pt, err := s.sealer.Open(b.v, b.ad)
				if err != nil {
					return fmt.Errorf("resealing: %w", err)
				}
				nb, err := s.sealer.Seal(pt, b.ad)
				if err != nil {
					return fmt.Errorf("resealing: %w", err)
				}
				key := any(b.key)
				if t.textKey {
					key = string(b.key)
				}
				if _, err := tx.ExecContext(ctx, t.upd, nb, key); err != nil {
					return storeErr("resealing", err)
				}
				n++
			}
		}
		// Link token contexts that hold a secret are sealed too.
		rows, err := tx.QueryContext(ctx, `SELECT hash, context FROM link_tokens WHERE context LIKE '"%'`)
		if err != nil {
			return storeErr("resealing", err)
		}
		type linkCtx struct {
			hash []byte
			col  string
		}
		var lcs []linkCtx
		for rows.Next() {
			var l linkCtx
			if err := rows.Scan(&l.hash, &l.col); err != nil {
				rows.Close()
				return storeErr("resealing", err)
			}
			lcs = append(lcs, l)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return storeErr("resealing", err)
		}
		for _, l := range lcs {
			col, changed, err := resealLinkContext(s.sealer, l.hash, l.col)
			if err != nil {
				return fmt.Errorf("resealing: %w", err)
			}
			if !changed {
				continue
			}
			if _, err := tx.ExecContext(ctx, "UPDATE link_tokens SET context = ? WHERE hash = ?", col, l.hash); err != nil {
				return storeErr("resealing", err)
			}
			n++
		}
		// Nothing is sealed with the other keys any more: a store opened
		// without them is fine.
		return s.recordPrimaryKey(ctx, tx, true)
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
