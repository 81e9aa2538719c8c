package linkgate

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	tests := []struct {
		name, input, want string
	}{
		{"argument on the option", "integrated_accounts extra {\n}", "wrong argument count"},
		{"unknown option", "integrated_accounts {\n colour red\n}", `unknown option "colour"`},
		{"unknown api_token option", "integrated_accounts {\n api_token t {\n  tenants a b\n }\n}", `unknown option "tenants"`},
		{"api_token tenant without id", "integrated_accounts {\n api_token t {\n  tenant\n }\n}", `exactly one argument`},
		{"storage without driver", "integrated_accounts {\n storage\n}", "storage"},
		{"unknown storage driver", "integrated_accounts {\n storage redis x\n}", `unknown driver "redis"`},
		{"postgres without dsn", "integrated_accounts {\n storage postgres\n}", "DSN"},
		{"two api tokens on one line", "integrated_accounts {\n api_token a b\n}", "exactly one argument"},
		{"bad duration", "integrated_accounts {\n link_token_ttl soon\n}", "link_token_ttl"},
		{"negative size", "integrated_accounts {\n cache_size -1\n}", "cache_size"},
		{"unknown refresh option", "integrated_accounts {\n refresh {\n  speed 1s\n }\n}", `unknown option "speed"`},
		{"zero refresh bound", "integrated_accounts {\n refresh {\n  max_in_flight 0\n }\n}", `max_in_flight must be at least 1`},
		{"webhook without url", "integrated_accounts {\n webhook {\n }\n}", "URL is required"},
		{"unknown webhook option", "integrated_accounts {\n webhook https://a.example/h {\n  retries 3\n }\n}", `unknown option "retries"`},
		{"integration without name", "integrated_accounts {\n integration {\n }\n}", "name is required"},
		{"unknown auth", "integrated_accounts {\n integration x {\n  auth magic\n }\n}", `auth "magic"`},
		{"unknown integration option", "integrated_accounts {\n integration x {\n  colour red\n }\n}", `unknown option "colour"`},
		{"duplicate integration", "integrated_accounts {\n integration x {\n }\n integration x {\n }\n}", "configured twice"},
		{"api_key_header arity", "integrated_accounts {\n integration x {\n  api_key_header\n }\n}", "api_key_header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a App
			err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestUnmarshalCaddyfileMergesRepeatedBlocks(t *testing.T) {
	first, err := parseGlobalOption(caddyfile.NewTestDispenser("integrated_accounts {\n api_token a\n integration x {\n  auth api_key\n  base_url https://x.example\n }\n}"), nil)
	if err != nil {
		t.Fatal(err)
	}
	merged, err := parseGlobalOption(caddyfile.NewTestDispenser("integrated_accounts {\n api_token b\n public_url https://gw.example\n}"), first)
	if err != nil {
		t.Fatal(err)
	}
	s := string(merged.(httpcaddyfile.App).Value)
	for _, want := range []string{`"a"`, `"b"`, `"x"`, `https://gw.example`} {
		if !strings.Contains(s, want) {
			t.Errorf("merged config lacks %s: %s", want, s)
		}
	}
}

func TestDirectivesTakeNoArguments(t *testing.T) {
	for _, input := range []string{"inject_credentials extra", "accounts_api {\n x\n}", "connect_account a b"} {
		parse := parseHandler(func() caddyhttp.MiddlewareHandler { return new(Inject) })
		if _, err := parse(httpcaddyfile.Helper{Dispenser: caddyfile.NewTestDispenser(input)}); err == nil {
			t.Errorf("%q: no error", input)
		}
	}
}
