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
	goruntime "runtime"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/tokenstore"
)

// Limits of one POST /integrated-account/bulk. Larger imports are sent in
// several requests, or through caddy linkgate-import.
const (
	maxBulkRows = 10_000
	maxBulkBody = 32 << 20
	// importChunk is how many rows one store transaction writes.
	importChunk = 1000
	// maxBulkDelete is how many accounts one POST
	// /integrated-account/bulk-delete deletes (each in a transaction of
	// its own, with its event): a few seconds of writes at most. More
	// matches are deleted by sending the request again; has_more says so.
	maxBulkDelete = 1000
)

// errBulkBusy answers a bulk import or delete while another runs.
var errBulkBusy = &wire.Error{Status: http.StatusTooManyRequests,
	Message: "another bulk import or bulk delete is running on this gateway: send this one when it has finished (one runs at a time)"}

// bulkTurn takes the store's one turn for a bulk operation, or answers 429
// with a Retry-After and reports false.
func (h *API) bulkTurn(w http.ResponseWriter) (release func(), ok bool) {
	hold := h.app.storeHold
	if hold == nil {
		return func() {}, true
	}
	if !hold.bulk.TryLock() {
		w.Header().Set("Retry-After", "5")
		wire.WriteErr(w, errBulkBusy)
		return nil, false
	}
	return hold.bulk.Unlock, true
}

// bulkResult is the outcome of one row of a bulk import. Index counts rows
// from 0 (the JSON array's index, or the line's number minus one).
type bulkResult struct {
	Index      int    `json:"index"`
	ID         string `json:"id,omitempty"`
	StatusCode int    `json:"statusCode"`
	Error      string `json:"error,omitempty"`
	Message    string `json:"message,omitempty"`
}

// bulkResponse is the answer of POST /integrated-account/bulk.
type bulkResponse struct {
	Imported int          `json:"imported"`
	Failed   int          `json:"failed"`
	Result   []bulkResult `json:"result"`
}

// bulkRow is one row as read: its request, or why it could not be read.
type bulkRow struct {
	req importRequest
	err error
}

// bulkImport is POST /integrated-account/bulk: many imports of the shape
// POST /integrated-account takes, as a JSON array or as JSON lines. Each row
// is atomic and reported on its own; ?events=none writes no webhook events
// (for a migration whose accounts the application already knows).
func (h *API) bulkImport(w http.ResponseWriter, r *http.Request) {
	release, ok := h.bulkTurn(w)
	if !ok {
		return
	}
	defer release()
	events, err := importEvents(r.URL.Query().Get("events"))
	if err != nil {
		wire.WriteErr(w, err)
		return
	}
	rows, err := readBulk(r)
	if err != nil {
		wire.WriteErr(w, err)
		return
	}
	rt, ok := h.rt(w)
	if !ok {
		return
	}
	// The API's own reading of each row: environment_integration_id, and
	// the tenant a restricted token may create accounts for.
	for i := range rows {
		if rows[i].err == nil {
			rows[i].err = resolveImport(&rows[i].req, rt.env, callerOf(r.Context()))
		}
	}
	res, err := h.app.importRows(r.Context(), rt.store, rows, 0, events)
	if err != nil {
		// The rows written before the store failed stay written; the
		// answer says which.
		h.logger.Error("bulk import: the store failed", zap.Error(err))
	}
	if events {
		rt.dispatcher.Notify()
	}
	out := bulkResponse{Result: res}
	for _, x := range res {
		if x.StatusCode == http.StatusCreated {
			out.Imported++
		} else {
			out.Failed++
		}
	}
	wire.WriteJSON(w, http.StatusOK, out)
}

// importEvents reads the events option: "" or "all" writes the events a
// single import writes (created, active); "none" writes none.
func importEvents(v string) (bool, error) {
	switch v {
	case "", "all":
		return true, nil
	case "none":
		return false, nil
	}
	return false, wire.Errorf(http.StatusBadRequest, "events must be all or none")
}

// readBulk reads a bulk body: a JSON array of import objects, or JSON lines
// (one object a line, blank lines ignored). The body as a whole must be
// well-formed for an array; with JSON lines a malformed line is that row's
// error.
func readBulk(r *http.Request) ([]bulkRow, error) {
	if ct := strings.ToLower(r.Header.Get("Content-Type")); ct != "" && !strings.HasPrefix(ct, "application/json") &&
		!strings.HasPrefix(ct, "application/x-ndjson") && !strings.HasPrefix(ct, "application/jsonl") {
		return nil, wire.Errorf(http.StatusUnsupportedMediaType,
			"the body must be a JSON array (application/json) or JSON lines (application/x-ndjson), not %q", ct)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBulkBody+1))
	if err != nil {
		return nil, wire.Errorf(http.StatusBadRequest, "reading the body failed")
	}
	if len(body) > maxBulkBody {
		return nil, wire.Errorf(http.StatusRequestEntityTooLarge, "the body is larger than %d bytes: send the rows in several requests", maxBulkBody)
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, wire.Errorf(http.StatusBadRequest, "the body is empty: a JSON array or JSON lines of accounts is required")
	}
	var rows []bulkRow
	if trimmed[0] == '[' {
		var raws []json.RawMessage
		if err := json.Unmarshal(trimmed, &raws); err != nil {
			return nil, wire.Errorf(http.StatusBadRequest, "malformed JSON array: %s", wire.DescribeJSONError(err))
		}
		if len(raws) > maxBulkRows {
			return nil, wire.Errorf(http.StatusRequestEntityTooLarge, "%d rows: at most %d a request", len(raws), maxBulkRows)
		}
		rows = make([]bulkRow, len(raws))
		for i, raw := range raws {
			rows[i] = decodeImportRow(raw)
		}
		return rows, nil
	}
	err = eachLine(bytes.NewReader(trimmed), func(line []byte) error {
		if len(rows) == maxBulkRows {
			return wire.Errorf(http.StatusRequestEntityTooLarge, "more than %d rows: at most %d a request", maxBulkRows, maxBulkRows)
		}
		rows = append(rows, decodeImportRow(line))
		return nil
	})
	return rows, err
}

