package linkgate

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

// failingImporter fails its failAt-th write (counting from 1), as a store
// that goes away mid-import.
type failingImporter struct {
	*tokenstore.SQLite
	writes, failAt int
}

func (f *failingImporter) ImportSealed(ctx context.Context, si *tokenstore.SealedImport) ([]error, error) {
	if f.writes++; f.writes == f.failAt {
		return nil, fmt.Errorf("importing accounts: %w", tokenstore.ErrUnavailable)
	}
	return f.SQLite.ImportSealed(ctx, si)
}

// TestImportLinesStoreFailsMidway makes the store fail on linkgate-import's
// second transaction: the first transaction's rows stay written, the failing
// one's are all absent (nothing half-imported), every row not imported is
// reported with its line, and the error names the first line not imported.
func TestImportLinesStoreFailsMidway(t *testing.T) {
	key, _ := resealKey(t)
	s, err := tokenstore.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := tokenstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "linkgate.db"), s)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	app := &App{Integrations: map[string]*account.Integration{"keyed": {Name: "keyed", Auth: account.MethodAPIKey}}}
	n := 2*importLinesChunk + 100
	ids := make([]string, n)
	var in bytes.Buffer
	for i := range n {
		ids[i] = uuid.NewString()
		fmt.Fprintf(&in, `{"id":%q,"tenant_id":"t-%d","integration":"keyed","context":{"api_key":"k-%d"}}`+"\n", ids[i], i, i)
	}
	var report bytes.Buffer
	sum, err := app.importLines(context.Background(), &failingImporter{SQLite: st, failAt: 2}, &in, false, &report)
	if err == nil || !errors.Is(err, tokenstore.ErrUnavailable) ||
		!strings.Contains(err.Error(), fmt.Sprintf("rows from line %d on were not imported", importLinesChunk+1)) {
		t.Fatalf("error %v", err)
	}
	if sum.imported != importLinesChunk {
		t.Fatalf("%v, want the first transaction's %d rows imported", sum, importLinesChunk)
	}
	failed := map[int]int{}
	sc := bufio.NewScanner(&report)
	for sc.Scan() {
		var l importLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		failed[l.Line] = l.StatusCode
	}
	for line := importLinesChunk + 1; line <= 2*importLinesChunk; line++ {
		if failed[line] != 503 {
			t.Fatalf("line %d reported %d, want 503", line, failed[line])
		}
	}
	for i, id := range ids {
		_, err := st.GetAccount(context.Background(), id)
		if written := err == nil; written != (i < importLinesChunk) {
			t.Fatalf("row %d: written %v (%v)", i, written, err)
		}
	}
}
