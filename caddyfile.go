package linkgate

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/linkflow"
	"github.com/linkgate/linkgate/webhook"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("integrated_accounts", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("inject_credentials", parseHandler(func() caddyhttp.MiddlewareHandler { return new(Inject) }))
	httpcaddyfile.RegisterHandlerDirective("accounts_api", parseHandler(func() caddyhttp.MiddlewareHandler { return new(API) }))
	httpcaddyfile.RegisterHandlerDirective("connect_account", parseHandler(func() caddyhttp.MiddlewareHandler { return new(Connect) }))
	// inject_credentials prepares the request for reverse_proxy's linkgate
	// transport: after the URI is rewritten and the usual auth runs, before
	// any responder.
	httpcaddyfile.RegisterDirectiveOrder("inject_credentials", httpcaddyfile.After, "forward_auth")
	// The responders end up in this order before respond: the console
	// first, since accounts_api answers every path it is given.
	httpcaddyfile.RegisterDirectiveOrder("accounts_console", httpcaddyfile.Before, "respond")
	httpcaddyfile.RegisterDirectiveOrder("accounts_api", httpcaddyfile.Before, "respond")
	httpcaddyfile.RegisterDirectiveOrder("connect_account", httpcaddyfile.Before, "respond")
}

// parseHandler parses a directive that takes no arguments and no block.
func parseHandler(newHandler func() caddyhttp.MiddlewareHandler) httpcaddyfile.UnmarshalHandlerFunc {
	return func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		h.Next() // directive name
		if h.NextArg() {
			return nil, h.ArgErr()
		}
		if h.NextBlock(0) {
			return nil, h.Errf("%s takes no block: configure it in the integrated_accounts global option", h.Val())
		}
		return newHandler(), nil
	}
}

// parseGlobalOption parses the integrated_accounts global option. Repeated
// blocks merge into one app.
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	app := new(App)
	if prev, ok := existing.(httpcaddyfile.App); ok {
		if err := json.Unmarshal(prev.Value, app); err != nil {
			return nil, err
		}
	}
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "integrated_accounts", Value: caddyconfig(app)}, nil
}

