package linkgate_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/linkgate/linkgate/internal/testenv"
)

// storeCaddyfile is a gateway with the API, the connect flow, the console
// and a webhook endpoint, on the store {{STORAGE}} names.
const storeCaddyfile = `{
	admin off
	integrated_accounts {
		{{STORAGE}}
		encryption_key {{KEY}}
		api_token test-api-token-0123456789
		public_url http://{{GATEWAY}}
		webhook {{HOOK}} {
			secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
		}
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

// storeWorld is a gateway on one store, with what a test needs to look at
// the store's raw bytes.
type storeWorld struct {
	*gateway
	hooks *testenv.WebhookReceiver
	// dump returns every byte the store keeps: the SQLite files (WAL
	// included), or every PostgreSQL table as text.
	dump func() []byte
}

// eachStore runs fn against a gateway on SQLite and one on PostgreSQL
// (skipped, saying why, without LINKGATE_TEST_POSTGRES).
func eachStore(t *testing.T, fn func(t *testing.T, w *storeWorld)) {
	for _, store := range []string{"sqlite", "postgres"} {
		t.Run(store, func(t *testing.T) {
			g := newGateway(t)
			w := &storeWorld{gateway: g, hooks: testenv.NewWebhookReceiver(t)}
			var storage string
			switch store {
			case "sqlite":
				storage = "storage sqlite " + g.dir + "/linkgate.db"
				w.dump = func() []byte {
					var all []byte
					files, _ := filepath.Glob(filepath.Join(g.dir, "linkgate.db*"))
					for _, f := range files {
						b, err := os.ReadFile(f)
						if err != nil {
							t.Fatal(err)
						}
						all = append(all, b...)
					}
					return all
				}
			case "postgres":
				dsn, schema := testenv.PostgresSchema(t)
				t.Setenv("LINKGATE_APITEST_DSN", dsn)
				storage = "storage postgres {env.LINKGATE_APITEST_DSN}"
				w.dump = func() []byte { return dumpPostgres(t, dsn, schema) }
			}
			key := make([]byte, 32)
			for i := range key {
				key[i] = byte(i * 7)
			}
			hash, err := bcrypt.GenerateFromPassword([]byte("operator password"), bcrypt.MinCost)
			if err != nil {
				t.Fatal(err)
			}
			up := testenv.NewUpstream(t, testenv.UpstreamOptions{APIKey: "k", APIKeyHeader: "X-Api-Key"})
			cfg := g.expand(storeCaddyfile, "{{STORAGE}}", storage, "{{KEY}}", hex.EncodeToString(key),
				"{{HOOK}}", w.hooks.URL(), "{{UPSTREAM}}", up.URL(), "{{HASH}}", string(hash))
			if err := loadCaddyfile(t, cfg); err != nil {
				t.Fatalf("loading Caddy: %v", err)
			}
			t.Cleanup(func() { _ = caddy.Stop() })
			fn(t, w)
		})
	}
}

// dumpPostgres prints every table of schema as PostgreSQL's text output, and
// the bytea columns' raw bytes beside it.
func dumpPostgres(t *testing.T, dsn, schema string) []byte {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(tables) == 0 {
		t.Fatalf("listing the tables: %v (%d tables)", err, len(tables))
	}
	var out bytes.Buffer
	for _, tbl := range tables {
		rows, err := conn.Query(ctx, "SELECT t::text FROM "+pgx.Identifier{tbl}.Sanitize()+" t")
		if err != nil {
			t.Fatal(err)
		}
		texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString(strings.Join(texts, "\n"))
	}
	for _, q := range []string{"SELECT credentials FROM accounts", "SELECT verifier FROM connect_states"} {
		rows, err := conn.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		bs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			t.Fatal(err)
		}
		out.Write(bytes.Join(bs, []byte("\n")))
	}
	return out.Bytes()
}

// raw sends a request with the API token and a body given byte for byte.
func (g *gateway) raw(method, path, body string) (int, []byte) {
	g.t.Helper()
	var b any
	if body != "" {
		b = []byte(body)
	}
	return g.do(method, path, b)
}

// deliveryIDs lists the webhook deliveries' ids and events (their status
// moves on by itself as they are sent).
func deliveryIDs(t *testing.T, g *gateway) string {
	t.Helper()
	status, out := g.do("GET", "/webhook-delivery", nil)
	var page struct {
		Result []struct {
			ID    string `json:"id"`
			Event string `json:"event"`
		} `json:"result"`
	}
	if err := json.Unmarshal(out, &page); err != nil || status != http.StatusOK {
		t.Fatalf("listing deliveries: %d %s", status, out)
	}
	var ids []string
	for _, d := range page.Result {
		ids = append(ids, d.ID+" "+d.Event)
	}
	return strings.Join(ids, ", ")
}

func cursorOf(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TestAPIRefusesMalformedInputOnBothStores sends every kind of malformed
// input to every API route, on both stores: each gets a clear 4xx (never a
// 5xx: 503 means the database is down) and changes nothing.
func TestAPIRefusesMalformedInputOnBothStores(t *testing.T) {
	eachStore(t, func(t *testing.T, w *storeWorld) {
		id := w.importAccount(map[string]any{"tenant_id": "input-tenant", "integration": "keyed",
			"context": map[string]any{"api_key": "k", "region": "eu"}})
		w.hooks.WaitFor(t, 2, 30e9) // created, active
		_, before := w.do("GET", "/integrated-account/"+id, nil)
		_, listBefore := w.do("GET", "/integrated-account", nil)
		deliveriesBefore := deliveryIDs(t, w.gateway)

		big := `{"tenant_id":"t","integration":"keyed","context":{"api_key":"k","pad":"` + strings.Repeat("x", 2<<20) + `"}}`
		for _, p := range []struct{ method, path, body string }{
			// ids in the path
			{"GET", "/integrated-account/%00", ""},
			{"GET", "/integrated-account/a%00b", ""},
			{"GET", "/integrated-account/%FF", ""},
			{"GET", "/integrated-account/%C3%28", ""},
			{"PATCH", "/integrated-account/%00", `{"context":{"a":1}}`},
			{"PATCH", "/integrated-account/%FF", `{"context":{"a":1}}`},
			{"PATCH", "/integrated-account/%00/credentials", `{"api_key":"x"}`},
			{"PATCH", "/integrated-account/%FF/credentials", `{"api_key":"x"}`},
			{"DELETE", "/integrated-account/%00", ""},
			{"DELETE", "/integrated-account/%ED%A0%80", ""},
			{"POST", "/webhook-delivery/%00/redeliver", ""},
			{"POST", "/webhook-delivery/%FF/redeliver", ""},
			// filters and cursors
			{"GET", "/integrated-account?tenant_id=%00", ""},
			{"GET", "/integrated-account?tenant_id=%FF", ""},
			{"GET", "/integrated-account?integration=keyed%00", ""},
			{"GET", "/integrated-account?status=%00", ""},
			{"GET", "/integrated-account?limit=%00", ""},
			{"GET", "/integrated-account?tenant_id=%zz", ""},
			{"GET", "/integrated-account?%00=1", ""},
			{"GET", "/integrated-account?next_cursor=%00", ""},
			{"GET", "/integrated-account?next_cursor=" + cursorOf("0.1.a\x00b"), ""},
			{"GET", "/integrated-account?next_cursor=" + cursorOf("0.1.\xff\xfe"), ""},
			{"GET", "/integrated-account?next_cursor=" + cursorOf("0.99999999999999999999.x"), ""},
			{"GET", "/webhook-delivery?next_cursor=" + cursorOf("1.1.\x00"), ""},
			{"GET", "/webhook-delivery?next_cursor=" + cursorOf("1.1.\xc3"), ""},
			{"GET", "/webhook-delivery?status=%00", ""},
			// bodies
			{"POST", "/integrated-account", `{"tenant_id":"t\u0000","integration":"keyed","context":{"api_key":"k"}}`},
			{"POST", "/integrated-account", `{"tenant_id":"t","integration":"keyed\u0000","context":{"api_key":"k"}}`},
			{"POST", "/integrated-account", `{"id":"\u0000","tenant_id":"t","integration":"keyed","context":{"api_key":"k"}}`},
			{"POST", "/integrated-account", `{"tenant_id":"t","integration":"keyed","context":{"api_key":"k","note":"a\u0000"}}`},
			{"POST", "/integrated-account", `{"tenant_id":"t","integration":"keyed","context":{"api_key":"k","n\u0000":"a"}}`},
			{"POST", "/integrated-account", "{\"tenant_id\":\"t\xff\",\"integration\":\"keyed\",\"context\":{\"api_key\":\"k\"}}"},
			{"POST", "/integrated-account", `{"tenant_id":"t","tenant_id":"u","integration":"keyed","context":{"api_key":"k"}}`},
			{"POST", "/integrated-account", `{"tenant_id":"t","integration":"keyed","context":{"api_key":"k","api_key":"k2"}}`},
			{"POST", "/integrated-account", `{"tenant_id":"t","integration":"keyed","context":{"api_key":"k"}}}`},
			{"POST", "/integrated-account", `{"tenant_id":"t","integration":"keyed","context":{"api_key":"k"}}]`},
			{"POST", "/integrated-account", big},
			{"PATCH", "/integrated-account/" + id, `{"context":{"region":"us","region":"ap"}}`},
			{"PATCH", "/integrated-account/" + id, `{"context":{"region":"us"}}}`},
			{"PATCH", "/integrated-account/" + id, `{"context":{"region":"us\u0000"}}`},
			{"PATCH", "/integrated-account/" + id, `{"context":{"re\u0000gion":"us"}}`},
			{"PATCH", "/integrated-account/" + id, "{\"context\":{\"region\":\"\xc3\"}}"},
			{"PATCH", "/integrated-account/" + id + "/credentials", `{"api_key":"x","api_key":"y"}`},
			{"PATCH", "/integrated-account/" + id + "/credentials", `{"api_key":"x"}]`},
			{"PATCH", "/integrated-account/" + id + "/credentials", `{"api_key":"x\u0000"}`},
			{"POST", "/integrated-account/refresh-credentials", `{"id":"\u0000"}`},
			{"POST", "/integrated-account/refresh-credentials", "{\"id\":\"\xff\"}"},
			{"POST", "/integrated-account/refresh-credentials", `{"id":"` + id + `","id":"x"}`},
			{"POST", "/link-token", `{"tenant_id":"t\u0000","integration":"keyed"}`},
			{"POST", "/link-token", `{"integrated_account_id":"\u0000"}`},
			{"POST", "/link-token", `{"tenant_id":"t","integration":"keyed","redirect_uri":"http://a/\u0000"}`},
			{"POST", "/link-token", `{"tenant_id":"t","integration":"keyed","context":{"a\u0000":"b"}}`},
			{"POST", "/link-token", "{\"tenant_id\":\"t\",\"integration\":\"keyed\",\"context\":{\"a\":\"\xff\"}}"},
			{"POST", "/link-token", `{"integrated_account_id":"` + id + `","integrated_account_id":"x"}`},
			{"POST", "/link-token", `{"integrated_account_id":"` + id + `"}}`},
		} {
			name := p.method + " " + p.path
			if p.body != "" {
				name += " " + strings.ToValidUTF8(p.body[:min(len(p.body), 90)], "?")
			}
			status, body := w.raw(p.method, p.path, p.body)
			if status < 400 || status >= 500 {
				t.Errorf("%s: %d %s; want a 4xx", name, status, body)
				continue
			}
			var e struct {
				StatusCode int    `json:"statusCode"`
				Message    string `json:"message"`
			}
			if err := json.Unmarshal(body, &e); err != nil || e.StatusCode != status || e.Message == "" {
				t.Errorf("%s: %d %s; want a JSON error that says what is wrong", name, status, body)
			}
		}

		_, after := w.do("GET", "/integrated-account/"+id, nil)
		_, listAfter := w.do("GET", "/integrated-account", nil)
		deliveriesAfter := deliveryIDs(t, w.gateway)
		if !bytes.Equal(before, after) || !bytes.Equal(listBefore, listAfter) || deliveriesBefore != deliveriesAfter {
			t.Fatalf("refused requests changed something:\naccount %s\n     -> %s\nlist %s\n  -> %s\ndeliveries %s\n        -> %s",
				before, after, listBefore, listAfter, deliveriesBefore, deliveriesAfter)
		}
	})
}

// TestContextSecretsAreRedactedAndSealedOnBothStores: context values under
// secret-looking keys, put there on every path (import, PATCH, a link
// token's context), are [REDACTED] in every answer and webhook payload, and
// no byte of the store shows them.
func TestContextSecretsAreRedactedAndSealedOnBothStores(t *testing.T) {
	eachStore(t, func(t *testing.T, w *storeWorld) {
		secrets := []string{"imported-client-secret", "imported-nested-refresh", "imported-api-key-dash", "patched-bearer", "patched-access-key", "patched-pwd", "link-signing-key", "link-session"}
		status, out := w.do("POST", "/integrated-account", map[string]any{"tenant_id": "sealed-tenant", "integration": "keyed",
			"context": map[string]any{"api_key": "imported-credential-key", "region": "region-in-clear", "author": "author-in-clear",
				"client_secret": "imported-client-secret", "nested": map[string]any{"refresh_token": "imported-nested-refresh", "api-key": "imported-api-key-dash"}}})
		if status != http.StatusCreated {
			t.Fatalf("import: %d %s", status, out)
		}
		secrets = append(secrets, "imported-credential-key")
		id := mustJSON(t, out)["id"].(string)
		answers := [][]byte{out}
		status, out = w.do("PATCH", "/integrated-account/"+id, map[string]any{"context": map[string]any{
			"bearer": "patched-bearer", "access_key": "patched-access-key", "deep": []any{map[string]any{"pwd": "patched-pwd"}}}})
		if status != http.StatusOK {
			t.Fatalf("patch: %d %s", status, out)
		}
		answers = append(answers, out)
		_, out = w.do("GET", "/integrated-account/"+id, nil)
		answers = append(answers, out)
		_, out = w.do("GET", "/integrated-account", nil)
		answers = append(answers, out)
		status, out = w.do("POST", "/link-token", map[string]any{"tenant_id": "sealed-tenant", "integration": "keyed",
			"context": map[string]any{"signing_key": "link-signing-key", "session": "link-session", "plan": "plan-in-clear"}})
		if status != http.StatusCreated {
			t.Fatalf("link token: %d %s", status, out)
		}
		answers = append(answers, out)
		// Complete the new connection the link token started: its context
		// lands on the new account.
		linkURL := mustJSON(t, out)["url"].(string)
		jar, _ := cookiejar.New(nil)
		browser := &http.Client{Jar: jar}
		page, err := browser.Get(linkURL)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, page)
		m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
		form := url.Values{"api_key": {"link-connected-key"}}
		if m != nil {
			form.Set("csrf", m[1])
		}
		lt := strings.TrimPrefix(linkURL[strings.Index(linkURL, "link_token="):], "link_token=")
		form.Set("link_token", lt)
		resp, err := browser.PostForm(w.base+"/connect-account", form)
		if err != nil {
			t.Fatal(err)
		}
		connected := readAll(t, resp)
		if resp.StatusCode != http.StatusOK || !strings.Contains(connected, "Connection successful") {
			t.Fatalf("connecting with the link token: %d\n%s", resp.StatusCode, connected)
		}
		secrets = append(secrets, "link-connected-key")
		_, out = w.do("GET", "/integrated-account?tenant_id=sealed-tenant", nil)
		answers = append(answers, out)
		var list struct {
			Result []map[string]any `json:"result"`
		}
		if err := json.Unmarshal(out, &list); err != nil || len(list.Result) != 2 {
			t.Fatalf("listing: %v, %s", err, out)
		}
		for _, a := range list.Result {
			ctx := a["context"].(map[string]any)
			if a["id"] != id && (ctx["plan"] != "plan-in-clear" || ctx["signing_key"] != "[REDACTED]") {
				t.Fatalf("the new account's context %v: want the link token's, its secrets redacted", ctx)
			}
		}

		// The bulk import path seals them as well.
		status, out = w.do("POST", "/integrated-account/bulk", []map[string]any{{"tenant_id": "bulk-tenant", "integration": "keyed",
			"context": map[string]any{"api_key": "bulk-credential-key", "webhook_secret": "bulk-webhook-secret", "team": "team-in-clear"}}})
		if status != http.StatusOK || !bytes.Contains(out, []byte(`"imported":1`)) {
			t.Fatalf("bulk import: %d %s", status, out)
		}
		answers = append(answers, out)
		secrets = append(secrets, "bulk-credential-key", "bulk-webhook-secret")
		_, out = w.do("GET", "/integrated-account?tenant_id=bulk-tenant", nil)
		if !bytes.Contains(out, []byte(`"webhook_secret":"[REDACTED]"`)) || !bytes.Contains(out, []byte(`"team":"team-in-clear"`)) {
			t.Fatalf("the bulk-imported account: %s", out)
		}
		answers = append(answers, out)

		// Webhook payloads: created, active, updated for the import and the
		// patch, created and active for the new connection and the bulk
		// import.
		deliveries := w.hooks.WaitFor(t, 7, 30e9)
		for _, d := range deliveries {
			answers = append(answers, d.Body)
		}
		all := bytes.Join(answers, []byte("\n"))
		for _, want := range []string{`"client_secret":"[REDACTED]"`, `"bearer":"[REDACTED]"`, `"access_key":"[REDACTED]"`,
			`"pwd":"[REDACTED]"`, `"api-key":"[REDACTED]"`, `"region":"region-in-clear"`, `"author":"author-in-clear"`} {
			if !bytes.Contains(all, []byte(want)) {
				t.Errorf("no answer shows %s", want)
			}
		}
		for _, s := range secrets {
			if bytes.Contains(all, []byte(s)) {
				t.Errorf("an answer or a webhook payload shows %q", s)
			}
		}

		// The store: the non-secret values are there (the dump reads the
		// right thing), the secrets are not.
		dump := w.dump()
		for _, want := range []string{"region-in-clear", "author-in-clear", "plan-in-clear", "team-in-clear"} {
			if !bytes.Contains(dump, []byte(want)) {
				t.Fatalf("the dump lacks %q: it does not read the store", want)
			}
		}
		for _, s := range secrets {
			if bytes.Contains(dump, []byte(s)) || bytes.Contains(dump, []byte(fmt.Sprintf("%x", s))) {
				t.Errorf("the store holds %q in clear", s)
			}
		}

		// The proxy still gets the whole context's credential.
		if st, b := w.do("GET", "/integrated-account/"+id, nil); st != http.StatusOK || bytes.Contains(b, []byte("imported-credential-key")) {
			t.Fatalf("account: %d %s", st, b)
		}
	})
}

// TestAPITokensMustMatchWhole: a prefix of the API token, the token with a
// character more, or with one changed, opens neither the API nor the
// console.
func TestAPITokensMustMatchWhole(t *testing.T) {
	eachStore(t, func(t *testing.T, w *storeWorld) {
		for i, tok := range []string{apiToken[:len(apiToken)-1], apiToken[:8], apiToken + "0", apiToken + " x", "x" + apiToken,
			strings.ToUpper(apiToken), apiToken[:len(apiToken)-1] + "8"} {
			if status, body := w.doAuth("GET", "/integrated-account", "Bearer "+tok, nil); status != http.StatusUnauthorized {
				t.Errorf("API with token %q: %d %s; want 401", tok, status, body)
			}
			if status := consoleSignIn(t, w.gateway, i, tok); status != http.StatusUnauthorized {
				t.Errorf("console sign-in with token %q: %d; want 401", tok, status)
			}
		}
		// The whole token works, so the refusals above are about the token.
		if status, _ := w.do("GET", "/integrated-account", nil); status != http.StatusOK {
			t.Fatalf("API with the token: %d", status)
		}
		if status := consoleSignIn(t, w.gateway, 99, apiToken); status != http.StatusSeeOther {
			t.Fatalf("console sign-in with the token: %d; want 303", status)
		}
	})
}

// consoleSignIn fetches the sign-in form and signs in with an API token,
// from the loopback address 127.0.0.(10+from): the per-address limit is not
// what the callers test.
func consoleSignIn(t *testing.T, g *gateway, from int, token string) int {
	t.Helper()
	return consolePasswordSignIn(t, g.base, from, "", token)
}

// consolePasswordSignIn signs in to the console at base as user (none: with
// an API token) from 127.0.0.(10+from).
func consolePasswordSignIn(t *testing.T, base string, from int, user, secret string) int {
	t.Helper()
	src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(10+from))}
	hc := &http.Client{
		Transport:     &http.Transport{DialContext: (&net.Dialer{LocalAddr: src}).DialContext},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(base + "/console/login")
	if err != nil {
		t.Fatal(err)
	}
	page := readAll(t, resp)
	var pre *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "linkgate_console_login" {
			pre = c
		}
	}
	m := consoleCSRF.FindStringSubmatch(page)
	if pre == nil || m == nil {
		t.Fatalf("sign-in page without its form token: %d", resp.StatusCode)
	}
	form := url.Values{"csrf": {m[1]}, "username": {user}, "secret": {secret}}
	req, _ := http.NewRequest(http.MethodPost, base+"/console/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(pre)
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	return resp.StatusCode
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
