package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/google/uuid"

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
		importRow(dupOf("acc_b1"), created), // the same id twice in one batch
		{Account: quiet},                    // a migration without events
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

// dupOf is an account with the id of another and different fields, so that
// a test sees which of the two was written.
func dupOf(id string) *account.Account {
	a := NewAccount(id)
	a.TenantID = "tenant-of-the-duplicate"
	return a
}

// RunImport runs the suite's bulk import tests alone (the PostgreSQL store
// runs them again on its other write path).
func RunImport(t *testing.T, open func(t *testing.T) tokenstore.Store) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s tokenstore.Store)
	}{
		{"ImportAccounts", testImportAccounts},
		{"ImportMatchesCreate", testImportMatchesCreate},
		{"ImportLargeBatch", testImportLargeBatch},
		{"ImportFailureMidBatch", testImportFailureMidBatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			tc.fn(t, s)
		})
	}
}

// testImportMatchesCreate checks that an imported account is stored as
// CreateAccount stores the same account: read back whole (unsealed), in a
// listing (public fields, redacted context), and by the sweeper's claim
// (its expiry and refresh token, kept outside the sealed blob).
func testImportMatchesCreate(t *testing.T, s tokenstore.Store) {
	im := s.(tokenstore.Importer)
	now := time.Now()
	mk := func(id string) *account.Account {
		a := NewAccount(id)
		a.Context["api_secret"] = "context-secret-" + id // a secret the context keeps sealed
		a.Credentials.AccessToken, a.Credentials.RefreshToken = "at-same", "rt-same"
		a.Credentials.Expiry = now.Add(time.Minute).Truncate(time.Microsecond).UTC()
		a.NextProbeAt = epoch.Add(time.Hour)
		a.LastError = &account.Error{Code: "x", Message: "an earlier error", At: epoch}
		return a
	}
	slow, fast := mk("acc_slow"), mk("acc_fast")
	mustCreate(t, s, slow)
	errs, err := im.ImportAccounts(ctx, []tokenstore.Import{{Account: fast}})
	if err != nil || errs[0] != nil {
		t.Fatalf("import: %v %v", errs, err)
	}
	got := map[string]*account.Account{}
	for _, id := range []string{"acc_slow", "acc_fast"} {
		a, err := s.GetAccount(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		got[id] = a
	}
	if got["acc_fast"].Context["api_secret"] != "context-secret-acc_fast" {
		t.Fatalf("the imported context's secret did not round-trip: %v", got["acc_fast"].Context)
	}
	same := func(what string, a, b *account.Account) {
		t.Helper()
		a, b = a.Clone(), b.Clone()
		a.ID, b.ID, a.TenantID, b.TenantID = "", "", "", ""
		delete(a.Context, "api_secret")
		delete(b.Context, "api_secret")
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: imported %+v\ncreated %+v", what, a, b)
		}
	}
	same("read back", got["acc_fast"], got["acc_slow"])
	page, err := s.ListAccounts(ctx, tokenstore.Filter{})
	if err != nil || len(page.Accounts) != 2 {
		t.Fatalf("listing: %d accounts, %v", len(page.Accounts), err)
	}
	same("listed", page.Accounts[0], page.Accounts[1])
	ids, err := s.ClaimExpiring(ctx, now.Add(5*time.Minute), time.Hour, 10)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(ids)
	if !reflect.DeepEqual(ids, []string{"acc_fast", "acc_slow"}) {
		t.Fatalf("claimed %v, want both accounts", ids)
	}
}

// testImportLargeBatch imports batches of a thousand random UUIDs, as a
// migration does, with ids taken before and ids given twice in a batch
// (each time with other fields): every row's result is its own, and of two
// rows with one id the first is written, whatever the order the store
// writes in.
func testImportLargeBatch(t *testing.T, s tokenstore.Store) {
	im := s.(tokenstore.Importer)
	const n = 1000
	taken := map[int]bool{}
	var before []*account.Account
	for i := 0; i < 30; i++ {
		a := NewAccount(uuid.NewString())
		mustCreate(t, s, a)
		before = append(before, a)
	}
	rows := make([]tokenstore.Import, n)
	firstOf := map[string]int{}
	for i := range rows {
		id := uuid.NewString()
		switch {
		case i%50 == 7: // an id taken before the import
			id = before[i/50].ID
			taken[i] = true
		case i%40 == 39: // the id of an earlier row of the batch
			id = rows[i-20].Account.ID
			taken[i] = true
		}
		a := NewAccount(id)
		a.TenantID = fmt.Sprintf("t-%d", i)
		rows[i] = importRow(a, "integrated_account:created")
		if _, ok := firstOf[id]; !ok && !taken[i] {
			firstOf[id] = i
		}
	}
	errs, err := im.ImportAccounts(ctx, rows)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range errs {
		if taken[i] != (e != nil) || (e != nil && !errors.Is(e, tokenstore.ErrExists)) {
			t.Fatalf("row %d (taken %v): %v", i, taken[i], e)
		}
	}
	for id, i := range firstOf {
		got, err := s.GetAccount(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		sameAccount(t, got, rows[i].Account)
	}
	for _, a := range before {
		got, err := s.GetAccount(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		sameAccount(t, got, a)
	}
	evs := unfannedEvents(t, s)
	if len(evs) != len(firstOf) {
		t.Fatalf("events for %d accounts, want %d", len(evs), len(firstOf))
	}
}

// testImportFailureMidBatch makes the store fail half-way through a batch
// of a thousand (an event id that is already taken, found when the
// 600th row's events are written): no row of the batch is left, and no
// event.
func testImportFailureMidBatch(t *testing.T, s tokenstore.Store) {
	im := s.(tokenstore.Importer)
	const n = 1000
	rows := make([]tokenstore.Import, n)
	for i := range rows {
		rows[i] = importRow(NewAccount(fmt.Sprintf("acc_mid_%04d", i)), "integrated_account:created")
		rows[i].Events[0].ID = fmt.Sprintf("ev_mid_%04d", i)
	}
	rows[600].Events[0].ID = rows[10].Events[0].ID
	if _, err := im.ImportAccounts(ctx, rows); !errors.Is(err, tokenstore.ErrExists) {
		t.Fatalf("a batch with an event id twice: %v, want ErrExists", err)
	}
	page, err := s.ListAccounts(ctx, tokenstore.Filter{})
	if err != nil || len(page.Accounts) != 0 {
		t.Fatalf("a failed batch left %d accounts (%v)", len(page.Accounts), err)
	}
	if evs := unfannedEvents(t, s); len(evs) != 0 {
		t.Fatalf("a failed batch left events: %v", evs)
	}
	// The same batch, repaired, is then written whole.
	rows[600].Events[0].ID = "ev_mid_repaired"
	errs, err := im.ImportAccounts(ctx, rows)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range errs {
		if e != nil {
			t.Fatalf("row %d: %v", i, e)
		}
	}
	if evs := unfannedEvents(t, s); len(evs) != n {
		t.Fatalf("events for %d accounts, want %d", len(evs), n)
	}
}
