package storetest

import (
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

func importRow(a *account.Account, events ...string) tokenstore.Import {
	return tokenstore.Import{Account: a, Events: tokenstore.NewEvents(events, a, time.Now())}
}

// unfannedEvents drains the outbox's new events and returns them by account.
func unfannedEvents(t *testing.T, s tokenstore.Store) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for {
		evs, err := s.FanOut(ctx, 100, func(tokenstore.Event) []string { return nil })
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			out[e.AccountID] = append(out[e.AccountID], e.Name)
		}
		if len(evs) < 100 {
			return out
		}
	}
}

// testImportAccounts checks bulk import: each row is written with its
// events or not at all, taken ids (stored before, or earlier in the same
// batch) are reported and change nothing, and a batch the store refuses
// writes no row.
func testImportAccounts(t *testing.T, s tokenstore.Store) {
	im, ok := s.(tokenstore.Importer)
	if !ok {
		t.Fatalf("%T does not import in bulk", s)
	}
	existing := NewAccount("acc_existing")
	if err := s.CreateAccount(ctx, existing, nil); err != nil {
		t.Fatal(err)
	}
	const created, active = "integrated_account:created", "integrated_account:active"
	quiet := NewAccount("acc_quiet")
	quiet.CreatedAt, quiet.UpdatedAt = time.Time{}, time.Time{}
	rows := []tokenstore.Import{
		importRow(NewAccount("acc_b1"), created, active),
		importRow(NewAccount("acc_existing"), created),
		importRow(NewAccount("acc_b2"), created),
		importRow(NewAccount("acc_b1"), created), // the same id twice in one batch
		{Account: quiet},                         // a migration without events
	}
	errs, err := im.ImportAccounts(ctx, rows)
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) != len(rows) {
		t.Fatalf("%d results for %d rows", len(errs), len(rows))
	}
	for i, want := range []bool{true, false, true, false, true} {
		if got := errs[i] == nil; got != want {
			t.Errorf("row %d: error %v, want written=%v", i, errs[i], want)
		}
		if !want && !errors.Is(errs[i], tokenstore.ErrExists) {
			t.Errorf("row %d: %v, want ErrExists", i, errs[i])
		}
	}
	for _, r := range []tokenstore.Import{rows[0], rows[2], rows[4]} {
		got, err := s.GetAccount(ctx, r.Account.ID)
		if err != nil {
			t.Fatal(err)
		}
		if r.Account.Version != 1 || r.Account.CreatedAt.IsZero() {
			t.Errorf("%s: caller's copy not updated: version %d, created %s", r.Account.ID, r.Account.Version, r.Account.CreatedAt)
		}
		sameAccount(t, got, r.Account)
	}
	got, err := s.GetAccount(ctx, "acc_existing")
	if err != nil {
		t.Fatal(err)
	}
	sameAccount(t, got, existing) // the taken id's row changed nothing
	evs := unfannedEvents(t, s)
	for id, want := range map[string][]string{"acc_b1": {created, active}, "acc_b2": {created}} {
		g := evs[id]
		sort.Strings(g)
		sort.Strings(want)
		if len(g) != len(want) || (len(g) > 0 && g[0] != want[0]) || (len(g) > 1 && g[1] != want[1]) {
			t.Errorf("%s: events %v, want %v", id, g, want)
		}
	}
	if len(evs["acc_existing"]) != 0 || len(evs["acc_quiet"]) != 0 {
		t.Errorf("events for rows that should have none: %v", evs)
	}

	// A batch the store refuses (here: an event without a name) writes
	// nothing at all, not even its valid rows.
	bad := importRow(NewAccount("acc_c2"), created)
	bad.Events[0].Name = ""
	if _, err := im.ImportAccounts(ctx, []tokenstore.Import{importRow(NewAccount("acc_c1"), created), bad}); err == nil {
		t.Fatal("a batch with a nameless event was accepted")
	}
	for _, id := range []string{"acc_c1", "acc_c2"} {
		if _, err := s.GetAccount(ctx, id); !errors.Is(err, tokenstore.ErrNotFound) {
			t.Errorf("%s after a refused batch: %v, want not found", id, err)
		}
	}
	if evs := unfannedEvents(t, s); len(evs) != 0 {
		t.Errorf("a refused batch left events: %v", evs)
	}
}
