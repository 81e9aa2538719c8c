package account

import (
	"fmt"
	"net/http"
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
	// TokenHeader is the request header that carries an OAuth account's
	// access token, upstream and on the userinfo and discovery requests;
	// default "Authorization" as "Bearer <token>" (RFC 6750), whatever
	// token_type the provider answered. Shopify: "X-Shopify-Access-Token".
	TokenHeader string `json:"token_header,omitempty"`
	// TokenPrefix is written before the access token in TokenHeader, e.g.
	// "Zoho-oauthtoken " for Zoho; default "Bearer " in Authorization and
	// nothing in another header.
	TokenPrefix string `json:"token_prefix,omitempty"`
	// ValidateURL, when set, is requested with new api_key or basic
	// credentials from the connect page; they are saved only if it answers 2xx.
	ValidateURL string `json:"validate_url,omitempty"`

	// RefreshSkew: a token valid for less than this is refreshed in the
	// background while still used. Default 60s.
	RefreshSkew Duration `json:"refresh_skew,omitempty"`
	// ProbeInterval: at most one refresh try per account in needs_reauth
	// per interval, so a misclassified failure heals. Default 10m.
	ProbeInterval Duration `json:"probe_interval,omitempty"`

	// Preset names an entry of linkgate's catalogue of providers: the
	// integration starts from it and every option written beside it wins.
	Preset string `json:"preset,omitempty"`

	// AllowedHosts are the hosts every URL of the integration may reach,
	// after its connection fields are filled in: an exact host, or "*."
	// and a domain (one or more labels before it), each with an optional
	// :port (without one, only the scheme's default port). Required when
	// a URL or header uses {connection.<name>}; by default the hosts of
	// the literal URLs.
	AllowedHosts []string `json:"allowed_hosts,omitempty"`
	// ConnectionFields are the values each account needs besides its
	// credentials (a subdomain, an instance URL, a tenant id), usable in
	// URLs and headers as {connection.<name>}.
	ConnectionFields []ConnectionField `json:"connection_fields,omitempty"`
	// Discovery is a GET made with the new access token after the token
	// is obtained, which fills the fields with source "discovery".
	Discovery *Discovery `json:"discovery,omitempty"`
	// AuthorizeParams are extra query parameters of the authorization
	// request, e.g. {"access_type": "offline", "prompt": "consent"}.
	AuthorizeParams map[string]string `json:"authorize_params,omitempty"`
	// ScopeSeparator joins the scopes in the authorization request;
	// default " " (RFC 6749), "," for providers that want commas.
	ScopeSeparator string `json:"scope_separator,omitempty"`
	// TokenFields are dotted paths into the token response for
	// access_token, refresh_token, expires_in, token_type and scope, for
	// providers that nest them (Slack's "authed_user.access_token");
	// default the RFC 6749 names at the top level.
	TokenFields map[string]string `json:"token_fields,omitempty"`
	// DefaultExpiresIn is the token lifetime assumed when a token
	// response has no expires_in; absent, such a token is used until an
	// upstream answers 401.
	DefaultExpiresIn Duration `json:"default_expires_in,omitempty"`
	// PKCE: false sends no PKCE challenge (for providers that refuse it);
	// absent or true, S256.
	PKCE *bool `json:"pkce,omitempty"`
	// TokenBody is how token requests are encoded: "form" (the default,
	// RFC 6749) or "json".
	TokenBody string `json:"token_body,omitempty"`
	// Headers are static request headers sent to the upstream with every
	// proxied call, set like the credentials (the caller cannot override
	// them); values may use {connection.<name>}.
	Headers map[string]string `json:"headers,omitempty"`
	// KeepRefreshToken: false means a refresh answer without a
	// refresh_token leaves the account without one; absent or true, the
	// old one is kept.
	KeepRefreshToken *bool `json:"keep_refresh_token,omitempty"`

	// defaultHosts are the literal URLs' hosts, when AllowedHosts is empty.
	defaultHosts []string
}

