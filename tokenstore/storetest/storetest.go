// Package storetest is the conformance suite every tokenstore.Store must
// pass: the SQLite store runs it on files, the PostgreSQL store on a database.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

// Run runs the suite; open must return a new, empty store, which Run closes.
func Run(t *testing.T, open func(t *testing.T) tokenstore.Store) {
	newStore := func(t *testing.T) tokenstore.Store {
		t.Helper()
		s := open(t)
		t.Cleanup(func() { s.Close() })
		return s
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s tokenstore.Store)
	}{
		{"AccountRoundTrip", testAccountRoundTrip},
		{"AccountErrors", testAccountErrors},
		{"EventsCommitWithTheChange", testEventsCommitWithTheChange},
		{"ListAccountsPagination", testListAccounts},
		{"ClaimExpiring", testClaimExpiring},
		{"RefreshLockExclusion", testRefreshLockExclusion},
		{"RefreshLockWaitBoundedByContext", testRefreshLockWait},
		{"LinkTokens", testLinkTokens},
		{"ContextSecrets", testContextSecrets},
		{"TakeConnectStateRace", testTakeConnectStateRace},
		{"ConnectStatesPerLinkToken", testConnectStatesPerLinkToken},
		{"ConnectStatesPerLinkTokenConcurrent", testConnectStatesPerLinkTokenConcurrent},
		{"CompleteLink", testCompleteLink},
		{"CompleteLinkRace", testCompleteLinkRace},
		{"OutboxRoundTrip", testOutboxRoundTrip},
		{"ListDeliveries", testListDeliveries},
		{"ClaimDeliveriesNeverTwice", testClaimDeliveriesConcurrent},
		{"Purge", testPurge},
		{"EnvironmentChosenOnce", testEnvironment},
		{"ImportAccounts", testImportAccounts},
		{"ImportMatchesCreate", testImportMatchesCreate},
		{"ImportLargeBatch", testImportLargeBatch},
		{"ImportFailureMidBatch", testImportFailureMidBatch},
		{"ClaimEndpointDeliveries", testClaimEndpointDeliveries},
		{"ClaimKeepsAccountOrder", testClaimKeepsAccountOrder},
		{"AccountHistory", testAccountHistory},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

var (
	ctx   = context.Background()
	epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
)

// NewAccount returns an active oauth2 account with secrets that tests can
// look for in raw storage.
func NewAccount(id string) *account.Account {
	return &account.Account{
		ID:          id,
		TenantID:    "tenant-" + id,
		Integration: "hubspot",
		Method:      account.MethodOAuth2,
		Status:      account.StatusActive,
		Context:     map[string]any{"portal": "42", "nested": map[string]any{"k": []any{"v", 1.0}}},
		Credentials: account.Credentials{
			AccessToken:  "at-" + uuid.NewString(),
			RefreshToken: "rt-" + uuid.NewString(),
			TokenType:    "Bearer",
			Expiry:       time.Now().Add(time.Hour).Truncate(time.Microsecond).UTC(),
			Scope:        "crm.objects.contacts.read",
		},
		CreatedAt: epoch,
		UpdatedAt: epoch,
	}
}

func mustCreate(t *testing.T, s tokenstore.Store, a *account.Account) {
	t.Helper()
	if err := s.CreateAccount(ctx, a, nil); err != nil {
		t.Fatalf("CreateAccount(%s): %v", a.ID, err)
	}
}

func sameAccount(t *testing.T, got, want *account.Account) {
	t.Helper()
	if got.ID != want.ID || got.TenantID != want.TenantID || got.Integration != want.Integration ||
		got.Method != want.Method || got.Status != want.Status || got.Version != want.Version {
		t.Fatalf("account = %+v, want %+v", got, want)
	}
	if !got.CreatedAt.Equal(want.CreatedAt) || !got.UpdatedAt.Equal(want.UpdatedAt) || !got.NextProbeAt.Equal(want.NextProbeAt) {
		t.Fatalf("times = %v %v %v, want %v %v %v", got.CreatedAt, got.UpdatedAt, got.NextProbeAt,
			want.CreatedAt, want.UpdatedAt, want.NextProbeAt)
	}
	if !reflect.DeepEqual(got.Context, want.Context) && (len(got.Context) != 0 || len(want.Context) != 0) {
		t.Fatalf("context = %#v, want %#v", got.Context, want.Context)
	}
	gc, wc := got.Credentials, want.Credentials
	if !gc.Expiry.Equal(wc.Expiry) {
		t.Fatalf("expiry = %v, want %v", gc.Expiry, wc.Expiry)
	}
	gc.Expiry, wc.Expiry = time.Time{}, time.Time{}
	if gc != wc {
		t.Fatal("credentials read back differ from those written")
	}
	if (got.LastError == nil) != (want.LastError == nil) ||
		got.LastError != nil && (got.LastError.Code != want.LastError.Code || got.LastError.Message != want.LastError.Message ||
			!got.LastError.At.Equal(want.LastError.At)) {
		t.Fatalf("last error = %+v, want %+v", got.LastError, want.LastError)
	}
}

func testAccountRoundTrip(t *testing.T, s tokenstore.Store) {
	a := NewAccount("acc_round")
	mustCreate(t, s, a)
	if a.Version != 1 {
		t.Fatalf("Version after create = %d, want 1", a.Version)
	}
	got, err := s.GetAccount(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameAccount(t, got, a)

	// A store may hand out shared accounts (a cache does): clone to modify.
	got = got.Clone()
	now := epoch.Add(time.Minute)
	c, err := got.Apply(account.AuthFailed, &account.Error{Code: "invalid_grant", Message: "refresh refused"}, now)
	if err != nil {
		t.Fatal(err)
	}
	got.NextProbeAt = now.Add(time.Hour)
	got.Credentials.AccessToken = ""
	if err := s.UpdateAccount(ctx, got, tokenstore.EventsFor(c, got, now)); err != nil {
		t.Fatal(err)
	}
	if got.Version != 2 {
		t.Fatalf("Version after update = %d, want 2", got.Version)
	}
	again, err := s.GetAccount(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameAccount(t, again, got)
	if again.Status != account.StatusNeedsReauth || again.LastError == nil {
		t.Fatalf("status %s, last error %v", again.Status, again.LastError)
	}

	// An account without context, last error or credentials round-trips too.
	bare := &account.Account{ID: "acc_bare", TenantID: "t", Integration: "x", Method: account.MethodAPIKey,
		Status: account.StatusConnecting, CreatedAt: epoch, UpdatedAt: epoch}
	mustCreate(t, s, bare)
	gotBare, err := s.GetAccount(ctx, bare.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameAccount(t, gotBare, bare)

	if err := s.DeleteAccount(ctx, a.ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAccount(ctx, a.ID); !errors.Is(err, tokenstore.ErrNotFound) {
		t.Fatalf("GetAccount after delete: %v, want ErrNotFound", err)
	}
}

func testAccountErrors(t *testing.T, s tokenstore.Store) {
	if _, err := s.GetAccount(ctx, "missing"); !errors.Is(err, tokenstore.ErrNotFound) {
		t.Fatalf("GetAccount(missing) = %v, want ErrNotFound", err)
	}
	a := NewAccount("acc_err")
	mustCreate(t, s, a)
	dup := NewAccount("acc_err")
	if err := s.CreateAccount(ctx, dup, nil); !errors.Is(err, tokenstore.ErrExists) {
		t.Fatalf("duplicate CreateAccount = %v, want ErrExists", err)
	}
	stale := a.Clone()
	a.Status = account.StatusNeedsReauth
	if err := s.UpdateAccount(ctx, a, nil); err != nil {
		t.Fatal(err)
	}
	stale.Credentials.AccessToken = "lost-update"
	if err := s.UpdateAccount(ctx, stale, nil); !errors.Is(err, tokenstore.ErrConflict) {
		t.Fatalf("stale UpdateAccount = %v, want ErrConflict", err)
	}
	if stale.Version != 1 {
		t.Fatalf("a failed update changed Version to %d", stale.Version)
	}
	got, err := s.GetAccount(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Credentials.AccessToken == "lost-update" || got.Status != account.StatusNeedsReauth || got.Version != 2 {
		t.Fatalf("a conflicting update was written: %+v", got)
	}
	ghost := NewAccount("acc_ghost")
	ghost.Version = 1
	if err := s.UpdateAccount(ctx, ghost, nil); !errors.Is(err, tokenstore.ErrNotFound) {
		t.Fatalf("UpdateAccount(missing) = %v, want ErrNotFound", err)
	}
	if err := s.DeleteAccount(ctx, "acc_ghost", nil); !errors.Is(err, tokenstore.ErrNotFound) {
		t.Fatalf("DeleteAccount(missing) = %v, want ErrNotFound", err)
	}

	// Concurrent updates from one version: exactly one wins.
	base, err := s.GetAccount(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	var wins, conflicts atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.UpdateAccount(ctx, base.Clone(), nil)
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, tokenstore.ErrConflict):
				conflicts.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 || conflicts.Load() != 7 {
		t.Fatalf("racing updates: %d won, %d conflicted; want 1 and 7", wins.Load(), conflicts.Load())
	}
}

// fanned returns the events not yet fanned out, fanning them out to nowhere.
func fanned(t *testing.T, s tokenstore.Store) []tokenstore.Event {
	t.Helper()
	evs, err := s.FanOut(ctx, 1000, func(tokenstore.Event) []string { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func eventNames(evs []tokenstore.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Name)
	}
	return out
}

func testEventsCommitWithTheChange(t *testing.T, s tokenstore.Store) {
	now := time.Now()
	a := NewAccount("acc_ev")
	a.Status = account.StatusConnecting
	c, err := a.Apply(account.Created, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	created := tokenstore.EventsFor(c, a, now)
	if err := s.CreateAccount(ctx, a, created); err != nil {
		t.Fatal(err)
	}
	evs := fanned(t, s)
	if got := eventNames(evs); !reflect.DeepEqual(got, []string{account.EventCreated, account.EventActive}) {
		t.Fatalf("events after create = %v", got)
	}
	if evs[0].ID != created[0].ID || evs[0].AccountID != a.ID || !strings.Contains(string(evs[0].Payload), `"acc_ev"`) {
		t.Fatalf("event read back = %+v", evs[0])
	}

	// A failed create, a conflicting update and a failed delete write no event.
	if err := s.CreateAccount(ctx, NewAccount("acc_ev"), []tokenstore.Event{tokenstore.NewEvent(account.EventCreated, a, now)}); !errors.Is(err, tokenstore.ErrExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	stale := a.Clone()
	stale.Version = 99
	if err := s.UpdateAccount(ctx, stale, []tokenstore.Event{tokenstore.NewEvent(account.EventAuthenticationError, a, now)}); !errors.Is(err, tokenstore.ErrConflict) {
		t.Fatalf("conflicting update: %v", err)
	}
	if err := s.DeleteAccount(ctx, "nobody", []tokenstore.Event{tokenstore.NewEvent(account.EventDeleted, &account.Account{ID: "nobody"}, now)}); !errors.Is(err, tokenstore.ErrNotFound) {
		t.Fatalf("delete of a missing account: %v", err)
	}
	if evs := fanned(t, s); len(evs) != 0 {
		t.Fatalf("failed writes left events: %v", eventNames(evs))
	}

	c, err = a.Apply(account.AuthFailed, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateAccount(ctx, a, tokenstore.EventsFor(c, a, now)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteAccount(ctx, a.ID, []tokenstore.Event{tokenstore.NewEvent(account.EventDeleted, a, now)}); err != nil {
		t.Fatal(err)
	}
	if got := eventNames(fanned(t, s)); !reflect.DeepEqual(got, []string{account.EventAuthenticationError, account.EventDeleted}) {
		t.Fatalf("events after update and delete = %v", got)
	}
}

func testListAccounts(t *testing.T, s tokenstore.Store) {
	const n = 260
	statuses := []account.Status{account.StatusActive, account.StatusNeedsReauth, account.StatusConnecting}
	want := map[string]*account.Account{}
	for i := range n {
		a := NewAccount(fmt.Sprintf("acc_%03d", i))
		a.TenantID = fmt.Sprintf("tenant_%d", i%7)
		a.Status = statuses[i%3]
		if i%2 == 1 {
			a.Integration = "salesforce"
		}
		// Pairs share a creation time so that the id breaks ties.
		a.CreatedAt = epoch.Add(time.Duration(i/2) * time.Second)
		a.UpdatedAt = a.CreatedAt
		mustCreate(t, s, a)
		want[a.ID] = a
	}
	list := func(f tokenstore.Filter) []*account.Account {
		t.Helper()
		var out []*account.Account
		for pages := 0; ; pages++ {
			if pages > n {
				t.Fatal("pagination does not end")
			}
			p, err := s.ListAccounts(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if f.Limit > 0 && len(p.Accounts) > f.Limit {
				t.Fatalf("page of %d accounts, limit %d", len(p.Accounts), f.Limit)
			}
			out = append(out, p.Accounts...)
			if p.NextCursor == "" {
				return out
			}
			f.Cursor = p.NextCursor
		}
	}
	check := func(name string, f tokenstore.Filter, match func(*account.Account) bool) {
		t.Helper()
		got := list(f)
		var wantIDs []string
		for _, a := range want {
			if match(a) {
				wantIDs = append(wantIDs, a.ID)
			}
		}
		sort.Slice(wantIDs, func(i, j int) bool {
			a, b := want[wantIDs[i]], want[wantIDs[j]]
			if !a.CreatedAt.Equal(b.CreatedAt) {
				return a.CreatedAt.After(b.CreatedAt)
			}
			return a.ID > b.ID
		})
		var gotIDs []string
		for _, a := range got {
			gotIDs = append(gotIDs, a.ID)
			if !a.Credentials.Empty() {
				t.Fatalf("%s: listing returned credentials of %s", name, a.ID)
			}
			w := want[a.ID]
			if a.Status != w.Status || a.TenantID != w.TenantID || !a.CreatedAt.Equal(w.CreatedAt) || a.Version != 1 {
				t.Fatalf("%s: listed %+v, stored %+v", name, a, w)
			}
		}
		if len(wantIDs) == 0 {
			t.Fatalf("%s: the filter matches nothing; the test is wrong", name)
		}
		if !reflect.DeepEqual(gotIDs, wantIDs) {
			t.Fatalf("%s: listed %d accounts %v…, want %d %v…", name, len(gotIDs), head(gotIDs), len(wantIDs), head(wantIDs))
		}
	}
	all := func(*account.Account) bool { return true }
	check("all, default page", tokenstore.Filter{}, all)
	check("all, pages of 7", tokenstore.Filter{Limit: 7}, all)
	check("status", tokenstore.Filter{Status: account.StatusNeedsReauth, Limit: 25},
		func(a *account.Account) bool { return a.Status == account.StatusNeedsReauth })
	check("tenant", tokenstore.Filter{TenantID: "tenant_3", Limit: 10},
		func(a *account.Account) bool { return a.TenantID == "tenant_3" })
	check("integration and status", tokenstore.Filter{Integration: "salesforce", Status: account.StatusActive, Limit: 9},
		func(a *account.Account) bool {
			return a.Integration == "salesforce" && a.Status == account.StatusActive
		})
	check("search id prefix", tokenstore.Filter{Search: "acc_1", Limit: 30},
		func(a *account.Account) bool { return strings.HasPrefix(a.ID, "acc_1") })
	check("search tenant prefix", tokenstore.Filter{Search: "tenant_5"},
		func(a *account.Account) bool { return strings.HasPrefix(a.TenantID, "tenant_5") })

	p, err := s.ListAccounts(ctx, tokenstore.Filter{Search: "nothing-like-this"})
	if err != nil || len(p.Accounts) != 0 || p.NextCursor != "" {
		t.Fatalf("search without match = %d accounts, %q, %v", len(p.Accounts), p.NextCursor, err)
	}
	p, err = s.ListAccounts(ctx, tokenstore.Filter{Limit: 5000})
	if err != nil || len(p.Accounts) != n {
		t.Fatalf("limit above the maximum: %d accounts, %v", len(p.Accounts), err)
	}
	if _, err := s.ListAccounts(ctx, tokenstore.Filter{Cursor: "not a cursor!"}); !errors.Is(err, tokenstore.ErrInvalidCursor) {
		t.Fatalf("forged cursor: %v, want ErrInvalidCursor", err)
	}
}

func head(ids []string) []string {
	if len(ids) > 5 {
		return ids[:5]
	}
	return ids
}

func testClaimExpiring(t *testing.T, s tokenstore.Store) {
	now := time.Now()
	mk := func(id string, expiresIn time.Duration, edit func(*account.Account)) {
		a := NewAccount(id)
		a.Credentials.Expiry = now.Add(expiresIn)
		if edit != nil {
			edit(a)
		}
		mustCreate(t, s, a)
	}
	mk("soon2", 2*time.Minute, nil)
	mk("soon1", time.Minute, nil)
	mk("expired", -time.Minute, nil)
	mk("later", time.Hour, nil)
	mk("no_refresh", time.Minute, func(a *account.Account) { a.Credentials.RefreshToken = "" })
	mk("reauth", time.Minute, func(a *account.Account) { a.Status = account.StatusNeedsReauth })
	mk("apikey", time.Minute, func(a *account.Account) {
		a.Method = account.MethodAPIKey
		a.Credentials = account.Credentials{APIKey: "k", Expiry: now.Add(time.Minute)}
	})
	mk("no_expiry", 0, func(a *account.Account) { a.Credentials.Expiry = time.Time{} })

	ids, err := s.ClaimExpiring(ctx, now.Add(5*time.Minute), time.Hour, 10)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"expired", "soon1", "soon2"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("ClaimExpiring = %v, want %v", ids, want)
	}
	if ids, err := s.ClaimExpiring(ctx, now.Add(5*time.Minute), time.Hour, 10); err != nil || len(ids) != 0 {
		t.Fatalf("second claim while leased = %v, %v; want none", ids, err)
	}
	ids, err = s.ClaimExpiring(ctx, now.Add(2*time.Hour), time.Millisecond, 1)
	if err != nil || !reflect.DeepEqual(ids, []string{"later"}) {
		t.Fatalf("claim with limit 1 = %v, %v; want [later]", ids, err)
	}
	// A lease that runs out makes the account claimable again.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ids, err = s.ClaimExpiring(ctx, now.Add(2*time.Hour), time.Hour, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an expired sweep lease was never claimable again")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !reflect.DeepEqual(ids, []string{"later"}) {
		t.Fatalf("claim after lease expiry = %v, want [later]", ids)
	}
}

func testRefreshLockExclusion(t *testing.T, s tokenstore.Store) {
	var inside, maxInside, runs atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := "acc_lock"
			if i%5 == 0 {
				id = "acc_other" // another account's lock does not wait on this one
			}
			err := s.WithRefreshLock(ctx, id, func(context.Context) error {
				if id == "acc_lock" {
					n := inside.Add(1)
					for {
						m := maxInside.Load()
						if n <= m || maxInside.CompareAndSwap(m, n) {
							break
						}
					}
					time.Sleep(time.Millisecond) // widen the window a second holder would need
					inside.Add(-1)
				}
				runs.Add(1)
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if runs.Load() != 20 || maxInside.Load() != 1 {
		t.Fatalf("%d runs, at most %d holders at once; want 20 and 1", runs.Load(), maxInside.Load())
	}
	wantErr := errors.New("fn failed")
	if err := s.WithRefreshLock(ctx, "acc_lock", func(context.Context) error { return wantErr }); !errors.Is(err, wantErr) {
		t.Fatalf("WithRefreshLock returned %v, want fn's error", err)
	}
	// The lock is free again after fn failed.
	if err := s.WithRefreshLock(ctx, "acc_lock", func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

func testRefreshLockWait(t *testing.T, s tokenstore.Store) {
	held, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.WithRefreshLock(ctx, "acc_wait", func(context.Context) error {
			close(held)
			<-release
			return nil
		})
	}()
	<-held
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	ran := false
	err := s.WithRefreshLock(short, "acc_wait", func(context.Context) error { ran = true; return nil })
	if !errors.Is(err, context.DeadlineExceeded) || ran {
		t.Fatalf("waiting on a held lock: %v (fn ran: %v), want DeadlineExceeded", err, ran)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// fn's context outlives the caller's.
	caller, cancelCaller := context.WithCancel(ctx)
	err = s.WithRefreshLock(caller, "acc_wait", func(fnCtx context.Context) error {
		cancelCaller()
		if fnCtx.Err() != nil {
			return fmt.Errorf("fn's context was cancelled with the caller's: %w", fnCtx.Err())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testLinkTokens(t *testing.T, s tokenstore.Store) {
	now := time.Now().Truncate(time.Microsecond).UTC()
	lt := &tokenstore.LinkToken{
		Hash: []byte("hash-of-link-token-1"), AccountID: "acc_1", TenantID: "t1", Integration: "hubspot",
		RedirectURI: "https://app.example.com/done", Scopes: []string{"a", "b"},
		Context: map[string]any{"plan": "pro"}, PersistPreviousContext: true,
		CreatedAt: now, ExpiresAt: now.Add(7 * 24 * time.Hour),
	}
	if err := s.CreateLinkToken(ctx, lt); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateLinkToken(ctx, &tokenstore.LinkToken{Hash: lt.Hash, CreatedAt: now, ExpiresAt: now}); !errors.Is(err, tokenstore.ErrExists) {
		t.Fatalf("duplicate link token: %v, want ErrExists", err)
	}
	got, err := s.GetLinkToken(ctx, lt.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Hash) != string(lt.Hash) || got.AccountID != lt.AccountID || got.TenantID != lt.TenantID ||
		got.Integration != lt.Integration || got.RedirectURI != lt.RedirectURI || !reflect.DeepEqual(got.Scopes, lt.Scopes) ||
		!reflect.DeepEqual(got.Context, lt.Context) || !got.PersistPreviousContext || !got.CreatedAt.Equal(lt.CreatedAt) ||
		!got.ExpiresAt.Equal(lt.ExpiresAt) || !got.UsedAt.IsZero() {
		t.Fatalf("link token = %+v, want %+v", got, lt)
	}
	if _, err := s.GetLinkToken(ctx, []byte("unknown")); !errors.Is(err, tokenstore.ErrNotFound) {
		t.Fatalf("unknown link token: %v, want ErrNotFound", err)
	}

	cs := &tokenstore.ConnectState{Hash: []byte("state-hash-1"), LinkTokenHash: lt.Hash,
		Verifier: "verifier-" + uuid.NewString(), RedirectURI: "https://gw.example.com/connect-account/callback",
		ExpiresAt: now.Add(10 * time.Minute), Integration: "picked"}
	if err := s.CreateConnectState(ctx, cs); err != nil {
		t.Fatal(err)
	}
	taken, err := s.TakeConnectState(ctx, cs.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if taken.Verifier != cs.Verifier || string(taken.LinkTokenHash) != string(lt.Hash) ||
		taken.RedirectURI != cs.RedirectURI || !taken.ExpiresAt.Equal(cs.ExpiresAt) || taken.Integration != cs.Integration {
		t.Fatalf("connect state = %+v, want %+v", taken, cs)
	}
	if _, err := s.TakeConnectState(ctx, cs.Hash); !errors.Is(err, tokenstore.ErrNotFound) {
		t.Fatalf("second take: %v, want ErrNotFound", err)
	}
	// The connection fields given before OAuth started come back with
	// the state, and a state without PKCE keeps them too.
	for _, verifier := range []string{"verifier-" + uuid.NewString(), ""} {
		cs2 := &tokenstore.ConnectState{Hash: []byte("state-hash-2" + verifier), LinkTokenHash: lt.Hash, Verifier: verifier,
			RedirectURI: cs.RedirectURI, ExpiresAt: cs.ExpiresAt, Connection: map[string]string{"subdomain": "acme"}}
		if err := s.CreateConnectState(ctx, cs2); err != nil {
			t.Fatal(err)
		}
		taken, err = s.TakeConnectState(ctx, cs2.Hash)
		if err != nil || taken.Verifier != verifier || !reflect.DeepEqual(taken.Connection, cs2.Connection) {
			t.Fatalf("connect state with connection fields = %+v, %v", taken, err)
		}
	}
}

func testTakeConnectStateRace(t *testing.T, s tokenstore.Store) {
	now := time.Now()
	lt := &tokenstore.LinkToken{Hash: []byte("lt-race"), TenantID: "t", Integration: "hubspot", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.CreateLinkToken(ctx, lt); err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		hash := []byte(fmt.Sprintf("state-race-%d", round))
		if err := s.CreateConnectState(ctx, &tokenstore.ConnectState{Hash: hash, LinkTokenHash: lt.Hash, Verifier: "v", ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		var got, notFound atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := s.TakeConnectState(ctx, hash)
				switch {
				case err == nil:
					got.Add(1)
				case errors.Is(err, tokenstore.ErrNotFound):
					notFound.Add(1)
				default:
					t.Error(err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if got.Load() != 1 || notFound.Load() != 9 {
			t.Fatalf("round %d: %d callers got the state, %d not; want 1 and 9", round, got.Load(), notFound.Load())
		}
	}
}

// takeAll reports which of hashes a store still holds, taking each.
func takeAll(t *testing.T, s tokenstore.Store, hashes [][]byte) []bool {
	t.Helper()
	out := make([]bool, len(hashes))
	for i, h := range hashes {
		_, err := s.TakeConnectState(ctx, h)
		switch {
		case err == nil:
			out[i] = true
		case !errors.Is(err, tokenstore.ErrNotFound):
			t.Fatalf("taking state %d: %v", i, err)
		}
	}
	return out
}

func testConnectStatesPerLinkToken(t *testing.T, s tokenstore.Store) {
	now := time.Now()
	max := tokenstore.ConnectStatesPerLinkToken
	var lts [2]*tokenstore.LinkToken
	for i := range lts {
		lts[i] = &tokenstore.LinkToken{Hash: []byte(fmt.Sprintf("lt-cap-%d", i)), TenantID: "t", Integration: "hubspot", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		if err := s.CreateLinkToken(ctx, lts[i]); err != nil {
			t.Fatal(err)
		}
	}
	// The other link token's states are not its neighbour's to trim.
	var others [][]byte
	for i := range max {
		h := []byte(fmt.Sprintf("other-%d", i))
		others = append(others, h)
		if err := s.CreateConnectState(ctx, &tokenstore.ConnectState{Hash: h, LinkTokenHash: lts[1].Hash, Verifier: "v", ExpiresAt: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	// Twice the cap of states, each expiring later than the one before.
	var hashes [][]byte
	for i := range 2 * max {
		h := []byte(fmt.Sprintf("cap-%02d", i))
		hashes = append(hashes, h)
		if err := s.CreateConnectState(ctx, &tokenstore.ConnectState{Hash: h, LinkTokenHash: lts[0].Hash, Verifier: "v", ExpiresAt: now.Add(time.Minute + time.Duration(i)*time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	// A state that expires sooner than those kept is still kept when it is
	// the one just made (a shorter state lifetime after a reload).
	short := []byte("cap-short")
	if err := s.CreateConnectState(ctx, &tokenstore.ConnectState{Hash: short, LinkTokenHash: lts[0].Hash, Verifier: "v", ExpiresAt: now.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	got := takeAll(t, s, append(hashes, short))
	for i, ok := range got[:len(hashes)] {
		// The short one displaced the oldest of the newest five.
		if want := i > len(hashes)-max; ok != want {
			t.Errorf("state %d stored = %v, want %v", i, ok, want)
		}
	}
	if !got[len(hashes)] {
		t.Error("the state just created was trimmed")
	}
	for i, ok := range takeAll(t, s, others) {
		if !ok {
			t.Errorf("another link token's state %d was trimmed", i)
		}
	}
	if err := s.CreateConnectState(ctx, &tokenstore.ConnectState{Hash: []byte("orphan"), LinkTokenHash: []byte("no-such-link"), Verifier: "v", ExpiresAt: now.Add(time.Minute)}); !errors.Is(err, tokenstore.ErrNotFound) {
		t.Errorf("a state of an unknown link token: %v, want ErrNotFound", err)
	}
}

func testConnectStatesPerLinkTokenConcurrent(t *testing.T, s tokenstore.Store) {
	now := time.Now()
	lt := &tokenstore.LinkToken{Hash: []byte("lt-cap-race"), TenantID: "t", Integration: "hubspot", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.CreateLinkToken(ctx, lt); err != nil {
		t.Fatal(err)
	}
	const n = 40
	hashes := make([][]byte, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		hashes[i] = []byte(fmt.Sprintf("cap-race-%02d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := s.CreateConnectState(ctx, &tokenstore.ConnectState{Hash: hashes[i], LinkTokenHash: lt.Hash, Verifier: "v", ExpiresAt: now.Add(time.Duration(i) * time.Millisecond)}); err != nil {
				t.Error(err)
			}
		}()
	}
	close(start)
	wg.Wait()
	kept := 0
	for _, ok := range takeAll(t, s, hashes) {
		if ok {
			kept++
		}
	}
	if kept != tokenstore.ConnectStatesPerLinkToken {
		t.Fatalf("%d of %d concurrently created states kept, want %d", kept, n, tokenstore.ConnectStatesPerLinkToken)
	}
}

func testCompleteLink(t *testing.T, s tokenstore.Store) {
	now := time.Now()
	newLT := &tokenstore.LinkToken{Hash: []byte("lt-new"), TenantID: "t", Integration: "hubspot", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.CreateLinkToken(ctx, newLT); err != nil {
		t.Fatal(err)
	}
	a := NewAccount("acc_linked")
	a.Status = account.StatusConnecting
	c, err := a.Apply(account.Created, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CompleteLink(ctx, newLT.Hash, a, true, tokenstore.EventsFor(c, a, now)); err != nil {
		t.Fatal(err)
	}
	if a.Version != 1 {
		t.Fatalf("Version after CompleteLink(create) = %d", a.Version)
	}
	got, err := s.GetAccount(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameAccount(t, got, a)
	lt, err := s.GetLinkToken(ctx, newLT.Hash)
	if err != nil || lt.UsedAt.IsZero() {
		t.Fatalf("link token after use: %+v, %v", lt, err)
	}
	if names := eventNames(fanned(t, s)); !reflect.DeepEqual(names, []string{account.EventCreated, account.EventActive}) {
		t.Fatalf("events = %v", names)
	}
	if err := s.CompleteLink(ctx, newLT.Hash, NewAccount("acc_other"), true, nil); !errors.Is(err, tokenstore.ErrUsed) {
		t.Fatalf("reusing a link token: %v, want ErrUsed", err)
	}
	if _, err := s.GetAccount(ctx, "acc_other"); !errors.Is(err, tokenstore.ErrNotFound) {
		t.Fatal("a refused CompleteLink created an account")
	}
	if err := s.CompleteLink(ctx, []byte("no-such-token"), NewAccount("acc_x"), true, nil); !errors.Is(err, tokenstore.ErrNotFound) {
		t.Fatalf("unknown link token: %v, want ErrNotFound", err)
	}

	// Reconnect: an update. One whose account write fails leaves the token unused.
	re := &tokenstore.LinkToken{Hash: []byte("lt-re"), AccountID: a.ID, TenantID: "t", Integration: "hubspot", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.CreateLinkToken(ctx, re); err != nil {
		t.Fatal(err)
	}
	stale := a.Clone()
	stale.Version = 42
	if err := s.CompleteLink(ctx, re.Hash, stale, false, []tokenstore.Event{tokenstore.NewEvent(account.EventUpdated, a, now)}); !errors.Is(err, tokenstore.ErrConflict) {
		t.Fatalf("CompleteLink with a stale account: %v, want ErrConflict", err)
	}
	if lt, err := s.GetLinkToken(ctx, re.Hash); err != nil || !lt.UsedAt.IsZero() {
		t.Fatalf("a failed CompleteLink used the token: %+v, %v", lt, err)
	}
	if names := eventNames(fanned(t, s)); len(names) != 0 {
		t.Fatalf("a failed CompleteLink wrote events %v", names)
	}
	a.Credentials.AccessToken = "at-reconnected"
	c, err = a.Apply(account.Reconnected, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CompleteLink(ctx, re.Hash, a, false, tokenstore.EventsFor(c, a, now)); err != nil {
		t.Fatal(err)
	}
	if a.Version != 2 {
		t.Fatalf("Version after reconnect = %d, want 2", a.Version)
	}
	got, err = s.GetAccount(ctx, a.ID)
	if err != nil || got.Credentials.AccessToken != "at-reconnected" || got.Version != 2 {
		t.Fatalf("account after reconnect: %+v, %v", got, err)
	}
}

func testCompleteLinkRace(t *testing.T, s tokenstore.Store) {
	now := time.Now()
	for round := range 5 {
		hash := []byte(fmt.Sprintf("lt-race-%d", round))
		if err := s.CreateLinkToken(ctx, &tokenstore.LinkToken{Hash: hash, TenantID: "t", Integration: "hubspot", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		var wins, used atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a := NewAccount(fmt.Sprintf("acc_race_%d_%d", round, i))
				<-start
				err := s.CompleteLink(ctx, hash, a, true, []tokenstore.Event{tokenstore.NewEvent(account.EventCreated, a, now)})
				switch {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, tokenstore.ErrUsed):
					used.Add(1)
				default:
					t.Error(err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if wins.Load() != 1 || used.Load() != 1 {
			t.Fatalf("round %d: %d won, %d got ErrUsed; want 1 and 1", round, wins.Load(), used.Load())
		}
		if n := len(fanned(t, s)); n != 1 {
			t.Fatalf("round %d: %d events, want the winner's one", round, n)
		}
	}
}

func testOutboxRoundTrip(t *testing.T, s tokenstore.Store) {
	now := time.Now()
	a := NewAccount("acc_out")
	e1 := tokenstore.NewEvent(account.EventAuthenticationError, a, now)
	e2 := tokenstore.NewEvent(account.EventTest, &account.Account{ID: ""}, now)
	if err := s.AddEvents(ctx, []tokenstore.Event{e1, e2}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEvents(ctx, []tokenstore.Event{e1}); !errors.Is(err, tokenstore.ErrExists) {
		t.Fatalf("an event id written twice: %v, want ErrExists", err)
	}
	if err := s.DisableEndpoint(ctx, "https://gone.example", "410 Gone", now); err != nil {
		t.Fatal(err)
	}
	if d, err := s.DisabledEndpoints(ctx); err != nil || !reflect.DeepEqual(d, map[string]string{"https://gone.example": "410 Gone"}) {
		t.Fatalf("DisabledEndpoints = %v, %v", d, err)
	}
	endpoints := func(e tokenstore.Event) []string {
		if e.Name == account.EventTest {
			return []string{"https://a.example"}
		}
		return []string{"https://a.example", "https://b.example", "https://gone.example"}
	}
	evs, err := s.FanOut(ctx, 1, endpoints)
	if err != nil || len(evs) != 1 || evs[0].ID != e1.ID {
		t.Fatalf("FanOut(1) = %v, %v; want the oldest event", evs, err)
	}
	evs, err = s.FanOut(ctx, 10, endpoints)
	if err != nil || len(evs) != 1 || evs[0].ID != e2.ID {
		t.Fatalf("second FanOut = %v, %v; want the other event", evs, err)
	}
	if evs, _ := s.FanOut(ctx, 10, endpoints); len(evs) != 0 {
		t.Fatalf("events fanned out twice: %v", eventNames(evs))
	}
	if n, err := s.PendingDeliveries(ctx); err != nil || n != 3 {
		t.Fatalf("PendingDeliveries = %d, %v; want 3 (the disabled endpoint gets none)", n, err)
	}

	claimAt := time.Now()
	ds, err := s.ClaimDeliveries(ctx, claimAt, time.Minute, 10)
	if err != nil || len(ds) != 3 {
		t.Fatalf("ClaimDeliveries = %d, %v; want 3", len(ds), err)
	}
	byEndpoint := map[string]tokenstore.Delivery{}
	for _, d := range ds {
		if !strings.HasPrefix(d.ID, "dlv_") || d.Status != tokenstore.DeliveryPending || d.Attempts != 0 {
			t.Fatalf("claimed delivery %+v", d)
		}
		if d.Event.Name == account.EventAuthenticationError {
			if d.Event.ID != e1.ID || d.Event.AccountID != "acc_out" || string(d.Event.Payload) != string(e1.Payload) ||
				!d.Event.CreatedAt.Equal(e1.CreatedAt) {
				t.Fatalf("delivery event = %+v, want %+v", d.Event, e1)
			}
			byEndpoint[d.Endpoint] = d
		}
	}
	if len(byEndpoint) != 2 {
		t.Fatalf("authentication_error went to %v, want a and b", byEndpoint)
	}
	if again, err := s.ClaimDeliveries(ctx, claimAt, time.Minute, 10); err != nil || len(again) != 0 {
		t.Fatalf("claimed while leased: %d, %v", len(again), err)
	}
	// A dispatcher that crashed: its leases run out and the deliveries come back.
	later, err := s.ClaimDeliveries(ctx, claimAt.Add(2*time.Minute), time.Minute, 10)
	if err != nil || len(later) != 3 {
		t.Fatalf("claim after the lease ran out = %d, %v; want 3", len(later), err)
	}

	// The crashed (or stalled) dispatcher's copy no longer holds the lease:
	// its outcome is refused and changes nothing.
	stale := byEndpoint["https://a.example"]
	stale.Status, stale.Attempts, stale.LastStatus = tokenstore.DeliveryFailed, 8, 500
	if err := s.FinishAttempt(ctx, &stale); !errors.Is(err, tokenstore.ErrConflict) {
		t.Fatalf("FinishAttempt with a lease that ran out: %v, want ErrConflict", err)
	}
	if got, err := s.GetDelivery(ctx, stale.ID); err != nil || got.Status != tokenstore.DeliveryPending || got.Attempts != 0 {
		t.Fatalf("a refused FinishAttempt changed the delivery: %+v, %v", got, err)
	}
	for _, d := range later {
		if d.Event.Name == account.EventAuthenticationError {
			byEndpoint[d.Endpoint] = d
		}
	}
	ok := byEndpoint["https://a.example"]
	ok.Status, ok.Attempts, ok.LastStatus = tokenstore.DeliveryDelivered, 1, 200
	if err := s.FinishAttempt(ctx, &ok); err != nil {
		t.Fatal(err)
	}
	retry := byEndpoint["https://b.example"]
	retry.Attempts, retry.LastStatus, retry.LastError = 1, 503, "upstream said 503"
	retry.NextAttemptAt = claimAt.Add(time.Hour).Truncate(time.Microsecond)
	if err := s.FinishAttempt(ctx, &retry); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetDelivery(ctx, retry.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != tokenstore.DeliveryPending || got.Attempts != 1 || got.LastStatus != 503 ||
		got.LastError != "upstream said 503" || !got.NextAttemptAt.Equal(retry.NextAttemptAt) || got.Event.ID != e1.ID {
		t.Fatalf("GetDelivery = %+v", got)
	}
	// Finishing drops the lease: the delivery is due again at its next attempt.
	due, err := s.ClaimDeliveries(ctx, claimAt.Add(2*time.Hour), time.Minute, 10)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, d := range due {
		ids[d.ID] = true
	}
	if !ids[retry.ID] || ids[ok.ID] {
		t.Fatalf("claim at the next attempt = %v; want the retried delivery, not the delivered one", ids)
	}
	for _, d := range due {
		if d.ID == retry.ID {
			retry.LeaseUntil = d.LeaseUntil
		}
	}
	retry.Status, retry.Attempts = tokenstore.DeliveryFailed, 2
	if err := s.FinishAttempt(ctx, &retry); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.PendingDeliveries(ctx); n != 1 {
		t.Fatalf("PendingDeliveries = %d, want 1", n)
	}
	if err := s.Redeliver(ctx, retry.ID, claimAt.Add(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetDelivery(ctx, retry.ID)
	if err != nil || got.Status != tokenstore.DeliveryPending || got.Event.ID != e1.ID || got.ID != retry.ID {
		t.Fatalf("after Redeliver: %+v, %v", got, err)
	}
	if n, _ := s.PendingDeliveries(ctx); n != 2 {
		t.Fatalf("PendingDeliveries after Redeliver = %d, want 2", n)
	}
	if _, err := s.GetDelivery(ctx, "dlv_missing"); !errors.Is(err, tokenstore.ErrNotFound) {
		t.Fatalf("GetDelivery(missing): %v", err)
	}
	if err := s.Redeliver(ctx, "dlv_missing", now); !errors.Is(err, tokenstore.ErrNotFound) {
		t.Fatalf("Redeliver(missing): %v", err)
	}
	if err := s.FinishAttempt(ctx, &tokenstore.Delivery{ID: "dlv_missing", Status: tokenstore.DeliveryFailed}); !errors.Is(err, tokenstore.ErrNotFound) {
		t.Fatalf("FinishAttempt(missing): %v", err)
	}

	if err := s.EnableEndpoint(ctx, "https://gone.example"); err != nil {
		t.Fatal(err)
	}
	if d, err := s.DisabledEndpoints(ctx); err != nil || len(d) != 0 {
		t.Fatalf("DisabledEndpoints after enable = %v, %v", d, err)
	}
	e3 := tokenstore.NewEvent(account.EventReactivated, a, now)
	if err := s.AddEvents(ctx, []tokenstore.Event{e3}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FanOut(ctx, 10, endpoints); err != nil {
		t.Fatal(err)
	}
	p, err := s.ListDeliveries(ctx, tokenstore.DeliveryFilter{Event: account.EventReactivated})
	if err != nil || len(p.Deliveries) != 3 {
		t.Fatalf("deliveries of a re-enabled endpoint's event = %d, %v; want 3", len(p.Deliveries), err)
	}
}

func testListDeliveries(t *testing.T, s tokenstore.Store) {
	now := time.Now()
	const events = 40
	for i := range events {
		a := NewAccount(fmt.Sprintf("acc_%d", i%4))
		e := tokenstore.NewEvent(account.Events[i%3], a, now.Add(time.Duration(i)*time.Millisecond))
		if err := s.AddEvents(ctx, []tokenstore.Event{e}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.FanOut(ctx, 10, func(tokenstore.Event) []string { return []string{"https://x.example", "https://y.example"} }); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := s.ClaimDeliveries(ctx, time.Now(), time.Minute, 1000)
	if err != nil || len(ds) != 2*events {
		t.Fatalf("claimed %d, %v", len(ds), err)
	}
	failed := map[string]bool{}
	for i, d := range ds {
		switch i % 3 {
		case 0:
			d.Status = tokenstore.DeliveryFailed
			failed[d.ID] = true
		case 1:
			d.Status = tokenstore.DeliveryDelivered
		default:
			if i%2 == 0 {
				continue // claimed, never answered
			}
			// An attempt that failed with retries left.
			d.Status = tokenstore.DeliveryPending
			d.Attempts++ // as the dispatcher counts an attempt
			d.LastStatus = 500
			d.NextAttemptAt = time.Now().Add(time.Hour)
		}
		if err := s.FinishAttempt(ctx, &d); err != nil {
			t.Fatal(err)
		}
	}
	var all []tokenstore.Delivery
	f := tokenstore.DeliveryFilter{Limit: 7}
	for {
		p, err := s.ListDeliveries(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, p.Deliveries...)
		if p.NextCursor == "" {
			break
		}
		f.Cursor = p.NextCursor
	}
	if len(all) != 2*events {
		t.Fatalf("listed %d deliveries, want %d", len(all), 2*events)
	}
	seen := map[string]bool{}
	for i, d := range all {
		if seen[d.ID] {
			t.Fatalf("delivery %s listed twice", d.ID)
		}
		seen[d.ID] = true
		if i < len(failed) != failed[d.ID] {
			t.Fatalf("position %d: delivery %s failed=%v; failed ones come first", i, d.ID, failed[d.ID])
		}
		if i > 0 && failed[d.ID] == failed[all[i-1].ID] && d.CreatedAt.After(all[i-1].CreatedAt) {
			t.Fatalf("position %d: not newest first", i)
		}
	}
	p, err := s.ListDeliveries(ctx, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryFailed, Limit: 1000})
	if err != nil || len(p.Deliveries) != len(failed) {
		t.Fatalf("failed filter: %d, %v; want %d", len(p.Deliveries), err, len(failed))
	}
	retrying := map[string]bool{}
	for _, d := range all {
		if d.Status == tokenstore.DeliveryPending && d.LastStatus == 500 {
			retrying[d.ID] = true
		}
	}
	p, err = s.ListDeliveries(ctx, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryRetrying, Limit: 1000})
	if err != nil || len(p.Deliveries) != len(retrying) || len(retrying) == 0 {
		t.Fatalf("retrying filter: %d, %v; want the %d pending deliveries with a failed attempt", len(p.Deliveries), err, len(retrying))
	}
	for _, d := range p.Deliveries {
		if !retrying[d.ID] || d.Attempts == 0 {
			t.Fatalf("retrying filter lists %s (%s, %d attempts)", d.ID, d.Status, d.Attempts)
		}
	}
	p, err = s.ListDeliveries(ctx, tokenstore.DeliveryFilter{AccountID: "acc_1", Event: account.Events[1], Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := range events {
		if i%4 == 1 && i%3 == 1 {
			want += 2
		}
	}
	if len(p.Deliveries) != want || want == 0 {
		t.Fatalf("account and event filter: %d deliveries, want %d", len(p.Deliveries), want)
	}
	for _, d := range p.Deliveries {
		if d.Event.AccountID != "acc_1" || d.Event.Name != account.Events[1] {
			t.Fatalf("filter let through %+v", d.Event)
		}
	}
	if _, err := s.ListDeliveries(ctx, tokenstore.DeliveryFilter{Cursor: "%%%"}); !errors.Is(err, tokenstore.ErrInvalidCursor) {
		t.Fatalf("forged cursor: %v", err)
	}
}

func testClaimDeliveriesConcurrent(t *testing.T, s tokenstore.Store) {
	const total = 200
	now := time.Now()
	var evs []tokenstore.Event
	for i := range total / 2 {
		evs = append(evs, tokenstore.NewEvent(account.EventTest, &account.Account{ID: fmt.Sprint(i)}, now))
	}
	if err := s.AddEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FanOut(ctx, total, func(tokenstore.Event) []string { return []string{"https://1.example", "https://2.example"} }); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	claimed := map[string]int{}
	var wg sync.WaitGroup
	at := time.Now()
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ds, err := s.ClaimDeliveries(ctx, at, time.Hour, 3)
				if err != nil {
					t.Error(err)
					return
				}
				if len(ds) == 0 {
					return
				}
				mu.Lock()
				for _, d := range ds {
					claimed[d.ID]++
				}
				// A store that hands out leased deliveries again would
				// otherwise keep this loop going for ever.
				n := 0
				for _, c := range claimed {
					n += c
				}
				mu.Unlock()
				if n > total {
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(claimed) != total {
		t.Fatalf("%d deliveries claimed, want %d", len(claimed), total)
	}
	for id, n := range claimed {
		if n != 1 {
			t.Fatalf("delivery %s claimed %d times", id, n)
		}
	}
}

// testContextSecrets: values under secret-looking context keys come back
// whole from GetAccount and GetLinkToken (they are sealed at rest) and
// redacted from listings, which never decrypt.
func testContextSecrets(t *testing.T, s tokenstore.Store) {
	a := NewAccount("acc_ctx_secrets")
	a.Context = map[string]any{
		"region":        "eu",
		"client_secret": "ctx-client-secret",
		"nested":        map[string]any{"api-key": "ctx-nested-key", "author": "ann", "list": []any{map[string]any{"pwd": "p"}}},
	}
	mustCreate(t, s, a)
	got, err := s.GetAccount(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameAccount(t, got, a)

	// An update without the secret drops it; one with a new secret keeps it.
	up := got.Clone()
	delete(up.Context, "client_secret")
	up.Context["session"] = "ctx-session"
	if err := s.UpdateAccount(ctx, up, nil); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetAccount(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameAccount(t, got, up)

	page, err := s.ListAccounts(ctx, tokenstore.Filter{TenantID: a.TenantID})
	if err != nil || len(page.Accounts) != 1 {
		t.Fatalf("ListAccounts: %v, %d accounts", err, len(page.Accounts))
	}
	want := account.RedactContext(up.Context)
	if !reflect.DeepEqual(page.Accounts[0].Context, want) {
		t.Fatalf("listed context = %#v, want it redacted: %#v", page.Accounts[0].Context, want)
	}

	// Dropping every secret leaves a plain context.
	plain := got.Clone()
	plain.Context = map[string]any{"region": "us"}
	if err := s.UpdateAccount(ctx, plain, nil); err != nil {
		t.Fatal(err)
	}
	if got, err = s.GetAccount(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	sameAccount(t, got, plain)

	now := time.Now().Truncate(time.Microsecond).UTC()
	lt := &tokenstore.LinkToken{Hash: []byte("hash-of-secret-context-token"), TenantID: "t1", Integration: "hubspot",
		Context:   map[string]any{"api_key": "lt-api-key", "signing_key": "lt-signing-key", "note": "visible"},
		CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.CreateLinkToken(ctx, lt); err != nil {
		t.Fatal(err)
	}
	gotLT, err := s.GetLinkToken(ctx, lt.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotLT.Context, lt.Context) {
		t.Fatalf("link token context = %#v, want %#v", gotLT.Context, lt.Context)
	}
}
