package linkgate

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/hostmap"
)

func init() {
	caddy.RegisterModule(Transport{})
}

// Transport is reverse_proxy's transport for proxied calls (`transport
// linkgate`): it sends each request that inject_credentials let through to
// the account's integration, with the account's credentials.
//
// The credentials are set at round-trip time, on a copy of the outgoing
// request with a header map of its own: reverse_proxy's removal of
// hop-by-hop headers (which a caller steers with its Connection header)
// runs before, and its "upstream roundtrip" debug log prints the request it
// handed over, which never holds them. The scheme, the Host header, the TLS
// server name and the base path come from the integration's base_url: an
// https integration is always reached over TLS, an http one in plain HTTP,
// one transport serving both. The caller's Authorization and
// Proxy-Authorization, its values where the account's credentials go (and,
// for OAuth, in the access_token query parameter), and the Forwarded and
// X-Forwarded-* headers that describe the caller's hop never reach the
// upstream; of protocol upgrades only WebSocket passes.
//
// It takes every option of Caddy's http transport (timeouts, keep-alive,
// HTTP versions, the trust pool for https upstreams, a network proxy),
// except those that would weaken or misdirect TLS: tls_insecure_skip_verify,
// tls_server_name, tls_except_ports, and proxy_protocol.
type Transport struct {
	reverseproxy.HTTPTransport
}

// CaddyModule returns the Caddy module information.
func (Transport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.transport.linkgate",
		New: func() caddy.Module { return new(Transport) },
	}
}

// defaultTLSHandshakeTimeout bounds a TLS handshake to an upstream when the
// configuration does not, as Go's default transport does.
const defaultTLSHandshakeTimeout = 10 * time.Second

// Provision checks the options and builds the connection pool.
func (t *Transport) Provision(ctx caddy.Context) error {
	if t.TLS != nil {
		switch {
		case t.TLS.InsecureSkipVerify:
			return errors.New("transport linkgate: tls_insecure_skip_verify would send credentials to any server: trust the upstream's CA with tls_trust_pool instead")
		case t.TLS.ServerName != "":
			return errors.New("transport linkgate: tls_server_name: the server name comes from each integration's base_url")
		case len(t.TLS.ExceptPorts) > 0:
			return errors.New("transport linkgate: tls_except_ports: TLS is used exactly for https base_urls")
		}
	}
	if t.ProxyProtocol != "" {
		return errors.New("transport linkgate: proxy_protocol is not for third-party APIs")
	}
	// A TLS config even when none is written, so that https integrations
	// get a handshake timeout; the system's roots are trusted by default.
	if t.TLS == nil {
		t.TLS = new(reverseproxy.TLSConfig)
	}
	if t.TLS.HandshakeTimeout == 0 {
		t.TLS.HandshakeTimeout = caddy.Duration(defaultTLSHandshakeTimeout)
	}
	if err := t.HTTPTransport.Provision(ctx); err != nil {
		return err
	}
	// Tests point real host names at servers on this machine through
	// hostmap; unset, the wrapper calls Caddy's dialer unchanged. Caddy's
	// dialer dials the address reverse_proxy chose, which the request
	// context holds, so that is the address looked up.
	if tr := t.HTTPTransport.Transport; tr != nil && tr.DialContext != nil {
		dial := tr.DialContext
		mapped := hostmap.Dialer(dial)
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if di, ok := reverseproxy.GetDialInfo(ctx); ok && !strings.HasPrefix(di.Network, "unix") {
				if _, ok := hostmap.Redirect(di.Address); ok {
					return mapped(ctx, network, di.Address)
				}
			}
			return dial(ctx, network, addr)
		}
	}
	return nil
}

// RequestHeaderOps returns nothing: the transport sets Host itself, so
// reverse_proxy has no header operation to apply (and no header map to copy)
// for it.
func (*Transport) RequestHeaderOps() *headers.HeaderOps { return nil }

// UnmarshalCaddyfile sets up the transport from Caddyfile tokens. Syntax:
//
//	transport linkgate [{
//		<any option of transport http but those named on Transport>
//	}]
func (t *Transport) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return t.HTTPTransport.UnmarshalCaddyfile(d)
}

// RoundTrip sends req to the integration of the account inject_credentials
// chose for it, with the account's credentials. It refuses a request that
// did not pass inject_credentials, and one that reverse_proxy would dial
// anywhere but the integration's upstream.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	di, _ := reverseproxy.GetDialInfo(req.Context())
	out, c, err := prepare(req, di.Address)
	if err != nil {
		return nil, err
	}
	c.sent.Store(true)
	res, err := t.HTTPTransport.RoundTrip(out)
	if res != nil {
		// The response names the request reverse_proxy knows, not the copy
		// with the credentials.
		res.Request = req
	}
	return res, err
}

