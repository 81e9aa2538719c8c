package storetest

import (
	"testing"
	"time"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

// testAccountHistory: an account's events come back newest first, only
// its own, at most limit of them.
func testAccountHistory(t *testing.T, s tokenstore.Store) {
	h, ok := s.(tokenstore.History)
	if !ok {
		t.Fatalf("%T does not list an account's events", s)
	}
	mine := &account.Account{ID: "hist-mine", TenantID: "t", Integration: "i", Method: account.MethodOAuth2, Status: account.StatusActive, CreatedAt: epoch, UpdatedAt: epoch}
	other := &account.Account{ID: "hist-other", TenantID: "t", Integration: "i", Method: account.MethodOAuth2, Status: account.StatusActive, CreatedAt: epoch, UpdatedAt: epoch}
	names := []string{account.EventCreated, account.EventActive, account.EventAuthenticationError, account.EventUpdated}
	for i, name := range names {
		evs := []tokenstore.Event{
			tokenstore.NewEvent(name, mine, epoch.Add(time.Duration(i)*time.Minute)),
			tokenstore.NewEvent(account.EventActive, other, epoch.Add(time.Duration(i)*time.Minute)),
		}
		if err := s.AddEvents(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	got, err := h.AccountEvents(ctx, mine.ID, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{account.EventUpdated, account.EventAuthenticationError, account.EventActive}
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d", len(got), len(want))
	}
	for i, ev := range got {
		if ev.Name != want[i] || ev.AccountID != mine.ID || !ev.CreatedAt.Equal(epoch.Add(time.Duration(3-i)*time.Minute)) {
			t.Fatalf("event %d = %s of %s at %v, want %s of %s, newest first", i, ev.Name, ev.AccountID, ev.CreatedAt, want[i], mine.ID)
		}
	}
	if none, err := h.AccountEvents(ctx, "hist-nobody", 10); err != nil || len(none) != 0 {
		t.Fatalf("events of an unknown account: %v, %v", none, err)
	}
}
