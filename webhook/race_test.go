//go:build race

package webhook

// raceEnabled: the race detector slows the pure-Go SQLite about tenfold, so
// backlog tests write fewer rows under it; what they check does not depend
// on the count beyond a few batches.
const raceEnabled = true