// UsesPKCE reports whether the authorization request carries a PKCE
// challenge.
func (i *Integration) UsesPKCE() bool { return i.PKCE == nil || *i.PKCE }

// KeepsRefreshToken reports whether a refresh answer without a refresh
// token keeps the old one.
func (i *Integration) KeepsRefreshToken() bool {
	return i.KeepRefreshToken == nil || *i.KeepRefreshToken
}

// TokenFieldPath is the path of a token response field (access_token,
// refresh_token, expires_in, token_type, scope).
func (i *Integration) TokenFieldPath(name string) string {
	if p := i.TokenFields[name]; p != "" {
		return p
	}
	return name
}

// TokenAuthorization returns the header and its value that carry an OAuth
// access token on a request to the provider.
func (i *Integration) TokenAuthorization(token string) (header, value string) {
	header = "Authorization"
	if i.TokenHeader != "" {
		header = http.CanonicalHeaderKey(i.TokenHeader)
	}
	prefix := i.TokenPrefix
	if prefix == "" && header == "Authorization" {
		prefix = "Bearer "
	}
	return header, prefix + token
}

// Separator joins scopes in the authorization request.
func (i *Integration) Separator() string {
	if i.ScopeSeparator == "" {
		return " "
	}
	return i.ScopeSeparator
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
	for _, o := range i.urlOptions() {
		opt, v := o[0], o[1]
		if v == "" {
			continue
		}
		u, err := url.Parse(i.sampleTemplate(v))
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
	switch i.TokenBody {
	case "", "form", "json":
	default:
		return fmt.Errorf("integration %s: token_body %q is not form or json", i.Name, i.TokenBody)
	}
	for k, p := range i.TokenFields {
		switch k {
		case "access_token", "refresh_token", "expires_in", "token_type", "scope":
		default:
			return fmt.Errorf("integration %s: token_fields: %q is not one of access_token, refresh_token, expires_in, token_type, scope", i.Name, k)
		}
		if p == "" || strings.HasPrefix(p, ".") || strings.HasSuffix(p, ".") || strings.Contains(p, "..") {
			return fmt.Errorf("integration %s: token_fields %s: %q is not a dotted path", i.Name, k, p)
		}
	}
	if (i.TokenHeader != "" || i.TokenPrefix != "") && i.Auth != MethodOAuth2 && i.Auth != MethodClientCredentials {
		return fmt.Errorf("integration %s: token_header and token_prefix are for oauth2 and oauth2_client_credentials; use api_key_header for %s", i.Name, i.Auth)
	}
	if strings.ContainsAny(i.TokenPrefix, "\r\n") || strings.ContainsAny(i.TokenHeader, " \t\r\n:") {
		return fmt.Errorf("integration %s: token_header %q or token_prefix %q cannot go into an HTTP header", i.Name, i.TokenHeader, i.TokenPrefix)
	}
	if i.DefaultExpiresIn < 0 {
		return fmt.Errorf("integration %s: default_expires_in must be positive", i.Name)
	}
	for k := range i.AuthorizeParams {
		switch k {
		case "response_type", "client_id", "redirect_uri", "state", "scope", "code_challenge", "code_challenge_method":
			return fmt.Errorf("integration %s: authorize_params cannot set %s, which linkgate sets itself", i.Name, k)
		}
	}
	return i.validateConnection()
}

// sampleTemplate fills a URL's templates with a sample value that has the
// shape of its field's kind, so the URL's structure can be checked when
// the configuration loads.
func (i *Integration) sampleTemplate(s string) string {
	return templatePattern.ReplaceAllStringFunc(s, func(m string) string {
		if f := i.Field(m[len("{connection.") : len(m)-1]); f != nil && f.Kind == KindHTTPSURL {
			return "https://sample.invalid"
		}
		return "sample"
	})
}

// joinAnd lists words as prose: "a", "a and b", "a, b and c".
func joinAnd(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " and " + words[len(words)-1]
}
