package linkgate

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/linkgate/linkgate/tokenstore"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "linkgate-import",
		Usage: "--config <path> [--adapter <name>] [--input <file>] [--events all|none]",
		Short: "Imports integrated accounts in bulk from JSON lines",
		Long: `
Imports integrated accounts with existing credentials into the store of the
integrated_accounts app, for a migration from another vendor. The input
(--input, default standard input) holds one JSON object a line, each of the
shape POST /integrated-account takes:

  {"id": "…", "tenant_id": "…", "integration": "…", "context": {…}}

Rows are checked exactly as the API checks them and written ten thousand to a
transaction (a transaction that fails leaves none of its rows). Each row is
atomic: it is written with its events or not at all. A row that is
invalid, or whose id is taken, is reported and skipped;
the others are imported. Give every row its id (a UUID) to make an import
that was interrupted safe to run again: rows already written then report
409 and nothing is written twice.

--events all (the default) writes the integrated_account:created and
:active events a single import writes, so their webhooks go out once a
gateway runs; --events none writes none, for accounts the application
already knows.

Every row that was not imported is printed on standard output as a JSON
line {"line", "id", "statusCode", "error", "message"}; a summary goes to
standard error. The exit status is 0 when every row was imported, 1 when
some were not. The command may run while the gateway is serving.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().StringP("config", "c", "", "Configuration file with the integrated_accounts app (required)")
			cmd.Flags().StringP("adapter", "a", "", "Name of config adapter, e.g. caddyfile")
			cmd.Flags().StringP("input", "i", "-", "JSON lines file to import, - for standard input")
			cmd.Flags().String("events", "all", "Events to write for imported accounts: all or none")
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(cmdImport)
		},
	})
}

// cmdImport is the linkgate-import command.
func cmdImport(fl caddycmd.Flags) (int, error) {
	// Ctrl-C stops between transactions: every row is written whole or
	// not at all.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var in io.Reader = os.Stdin
	// What the import adds to the database, for its page cache: about
	// two and a half times the input (sealed credentials, eight indexes),
	// 1 GiB when the input's size is unknown.
	var adds int64 = 1 << 30
	if p := fl.String("input"); p != "" && p != "-" {
		f, err := os.Open(p)
		if err != nil {
			return caddy.ExitCodeFailedStartup, err
		}
		defer f.Close()
		in = f
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			adds = 3 * fi.Size()
		}
	}
	events, err := importEvents(fl.String("events"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if fl.String("config") == "" {
		return caddy.ExitCodeFailedStartup, errors.New("--config is required: the configuration the gateway runs with")
	}
	cfgJSON, _, _, err := caddycmd.LoadConfig(fl.String("config"), fl.String("adapter"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("loading %s: %w", fl.String("config"), err)
	}
	// The command's own process holds a few chunks at a time: trading
	// some heap for less collection leaves more CPU to decode and write.
	debug.SetGCPercent(400)
	var sum importSummary
	err = withConfiguredStore(cfgJSON, "import into", func(app *App, st *tokenstore.Cached) error {
		// This process's writer serves the import alone.
		if err := st.SetImportCacheSize(ctx, adds); err != nil {
			return err
		}
		if err := st.CheckpointImportsAside(ctx); err != nil {
			return err
		}
		sum, err = app.importLines(ctx, st, in, events, os.Stdout)
		return err
	})
	if sum.rows > 0 || err == nil {
		fmt.Fprintln(os.Stderr, sum)
	}
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if sum.failed > 0 {
		return 1, fmt.Errorf("%d rows were not imported: they are listed on standard output", sum.failed)
	}
	return caddy.ExitCodeSuccess, nil
}

// importSummary counts the rows of an import.
type importSummary struct {
	rows, imported, failed int
	took                   time.Duration
}

func (s importSummary) String() string {
	rate := 0.0
	if s.took > 0 {
		rate = float64(s.imported) / s.took.Seconds()
	}
	return fmt.Sprintf("imported %d of %d accounts (%d not imported) in %s, %.0f accounts/s",
		s.imported, s.rows, s.failed, s.took.Round(time.Millisecond), rate)
}

// importLine is a failed row as the command reports it.
type importLine struct {
	Line       int    `json:"line"`
	ID         string `json:"id,omitempty"`
	StatusCode int    `json:"statusCode"`
	Error      string `json:"error"`
	Message    string `json:"message"`
}

// importLines imports JSON lines from in, chunk by chunk, and writes every
// row that was not imported to report. Chunks are decoded, checked and
// sealed on every core while one goroutine writes them, in input order. It
// stops at the first error of the store or of reading the input (rows
// already written stay written, and are counted).
func (a *App) importLines(ctx context.Context, st tokenstore.Importer, in io.Reader, events bool, report io.Writer) (importSummary, error) {
	start := time.Now()
	var (
		sum      importSummary
		readErr  error
		writeErr error
		enc      = json.NewEncoder(report)
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	produce := func(send func(*importJob) bool) {
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), wireMaxLine)
		n := 0
		var (
			buf   []byte
			ends  []int
			lines []int
		)
		flush := func() bool {
			j := &importJob{lines: make([][]byte, len(ends)), lineNos: lines}
			from := 0
			for k, e := range ends {
				j.lines[k] = buf[from:e:e]
				from = e
			}
			buf, ends, lines = nil, nil, nil
			if send(j) {
				return true
			}
			if err := ctx.Err(); err != nil {
				readErr = fmt.Errorf("interrupted; rows from line %d on were not imported: %w", j.lineNos[0], err)
			}
			return false
		}
		for sc.Scan() {
			n++
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			if buf == nil {
				buf = make([]byte, 0, 512*importLinesChunk)
			}
			buf = append(buf, line...)
			ends, lines = append(ends, len(buf)), append(lines, n)
			if len(ends) == importLinesChunk && !flush() {
				return
			}
		}
		if err := sc.Err(); err != nil {
			readErr = fmt.Errorf("reading line %d: %w", n+1, err)
			return
		}
		if len(ends) > 0 {
			flush()
		}
	}
	var firstFailed int
	storeErr := a.importJobs(ctx, st, events, produce, func(j *importJob) {
		lines := j.lineNos
		for k, r := range j.res {
			sum.rows++
			if r.StatusCode == http.StatusCreated {
				sum.imported++
				continue
			}
			sum.failed++
			if r.StatusCode == http.StatusServiceUnavailable && firstFailed == 0 {
				firstFailed = lines[k]
			}
			if writeErr != nil {
				continue
			}
			if err := enc.Encode(importLine{Line: lines[k], ID: r.ID, StatusCode: r.StatusCode, Error: r.Error, Message: r.Message}); err != nil {
				writeErr = fmt.Errorf("writing the report: %w", err)
				cancel()
			}
		}
	})
	sum.took = time.Since(start)
	switch {
	case writeErr != nil:
		return sum, writeErr
	case storeErr != nil:
		what := "the store failed"
		if errors.Is(storeErr, context.Canceled) {
			what = "interrupted"
		}
		return sum, fmt.Errorf("%s; rows from line %d on were not imported: %w", what, firstFailed, storeErr)
	}
	return sum, readErr
}

// importLinesChunk is how many rows one transaction of linkgate-import
// writes: ten times the API's. With random ids a page of the id, tenant and
// expiry indexes then takes several inserts per commit instead of one, and
// the write-ahead log and checkpoints copy it once for them all; the write
// lock is held for under a second per transaction (on a loaded machine),
// well inside other writers' busy timeout. Twice as many cut little more
// CPU and held the lock for up to 2 s.
const importLinesChunk = 10000

// wireMaxLine is the longest line linkgate-import reads: one account's
// import object, far below it.
const wireMaxLine = 1 << 20
