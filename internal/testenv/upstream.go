package testenv

import (
	"bytes"
	"crypto/subtle"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// UpstreamOptions says which credential an Upstream accepts. Every
// configured credential is accepted; with none configured the API is open.
type UpstreamOptions struct {
	// Auth, when set, makes the upstream accept a bearer access token the
	// authorization server says is valid (revoked or expired ones get 401).
	Auth *AuthServer
	// TokenHeader, with Auth, is the header that carries the access token
	// after TokenPrefix, for APIs that do not take "Authorization: Bearer"
	// (Shopify's X-Shopify-Access-Token, Zoho's "Zoho-oauthtoken "); a
	// bearer token is then refused.
	TokenHeader, TokenPrefix string
	// RequireHeaders are headers every request must carry with exactly
	// these values (Notion-Version); without them the upstream answers 400.
	RequireHeaders map[string]string
	// APIKey, when set, is accepted in APIKeyHeader or the APIKeyQuery
	// query parameter; with neither named, in the X-API-Key header.
	APIKey string
	// APIKeyHeader is the header that carries APIKey.
	APIKeyHeader string
	// APIKeyQuery is the query parameter that carries APIKey.
	APIKeyQuery string
	// Username and Password, when Username is set, are accepted as HTTP
	// basic credentials.
	Username, Password string
	// Discard counts requests without keeping them, so load tests and
	// benchmarks do not grow memory; Requests and Last then see nothing.
	Discard bool
}

// RecordedRequest is one request as the upstream received it.
type RecordedRequest struct {
	// Method is the HTTP method.
	Method string
	// Host is the Host header the request named.
	Host string
	// Path is the URL path, unescaped.
	Path string
	// RawPath is the URL path as sent, escapes kept.
	RawPath string
	// RawQuery is the query string as sent, without "?".
	RawQuery string
	// Header holds every request header, credentials included.
	Header http.Header
	// Body is the whole request body.
	Body []byte
	// Trailer holds the trailer fields sent after the body.
	Trailer http.Header
	// Time is when the request arrived.
	Time time.Time
}

// Upstream is a third-party API stand-in that checks the credential on every
// request and records what it received.
//
// Routes, once the credential is accepted: GET /me answers {"sub": subject};
// /echo/... answers the request as JSON (method, path, query, headers,
// body); /stream/sse sends text/event-stream events with pauses;
// /stream/chunked sends a chunked body in flushed parts; /status/{code}
// answers that status; anything else answers 200 {"ok":true,"path":...}.
// The stream routes take ?n= (parts, default 3) and ?interval= (a Go
// duration between parts, default 50ms).
type Upstream struct {
	srv  *httptest.Server
	opts UpstreamOptions
	done chan struct{} // closed at cleanup so streams end and Close need not wait

	mu        sync.Mutex
	requests  []RecordedRequest
	count     int
	force     int
	forceLeft int
}

// NewUpstream starts a plain-HTTP upstream on 127.0.0.1 and stops it when
// the test ends.
func NewUpstream(t testing.TB, opts UpstreamOptions) *Upstream {
	t.Helper()
	u := &Upstream{opts: opts, done: make(chan struct{})}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.close)
	return u
}

// NewTLSUpstream starts an HTTPS upstream with a self-signed certificate for
// 127.0.0.1; Client and CertPool give what a caller needs to trust it.
func NewTLSUpstream(t testing.TB, opts UpstreamOptions) *Upstream {
	t.Helper()
	u := &Upstream{opts: opts, done: make(chan struct{})}
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(u.serve))
	u.srv.Config.ErrorLog = log.New(handshakeNoiseFilter{os.Stderr}, "", log.LstdFlags)
	u.srv.StartTLS()
	t.Cleanup(u.close)
	return u
}

func (u *Upstream) close() {
	close(u.done)
	u.srv.Close()
}

// handshakeNoiseFilter drops the server's "TLS handshake error" lines:
// tests provoke them on purpose (untrusting clients, connections cut at
// cleanup) and they bury the output that matters.
type handshakeNoiseFilter struct{ w io.Writer }

func (f handshakeNoiseFilter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("TLS handshake error")) {
		return len(p), nil
	}
	return f.w.Write(p)
}

// URL is the upstream's base URL (http:// or https://127.0.0.1:port).
func (u *Upstream) URL() string { return u.srv.URL }

// Client is an HTTP client that trusts the upstream's certificate.
func (u *Upstream) Client() *http.Client { return u.srv.Client() }

// CertPool holds the upstream's certificate, for transports that need a
// root pool (nil for a plain-HTTP upstream).
func (u *Upstream) CertPool() *x509.CertPool {
	if u.srv.Certificate() == nil {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AddCert(u.srv.Certificate())
	return pool
}

// Certificate is the upstream's TLS certificate (nil for plain HTTP).
func (u *Upstream) Certificate() *x509.Certificate { return u.srv.Certificate() }

// Requests returns a copy of every request received since the start or the
// last Reset, oldest first.
func (u *Upstream) Requests() []RecordedRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]RecordedRequest(nil), u.requests...)
}

