package tokenstore

import "time"

// SetLockTiming shortens the refresh lock's lease and poll for tests.
func SetLockTiming(s *SQLite, lease, poll time.Duration) { s.lockLease, s.lockPoll = lease, poll }
