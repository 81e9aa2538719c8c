package linkgate_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

const brandingCaddyfile = `{
	admin off
	auto_https off
	storage file_system {{DATA}}/caddy
	integrated_accounts {
		storage sqlite {{DATA}}/linkgate.db
		api_token brand-test-token
		public_url http://{{GATEWAY}}
		branding {
			name "Acme CRM"
			logo_url https://acme.example/logo.svg
			primary_color {{COLOR}}
		}
	}
}
http://{{GATEWAY}} {
	connect_account
}
`

func TestBrandingIsCheckedAtLoadAndServed(t *testing.T) {
	g := newGateway(t)
	for _, bad := range []string{"red", `"#12345g"`, `"#1a73e8;}"`} {
		err := loadCaddyfile(t, g.expand(brandingCaddyfile, "{{COLOR}}", bad))
		if err == nil {
			_ = caddy.Stop()
			t.Fatalf("primary_color %s loaded", bad)
		}
		if !strings.Contains(err.Error(), "branding primary_color") {
			t.Fatalf("primary_color %s: error %q does not name the option", bad, err)
		}
	}
	if err := loadCaddyfile(t, g.expand(brandingCaddyfile, "{{COLOR}}", "0f766e")); err != nil {
		t.Fatalf("loading: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	resp, err := g.client.Get(g.base + "/connect-account/brand.css")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "--brand: #0f766e;") {
		t.Fatalf("brand.css = %d:\n%s", resp.StatusCode, b)
	}
}
