package linkgate

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/linkgate/linkgate/account"
)

// target is where one proxied request goes. inject_credentials computes it
// for every request and hands it to the linkgate transport in the request's
// context, so that the scheme, the address dialled, the Host header, the TLS
// server name and the base path all come from this one value and never from
// the request. Every account of an integration shares its integration's
// target today; an upstream host of an account's own would only change how
// inject_credentials computes it.
type target struct {
	// scheme is "http" or "https": the transport speaks TLS exactly when
	// it is "https", whatever the route's configuration says.
	scheme string
	// host is the URL host and the Host header: the base URL's host, with
	// its port only when the base URL names one. Its host name is also the
	// TLS server name the certificate is checked against.
	host string
	// dial is the host:port connected to; reverse_proxy must dial it.
	dial string
	// path and rawPath are the base URL's path, decoded and as written,
	// without a trailing slash; escaped says they differ.
	path, rawPath string
	escaped       bool
	// dialValue and schemeValue are dial and scheme boxed once, for the
	// {integrated_account.upstream} and .scheme placeholders.
	dialValue, schemeValue any
}

// newTarget takes a base URL apart once, when the config loads.
func newTarget(baseURL string) (*target, error) {
	base, err := url.Parse(baseURL)
	if err != nil {
		return nil, err
	}
	if (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("%q is not an absolute http(s) URL", baseURL)
	}
	if base.User != nil || base.RawQuery != "" || base.Fragment != "" {
		return nil, fmt.Errorf("%q: a base URL takes no user, query or fragment", baseURL)
	}
	t := &target{
		scheme:  base.Scheme,
		host:    base.Host,
		dial:    hostPort(base),
		path:    strings.TrimRight(base.Path, "/"),
		rawPath: strings.TrimRight(base.EscapedPath(), "/"),
	}
	t.escaped = t.path != t.rawPath
	t.dialValue, t.schemeValue = t.dial, t.scheme
	return t, nil
}

// hostPort is the dial address of a base URL, with the scheme's port.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// direct points an outgoing URL at the target: its scheme and host, and the
// base path before the request's path. The request's path keeps its own
// escaping whether or not it has any (a %2F stays one), and leading slashes
// collapse into one so that "//host/x" is a path, never an authority.
func (t *target) direct(u *url.URL) {
	u.Scheme, u.Host = t.scheme, t.host
	u.Opaque, u.User = "", nil
	if u.RawPath == "" && !t.escaped {
		if oneLeadingSlash(u.Path) {
			// The common case: the path stays as it is, or gets the base
			// path before it, without trimming.
			if t.path != "" {
				u.Path = t.path + u.Path
			}
			return
		}
		u.Path = t.path + "/" + strings.TrimLeft(u.Path, "/")
		return
	}
	raw := t.rawPath + "/" + strings.TrimLeft(u.EscapedPath(), "/")
	u.Path = t.path + "/" + strings.TrimLeft(u.Path, "/")
	u.RawPath = raw
}

// oneLeadingSlash reports whether path starts with exactly one slash.
func oneLeadingSlash(path string) bool {
	return len(path) > 0 && path[0] == '/' && (len(path) == 1 || path[1] != '/')
}

// upstream is an integration as the proxy path needs it, prepared once when
// the config loads so that the proxy path does no parsing. Its name is kept
// as an interface value, boxed once, for the placeholder.
type upstream struct {
	integration *account.Integration
	target      *target
	// credHeader is the canonical name of the header the credentials go
	// in, and credPrefix what precedes an api_key account's key there;
	// credHeader is "" when the key goes in the query.
	credHeader, credPrefix string
	name                   any
	// perAccount: base_url or headers use connection fields, so target
	// and headers are resolved for each account (target is then nil).
	perAccount bool
	// headers are the integration's static headers (canonical names),
	// when they are the same for every account.
	headers [][2]string
	// headerNames are the static headers' canonical names: the caller's
	// values of them never reach the upstream.
	headerNames map[string]bool
}

// canonicalHeaders returns headers as canonical name-value pairs.
func canonicalHeaders(h map[string]string) [][2]string {
	var out [][2]string
	for k, v := range h {
		out = append(out, [2]string{http.CanonicalHeaderKey(k), v})
	}
	return out
}

// forAccount returns where a request of account a goes and the static
// headers it carries. For an integration whose base_url or headers use
// connection fields, they are resolved from the account's context, and
// the resolved host must match the integration's allowed_hosts; the error
// is then an *account.FieldError naming the field or option refused.
func (up *upstream) forAccount(a *account.Account) (*target, [][2]string, error) {
	if !up.perAccount {
		return up.target, up.headers, nil
	}
	in := up.integration
	conn := in.Connection(a.Context)
	base, err := in.ResolveURL("base_url", in.BaseURL, conn)
	if err != nil {
		return nil, nil, err
	}
	t, err := newTarget(base)
	if err != nil {
		return nil, nil, &account.FieldError{Field: "base_url", Message: err.Error()}
	}
	h, err := in.ResolveHeaders("headers", in.Headers, conn)
	if err != nil {
		return nil, nil, err
	}
	return t, canonicalHeaders(h), nil
}

// unfitCredentialHeader reports headers that a key would not survive in:
// hop-by-hop ones, which any proxy on the way removes, those that frame the
// message, and those the transport drops or sets itself.
func unfitCredentialHeader(h string) bool {
	switch h {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
		"Host", "Content-Length", "Proxy-Authorization", "Proxy-Authenticate", "Expect",
		"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
		return true
	}
	return false
}

func newUpstream(in *account.Integration) (*upstream, error) {
	up := &upstream{integration: in, name: in.Name, credHeader: "Authorization"}
	if in.Templated() {
		// Each account has its own target, resolved for every request
		// from its connection fields (see forAccount).
		up.perAccount = true
	} else {
		t, err := newTarget(in.BaseURL)
		if err != nil {
			return nil, fmt.Errorf("integration %s: base_url: %w", in.Name, err)
		}
		up.target = t
		up.headers = canonicalHeaders(in.Headers)
	}
	for k := range in.Headers {
		ck := http.CanonicalHeaderKey(k)
		if unfitCredentialHeader(ck) || ck == "Authorization" {
			return nil, fmt.Errorf("integration %s: headers: %s cannot be set as a static header", in.Name, k)
		}
		if up.headerNames == nil {
			up.headerNames = map[string]bool{}
		}
		up.headerNames[ck] = true
	}
	if in.Auth == account.MethodOAuth2 || in.Auth == account.MethodClientCredentials {
		up.credHeader, up.credPrefix = in.TokenAuthorization("")
		if up.credHeader != "Authorization" && unfitCredentialHeader(up.credHeader) {
			return nil, fmt.Errorf("integration %s: token_header %s cannot carry a token: proxies and HTTP itself remove or rewrite it", in.Name, in.TokenHeader)
		}
	}
	if in.Auth == account.MethodAPIKey {
		switch {
		case in.APIKeyQuery != "":
			up.credHeader = ""
		case in.APIKeyHeader != "":
			up.credHeader = http.CanonicalHeaderKey(in.APIKeyHeader)
			up.credPrefix = in.APIKeyPrefix
			if unfitCredentialHeader(up.credHeader) {
				return nil, fmt.Errorf("integration %s: api_key_header %s cannot carry a key: proxies and HTTP itself remove or rewrite it", in.Name, in.APIKeyHeader)
			}
		default:
			up.credPrefix = in.APIKeyPrefix
			if up.credPrefix == "" {
				up.credPrefix = "Bearer "
			}
		}
	}
	return up, nil
}
