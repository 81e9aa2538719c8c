package account

import (
	"strings"
	"time"
	"unicode"
)

// Redacted is the placeholder that stands where a secret was.
const Redacted = "[REDACTED]"

// IntegrationRef names an integration in the wire format.
type IntegrationRef struct {
	Name string `json:"name"`
}

// View is an account as the API and webhook payloads show it: no credential,
// and context values under secret-looking keys redacted.
type View struct {
	ID                   string         `json:"id"`
	TenantID             string         `json:"tenant_id"`
	Integration          IntegrationRef `json:"integration"`
	AuthenticationMethod Method         `json:"authentication_method"`
	Status               Status         `json:"status"`
	Context              map[string]any `json:"context"`
	LastError            *Error         `json:"last_error"`
	CreatedAt            time.Time      `json:"created_at"`
	UpdatedAt            time.Time      `json:"updated_at"`
}

// View returns the redacted form of a.
func (a *Account) View() View {
	ctx := RedactContext(a.Context)
	if ctx == nil {
		ctx = map[string]any{}
	}
	return View{
		ID:                   a.ID,
		TenantID:             a.TenantID,
		Integration:          IntegrationRef{Name: a.Integration},
		AuthenticationMethod: a.Method,
		Status:               a.Status,
		Context:              ctx,
		LastError:            a.LastError,
		CreatedAt:            a.CreatedAt.UTC(),
		UpdatedAt:            a.UpdatedAt.UTC(),
	}
}

// IsSecretKey reports whether a context key looks like it holds a secret.
// Context is meant for non-secret metadata, but applications put secrets
// there by mistake (and Truto's clients put anything there); showing or
// storing them in clear would be worse than hiding a harmless value.
//
// The key is cut into words at every character that is not a letter or a
// digit and where a lower-case letter meets an upper-case one
// ("clientSecret", "X-Api-Key", "signing_key"). It is secret when
//   - a word contains one of secretFragments ("accesstoken", "passwords");
//   - a word is one of secretWords ("auth", "x-auth", "pwd", "session_id"),
//     so that "author", "authority" and "oauth_provider" stay readable;
//   - the words run together contain one of secretCompounds ("api-key",
//     "accessKeyId", "signing_key"), so that a lone "key" (sort_key,
//     idempotency_key) stays readable.
func IsSecretKey(k string) bool {
	words := keyWords(k)
	for _, w := range words {
		for _, f := range secretFragments {
			if strings.Contains(w, f) {
				return true
			}
		}
		if secretWords[w] {
			return true
		}
	}
	joined := strings.Join(words, "")
	for _, c := range secretCompounds {
		if strings.Contains(joined, c) {
			return true
		}
	}
	return false
}

var (
	secretFragments = []string{"token", "secret", "password", "passwd", "passphrase", "credential", "cookie", "bearer", "authorization"}
	secretWords     = map[string]bool{"auth": true, "pwd": true, "session": true, "private": true, "jwt": true}
	secretCompounds = []string{"apikey", "accesskey", "signingkey", "privatekey", "sessionkey", "encryptionkey", "masterkey"}
)

// keyWords cuts a key into lower-case words (see IsSecretKey). "OAuth" in
// any case is one word, so that "oAuthScopes" does not read as "auth".
func keyWords(k string) []string {
	var words []string
	var cur []rune
	flush := func() {
		if len(cur) > 0 {
			words = append(words, strings.ToLower(string(cur)))
			cur = cur[:0]
		}
	}
	rs := []rune(k)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		if i+5 <= len(rs) && strings.EqualFold(string(rs[i:i+5]), "oauth") {
			cur = append(cur, []rune("oauth")...)
			i += 4
			continue
		}
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			if unicode.IsUpper(r) && len(cur) > 0 && unicode.IsLower(cur[len(cur)-1]) {
				flush()
			}
			cur = append(cur, r)
		default:
			flush()
		}
	}
	flush()
	return words
}

// HasSecret reports whether m holds a value under a secret-looking key, at
// any depth: whether RedactContext would change it.
func HasSecret(m map[string]any) bool {
	for k, v := range m {
		if IsSecretKey(k) || hasSecretValue(v) {
			return true
		}
	}
	return false
}

func hasSecretValue(v any) bool {
	switch t := v.(type) {
	case map[string]any:
		return HasSecret(t)
	case []any:
		for _, e := range t {
			if hasSecretValue(e) {
				return true
			}
		}
	}
	return false
}

// RedactContext returns a copy of m with the values under secret-looking keys
// replaced by Redacted, at any depth.
func RedactContext(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		if IsSecretKey(k) {
			out[k] = Redacted
			continue
		}
		out[k] = redactValue(v)
	}
	return out
}

func redactValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		return RedactContext(t)
	case []any:
		s := make([]any, len(t))
		for i := range t {
			s[i] = redactValue(t[i])
		}
		return s
	}
	return v
}
