package linkgate_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"golang.org/x/crypto/bcrypt"

	"github.com/linkgate/linkgate"
	"github.com/linkgate/linkgate/console"
	"github.com/linkgate/linkgate/internal/testenv"
)

const consoleCaddyfile = `{
	admin off
	integrated_accounts {
		storage sqlite {{DATA}}/linkgate.db
		api_token test-api-token-0123456789
		public_url http://{{GATEWAY}}
		integration keyed {
			auth api_key
			base_url {{UPSTREAM}}
			api_key_header X-Api-Key
		}
	}
}

http://{{GATEWAY}} {
	handle /console* {
		accounts_console {
			users {
				ops {{HASH}}
			}
			idle_timeout 10m
		}
	}
	handle /connect-account* {
		connect_account
	}
	handle {
		accounts_api
	}
}
`

func TestConsoleCaddyfileAdapts(t *testing.T) {
	cfg, err := adapt(t, `{
	integrated_accounts {
		api_token abc
	}
}
:8080 {
	accounts_console {
		prefix /admin
		users {
			ops $2a$10$abcdefghijklmnopqrstuu5Fh0Vn0gkZq9xQkB1C2d3E4f5G6h7i
		}
		session_ttl 8h
		idle_timeout 15m
	}
	accounts_api
}
`)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []map[string]any `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfg, &doc); err != nil {
		t.Fatal(err)
	}
	var handlers []map[string]any
	for _, s := range doc.Apps.HTTP.Servers {
		for _, r := range s.Routes {
			handlers = append(handlers, r.Handle...)
		}
	}
	// The directive has an order, so it works outside a route.
	var h map[string]any
	for _, x := range handlers {
		if x["handler"] == "accounts_console" {
			h = x
		}
	}
	if h == nil {
		t.Fatalf("handlers %v; want accounts_console among them", handlers)
	}
	users, _ := h["users"].(map[string]any)
	if h["prefix"] != "/admin" || users["ops"] == nil || h["session_ttl"] != float64(8*time.Hour) || h["idle_timeout"] != float64(15*time.Minute) {
		t.Fatalf("accounts_console adapted to %v", h)
	}
}

func TestConsoleCaddyfileErrors(t *testing.T) {
	for _, tt := range []struct{ name, input, want string }{
		{"unknown option", "accounts_console {\n\tcolour blue\n}", "unknown option"},
		{"prefix as argument", "accounts_console /a", "takes no argument"},
		{"two prefixes", "accounts_console {\n\tprefix /a /b\n}", "wrong argument count"},
		{"user without hash", "accounts_console {\n\tusers {\n\t\tops\n\t}\n}", "bcrypt hash is required"},
		{"user twice", "accounts_console {\n\tusers {\n\t\tops x\n\t\tops y\n\t}\n}", "configured twice"},
		{"bad duration", "accounts_console {\n\tidle_timeout soon\n}", "positive duration"},
		{"negative duration", "accounts_console {\n\tsession_ttl -1h\n}", "positive duration"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var c linkgate.Console
			err := c.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v; want one that says %q", err, tt.want)
			}
		})
	}
}

func TestConsoleRefusesAPlainPassword(t *testing.T) {
	g := newGateway(t)
	up := testenv.NewUpstream(t, testenv.UpstreamOptions{APIKey: "k", APIKeyHeader: "X-Api-Key"})
	err := loadCaddyfile(t, g.expand(consoleCaddyfile, "{{UPSTREAM}}", up.URL(), "{{HASH}}", "hunter2"))
	t.Cleanup(func() { _ = caddy.Stop() })
	if err == nil || !strings.Contains(err.Error(), "bcrypt hash") {
		t.Fatalf("loading a console with a plain-text password: %v; want a refusal naming bcrypt", err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatal("the refusal quotes the password")
	}
}

var consoleCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func TestConsoleInCaddy(t *testing.T) {
	const password = "operator password 1"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	up := testenv.NewUpstream(t, testenv.UpstreamOptions{APIKey: "sk_console_key", APIKeyHeader: "X-Api-Key"})
	g := newGateway(t)
	if err := loadCaddyfile(t, g.expand(consoleCaddyfile, "{{UPSTREAM}}", up.URL(), "{{HASH}}", string(hash))); err != nil {
		t.Fatalf("loading Caddy: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	id := g.importAccount(map[string]any{"tenant_id": "console-tenant", "integration": "keyed",
		"context": map[string]any{"api_key": "sk_console_key", "region": "eu"}})

	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(p string) (int, http.Header, string) {
		t.Helper()
		resp, err := hc.Get(g.base + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	post := func(p string, form url.Values) (int, http.Header, string) {
		t.Helper()
		resp, err := hc.PostForm(g.base+p, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}

	if status, hdr, _ := get("/console/accounts"); status != http.StatusSeeOther || hdr.Get("Location") != "/console/login" {
		t.Fatalf("console without a session: %d %q", status, hdr.Get("Location"))
	}
	// A configured user signs in with the bcrypt-checked password.
	_, _, page := get("/console/login")
	status, hdr, _ := post("/console/login", url.Values{"csrf": {consoleCSRF.FindStringSubmatch(page)[1]}, "username": {"ops"}, "secret": {password}})
	if status != http.StatusSeeOther || hdr.Get("Location") != "/console/accounts" {
		t.Fatalf("user sign-in: %d %q", status, hdr.Get("Location"))
	}
	status, _, page = get("/console/accounts?q=console-")
	if status != http.StatusOK || !strings.Contains(page, id) || !strings.Contains(page, `<option value="keyed">keyed</option>`) {
		t.Fatalf("accounts page: %d, lists the account %t", status, strings.Contains(page, id))
	}
	status, _, page = get("/console/accounts/" + id)
	if status != http.StatusOK || strings.Contains(page, "sk_console_key") {
		t.Fatalf("account page: %d, shows the key %t", status, strings.Contains(page, "sk_console_key"))
	}
	status, _, page = post("/console/accounts/"+id+"/link", url.Values{"csrf": {consoleCSRF.FindStringSubmatch(page)[1]}})
	m := regexp.MustCompile(`id="magic-link" readonly value="([^"]+)"`).FindStringSubmatch(page)
	if status != http.StatusOK || m == nil || !strings.HasPrefix(m[1], g.base+"/connect-account?link_token=") {
		t.Fatalf("connection link: %d, %v", status, m)
	}
	// The magic link works on the gateway's connect_account handler.
	link := strings.ReplaceAll(m[1], "&amp;", "&")
	resp, err := http.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("opening the magic link: %d", resp.StatusCode)
	}
	// The API beside the console is untouched by it.
	if status, _ := g.do("GET", "/integrated-account/"+id, nil); status != http.StatusOK {
		t.Fatalf("API beside the console: %d", status)
	}

	// A config reload keeps the operator signed in...
	if err := loadCaddyfile(t, g.expand(consoleCaddyfile, "{{UPSTREAM}}", up.URL(), "{{HASH}}", string(hash))); err != nil {
		t.Fatalf("reloading Caddy: %v", err)
	}
	if status, _, _ := get("/console/accounts"); status != http.StatusOK {
		t.Fatalf("console after a reload: %d; want the session kept", status)
	}
	// ...unless it changes who may sign in.
	other, err := bcrypt.GenerateFromPassword([]byte("a new password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if err := loadCaddyfile(t, g.expand(consoleCaddyfile, "{{UPSTREAM}}", up.URL(), "{{HASH}}", string(other))); err != nil {
		t.Fatalf("reloading Caddy: %v", err)
	}
	if status, _, _ := get("/console/accounts"); status != http.StatusSeeOther {
		t.Fatalf("console after the users changed: %d; want the session ended", status)
	}
}

