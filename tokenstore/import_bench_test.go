package tokenstore

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/linkgate/linkgate/account"
)

// benchImports builds n OAuth accounts in batches of CHUNK (default 1,000),
// with random UUIDs as ids (IDS=seq for ids in insertion order), and the
// created and active events of each unless NOEVENTS is set.
func benchImports(n int) [][]Import {
	chunk := 1000
	if c, err := strconv.Atoi(os.Getenv("CHUNK")); err == nil && c > 0 {
		chunk = c
	}
	now := time.Now()
	var out [][]Import
	for i := range n {
		id := uuid.NewString()
		if os.Getenv("IDS") == "seq" {
			id = fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		}
		a := &account.Account{
			ID: id, TenantID: fmt.Sprintf("tenant-%07d", i/3), Integration: "hubspot",
			Method: account.MethodOAuth2, Status: account.StatusActive, Context: map[string]any{"portal_id": "42"},
			Credentials: account.Credentials{AccessToken: "at-0123456789abcdef0123456789abcdef", RefreshToken: "rt-0123456789abcdef",
				Expiry: now.Add(48*time.Hour + time.Duration(i%40320)*time.Minute)},
		}
		im := Import{Account: a}
		if os.Getenv("NOEVENTS") == "" {
			im.Events = NewEvents([]string{"integrated_account:created", "integrated_account:active"}, a, now)
		}
		if i%chunk == 0 {
			out = append(out, make([]Import, 0, chunk))
		}
		out[len(out)-1] = append(out[len(out)-1], im)
	}
	return out
}

func benchPragmas(b *testing.B, st *SQLite) {
	if p := os.Getenv("PRAGMAS"); p != "" {
		for _, q := range strings.Split(p, ";") {
			if _, err := st.w.Exec("PRAGMA " + q); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSQLiteImport writes accounts through ImportAccounts (sealing
// and writing, one goroutine), b.N accounts in batches of CHUNK.
//
//	go test -run XXX -bench 'SQLiteImport$' -benchtime 100000x ./tokenstore/
func BenchmarkSQLiteImport(b *testing.B) {
	st := openPlanStore(b)
	benchPragmas(b, st)
	ctx := context.Background()
	batches := benchImports(b.N)
	cpu0 := cpuTime()
	b.ResetTimer()
	for _, batch := range batches {
		errs, err := st.ImportAccounts(ctx, batch)
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
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "accounts/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu_µs/account")
}

// BenchmarkSQLiteImportSealed measures the writer alone: batches are sealed
// before the timer starts, and only ImportSealed runs. Its CPU per account
// bounds the rate of a bulk import whatever the number of cores sealing
// and decoding for it (1e6 / cpu_µs accounts/s).
//
//	go test -run XXX -bench SQLiteImportSealed -benchtime 100000x ./tokenstore/
func BenchmarkSQLiteImportSealed(b *testing.B) {
	st := openPlanStore(b)
	benchPragmas(b, st)
	ctx := context.Background()
	batches := benchImports(b.N)
	sealed := make([]*SealedImport, len(batches))
	for k, batch := range batches {
		sealed[k] = st.SealImport(batch)
	}
	cpu0 := cpuTime()
	b.ResetTimer()
	for _, si := range sealed {
		errs, err := st.ImportSealed(ctx, si)
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
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "accounts/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu_µs/account")
}
