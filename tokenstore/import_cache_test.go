package tokenstore

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"testing"

	"github.com/linkgate/linkgate/account"
)

// cacheSize reads PRAGMA cache_size on one connection of db.
func cacheSize(t *testing.T, db *sql.DB) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRowContext(context.Background(), "PRAGMA cache_size").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSetImportCacheSizeIsTheWritersAlone: a bulk import enlarges its own
// process's writer cache; the readers, and the writer of any other opening
// of the file (a gateway's), keep theirs.
func TestSetImportCacheSizeIsTheWritersAlone(t *testing.T) {
	ctx := context.Background()
	key := make([]byte, 32)
	s, err := NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "linkgate.db")
	imp, err := OpenSQLite(ctx, path, s)
	if err != nil {
		t.Fatal(err)
	}
	defer imp.Close()
	gw, err := OpenSQLite(ctx, path, s)
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	readerSize := cacheSize(t, imp.r)

	// A small import never shrinks the writer's cache.
	if err := (&Cached{inner: imp}).SetImportCacheSize(ctx, 1<<20); err != nil {
		t.Fatal(err)
	}
	if got := cacheSize(t, imp.w); got != -sqliteWriterCacheKiB {
		t.Fatalf("writer cache_size after a small import's sizing = %d, want %d", got, -sqliteWriterCacheKiB)
	}
	if err := (&Cached{inner: imp}).SetImportCacheSize(ctx, 1<<30); err != nil {
		t.Fatal(err)
	}
	if got := cacheSize(t, imp.w); got > -(1 << 20) {
		t.Fatalf("writer cache_size = %d, want at least 1 GiB (-%d)", got, 1<<20)
	}
	// Capped at 4 GiB.
	if err := imp.SetImportCacheSize(ctx, 1<<40); err != nil {
		t.Fatal(err)
	}
	if got := cacheSize(t, imp.w); got != -(4 << 20) {
		t.Fatalf("writer cache_size = %d, want the 4 GiB cap", got)
	}
	if got := cacheSize(t, imp.r); got != readerSize {
		t.Fatalf("reader cache_size = %d, want %d as before", got, readerSize)
	}
	if got := cacheSize(t, gw.w); got != -sqliteWriterCacheKiB {
		t.Fatalf("the other store's writer cache_size = %d, want %d", got, -sqliteWriterCacheKiB)
	}
	if got := cacheSize(t, gw.r); got != readerSize {
		t.Fatalf("the other store's reader cache_size = %d, want %d", got, readerSize)
	}
}

// TestSQLiteImportOrder: SQLite writes a batch by descending id (the
// listing indexes, id DESC, then fill their pages), and of two rows with
// one id the first of the input comes first, so it is the one written.
func TestSQLiteImportOrder(t *testing.T) {
	s, err := NewSealer(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	st := &SQLite{sealer: s}
	var rows []Import
	for _, id := range []string{"b", "a", "c", "a"} {
		rows = append(rows, Import{Account: &account.Account{ID: id, TenantID: "t", Integration: "crm",
			Method: account.MethodAPIKey, Status: account.StatusActive, Credentials: account.Credentials{APIKey: "k"}}})
	}
	si := st.SealImport(rows)
	if want := []int{2, 0, 1, 3}; !slices.Equal(si.order, want) {
		t.Fatalf("order %v, want %v (c, b, the first a, the second a)", si.order, want)
	}
}
