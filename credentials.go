package linkgate

import (
	"encoding/json"

	"maps"
	"net/http"
	"time"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/wire"
)

// credentialKeys are the context keys that carry credentials on import;
// they are taken out of the context and sealed, never kept as metadata.
var credentialKeys = map[string]bool{"oauth": true, "api_key": true, "username": true, "password": true}

// oauthToken is context.oauth.token of an import.
type oauthToken struct {
	AccessToken  string          `json:"access_token"`
	RefreshToken string          `json:"refresh_token"`
	TokenType    string          `json:"token_type"`
	Scope        string          `json:"scope"`
	ExpiresIn    json.Number     `json:"expires_in"`
	Expiry       string          `json:"expiry"`
	ExpiresAt    string          `json:"expires_at"`
	IDToken      json.RawMessage `json:"id_token"`
}

// splitCredentials takes the credentials out of an import's context: it
// returns the rest of the context (non-secret metadata) and the
// credentials. expires_in is counted from now, the gateway's receipt time.
func splitCredentials(ctx map[string]any, now time.Time) (map[string]any, account.Credentials, error) {
	var c account.Credentials
	meta := maps.Clone(ctx)
	if meta == nil {
		meta = map[string]any{}
	}
	for k := range credentialKeys {
		delete(meta, k)
	}
	str := func(key string) (string, error) {
		v, ok := ctx[key]
		if !ok || v == nil {
			return "", nil
		}
		s, ok := v.(string)
		if !ok {
			return "", wire.Errorf(http.StatusBadRequest, "context.%s must be a string", key)
		}
		return s, nil
	}
	var err error
	if c.APIKey, err = str("api_key"); err != nil {
		return nil, c, err
	}
	if c.Username, err = str("username"); err != nil {
		return nil, c, err
	}
	if c.Password, err = str("password"); err != nil {
		return nil, c, err
	}
	if o, ok := ctx["oauth"]; ok && o != nil {
		om, ok := o.(map[string]any)
		if !ok {
			return nil, c, wire.Errorf(http.StatusBadRequest, "context.oauth must be an object with a token")
		}
		raw, err := json.Marshal(om["token"])
		if err != nil || om["token"] == nil {
			return nil, c, wire.Errorf(http.StatusBadRequest, "context.oauth.token is required: {access_token, refresh_token, expires_in}")
		}
		var t oauthToken
		if err := json.Unmarshal(raw, &t); err != nil {
			return nil, c, wire.Errorf(http.StatusBadRequest, "context.oauth.token has a field of the wrong type")
		}
		c.AccessToken, c.RefreshToken, c.TokenType, c.Scope = t.AccessToken, t.RefreshToken, t.TokenType, t.Scope
		switch {
		case t.ExpiresIn != "":
			secs, err := t.ExpiresIn.Int64()
			if err != nil || secs <= 0 {
				return nil, c, wire.Errorf(http.StatusBadRequest, "context.oauth.token.expires_in must be a positive number of seconds")
			}
			c.Expiry = now.Add(time.Duration(secs) * time.Second)
			c.IssuedAt = now
		case t.Expiry != "" || t.ExpiresAt != "":
			v := t.Expiry
			if v == "" {
				v = t.ExpiresAt
			}
			exp, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return nil, c, wire.Errorf(http.StatusBadRequest, "context.oauth.token.expiry must be an RFC 3339 time")
			}
			c.Expiry = exp.UTC()
		}
	}
	return meta, c, nil
}

// requireCredentials checks that c has what method m needs.
func requireCredentials(m account.Method, c account.Credentials) error {
	var missing string
	switch m {
	case account.MethodOAuth2:
		if c.AccessToken == "" && c.RefreshToken == "" {
			missing = "context.oauth.token.access_token (and refresh_token to keep it fresh)"
		}
	case account.MethodAPIKey:
		if c.APIKey == "" {
			missing = "context.api_key"
		}
	case account.MethodBasic:
		if c.Username == "" || c.Password == "" {
			missing = "context.username and context.password"
		}
	case account.MethodClientCredentials:
		return nil
	}
	if missing != "" {
		return wire.Errorf(http.StatusBadRequest, "%s accounts need %s", m, missing)
	}
	return nil
}
