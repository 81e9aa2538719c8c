package tokenstore

import (
	"context"
	"database/sql"
	"strings"
	"time"
)

// Purge deletes rows past their retention (see Outbox.Purge), each batch in a
// write transaction of its own so that other writes queue behind one batch
// at most.
func (s *SQLite) Purge(ctx context.Context, now time.Time, r Retention) (PurgeCounts, error) {
	var c PurgeCounts
	if err := r.validate(); err != nil {
		return c, err
	}
	cut := cutoffs(now, r)

	// A link token's states are deleted first, and counted, rather than
	// left to the foreign key's cascade, which reports nothing.
	err := inBatches(ctx, "link tokens", &c.LinkTokens, func() (int, error) {
		var n int
		err := s.write(ctx, "purging link tokens", func(tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx, `SELECT hash FROM link_tokens
				WHERE expires_at < ? OR (used_at > 0 AND used_at < ?) LIMIT ?`, cut.linkTokens, cut.linkTokens, purgeBatch)
			if err != nil {
				return storeErr("purging link tokens", err)
			}
			var hashes []any
			for rows.Next() {
				var h []byte
				if err := rows.Scan(&h); err != nil {
					rows.Close()
					return storeErr("purging link tokens", err)
				}
				hashes = append(hashes, h)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return storeErr("purging link tokens", err)
			}
			if len(hashes) == 0 {
				return nil
			}
			in := "(?" + strings.Repeat(", ?", len(hashes)-1) + ")"
			res, err := tx.ExecContext(ctx, "DELETE FROM connect_states WHERE link_token_hash IN "+in, hashes...)
			if err != nil {
				return storeErr("purging connect states", err)
			}
			states, _ := res.RowsAffected()
			if res, err = tx.ExecContext(ctx, "DELETE FROM link_tokens WHERE hash IN "+in, hashes...); err != nil {
				return storeErr("purging link tokens", err)
			}
			tokens, _ := res.RowsAffected()
			c.ConnectStates += int(states)
			n = int(tokens)
			return nil
		})
		return n, err
	})
	if err != nil {
		return c, err
	}

	steps := []struct {
		what  string
		total *int
		query string
		args  []any
	}{
		{"connect states", &c.ConnectStates, `DELETE FROM connect_states WHERE hash IN
			(SELECT hash FROM connect_states WHERE expires_at < ? LIMIT ?)`, []any{cut.connectStates, purgeBatch}},
		{"delivered deliveries", &c.Delivered, `DELETE FROM deliveries WHERE id IN
			(SELECT id FROM deliveries WHERE status = 'delivered' AND updated_at < ? LIMIT ?)`, []any{cut.delivered, purgeBatch}},
		{"failed deliveries", &c.Failed, `DELETE FROM deliveries WHERE id IN
			(SELECT id FROM deliveries WHERE status = 'failed' AND updated_at < ? LIMIT ?)`, []any{cut.failed, purgeBatch}},
		// Last, so that an event whose final deliveries went above goes too.
		{"events", &c.Events, `DELETE FROM events WHERE seq IN
			(SELECT seq FROM events e WHERE fanned_out = 1 AND created_at < ?
				AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) LIMIT ?)`, []any{cut.events, purgeBatch}},
	}
	for _, st := range steps {
		err := inBatches(ctx, st.what, st.total, func() (int, error) {
			var n int
			err := s.write(ctx, "purging "+st.what, func(tx *sql.Tx) error {
				res, err := tx.ExecContext(ctx, st.query, st.args...)
				if err != nil {
					return storeErr("purging "+st.what, err)
				}
				m, _ := res.RowsAffected()
				n = int(m)
				return nil
			})
			return n, err
		})
		if err != nil {
			return c, err
		}
	}
	return c, nil
}