func caddyconfig(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// UnmarshalCaddyfile sets up the app from Caddyfile tokens. Syntax:
//
//	integrated_accounts {
//		storage sqlite [<path>] | postgres <dsn>
//		encryption_key <key>            # repeatable; the first seals
//		api_token <token> [{            # repeatable
//			tenant <id>                 # restrict the token to one tenant
//		}]
//		public_url <url>
//		allowed_origins <origin...>
//		link_token_ttl <duration>
//		branding {                      # the product on the connect page
//			name <product name>
//			logo_url <https url>        # an image the product serves
//			primary_color <rrggbb>      # "#" optional; quote it if written: "#1a73e8"
//		}
//		environment_id <id>
//		cache_size <bytes>
//		retry_body_limit <bytes>
//		refresh {
//			token_timeout <duration>
//			token_hard_limit <duration>
//			max_in_flight <n>
//			refresh_ahead <duration>
//		}
//		webhook_timeout <duration>
//		webhook_retry_schedule <duration...>
//		webhook_lease <duration>
//		webhook <url> {
//			secret <whsec_…|plain>      # repeatable, for rotation; plain: ≥ 32 chars (Truto's UUIDs)
//			events <pattern...>         # e.g. integrated_account:*
//			signature_encoding hex|base64
//		}
//		integration <name> {
//			auth oauth2|oauth2_client_credentials|api_key|basic
//			category <category>         # Truto's integration category, e.g. crm
//			display_name <name>         # shown to end users, e.g. HubSpot
//			help <text>                 # connect page help, e.g. where to find the key
//			docs <url>                  # the provider's documentation page
//			base_url <url>
//			authorize_url <url>
//			token_url <url>
//			client_id <id>
//			client_secret <secret>
//			scopes <scope...>
//			auth_style header|params
//			issuer <iss>
//			userinfo_url <url>
//			user_id_field <field>
//			api_key_header <header> [<prefix>]
//			api_key_query <param>
//			token_header <header> [<prefix>] # an OAuth token's header, e.g. X-Shopify-Access-Token
//			validate_url <url>
//			refresh_skew <duration>
//			probe_interval <duration>
//			preset <name>               # start from a catalogue entry; options here win
//			allowed_hosts <host...>     # host, *.domain, each with an optional :port
//			connection_field <name> {   # a value each account needs, used as {connection.<name>}
//				kind dns_label|host|https_url|uuid|pattern
//				pattern <regexp>
//				label <text>
//				help <text>
//				source user|token_response|callback|discovery
//				path <dotted.path>
//				param <query parameter>
//				optional
//			}
//			discovery <url> {
//				header <name> <value>
//			}
//			authorize_param <name> <value>
//			scope_separator <separator>
//			token_field access_token|refresh_token|expires_in|token_type|scope <dotted.path>
//			default_expires_in <duration>
//			pkce on|off
//			token_body form|json
//			header <name> <value>
//			keep_refresh_token on|off
//		}
//	}
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "storage":
			args := d.RemainingArgs()
			if len(args) == 0 || len(args) > 2 {
				return d.Errf("storage: want sqlite [<path>] or postgres <dsn>")
			}
			switch args[0] {
			case "sqlite":
				a.Storage = &StorageConfig{Driver: "sqlite"}
				if len(args) == 2 {
					a.Storage.Path = args[1]
				}
			case "postgres":
				if len(args) != 2 {
					return d.Errf("storage postgres: a DSN is required")
				}
				a.Storage = &StorageConfig{Driver: "postgres", DSN: args[1]}
			default:
				return d.Errf("storage: unknown driver %q: want sqlite or postgres", args[0])
			}
		case "encryption_key":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			a.EncryptionKeys = append(a.EncryptionKeys, v)
		case "api_token":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			tenant := ""
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				if d.Val() != "tenant" {
					return d.Errf("api_token: unknown option %q (want tenant <id>)", d.Val())
				}
				t, err := oneArg(d)
				if err != nil {
					return err
				}
				tenant = t
			}
			if tenant == "" {
				a.APITokens = append(a.APITokens, v)
			} else {
				a.TenantAPITokens = append(a.TenantAPITokens, TenantAPIToken{Token: v, Tenant: tenant})
			}
		case "public_url":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			a.PublicURL = v
		case "allowed_origins":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			a.AllowedOrigins = append(a.AllowedOrigins, args...)
		case "branding":
			if err := unmarshalBranding(d, a); err != nil {
				return err
			}
		case "link_token_ttl":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			a.LinkTokenTTL = caddy.Duration(dur)
		case "environment_id":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			a.EnvironmentID = v
		case "cache_size":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			a.CacheSize = n
		case "retry_body_limit":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			a.RetryBodyLimit = n
		case "refresh":
			if d.NextArg() {
				return d.ArgErr()
			}
			if a.Refresh == nil {
				a.Refresh = new(RefreshConfig)
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				opt := d.Val()
				if opt == "max_in_flight" {
					n, err := intArg(d)
					if err != nil {
						return err
					}
					if n < 1 {
						return d.Errf("refresh: max_in_flight must be at least 1, got %d", n)
					}
					a.Refresh.MaxInFlight = int(n)
					continue
				}
				var dst *caddy.Duration
				switch opt {
				case "token_timeout":
					dst = &a.Refresh.TokenTimeout
				case "token_hard_limit":
					dst = &a.Refresh.TokenHardLimit
				case "refresh_ahead":
					dst = &a.Refresh.RefreshAhead
				default:
					return d.Errf("refresh: unknown option %q", opt)
				}
				dur, err := durationArg(d)
				if err != nil {
					return err
				}
				*dst = caddy.Duration(dur)
			}
		case "webhook_timeout", "webhook_lease":
			opt := d.Val()
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			if opt == "webhook_timeout" {
				a.WebhookTimeout = caddy.Duration(dur)
			} else {
				a.WebhookLease = caddy.Duration(dur)
			}
		case "webhook_retry_schedule":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			a.WebhookRetrySchedule = nil
			for _, v := range args {
				dur, err := caddy.ParseDuration(v)
				if err != nil || dur < 0 {
					return d.Errf("webhook_retry_schedule: %q is not a duration", v)
				}
				a.WebhookRetrySchedule = append(a.WebhookRetrySchedule, caddy.Duration(dur))
			}
		case "webhook":
			w, err := parseWebhook(d)
			if err != nil {
				return err
			}
			a.Webhooks = append(a.Webhooks, w)
		case "integration":
			in, err := parseIntegration(d)
			if err != nil {
				return err
			}
			if a.Integrations == nil {
				a.Integrations = map[string]*account.Integration{}
			}
			if _, dup := a.Integrations[in.Name]; dup {
				return d.Errf("integration %s is configured twice", in.Name)
			}
			a.Integrations[in.Name] = in
			// The map key names it; keep the JSON free of the duplicate.
			in.Name = ""
		default:
			return d.Errf("integrated_accounts: unknown option %q", d.Val())
		}
	}
	return nil
}

