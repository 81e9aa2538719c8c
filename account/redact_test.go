package account

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestViewHidesSecrets(t *testing.T) {
	a := &Account{
		ID: "a1", TenantID: "t1", Integration: "hubspot", Method: MethodOAuth2, Status: StatusActive,
		Context: map[string]any{
			"portal": "123",
			"nested": map[string]any{"client_secret": "s3cr3t-ctx", "list": []any{map[string]any{"Access_Token": "tok-in-list"}}},
		},
		Credentials: Credentials{AccessToken: "at-123456", RefreshToken: "rt-123456", APIKey: "key-123456", Password: "pw-123456"},
	}
	b, err := json.Marshal(a.View())
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, secret := range []string{"at-123456", "rt-123456", "key-123456", "pw-123456", "s3cr3t-ctx", "tok-in-list"} {
		if strings.Contains(s, secret) {
			t.Errorf("view shows %q: %s", secret, s)
		}
	}
	for _, want := range []string{`"portal":"123"`, `"integration":{"name":"hubspot"}`, `"last_error":null`, `"authentication_method":"oauth2"`} {
		if !strings.Contains(s, want) {
			t.Errorf("view lacks %s: %s", want, s)
		}
	}
}

// TestIsSecretKey is the matching rule as a table: every key a credential
// is commonly stored under is secret, and common metadata keys that merely
// look alike stay readable.
func TestIsSecretKey(t *testing.T) {
	secret := []string{
		// whole fragments, anywhere in a word
		"token", "access_token", "refresh_token", "accessToken", "AccessToken", "id_token", "tokens",
		"client_secret", "clientSecret", "secrets", "webhook_secret",
		"password", "Password", "db_password", "passwords", "passwd", "passphrase",
		"credential", "credentials", "cookie", "set-cookie", "bearer", "bearer_value",
		"authorization", "Authorization", "x_authorization",
		// whole words
		"auth", "AUTH", "x-auth", "basic_auth", "userAuth", "auth_header", "auth-value",
		"pwd", "userPWD", "pwd_hash", "session", "session_id", "sessionId", "SESSION",
		"private", "is_private", "jwt", "jwt_value",
		// compounds over word boundaries
		"api_key", "api-key", "apiKey", "APIKey", "apikey", "X-Api-Key", "x_api_key", "apiKeyId",
		"access_key", "accessKey", "access_key_id", "AWSAccessKeyId",
		"signing_key", "signingKey", "private_key", "privateKey", "session_key", "encryption_key", "master_key",
		// nested in a longer name
		"stripe_api_key_live", "OAuthToken", "oauth_token", "oauth_access_token", "authToken",
	}
	plain := []string{
		"author", "Author", "authors", "author_name", "authority", "authorities", "authenticated", "authentication_method",
		"oauth", "OAuth", "oauth_provider", "oAuthScopes", "oauth2", "reauth_count",
		"sessions", "possession", "key", "sort_key", "idempotency_key", "keyboard", "monkey", "primary_key", "public_key",
		"region", "portal_id", "tenant", "subdomain", "passport", "privacy", "api", "api_version", "access_level",
		"signing_algorithm", "pw", "email", "user_id",
	}
	for _, k := range secret {
		if !IsSecretKey(k) {
			t.Errorf("IsSecretKey(%q) = false; want true", k)
		}
	}
	for _, k := range plain {
		if IsSecretKey(k) {
			t.Errorf("IsSecretKey(%q) = true; want false", k)
		}
	}
}

func TestHasSecretMatchesRedactContext(t *testing.T) {
	for _, m := range []map[string]any{
		nil,
		{"region": "eu"},
		{"region": "eu", "api-key": "k"},
		{"nested": map[string]any{"list": []any{"x", map[string]any{"pwd": "p"}}}},
		{"nested": map[string]any{"list": []any{"x", map[string]any{"author": "a"}}}},
	} {
		red, _ := json.Marshal(RedactContext(m))
		orig, _ := json.Marshal(m)
		if changed := string(red) != string(orig); changed != HasSecret(m) {
			t.Errorf("HasSecret(%s) = %t, but RedactContext changes it: %t", orig, HasSecret(m), changed)
		}
	}
}
