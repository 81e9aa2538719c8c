package linkgate

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/linkgate/linkgate/tokenstore"
)

// jittered spreads the janitors of instances sharing a store, started
// together, so that their purges do not all land at the same moment: it is
// every, give or take a tenth.
func jittered(every time.Duration) time.Duration {
	spread := int64(every / 5)
	if spread <= 0 {
		return every
	}
	return every - every/10 + time.Duration(rand.Int64N(spread+1))
}

// startJanitor purges store's expired and old rows every every (with
// jitter) under retention r, so that a gateway running for months keeps its
// tables the size of its live data. It logs what it deleted at info, and
// failures at error; a failed purge is tried again at the next tick. stop
// ends it, cancelling a purge under way, and returns once it has ended; it
// may be called more than once.
func startJanitor(store tokenstore.Store, logger *zap.Logger, every time.Duration, r tokenstore.Retention) (stop func()) {
	if every <= 0 {
		logger.Warn("not purging expired and old rows: the interval is not positive", zap.Duration("every", every))
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTimer(jittered(every))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			c, err := store.Purge(ctx, time.Now(), r)
			switch {
			case err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()):
				return
			case err != nil:
				logger.Error("purging expired and old rows", append(countFields(c), zap.Error(err))...)
			case c.Total() > 0:
				logger.Info("purged expired and old rows", countFields(c)...)
			}
			t.Reset(jittered(every))
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
}

func countFields(c tokenstore.PurgeCounts) []zap.Field {
	return []zap.Field{
		zap.Int("link_tokens", c.LinkTokens),
		zap.Int("connect_states", c.ConnectStates),
		zap.Int("delivered", c.Delivered),
		zap.Int("failed", c.Failed),
		zap.Int("events", c.Events),
	}
}
