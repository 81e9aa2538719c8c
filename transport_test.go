package linkgate_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/linkgate/linkgate/internal/testenv"
)

// transportCaddyfile is a gateway with one api_key integration and a proxy
// route whose reverse_proxy is {{PROXY}}.
const transportCaddyfile = `{
	admin off
	integrated_accounts {
		storage sqlite {{DATA}}/linkgate.db
		api_token test-api-token-0123456789
		public_url http://{{GATEWAY}}
		integration keyed {
			auth api_key
			base_url {{UPSTREAM}}
			api_key_header X-Api-Key
		}
	}
}

http://{{GATEWAY}} {
	handle /proxy/* {
		uri strip_prefix /proxy
		{{PROXY}}
	}
	handle /bare/* {
		{{BARE}}
	}
	handle {
		accounts_api
	}
}
`

// loadTransportGateway loads transportCaddyfile and returns the gateway,
// or the load error.
func loadTransportGateway(t *testing.T, upstream, proxy, bare string) (*gateway, error) {
	t.Helper()
	g := newGateway(t)
	if bare == "" {
		bare = "respond 404"
	}
	err := loadCaddyfile(t, g.expand(transportCaddyfile, "{{UPSTREAM}}", upstream, "{{PROXY}}", proxy, "{{BARE}}", bare))
	t.Cleanup(func() { _ = caddy.Stop() })
	return g, err
}

// TestTransportRefusesOptionsThatWeakenTLS: options of Caddy's http
// transport that would send credentials to an unverified or misnamed
// server, or speak PROXY protocol to a third party, refuse to load and
// name the option.
func TestTransportRefusesOptionsThatWeakenTLS(t *testing.T) {
	up := testenv.NewUpstream(t, testenv.UpstreamOptions{})
	for _, opt := range []string{"tls_insecure_skip_verify", "tls_server_name api.example.com", "tls_except_ports 443", "proxy_protocol v2"} {
		name, _, _ := strings.Cut(opt, " ")
		t.Run(name, func(t *testing.T) {
			_, err := loadTransportGateway(t, up.URL(), "inject_credentials\n\t\treverse_proxy {integrated_account.upstream} {\n\t\t\ttransport linkgate {\n\t\t\t\t"+opt+"\n\t\t\t}\n\t\t}", "")
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("err = %v, want one naming %s", err, name)
			}
		})
	}
}

// TestTransportSendsOnlyWhereInjectPointed: the transport refuses a request
// that did not pass inject_credentials, and one that reverse_proxy would
// dial anywhere but the account's integration; neither reaches a server.
func TestTransportSendsOnlyWhereInjectPointed(t *testing.T) {
	const key = "sk_only_here_5a5a"
	up := testenv.NewUpstream(t, testenv.UpstreamOptions{APIKey: key, APIKeyHeader: "X-Api-Key"})
	other := testenv.NewUpstream(t, testenv.UpstreamOptions{})
	otherAddr := strings.TrimPrefix(other.URL(), "http://")
	g, err := loadTransportGateway(t, up.URL(),
		"inject_credentials\n\t\treverse_proxy "+otherAddr+" {\n\t\t\ttransport linkgate\n\t\t}",
		"reverse_proxy "+otherAddr+" {\n\t\t\ttransport linkgate\n\t\t}")
	if err != nil {
		t.Fatal(err)
	}
	id := g.importAccount(map[string]any{"tenant_id": "t", "integration": "keyed", "context": map[string]any{"api_key": key}})

	status, body := g.do("GET", "/proxy/x?integrated_account_id="+id, nil)
	if status != http.StatusBadGateway {
		t.Errorf("a reverse_proxy dialling another upstream: %d %s", status, body)
	}
	status, body = g.do("GET", "/bare/x", nil)
	if status != http.StatusBadGateway {
		t.Errorf("the transport without inject_credentials: %d %s", status, body)
	}
	if other.Count() != 0 || up.Count() != 0 {
		t.Errorf("requests reached a server: %d to the other, %d to the integration's", other.Count(), up.Count())
	}
	status, body = g.do("GET", "/integrated-account/"+id, nil)
	if status != http.StatusOK || mustJSON(t, body)["status"] != "active" {
		t.Errorf("the account after the refusals: %d %s", status, body)
	}
}

// TestTransportUpgradesWithCredentials: a protocol upgrade (a WebSocket)
// goes through the transport with the account's credentials, and the
// upgraded connection carries data both ways.
func TestTransportUpgradesWithCredentials(t *testing.T) {
	const key = "sk_upgrade_7c7c"
	ws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key") != key || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "no key or no upgrade", http.StatusUnauthorized)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		line, _ := brw.ReadString('\n')
		_, _ = io.WriteString(conn, "echo: "+line)
	}))
	t.Cleanup(ws.Close)
	g, err := loadTransportGateway(t, ws.URL, "inject_credentials\n\t\treverse_proxy {integrated_account.upstream} {\n\t\t\ttransport linkgate\n\t\t}", "")
	if err != nil {
		t.Fatal(err)
	}
	id := g.importAccount(map[string]any{"tenant_id": "t", "integration": "keyed", "context": map[string]any{"api_key": key}})

	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(g.base, "http://"), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	_, _ = io.WriteString(conn, "GET /proxy/socket?integrated_account_id="+id+" HTTP/1.1\r\nHost: "+strings.TrimPrefix(g.base, "http://")+
		"\r\nAuthorization: Bearer "+apiToken+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	_, _ = io.WriteString(conn, "ping\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "echo: ping\n" {
		t.Fatalf("over the upgraded connection: %q %v", line, err)
	}
}
