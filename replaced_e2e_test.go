package linkgate_test

import (
	"encoding/hex"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// holder sits in front of a test upstream and keeps one of its 401 answers
// back until the test lets it go, as a slow upstream would: the upstream has
// judged the credentials, and its verdict is on its way.
type holder struct {
	srv    *httptest.Server
	target *url.URL

	mu    sync.Mutex
	armed bool
	skip  int           // 401s let through before the one held
	let   chan struct{} // closed to let the held answer go
	held  chan struct{}
}

func newHolder(t *testing.T) *holder {
	h := &holder{held: make(chan struct{}, 1)}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(h.target)
			r.Out.Host = r.In.Host
		},
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode != http.StatusUnauthorized {
				return nil
			}
			h.mu.Lock()
			hold := h.armed && h.skip == 0
			if h.armed && h.skip > 0 {
				h.skip--
			}
			let := h.let
			if hold {
				h.armed = false
			}
			h.mu.Unlock()
			if hold {
				h.held <- struct{}{}
				<-let
			}
			return nil
		},
	}
	h.srv = httptest.NewServer(rp)
	t.Cleanup(func() { h.release(); h.srv.Close() })
	return h
}

// hold keeps back the 401 that comes after the next skip ones.
func (h *holder) hold(skip int) {
	h.mu.Lock()
	h.armed, h.skip, h.let = true, skip, make(chan struct{})
	h.mu.Unlock()
}

// release lets the held answer go.
func (h *holder) release() {
	h.mu.Lock()
	if h.let != nil {
		close(h.let)
		h.let = nil
	}
	h.mu.Unlock()
}

// replacedWorld is a world on the given store whose keyed, basicauth and
// oauth upstreams are reached through holders, and whose log goes to
// caddy.log in its data directory.
func replacedWorld(t *testing.T, store string) (*world, map[string]*holder) {
	holders := map[string]*holder{"keyed": newHolder(t), "basicauth": newHolder(t), "oauth": newHolder(t)}
	var storage string
	if store == "postgres" {
		dsn, _ := testenv.PostgresSchema(t)
		t.Setenv("LINKGATE_REPLACED_DSN", dsn)
		key := make([]byte, 32)
		for i := range key {
			key[i] = byte(i*5 + 1)
		}
		storage = "storage postgres {env.LINKGATE_REPLACED_DSN}\n\t\tencryption_key " + hex.EncodeToString(key)
	}
	w := newWorldWith(t, func(cfg string) string {
		cfg = strings.Replace(cfg, "\tadmin off\n", "\tadmin off\n\tlog {\n\t\toutput file {{DATA}}/caddy.log\n\t}\n", 1)
		if storage != "" {
			cfg = strings.Replace(cfg, "storage sqlite {{DATA}}/linkgate.db", storage, 1)
		}
		return strings.NewReplacer(
			"{{UPSTREAM_KEYED}}", holders["keyed"].srv.URL,
			"{{UPSTREAM_BASIC}}", holders["basicauth"].srv.URL,
			"{{UPSTREAM_OAUTH}}", holders["oauth"].srv.URL,
		).Replace(cfg)
	})
	for name, up := range map[string]*testenv.Upstream{"keyed": w.keyed, "basicauth": w.basic, "oauth": w.oauth} {
		u, err := url.Parse(up.URL())
		if err != nil {
			t.Fatal(err)
		}
		holders[name].target = u
	}
	return w, holders
}

// reconnectWithForm reconnects account id through a link token, as its end
// user would on the connect page, with the form's credentials.
func (w *world) reconnectWithForm(t *testing.T, id string, form url.Values) {
	t.Helper()
	status, out := w.do("POST", "/link-token", map[string]any{"integrated_account_id": id})
	if status != http.StatusCreated {
		t.Fatalf("link token: %d %s", status, out)
	}
	linkURL := mustJSON(t, out)["url"].(string)
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	page, err := browser.Get(linkURL)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, page)
	if m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body); m != nil {
		form.Set("csrf", m[1])
	}
	form.Set("link_token", strings.TrimPrefix(linkURL[strings.Index(linkURL, "link_token="):], "link_token="))
	resp, err := browser.PostForm(w.base+"/connect-account", form)
	if err != nil {
		t.Fatal(err)
	}
	if done := readAll(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(done, "Connection successful") {
		t.Fatalf("reconnecting through the link token: %d\n%s", resp.StatusCode, done)
	}
}

