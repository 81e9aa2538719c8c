package linkgate_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestProvisionErrorsSayWhatIsWrong loads configurations an operator gets
// wrong and checks that the error names the option and the fix, and never
// claims the integrated_accounts block is missing when it is there.
func TestProvisionErrorsSayWhatIsWrong(t *testing.T) {
	g := newGateway(t)
	t.Setenv("LINKGATE_TEST_EMPTY_VAR", "")
	const site = `
http://{{GATEWAY}} {
	handle /proxy/* {
		inject_credentials
		reverse_proxy {integrated_account.upstream} {
			transport linkgate
		}
	}
	handle {
		accounts_api
	}
}`
	app := func(opts string) string {
		return `{
	admin off
	integrated_accounts {
		storage sqlite {{DATA}}/linkgate.db
		api_token x
		public_url http://{{GATEWAY}}
		` + opts + `
	}
}` + site
	}
	cases := []struct {
		name, caddyfile string
		want            []string
	}{
		{"oauth2 without token_url and client_id",
			app("integration crm {\n auth oauth2\n base_url http://127.0.0.1:1\n authorize_url http://127.0.0.1:1/a\n }"),
			[]string{"integration crm: oauth2 needs token_url and client_id"}},
		{"client credentials without token_url",
			app("integration crm {\n auth oauth2_client_credentials\n base_url http://127.0.0.1:1\n client_id c\n }"),
			[]string{"integration crm: oauth2_client_credentials needs token_url"}},
		{"key from an empty variable",
			app("encryption_key {env.LINKGATE_TEST_EMPTY_VAR}"),
			[]string{"encryption_key #1: environment variable LINKGATE_TEST_EMPTY_VAR is empty"}},
		{"key from an unset variable",
			app("encryption_key {env.LINKGATE_TEST_UNSET_VAR}"),
			[]string{"encryption_key #1: environment variable LINKGATE_TEST_UNSET_VAR is not set"}},
		{"token_url from an empty variable",
			app("integration crm {\n auth oauth2\n base_url http://127.0.0.1:1\n authorize_url http://127.0.0.1:1/a\n token_url {env.LINKGATE_TEST_EMPTY_VAR}\n client_id c\n }"),
			[]string{"integration crm: token_url: environment variable LINKGATE_TEST_EMPTY_VAR is empty"}},
		{"public_url from an empty variable",
			strings.Replace(app(""), "public_url http://{{GATEWAY}}", "public_url {env.LINKGATE_TEST_EMPTY_VAR}", 1),
			[]string{"public_url: environment variable LINKGATE_TEST_EMPTY_VAR is empty"}},
		{"only api token from an unset variable",
			strings.Replace(app(""), "api_token x", "api_token {env.LINKGATE_TEST_UNSET_VAR}", 1),
			[]string{"api_token:", "environment variable LINKGATE_TEST_UNSET_VAR is not set"}},
		{"webhook secret from an empty variable",
			app("webhook http://127.0.0.1:1/h {\n secret {env.LINKGATE_TEST_EMPTY_VAR}\n }"),
			[]string{"webhook #1: secret: environment variable LINKGATE_TEST_EMPTY_VAR is empty"}},
		{"16-character key",
			app("encryption_key 0123456789abcdef"),
			[]string{"encryption_key #1", "got 16 characters", "openssl rand -base64 32"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := loadCaddyfile(t, g.expand(c.caddyfile))
			_ = caddy.Stop()
			if err == nil {
				t.Fatal("the configuration loaded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "is not configured") {
				t.Errorf("error %q claims the app is missing, but it is configured", err)
			}
		})
	}
	t.Run("no app", func(t *testing.T) {
		err := loadCaddyfile(t, g.expand("{\n\tadmin off\n}"+site))
		_ = caddy.Stop()
		if err == nil || !strings.Contains(err.Error(), "add an integrated_accounts global option block") {
			t.Fatalf("err = %v, want one saying to add the block", err)
		}
	})
	t.Run("unset extra api token is allowed", func(t *testing.T) {
		cfg := strings.Replace(app(""), "api_token x", fmt.Sprintf("api_token x\n\t\tapi_token %s", "{env.LINKGATE_TEST_UNSET_VAR}"), 1)
		if err := loadCaddyfile(t, g.expand(cfg)); err != nil {
			t.Fatal(err)
		}
		_ = caddy.Stop()
	})
}
