// Package wire writes and reads linkgate's JSON wire format: Truto-compatible
// error bodies, JSON responses and strictly decoded request bodies.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// MaxBody is the largest request body the API reads.
const MaxBody = 1 << 20

// ErrorBody is the JSON of every error answer.
type ErrorBody struct {
	StatusCode int    `json:"statusCode"`
	Error      string `json:"error"`
	Message    string `json:"message"`
	// RemoteError marks a failure that came from the upstream API.
	RemoteError bool `json:"linkgate_is_remote_error,omitempty"`
	// IntegratedAccountID names the account the error is about, when any.
	IntegratedAccountID string `json:"integrated_account_id,omitempty"`
}

// Error is an error with the HTTP status it should be answered with. Its
// message is shown to the caller, so it must hold no secret.
type Error struct {
	Status    int
	Message   string
	AccountID string
	Remote    bool
}

func (e *Error) Error() string { return e.Message }

// Errorf builds an *Error.
func Errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Message: fmt.Sprintf(format, args...)}
}

// WriteJSON answers with v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "encoding the response failed")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// WriteError answers with the JSON error body.
func WriteError(w http.ResponseWriter, status int, message string) {
	WriteErr(w, &Error{Status: status, Message: message})
}

// WriteErr answers with err: an *Error keeps its status and message; any
// other error becomes a 500 whose message says nothing of its cause, since
// a cause may hold a secret.
func WriteErr(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Status: http.StatusInternalServerError, Message: "internal error"}
	}
	body := ErrorBody{
		StatusCode:          e.Status,
		Error:               http.StatusText(e.Status),
		Message:             e.Message,
		RemoteError:         e.Remote,
		IntegratedAccountID: e.AccountID,
	}
	b, _ := json.Marshal(body)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Length")
	w.WriteHeader(e.Status)
	_, _ = w.Write(append(b, '\n'))
}

// DecodeJSON reads r's body into dst: at most MaxBody bytes, a JSON content
// type if one is given, no unknown fields, nothing after the value. Its
// errors are *Error with status 400, 413 or 415 and say what was wrong.
func DecodeJSON(r *http.Request, dst any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return Errorf(http.StatusUnsupportedMediaType, "the body must be JSON (Content-Type: application/json), not %q", ct)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		return Errorf(http.StatusBadRequest, "reading the body failed")
	}
	if len(body) > MaxBody {
		return Errorf(http.StatusRequestEntityTooLarge, "the body is larger than %d bytes", MaxBody)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return Errorf(http.StatusBadRequest, "the body is empty: a JSON object is required")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return Errorf(http.StatusBadRequest, "malformed JSON body: %s", jsonProblem(err))
	}
	if dec.More() {
		return Errorf(http.StatusBadRequest, "malformed JSON body: more than one JSON value")
	}
	return nil
}

// jsonProblem describes a decoding error without quoting the input, which
// may hold a secret.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q must be %s, not %s", typ.Field, typ.Type, typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "unexpected end of input"
	}
	return "not a valid JSON value of the expected shape"
}

// DescribeJSONError says what is wrong with a JSON document without quoting
// it (it may hold a secret).
func DescribeJSONError(err error) string { return jsonProblem(err) }
