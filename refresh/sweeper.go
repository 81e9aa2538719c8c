package refresh

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"
)

// Start starts the proactive sweeper: every SweepInterval it claims the
// accounts whose tokens expire within RefreshAhead and refreshes them, so
// that requests seldom wait for a refresh.
func (r *Refresher) Start() error {
	// What a crashed process left in the journal is applied before the
	// sweeper or a request can present a refresh token it has rotated.
	r.recoverJournal(context.Background())
	r.life.Lock()
	defer r.life.Unlock()
	if r.cancel != nil {
		return errors.New("refresh: sweeper already started")
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.sweeping.Add(1)
	go func() {
		defer r.sweeping.Done()
		r.sweepLoop(ctx)
	}()
	return nil
}

// Stop stops the sweeper and drains: refreshes queued that nobody waits
// for are dropped, and Stop waits for every token call on the wire (its
// answer may hold the only copy of a rotated refresh token; each is bounded
// by TokenHardLimit) and for the refreshes callers still wait on.
func (r *Refresher) Stop() error {
	r.life.Lock()
	cancel := r.cancel
	r.cancel = nil
	r.life.Unlock()
	r.gate.stop()
	if cancel != nil {
		cancel()
		r.sweeping.Wait()
	}
	r.life.Lock()
	for r.flights > 0 {
		r.lifeCond.Wait()
	}
	r.life.Unlock()
	return nil
}

func (r *Refresher) sweepLoop(ctx context.Context) {
	t := time.NewTicker(r.opts.SweepInterval)
	defer t.Stop()
	for {
		r.recoverJournal(ctx)
		r.Sweep(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep runs one pass of the sweeper now: it claims expiring accounts in
// batches of SweepBatch and refreshes them SweepConcurrency at a time, each
// after a random wait up to SweepJitter. It returns how many it claimed.
func (r *Refresher) Sweep(ctx context.Context) int {
	total := 0
	// A bound on batches per pass keeps one pass from running forever
	// when refreshes keep failing and their leases run out.
	for range 1000 {
		if ctx.Err() != nil {
			return total
		}
		lease := max(r.opts.SweepInterval, 2*r.opts.TokenTimeout+r.opts.LockTimeout)
		ids, err := r.store.ClaimExpiring(ctx, r.opts.Now().Add(r.opts.RefreshAhead), lease, r.opts.SweepBatch)
		if err != nil {
			if ctx.Err() == nil {
				r.storeFailing("", err)
			}
			return total
		}
		r.storeAnswered()
		total += len(ids)
		sem := make(chan struct{}, r.opts.SweepConcurrency)
		var wg sync.WaitGroup
		for _, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				jitter := time.NewTimer(rand.N(r.opts.SweepJitter))
				defer jitter.Stop()
				select {
				case <-ctx.Done():
					return
				case <-jitter.C:
				}
				select {
				case <-ctx.Done():
					return
				case sem <- struct{}{}:
				}
				defer func() { <-sem }()
				_, _ = r.await(ctx, id, modeAhead, "", false)
			}()
		}
		wg.Wait()
		if len(ids) < r.opts.SweepBatch {
			return total
		}
	}
	return total
}
