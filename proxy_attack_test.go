package linkgate_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// wire sends a request written out byte for byte to the gateway and returns
// the answer. Go's client would tidy away most of what these tests send.
func (g *gateway) wire(t *testing.T, request string) (int, []byte) {
	t.Helper()
	return rawTo(t, strings.TrimPrefix(g.base, "http://"), request)
}

func rawTo(t *testing.T, addr, request string) (int, []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	// Skip interim answers such as 100 Continue.
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
		resp, err = http.ReadResponse(br, nil)
	}
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", firstLine(request), err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

// status reads an account's status through the API.
func (w *world) status(t *testing.T, id string) string {
	t.Helper()
	code, body := w.do("GET", "/integrated-account/"+id, nil)
	if code != http.StatusOK {
		t.Fatalf("reading account %s: %d %s", id, code, body)
	}
	return mustJSON(t, body)["status"].(string)
}

// TestCallerCannotStripOrShadowCredentials sends, for each way of
// authenticating, what a caller could use to remove the credentials
// linkgate injects, or to send its own beside them: each must reach the
// upstream with exactly the account's credentials, and the account stays
// active (no 401 was provoked to count against it).
func TestCallerCannotStripOrShadowCredentials(t *testing.T) {
	w := newWorld(t)
	w.importAll(t)
	host := strings.TrimPrefix(w.base, "http://")
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(basicUser+":"+basicPass))
	auth := "Authorization: Bearer " + apiToken + "\r\n"

	kinds := []struct {
		name     string
		account  string
		up       *testenv.Upstream
		header   string // where the credentials go
		want     func() string
		callerAs string // a caller-sent value in that header
	}{
		{"api key header", w.accountKeyed, w.keyed, "X-Api-Key", func() string { return upstreamKey }, "X-Api-Key: sk_evil_caller"},
		{"basic", w.accountBasic, w.basic, "Authorization", func() string { return basic }, "Authorization: Basic ZXZpbDpldmls"},
		{"oauth2", w.accountOAuth, w.oauth, "Authorization", func() string { return "Bearer " + w.accessToken }, "Authorization: Bearer evil-token"},
	}
	attacks := []struct {
		name    string
		headers func(credHeader, callerAs string) string
		body    string
	}{
		{"Connection names the credential header", func(h, _ string) string { return "Connection: " + h + "\r\n" }, ""},
		{"Connection: close and the credential header", func(h, _ string) string { return "Connection: close, " + h + "\r\n" }, ""},
		{"Connection names every hop-by-hop header and more", func(h, _ string) string {
			return "Connection: keep-alive, Te, Upgrade, Trailer, Proxy-Authorization, " + h + ", Host\r\nTe: trailers\r\nKeep-Alive: timeout=5\r\n"
		}, ""},
		{"an upgrade that names the credential header", func(h, _ string) string {
			return "Connection: Upgrade, " + h + "\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
		}, ""},
		{"the caller's own value, twice", func(_, c string) string { return c + "\r\n" + c + "\r\n" }, ""},
		{"the caller's own value in another spelling", func(h, c string) string {
			return strings.ToLower(c) + "\r\n" + strings.ReplaceAll(c, "-", "_") + "\r\n"
		}, ""},
		{"Proxy-Authorization", func(_, _ string) string { return "Proxy-Authorization: Basic ZXZpbDpldmls\r\n" }, ""},
		{"an upgrade to h2c", func(h, _ string) string {
			return "Connection: Upgrade, HTTP2-Settings, " + h + "\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
		}, ""},
		{"Expect: 100-continue", func(h, _ string) string { return "Expect: 100-continue\r\nConnection: " + h + "\r\n" }, `{"a":1}`},
	}
	for _, k := range kinds {
		for _, a := range attacks {
			t.Run(k.name+"/"+a.name, func(t *testing.T) {
				k.up.Reset()
				method, body := "GET", ""
				if a.body != "" {
					method = "POST"
					body = fmt.Sprintf("Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(a.body), a.body)
				} else {
					body = "\r\n"
				}
				status, out := w.wire(t, method+" /proxy/echo/x?integrated_account_id="+k.account+" HTTP/1.1\r\nHost: "+host+"\r\n"+
					auth+a.headers(k.header, k.callerAs)+body)
				if status != http.StatusOK {
					t.Fatalf("status %d: %s", status, out)
				}
				r, ok := k.up.Last()
				if !ok {
					t.Fatal("the upstream got nothing")
				}
				if got := r.Header.Values(k.header); len(got) != 1 || got[0] != k.want() {
					t.Errorf("the upstream got %s = %q, want the account's credential alone", k.header, got)
				}
				for name := range r.Header {
					if name != k.header && strings.EqualFold(strings.ReplaceAll(name, "_", "-"), k.header) {
						t.Errorf("the upstream also got %s: %q", name, r.Header[name])
					}
				}
				if r.Header.Get("Proxy-Authorization") != "" || strings.Contains(fmt.Sprint(r.Header), apiToken) {
					t.Errorf("the caller's credentials reached the upstream: %v", r.Header)
				}
				if c := r.Header.Get("Connection"); c != "" && !strings.EqualFold(c, "upgrade") {
					t.Errorf("the upstream got Connection: %s", c)
				}
				if u := r.Header.Get("Upgrade"); u != "" && u != "websocket" {
					t.Errorf("the upstream got Upgrade: %s", u)
				}
			})
		}
	}

	t.Run("trailers", func(t *testing.T) {
		for _, k := range kinds {
			k.up.Reset()
			status, out := w.wire(t, "POST /proxy/echo/x?integrated_account_id="+k.account+" HTTP/1.1\r\nHost: "+host+"\r\n"+auth+
				"Transfer-Encoding: chunked\r\nTrailer: "+k.header+", Authorization, Proxy-Authorization\r\n\r\n"+
				"5\r\nhello\r\n0\r\n"+k.callerAs+"\r\nAuthorization: Bearer "+apiToken+"\r\nProxy-Authorization: Basic eDp5\r\nX-Other: kept\r\n\r\n")
			if status != http.StatusOK {
				t.Fatalf("%s: status %d: %s", k.name, status, out)
			}
			r, _ := k.up.Last()
			if string(r.Body) != "hello" || r.Header.Get(k.header) != k.want() {
				t.Errorf("%s: the upstream got body %q and %s %q", k.name, r.Body, k.header, r.Header.Get(k.header))
			}
			for _, name := range []string{k.header, "Authorization", "Proxy-Authorization"} {
				if v := r.Trailer.Values(name); len(v) > 0 {
					t.Errorf("%s: the upstream got the trailer %s: %q", k.name, name, v)
				}
			}
			if r.Trailer.Get("X-Other") != "kept" {
				t.Errorf("%s: other trailers were lost: %v", k.name, r.Trailer)
			}
		}
	})

	t.Run("api key in the query", func(t *testing.T) {
		for _, q := range []string{
			"api_key=qk_evil", "api%5Fkey=qk_evil", "%61pi_key=qk_evil", "x=1;api_key=qk_evil",
			"api_key=qk_evil&api%5fkey=qk_evil2",
		} {
			w.queried.Reset()
			status, out := w.do("GET", "/proxy/echo/x?limit=2&"+q+"&integrated_account_id="+w.accountQueried, nil)
			if status != http.StatusOK {
				t.Fatalf("%s: status %d: %s", q, status, out)
			}
			r, _ := w.queried.Last()
			if r.RawQuery != "limit=2&api_key="+queryKey {
				t.Errorf("%s: the upstream got the query %q, want limit=2 and the account's key alone", q, r.RawQuery)
			}
		}
	})

	t.Run("a bearer token in the query", func(t *testing.T) {
		// RFC 6750's query parameter for bearer tokens: an upstream may
		// prefer it to the header, so a caller's would be checked instead
		// of the account's.
		for _, q := range []string{"access_token=evil", "access%5Ftoken=evil", "x=1;access_token=evil"} {
			w.oauth.Reset()
			status, out := w.do("GET", "/proxy/echo/x?limit=2&"+q+"&integrated_account_id="+w.accountOAuth, nil)
			if status != http.StatusOK {
				t.Fatalf("%s: status %d: %s", q, status, out)
			}
			r, _ := w.oauth.Last()
			if r.RawQuery != "limit=2" || r.Header.Get("Authorization") != "Bearer "+w.accessToken {
				t.Errorf("%s: the upstream got the query %q", q, r.RawQuery)
			}
		}
	})

	if w.as.TokenCalls("refresh_token") != 0 {
		t.Errorf("%d refreshes: a 401 was provoked", w.as.TokenCalls("refresh_token"))
	}
	for _, id := range []string{w.accountKeyed, w.accountBasic, w.accountOAuth, w.accountQueried} {
		if s := w.status(t, id); s != "active" {
			t.Errorf("account %s is %s after the attacks", id, s)
		}
	}
}

