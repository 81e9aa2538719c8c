package linkflow

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Submissions of the connect form per link token: a burst for a user who
// retries (a closed popup, a mistyped API key), then one every few seconds.
// Each submission writes a connect state or calls the integration's
// validation endpoint, so a script looping on one link token is held to
// this pace; the store keeps only the newest few states whatever gets
// through. The limit is per instance: a cluster of n lets n times as many.
const (
	submitBurst = 10
	submitEvery = 6 * time.Second
	// limiterPrune is the number of tracked link tokens past which idle
	// ones are forgotten.
	limiterPrune = 1024
)

// submitLimiter limits connect-form submissions per link token. Only link
// tokens that exist get an entry, and an entry is forgotten once its bucket
// is full again, so memory follows the link tokens in use.
type submitLimiter struct {
	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
	lastPrune time.Time
}

func newSubmitLimiter() *submitLimiter {
	return &submitLimiter{buckets: map[string]*rate.Limiter{}}
}

// allow takes one submission for the link token whose hash is key at now,
// or says how long to wait for the next one.
func (l *submitLimiter) allow(key []byte, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buckets) >= limiterPrune && now.Sub(l.lastPrune) >= submitEvery {
		l.lastPrune = now
		for k, b := range l.buckets {
			if b.TokensAt(now) >= submitBurst {
				delete(l.buckets, k)
			}
		}
	}
	b, ok := l.buckets[string(key)]
	if !ok {
		b = rate.NewLimiter(rate.Every(submitEvery), submitBurst)
		l.buckets[string(key)] = b
	}
	if b.AllowN(now, 1) {
		return true, 0
	}
	r := b.ReserveN(now, 1)
	wait := r.DelayFrom(now)
	r.CancelAt(now)
	return false, wait
}