func parseWebhook(d *caddyfile.Dispenser) (webhook.Endpoint, error) {
	var w webhook.Endpoint
	if !d.NextArg() {
		return w, d.Errf("webhook: a URL is required")
	}
	w.URL = d.Val()
	if d.NextArg() {
		return w, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "secret":
			v, err := oneArg(d)
			if err != nil {
				return w, err
			}
			w.Secrets = append(w.Secrets, v)
		case "events":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return w, d.ArgErr()
			}
			w.Events = append(w.Events, args...)
		case "signature_encoding":
			v, err := oneArg(d)
			if err != nil {
				return w, err
			}
			w.SignatureEncoding = v
		default:
			return w, d.Errf("webhook: unknown option %q", d.Val())
		}
	}
	return w, nil
}

func parseIntegration(d *caddyfile.Dispenser) (*account.Integration, error) {
	in := new(account.Integration)
	if !d.NextArg() {
		return nil, d.Errf("integration: a name is required")
	}
	in.Name = d.Val()
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	strs := map[string]*string{
		"base_url": &in.BaseURL, "authorize_url": &in.AuthorizeURL, "token_url": &in.TokenURL,
		"client_id": &in.ClientID, "client_secret": &in.ClientSecret, "auth_style": &in.AuthStyle,
		"issuer": &in.Issuer, "category": &in.Category, "userinfo_url": &in.UserinfoURL, "user_id_field": &in.UserIDField,
		"api_key_query": &in.APIKeyQuery, "validate_url": &in.ValidateURL,
		"display_name": &in.DisplayName, "help": &in.Help, "docs": &in.Docs,
		"preset": &in.Preset, "scope_separator": &in.ScopeSeparator, "token_body": &in.TokenBody,
		"token_prefix": &in.TokenPrefix,
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if p, ok := strs[opt]; ok {
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			*p = v
			continue
		}
		switch opt {
		case "auth":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			in.Auth = account.Method(v)
			if !in.Auth.Valid() {
				return nil, d.Errf("integration %s: auth %q is not one of oauth2, oauth2_client_credentials, api_key, basic", in.Name, v)
			}
		case "scopes":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			in.Scopes = append(in.Scopes, args...)
		case "api_key_header":
			args := d.RemainingArgs()
			if len(args) == 0 || len(args) > 2 {
				return nil, d.Errf("integration %s: api_key_header <header> [<prefix>]", in.Name)
			}
			in.APIKeyHeader = args[0]
			if len(args) == 2 {
				in.APIKeyPrefix = args[1]
				if !strings.HasSuffix(in.APIKeyPrefix, " ") && !strings.HasSuffix(in.APIKeyPrefix, "=") {
					in.APIKeyPrefix += " "
				}
			}
		case "token_header":
			args := d.RemainingArgs()
			if len(args) == 0 || len(args) > 2 {
				return nil, d.Errf("integration %s: token_header <header> [<prefix>]", in.Name)
			}
			in.TokenHeader = args[0]
			if len(args) == 2 {
				in.TokenPrefix = args[1]
				if !strings.HasSuffix(in.TokenPrefix, " ") && !strings.HasSuffix(in.TokenPrefix, "=") {
					in.TokenPrefix += " "
				}
			}
		case "refresh_skew", "probe_interval":
			dur, err := durationArg(d)
			if err != nil {
				return nil, err
			}
			if opt == "refresh_skew" {
				in.RefreshSkew = account.Duration(dur)
			} else {
				in.ProbeInterval = account.Duration(dur)
			}
		case "allowed_hosts":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			in.AllowedHosts = append(in.AllowedHosts, args...)
		case "authorize_param", "header", "token_field":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return nil, d.Errf("integration %s: %s <name> <value>", in.Name, opt)
			}
			m := map[string]*map[string]string{"authorize_param": &in.AuthorizeParams, "header": &in.Headers, "token_field": &in.TokenFields}[opt]
			if *m == nil {
				*m = map[string]string{}
			}
			(*m)[args[0]] = args[1]
		case "default_expires_in":
			dur, err := durationArg(d)
			if err != nil {
				return nil, err
			}
			in.DefaultExpiresIn = account.Duration(dur)
		case "pkce", "keep_refresh_token":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			var b bool
			switch v {
			case "on", "true":
				b = true
			case "off", "false":
			default:
				return nil, d.Errf("integration %s: %s on|off", in.Name, opt)
			}
			if opt == "pkce" {
				in.PKCE = &b
			} else {
				in.KeepRefreshToken = &b
			}
		case "connection_field":
			f, err := parseConnectionField(d, in.Name)
			if err != nil {
				return nil, err
			}
			in.ConnectionFields = append(in.ConnectionFields, f)
		case "discovery":
			url, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			in.Discovery = &account.Discovery{URL: url}
			for n := d.Nesting(); d.NextBlock(n); {
				if d.Val() != "header" {
					return nil, d.Errf("integration %s: discovery: unknown option %q", in.Name, d.Val())
				}
				args := d.RemainingArgs()
				if len(args) != 2 {
					return nil, d.Errf("integration %s: discovery: header <name> <value>", in.Name)
				}
				if in.Discovery.Headers == nil {
					in.Discovery.Headers = map[string]string{}
				}
				in.Discovery.Headers[args[0]] = args[1]
			}
		default:
			return nil, d.Errf("integration %s: unknown option %q", in.Name, opt)
		}
	}
	return in, nil
}

