package tokenstore

import (
	"context"
	"database/sql"
	"os"
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

// TestCheckpointImportsAside: with the import's checkpoints on their own
// connection, every row is written, the writer no longer checkpoints in its
// commits, and the write-ahead log is still copied and started over: it
// holds a few transactions' pages, not all of them. Another opening of the
// file (a gateway's) keeps checkpointing in its commits.
func TestCheckpointImportsAside(t *testing.T) {
	ctx := context.Background()
	s, err := NewSealer(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "linkgate.db")
	st, err := OpenSQLite(ctx, path, s)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	gw, err := OpenSQLite(ctx, path, s)
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	if err := (&Cached{inner: st}).CheckpointImportsAside(ctx); err != nil {
		t.Fatal(err)
	}
	pragma := func(db *sql.DB, q string) int64 {
		t.Helper()
		var n int64
		if err := db.QueryRowContext(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got := pragma(st.w, "PRAGMA wal_autocheckpoint"); got != 0 {
		t.Fatalf("the import's writer wal_autocheckpoint = %d, want 0", got)
	}
	if got := pragma(gw.w, "PRAGMA wal_autocheckpoint"); got != 1000 {
		t.Fatalf("the other store's writer wal_autocheckpoint = %d, want 1000", got)
	}
	t.Setenv("NOEVENTS", "1")
	t.Setenv("CHUNK", "300")
	batches := benchImports(300 * 16)
	var first int64
	for k, b := range batches {
		errs, err := st.ImportAccounts(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range errs {
			if e != nil {
				t.Fatal(e)
			}
		}
		if k == 0 {
			fi, err := os.Stat(path + "-wal")
			if err != nil {
				t.Fatal(err)
			}
			first = fi.Size()
		}
	}
	if got := pragma(st.r, "SELECT COUNT(*) FROM accounts"); got != 300*16 {
		t.Fatalf("%d accounts, want %d", got, 300*16)
	}
	fi, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 8*first {
		t.Fatalf("the write-ahead log grew to %d bytes after 16 transactions of %d: it was not started over", fi.Size(), first)
	}
}
