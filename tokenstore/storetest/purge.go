package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

func purgeExpect(t *testing.T, p tokenstore.Store, now time.Time, want tokenstore.PurgeCounts) {
	t.Helper()
	got, err := p.Purge(ctx, now, tokenstore.DefaultRetention)
	if err != nil {
		t.Fatalf("Purge(%v): %v", now, err)
	}
	if got != want {
		t.Fatalf("Purge(%v) = %+v, want %+v", now, got, want)
	}
}

func linkTokenGone(t *testing.T, s tokenstore.Store, hash string, gone bool) {
	t.Helper()
	_, err := s.GetLinkToken(ctx, []byte(hash))
	switch {
	case gone && !errors.Is(err, tokenstore.ErrNotFound):
		t.Fatalf("link token %s after purge: %v, want ErrNotFound", hash, err)
	case !gone && err != nil:
		t.Fatalf("link token %s was purged too early: %v", hash, err)
	}
}

// testPurge proves each retention rule at its boundary: a row exactly at
// its retention is kept, one nanosecond past it is deleted, pending
// deliveries and the events they need are kept at any age, counts are
// exact and a second purge finds nothing.
func testPurge(t *testing.T, s tokenstore.Store) {
	const day = 24 * time.Hour
	p := s
	// Link tokens and events are placed a year back, so that this first
	// phase's cutoffs fall far before the deliveries, which the store
	// stamps with the real time.
	l := time.Now().Add(-365 * day)

	for _, lt := range []tokenstore.LinkToken{
		{Hash: []byte("lt-expired-past"), ExpiresAt: l.Add(-30*day - time.Nanosecond)},
		{Hash: []byte("lt-expired-at"), ExpiresAt: l.Add(-30 * day)},
		{Hash: []byte("lt-used-past"), ExpiresAt: l.Add(-30*day + time.Hour), UsedAt: l.Add(-30*day - time.Nanosecond)},
		{Hash: []byte("lt-used-at"), ExpiresAt: l.Add(-30*day + time.Hour), UsedAt: l.Add(-30 * day)},
		{Hash: []byte("lt-live"), ExpiresAt: l.Add(time.Hour)},
	} {
		lt.CreatedAt = l.Add(-60 * day)
		if err := s.CreateLinkToken(ctx, &lt); err != nil {
			t.Fatal(err)
		}
	}
	for _, cs := range []tokenstore.ConnectState{
		// Not expired, but its link token goes, so it goes too.
		{Hash: []byte("cs-of-expired-token"), LinkTokenHash: []byte("lt-expired-past"), ExpiresAt: l.Add(time.Hour)},
		{Hash: []byte("cs-expired"), LinkTokenHash: []byte("lt-live"), ExpiresAt: l.Add(-time.Nanosecond)},
		{Hash: []byte("cs-at-expiry"), LinkTokenHash: []byte("lt-live"), ExpiresAt: l},
	} {
		cs.Verifier = "verifier-of-" + string(cs.Hash)
		if err := s.CreateConnectState(ctx, &cs); err != nil {
			t.Fatal(err)
		}
	}

	a := &account.Account{ID: "acc_purge"}
	event := func(at time.Time) tokenstore.Event { return tokenstore.NewEvent(account.EventTest, a, at) }
	// More than one batch of old events, to prove that a purge goes on
	// until nothing is left.
	var evs []tokenstore.Event
	for range 1500 {
		evs = append(evs, event(l.Add(-400*day)))
	}
	evPast, evAt := event(l.Add(-90*day-time.Nanosecond)), event(l.Add(-90*day))
	evPending, evDone, evUnfanned := event(l.Add(-400*day)), event(l.Add(-400*day)), event(l.Add(-400*day))
	evs = append(evs, evPast, evAt, evPending, evDone)
	if err := s.AddEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	endpoints := func(e tokenstore.Event) []string {
		switch e.ID {
		case evPending.ID:
			return []string{"https://pending.example"}
		case evDone.ID:
			return []string{"https://delivered.example", "https://failed.example"}
		}
		return nil
	}
	for {
		out, err := s.FanOut(ctx, 1000, endpoints)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) == 0 {
			break
		}
	}
	if err := s.AddEvents(ctx, []tokenstore.Event{evUnfanned}); err != nil {
		t.Fatal(err)
	}
	ds, err := s.ClaimDeliveries(ctx, time.Now(), time.Minute, 10)
	if err != nil || len(ds) != 3 {
		t.Fatalf("ClaimDeliveries = %d, %v; want 3", len(ds), err)
	}
	var pendingID, deliveredID, failedID string
	for _, d := range ds {
		d.Attempts = 1
		switch d.Endpoint {
		case "https://pending.example":
			d.Status, d.NextAttemptAt, pendingID = tokenstore.DeliveryPending, time.Now().Add(time.Hour), d.ID
		case "https://delivered.example":
			d.Status, d.LastStatus, deliveredID = tokenstore.DeliveryDelivered, 204, d.ID
		default:
			d.Status, d.LastStatus, failedID = tokenstore.DeliveryFailed, 500, d.ID
		}
		if err := s.FinishAttempt(ctx, &d); err != nil {
			t.Fatal(err)
		}
	}
	updatedAt := func(id string) time.Time {
		t.Helper()
		d, err := s.GetDelivery(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return d.UpdatedAt
	}
	delivered, failed := updatedAt(deliveredID), updatedAt(failedID)

	if _, err := p.Purge(ctx, l.Add(1000*day), tokenstore.Retention{Failed: -time.Second}); err == nil {
		t.Fatal("Purge with a negative retention succeeded")
	}

	// Phase 1, at l: the link side and the events without deliveries.
	purgeExpect(t, p, l, tokenstore.PurgeCounts{LinkTokens: 2, ConnectStates: 2, Events: 1501})
	purgeExpect(t, p, l, tokenstore.PurgeCounts{})
	for hash, gone := range map[string]bool{"lt-expired-past": true, "lt-expired-at": false,
		"lt-used-past": true, "lt-used-at": false, "lt-live": false} {
		linkTokenGone(t, s, hash, gone)
	}
	for hash, gone := range map[string]bool{"cs-of-expired-token": true, "cs-expired": true, "cs-at-expiry": false} {
		_, err := s.TakeConnectState(ctx, []byte(hash))
		if gone && !errors.Is(err, tokenstore.ErrNotFound) || !gone && err != nil {
			t.Fatalf("connect state %s after purge: %v (want gone: %v)", hash, err, gone)
		}
	}

	// Phase 2: exactly 30 days after the delivered delivery's last
	// update it stays; every remaining link token and the event at its
	// boundary before are far past theirs now.
	purgeExpect(t, p, delivered.Add(30*day), tokenstore.PurgeCounts{LinkTokens: 3, Events: 1})
	purgeExpect(t, p, delivered.Add(30*day+time.Nanosecond), tokenstore.PurgeCounts{Delivered: 1})
	if _, err := s.GetDelivery(ctx, deliveredID); !errors.Is(err, tokenstore.ErrNotFound) {
		t.Fatalf("delivered delivery after purge: %v, want ErrNotFound", err)
	}
	// The failed delivery holds its event until it goes itself, and the
	// event goes in the same purge.
	purgeExpect(t, p, failed.Add(90*day), tokenstore.PurgeCounts{})
	purgeExpect(t, p, failed.Add(90*day+time.Nanosecond), tokenstore.PurgeCounts{Failed: 1, Events: 1})

	// Phase 3, ten years on: the pending delivery, its event and the
	// event never fanned out are all still there.
	late := failed.Add(3650 * day)
	purgeExpect(t, p, late, tokenstore.PurgeCounts{})
	d, err := s.GetDelivery(ctx, pendingID)
	if err != nil || d.Status != tokenstore.DeliveryPending || d.Event.ID != evPending.ID {
		t.Fatalf("pending delivery after purges: %+v, %v", d, err)
	}
	if n, err := s.PendingDeliveries(ctx); err != nil || n != 1 {
		t.Fatalf("PendingDeliveries = %d, %v; want 1", n, err)
	}
	out, err := s.FanOut(ctx, 10, func(tokenstore.Event) []string { return nil })
	if err != nil || len(out) != 1 || out[0].ID != evUnfanned.ID {
		t.Fatalf("FanOut after purges = %v, %v; want the event never fanned out", eventNames(out), err)
	}
	// Fanned out to no endpoint, it is now past its retention like any other.
	purgeExpect(t, p, late, tokenstore.PurgeCounts{Events: 1})
	purgeExpect(t, p, late, tokenstore.PurgeCounts{})
}
