package tokenstore

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Retention says how long rows that are done with are kept before Purge
// deletes them. Pending deliveries, events not yet fanned out and events
// that still have a delivery are kept whatever their age.
type Retention struct {
	// LinkTokens is how long a link token is kept after it expired or was
	// used, whichever came first; its connect states go with it.
	LinkTokens time.Duration
	// ConnectStates is how long a connect state is kept after it expired.
	ConnectStates time.Duration
	// Delivered is how long a delivered delivery is kept after its last
	// update.
	Delivered time.Duration
	// Failed is how long a failed delivery is kept after its last update;
	// longer than Delivered, as failures are what operators look into.
	Failed time.Duration
}

// DefaultRetention keeps link tokens 30 days past expiry or use (long enough
// to answer "what happened to this link?"), connect states not at all once
// expired, delivered deliveries 30 days and failed ones 90 days.
var DefaultRetention = Retention{
	LinkTokens:    30 * 24 * time.Hour,
	ConnectStates: 0,
	Delivered:     30 * 24 * time.Hour,
	Failed:        90 * 24 * time.Hour,
}

// events is how long an event with no delivery left is kept after it was
// written: as long as its longest-kept delivery could have been, so that an
// event outlives every delivery of it.
func (r Retention) events() time.Duration { return max(r.Delivered, r.Failed) }

func (r Retention) validate() error {
	if r.LinkTokens < 0 || r.ConnectStates < 0 || r.Delivered < 0 || r.Failed < 0 {
		return errors.New("purging: a retention must not be negative")
	}
	return nil
}

// PurgeCounts says how many rows of each kind one Purge deleted.
type PurgeCounts struct {
	LinkTokens    int
	ConnectStates int
	Delivered     int
	Failed        int
	Events        int
}

// Total is the number of rows deleted.
func (c PurgeCounts) Total() int {
	return c.LinkTokens + c.ConnectStates + c.Delivered + c.Failed + c.Events
}

// purgeBatch bounds the rows one statement deletes, so that a purge never
// holds the write lock long enough to stall the writes of the proxy path.
const purgeBatch = 1000

// purgeCutoffs are the instants before which rows go, in Unix nanoseconds.
type purgeCutoffs struct {
	linkTokens, connectStates, delivered, failed, events int64
}

func cutoffs(now time.Time, r Retention) purgeCutoffs {
	return purgeCutoffs{
		linkTokens:    now.Add(-r.LinkTokens).UnixNano(),
		connectStates: now.Add(-r.ConnectStates).UnixNano(),
		delivered:     now.Add(-r.Delivered).UnixNano(),
		failed:        now.Add(-r.Failed).UnixNano(),
		events:        now.Add(-r.events()).UnixNano(),
	}
}

// inBatches runs batch until it deletes fewer than purgeBatch rows, adding
// up what it deleted; ctx ending stops it between batches.
func inBatches(ctx context.Context, what string, total *int, batch func() (int, error)) error {
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("purging %s: %w", what, err)
		}
		n, err := batch()
		if err != nil {
			return err
		}
		*total += n
		if n < purgeBatch {
			return nil
		}
	}
}
