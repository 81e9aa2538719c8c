package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a certificate authority of a test: it issues server certificates
// for any host name, so that servers on 127.0.0.1 can answer for
// providers' real names (acme.zendesk.com) over real TLS, to clients that
// trust Pool.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

// NewCA makes a certificate authority.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "linkgate test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, key: key, pool: pool}
}

// Pool trusts the CA.
func (c *CA) Pool() *x509.CertPool { return c.pool }

// DER is the CA's certificate, for a trust pool in a Caddy config.
func (c *CA) DER() []byte { return c.cert.Raw }

// Certificate issues a server certificate for names (patterns such as
// *.zendesk.com allowed) and 127.0.0.1.
func (c *CA) Certificate(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// SiteOptions configures NewSite.
type SiteOptions struct {
	// Names are the host names the site's certificate covers.
	Names []string
	// AS, with OAuth, makes the site answer some paths as the
	// authorization server does, as a provider's own host does.
	AS *AuthServer
	// OAuth maps a path of the site to an endpoint of AS: "authorize",
	// "token", "discovery" or "userinfo". The consent form's /authorize is
	// always routed to AS when AS is set.
	OAuth map[string]string
	// AuthorizeParams are parameters the site's authorization page
	// requires (Atlassian's audience): a GET without them gets 400, and
	// they are removed before the request reaches AS, whose clients
	// declare no audience.
	AuthorizeParams map[string]string
	// UserIDField is the field in which the userinfo path answers the
	// signed-in subject (Salesforce's user_id, Atlassian's account_id);
	// default "sub".
	UserIDField string
	// Upstream says which credential the site's API (every other path)
	// accepts; its routes are those of Upstream.
	Upstream UpstreamOptions
}

// Site is a provider's host served over TLS on 127.0.0.1: its API is an
// Upstream (embedded: Requests, Last, Count, Reset, ForceStatus), and it
// may answer OAuth paths for an AuthServer. It counts the connections it
// accepts.
type Site struct {
	*Upstream
	conns atomic.Int64
}

// NewSite starts a site with a certificate from ca for o.Names and stops it
// when the test ends.
func NewSite(t testing.TB, ca *CA, o SiteOptions) *Site {
	t.Helper()
	u := &Upstream{opts: o.Upstream, done: make(chan struct{})}
	s := &Site{Upstream: u}
	mux := http.NewServeMux()
	if o.AS != nil {
		asURL, _ := url.Parse(o.AS.URL())
		routes := map[string]string{"/authorize": "authorize"}
		for p, e := range o.OAuth {
			routes[p] = e
		}
		for p, e := range routes {
			switch e {
			case "userinfo":
				field := o.UserIDField
				if field == "" {
					field = "sub"
				}
				mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
					token, _ := bearerToken(r)
					sub, ok := o.AS.ValidAccessToken(token)
					if !ok {
						writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
						return
					}
					writeJSON(w, http.StatusOK, map[string]string{field: sub})
				})
			default:
				target := "/" + e
				authorize := e == "authorize"
				rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
					pr.SetURL(asURL)
					pr.Out.URL.Path = target
					pr.Out.URL.RawPath = ""
					if authorize && len(o.AuthorizeParams) > 0 {
						q := pr.Out.URL.Query()
						for k := range o.AuthorizeParams {
							q.Del(k)
						}
						pr.Out.URL.RawQuery = q.Encode()
					}
				}}
				mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
					if authorize && r.Method == http.MethodGet {
						for k, v := range o.AuthorizeParams {
							if r.URL.Query().Get(k) != v {
								writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "missing " + k})
								return
							}
						}
					}
					rp.ServeHTTP(w, r)
				})
			}
		}
	}
	mux.HandleFunc("/", u.serve)
	u.srv = httptest.NewUnstartedServer(mux)
	u.srv.Config.ErrorLog = log.New(handshakeNoiseFilter{os.Stderr}, "", log.LstdFlags)
	u.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	u.srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Certificate(t, o.Names...)}}
	u.srv.StartTLS()
	t.Cleanup(u.close)
	return s
}

// Addr is the site's address, 127.0.0.1:port.
func (s *Site) Addr() string { return s.srv.Listener.Addr().String() }

// Conns is how many connections the site has accepted.
func (s *Site) Conns() int64 { return s.conns.Load() }

// Recorder is a TCP listener that only counts the connections made to it
// and closes them: where a test sends every host it does not expect to be
// called, to prove none was.
type Recorder struct {
	addr  string
	conns atomic.Int64
}

// NewRecorder starts a recorder on 127.0.0.1 and stops it when the test
// ends.
func NewRecorder(t testing.TB) *Recorder {
	t.Helper()
	l := listenLoopback(t)
	r := &Recorder{addr: l.Addr().String()}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r.conns.Add(1)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = l.Close() })
	return r
}

// Addr is the recorder's address.
func (r *Recorder) Addr() string { return r.addr }

// Conns is how many connections were made to the recorder.
func (r *Recorder) Conns() int64 { return r.conns.Load() }
