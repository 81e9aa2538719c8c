package linkgate

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/linkgate/linkgate/tokenstore"
)

// lostListenerTTL is how long accounts stay cached while the PostgreSQL
// listener is disconnected: other instances' writes then reach this one
// only when entries expire, so they expire soon.
const lostListenerTTL = time.Second

// openPostgres opens the PostgreSQL store at dsn. The caller wraps it in a
// tokenstore.Cached and then calls startPostgresListener so that other
// instances' writes drop this instance's cached accounts.
func openPostgres(ctx context.Context, dsn string, s *tokenstore.Sealer, logger *zap.Logger) (tokenstore.Store, error) {
	if dsn == "" {
		return nil, errors.New("a dsn is required, e.g. postgres://user:password@host:5432/db?sslmode=require")
	}
	p, err := tokenstore.OpenPostgres(ctx, dsn, s, tokenstore.PostgresOptions{})
	if err != nil {
		return nil, err
	}
	logger.Info("opened postgres store")
	return p, nil
}

// startPostgresListener keeps c coherent with the other instances sharing
// p's database: every account they change or delete is dropped from c as
// soon as the change commits. While the listener's connection is down, c
// keeps accounts for at most lostListenerTTL; on reconnect, accounts changed
// meanwhile are dropped and the usual cap returns. For any store but
// PostgreSQL it does nothing. stop ends the listener and waits for it; call
// it before closing the store.
func startPostgresListener(p tokenstore.Store, c *tokenstore.Cached, logger *zap.Logger, connected func(bool)) (stop func()) {
	pg, ok := p.(*tokenstore.Postgres)
	if !ok || c == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		wasLost := false // only Listen's goroutine reads and writes it
		pg.Listen(ctx, c.Invalidate, func(lost bool) {
			connected(!lost)
			if lost {
				wasLost = true
				c.SetTTLCap(lostListenerTTL)
				logger.Warn("lost the postgres connection that tells this instance about other instances' changes; caching accounts briefly until it is back",
					zap.Duration("cache_ttl", lostListenerTTL))
				return
			}
			c.SetTTLCap(tokenstore.DefaultTTLCap)
			if !wasLost {
				return
			}
			wasLost = false
			logger.Info("postgres change notifications are back; accounts changed meanwhile were dropped from the cache")
		})
	}()
	return func() {
		cancel()
		<-done
	}
}
