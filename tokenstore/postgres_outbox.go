package tokenstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// AddEvents writes events that come with no account change.
func (p *Postgres) AddEvents(ctx context.Context, events []Event) error {
	return p.write(ctx, "adding events", func(tx pgx.Tx) error {
		return p.insertEvents(ctx, tx, events)
	})
}

// FanOut turns up to limit events not yet fanned out, oldest first, into one
// pending delivery per endpoint (disabled endpoints excepted). Events another
// instance is fanning out at the same moment are skipped, so each event is
// fanned out once.
func (p *Postgres) FanOut(ctx context.Context, limit int, endpoints func(Event) []string) ([]Event, error) {
	if limit <= 0 {
		return nil, nil
	}
	var out []Event
	err := p.write(ctx, "fanning out events", func(tx pgx.Tx) error {
		out = out[:0]
		rows, err := tx.Query(ctx, `SELECT seq, id, name, account_id, payload, created_at FROM events
			WHERE NOT fanned_out ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED`, limit)
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
		disabled, err := pgDisabled(ctx, tx)
		if err != nil {
			return err
		}
		now := p.now().UnixNano()
		for _, e := range out {
			for _, ep := range endpoints(e) {
				if _, off := disabled[ep]; off {
					continue
				}
				if _, err := tx.Exec(ctx, `INSERT INTO deliveries (id, event_id, endpoint, status, next_attempt_at,
					created_at, updated_at) VALUES ($1, $2, $3, 'pending', $4, $5, $6)`,
					"dlv_"+uuid.NewString(), e.ID, ep, now, now, now); err != nil {
					return storeErr("fanning out event "+e.ID, err)
				}
			}
		}
		if _, err := tx.Exec(ctx, "UPDATE events SET fanned_out = true WHERE seq = ANY($1)", seqs); err != nil {
			return storeErr("fanning out events", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

const pgDeliveryColumns = `d.id, d.endpoint, d.status, d.attempts, d.next_attempt_at, d.last_status, d.last_error,
	d.created_at, d.updated_at, e.id, e.name, e.account_id, e.payload, e.created_at`

// ClaimDeliveries leases up to limit pending deliveries due at now. Rows
// another instance is claiming at the same moment are skipped, so no two
// dispatchers get the same delivery while its lease holds.
func (p *Postgres) ClaimDeliveries(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]Delivery, error) {
	if limit <= 0 {
		return nil, nil
	}
	at := now.UnixNano()
	until := now.Add(lease).UnixNano()
	rows, err := p.pool.Query(ctx, `WITH claimed AS (
			UPDATE deliveries SET lease_until = $1
			WHERE id IN (SELECT id FROM deliveries
				WHERE status = 'pending' AND next_attempt_at <= $2 AND lease_until <= $2
				ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
			RETURNING *)
		SELECT `+pgDeliveryColumns+` FROM claimed d JOIN events e ON e.id = d.event_id
		ORDER BY d.next_attempt_at, d.id`, until, at, limit)
	if err != nil {
		return nil, storeErr("claiming deliveries", err)
	}
	defer rows.Close()
	return claimedDeliveries(rows, until)
}

// ClaimEndpointDeliveries leases each endpoint's due deliveries in one
// statement (one round trip): a seek into deliveries_endpoint_due per
// endpoint, rows other dispatchers are claiming skipped, then the leases
// written by primary key.
func (p *Postgres) ClaimEndpointDeliveries(ctx context.Context, now time.Time, lease time.Duration, claims []EndpointClaim) ([]Delivery, error) {
	until := now.Add(lease).UnixNano()
	q, args := pgClaimQuery(now.UnixNano(), until, claims)
	if q == "" {
		return nil, nil
	}
	rows, err := p.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, storeErr("claiming deliveries", err)
	}
	defer rows.Close()
	return claimedDeliveries(rows, until)
}

// pgClaimQuery is the statement that claims claims at at, leased until
// until; empty when no claim asks for anything.
func pgClaimQuery(at, until int64, claims []EndpointClaim) (string, []any) {
	args := []any{until, at}
	var picks []string
	for _, c := range claims {
		if c.Limit <= 0 {
			continue
		}
		before := int64(math.MaxInt64)
		if !c.CreatedBefore.IsZero() {
			before = c.CreatedBefore.UnixNano()
		}
		args = append(args, c.Endpoint, before)
		picks = append(picks, pgPickEndpoint(len(picks), len(args)-1, c.Limit))
	}
	if len(picks) == 0 {
		return "", nil
	}
	return `WITH picked AS (` + strings.Join(picks, "\n\tUNION ALL ") + `),
	claimed AS (
		UPDATE deliveries SET lease_until = $1 WHERE id IN (SELECT id FROM picked) RETURNING *)
	SELECT ` + pgDeliveryColumns + ` FROM claimed d JOIN events e ON e.id = d.event_id JOIN picked ON picked.id = d.id
	ORDER BY picked.ord, d.next_attempt_at, d.id`, args
}

// pgPickEndpoint is the part of the claim that picks up to limit of one
// endpoint's (parameter $ep) soonest deliveries due at $2 and created
// before $ep+1, and locks them, skipping rows another dispatcher holds; but
// not a delivery of an account's event while one of an earlier event of
// that account to that endpoint is pending (as SQLite's query): each
// account's events reach each endpoint in commit order. The check reads
// without locking, so a pending earlier delivery another dispatcher holds
// still blocks.
//
// The plan must not depend on statistics (a burst of alarms is claimed
// before autovacuum has looked at it, and a planner that guesses one row
// per endpoint read the whole backlog for every candidate): the limit is a
// constant, so the endpoint's index is walked in order and stops at it and
// the lease is written through the primary key; OFFSET 0 keeps each
// subquery a per-row probe rather than a join the planner may reorder; and
// the inner check has deliveries_event_pending, which matches every
// condition it names.
func pgPickEndpoint(ord, ep, limit int) string {
	e, before := "$"+strconv.Itoa(ep), "$"+strconv.Itoa(ep+1)
	return `SELECT id, ` + strconv.Itoa(ord) + ` AS ord FROM (SELECT d.id FROM deliveries d
		WHERE d.status = 'pending' AND d.endpoint = ` + e + ` AND d.next_attempt_at <= $2 AND d.lease_until <= $2
			AND d.created_at < ` + before + `
			AND NOT EXISTS (SELECT 1 FROM events e JOIN events pe ON pe.account_id = e.account_id AND pe.seq < e.seq
				WHERE e.id = d.event_id AND e.account_id <> ''
					AND EXISTS (SELECT 1 FROM deliveries q
						WHERE q.event_id = pe.id AND q.endpoint = d.endpoint AND q.status = 'pending' OFFSET 0)
				OFFSET 0)
		ORDER BY d.next_attempt_at, d.id LIMIT ` + strconv.Itoa(limit) + ` FOR UPDATE OF d SKIP LOCKED) p` + strconv.Itoa(ord)
}

// PendingEndpoints walks deliveries_endpoint_due from one endpoint to the
// next (a recursive seek), rather than reading every pending delivery.
func (p *Postgres) PendingEndpoints(ctx context.Context) ([]string, error) {
	rows, err := p.pool.Query(ctx, `WITH RECURSIVE eps (endpoint) AS (
			(SELECT endpoint FROM deliveries WHERE status = 'pending' ORDER BY endpoint LIMIT 1)
			UNION ALL
			SELECT (SELECT d.endpoint FROM deliveries d WHERE d.status = 'pending' AND d.endpoint > eps.endpoint
				ORDER BY d.endpoint LIMIT 1)
			FROM eps WHERE eps.endpoint IS NOT NULL)
		SELECT endpoint FROM eps WHERE endpoint IS NOT NULL`)
	if err != nil {
		return nil, storeErr("reading pending endpoints", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var ep string
		if err := rows.Scan(&ep); err != nil {
			return nil, storeErr("reading pending endpoints", err)
		}
		out = append(out, ep)
	}
	if err := rows.Err(); err != nil {
		return nil, storeErr("reading pending endpoints", err)
	}
	return out, nil
}

// FinishAttempt records an attempt's outcome and drops the lease.
func (p *Postgres) FinishAttempt(ctx context.Context, d *Delivery) error {
	switch d.Status {
	case DeliveryPending, DeliveryDelivered, DeliveryFailed:
	default:
		return fmt.Errorf("finishing delivery %s: unknown status %q", d.ID, d.Status)
	}
	now := p.now().UTC()
	tag, err := p.pool.Exec(ctx, `UPDATE deliveries SET status = $1, attempts = $2, next_attempt_at = $3,
		last_status = $4, last_error = $5, lease_until = 0, updated_at = $6 WHERE id = $7 AND lease_until = $8`,
		string(d.Status), d.Attempts, nanos(d.NextAttemptAt), d.LastStatus, d.LastError, now.UnixNano(), d.ID, nanos(d.LeaseUntil))
	if err != nil {
		return storeErr("finishing delivery "+d.ID, err)
	}
	if tag.RowsAffected() == 0 {
		var one int
		if err := p.pool.QueryRow(ctx, "SELECT 1 FROM deliveries WHERE id = $1", d.ID).Scan(&one); errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("finishing delivery %s: %w", d.ID, ErrNotFound)
		}
		return fmt.Errorf("finishing delivery %s: its lease ran out: %w", d.ID, ErrConflict)
	}
	d.UpdatedAt = now
	return nil
}

// GetDelivery reads one delivery with its event.
func (p *Postgres) GetDelivery(ctx context.Context, id string) (*Delivery, error) {
	d, err := scanDelivery(p.pool.QueryRow(ctx, "SELECT "+pgDeliveryColumns+deliveryFrom+" WHERE d.id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("delivery %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, storeErr("reading delivery "+id, err)
	}
	return &d, nil
}

// ListDeliveries returns one page of deliveries, failed first, then newest.
func (p *Postgres) ListDeliveries(ctx context.Context, f DeliveryFilter) (DeliveryPage, error) {
	limit := pageSize(f.Limit)
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	switch f.Status {
	case "":
	case DeliveryRetrying:
		where = append(where, "d.status = 'pending' AND d.attempts > 0")
	default:
		where = append(where, "d.status = "+arg(string(f.Status)))
	}
	if f.Event != "" {
		where = append(where, "e.name = "+arg(f.Event))
	}
	if f.AccountID != "" {
		where = append(where, "e.account_id = "+arg(f.AccountID))
	}
	if f.Cursor != "" {
		c, err := decodeCursor(f.Cursor)
		if err != nil {
			return DeliveryPage{}, err
		}
		rank, at, id := arg(c.rank), arg(c.at), arg(c.id)
		where = append(where, "(d.failed < "+rank+" OR (d.failed = "+rank+" AND (d.created_at < "+at+
			" OR (d.created_at = "+at+" AND d.id < "+id+"))))")
	}
	q := "SELECT " + pgDeliveryColumns + deliveryFrom
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY d.failed DESC, d.created_at DESC, d.id DESC LIMIT " + arg(limit+1)
	rows, err := p.pool.Query(ctx, q, args...)
	if err != nil {
		return DeliveryPage{}, storeErr("listing deliveries", err)
	}
	defer rows.Close()
	var pg DeliveryPage
	if pg.Deliveries, err = collect(rows, "listing deliveries", scanDelivery); err != nil {
		return DeliveryPage{}, err
	}
	if len(pg.Deliveries) > limit {
		pg.Deliveries = pg.Deliveries[:limit]
		last := pg.Deliveries[limit-1]
		var rank int64
		if last.Status == DeliveryFailed {
			rank = 1
		}
		pg.NextCursor = cursor{rank: rank, at: nanos(last.CreatedAt), id: last.ID}.encode()
	}
	return pg, nil
}

// Redeliver makes a delivery pending again, due now.
func (p *Postgres) Redeliver(ctx context.Context, id string, now time.Time) error {
	tag, err := p.pool.Exec(ctx, `UPDATE deliveries SET status = 'pending', next_attempt_at = $1, lease_until = 0,
		updated_at = $2 WHERE id = $3`, now.UnixNano(), p.now().UnixNano(), id)
	if err != nil {
		return storeErr("redelivering "+id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("redelivering %s: %w", id, ErrNotFound)
	}
	return nil
}

// DisableEndpoint records that endpoint answered 410 Gone.
func (p *Postgres) DisableEndpoint(ctx context.Context, endpoint, reason string, at time.Time) error {
	_, err := p.pool.Exec(ctx, `INSERT INTO disabled_endpoints (endpoint, reason, disabled_at) VALUES ($1, $2, $3)
		ON CONFLICT (endpoint) DO UPDATE SET reason = excluded.reason, disabled_at = excluded.disabled_at`,
		endpoint, reason, nanos(at))
	if err != nil {
		return storeErr("disabling endpoint", err)
	}
	return nil
}

// EnableEndpoint lets a disabled endpoint get deliveries again.
func (p *Postgres) EnableEndpoint(ctx context.Context, endpoint string) error {
	if _, err := p.pool.Exec(ctx, "DELETE FROM disabled_endpoints WHERE endpoint = $1", endpoint); err != nil {
		return storeErr("enabling endpoint", err)
	}
	return nil
}

// DisabledEndpoints maps each disabled endpoint to the reason it was disabled.
func (p *Postgres) DisabledEndpoints(ctx context.Context) (map[string]string, error) {
	return pgDisabled(ctx, p.pool)
}

type pgQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func pgDisabled(ctx context.Context, q pgQuerier) (map[string]string, error) {
	rows, err := q.Query(ctx, "SELECT endpoint, reason FROM disabled_endpoints")
	if err != nil {
		return nil, storeErr("listing disabled endpoints", err)
	}
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
func (p *Postgres) PendingDeliveries(ctx context.Context) (int, error) {
	var n int
	if err := p.pool.QueryRow(ctx, "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'").Scan(&n); err != nil {
		return 0, storeErr("counting pending deliveries", err)
	}
	return n, nil
}

// Reseal re-seals every secret that is not sealed with the first key, so
// that an old key can be removed from the configuration. It returns how many
// values it re-sealed. Resealing an account notifies the other instances.
func (p *Postgres) Reseal(ctx context.Context) (int, error) {
	n := 0
	err := p.write(ctx, "resealing", func(tx pgx.Tx) error {
		n = 0
		for _, t := range []struct {
			sel, upd string
			textKey  bool // accounts are keyed by a TEXT id, states by a BYTEA hash
		}{
			{"SELECT convert_to(id, 'UTF8'), credentials FROM accounts FOR UPDATE", "UPDATE accounts SET credentials = $1 WHERE id = $2", true},
			{"SELECT hash, verifier FROM connect_states FOR UPDATE", "UPDATE connect_states SET verifier = $1 WHERE hash = $2", false},
		} {
			type blob struct{ key, v []byte }
			rows, err := tx.Query(ctx, t.sel)
			if err != nil {
				return storeErr("resealing", err)
			}
			var blobs []blob
			for rows.Next() {
				var b blob
				if err := rows.Scan(&b.key, &b.v); err != nil {
					rows.Close()
					return storeErr("resealing", err)
				}
				if !p.sealer.sealedWithPrimary(b.v) {
					blobs = append(blobs, b)
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return storeErr("resealing", err)
			}
			for _, b := range blobs {
				pt, err := p.sealer.Open(b.v, b.key)
				if err != nil {
					return fmt.Errorf("resealing: %w", err)
				}
				nb, err := p.sealer.Seal(pt, b.key)
				if err != nil {
					return fmt.Errorf("resealing: %w", err)
				}
				key := any(b.key)
				if t.textKey {
					key = string(b.key)
				}
				if _, err := tx.Exec(ctx, t.upd, nb, key); err != nil {
					return storeErr("resealing", err)
				}
				if t.textKey {
					if err := notifyAccount(ctx, tx, string(b.key)); err != nil {
						return err
					}
				}
				n++
			}
		}
		// Link token contexts that hold a secret are sealed too.
		rows, err := tx.Query(ctx, `SELECT hash, context FROM link_tokens WHERE context LIKE '"%' FOR UPDATE`)
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
			col, changed, err := resealLinkContext(p.sealer, l.hash, l.col)
			if err != nil {
				return fmt.Errorf("resealing: %w", err)
			}
			if !changed {
				continue
			}
			if _, err := tx.Exec(ctx, "UPDATE link_tokens SET context = $1 WHERE hash = $2", col, l.hash); err != nil {
				return storeErr("resealing", err)
			}
			n++
		}
		// Nothing is sealed with the other keys any more: a store opened
		// without them is fine.
		return p.recordPrimaryKey(ctx, tx, true)
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
