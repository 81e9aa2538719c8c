package linkgate

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestAccountTokens(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	issuer, err := newAccountTokens([][]byte{k1})
	if err != nil {
		t.Fatal(err)
	}
	issuer.now = func() time.Time { return now }
	tok, exp := issuer.issue("acct-1")
	if !exp.Equal(now.Add(15 * time.Minute)) {
		t.Fatalf("expires %v, want 15 minutes", exp)
	}
	if id, ok := issuer.check(tok); !ok || id != "acct-1" {
		t.Fatalf("check = %q %v", id, ok)
	}
	// After a key rotation (new key first, old after), it still verifies;
	// under other keys it does not.
	rotated, _ := newAccountTokens([][]byte{k2, k1})
	rotated.now = issuer.now
	if id, ok := rotated.check(tok); !ok || id != "acct-1" {
		t.Fatal("a token stopped working when a new key was put first")
	}
	other, _ := newAccountTokens([][]byte{k2})
	other.now = issuer.now
	if _, ok := other.check(tok); ok {
		t.Fatal("a token verified under another key")
	}
	// Expired at its expiry.
	issuer.now = func() time.Time { return exp }
	if _, ok := issuer.check(tok); ok {
		t.Fatal("an expired token verified")
	}
	issuer.now = func() time.Time { return now }
	// Tampered: another account, a later expiry, a changed MAC, junk.
	parts := strings.Split(strings.TrimPrefix(tok, accountTokenPrefix), ".")
	other2, _ := issuer.issue("acct-2")
	otherParts := strings.Split(strings.TrimPrefix(other2, accountTokenPrefix), ".")
	for name, bad := range map[string]string{
		"other account": accountTokenPrefix + otherParts[0] + "." + parts[1] + "." + parts[2],
		"later expiry":  accountTokenPrefix + parts[0] + "." + "9999999999" + "." + parts[2],
		"changed mac":   accountTokenPrefix + parts[0] + "." + parts[1] + "." + otherParts[2],
		"no mac":        accountTokenPrefix + parts[0] + "." + parts[1],
		"api token":     "test-api-token-0123456789",
		"empty":         "",
		"long":          accountTokenPrefix + strings.Repeat("a", 2000),
	} {
		if _, ok := issuer.check(bad); ok {
			t.Errorf("%s: verified", name)
		}
	}
}

func TestIdentifyTenantTokens(t *testing.T) {
	a := &App{APITokens: []string{"full-token-0123456789"}, TenantAPITokens: []TenantAPIToken{{Token: "acme-token-0123456789", Tenant: "acme"}}}
	a.tokens = []hashedToken{newHashedToken("full-token-0123456789", "", false), newHashedToken("acme-token-0123456789", "acme", false)}
	r := httptest.NewRequest("GET", "/", nil)
	if c, err := a.authorize(r, "acme-token-0123456789"); err != nil || c.tenant != "acme" || !c.allows("acme") || c.allows("globex") {
		t.Fatalf("tenant token: %+v %v", c, err)
	}
	if c, err := a.authorize(r, "full-token-0123456789"); err != nil || c.tenant != "" || !c.allows("globex") {
		t.Fatalf("full token: %+v %v", c, err)
	}
	if _, err := a.authorize(r, "nope"); err == nil {
		t.Fatal("an unknown token is authorized")
	}
	// A request context that skipped authentication allows no tenant.
	if callerOf(t.Context()).allows("acme") {
		t.Fatal("a context without a caller allows a tenant")
	}
}

// TestAPITokenMatchesExactly: only the configured token itself authorizes;
// a bearer that differs in any one byte, is a prefix or an extension of it,
// or is another tenant's token does not.
func TestAPITokenMatchesExactly(t *testing.T) {
	const full, acme = "full-token-0123456789abcdef", "acme-token-0123456789abcdef"
	a := &App{tokens: []hashedToken{newHashedToken(full, "", false), newHashedToken(acme, "acme", false)}}
	if a.tokenIndex(full) != 0 || a.tokenIndex(acme) != 1 {
		t.Fatalf("the tokens themselves: %d %d", a.tokenIndex(full), a.tokenIndex(acme))
	}
	bad := []string{"", full[:len(full)-1], full + "x", " " + full, strings.ToUpper(full), full + full}
	for i := range len(full) {
		b := []byte(full)
		b[i] ^= 1
		bad = append(bad, string(b))
	}
	for _, b := range bad {
		if i := a.tokenIndex(b); i != -1 {
			t.Errorf("%q is taken for token %d", b, i)
		}
	}
	// The same token under another seed still matches: nothing depends on
	// which process or load hashed it.
	if fresh := newHashedToken(full, "", false); fresh.matches(full) != 1 {
		t.Fatal("a fresh seed does not match its own token")
	}
}
