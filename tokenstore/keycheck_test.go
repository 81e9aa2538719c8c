package tokenstore_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/linkgate/linkgate/tokenstore"
	"github.com/linkgate/linkgate/tokenstore/storetest"
)

// keyStore is a SQL store as the key check sees it.
type keyStore interface {
	tokenstore.Store
	tokenstore.KeyChecker
	Reseal(ctx context.Context) (int, error)
}

func keyID(t *testing.T, k []byte) string {
	t.Helper()
	s, err := tokenstore.NewSealer(k)
	if err != nil {
		t.Fatal(err)
	}
	return s.PrimaryKeyID()
}

// testCheckKeys walks a store through a lost key, a rotation without
// re-seal and a re-seal, checking what CheckKeys reports at each step.
func testCheckKeys(t *testing.T, open func(keys ...[]byte) keyStore) {
	a, b := newKey(t), newKey(t)
	idA, idB := keyID(t, a), keyID(t, b)
	check := func(st keyStore, missing, matched []string) {
		t.Helper()
		kc, err := st.CheckKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(kc.Missing, missing) || !slices.Equal(kc.Matched, matched) {
			t.Fatalf("CheckKeys = missing %v matched %v; want missing %v matched %v", kc.Missing, kc.Matched, missing, matched)
		}
	}

	st := open(a)
	check(st, nil, nil) // a new store: nothing sealed yet, key a recorded
	acc1 := storetest.NewAccount("acc_key_a")
	if err := st.CreateAccount(ctx, acc1, nil); err != nil {
		t.Fatal(err)
	}
	st.Close()

	// The wrong key alone: reported, and not recorded.
	for range 2 {
		st = open(b)
		check(st, []string{idA}, nil)
		st.Close()
	}

	// Rotation: b seals, a still opens.
	st = open(b, a)
	check(st, nil, []string{idA})
	if err := st.CreateAccount(ctx, storetest.NewAccount("acc_key_b"), nil); err != nil {
		t.Fatal(err)
	}
	st.Close()

	// a dropped without a re-seal: a is missing, b matches, and a's
	// account answers ErrUndecryptable naming a's key id.
	st = open(b)
	check(st, []string{idA}, []string{idB})
	_, err := st.GetAccount(ctx, acc1.ID)
	var ke *tokenstore.KeyError
	if !errors.Is(err, tokenstore.ErrUndecryptable) || !errors.As(err, &ke) || ke.KeyID != idA {
		t.Fatalf("GetAccount sealed with a dropped key: %v; want ErrUndecryptable naming key id %s", err, idA)
	}
	if errors.Is(err, tokenstore.ErrUnavailable) {
		t.Fatalf("GetAccount sealed with a dropped key: %v is a store outage", err)
	}
	st.Close()

	// After a re-seal nothing needs a any more.
	st = open(b, a)
	if _, err := st.Reseal(ctx); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st = open(b)
	check(st, nil, []string{idB})
	st.Close()
}

func TestSQLiteCheckKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	testCheckKeys(t, func(keys ...[]byte) keyStore { return openSQLite(t, path, keys...) })
}

func TestPostgresCheckKeys(t *testing.T) {
	dsn := pgSchema(t)
	testCheckKeys(t, func(keys ...[]byte) keyStore { return openPostgres(t, dsn, keys...) })
}

// TestSQLiteCheckKeysSeesDataFromBeforeTheCheck: a store written before
// key checks existed has no recorded keys; the migration that adds them
// reads the key ids off the sealed credentials, so a wrong key is caught
// on the first start after the upgrade too.
func TestSQLiteCheckKeysSeesDataFromBeforeTheCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	a, b := newKey(t), newKey(t)
	st := openSQLite(t, path, a)
	if err := st.CreateAccount(ctx, storetest.NewAccount("acc_old"), nil); err != nil {
		t.Fatal(err)
	}
	st.Close()
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"DROP TABLE seal_keys", "DELETE FROM schema_migrations WHERE version = 9"} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	raw.Close()
	st = openSQLite(t, path, b)
	defer st.Close()
	kc, err := st.CheckKeys(ctx)
	if err != nil || !slices.Equal(kc.Missing, []string{keyID(t, a)}) {
		t.Fatalf("CheckKeys after the upgrade = %+v, %v; want key id %s missing", kc, err, keyID(t, a))
	}
}
