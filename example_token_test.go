package linkgate_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"golang.org/x/crypto/bcrypt"

	"github.com/linkgate/linkgate/internal/testenv"
)

// TestExampleTokenOnlyFromThisMachine: the API token the README publishes
// opens the API and the proxy to clients on the gateway's machine only,
// whether the client is the connection's peer or the address a trusted
// proxy forwards; a token of the operator's own works from anywhere.
func TestExampleTokenOnlyFromThisMachine(t *testing.T) {
	w := newWorldWith(t, func(cfg string) string {
		cfg = strings.Replace(cfg, "\tadmin off\n", "\tadmin off\n\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}\n", 1)
		return strings.Replace(cfg, "\t\tapi_token test-api-token-0123456789\n", "\t\tapi_token test-api-token-0123456789\n\t\tapi_token dev-api-token\n", 1)
	})
	w.importAll(t)
	_, port, _ := strings.Cut(strings.TrimPrefix(w.base, "http://"), ":")
	paths := []string{"/integrated-account/" + w.accountKeyed, "/proxy/x?integrated_account_id=" + w.accountKeyed}

	type client struct {
		name   string
		addr   string // host:port to connect to
		header string // extra request header line
		remote bool
	}
	clients := []client{
		{"loopback", "127.0.0.1:" + port, "", false},
		{"loopback naming itself", "127.0.0.1:" + port, "X-Forwarded-For: 127.0.0.1\r\n", false},
		{"forwarded by a trusted proxy", "127.0.0.1:" + port, "X-Forwarded-For: 203.0.113.7\r\n", true},
		{"forwarded, IPv6", "127.0.0.1:" + port, "X-Forwarded-For: 2001:db8::7\r\n", true},
		{"behind a proxy Caddy does not trust (Forwarded)", "127.0.0.1:" + port, "Forwarded: for=203.0.113.7;proto=https\r\n", true},
		{"behind a proxy Caddy does not trust (X-Real-Ip)", "127.0.0.1:" + port, "X-Real-Ip: 203.0.113.7\r\n", true},
		{"Forwarded naming loopback", "127.0.0.1:" + port, "Forwarded: for=\"[::1]\"\r\n", false},
	}
	for _, ip := range nonLoopbackAddrs(t) {
		hp := net.JoinHostPort(ip.String(), port)
		clients = append(clients,
			client{"from " + ip.String(), hp, "", true},
			client{"from " + ip.String() + " claiming loopback", hp, "X-Forwarded-For: 127.0.0.1\r\n", true})
	}
	for _, c := range clients {
		for _, p := range paths {
			for _, tok := range []string{"dev-api-token", apiToken} {
				t.Run(c.name+" "+tok+" "+p[:7], func(t *testing.T) {
					status, body := rawTo(t, c.addr, "GET "+p+" HTTP/1.1\r\nHost: localhost:"+port+"\r\nAuthorization: Bearer "+tok+"\r\n"+c.header+"Connection: close\r\n\r\n")
					want := http.StatusOK
					if c.remote && tok == "dev-api-token" {
						want = http.StatusUnauthorized
					}
					if status != want {
						t.Fatalf("status %d, want %d: %s", status, want, body)
					}
					if want == http.StatusUnauthorized && !strings.Contains(string(body), "published example") {
						t.Errorf("the refusal does not say why: %s", body)
					}
				})
			}
		}
	}
}

// TestConsoleExampleTokenOnlyFromThisMachine: the published token signs in
// to the console from the gateway's machine only.
func TestConsoleExampleTokenOnlyFromThisMachine(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("unused password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	up := testenv.NewUpstream(t, testenv.UpstreamOptions{})
	g := newGateway(t)
	cfg := strings.Replace(consoleCaddyfile, "\t\tapi_token test-api-token-0123456789\n", "\t\tapi_token test-api-token-0123456789\n\t\tapi_token dev-api-token\n", 1)
	if err := loadCaddyfile(t, g.expand(cfg, "{{UPSTREAM}}", up.URL(), "{{HASH}}", string(hash))); err != nil {
		t.Fatalf("loading Caddy: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	hostPort := strings.TrimPrefix(g.base, "http://")
	_, port, _ := strings.Cut(hostPort, ":")

	// signIn posts the sign-in form over a connection to dial, naming the
	// gateway's host, and returns the answer's status.
	signIn := func(t *testing.T, dial, token, header string) int {
		t.Helper()
		jar, _ := cookiejar.New(nil)
		hc := &http.Client{Jar: jar, Timeout: 30 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, dial)
			}}}
		do := func(method, body string) (int, string) {
			req, _ := http.NewRequest(method, g.base+"/console/login", strings.NewReader(body))
			if body != "" {
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			if header != "" {
				k, v, _ := strings.Cut(header, ": ")
				req.Header.Set(k, v)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		_, page := do("GET", "")
		m := consoleCSRF.FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no sign-in form: %.200s", page)
		}
		status, _ := do("POST", url.Values{"csrf": {m[1]}, "secret": {token}}.Encode())
		return status
	}
	cases := []struct {
		name, dial, header string
		remote             bool
	}{
		{"loopback", "127.0.0.1:" + port, "", false},
		{"through a local proxy", "127.0.0.1:" + port, "X-Forwarded-For: 203.0.113.7", true},
	}
	for _, ip := range nonLoopbackAddrs(t) {
		cases = append(cases, struct {
			name, dial, header string
			remote             bool
		}{"from " + ip.String(), net.JoinHostPort(ip.String(), port), "", true})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := http.StatusSeeOther
			if c.remote {
				want = http.StatusUnauthorized
			}
			if got := signIn(t, c.dial, "dev-api-token", c.header); got != want {
				t.Errorf("published token: status %d, want %d", got, want)
			}
			if got := signIn(t, c.dial, apiToken, c.header); got != http.StatusSeeOther {
				t.Errorf("the operator's own token: status %d", got)
			}
		})
	}
}