// reconnectOAuth reconnects account id through a link token, as its end
// user would: the connect page's button, the provider's consent as user,
// and the callback, in one cookie jar.
func (w *world) reconnectOAuth(t *testing.T, id, user string) {
	t.Helper()
	status, out := w.do("POST", "/link-token", map[string]any{"integrated_account_id": id})
	if status != http.StatusCreated {
		t.Fatalf("link token: %d %s", status, out)
	}
	linkURL := mustJSON(t, out)["url"].(string)
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	page, err := browser.Get(linkURL)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, page)
	form := url.Values{"link_token": {strings.TrimPrefix(linkURL[strings.Index(linkURL, "link_token="):], "link_token=")}}
	if m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body); m != nil {
		form.Set("csrf", m[1])
	}
	resp, err := browser.PostForm(w.base+"/connect-account", form)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	authorize, err := resp.Location()
	if err != nil {
		t.Fatalf("the connect button answered %d without a redirect", resp.StatusCode)
	}
	if resp, err = browser.Get(authorize.String()); err != nil {
		t.Fatal(err)
	}
	if readAll(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("the provider's consent page: %d", resp.StatusCode)
	}
	consent := authorize.Query()
	consent.Set("username", user)
	consent.Set("action", "allow")
	if resp, err = browser.PostForm(w.as.AuthorizeURL(), consent); err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	callback, err := resp.Location()
	if err != nil {
		t.Fatalf("the consent answered %d without a redirect", resp.StatusCode)
	}
	if resp, err = browser.Get(callback.String()); err != nil {
		t.Fatal(err)
	}
	if done := readAll(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(done, "Connection successful") {
		t.Fatalf("the callback: %d\n%s", resp.StatusCode, done)
	}
}

// replacedDropped is what the gateway logs when it drops an upstream's
// verdict on credentials the account no longer holds.
const replacedDropped = "concerns credentials the account no longer holds"

