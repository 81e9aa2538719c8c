package linkgate

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/maphash"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/linkgate/linkgate/internal/wire"
)

// TenantAPIToken is an API token restricted to one tenant: every route
// answers it only about that tenant's accounts.
type TenantAPIToken struct {
	// Token is the bearer token; placeholders such as {env.X} are
	// resolved when the config loads.
	Token string `json:"token,omitempty"`
	// Tenant is the tenant_id the token is restricted to.
	Tenant string `json:"tenant,omitempty"`
}

// caller is who an API request comes from.
type caller struct {
	// tenant is the one tenant the caller may act for; empty for an
	// unrestricted API token.
	tenant string
}

// allows reports whether the caller may act on tenant's accounts.
func (c caller) allows(tenant string) bool { return c.tenant == "" || c.tenant == tenant }

type callerKey struct{}

// withCaller returns ctx carrying c.
func withCaller(ctx context.Context, c caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// callerOf returns the caller of a request authenticated by the API. A
// context without one is refused everything tenant-scoped, so a handler
// reached by a path that skipped authentication cannot widen access.
func callerOf(ctx context.Context) caller {
	if c, ok := ctx.Value(callerKey{}).(caller); ok {
		return c
	}
	return caller{tenant: "\x00no caller"}
}

// hashedToken is a configured API token with its restriction.
//
// A presented bearer is matched against it in two steps that take the same
// time whatever the bearer holds: a 64-bit hash keyed by a random seed of
// this token's (hash/maphash: a few dozen instructions, against about 2,500
// for SHA-256 on every proxied request), then, only when the hashes agree, a
// constant-time compare of the whole token. A wrong bearer's hash agrees
// with probability 2^-64 and the seed never leaves the process, so the only
// thing timing can tell is whether the bearer was the token, which the
// answer says anyway; nothing is cached per bearer, so nothing grows.
type hashedToken struct {
	// sum identifies the token where it must be remembered (the console's
	// session key); it is never compared with a bearer.
	sum    [sha256.Size]byte
	secret string
	seed   maphash.Seed
	hash   uint64
	tenant string
	// example marks a published example token, accepted from loopback
	// clients only.
	example bool
}

// newHashedToken keeps token for matching, restricted to tenant ("" for
// every tenant).
func newHashedToken(token, tenant string, example bool) hashedToken {
	seed := maphash.MakeSeed()
	return hashedToken{sum: sha256.Sum256([]byte(token)), secret: token, seed: seed,
		hash: maphash.String(seed, token), tenant: tenant, example: example}
}

// matches returns 1 if bearer is the token and 0 if not, in a time that
// depends on bearer's length only (and, for a bearer whose keyed hash
// agrees, on the token's).
func (t *hashedToken) matches(bearer string) int {
	if maphash.String(t.seed, bearer) != t.hash {
		return 0
	}
	if len(bearer) != len(t.secret) {
		return 0
	}
	var v byte
	for i := 0; i < len(bearer); i++ {
		v |= bearer[i] ^ t.secret[i]
	}
	return subtle.ConstantTimeByteEq(v, 0)
}

// Integrated account tokens: a short-lived bearer token that authorizes
// proxied calls of one account, and nothing else.
const (
	// accountTokenPrefix starts every integrated account token, so that
	// it is told apart from an API token before any MAC is computed.
	accountTokenPrefix = "lgiat1."
	// accountTokenTTL is how long an account token is valid, as Truto's.
	accountTokenTTL  = 15 * time.Minute
	accountTokenInfo = "linkgate integrated account token v1"
)

// accountTokens issues and checks integrated account tokens. A token is
// the account id, its expiry and an HMAC-SHA256 of both under a key
// derived (HKDF) from the gateway's first secret key; nothing is stored,
// every instance sharing the keys accepts it, and the keys after the first
// still verify, so a key rotation does not cut tokens already handed out.
type accountTokens struct {
	keys [][]byte
	now  func() time.Time
}

func newAccountTokens(secrets [][]byte) (*accountTokens, error) {
	if len(secrets) == 0 {
		return nil, errors.New("account tokens need a secret key")
	}
	t := &accountTokens{now: time.Now}
	for _, s := range secrets {
		k, err := hkdf.Key(sha256.New, s, nil, accountTokenInfo, 32)
		if err != nil {
			return nil, fmt.Errorf("deriving the account token key: %w", err)
		}
		t.keys = append(t.keys, k)
	}
	return t, nil
}

func accountTokenMAC(key []byte, id string, exp int64) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(accountTokenInfo))
	m.Write([]byte{0})
	m.Write([]byte(id))
	m.Write([]byte{0})
	m.Write([]byte(strconv.FormatInt(exp, 10)))
	return m.Sum(nil)
}

// issue returns a token for account id and when it expires.
func (t *accountTokens) issue(id string) (string, time.Time) {
	exp := t.now().Add(accountTokenTTL).Truncate(time.Second)
	mac := accountTokenMAC(t.keys[0], id, exp.Unix())
	return accountTokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(id)) + "." +
		strconv.FormatInt(exp.Unix(), 10) + "." + base64.RawURLEncoding.EncodeToString(mac), exp
}

// check returns the account a token authorizes, if it is genuine and not
// expired.
func (t *accountTokens) check(token string) (string, bool) {
	rest, ok := strings.CutPrefix(token, accountTokenPrefix)
	if !ok || len(rest) > 1024 {
		return "", false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return "", false
	}
	idb, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	exp, err2 := strconv.ParseInt(parts[1], 10, 64)
	mac, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return "", false
	}
	id := string(idb)
	good := 0
	for _, k := range t.keys {
		good |= subtle.ConstantTimeCompare(mac, accountTokenMAC(k, id, exp))
	}
	if good != 1 || !t.now().Before(time.Unix(exp, 0)) {
		return "", false
	}
	return id, true
}

// isAccountToken reports whether bearer has the form of an account token.
func isAccountToken(bearer string) bool { return strings.HasPrefix(bearer, accountTokenPrefix) }

// proxyGrant is what a bearer token allows on the proxy: every account (an
// unrestricted API token), one tenant's, or one account's (an integrated
// account token).
type proxyGrant struct {
	caller
	account string
}

// proxyGrant identifies the bearer token of a proxied call: an
// integrated account token, or an API token as authorize checks it.
func (a *App) proxyGrant(r *http.Request, rt *runtime, bearer string) (proxyGrant, error) {
	if isAccountToken(bearer) {
		if rt != nil && rt.tokens != nil {
			if id, ok := rt.tokens.check(bearer); ok {
				return proxyGrant{account: id}, nil
			}
		}
		return proxyGrant{}, errBadAccountToken
	}
	c, err := a.authorize(r, bearer)
	return proxyGrant{caller: c}, err
}

// errBadAccountToken answers an integrated account token that is not
// genuine or has expired.
var errBadAccountToken = &wire.Error{Status: http.StatusUnauthorized,
	Message: "invalid or expired integrated account token: ask the application for a new one (POST /integrated-account/token)"}

// allows reports whether the grant covers acct.
func (g proxyGrant) allows(acctID, tenant string) bool {
	if g.account != "" {
		return subtle.ConstantTimeCompare([]byte(g.account), []byte(acctID)) == 1
	}
	return g.caller.allows(tenant)
}
