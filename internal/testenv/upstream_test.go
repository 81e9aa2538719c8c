package testenv

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func getJSON(t *testing.T, c *http.Client, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func newReq(t *testing.T, method, url, body string) *http.Request {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestUpstreamAcceptsATokenFromTheCodeFlowUntilRevoked(t *testing.T) {
	a := newTestAuthServer(t)
	up := NewUpstream(t, UpstreamOptions{Auth: a})
	tok := a.Authorize(t, "app", redirectURI, "alice", []string{"read"})

	cfg := a.OAuth2Config(t, "app", redirectURI, nil)
	hc := cfg.Client(context.Background(), tok)
	code, m := getJSON(t, hc, newReq(t, http.MethodGet, up.URL()+"/me", ""))
	if code != http.StatusOK || m["sub"] != "alice" {
		t.Fatalf("GET /me = %d %v; want 200 sub alice", code, m)
	}
	last, ok := up.Last()
	if !ok || last.Header.Get("Authorization") != "Bearer "+tok.AccessToken || last.Path != "/me" {
		t.Fatalf("recorded request %+v does not carry the bearer token to /me", last.Path)
	}

	code, _ = getJSON(t, http.DefaultClient, newReq(t, http.MethodGet, up.URL()+"/me", ""))
	if code != http.StatusUnauthorized {
		t.Fatalf("GET /me without a token = %d, want 401", code)
	}

	a.RevokeSubject("alice")
	req := newReq(t, http.MethodGet, up.URL()+"/me", "")
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	if code, _ := getJSON(t, http.DefaultClient, req); code != http.StatusUnauthorized {
		t.Fatalf("GET /me with a revoked token = %d, want 401", code)
	}
	if _, err := refresh(t, a, "app", tok.RefreshToken); errorCode(err) != "invalid_grant" {
		t.Fatalf("refresh of the revoked grant: %v; want invalid_grant", err)
	}
	if up.Count() != 3 {
		t.Fatalf("Count = %d, want 3 (rejected requests are recorded too)", up.Count())
	}
	up.Reset()
	if _, ok := up.Last(); ok || up.Count() != 0 {
		t.Fatal("Reset left requests behind")
	}
}

func TestUpstreamAPIKeyAndBasic(t *testing.T) {
	tests := []struct {
		name  string
		opts  UpstreamOptions
		good  func(*http.Request)
		wrong func(*http.Request)
		sub   string
	}{
		{"default header", UpstreamOptions{APIKey: "k-123"},
			func(r *http.Request) { r.Header.Set("X-API-Key", "k-123") },
			func(r *http.Request) { r.Header.Set("X-API-Key", "k-124") }, "api-key"},
		{"named header", UpstreamOptions{APIKey: "k-123", APIKeyHeader: "X-Token"},
			func(r *http.Request) { r.Header.Set("X-Token", "k-123") },
			func(r *http.Request) { r.Header.Set("X-API-Key", "k-123") }, "api-key"},
		{"query", UpstreamOptions{APIKey: "k-123", APIKeyQuery: "api_key"},
			func(r *http.Request) { r.URL.RawQuery = "api_key=k-123" },
			func(r *http.Request) { r.URL.RawQuery = "api_key=nope" }, "api-key"},
		{"basic", UpstreamOptions{Username: "u", Password: "p"},
			func(r *http.Request) { r.SetBasicAuth("u", "p") },
			func(r *http.Request) { r.SetBasicAuth("u", "q") }, "u"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := NewUpstream(t, tc.opts)
			req := newReq(t, http.MethodGet, up.URL()+"/me", "")
			tc.good(req)
			if code, m := getJSON(t, http.DefaultClient, req); code != 200 || m["sub"] != tc.sub {
				t.Fatalf("good credential: %d %v; want 200 sub %s", code, m, tc.sub)
			}
			req = newReq(t, http.MethodGet, up.URL()+"/me", "")
			tc.wrong(req)
			if code, _ := getJSON(t, http.DefaultClient, req); code != http.StatusUnauthorized {
				t.Fatalf("wrong credential: %d, want 401", code)
			}
		})
	}
}

func TestUpstreamRoutes(t *testing.T) {
	up := NewUpstream(t, UpstreamOptions{})

	req := newReq(t, http.MethodPost, up.URL()+"/echo/a/b?x=1&y=2", `{"hello":"world"}`)
	req.Header.Set("X-Custom", "yes")
	code, m := getJSON(t, http.DefaultClient, req)
	if code != 200 || m["method"] != "POST" || m["path"] != "/echo/a/b" || m["query"] != "x=1&y=2" || m["body"] != `{"hello":"world"}` {
		t.Fatalf("echo = %d %v", code, m)
	}
	if h, _ := m["headers"].(map[string]any); h == nil || h["X-Custom"] == nil {
		t.Fatalf("echo lost the request headers: %v", m["headers"])
	}
	last, _ := up.Last()
	if string(last.Body) != `{"hello":"world"}` || last.RawQuery != "x=1&y=2" || last.Method != "POST" {
		t.Fatalf("recorded %s %q %q", last.Method, last.RawQuery, last.Body)
	}

	// Host, the path as sent and trailers are recorded too.
	req = newReq(t, http.MethodGet, up.URL()+"/a%2Fb/c", "")
	req.Host = "api.example.test"
	getJSON(t, http.DefaultClient, req)
	last, _ = up.Last()
	if last.Host != "api.example.test" || last.Path != "/a/b/c" || last.RawPath != "/a%2Fb/c" {
		t.Fatalf("recorded Host %q, path %q, raw path %q", last.Host, last.Path, last.RawPath)
	}
	req = newReq(t, http.MethodPost, up.URL()+"/echo", "")
	req.Body = io.NopCloser(strings.NewReader("part"))
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Sum": {"42"}}
	getJSON(t, http.DefaultClient, req)
	last, _ = up.Last()
	if last.Trailer.Get("X-Sum") != "42" || string(last.Body) != "part" {
		t.Fatalf("recorded trailer %v and body %q", last.Trailer, last.Body)
	}

	if code, _ := getJSON(t, http.DefaultClient, newReq(t, http.MethodGet, up.URL()+"/status/418", "")); code != 418 {
		t.Fatalf("/status/418 = %d", code)
	}
	if code, m := getJSON(t, http.DefaultClient, newReq(t, http.MethodGet, up.URL()+"/crm/contacts", "")); code != 200 || m["ok"] != true || m["path"] != "/crm/contacts" {
		t.Fatalf("default route = %d %v", code, m)
	}

	up.ForceStatus(http.StatusServiceUnavailable, 2)
	for i := 0; i < 2; i++ {
		if code, _ := getJSON(t, http.DefaultClient, newReq(t, http.MethodGet, up.URL()+"/x", "")); code != 503 {
			t.Fatalf("forced call %d = %d, want 503", i, code)
		}
	}
	if code, _ := getJSON(t, http.DefaultClient, newReq(t, http.MethodGet, up.URL()+"/x", "")); code != 200 {
		t.Fatalf("after the forced calls = %d, want 200", code)
	}
}

// TestUpstreamStreamsFlushEachPart proves each part leaves before the next
// is written: with a minute between parts the first must arrive long before.
func TestUpstreamStreamsFlushEachPart(t *testing.T) {
	up := NewUpstream(t, UpstreamOptions{})
	for _, route := range []string{"/stream/sse", "/stream/chunked"} {
		t.Run(route, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, up.URL()+route+"?n=2&interval=1m", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			if err != nil {
				t.Fatalf("first part did not arrive before the next was due: %v", err)
			}
			if route == "/stream/sse" && (resp.Header.Get("Content-Type") != "text/event-stream" || line != "id: 1\n") {
				t.Fatalf("sse: %q first line %q", resp.Header.Get("Content-Type"), line)
			}
			if route == "/stream/chunked" && (len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" || line != "part 1\n") {
				t.Fatalf("chunked: transfer encoding %v first line %q", resp.TransferEncoding, line)
			}
		})
	}

	resp, err := http.Get(up.URL() + "/stream/sse?n=3&interval=1ms")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := strings.Count(string(body), "event: tick\n"); got != 3 {
		t.Fatalf("sse sent %d events, want 3:\n%s", got, body)
	}
}