// Last returns the most recent request; ok is false when there is none.
func (u *Upstream) Last() (req RecordedRequest, ok bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.requests) == 0 {
		return RecordedRequest{}, false
	}
	return u.requests[len(u.requests)-1], true
}

// Count is how many requests were received since the start or last Reset.
func (u *Upstream) Count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.count
}

// Reset forgets the recorded requests and any ForceStatus.
func (u *Upstream) Reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.requests = nil
	u.count = 0
	u.forceLeft = 0
}

// ForceStatus answers the next n requests with code, credential or not.
func (u *Upstream) ForceStatus(code, n int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.force, u.forceLeft = code, n
}

func (u *Upstream) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unreadable body"})
		return
	}
	u.mu.Lock()
	u.count++
	if !u.opts.Discard {
		u.requests = append(u.requests, RecordedRequest{
			Method:   r.Method,
			Host:     r.Host,
			Path:     r.URL.Path,
			RawPath:  r.URL.EscapedPath(),
			RawQuery: r.URL.RawQuery,
			Header:   r.Header.Clone(),
			Body:     body,
			Trailer:  r.Trailer.Clone(),
			Time:     time.Now(),
		})
	}
	forced := 0
	if u.forceLeft > 0 {
		u.forceLeft--
		forced = u.force
	}
	u.mu.Unlock()

	if forced != 0 {
		writeJSON(w, forced, map[string]any{"error": http.StatusText(forced), "forced": true})
		return
	}
	for k, v := range u.opts.RequireHeaders {
		if r.Header.Get(k) != v {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "missing_header", "message": k + " header is required"})
			return
		}
	}
	subject, ok := u.authenticate(r)
	if !ok {
		if u.opts.Auth != nil {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		}
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized", "message": "missing or invalid credentials"})
		return
	}

	switch path := r.URL.Path; {
	case path == "/me":
		writeJSON(w, http.StatusOK, map[string]string{"sub": subject})
	case strings.HasPrefix(path, "/echo/") || path == "/echo":
		writeJSON(w, http.StatusOK, map[string]any{
			"method":  r.Method,
			"path":    path,
			"query":   r.URL.RawQuery,
			"headers": r.Header,
			"body":    string(body),
		})
	case path == "/stream/sse":
		u.stream(w, r, "text/event-stream", func(i int) string {
			return fmt.Sprintf("id: %d\nevent: tick\ndata: {\"n\":%d}\n\n", i, i)
		})
	case path == "/stream/chunked":
		u.stream(w, r, "text/plain; charset=utf-8", func(i int) string {
			return fmt.Sprintf("part %d\n", i)
		})
	case strings.HasPrefix(path, "/status/"):
		code, err := strconv.Atoi(strings.TrimPrefix(path, "/status/"))
		if err != nil || code < 100 || code > 599 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "status must be a number from 100 to 599"})
			return
		}
		writeJSON(w, code, map[string]any{"status": code})
	default:
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "path": path})
	}
}

// authenticate checks the request's credential and returns who it is.
func (u *Upstream) authenticate(r *http.Request) (subject string, ok bool) {
	o := u.opts
	if o.Auth == nil && o.APIKey == "" && o.Username == "" {
		return "anonymous", true
	}
	if o.Auth != nil {
		token, found := bearerToken(r)
		if o.TokenHeader != "" {
			h := r.Header.Get(o.TokenHeader)
			token, found = strings.TrimPrefix(h, o.TokenPrefix), strings.HasPrefix(h, o.TokenPrefix) && len(h) > len(o.TokenPrefix)
		}
		if found {
			if sub, valid := o.Auth.ValidAccessToken(token); valid {
				return sub, true
			}
		}
	}
	if o.APIKey != "" {
		header, query := o.APIKeyHeader, o.APIKeyQuery
		if header == "" && query == "" {
			header = "X-API-Key"
		}
		if header != "" && secretEqual(r.Header.Get(header), o.APIKey) {
			return "api-key", true
		}
		if query != "" && secretEqual(r.URL.Query().Get(query), o.APIKey) {
			return "api-key", true
		}
	}
	if o.Username != "" {
		if user, pass, found := r.BasicAuth(); found && secretEqual(user, o.Username) && secretEqual(pass, o.Password) {
			return o.Username, true
		}
	}
	return "", false
}

// stream writes n parts with pauses, flushing each so a proxy that buffers
// shows up as parts arriving together.
func (u *Upstream) stream(w http.ResponseWriter, r *http.Request, contentType string, part func(int) string) {
	n, interval := 3, 50*time.Millisecond
	if v, err := strconv.Atoi(r.URL.Query().Get("n")); err == nil && v > 0 {
		n = v
	}
	if d, err := time.ParseDuration(r.URL.Query().Get("interval")); err == nil && d >= 0 {
		interval = d
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	for i := 1; i <= n; i++ {
		if i > 1 {
			select {
			case <-time.After(interval):
			case <-r.Context().Done():
				return
			case <-u.done:
				return
			}
		}
		if _, err := io.WriteString(w, part(i)); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func secretEqual(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}
