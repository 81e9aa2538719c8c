package refresh

import (
	"context"
	"errors"
	"sync"
)

// callGate bounds the token calls of one Refresher that may be on the wire at
// once. A SIGKILL loses the answers of the calls on the wire (the provider
// has rotated those grants; the new refresh token dies with the process), so
// the bound is also the most grants a crash can cost. Callers waiting on an
// expired token go before the sweeper and background refreshes.
type callGate struct {
	mu       sync.Mutex
	free     int
	queue    []*callWaiter
	urgent   map[string]int // account id -> callers waiting on its refresh
	stopping bool
}

type callWaiter struct {
	id      string
	ch      chan struct{}
	granted bool
}

// errStopping is returned to a refresh that was queued, not yet sent, when
// the Refresher stops and nobody waits for it.
var errStopping = errors.New("the refresher is stopping")

func newCallGate(n int) *callGate { return &callGate{free: n, urgent: map[string]int{}} }

// want marks that a caller waits for account id's refresh, which gives it
// priority in the queue; the returned func unmarks it.
func (g *callGate) want(id string) func() {
	g.mu.Lock()
	g.urgent[id]++
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		if g.urgent[id]--; g.urgent[id] <= 0 {
			delete(g.urgent, id)
		}
		g.mu.Unlock()
	}
}

// acquire takes a slot for account id's token call, waiting as long as ctx
// allows. Once the refresher is stopping, a refresh nobody waits for is not
// started.
func (g *callGate) acquire(ctx context.Context, id string) error {
	g.mu.Lock()
	if g.stopping && g.urgent[id] == 0 {
		g.mu.Unlock()
		return errStopping
	}
	if g.free > 0 && len(g.queue) == 0 {
		g.free--
		g.mu.Unlock()
		return nil
	}
	w := &callWaiter{id: id, ch: make(chan struct{})}
	g.queue = append(g.queue, w)
	g.mu.Unlock()
	select {
	case <-w.ch:
		if !w.granted {
			return errStopping
		}
		return nil
	case <-ctx.Done():
		g.mu.Lock()
		defer g.mu.Unlock()
		if w.granted {
			// Granted as ctx ended: pass the slot on.
			g.handOn()
		} else {
			g.remove(w)
		}
		return ctx.Err()
	}
}

// release gives a slot back, to the first urgent waiter if any.
func (g *callGate) release() {
	g.mu.Lock()
	g.handOn()
	g.mu.Unlock()
}

// stop makes the callGate drop queued refreshes that nobody waits for; the
// others, and the calls already on the wire, go on.
func (g *callGate) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopping = true
	kept := g.queue[:0]
	for _, w := range g.queue {
		if g.urgent[w.id] == 0 {
			close(w.ch)
			continue
		}
		kept = append(kept, w)
	}
	g.queue = kept
}

// handOn passes one free slot to the next waiter; g.mu is held.
func (g *callGate) handOn() {
	if len(g.queue) == 0 {
		g.free++
		return
	}
	next := 0
	for i, w := range g.queue {
		if g.urgent[w.id] > 0 {
			next = i
			break
		}
	}
	w := g.queue[next]
	g.queue = append(g.queue[:next], g.queue[next+1:]...)
	w.granted = true
	close(w.ch)
}

func (g *callGate) remove(w *callWaiter) {
	for i, q := range g.queue {
		if q == w {
			g.queue = append(g.queue[:i], g.queue[i+1:]...)
			return
		}
	}
}