// TestCallerCannotSteerTheUpstream: neither an absolute-form request target,
// nor Host, X-Forwarded-Host, Forwarded or a path that looks like an
// authority choose where the credentials go; the upstream gets Host = its
// base_url's host. Checked on a site with a host name and on one without.
func TestCallerCannotSteerTheUpstream(t *testing.T) {
	for _, site := range []string{"named", "hostless"} {
		t.Run(site, func(t *testing.T) {
			w := newWorldWith(t, func(cfg string) string {
				if site == "hostless" {
					// Answers whatever Host a request names.
					return strings.Replace(cfg, "\nhttp://{{GATEWAY}} {", "\nhttp://:{{PORT}} {", 1)
				}
				return cfg
			})
			w.importAll(t)
			evil := testenv.NewUpstream(t, testenv.UpstreamOptions{})
			evilHost := strings.TrimPrefix(evil.URL(), "http://")
			gw := strings.TrimPrefix(w.base, "http://")
			wantHost := strings.TrimPrefix(w.keyed.URL(), "http://")
			q := "?integrated_account_id=" + w.accountKeyed
			auth := "Authorization: Bearer " + apiToken + "\r\n"

			// foreign: the request names another host, which a site with a
			// host name does not answer at all.
			cases := []struct {
				name, request string
				foreign       bool
			}{
				{"absolute-form target", "GET http://" + evilHost + "/proxy/echo/x" + q + " HTTP/1.1\r\nHost: " + evilHost + "\r\n" + auth + "\r\n", true},
				{"absolute-form target, gateway Host", "GET http://" + evilHost + "/proxy/echo/x" + q + " HTTP/1.1\r\nHost: " + gw + "\r\n" + auth + "\r\n", true},
				{"https absolute-form target", "GET https://" + evilHost + "/proxy/echo/x" + q + " HTTP/1.1\r\nHost: " + evilHost + "\r\n" + auth + "\r\n", true},
				{"absolute-form gateway target", "GET http://" + gw + "/proxy/echo/x" + q + " HTTP/1.1\r\nHost: " + evilHost + "\r\n" + auth + "\r\n", false},
				{"Host", "GET /proxy/echo/x" + q + " HTTP/1.1\r\nHost: " + evilHost + "\r\n" + auth + "\r\n", true},
				{"X-Forwarded-Host and Forwarded", "GET /proxy/echo/x" + q + " HTTP/1.1\r\nHost: " + gw + "\r\n" + auth +
					"X-Forwarded-Host: " + evilHost + "\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 203.0.113.9\r\nForwarded: for=203.0.113.9;host=" + evilHost + ";proto=https\r\n\r\n", false},
				{"a path like an authority", "GET /proxy//" + evilHost + "/echo/x" + q + " HTTP/1.1\r\nHost: " + gw + "\r\n" + auth + "\r\n", false},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					w.keyed.Reset()
					status, body := w.wire(t, c.request)
					if evil.Count() != 0 {
						t.Fatalf("the caller steered a request to its own server")
					}
					if site == "named" && c.foreign {
						if w.keyed.Count() != 0 {
							t.Errorf("a request for another host reached the upstream (status %d)", status)
						}
						return
					}
					if status != http.StatusOK {
						t.Fatalf("status %d: %s", status, body)
					}
					r, ok := w.keyed.Last()
					if !ok {
						t.Fatal("the integration's upstream got nothing")
					}
					if r.Host != wantHost {
						t.Errorf("the upstream got Host %q, want %q", r.Host, wantHost)
					}
					for _, h := range []string{"X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-For", "Forwarded"} {
						if v := r.Header.Get(h); v != "" {
							t.Errorf("the upstream got %s: %s", h, v)
						}
					}
					if r.Header.Get("X-Api-Key") != upstreamKey {
						t.Errorf("the credentials did not arrive")
					}
					if strings.HasPrefix(r.RawPath, "//") {
						t.Errorf("the upstream got the path %q", r.RawPath)
					}
				})
			}
		})
	}
}

