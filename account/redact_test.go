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