// prepare returns the request to send in req's place, to dial: a copy
// pointed at the target inject_credentials chose, with the account's
// credentials, which req never holds.
func prepare(req *http.Request, dial string) (*http.Request, *call, error) {
	c := callOf(req)
	if c == nil {
		return nil, nil, errNotInjected
	}
	tg := c.target
	if dial != tg.dial {
		return nil, nil, fmt.Errorf("reverse_proxy dials %q but integration %s is at %s, so no credentials were sent: write reverse_proxy {integrated_account.upstream} { transport linkgate }",
			dial, c.up.name, tg.dial)
	}

	// The request, its URL and the credential header's value in one
	// allocation.
	o := &struct {
		req  http.Request
		url  url.URL
		cred [1]string
	}{req: *req, url: *req.URL}
	out := &o.req
	out.URL = &o.url
	tg.direct(out.URL)
	out.Host = tg.host
	// A header map of the request's own: the values are shared, never
	// changed; only what the transport sets or drops differs.
	h := make(http.Header, len(req.Header)+1)
	// upgrade: a Connection or a non-empty Upgrade is among them, noted
	// while copying rather than looked up after.
	upgrade := false
	for k, v := range req.Header {
		if c.up.dropsHeader(k) {
			continue
		}
		h[k] = v
		if k == "Connection" || k == "Upgrade" && len(v) > 0 {
			upgrade = true
		}
	}
	if upgrade {
		// reverse_proxy has already removed what the caller's Connection
		// named and put back "Connection: Upgrade" for an upgrade. Only a
		// WebSocket upgrade goes on, with Connection naming nothing else, so
		// that no proxy further on removes a header the transport set; an
		// upgrade to another protocol (h2c, TLS) would hand the caller a
		// connection whose later requests the transport never sees.
		if isWebSocketUpgrade(h) {
			h["Connection"] = []string{"Upgrade"}
			h["Upgrade"] = []string{"websocket"}
		} else {
			delete(h, "Connection")
			delete(h, "Upgrade")
		}
	}
	for _, kv := range c.headers {
		h[kv[0]] = []string{kv[1]}
	}
	out.Header = h
	c.up.setCredentials(out, c.creds, &o.cred)
	if out.Body != nil && out.Trailer != nil {
		out.Body = &trailerScrubber{ReadCloser: out.Body, trailer: out.Trailer, up: c.up}
	}
	return out, c, nil
}

// isWebSocketUpgrade reports whether outgoing headers ask for a WebSocket
// upgrade and nothing else.
func isWebSocketUpgrade(h http.Header) bool {
	c, u := h["Connection"], h["Upgrade"]
	return len(c) == 1 && strings.EqualFold(c[0], "upgrade") && len(u) == 1 && strings.EqualFold(u[0], "websocket")
}

// errNotInjected is the transport's answer to a request that did not pass
// inject_credentials.
var errNotInjected = errors.New("transport linkgate serves only requests that passed inject_credentials: put inject_credentials before this reverse_proxy")

// dropsHeader reports whether a request header must not reach the upstream:
// the caller's credentials, whatever sits where the account's credentials
// go, and the caller's hop (Forwarded, X-Forwarded-*), which upstreams
// behind their own proxies may trust to pick a host or a tenant.
func (up *upstream) dropsHeader(k string) bool {
	switch k {
	case "Authorization", "Proxy-Authorization", "Forwarded",
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
		return true
	}
	return k == up.credHeader || up.headerNames[k]
}

// setCredentials puts the account's credentials where the integration wants
// them, on a request whose header map is the transport's own; a header's
// value goes in slot, which is the request's own too.
func (up *upstream) setCredentials(out *http.Request, c account.Credentials, slot *[1]string) {
	in := up.integration
	switch in.Auth {
	case account.MethodAPIKey:
		if up.credHeader == "" {
			// Replace any caller-sent value; keep the rest of the query as sent.
			q, _, _, _ := cutQueryParam(out.URL.RawQuery, in.APIKeyQuery)
			if q != "" {
				q += "&"
			}
			out.URL.RawQuery = q + url.QueryEscape(in.APIKeyQuery) + "=" + url.QueryEscape(c.APIKey)
			return
		}
		slot[0] = up.credPrefix + c.APIKey
		out.Header[up.credHeader] = slot[:]
	case account.MethodBasic:
		slot[0] = "Basic " + base64.StdEncoding.EncodeToString([]byte(c.Username+":"+c.Password))
		out.Header["Authorization"] = slot[:]
	default:
		// Where the integration's token_header and token_prefix say; by
		// default RFC 6750's "Bearer", whatever token_type the provider
		// answered (Slack's "user" and "bot" are bearer tokens too).
		slot[0] = up.credPrefix + c.AccessToken
		out.Header[up.credHeader] = slot[:]
		// access_token is where RFC 6750 lets a bearer token ride in the
		// query: a caller's one there would compete with the account's.
		if q, _, n, _ := cutQueryParam(out.URL.RawQuery, "access_token"); n > 0 {
			out.URL.RawQuery = q
		}
	}
}

// trailerScrubber removes from a request's trailers, once the body has been
// read and reverse_proxy has copied the caller's trailers in, every field
// the headers may not carry either.
type trailerScrubber struct {
	io.ReadCloser
	trailer http.Header
	up      *upstream
}

func (b *trailerScrubber) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		for k := range b.trailer {
			if b.up.dropsHeader(http.CanonicalHeaderKey(k)) {
				delete(b.trailer, k)
			}
		}
	}
	return n, err
}

// Interface guards
var (
	_ caddy.Provisioner                      = (*Transport)(nil)
	_ caddy.CleanerUpper                     = (*Transport)(nil)
	_ caddyfile.Unmarshaler                  = (*Transport)(nil)
	_ http.RoundTripper                      = (*Transport)(nil)
	_ reverseproxy.RequestHeaderOpsTransport = (*Transport)(nil)
)