// TestHTTPSCredentialsNeverGoInClear points an https integration at a
// listener that speaks no TLS: whatever the route's reverse_proxy says, the
// listener never reads the key.
func TestHTTPSCredentialsNeverGoInClear(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var received bytes.Buffer
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4096)
				n, _ := c.Read(buf)
				mu.Lock()
				received.Write(buf[:n])
				mu.Unlock()
				// Answer as a plain HTTP server would, so that a client
				// that spoke HTTP gets a 401 to count.
				_, _ = io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			}()
		}
	}()
	addr := ln.Addr().String()
	const key = "sk_https_only_4e1f0a"
	integration := "\t\tintegration cleartext {\n\t\t\tauth api_key\n\t\t\tbase_url https://" + addr + "\n\t\t\tapi_key_header X-Api-Key\n\t\t}\n"

	for _, route := range []struct{ name, proxy string }{
		{"transport linkgate, no tls written", "reverse_proxy {integrated_account.upstream} {\n\t\t\ttransport linkgate\n\t\t}"},
		{"plain http transport", "reverse_proxy {integrated_account.upstream}"},
		{"http transport with tls", "reverse_proxy {integrated_account.upstream} {\n\t\t\ttransport http {\n\t\t\t\ttls\n\t\t\t}\n\t\t}"},
	} {
		t.Run(route.name, func(t *testing.T) {
			mu.Lock()
			received.Reset()
			mu.Unlock()
			w := newWorldWith(t, func(cfg string) string {
				cfg = strings.Replace(cfg, "\t\tintegration keyed {", integration+"\t\tintegration keyed {", 1)
				return replaceProxyRoute(t, cfg, route.proxy)
			})
			id := w.importAccount(map[string]any{"tenant_id": "t", "integration": "cleartext", "context": map[string]any{"api_key": key}})
			status, _ := w.do("GET", "/proxy/x?integrated_account_id="+id, nil)
			if status == http.StatusOK {
				t.Errorf("status 200 from a listener that speaks no TLS")
			}
			mu.Lock()
			got := received.String()
			mu.Unlock()
			if strings.Contains(got, key) {
				t.Fatalf("the https integration's key went out in clear: %q", got)
			}
			if route.name == "transport linkgate, no tls written" && (len(got) == 0 || got[0] != 0x16) {
				t.Errorf("the transport did not open with a TLS handshake: %q", got)
			}
			if s := w.status(t, id); s != "active" {
				t.Errorf("the account is %s: an answer to a request without its key counted against it", s)
			}
		})
	}
}

