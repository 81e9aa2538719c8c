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
	"strings"
	"time"

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
// /integrated-account does.
func decodeImportRow(raw []byte) bulkRow {
	var row bulkRow
	row.err = wire.DecodeJSONValue(raw, &row.req, "row")
	return row
}

// importRows checks rows as a single import would and writes the valid ones
// in transactions of importChunk rows. first is the index of rows[0] in the
// whole import. The error is the store's: the rows of the failing chunk and
// after it are not written (their results say 503), those before it are.
func (a *App) importRows(ctx context.Context, st tokenstore.Importer, rows []bulkRow, first int, events bool) ([]bulkResult, error) {
	res := make([]bulkResult, len(rows))
	fail := func(i, status int, msg string) {
		res[i].StatusCode, res[i].Error, res[i].Message = status, http.StatusText(status), msg
	}
	batch := make([]tokenstore.Import, 0, min(len(rows), importChunk))
	at := make([]int, 0, cap(batch))
	var storeErr error
	flush := func() {
		if len(batch) == 0 || storeErr != nil {
			return
		}
		errs, err := st.ImportAccounts(ctx, batch)
		for k, i := range at {
			switch {
			case err != nil:
				storeErr = err
			case errs[k] == nil:
				res[i].StatusCode = http.StatusCreated
			case errors.Is(errs[k], tokenstore.ErrExists):
				fail(i, http.StatusConflict, fmt.Sprintf("integrated account %s already exists", res[i].ID))
			default:
				fail(i, http.StatusInternalServerError, "this row could not be stored")
			}
		}
		batch, at = batch[:0], at[:0]
	}
	now := time.Now().UTC()
	for i, row := range rows {
		res[i].Index = first + i
		if storeErr != nil {
			fail(i, http.StatusServiceUnavailable, "the store is unavailable: this row was not written; import it again")
			continue
		}
		err := row.err
		if err == nil {
			var im tokenstore.Import
			if im, err = a.importedAccount(row.req, now, events); err == nil {
				res[i].ID = im.Account.ID
				batch, at = append(batch, im), append(at, i)
				if len(batch) == importChunk {
					flush()
				}
				continue
			}
		}
		var we *wire.Error
		if !errors.As(err, &we) {
			we = wire.Errorf(http.StatusBadRequest, "invalid row")
		}
		fail(i, we.Status, we.Message)
	}
	flush()
	if storeErr != nil {
		for i := range res {
			if res[i].StatusCode == 0 {
				fail(i, http.StatusServiceUnavailable, "the store is unavailable: this row was not written; import it again")
			}
		}
	}
	return res, storeErr
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