// TestLate401ForReplacedCredentialsChangesNothing: a proxied request is
// sent with an account's credentials X, and the upstream's 401 to it is
// slow; meanwhile the account is reconnected (or its credentials PATCHed)
// with credentials Y that work. The late 401 judged X only: the account
// stays active, no authentication_error is recorded, and Y is used.
//
// The cases are each way an upstream 401 moves an account to needs_reauth:
// an api_key or basic account's 401, an OAuth account without a refresh
// token's 401, and the 401 to the retry of an OAuth request after a
// refresh (the second 401, with freshly refreshed credentials).
func TestLate401ForReplacedCredentialsChangesNothing(t *testing.T) {
	type replacement struct {
		secrets []string // the new credentials, which must not be logged
		ok      string   // a path the upstream answers 200 with them
	}
	cases := []struct {
		name string
		// start creates the account with credentials the upstream refuses
		// and returns its id and the refused secrets.
		start func(t *testing.T, w *world) (string, []string)
		// integration is the holder in front of the account's upstream;
		// skip the 401s to let through before the held one.
		integration string
		skip        int
		replace     func(t *testing.T, w *world, id string) replacement
	}{
		{
			name: "api_key/reconnect", integration: "keyed",
			start: func(t *testing.T, w *world) (string, []string) {
				return w.importAccount(map[string]any{"tenant_id": "k", "integration": "keyed",
					"context": map[string]any{"api_key": "sk_rotated_away_1"}}), []string{"sk_rotated_away_1"}
			},
			replace: func(t *testing.T, w *world, id string) replacement {
				w.reconnectWithForm(t, id, url.Values{"api_key": {upstreamKey}})
				return replacement{[]string{upstreamKey}, "/contacts"}
			},
		},
		{
			name: "api_key/patch", integration: "keyed",
			start: func(t *testing.T, w *world) (string, []string) {
				return w.importAccount(map[string]any{"tenant_id": "k", "integration": "keyed",
					"context": map[string]any{"api_key": "sk_rotated_away_2"}}), []string{"sk_rotated_away_2"}
			},
			replace: func(t *testing.T, w *world, id string) replacement {
				if status, out := w.do("PATCH", "/integrated-account/"+id+"/credentials", map[string]any{"api_key": upstreamKey}); status != http.StatusOK {
					t.Fatalf("patch: %d %s", status, out)
				}
				return replacement{[]string{upstreamKey}, "/contacts"}
			},
		},
		{
			name: "basic/reconnect", integration: "basicauth",
			start: func(t *testing.T, w *world) (string, []string) {
				return w.importAccount(map[string]any{"tenant_id": "b", "integration": "basicauth",
					"context": map[string]any{"username": basicUser, "password": "changed-since-93"}}), []string{"changed-since-93"}
			},
			replace: func(t *testing.T, w *world, id string) replacement {
				w.reconnectWithForm(t, id, url.Values{"username": {basicUser}, "password": {basicPass}})
				return replacement{[]string{basicPass}, "/contacts"}
			},
		},
		{
			name: "basic/patch", integration: "basicauth",
			start: func(t *testing.T, w *world) (string, []string) {
				return w.importAccount(map[string]any{"tenant_id": "b", "integration": "basicauth",
					"context": map[string]any{"username": basicUser, "password": "changed-since-94"}}), []string{"changed-since-94"}
			},
			replace: func(t *testing.T, w *world, id string) replacement {
				if status, out := w.do("PATCH", "/integrated-account/"+id+"/credentials",
					map[string]any{"username": basicUser, "password": basicPass}); status != http.StatusOK {
					t.Fatalf("patch: %d %s", status, out)
				}
				return replacement{[]string{basicPass}, "/contacts"}
			},
		},
		{
			name: "oauth2 without refresh token/patch", integration: "oauth",
			start: func(t *testing.T, w *world) (string, []string) {
				tok := w.as.Authorize(t, oauthClient, w.base+callbackPath, "nora", nil)
				id := w.importAccount(map[string]any{"tenant_id": "o", "integration": "oauth",
					"context": map[string]any{"oauth": map[string]any{"token": map[string]any{
						"access_token": tok.AccessToken, "expires_in": 3600}}}})
				// Revoked at the provider: the upstream refuses it.
				w.as.ExpireAccessToken(tok.AccessToken)
				return id, []string{tok.AccessToken, tok.RefreshToken}
			},
			replace: func(t *testing.T, w *world, id string) replacement {
				tok := w.as.Authorize(t, oauthClient, w.base+callbackPath, "nora", nil)
				if status, out := w.do("PATCH", "/integrated-account/"+id+"/credentials", map[string]any{"oauth": map[string]any{
					"token": map[string]any{"access_token": tok.AccessToken, "expires_in": 3600}}}); status != http.StatusOK {
					t.Fatalf("patch: %d %s", status, out)
				}
				return replacement{[]string{tok.AccessToken}, "/me"}
			},
		},
		{
			name: "oauth2 without refresh token/reconnect", integration: "oauth",
			start: func(t *testing.T, w *world) (string, []string) {
				tok := w.as.Authorize(t, oauthClient, w.base+callbackPath, "nils", nil)
				id := w.importAccount(map[string]any{"tenant_id": "o", "integration": "oauth",
					"context": map[string]any{"oauth": map[string]any{"token": map[string]any{
						"access_token": tok.AccessToken, "expires_in": 3600}}}})
				w.as.ExpireAccessToken(tok.AccessToken)
				return id, []string{tok.AccessToken, tok.RefreshToken}
			},
			replace: func(t *testing.T, w *world, id string) replacement {
				w.reconnectOAuth(t, id, "nils")
				return replacement{nil, "/me"}
			},
		},
		{
			name: "oauth2 retry after refresh/reconnect", integration: "oauth", skip: 1,
			start: func(t *testing.T, w *world) (string, []string) {
				id, access, refresh := w.importOAuth(t, "otto", time.Now().Add(time.Hour))
				w.oauth.ForceStatus(http.StatusUnauthorized, 2)
				return id, []string{access, refresh}
			},
			replace: func(t *testing.T, w *world, id string) replacement {
				w.reconnectOAuth(t, id, "otto")
				return replacement{nil, "/me"}
			},
		},
		{
			// The first 401 passes: the gateway refreshes and retries; the
			// retry's 401 (the upstream still refuses, with freshly refreshed
			// credentials) is the one held.
			name: "oauth2 retry after refresh/patch", integration: "oauth", skip: 1,
			start: func(t *testing.T, w *world) (string, []string) {
				id, access, refresh := w.importOAuth(t, "olga", time.Now().Add(time.Hour))
				w.oauth.ForceStatus(http.StatusUnauthorized, 2)
				return id, []string{access, refresh}
			},
			replace: func(t *testing.T, w *world, id string) replacement {
				tok := w.as.Authorize(t, oauthClient, w.base+callbackPath, "olga", nil)
				if status, out := w.do("PATCH", "/integrated-account/"+id+"/credentials", map[string]any{"oauth": map[string]any{
					"token": map[string]any{"access_token": tok.AccessToken, "refresh_token": tok.RefreshToken, "expires_in": 3600}}}); status != http.StatusOK {
					t.Fatalf("patch: %d %s", status, out)
				}
				return replacement{[]string{tok.AccessToken, tok.RefreshToken}, "/me"}
			},
		},
	}
	for _, store := range []string{"sqlite", "postgres"} {
		t.Run(store, func(t *testing.T) {
			w, holders := replacedWorld(t, store)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					id, old := tc.start(t, w)
					h := holders[tc.integration]
					h.hold(tc.skip)

					// The request with the old credentials; its 401 is held.
					answered := make(chan int, 1)
					go func() {
						req, _ := http.NewRequest("GET", w.base+"/proxy/contacts?integrated_account_id="+id, nil)
						req.Header.Set("Authorization", "Bearer "+apiToken)
						resp, err := w.client.Do(req)
						if err != nil {
							answered <- 0
							return
						}
						resp.Body.Close()
						answered <- resp.StatusCode
					}()
					select {
					case <-h.held:
					case <-time.After(30 * time.Second):
						t.Fatal("the upstream's 401 never came")
					}
					repl := tc.replace(t, w, id)
					if s := w.status(t, id); s != "active" {
						t.Fatalf("after the replacement the account is %s", s)
					}
					h.release()
					if code := <-answered; code != http.StatusUnauthorized {
						t.Fatalf("the request with the old credentials got %d, want the upstream's 401", code)
					}

					// The gateway has judged the late 401 once it logged
					// dropping it, or moved the account.
					judged := false
					for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
						if w.status(t, id) != "active" || w.logged(t, id, replacedDropped) {
							judged = true
							break
						}
					}
					if !judged {
						for _, line := range strings.Split(w.log(t), "\n") {
							if strings.Contains(line, id) {
								t.Log(line)
							}
						}
						t.Fatal("the late 401 was neither dropped nor counted after 30s")
					}
					_, body := w.do("GET", "/integrated-account/"+id, nil)
					if m := mustJSON(t, body); m["status"] != "active" || m["last_error"] != nil {
						t.Fatalf("the late 401 for the replaced credentials counted against the new ones: status %v, last_error %v", m["status"], m["last_error"])
					}
					_, body = w.do("GET", "/webhook-delivery?event=integrated_account:authentication_error&integrated_account_id="+id, nil)
					if res, _ := mustJSON(t, body)["result"].([]any); len(res) != 0 {
						t.Fatalf("authentication_error recorded for credentials that work: %s", body)
					}
					if status, body := w.proxyAs(t, id, repl.ok); status != http.StatusOK {
						t.Fatalf("a request with the new credentials: %d %s", status, body)
					}
					if s := w.status(t, id); s != "active" {
						t.Fatalf("after a request with the new credentials the account is %s", s)
					}
					logged := w.log(t)
					for _, s := range append(old, repl.secrets...) {
						if s != "" && strings.Contains(logged, s) {
							t.Errorf("a credential is in the log")
						}
					}
				})
			}
		})
	}
}

// logged reports whether a line of caddy.log about account id says msg.
func (w *world) logged(t *testing.T, id, msg string) bool {
	t.Helper()
	for _, line := range strings.Split(w.log(t), "\n") {
		if strings.Contains(line, msg) && strings.Contains(line, `"integrated_account_id":"`+id+`"`) {
			return true
		}
	}
	return false
}

// log returns what the gateway logged so far to caddy.log.
func (w *world) log(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(w.dir, "caddy.log"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}