func TestTLSUpstream(t *testing.T) {
	up := NewTLSUpstream(t, UpstreamOptions{APIKey: "k"})
	if !strings.HasPrefix(up.URL(), "https://127.0.0.1:") {
		t.Fatalf("URL %s is not https on 127.0.0.1", up.URL())
	}
	req := newReq(t, http.MethodGet, up.URL()+"/me", "")
	req.Header.Set("X-API-Key", "k")
	if code, _ := getJSON(t, up.Client(), req); code != 200 {
		t.Fatalf("with Client() = %d", code)
	}
	own := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: up.CertPool()}}}
	defer own.CloseIdleConnections()
	req = newReq(t, http.MethodGet, up.URL()+"/me", "")
	req.Header.Set("X-API-Key", "k")
	if code, _ := getJSON(t, own, req); code != 200 {
		t.Fatalf("with CertPool() = %d", code)
	}
	if _, err := http.Get(up.URL() + "/me"); err == nil {
		t.Fatal("a client without the certificate trusted the upstream")
	}
}

func TestUpstreamDiscardCountsWithoutKeeping(t *testing.T) {
	up := NewUpstream(t, UpstreamOptions{Discard: true})
	for i := 0; i < 3; i++ {
		if code, _ := getJSON(t, http.DefaultClient, newReq(t, http.MethodGet, up.URL()+"/x", "")); code != 200 {
			t.Fatalf("call %d = %d", i, code)
		}
	}
	if up.Count() != 3 || len(up.Requests()) != 0 {
		t.Fatalf("Count %d, %d kept; want 3 and none", up.Count(), len(up.Requests()))
	}
}