// unmarshalBranding reads the branding block.
func unmarshalBranding(d *caddyfile.Dispenser, a *App) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	if a.Branding == nil {
		a.Branding = &linkflow.Branding{}
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		v, err := oneArg(d)
		if err != nil {
			return err
		}
		switch opt {
		case "name":
			a.Branding.Name = v
		case "logo_url":
			a.Branding.LogoURL = v
		case "primary_color":
			// An unquoted # starts a Caddyfile comment, so the # may be
			// left out.
			if !strings.HasPrefix(v, "#") {
				v = "#" + v
			}
			a.Branding.PrimaryColor = v
		default:
			return d.Errf("branding: unknown option %q (want name, logo_url or primary_color)", opt)
		}
	}
	return nil
}

// parseConnectionField reads
//
//	connection_field <name> {
//		kind dns_label|host|https_url|uuid|pattern
//		pattern <regexp>
//		label <text>
//		help <text>
//		source user|token_response|callback|discovery
//		path <dotted.path>
//		param <query parameter>
//		optional
//	}
func parseConnectionField(d *caddyfile.Dispenser, integration string) (account.ConnectionField, error) {
	var f account.ConnectionField
	if !d.NextArg() {
		return f, d.Errf("integration %s: connection_field: a name is required", integration)
	}
	f.Name = d.Val()
	if d.NextArg() {
		return f, d.ArgErr()
	}
	strs := map[string]*string{"kind": &f.Kind, "pattern": &f.Pattern, "label": &f.Label, "help": &f.Help,
		"source": &f.Source, "path": &f.Path, "param": &f.Param}
	for n := d.Nesting(); d.NextBlock(n); {
		opt := d.Val()
		if p, ok := strs[opt]; ok {
			v, err := oneArg(d)
			if err != nil {
				return f, err
			}
			*p = v
			continue
		}
		if opt == "optional" {
			if d.NextArg() {
				return f, d.ArgErr()
			}
			f.Optional = true
			continue
		}
		return f, d.Errf("integration %s: connection_field %s: unknown option %q", integration, f.Name, opt)
	}
	return f, nil
}

func oneArg(d *caddyfile.Dispenser) (string, error) {
	opt := d.Val()
	args := d.RemainingArgs()
	if len(args) != 1 {
		return "", d.Errf("%s takes exactly one argument", opt)
	}
	return args[0], nil
}

func durationArg(d *caddyfile.Dispenser) (time.Duration, error) {
	opt := d.Val()
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, d.Errf("%s: %v", opt, err)
	}
	return dur, nil
}

func intArg(d *caddyfile.Dispenser) (int64, error) {
	opt := d.Val()
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, d.Errf("%s: %q is not a non-negative whole number", opt, v)
	}
	return n, nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*App)(nil)