// replaceProxyRoute swaps what follows inject_credentials in the world's
// proxy route for another reverse_proxy.
func replaceProxyRoute(t *testing.T, cfg, proxy string) string {
	t.Helper()
	const after = "\t\tinject_credentials\n"
	start := strings.Index(cfg, after)
	end := strings.Index(cfg, "\n\t}\n\thandle /connect-account*")
	if start < 0 || end < 0 {
		t.Fatal("the world's proxy route moved")
	}
	return cfg[:start+len(after)] + "\t\t" + proxy + cfg[end:]
}

// TestRouteWithoutTheTransportFailsClosed: a proxy route whose
// reverse_proxy lacks transport linkgate sends no credentials, answers 502,
// logs the fix once, and the upstream's 401 to the request without
// credentials counts against no account.
func TestRouteWithoutTheTransportFailsClosed(t *testing.T) {
	w := newWorldWith(t, func(cfg string) string {
		cfg = strings.Replace(cfg, "\tadmin off\n", "\tadmin off\n\tlog {\n\t\toutput file {{DATA}}/caddy.log\n\t}\n", 1)
		return replaceProxyRoute(t, cfg, "reverse_proxy {integrated_account.upstream}")
	})
	w.importAll(t)
	w.as.ResetCounts()
	for _, acct := range []struct {
		id string
		up *testenv.Upstream
	}{{w.accountKeyed, w.keyed}, {w.accountOAuth, w.oauth}, {w.accountBasic, w.basic}, {w.accountQueried, w.queried}} {
		for range 2 {
			acct.up.Reset()
			status, body := w.do("GET", "/proxy/me?integrated_account_id="+acct.id, nil)
			if status != http.StatusBadGateway || !strings.Contains(string(body), "transport linkgate") {
				t.Errorf("status %d: %s", status, body)
			}
			r, ok := acct.up.Last()
			if !ok {
				t.Fatal("the upstream got nothing: is the route still the plain one?")
			}
			for _, s := range w.secretsStored {
				if strings.Contains(fmt.Sprint(r.Header, r.RawQuery), s) {
					t.Errorf("credentials went out without the linkgate transport")
				}
			}
		}
		if s := w.status(t, acct.id); s != "active" {
			t.Errorf("account %s is %s: an upstream 401 to a request without credentials counted", acct.id, s)
		}
	}
	if n := w.as.TokenCalls("refresh_token"); n != 0 {
		t.Errorf("%d refreshes after 401s to requests without credentials", n)
	}
	logged, err := os.ReadFile(filepath.Join(w.dir, "caddy.log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(logged), "without the linkgate transport"); n != 1 {
		t.Errorf("the misconfiguration was logged %d times, want once:\n%s", n, logged)
	}
}

// TestNoCredentialInAnyLog turns on Caddy's debug logging and an access log,
// drives every kind of account through success, an upstream 401 with a
// refresh and retry, a 401 that sends the account to needs_reauth and an
// unreachable upstream, and reads every log line: none holds an API key, an
// access or refresh token, or a basic password.
func TestNoCredentialInAnyLog(t *testing.T) {
	w := newWorldWith(t, func(cfg string) string {
		cfg = strings.Replace(cfg, "\tadmin off\n", "\tadmin off\n\tdebug\n\tlog {\n\t\toutput file {{DATA}}/caddy.log\n\t\tlevel DEBUG\n\t}\n", 1)
		cfg = strings.Replace(cfg, "\t\tintegration keyed {", "\t\tintegration down {\n\t\t\tauth api_key\n\t\t\tbase_url http://{{DOWN}}\n\t\t\tapi_key_header X-Api-Key\n\t\t}\n\t\tintegration keyed {", 1)
		cfg = strings.Replace(cfg, "\nhttp://{{GATEWAY}} {\n", "\nhttp://{{GATEWAY}} {\n\tlog {\n\t\toutput file {{DATA}}/access.log\n\t}\n", 1)
		return strings.Replace(cfg, "{{DOWN}}", testenv.FreeAddr(t), 1)
	})
	w.importAll(t)
	downKey := "sk_down_c0ffee77"
	down := w.importAccount(map[string]any{"tenant_id": "t", "integration": "down", "context": map[string]any{"api_key": downKey}})

	for _, id := range []string{w.accountKeyed, w.accountQueried, w.accountBasic, w.accountOAuth, w.accountSecure} {
		if status, body := w.do("GET", "/proxy/contacts?integrated_account_id="+id, nil); status != http.StatusOK {
			t.Fatalf("status %d: %s", status, body)
		}
	}
	// An access token dropped early: 401, refresh, retry.
	w.as.ExpireAccessToken(w.accessToken)
	w.oauth.Reset()
	if status, body := w.do("POST", "/proxy/echo/x?integrated_account_id="+w.accountOAuth, `{"a":1}`); status != http.StatusOK {
		t.Fatalf("retry: %d %s", status, body)
	}
	var tokens []string
	for _, r := range w.oauth.Requests() {
		tokens = append(tokens, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	}
	// An api key the upstream refuses: the account goes to needs_reauth.
	w.basic.ForceStatus(http.StatusUnauthorized, 1)
	w.do("GET", "/proxy/contacts?integrated_account_id="+w.accountBasic, nil)
	// An upstream that does not answer.
	if status, _ := w.do("GET", "/proxy/contacts?integrated_account_id="+down, nil); status != http.StatusBadGateway {
		t.Errorf("unreachable upstream: status %d", status)
	}

	var logs []byte
	for _, f := range []string{"caddy.log", "access.log"} {
		b, err := os.ReadFile(filepath.Join(w.dir, f))
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, b...)
	}
	for _, want := range []string{"upstream roundtrip", "/contacts", `"status":401`} {
		if !bytes.Contains(logs, []byte(want)) {
			t.Fatalf("the logs lack %q: is debug logging on?", want)
		}
	}
	secrets := append(append([]string{downKey, oauthSecret, apiToken,
		base64.StdEncoding.EncodeToString([]byte(basicUser + ":" + basicPass)), "ory_at_", "ory_rt_"},
		w.secretsStored...), tokens...)
	for _, s := range secrets {
		if s != "" && bytes.Contains(logs, []byte(s)) {
			i := bytes.Index(logs, []byte(s))
			start := bytes.LastIndexByte(logs[:i], '\n') + 1
			t.Errorf("a log line holds a secret (%d bytes of it): %.300s", len(s), logs[start:])
		}
	}
}

// TestProxyRefusesTraceAndConnect: methods that would echo the credentials
// back or open a tunnel never leave.
func TestProxyRefusesTraceAndConnect(t *testing.T) {
	w := newWorld(t)
	w.importAll(t)
	host := strings.TrimPrefix(w.base, "http://")
	for _, m := range []string{"TRACE", "CONNECT", "trace", "TRACK"} {
		w.keyed.Reset()
		status, body := w.wire(t, m+" /proxy/echo/x?integrated_account_id="+w.accountKeyed+" HTTP/1.1\r\nHost: "+host+
			"\r\nAuthorization: Bearer "+apiToken+"\r\n\r\n")
		if status != http.StatusMethodNotAllowed || !strings.Contains(string(body), "not forwarded") {
			t.Errorf("%s: status %d: %s", m, status, body)
		}
		if w.keyed.Count() != 0 {
			t.Errorf("%s reached the upstream", m)
		}
	}
}

// TestProxyAccountSelection: the account named in the header cannot be
// overridden through the query, and neither may repeat.
func TestProxyAccountSelection(t *testing.T) {
	w := newWorld(t)
	w.importAll(t)
	other := w.importAccount(map[string]any{"tenant_id": "other", "integration": "keyed", "context": map[string]any{"api_key": upstreamKey}})
	cases := []struct {
		name, query string
		headers     []string
		want        int
	}{
		{"header and query disagree", "integrated_account_id=" + other, []string{w.accountKeyed}, 400},
		{"header and encoded query disagree", "integrated%5Faccount%5Fid=" + other, []string{w.accountKeyed}, 400},
		{"query repeated", "integrated_account_id=" + w.accountKeyed + "&integrated_account_id=" + other, nil, 400},
		{"query repeated, the same", "integrated_account_id=" + w.accountKeyed + "&integrated_account_id=" + w.accountKeyed, nil, 400},
		{"header repeated", "", []string{w.accountKeyed, other}, 400},
		{"header and query agree", "integrated_account_id=" + w.accountKeyed, []string{w.accountKeyed}, 200},
		{"encoded name alone", "integrated%5Faccount%5Fid=" + w.accountKeyed, nil, 200},
	}
	host := strings.TrimPrefix(w.base, "http://")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w.keyed.Reset()
			req := "GET /proxy/echo/x?limit=1&" + c.query + " HTTP/1.1\r\nHost: " + host + "\r\nAuthorization: Bearer " + apiToken + "\r\n"
			for _, h := range c.headers {
				req += "X-Integrated-Account-Id: " + h + "\r\n"
			}
			status, body := w.wire(t, req+"\r\n")
			if status != c.want {
				t.Fatalf("status %d, want %d: %s", status, c.want, body)
			}
			if c.want != 200 {
				if w.keyed.Count() != 0 {
					t.Error("a refused request reached the upstream")
				}
				return
			}
			r, _ := w.keyed.Last()
			if r.RawQuery != "limit=1" || r.Header.Get("X-Integrated-Account-Id") != "" {
				t.Errorf("the upstream got the query %q and header %q", r.RawQuery, r.Header.Get("X-Integrated-Account-Id"))
			}
		})
	}
}

