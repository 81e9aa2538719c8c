package account

import (
	"strings"
	"time"
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

// secretKeyParts are the fragments of a context key that mark its value as a
// secret. Context is meant for non-secret metadata, but applications put
// secrets there by mistake; showing them would be worse than hiding a harmless
// value.
var secretKeyParts = []string{"token", "secret", "password", "api_key", "apikey", "private", "credential", "authorization", "cookie"}

// IsSecretKey reports whether a context key looks like it holds a secret.
func IsSecretKey(k string) bool {
	k = strings.ToLower(k)
	for _, p := range secretKeyParts {
		if strings.Contains(k, p) {
			return true
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
