// Package account is linkgate's domain: an integrated account, its credentials,
// the statuses it moves through and the one function through which every status
// change goes. It knows nothing of storage, HTTP or Caddy.
package account

import (
	"time"
)

// Status is where an integrated account stands in its life.
type Status string

// The statuses of an integrated account.
const (
	// StatusConnecting: created by a link token flow that has not finished.
	StatusConnecting Status = "connecting"
	// StatusActive: the account can authenticate.
	StatusActive Status = "active"
	// StatusNeedsReauth: the account can no longer authenticate; the end user
	// must reconnect through a link token.
	StatusNeedsReauth Status = "needs_reauth"
	// StatusPostInstallError and StatusValidationError are Truto's statuses
	// of an account whose post-install or validation steps failed. linkgate
	// runs such steps (discovery, connection fields, validate_url) while the
	// end user connects and stores nothing when they fail: the connect page
	// reports them with these names as its error_type instead, so no
	// account of linkgate's is in them; they are known so that filtering on
	// them answers an empty list, as Truto.
	StatusPostInstallError Status = "post_install_error"
	StatusValidationError  Status = "validation_error"
)

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusConnecting, StatusActive, StatusNeedsReauth, StatusPostInstallError, StatusValidationError:
		return true
	}
	return false
}

// Method is how an account authenticates to its upstream API.
type Method string

// The authentication methods linkgate supports.
const (
	MethodOAuth2            Method = "oauth2"
	MethodClientCredentials Method = "oauth2_client_credentials"
	MethodAPIKey            Method = "api_key"
	MethodBasic             Method = "basic"
)

// Valid reports whether m is one of the known methods.
func (m Method) Valid() bool {
	switch m {
	case MethodOAuth2, MethodClientCredentials, MethodAPIKey, MethodBasic:
		return true
	}
	return false
}

// Credentials are an account's secrets. They are sealed at rest and never
// leave linkgate except towards the account's upstream.
type Credentials struct {
	AccessToken  string    `json:"access_token,omitempty"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	TokenType    string    `json:"token_type,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"`
	// IssuedAt is when the access token was received, by linkgate's clock:
	// with Expiry it gives the token's lifetime as issued, which paces its
	// refreshes. Zero when unknown (a token imported with a bare expiry).
	IssuedAt time.Time `json:"issued_at,omitzero"`
	Scope    string    `json:"scope,omitempty"`
	APIKey   string    `json:"api_key,omitempty"`
	Username string    `json:"username,omitempty"`
	Password string    `json:"password,omitempty"`
}

// Empty reports whether c holds no secret at all.
func (c Credentials) Empty() bool { return c == Credentials{} }

// Error is the last authentication problem of an account, as shown to the
// application in the API and in webhook payloads. It never holds a secret.
type Error struct {
	Code    string    `json:"code"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// Account is an integrated account: one customer's connection to one
// third-party API.
type Account struct {
	ID          string
	TenantID    string
	Integration string
	Method      Method
	Status      Status
	// Context is non-secret metadata the application attached to the account.
	Context     map[string]any
	Credentials Credentials
	LastError   *Error
	// Version is the optimistic-concurrency version the store checks on update.
	Version   int64
	CreatedAt time.Time
	UpdatedAt time.Time
	// NextProbeAt is, for an account in needs_reauth, the earliest time a
	// refresh may be tried again to heal a misclassified failure.
	NextProbeAt time.Time
}

// Clone returns a deep copy of a, so that a cached account is never changed
// by the code that read it.
func (a *Account) Clone() *Account {
	if a == nil {
		return nil
	}
	c := *a
	c.Context = cloneMap(a.Context)
	if a.LastError != nil {
		e := *a.LastError
		c.LastError = &e
	}
	return &c
}

func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneValue(v)
	}
	return out
}

func cloneValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		return cloneMap(t)
	case []any:
		s := make([]any, len(t))
		for i := range t {
			s[i] = cloneValue(t[i])
		}
		return s
	}
	return v
}
