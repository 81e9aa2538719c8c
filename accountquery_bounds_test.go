package linkgate

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestTimeRangeBoundsAreExact checks the span a created_at condition hands
// the store's seek: every time the condition matches is inside it (an
// account is never skipped), and every time inside it matches (the seek
// reads no account the condition then drops), at the millisecond edges
// where matching truncates.
func TestTimeRangeBoundsAreExact(t *testing.T) {
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	r := rand.New(rand.NewPCG(1, 2))
	near := func() time.Time {
		// Within a few milliseconds of base, on and off the millisecond.
		return base.Add(time.Duration(r.IntN(5))*time.Millisecond + []time.Duration{0, 1, 499_999, 999_999}[r.IntN(4)])
	}
	for range 20_000 {
		var tr timeRange
		for _, set := range []*time.Time{&tr.eq, &tr.gt, &tr.gte, &tr.lt, &tr.lte} {
			if r.IntN(3) == 0 {
				*set = near()
			}
		}
		if !tr.eq.IsZero() {
			tr.eq = tr.eq.Truncate(time.Millisecond) // as set1 stores it
		}
		from, before := tr.bounds()
		v := near()
		in := (from.IsZero() || !v.Before(from)) && (before.IsZero() || v.Before(before))
		if tr.matches(v) != in {
			t.Fatalf("range %+v: matches(%s) = %v, but the span [%s, %s) says %v",
				tr, v.Format(time.RFC3339Nano), tr.matches(v), from.Format(time.RFC3339Nano), before.Format(time.RFC3339Nano), in)
		}
	}
}
