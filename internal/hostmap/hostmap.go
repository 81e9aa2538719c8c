// Package hostmap lets linkgate's own tests send the gateway's outgoing
// connections for chosen host names to servers on this machine, so that
// providers' real host names (a preset's *.zendesk.com) and per-account
// hosts are exercised end to end, over real sockets and real TLS, through
// the same templates and allowed_hosts checks as in production.
//
// Only tests set it, through Set; no configuration reaches it. Unset (as it
// always is outside tests) it changes nothing: dials go where they were
// going, and linkgate's clients trust the system's roots.
package hostmap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
)

// Map says where connections go instead.
type Map struct {
	// Addrs maps a dialed "host:port" to the address dialed instead.
	Addrs map[string]string
	// Fallback, when set, is dialed for every other host name (never an IP
	// literal or localhost), so that a test sees any connection to a host
	// it did not expect instead of a DNS failure.
	Fallback string
	// Roots are the certificate authorities linkgate's own clients (token
	// calls, discovery, userinfo) trust while the map is set.
	Roots *x509.CertPool
}

var current atomic.Pointer[Map]

// Set installs m until the returned function is called.
func Set(m *Map) (restore func()) {
	prev := current.Swap(m)
	return func() { current.Store(prev) }
}

// Redirect returns the address to dial instead of addr, when a map is set
// and names it (or has a fallback for a host name).
func Redirect(addr string) (string, bool) {
	m := current.Load()
	if m == nil {
		return "", false
	}
	if to, ok := m.Addrs[strings.ToLower(addr)]; ok {
		return to, true
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil || m.Fallback == "" || host == "localhost" || net.ParseIP(host) != nil {
		return "", false
	}
	return m.Fallback, true
}

// Dialer wraps dial so that addresses the map names are dialed where it
// says. Unset, it calls dial unchanged.
func Dialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if to, ok := Redirect(addr); ok {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", to)
		}
		return dial(ctx, network, addr)
	}
}

// Transport returns, when a map is set, an HTTP transport for linkgate's
// own clients that dials through it and trusts its roots; nil otherwise,
// which leaves the clients' defaults in place.
func Transport() http.RoundTripper {
	m := current.Load()
	if m == nil {
		return nil
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	var d net.Dialer
	tr.DialContext = Dialer(d.DialContext)
	tr.TLSClientConfig = &tls.Config{RootCAs: m.Roots, MinVersion: tls.VersionTLS12}
	return tr
}
