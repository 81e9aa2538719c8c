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
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
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
// type if one is given, valid UTF-8, no unknown fields, no key twice in one
// object, no NUL character in any string, nothing after the value. Its
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
	return DecodeJSONValue(body, dst, "body")
}

// DecodeJSONValue decodes the one JSON value of b into dst with the checks
// of DecodeJSON (valid UTF-8, no unknown fields, nothing after the value,
// keys and strings every store can hold); what names b in the errors ("body",
// "row"). A bulk import decodes each of its rows with it.
func DecodeJSONValue(b []byte, dst any, what string) error {
	// encoding/json would quietly turn invalid UTF-8 into U+FFFD.
	if !utf8.Valid(b) {
		return Errorf(http.StatusBadRequest, "malformed JSON %s: it is not valid UTF-8", what)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return Errorf(http.StatusBadRequest, "malformed JSON %s: %s", what, jsonProblem(err))
	}
	// Decoder.More is false before a stray '}' or ']', so look at the rest.
	if len(bytes.TrimSpace(b[dec.InputOffset():])) != 0 {
		return Errorf(http.StatusBadRequest, "malformed JSON %s: more than one JSON value, or a stray character after it", what)
	}
	return checkKeysAndStrings(b)
}

// checkKeysAndStrings walks a well-formed JSON value and refuses a key that
// appears twice in one object (encoding/json keeps the last, which lets two
// readers of the same body disagree) and a string holding NUL, which no
// store keeps as it was sent.
func checkKeysAndStrings(body []byte) error {
	type frame struct {
		keys      map[string]struct{} // nil in an array
		expectKey bool
		path      string
	}
	var stack []*frame
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var key string
	// valueDone marks the end of a value in the enclosing object.
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			stack[n-1].expectKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return Errorf(http.StatusBadRequest, "malformed JSON body: %s", jsonProblem(err))
		}
		var top *frame
		if n := len(stack); n > 0 {
			top = stack[n-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				p := ""
				if top != nil {
					p = top.path
					if top.keys != nil {
						p = joinPath(p, key)
					} else {
						p += "[]"
					}
				}
				f := &frame{path: p}
				if t == '{' {
					f.keys, f.expectKey = map[string]struct{}{}, true
				}
				stack = append(stack, f)
				continue
			default:
				stack = stack[:len(stack)-1]
				valueDone()
				continue
			}
		case string:
			if strings.ContainsRune(t, 0) {
				where := "a string"
				if top != nil && top.keys != nil && !top.expectKey {
					where = "the value of " + strconv.Quote(joinPath(top.path, key))
				} else if top != nil && top.keys != nil {
					where = "a key in " + strconv.Quote(top.path)
				}
				return Errorf(http.StatusBadRequest, "malformed JSON body: %s holds a NUL character (\\u0000)", where)
			}
			if top != nil && top.keys != nil && top.expectKey {
				if _, dup := top.keys[t]; dup {
					return Errorf(http.StatusBadRequest, "malformed JSON body: key %s appears twice", strconv.Quote(joinPath(top.path, t)))
				}
				top.keys[t] = struct{}{}
				top.expectKey, key = false, t
				continue
			}
		}
		valueDone()
	}
}

// joinPath names key inside the object at path, as the error messages show it.
func joinPath(path, key string) string {
	if len(key) > 64 {
		key = key[:64] + "…"
	}
	if path == "" {
		return key
	}
	return path + "." + key
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

// CheckRequestText refuses a request whose path or query is not text every
// store can hold: invalid UTF-8 or a NUL (both arrive percent-encoded, as
// %FF or %00), or a query string that does not decode. Ids, filters and
// cursors come from there, and PostgreSQL refuses such text where SQLite
// would merely find nothing: one answer, a 400, for both.
func CheckRequestText(r *http.Request) error {
	if !isText(r.URL.Path) {
		return Errorf(http.StatusBadRequest, "the path is not valid text: it holds invalid UTF-8 or a NUL character")
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return Errorf(http.StatusBadRequest, "the query string is malformed: %s", queryProblem(err))
	}
	for k, vs := range q {
		if !isText(k) {
			return Errorf(http.StatusBadRequest, "a query parameter name is not valid text: it holds invalid UTF-8 or a NUL character")
		}
		for _, v := range vs {
			if !isText(v) {
				return Errorf(http.StatusBadRequest, "query parameter %s is not valid text: it holds invalid UTF-8 or a NUL character", strconv.Quote(k))
			}
		}
	}
	return nil
}

func isText(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }

// queryProblem describes a query parsing error without quoting the query,
// which may hold a secret.
func queryProblem(err error) string {
	var esc url.EscapeError
	if errors.As(err, &esc) {
		return "a bad percent-escape"
	}
	return "it cannot be parsed"
}
