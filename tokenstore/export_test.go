package tokenstore

import "time"

// SetLockTiming shortens the refresh lock's lease and poll for tests.
func SetLockTiming(s *SQLite, lease, poll time.Duration) { s.lockLease, s.lockPoll = lease, poll }

// CachedHolds reports whether c holds account id, once the sets made so far
// have been applied (ristretto applies them asynchronously).
func CachedHolds(c *Cached, id string) bool {
	c.cache.Wait()
	_, ok := c.cache.Get(id)
	return ok
}
