package linkgate

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/testenv"
	"github.com/linkgate/linkgate/tokenstore"
)

func TestImportCommandInCaddy(t *testing.T) {
	bin := testenv.CaddyBinary(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "linkgate.db")
	key, enc := resealKey(t)
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`{
	admin off
	integrated_accounts {
		storage sqlite %s
		encryption_key %s
		api_token import-api-token
		public_url http://127.0.0.1:1
		integration keyed {
			auth api_key
			base_url http://127.0.0.1:1
		}
	}
}
`, path, enc)), 0o600); err != nil {
		t.Fatal(err)
	}
	const n = 2500
	var in bytes.Buffer
	ids := make([]string, n)
	for i := range n {
		ids[i] = uuid.NewString()
		fmt.Fprintf(&in, `{"id":%q,"tenant_id":"mig-%d","integration":"keyed","context":{"api_key":"import-secret-%d"}}`+"\n", ids[i], i, i)
		if i == 1200 {
			in.WriteString("\n") // blank lines are skipped but counted
			in.WriteString(`{"tenant_id":"bad tenant","integration":"keyed","context":{"api_key":"import-secret-x"}}` + "\n")
		}
	}
	in.WriteString(fmt.Sprintf(`{"id":%q,"tenant_id":"dup","integration":"keyed","context":{"api_key":"import-secret-y"}}`+"\n", ids[7]))
	input := filepath.Join(dir, "accounts.jsonl")
	if err := os.WriteFile(input, in.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	run := func() (failed []importLine, stderr string, code int) {
		cmd := exec.Command(bin, "linkgate-import", "--config", config, "--adapter", "caddyfile", "--input", input, "--events", "none")
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		if strings.Contains(o.String()+e.String(), "import-secret") {
			t.Fatalf("the command prints a secret:\n%s\n%s", o.String(), e.String())
		}
		sc := bufio.NewScanner(&o)
		for sc.Scan() {
			var l importLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("report line %q: %v", sc.Text(), err)
			}
			failed = append(failed, l)
		}
		return failed, e.String(), cmd.ProcessState.ExitCode()
	}

	failed, stderr, code := run()
	if code != 1 || len(failed) != 2 {
		t.Fatalf("exit %d, %d rows reported, want 1 and 2\n%s", code, len(failed), stderr)
	}
	if failed[0].Line != 1203 || failed[0].StatusCode != 400 || failed[1].Line != n+3 || failed[1].StatusCode != 409 || failed[1].ID != ids[7] {
		t.Fatalf("reported %+v", failed)
	}
	if !strings.Contains(stderr, fmt.Sprintf("imported %d of %d accounts", n, n+2)) {
		t.Fatalf("summary: %s", stderr)
	}
	s, err := tokenstore.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := tokenstore.OpenSQLite(context.Background(), path, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 7, 1200, n - 1} {
		a, err := st.GetAccount(context.Background(), ids[i])
		if err != nil || a.Credentials.APIKey != fmt.Sprintf("import-secret-%d", i) || a.TenantID != fmt.Sprintf("mig-%d", i) {
			t.Fatalf("account %d: %+v, %v", i, a, err)
		}
	}
	if evs, err := st.FanOut(context.Background(), 10, func(tokenstore.Event) []string { return nil }); err != nil || len(evs) != 0 {
		t.Fatalf("--events none wrote %d events (%v)", len(evs), err)
	}
	st.Close()

	// Run again, as after an interruption: every row with an id is
	// already there and nothing is written twice.
	failed, stderr, code = run()
	if code != 1 || len(failed) != n+2 || !strings.Contains(stderr, fmt.Sprintf("imported 0 of %d", n+2)) {
		t.Fatalf("second run: exit %d, %d reported\n%s", code, len(failed), stderr)
	}
}

// BenchmarkImportLines imports OAuth accounts from JSON lines into SQLite
// as caddy linkgate-import does (decoding, checks and sealing on every core, one writer,
// transactions as the command's, its page cache), without events. It
// reports accounts per second of wall time and CPU microseconds per
// account. Ids are random UUIDs, or in insertion order with IDS=seq; with
// INPUT set it imports the first b.N lines of that file instead (bench/scale
// gen's, on the integrations crm, mail and keyed).
//
//	go test -run XXX -bench ImportLines -benchtime 50000x .
//	bench/scale gen -n 1000000 -ids random >/tmp/r.jsonl
//	INPUT=/tmp/r.jsonl go test -run XXX -bench ImportLines -benchtime 1000000x -timeout 30m .
func BenchmarkImportLines(b *testing.B) {
	key, _ := resealKey(&testing.T{})
	s, err := tokenstore.NewSealer(key)
	if err != nil {
		b.Fatal(err)
	}
	st, err := tokenstore.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "linkgate.db"), s)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	app := &App{Integrations: map[string]*account.Integration{"crm": {Name: "crm", Auth: account.MethodOAuth2}}}
	if err := st.SetImportCacheSize(context.Background(), int64(b.N)*1000); err != nil {
		b.Fatal(err)
	}
	if err := st.CheckpointImportsAside(context.Background()); err != nil {
		b.Fatal(err)
	}
	var in bytes.Buffer
	if p := os.Getenv("INPUT"); p != "" {
		for _, name := range []string{"mail", "keyed"} {
			app.Integrations[name] = &account.Integration{Name: name, Auth: account.MethodOAuth2}
		}
		app.Integrations["keyed"].Auth = account.MethodAPIKey
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for n := 0; n < b.N && sc.Scan(); n++ {
			in.Write(sc.Bytes())
			in.WriteByte('\n')
		}
		f.Close()
	}
	for i := range b.N {
		if os.Getenv("INPUT") != "" {
			break
		}
		id := uuid.NewString()
		if os.Getenv("IDS") == "seq" {
			id = fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		}
		fmt.Fprintf(&in, `{"id":%q,"tenant_id":"tenant-%d","integration":"crm","context":{"portal_id":"%d","oauth":{"token":{"access_token":"at-%d-0123456789abcdef0123456789abcdef","refresh_token":"rt-%d-0123456789abcdef","expires_in":3600}}}}`+"\n",
			id, i/3, i, i, i)
	}
	defer debug.SetGCPercent(debug.SetGCPercent(400)) // as the command sets it
	// importLines writes on the goroutine that calls it: on a thread of
	// its own, that thread's CPU time is the writer's.
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	const rusageThread = 1 // RUSAGE_THREAD
	var ru0, ru1, th0, th1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	_ = syscall.Getrusage(rusageThread, &th0)
	b.ResetTimer()
	sum, err := app.importLines(context.Background(), st, &in, false, io.Discard)
	b.StopTimer()
	_ = syscall.Getrusage(rusageThread, &th1)
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	if err != nil || sum.imported != b.N {
		b.Fatalf("%v: %v", sum, err)
	}
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "accounts/s")
	writer := time.Duration(th1.Utime.Nano() + th1.Stime.Nano() - th0.Utime.Nano() - th0.Stime.Nano())
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu_µs/account")
	b.ReportMetric(float64(writer.Microseconds())/float64(b.N), "writer_cpu_µs/account")
	// What two idle cores would sustain: the writer alone on one, or the
	// whole work spread on both, whichever is the bound.
	bound := max(writer.Seconds(), cpu.Seconds()/2)
	b.ReportMetric(float64(b.N)/bound, "2core_bound_accounts/s")
}