// eachLine calls fn with every non-blank line of r (JSON lines), up to
// maxBulkBody bytes a line.
func eachLine(r io.Reader, fn func(line []byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxBulkBody)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return wire.Errorf(http.StatusBadRequest, "reading JSON lines: %s", err)
	}
	return nil
}

// decodeImportRow decodes one import object strictly, as POST
// /integrated-account does (wire.DecodeJSONValue). A row that passes a
// quick walk of its bytes is decoded once; any other row goes through
// wire.DecodeJSONValue, for its verdict and its exact message.
func decodeImportRow(raw []byte) bulkRow {
	var row bulkRow
	if utf8.Valid(raw) && plainJSON(raw) {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if dec.Decode(&row.req) == nil && len(bytes.TrimSpace(raw[dec.InputOffset():])) == 0 {
			return row
		}
		row.req = importRequest{}
	}
	row.err = wire.DecodeJSONValue(raw, &row.req, "row")
	return row
}

// plainJSON reports whether the JSON text b, if it is well-formed, passes
// wire.DecodeJSONValue's checks of keys and strings: no object holds a key
// twice and no string holds NUL. It is the fast half of a bulk import's
// strict decoding (walking the text once, allocating nothing, where the
// full check decodes every token), and it is sure only of plain text: a key
// holding an escape (which could spell another key), an object of more than
// 64 keys or nesting deeper than 32 make it answer false, and so does
// malformed text; the caller then runs the full check.
func plainJSON(b []byte) bool {
	const maxDepth, maxKeys = 32, 64
	var (
		keyBuf   [maxKeys][]byte
		keys     = keyBuf[:0] // the keys of the open objects, outermost first
		stackBuf [maxDepth]int
		// starts holds, for each open container, the index in keys of its
		// first key, or -1 for an array.
		starts = stackBuf[:0]
		prev   byte // the last byte outside strings that is not blank
	)
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '{', '[':
			if len(starts) == maxDepth {
				return false
			}
			if c == '{' {
				starts = append(starts, len(keys))
			} else {
				starts = append(starts, -1)
			}
			prev = c
		case '}', ']':
			if len(starts) == 0 {
				return false
			}
			if top := starts[len(starts)-1]; top >= 0 {
				keys = keys[:top]
			}
			starts = starts[:len(starts)-1]
			prev = c
		case '"':
			j := i + 1
			escaped := false
			for ; j < len(b) && b[j] != '"'; j++ {
				if b[j] != '\\' {
					continue
				}
				escaped = true
				if j+5 < len(b) && b[j+1] == 'u' && string(b[j+2:j+6]) == "0000" {
					return false // NUL
				}
				j++ // the escaped byte
			}
			if j >= len(b) {
				return false
			}
			isKey := len(starts) > 0 && starts[len(starts)-1] >= 0 && (prev == '{' || prev == ',')
			if isKey {
				if escaped || len(keys) == maxKeys {
					return false
				}
				k := b[i+1 : j]
				for _, seen := range keys[starts[len(starts)-1]:] {
					if bytes.Equal(seen, k) {
						return false // twice in one object
					}
				}
				keys = append(keys, k)
			}
			prev = '"'
			i = j
		case ' ', '\t', '\n', '\r':
		default:
			prev = c
		}
	}
	return len(starts) == 0
}

// importRows checks rows as a single import would and writes the valid ones
// in transactions of importChunk rows. first is the index of rows[0] in the
// whole import. The error is the store's: the rows of the failing chunk and
// after it are not written (their results say 503), those before it are.
func (a *App) importRows(ctx context.Context, st tokenstore.Importer, rows []bulkRow, first int, events bool) ([]bulkResult, error) {
	res := make([]bulkResult, len(rows))
	err := a.importJobs(ctx, st, events, func(send func(*importJob) bool) {
		for at := 0; at < len(rows); at += importChunk {
			end := min(at+importChunk, len(rows))
			if !send(&importJob{rows: rows[at:end], first: first + at, res: res[at:end]}) {
				return
			}
		}
	}, func(*importJob) {})
	return res, err
}

