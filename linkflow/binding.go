package linkflow

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/linkgate/linkgate/tokenstore"
)

// An OAuth state is bound to the browser that pressed connect (RFC 9700
// §4.7, RFC 6749 §10.12): the POST that creates the state also sets a cookie
// holding a keyed hash of it, and the callback accepts a state only from a
// browser that sends that hash back. Whoever holds a link token can still
// start a flow, but the authorization URL he is sent to is worthless in
// anyone else's browser: a victim who approves it is shown a refusal, and
// her grant never reaches his account.
//
// The cookie holds the hashes of the browser's newest few states, so that
// a user who pressed connect in two tabs can finish either. Its attributes
// are what Chromium needs in each mode of the Link SDK:
//
//   - popup and same-window: the callback is a top-level navigation
//     redirected from the provider's site; any SameSite value but Strict
//     would do.
//   - iframe: the connect page, the provider and the callback all load in
//     a frame of the application's page. Chromium sends no SameSite=Lax
//     cookie to a frame navigated there by another site, and, when the
//     application is on another site than the gateway, no unpartitioned
//     cookie at all (third-party cookies); a Partitioned (CHIPS) cookie,
//     kept per top-level site, comes back to the same frame. So:
//     SameSite=None; Secure; Partitioned.
//
// Secure (and so the __Host- prefix, which also forbids Domain and pins
// Path=/, so no subdomain can plant or read the cookie) needs a secure
// origin: https, or a loopback host, which Chromium treats as secure over
// plain http. A public_url on plain http elsewhere gets a cookie without
// Secure, SameSite=Lax: popup and same-window work, iframe mode does not.
const (
	bindingCookieSecure = "__Host-linkgate-connect"
	bindingCookiePlain  = "linkgate-connect"
	// bindingInfo separates the binding key from every other use of the
	// gateway's secret keys.
	bindingInfo = "linkgate connect-state browser binding v1"
)

// binding makes and checks the browser binding of OAuth states.
type binding struct {
	// keys are HMAC keys derived from the gateway's secret keys; the first
	// signs, every one verifies, so that flows started before a key
	// rotation still finish.
	keys   [][]byte
	secure bool
	name   string
	path   string
	// maxAge is how long the browser keeps the cookie: longer than a state
	// lives, so that a late answer is told it took too long rather than
	// that it came from another browser.
	maxAge time.Duration
}

func newBinding(secrets [][]byte, publicURL *url.URL, stateTTL time.Duration) (*binding, error) {
	if len(secrets) == 0 {
		return nil, errors.New("linkflow: a secret key is required to bind OAuth states to the browser that started them")
	}
	b := &binding{maxAge: 2 * stateTTL}
	for i, s := range secrets {
		if len(s) < 16 {
			return nil, fmt.Errorf("linkflow: secret key %d is too short", i+1)
		}
		k, err := hkdf.Key(sha256.New, s, nil, bindingInfo, 32)
		if err != nil {
			return nil, fmt.Errorf("linkflow: deriving the state binding key: %w", err)
		}
		b.keys = append(b.keys, k)
	}
	b.secure = publicURL.Scheme == "https" || isLoopbackHost(publicURL.Hostname())
	if b.secure {
		b.name, b.path = bindingCookieSecure, "/"
	} else {
		b.name, b.path = bindingCookiePlain, strings.TrimSuffix(publicURL.Path, "/")+PathConnect
	}
	return b, nil
}

// isLoopbackHost reports whether browsers treat host as a secure context
// over plain http: localhost and its subdomains, and loopback addresses.
func isLoopbackHost(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// bindingMAC is the keyed hash of state under key, base64url.
func bindingMAC(key []byte, state string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(state))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// macLen is the length of an encoded MAC.
var macLen = base64.RawURLEncoding.EncodedLen(sha256.Size)

// entries are the well-formed MACs of the browser's cookie, newest first.
func (b *binding) entries(r *http.Request) []string {
	c, err := r.Cookie(b.name)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range strings.Split(c.Value, ".") {
		if len(e) == macLen && len(out) < tokenstore.ConnectStatesPerLinkToken {
			out = append(out, e)
		}
	}
	return out
}

// bind adds state to the browser's cookie, keeping the newest few.
func (b *binding) bind(w http.ResponseWriter, r *http.Request, state string) {
	list := append([]string{bindingMAC(b.keys[0], state)}, b.entries(r)...)
	if len(list) > tokenstore.ConnectStatesPerLinkToken {
		list = list[:tokenstore.ConnectStatesPerLinkToken]
	}
	b.set(w, list)
}

// check reports whether the browser's cookie binds state. Every entry is
// compared with every key's MAC in constant time. The entry stays: the
// store spends the state, so a reload of the answer is told it was already
// used rather than that another browser started it.
func (b *binding) check(r *http.Request, state string) bool {
	found := 0
	for _, k := range b.keys {
		want := []byte(bindingMAC(k, state))
		for _, e := range b.entries(r) {
			found |= subtle.ConstantTimeCompare([]byte(e), want)
		}
	}
	return found == 1
}

// set writes the cookie holding list.
func (b *binding) set(w http.ResponseWriter, list []string) {
	c := &http.Cookie{
		Name:     b.name,
		Value:    strings.Join(list, "."),
		Path:     b.path,
		MaxAge:   int(b.maxAge / time.Second),
		HttpOnly: true,
	}
	if b.secure {
		c.Secure, c.SameSite, c.Partitioned = true, http.SameSiteNoneMode, true
	} else {
		c.SameSite = http.SameSiteLaxMode
	}
	http.SetCookie(w, c)
}