// TestProxyRefusesNearMissAPITokens: a token that is a prefix of the real
// one, or the real one extended, is refused before anything is looked up.
func TestProxyRefusesNearMissAPITokens(t *testing.T) {
	w := newWorld(t)
	w.importAll(t)
	for _, tok := range []string{apiToken[:len(apiToken)-1], apiToken[:1], apiToken + "0", apiToken + " x", "x" + apiToken,
		strings.ToUpper(apiToken)} {
		w.keyed.Reset()
		status, body := w.doAuth("GET", "/proxy/x?integrated_account_id="+w.accountKeyed, "Bearer "+tok, nil)
		if status != http.StatusUnauthorized || !strings.Contains(string(body), "API token") {
			t.Errorf("token %q: status %d: %s", tok, status, body)
		}
		if w.keyed.Count() != 0 {
			t.Errorf("token %q reached the upstream", tok)
		}
	}
}

// TestBasePathEscapes: a base_url whose path has an escaped slash keeps it,
// whether or not the request's own path has escapes.
func TestBasePathEscapes(t *testing.T) {
	w := newWorldWith(t, func(cfg string) string {
		return strings.Replace(cfg, "base_url {{UPSTREAM_KEYED}}/v1", "base_url {{UPSTREAM_KEYED}}/b%2Fx", 1)
	})
	w.importAll(t)
	for path, want := range map[string]string{
		"/echo/plain": "/b%2Fx/echo/plain",
		"/echo/a%2Fb": "/b%2Fx/echo/a%2Fb",
		"//echo/dbl":  "/b%2Fx/echo/dbl",
	} {
		w.keyed.Reset()
		w.do("GET", "/proxy"+path+"?integrated_account_id="+w.accountKeyed, nil)
		r, ok := w.keyed.Last()
		if !ok || r.RawPath != want {
			t.Errorf("%s: the upstream got %q, want %q", path, r.RawPath, want)
		}
	}
}