// importJob is one transaction's worth of a bulk import: its rows as read
// (or its lines, still to be decoded), then checked and sealed, then
// written.
type importJob struct {
	rows    []bulkRow
	lines   [][]byte // JSON lines to decode into rows, when rows is nil
	lineNos []int    // the input's line number of each row (linkgate-import)
	first   int      // the index of the job's first row in the whole import
	res     []bulkResult

	at     []int // the index in res of each row of sealed
	sealed *tokenstore.SealedImport
	ready  chan struct{}
}

// importJobs runs a bulk import as a pipeline: produce hands over jobs in
// input order; they are decoded, checked and sealed on every core at once,
// and written one after the other, in that order, by the calling goroutine
// (the store has one writer, which should do nothing but write). done sees
// every job once its results are final. After a store error no further job
// is written (their rows say 503) and produce is stopped; the error is
// returned.
func (a *App) importJobs(ctx context.Context, st tokenstore.Importer, events bool,
	produce func(send func(*importJob) bool), done func(*importJob)) error {
	stop, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := goruntime.GOMAXPROCS(0)
	todo := make(chan *importJob)
	ordered := make(chan *importJob, workers+1)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range todo {
				a.prepareJob(j, st, events)
				close(j.ready)
			}
		}()
	}
	go func() {
		defer close(ordered)
		defer close(todo)
		produce(func(j *importJob) bool {
			j.ready = make(chan struct{})
			// A job goes to the workers before it is queued for the
			// writer, so every queued job becomes ready.
			select {
			case todo <- j:
			case <-stop.Done():
				return false
			}
			select {
			case ordered <- j:
				return true
			case <-stop.Done():
				return false
			}
		})
	}()
	var storeErr error
	for j := range ordered {
		<-j.ready
		if storeErr == nil {
			if storeErr = writeJob(ctx, st, j); storeErr != nil {
				cancel()
			}
		} else {
			j.unwritten()
		}
		done(j)
	}
	wg.Wait()
	return storeErr
}

// prepareJob decodes j's lines, checks its rows as a single import would
// and seals the valid ones.
func (a *App) prepareJob(j *importJob, st tokenstore.Importer, events bool) {
	if j.rows == nil {
		j.rows = make([]bulkRow, len(j.lines))
		for i, l := range j.lines {
			j.rows[i] = decodeImportRow(l)
		}
		j.lines = nil
	}
	if j.res == nil {
		j.res = make([]bulkResult, len(j.rows))
	}
	now := time.Now().UTC()
	batch := make([]tokenstore.Import, 0, len(j.rows))
	j.at = make([]int, 0, len(j.rows))
	for i, row := range j.rows {
		j.res[i].Index = j.first + i
		err := row.err
		if err == nil {
			var im tokenstore.Import
			if im, err = a.importedAccount(row.req, now, events); err == nil {
				j.res[i].ID = im.Account.ID
				batch, j.at = append(batch, im), append(j.at, i)
				continue
			}
		}
		var we *wire.Error
		if !errors.As(err, &we) {
			we = wire.Errorf(http.StatusBadRequest, "invalid row")
		}
		j.res[i].fail(we.Status, we.Message)
	}
	j.rows = nil
	if len(batch) > 0 {
		j.sealed = st.SealImport(batch)
	}
}

// writeJob writes j's sealed rows in one transaction and sets their
// results. The error is the store's: then none of them was written.
func writeJob(ctx context.Context, st tokenstore.Importer, j *importJob) error {
	if j.sealed == nil {
		return nil
	}
	errs, err := st.ImportSealed(ctx, j.sealed)
	if err != nil {
		j.unwritten()
		return err
	}
	for k, i := range j.at {
		r := &j.res[i]
		switch {
		case errs[k] == nil:
			r.StatusCode = http.StatusCreated
		case errors.Is(errs[k], tokenstore.ErrExists):
			r.fail(http.StatusConflict, fmt.Sprintf("integrated account %s already exists", r.ID))
		default:
			r.fail(http.StatusInternalServerError, "this row could not be stored")
		}
	}
	return nil
}

// unwritten marks the rows of j that had no result yet as not written
// because the store failed.
func (j *importJob) unwritten() {
	for i := range j.res {
		if j.res[i].StatusCode == 0 {
			j.res[i].fail(http.StatusServiceUnavailable, "the store is unavailable: this row was not written; import it again")
		}
	}
}

func (r *bulkResult) fail(status int, msg string) {
	r.StatusCode, r.Error, r.Message = status, http.StatusText(status), msg
}

// importedAccount checks one import request and builds its store row, with
// the events a single import writes when events is set.
func (a *App) importedAccount(req importRequest, now time.Time, events bool) (tokenstore.Import, error) {
	acc, c, err := a.newImport(req, now)
	if err != nil {
		return tokenstore.Import{}, err
	}
	im := tokenstore.Import{Account: acc}
	if events {
		im.Events = tokenstore.EventsFor(c, acc, now)
	}
	return im, nil
}
