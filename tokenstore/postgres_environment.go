package tokenstore

import (
	"context"
	"time"
)

// Environment implements Environments. The insert and the read are one
// statement each outside a transaction: ON CONFLICT DO NOTHING lets exactly
// one proposal in, and the read after it sees that one.
func (p *Postgres) Environment(ctx context.Context, id string, createdAt time.Time) (string, time.Time, error) {
	if _, err := p.pool.Exec(ctx, `INSERT INTO environment (singleton, id, created_at) VALUES (1, $1, $2)
		ON CONFLICT (singleton) DO NOTHING`, id, nanos(createdAt)); err != nil {
		return "", time.Time{}, storeErr("storing the environment", err)
	}
	var (
		gotID string
		at    int64
	)
	if err := p.pool.QueryRow(ctx, `SELECT id, created_at FROM environment WHERE singleton = 1`).Scan(&gotID, &at); err != nil {
		return "", time.Time{}, storeErr("reading the environment", err)
	}
	return gotID, fromNanos(at), nil
}
