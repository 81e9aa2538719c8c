package tokenstore

import (
	"context"
	"database/sql"
	"time"
)

// Environment implements Environments.
func (s *SQLite) Environment(ctx context.Context, id string, createdAt time.Time) (string, time.Time, error) {
	var (
		gotID string
		at    int64
	)
	err := s.write(ctx, "reading the environment", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO environment (singleton, id, created_at) VALUES (1, ?, ?)
			ON CONFLICT (singleton) DO NOTHING`, id, nanos(createdAt)); err != nil {
			return storeErr("storing the environment", err)
		}
		if err := tx.QueryRowContext(ctx, `SELECT id, created_at FROM environment WHERE singleton = 1`).Scan(&gotID, &at); err != nil {
			return storeErr("reading the environment", err)
		}
		return nil
	})
	if err != nil {
		return "", time.Time{}, err
	}
	return gotID, fromNanos(at), nil
}
