package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/linkgate/linkgate/tokenstore"
)

// testEnvironment: the first proposal is stored and every later caller,
// concurrent ones included, gets it back, whatever it proposes.
func testEnvironment(t *testing.T, s tokenstore.Store) {
	const n = 8
	var (
		wg   sync.WaitGroup
		ids  = make([]string, n)
		ats  = make([]time.Time, n)
		errs = make([]error, n)
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i], ats[i], errs[i] = s.Environment(ctx, uuid.NewString(), epoch.Add(time.Duration(i)*time.Second))
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("proposal %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] || !ats[i].Equal(ats[0]) {
			t.Fatalf("proposal %d got %s %v, proposal 0 got %s %v: two environments", i, ids[i], ats[i], ids[0], ats[0])
		}
	}
	id, at, err := s.Environment(ctx, "another", epoch.Add(time.Hour))
	if err != nil || id != ids[0] || !at.Equal(ats[0]) {
		t.Fatalf("later call: %s %v %v, want the stored %s %v", id, at, err, ids[0], ats[0])
	}
	if _, err := uuid.Parse(id); err != nil {
		t.Fatalf("stored id %q is not one of the proposals", id)
	}
}
