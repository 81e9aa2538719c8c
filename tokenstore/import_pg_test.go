package tokenstore_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/linkgate/linkgate/tokenstore"
	"github.com/linkgate/linkgate/tokenstore/storetest"
)

// TestPostgresImportOnConflictPath runs the bulk import tests on the
// PostgreSQL store's other write path: COPY into a temporary table, then
// INSERT … ON CONFLICT DO NOTHING.
func TestPostgresImportOnConflictPath(t *testing.T) {
	pgSchema(t) // skips early without a database
	defer tokenstore.SetPostgresImportPath(false, nil)()
	storetest.RunImport(t, func(t *testing.T) tokenstore.Store {
		return openPostgres(t, pgSchema(t), newKey(t))
	})
}

// TestPostgresImportRace takes one of a batch's ids after the import has
// probed them and before its direct COPY, as another writer could: the
// batch is written again through ON CONFLICT, the raced row is reported
// taken and the other writer's account stays as it wrote it.
func TestPostgresImportRace(t *testing.T) {
	p := openPostgres(t, pgSchema(t), newKey(t))
	rows := make([]tokenstore.Import, 100)
	for i := range rows {
		a := storetest.NewAccount(uuid.NewString())
		rows[i] = tokenstore.Import{Account: a, Events: tokenstore.NewEvents([]string{"integrated_account:created"}, a, time.Now())}
	}
	raced := storetest.NewAccount(rows[42].Account.ID)
	raced.TenantID = "the-other-writer"
	races := 0
	defer tokenstore.SetPostgresImportPath(true, func() {
		if races++; races == 1 {
			if err := p.CreateAccount(ctx, raced, nil); err != nil {
				t.Error(err)
			}
		}
	})()
	errs, err := p.ImportAccounts(ctx, rows)
	if err != nil {
		t.Fatal(err)
	}
	if races != 1 {
		t.Fatalf("the direct COPY ran %d times, want once (then the other path)", races)
	}
	for i, e := range errs {
		if (i == 42) != (e != nil) || (e != nil && !errors.Is(e, tokenstore.ErrExists)) {
			t.Fatalf("row %d: %v", i, e)
		}
	}
	got, err := p.GetAccount(ctx, raced.ID)
	if err != nil || got.TenantID != "the-other-writer" {
		t.Fatalf("the raced account: %+v, %v", got, err)
	}
	for _, i := range []int{0, 41, 43, 99} {
		if _, err := p.GetAccount(ctx, rows[i].Account.ID); err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
	}
}