// Behind a proxy that ends TLS the console is reached in plain HTTP, but the
// browser is on https: the cookies must be Secure all the same.
func TestConsoleCookiesAreSecureWhenThePublicURLIsHTTPS(t *testing.T) {
	up := testenv.NewUpstream(t, testenv.UpstreamOptions{APIKey: "k", APIKeyHeader: "X-Api-Key"})
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, scheme := range []string{"https", "http"} {
		g := newGateway(t)
		cfg := strings.Replace(consoleCaddyfile, "public_url http://", "public_url "+scheme+"://", 1)
		if err := loadCaddyfile(t, g.expand(cfg, "{{UPSTREAM}}", up.URL(), "{{HASH}}", string(hash))); err != nil {
			t.Fatalf("loading Caddy: %v", err)
		}
		resp, err := g.client.Get(g.base + "/console/login")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		set := resp.Header.Values("Set-Cookie")
		if len(set) == 0 {
			t.Fatalf("public_url %s: the sign-in page set no cookie", scheme)
		}
		// Sign in over the plain connection, as the proxy would forward it.
		form := url.Values{"csrf": {consoleCSRF.FindStringSubmatch(string(b))[1]}, "secret": {"test-api-token-0123456789"}}
		req, _ := http.NewRequest(http.MethodPost, g.base+"/console/login", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: "linkgate_console_login", Value: form.Get("csrf")})
		resp, err = (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("public_url %s: sign-in %d; want 303", scheme, resp.StatusCode)
		}
		set = append(set, resp.Header.Values("Set-Cookie")...)
		for _, c := range set {
			if secure := strings.Contains(c, "; Secure"); secure != (scheme == "https") {
				t.Fatalf("public_url %s: cookie %q; Secure must be %t", scheme, c, scheme == "https")
			}
		}
	}
	_ = caddy.Stop()
}

