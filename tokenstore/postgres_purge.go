package tokenstore

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// Purge deletes rows past their retention (see Outbox.Purge), each batch in a
// transaction of its own. Rows another transaction holds (a delivery being
// redelivered, a link being completed) are skipped and go on a later purge,
// so instances purging at once neither wait on each other nor on the
// proxy's writes.
func (p *Postgres) Purge(ctx context.Context, now time.Time, r Retention) (PurgeCounts, error) {
	var c PurgeCounts
	if err := r.validate(); err != nil {
		return c, err
	}
	cut := cutoffs(now, r)

	// A link token's states are deleted first, and counted, rather than
	// left to the foreign key's cascade, which reports nothing.
	err := inBatches(ctx, "link tokens", &c.LinkTokens, func() (int, error) {
		var n int
		err := p.write(ctx, "purging link tokens", func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `SELECT hash FROM link_tokens
				WHERE expires_at < $1 OR (used_at > 0 AND used_at < $1) LIMIT $2 FOR UPDATE SKIP LOCKED`,
				cut.linkTokens, purgeBatch)
			if err != nil {
				return storeErr("purging link tokens", err)
			}
			hashes, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
			if err != nil {
				return storeErr("purging link tokens", err)
			}
			if len(hashes) == 0 {
				return nil
			}
			states, err := tx.Exec(ctx, "DELETE FROM connect_states WHERE link_token_hash = ANY($1)", hashes)
			if err != nil {
				return storeErr("purging connect states", err)
			}
			tokens, err := tx.Exec(ctx, "DELETE FROM link_tokens WHERE hash = ANY($1)", hashes)
			if err != nil {
				return storeErr("purging link tokens", err)
			}
			c.ConnectStates += int(states.RowsAffected())
			n = int(tokens.RowsAffected())
			return nil
		})
		return n, err
	})
	if err != nil {
		return c, err
	}

	// Each subquery locks the rows it picks and the outer statement checks
	// the condition again, so a row changed meanwhile (a delivery made
	// pending again) is left alone.
	steps := []struct {
		what  string
		total *int
		query string
		cut   int64
	}{
		{"connect states", &c.ConnectStates, `DELETE FROM connect_states WHERE hash IN
			(SELECT hash FROM connect_states WHERE expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)
			AND expires_at < $1`, cut.connectStates},
		{"delivered deliveries", &c.Delivered, `DELETE FROM deliveries WHERE id IN
			(SELECT id FROM deliveries WHERE status = 'delivered' AND updated_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)
			AND status = 'delivered' AND updated_at < $1`, cut.delivered},
		{"failed deliveries", &c.Failed, `DELETE FROM deliveries WHERE id IN
			(SELECT id FROM deliveries WHERE status = 'failed' AND updated_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)
			AND status = 'failed' AND updated_at < $1`, cut.failed},
		// Last, so that an event whose final deliveries went above goes too.
		// A fanned-out event gets no new deliveries, and the foreign key
		// refuses to delete one that has any.
		{"events", &c.Events, `DELETE FROM events WHERE seq IN
			(SELECT seq FROM events e WHERE fanned_out AND created_at < $1
				AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) LIMIT $2 FOR UPDATE SKIP LOCKED)`, cut.events},
	}
	for _, st := range steps {
		err := inBatches(ctx, st.what, st.total, func() (int, error) {
			tag, err := p.pool.Exec(ctx, st.query, st.cut, purgeBatch)
			if err != nil {
				return 0, storeErr("purging "+st.what, err)
			}
			return int(tag.RowsAffected()), nil
		})
		if err != nil {
			return c, err
		}
	}
	return c, nil
}
