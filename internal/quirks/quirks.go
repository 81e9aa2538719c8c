// Package quirks adapts token requests and answers of providers that stray
// from RFC 6749 to what golang.org/x/oauth2 reads: a JSON request body
// instead of a form, token fields nested in the answer (Slack's
// authed_user), a missing expires_in. It is an http.RoundTripper put under
// the client x/oauth2 uses, so the exchange and the refresh share it, and it
// keeps the answer's JSON so that connection fields can be read from it.
package quirks

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/linkgate/linkgate/account"
)

// maxAnswer bounds a token answer read into memory.
const maxAnswer = 1 << 20

// Transport sends one token request of an integration. Use a new one per
// call: it keeps that call's answer.
type Transport struct {
	In   *account.Integration
	Base http.RoundTripper

	mu         sync.Mutex
	doc        any
	hadRefresh bool
	refresh    bool
}

// New returns a Transport for in over base (http.DefaultTransport if nil).
func New(in *account.Integration, base http.RoundTripper) *Transport {
	if base == nil {
		base = http.DefaultTransport
	}
	return &Transport{In: in, Base: base}
}

// Answer returns the decoded JSON of the last successful answer (nil when
// it was not JSON), and whether it carried a refresh token.
func (t *Transport) Answer() (any, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.doc, t.hadRefresh
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	refresh := grantType(req) == "refresh_token"
	if t.In.TokenBody == "json" && req.Body != nil {
		var err error
		if req, err = jsonBody(req); err != nil {
			return nil, err
		}
	}
	res, err := t.Base.RoundTrip(req)
	if err != nil || res.StatusCode < 200 || res.StatusCode > 299 {
		return res, err
	}
	ct, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	body, err := io.ReadAll(io.LimitReader(res.Body, maxAnswer))
	res.Body.Close()
	if err != nil {
		return nil, err
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	var doc any
	if ct == "application/x-www-form-urlencoded" || ct == "text/plain" {
		if v, err := url.ParseQuery(string(body)); err == nil && ct == "application/x-www-form-urlencoded" {
			m := map[string]any{}
			for k := range v {
				m[k] = v.Get(k)
			}
			doc = m
		}
	}
	if doc == nil {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if dec.Decode(&doc) != nil {
			doc = nil
		}
	}
	flat, hadRefresh := t.flatten(doc, refresh)
	t.mu.Lock()
	t.doc, t.hadRefresh = doc, hadRefresh
	t.mu.Unlock()
	if flat != nil {
		b, err := json.Marshal(flat)
		if err != nil {
			return nil, err
		}
		res.Body = io.NopCloser(bytes.NewReader(b))
		res.ContentLength = int64(len(b))
		res.Header = res.Header.Clone()
		res.Header.Set("Content-Type", "application/json")
		res.Header.Del("Content-Length")
	}
	return res, nil
}

// flatten returns the answer with the token fields at the RFC 6749 names,
// or nil when the answer needs no change. It also reports whether the
// answer carried a refresh token. A refresh answer may carry a field at
// the top level where the exchange nested it: Slack nests a user token
// under authed_user in the exchange only, since a refresh answers for the
// one token it refreshed.
func (t *Transport) flatten(doc any, refresh bool) (map[string]any, bool) {
	in := t.In
	top, _ := doc.(map[string]any)
	lookup := func(name string) (string, bool) {
		if v, ok := tokenField(doc, name, in.TokenFieldPath(name)); ok {
			return v, true
		}
		if refresh {
			return tokenField(doc, name, name)
		}
		return "", false
	}
	rt, _ := lookup("refresh_token")
	hadRefresh := rt != ""
	if top == nil || (len(in.TokenFields) == 0 && in.DefaultExpiresIn == 0) {
		return nil, hadRefresh
	}
	out := make(map[string]any, len(top)+5)
	for k, v := range top {
		out[k] = v
	}
	for _, name := range []string{"access_token", "refresh_token", "token_type", "scope", "expires_in"} {
		if in.TokenFields[name] == "" {
			continue
		}
		v, ok := lookup(name)
		delete(out, name)
		if ok {
			out[name] = v
		}
	}
	// x/oauth2 reads expires_in as a whole number only; anything else is
	// no lifetime, and the default applies.
	switch v := out["expires_in"].(type) {
	case string:
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			out["expires_in"] = n
		} else {
			delete(out, "expires_in")
		}
	case json.Number:
		if _, err := v.Int64(); err != nil {
			delete(out, "expires_in")
		}
	default:
		// null, a bool, an object or a list is no lifetime.
		delete(out, "expires_in")
	}
	if _, ok := out["expires_in"]; !ok && in.DefaultExpiresIn > 0 {
		out["expires_in"] = int64(time.Duration(in.DefaultExpiresIn) / time.Second)
	}
	if _, ok := out["token_type"]; !ok {
		out["token_type"] = "Bearer"
	}
	return out, hadRefresh
}

// tokenField reads the token field name at path: a non-empty string, or
// for expires_in a number too. A token that is a number, a boolean or an
// object is no token.
func tokenField(doc any, name, path string) (string, bool) {
	v, ok := account.WalkPath(doc, path)
	if !ok {
		return "", false
	}
	switch t := v.(type) {
	case string:
		return t, t != ""
	case json.Number:
		return t.String(), name == "expires_in"
	}
	return "", false
}

// grantType reads the grant_type of a form-encoded token request without
// consuming its body.
func grantType(req *http.Request) string {
	if req.GetBody == nil {
		return ""
	}
	body, err := req.GetBody()
	if err != nil {
		return ""
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, maxAnswer))
	if err != nil {
		return ""
	}
	v, err := url.ParseQuery(string(b))
	if err != nil {
		return ""
	}
	return v.Get("grant_type")
}

// jsonBody re-encodes a form-encoded token request as a JSON object.
func jsonBody(req *http.Request) (*http.Request, error) {
	b, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	v, err := url.ParseQuery(string(b))
	if err != nil {
		// ParseQuery's error quotes the body, which holds secrets.
		return nil, errors.New("the token request body is not form-encoded")
	}
	m := make(map[string]string, len(v))
	for k := range v {
		m[k] = v.Get(k)
	}
	j, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Body = io.NopCloser(bytes.NewReader(j))
	r.ContentLength = int64(len(j))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(j)), nil }
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json")
	return r, nil
}

// Field reads a connection field of source token_response from an answer.
func Field(doc any, path string) (string, bool) {
	if doc == nil {
		return "", false
	}
	return account.LookupPath(doc, strings.TrimSpace(path))
}
