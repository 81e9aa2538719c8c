package tokenstore_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/linkgate/linkgate/tokenstore"
)

// BenchmarkPostgresImport writes b.N accounts through ImportSealed into
// PostgreSQL (LINKGATE_TEST_POSTGRES), sealed before the timer starts, in
// batches of CHUNK (default 1,000) with random UUIDs (IDS=seq for ordered
// ids), without events when NOEVENTS is set. IMPORT_PATH=conflict writes through
// the temporary table and ON CONFLICT instead of the direct COPY.
//
//	go test -run XXX -bench PostgresImport -benchtime 100000x ./tokenstore/
func BenchmarkPostgresImport(b *testing.B) {
	p := openPostgres(b, pgSchema(b), newKey(b))
	defer tokenstore.SetPostgresImportPath(os.Getenv("IMPORT_PATH") != "conflict", nil)()
	ctx := context.Background()
	batches := tokenstore.BenchImports(b.N)
	sealed := make([]*tokenstore.SealedImport, len(batches))
	for k, batch := range batches {
		sealed[k] = p.SealImport(batch)
	}
	b.ResetTimer()
	start := time.Now()
	for _, si := range sealed {
		errs, err := p.ImportSealed(ctx, si)
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range errs {
			if e != nil {
				b.Fatal(e)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "accounts/s")
}
