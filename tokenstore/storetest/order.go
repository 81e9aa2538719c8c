package storetest

import (
	"testing"
	"time"

	"github.com/linkgate/linkgate/tokenstore"
)

// testClaimKeepsAccountOrder: an endpoint's claim never hands out a
// delivery of an account's event while a delivery of an earlier event of
// that account to that endpoint is still pending — not in the same claim,
// not while the earlier one is leased or waiting for a retry — so each
// account's events reach each endpoint in commit order. Other accounts,
// other endpoints and events of no account are not held up.
func testClaimKeepsAccountOrder(t *testing.T, s tokenstore.Store) {
	const a, b = "https://a.example/h", "https://b.example/h"
	evs := []tokenstore.Event{
		{Name: "integrated_account:created", AccountID: "acc_1", Payload: []byte(`{}`)},
		{Name: "integrated_account:active", AccountID: "acc_1", Payload: []byte(`{}`)},
		{Name: "integrated_account:updated", AccountID: "acc_1", Payload: []byte(`{}`)},
		{Name: "integrated_account:created", AccountID: "acc_2", Payload: []byte(`{}`)},
		{Name: "test", Payload: []byte(`{}`)},
		{Name: "test", Payload: []byte(`{}`)},
	}
	if err := s.AddEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FanOut(ctx, 100, func(tokenstore.Event) []string { return []string{a, b} }); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claim := func(ep string) map[string]tokenstore.Delivery {
		t.Helper()
		got, err := s.ClaimEndpointDeliveries(ctx, now, time.Minute, []tokenstore.EndpointClaim{{Endpoint: ep, Limit: 10}})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]tokenstore.Delivery{}
		for _, d := range got {
			out[d.Event.ID] = d
		}
		return out
	}
	names := func(m map[string]tokenstore.Delivery) (n []string) {
		for _, d := range m {
			n = append(n, d.Event.AccountID+"/"+d.Event.Name)
		}
		return n
	}
	// One claim: acc_1's first event only, acc_2's, and both test events.
	got := claim(a)
	if len(got) != 4 {
		t.Fatalf("first claim of a: %v, want acc_1's created, acc_2's created and the two test events", names(got))
	}
	created := got[evs[0].ID]
	if created.ID == "" {
		t.Fatalf("first claim of a lacks acc_1's first event: %v", names(got))
	}
	if _, ok := got[evs[1].ID]; ok {
		t.Fatal("acc_1's second event was claimed with its first")
	}
	for id, d := range got {
		if id != evs[0].ID {
			d.Status, d.Attempts = tokenstore.DeliveryDelivered, 1
			if err := s.FinishAttempt(ctx, &d); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Endpoint b is claimed apart: its own first of acc_1 goes.
	if got := claim(b); got[evs[0].ID].ID == "" || got[evs[1].ID].ID != "" {
		t.Fatalf("claim of b: %v", names(got))
	}
	// While the first is leased (on its way), nothing more of acc_1.
	if got := claim(a); len(got) != 0 {
		t.Fatalf("claim while acc_1's first is on its way: %v", names(got))
	}
	// The first is to be retried later: still pending, still first.
	created.Status, created.Attempts, created.NextAttemptAt = tokenstore.DeliveryPending, 1, now.Add(time.Hour)
	if err := s.FinishAttempt(ctx, &created); err != nil {
		t.Fatal(err)
	}
	if got := claim(a); len(got) != 0 {
		t.Fatalf("claim while acc_1's first waits for its retry: %v", names(got))
	}
	// Delivered: the second goes, and only it.
	later := now.Add(2 * time.Hour)
	due, err := s.ClaimEndpointDeliveries(ctx, later, time.Minute, []tokenstore.EndpointClaim{{Endpoint: a, Limit: 10}})
	if err != nil || len(due) != 1 || due[0].Event.ID != evs[0].ID {
		t.Fatalf("claim once the retry is due: %d %v", len(due), err)
	}
	due[0].Status, due[0].Attempts, due[0].NextAttemptAt = tokenstore.DeliveryDelivered, 2, time.Time{}
	if err := s.FinishAttempt(ctx, &due[0]); err != nil {
		t.Fatal(err)
	}
	now = later
	got = claim(a)
	if len(got) != 1 || got[evs[1].ID].ID == "" {
		t.Fatalf("claim after the first was delivered: %v, want acc_1's second alone", names(got))
	}
	// Failed for good: it no longer holds the third back.
	second := got[evs[1].ID]
	second.Status, second.Attempts, second.NextAttemptAt = tokenstore.DeliveryFailed, 8, time.Time{}
	if err := s.FinishAttempt(ctx, &second); err != nil {
		t.Fatal(err)
	}
	if got := claim(a); len(got) != 1 || got[evs[2].ID].ID == "" {
		t.Fatalf("claim after the second failed for good: %v, want acc_1's third", names(got))
	}
}