// The failed sign-in budget is the process's: two sites' consoles draw on
// one, and a config reload does not refill it.
func TestConsoleSignInBudgetIsServerWideAndOutlivesReloads(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("right password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	g := newGateway(t)
	second := fmt.Sprintf("http://localhost:%d", testenv.FreePort(t))
	cfg := g.expand(`{
	admin off
	integrated_accounts {
		storage sqlite {{DATA}}/linkgate.db
		api_token test-api-token-0123456789
		public_url http://{{GATEWAY}}
	}
}
http://{{GATEWAY}} {
	accounts_console {
		users {
			ops {{HASH}}
		}
	}
}
{{SECOND}} {
	accounts_console {
		users {
			ops {{HASH}}
		}
	}
}
`, "{{HASH}}", string(hash), "{{SECOND}}", second)
	if err := loadCaddyfile(t, cfg); err != nil {
		t.Fatalf("loading Caddy: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	// The budget's failures, spread over both sites and five addresses.
	for i := range console.DefaultFailedSignInBurst {
		base := g.base
		if i%2 == 1 {
			base = second
		}
		if st := consolePasswordSignIn(t, base, i, "ops", "wrong"); st != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d; want 401", i+1, st)
		}
	}
	if st := consolePasswordSignIn(t, second, 20, "ops", "right password"); st != http.StatusTooManyRequests {
		t.Fatalf("password sign-in on the second site with the budget spent: %d; want 429", st)
	}
	if err := loadCaddyfile(t, cfg); err != nil {
		t.Fatalf("reloading Caddy: %v", err)
	}
	if st := consolePasswordSignIn(t, g.base, 21, "ops", "right password"); st != http.StatusTooManyRequests {
		t.Fatalf("password sign-in after a reload: %d; want 429 (a reload must not refill the budget)", st)
	}
	if st := consolePasswordSignIn(t, g.base, 22, "", apiToken); st != http.StatusSeeOther {
		t.Fatalf("API token sign-in with the password budget spent: %d; want 303", st)
	}
}
