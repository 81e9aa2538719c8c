package linkgate

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/linkgate/linkgate/account"
)

func TestPresetFillsAndUserOptionsWin(t *testing.T) {
	a := new(App)
	err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`integrated_accounts {
		integration desk {
			preset zendesk
			client_id the-id
			scopes read
			pkce off
		}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	in, err := withPreset(a.Integrations["desk"])
	if err != nil {
		t.Fatal(err)
	}
	in.Name = "desk"
	if err := in.Validate(); err != nil {
		t.Fatalf("zendesk preset with a client id does not validate: %v", err)
	}
	if in.ClientID != "the-id" || in.Auth != account.MethodOAuth2 || in.DisplayName != "Zendesk" {
		t.Fatalf("preset not applied: %+v", in)
	}
	if len(in.Scopes) != 1 || in.Scopes[0] != "read" || in.UsesPKCE() {
		t.Fatalf("user options did not win: scopes %v pkce %v", in.Scopes, in.UsesPKCE())
	}
	got, err := in.ResolveURL("base_url", in.BaseURL, map[string]string{"subdomain": "acme"})
	if err != nil || got != "https://acme.zendesk.com/api/v2" {
		t.Fatalf("base_url: %q %v", got, err)
	}
	if _, err := in.ResolveURL("base_url", in.BaseURL, map[string]string{"subdomain": "evil.test#"}); err == nil {
		t.Fatal("a hostile subdomain resolved")
	}
}

func TestUnknownPresetRefused(t *testing.T) {
	_, err := withPreset(&account.Integration{Name: "x", Preset: "no-such-provider"})
	if err == nil || !strings.Contains(err.Error(), `preset "no-such-provider" is not in linkgate's catalogue`) {
		t.Fatalf("got %v", err)
	}
}
