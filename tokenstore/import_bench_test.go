package tokenstore

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linkgate/linkgate/account"
)

// BenchmarkSQLiteImport writes accounts through ImportAccounts in
// transactions of 1,000, as the bulk import does, with the created and
// active events of each.
//
//	go test -run XXX -bench SQLiteImport -benchtime 100000x ./tokenstore/
func BenchmarkSQLiteImport(b *testing.B) {
	st := openPlanStore(b)
	ctx := context.Background()
	if p := os.Getenv("PRAGMAS"); p != "" {
		for _, q := range strings.Split(p, ";") {
			if _, err := st.w.Exec("PRAGMA " + q); err != nil {
				b.Fatal(err)
			}
		}
	}
	now := time.Now()
	n := 0
	batch := make([]Import, 0, 1000)
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	flush := func() {
		errs, err := st.ImportAccounts(ctx, batch)
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range errs {
			if e != nil {
				b.Fatal(e)
			}
		}
		batch = batch[:0]
	}
	for b.Loop() {
		a := &account.Account{
			ID: fmt.Sprintf("acc_%09d", n), TenantID: fmt.Sprintf("tenant_%07d", n/3), Integration: "hubspot",
			Method: account.MethodOAuth2, Status: account.StatusActive, Context: map[string]any{"portal_id": "42"},
			Credentials: account.Credentials{AccessToken: "at-0123456789abcdef0123456789abcdef", RefreshToken: "rt-0123456789abcdef",
				Expiry: now.Add(time.Hour)},
		}
		n++
		im := Import{Account: a}
		if os.Getenv("NOEVENTS") == "" {
			im.Events = NewEvents([]string{"integrated_account:created", "integrated_account:active"}, a, now)
		}
		batch = append(batch, im)
		if len(batch) == cap(batch) {
			flush()
		}
	}
	if len(batch) > 0 {
		flush()
	}
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "accounts/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu_µs/account")
}
