package wire

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type body struct {
	ID      string         `json:"id"`
	Context map[string]any `json:"context"`
	List    []any          `json:"list"`
}

func decode(t *testing.T, raw string) (*body, error) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(raw))
	r.Header.Set("Content-Type", "application/json")
	var b body
	err := DecodeJSON(r, &b)
	return &b, err
}

func TestDecodeJSONRefusesWhatOneReaderCouldReadTwoWays(t *testing.T) {
	for _, tt := range []struct{ name, raw, want string }{
		{"trailing brace", `{"id":"a"}}`, "stray character"},
		{"trailing bracket", `{"id":"a"}]`, "stray character"},
		{"trailing brace after space", "{\"id\":\"a\"} \n }", "stray character"},
		{"second value", `{"id":"a"} {"id":"b"}`, "more than one JSON value"},
		{"trailing garbage", `{"id":"a"}x`, "stray character"},
		{"duplicate top-level key", `{"id":"a","id":"b"}`, `key "id" appears twice`},
		{"duplicate nested key", `{"context":{"api_key":"a","region":"eu","api_key":"b"}}`, `key "context.api_key" appears twice`},
		{"duplicate key in an object in an array", `{"list":[{"x":1},{"y":1,"y":2}]}`, `key "list[].y" appears twice`},
		{"duplicate key after a nested object", `{"context":{"a":{"b":1},"a":2}}`, `key "context.a" appears twice`},
		{"NUL in a value", `{"id":"a\u0000b"}`, `the value of "id" holds a NUL`},
		{"NUL in a nested value", `{"context":{"k":"x\u0000"}}`, `the value of "context.k" holds a NUL`},
		{"NUL in a key", `{"context":{"k\u0000":"x"}}`, `a key in "context" holds a NUL`},
		{"NUL in an array", `{"list":["\u0000"]}`, "holds a NUL"},
		{"invalid UTF-8", "{\"id\":\"a\xff\"}", "not valid UTF-8"},
		{"invalid UTF-8 in a key", "{\"context\":{\"\xc3\":1}}", "not valid UTF-8"},
		{"unknown field", `{"idd":"a"}`, `unknown field "idd"`},
		{"wrong type", `{"id":5}`, `field "id" must be string`},
		{"truncated", `{"id":"a"`, "unexpected end of input"},
		{"empty", "  ", "the body is empty"},
		{"not JSON", `id=a`, "syntax error"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decode(t, tt.raw)
			var e *Error
			if !errors.As(err, &e) || e.Status != http.StatusBadRequest || !strings.Contains(e.Message, tt.want) {
				t.Fatalf("DecodeJSON(%q) = %v; want a 400 that says %q", tt.raw, err, tt.want)
			}
		})
	}
}

func TestDecodeJSONAcceptsWellFormedBodies(t *testing.T) {
	for _, raw := range []string{
		`{"id":"a"}`,
		" \n{\"id\":\"a\"}\n ",
		`{"id":"a","context":{"id":"same name, other object","n":{"id":1}},"list":[{"id":1},{"id":2}]}`,
		`{"context":{"emoji":"☃ \ud83d\ude00","escaped":"\\u0000 is text here"}}`,
		`{"list":[[],{},[{}],"a","a"]}`,
	} {
		b, err := decode(t, raw)
		if err != nil {
			t.Fatalf("DecodeJSON(%q): %v", raw, err)
		}
		if strings.Contains(raw, `"id":"a"`) && b.ID != "a" {
			t.Fatalf("DecodeJSON(%q) read id %q", raw, b.ID)
		}
	}
}

func TestDecodeJSONLimits(t *testing.T) {
	_, err := decode(t, `{"id":"`+strings.Repeat("a", MaxBody)+`"}`)
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversize body: %v; want 413", err)
	}
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"id":"a"}`))
	r.Header.Set("Content-Type", "text/plain")
	if err := DecodeJSON(r, new(body)); !errors.As(err, &e) || e.Status != http.StatusUnsupportedMediaType {
		t.Fatalf("text/plain body: %v; want 415", err)
	}
}

func TestCheckRequestText(t *testing.T) {
	for _, tt := range []struct {
		target string
		ok     bool
	}{
		{"/integrated-account/3f1c?tenant_id=acme&limit=10", true},
		{"/integrated-account/caf%C3%A9?tenant_id=%E2%98%83", true},
		{"/integrated-account/%00", false},
		{"/integrated-account/a%00b", false},
		{"/integrated-account/%FF", false},
		{"/integrated-account/%C3%28", false},
		{"/integrated-account?tenant_id=%00", false},
		{"/integrated-account?tenant_id=%FE", false},
		{"/integrated-account?%00=x", false},
		{"/integrated-account?tenant_id=%zz", false},
	} {
		r := httptest.NewRequest(http.MethodGet, tt.target, nil)
		err := CheckRequestText(r)
		var e *Error
		if tt.ok != (err == nil) || err != nil && (!errors.As(err, &e) || e.Status != http.StatusBadRequest) {
			t.Errorf("CheckRequestText(%s) = %v; want ok %t (or a 400)", tt.target, err, tt.ok)
		}
		if err != nil && strings.Contains(err.Error(), "tenant_id=") {
			t.Errorf("the error quotes the query: %v", err)
		}
	}
}
