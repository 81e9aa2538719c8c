package account

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Integration is the configuration of one third-party API: how its accounts
// authenticate and where its API lives. It is filled from the Caddy config
// of the integrated_accounts app; the JSON names are that config's.
type Integration struct {
	// Name identifies the integration, e.g. "hubspot".
	Name string `json:"name,omitempty"`
	// Category is the integration's category in Truto's terms ("crm",
	// "helpdesk", …), shown in the integration object of every account.
	Category string `json:"category,omitempty"`
	// DisplayName is the name the end user sees on the connect page and
	// the operator in the console, e.g. "HubSpot"; default Name.
	DisplayName string `json:"display_name,omitempty"`
	// Help is a short text for the connect page, e.g. where to find an
	// API key in the provider's settings.
	Help string `json:"help,omitempty"`
	// Docs is the provider's documentation page the endpoints come from.
	Docs string `json:"docs,omitempty"`
	// Auth is the authentication method of the integration's accounts.
	Auth Method `json:"auth,omitempty"`
	// BaseURL is the upstream API; proxied paths are appended to it.
	BaseURL string `json:"base_url,omitempty"`

	// AuthorizeURL is the OAuth 2 authorization endpoint (oauth2).
	AuthorizeURL string `json:"authorize_url,omitempty"`
	// TokenURL is the OAuth 2 token endpoint (oauth2, oauth2_client_credentials).
	TokenURL string `json:"token_url,omitempty"`
	// ClientID is the OAuth 2 client id.
	ClientID string `json:"client_id,omitempty"`
	// ClientSecret is the OAuth 2 client secret; placeholders such as
	// {env.HUBSPOT_SECRET} are resolved when the config loads.
	ClientSecret string `json:"client_secret,omitempty"`
	// Scopes are requested when the end user authorizes.
	Scopes []string `json:"scopes,omitempty"`
	// AuthStyle is how the client authenticates at the token endpoint:
	// "header" (HTTP Basic, the default) or "params" (in the body). It is
	// never detected by trial: detection resends a refused request the other
	// way, which would present a refresh token twice.
	AuthStyle string `json:"auth_style,omitempty"`
	// Issuer is the provider's issuer identifier; when set, an "iss"
	// parameter on the authorization response must equal it (RFC 9207).
	Issuer string `json:"issuer,omitempty"`
	// UserinfoURL, with UserIDField, reads the upstream identity of an
	// account, so that a reconnect as another upstream user is refused.
	UserinfoURL string `json:"userinfo_url,omitempty"`
	// UserIDField is the JSON field of the userinfo answer that holds the
	// upstream user id.
	UserIDField string `json:"user_id_field,omitempty"`

	// APIKeyHeader is the request header that carries an api_key
	// account's key; default "Authorization" with the "Bearer " prefix.
	APIKeyHeader string `json:"api_key_header,omitempty"`
	// APIKeyPrefix is written before the key in APIKeyHeader, e.g. "Bearer ".
	APIKeyPrefix string `json:"api_key_prefix,omitempty"`
	// APIKeyQuery, when set, carries the key in this query parameter
	// instead of a header.
	APIKeyQuery string `json:"api_key_query,omitempty"`
	// ValidateURL, when set, is requested with new api_key or basic
	// credentials from the connect page; they are saved only if it answers 2xx.
	ValidateURL string `json:"validate_url,omitempty"`

	// RefreshSkew: a token valid for less than this is refreshed in the
	// background while still used. Default 60s.
	RefreshSkew Duration `json:"refresh_skew,omitempty"`
	// ProbeInterval: at most one refresh try per account in needs_reauth
	// per interval, so a misclassified failure heals. Default 10m.
	ProbeInterval Duration `json:"probe_interval,omitempty"`
}

// Duration is a time.Duration that reads "90s" or a number of nanoseconds
// from JSON, like Caddy's.
type Duration time.Duration

// UnmarshalJSON reads a Go duration string or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		var n int64
		if _, err2 := fmt.Sscan(s, &n); err2 != nil {
			return fmt.Errorf("invalid duration %q: %w", s, err)
		}
		v = time.Duration(n)
	}
	*d = Duration(v)
	return nil
}

// Defaults of an integration's timing.
const (
	DefaultRefreshSkew   = 60 * time.Second
	DefaultProbeInterval = 10 * time.Minute
)

// Title returns the name to show people: DisplayName, or Name.
func (i *Integration) Title() string {
	if i.DisplayName != "" {
		return i.DisplayName
	}
	return i.Name
}

// Skew returns the refresh skew, default applied.
func (i *Integration) Skew() time.Duration {
	if i.RefreshSkew > 0 {
		return time.Duration(i.RefreshSkew)
	}
	return DefaultRefreshSkew
}

// Probe returns the probe interval, default applied.
func (i *Integration) Probe() time.Duration {
	if i.ProbeInterval > 0 {
		return time.Duration(i.ProbeInterval)
	}
	return DefaultProbeInterval
}

// Validate checks an integration's configuration and names the option that
// is wrong.
func (i *Integration) Validate() error {
	if i.Name == "" {
		return fmt.Errorf("integration: name is required")
	}
	if !i.Auth.Valid() {
		return fmt.Errorf("integration %s: auth %q is not one of oauth2, oauth2_client_credentials, api_key, basic", i.Name, i.Auth)
	}
	if i.BaseURL == "" {
		return fmt.Errorf("integration %s: base_url is required", i.Name)
	}
	for opt, v := range map[string]string{"base_url": i.BaseURL, "authorize_url": i.AuthorizeURL, "token_url": i.TokenURL, "userinfo_url": i.UserinfoURL, "validate_url": i.ValidateURL} {
		if v == "" {
			continue
		}
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("integration %s: %s %q is not an absolute http(s) URL", i.Name, opt, v)
		}
	}
	var missing []string
	need := func(option, v string) {
		if v == "" {
			missing = append(missing, option)
		}
	}
	switch i.Auth {
	case MethodOAuth2:
		need("authorize_url", i.AuthorizeURL)
		need("token_url", i.TokenURL)
		need("client_id", i.ClientID)
	case MethodClientCredentials:
		need("token_url", i.TokenURL)
		need("client_id", i.ClientID)
	}
	if len(missing) > 0 {
		return fmt.Errorf("integration %s: %s needs %s", i.Name, i.Auth, joinAnd(missing))
	}
	if (i.UserinfoURL == "") != (i.UserIDField == "") {
		return fmt.Errorf("integration %s: userinfo_url and user_id_field go together", i.Name)
	}
	switch i.AuthStyle {
	case "", "header", "params":
	default:
		return fmt.Errorf("integration %s: auth_style %q is not header or params", i.Name, i.AuthStyle)
	}
	return nil
}

// joinAnd lists words as prose: "a", "a and b", "a, b and c".
func joinAnd(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " and " + words[len(words)-1]
}
