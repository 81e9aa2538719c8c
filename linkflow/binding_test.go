package linkflow_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/linkflow"
	"github.com/linkgate/linkgate/tokenstore"
)

// forwardedRefusal checks the page a browser gets for a sign-in answer whose
// state another browser started.
func forwardedRefusal(t *testing.T, r response) {
	t.Helper()
	if r.status != http.StatusForbidden || !strings.Contains(r.body, "was not started in this browser") {
		t.Fatalf("callback in another browser = %d, want 403 and a page that says why:\n%s", r.status, r.body)
	}
	assertPageHeaders(t, r)
	p := postedBy(t, r.body)
	if p.Message["result"] != "error" || p.Message["error_type"] != "connection_error" || p.Message["is_truto"] != true {
		t.Errorf("posted %v, want an error with error_type connection_error", p.Message)
	}
}

// TestForwardedAuthorizeURLIsRefused is the login-CSRF attack on the connect
// flow: someone holding a link token presses connect himself, takes the
// provider's authorization URL from the redirect and sends it to a victim.
// The victim approves at the provider in her own browser; the callback must
// refuse it there, and store nothing: the victim's grant must never land in
// the account the link token names.
func TestForwardedAuthorizeURLIsRefused(t *testing.T) {
	for _, reconnect := range []bool{true, false} {
		name := "new connection"
		if reconnect {
			name = "reconnect"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			attacker, victim := h.newAgent(), h.newAgent()
			body := map[string]any{"tenant_id": "tenant-mallory", "integration": "acme"}
			var before *account.Account
			if reconnect {
				seeded, _ := h.seedAccount("mallory", account.StatusNeedsReauth, nil)
				before = h.account(seeded.ID)
				body = map[string]any{"integrated_account_id": seeded.ID}
			}
			lt := h.linkToken(body)
			h.outbox()

			authorize := attacker.startOAuth(lt.LinkToken)
			cb := victim.consent(authorize, "victim", "allow")
			forwardedRefusal(t, victim.get(cb.String()))

			if reconnect {
				after := h.account(before.ID)
				if !reflect.DeepEqual(after.Credentials, before.Credentials) || after.Status != before.Status || after.Version != before.Version {
					t.Errorf("the victim's answer changed the attacker's account: %+v", after)
				}
			} else if n := len(h.accountsOf("tenant-mallory")); n != 0 {
				t.Errorf("the victim's answer created %d accounts", n)
			}
			if ev := h.outbox(); len(ev) != 0 {
				t.Errorf("events %v after a refused answer", ev)
			}
			if r := h.get(lt.URL); r.status != http.StatusOK {
				t.Errorf("the link token after the refused answer = %d, want still usable", r.status)
			}
			h.assertNotLogged(cb.Query().Get("code"), cb.Query().Get("state"), lt.LinkToken)

			// Nothing was spent: the browser that started the flow still
			// finishes it.
			if r := attacker.get(attacker.consent(authorize, "mallory", "allow").String()); r.status != http.StatusOK {
				t.Fatalf("the starting browser's own answer = %d:\n%s", r.status, r.body)
			}
		})
	}
}

// TestCallbackNeedsTheStartingBrowsersState covers the other answers that must
// change nothing: a state that this browser did not start although it
// started others, one whose cookie was dropped, and a replayed answer.
func TestCallbackNeedsTheStartingBrowsersState(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	alice, bob := h.newAgent(), h.newAgent()
	ltA := h.linkToken(map[string]any{"tenant_id": "tenant-a", "integration": "acme"})
	ltB := h.linkToken(map[string]any{"tenant_id": "tenant-b", "integration": "acme"})

	// Bob has a flow of his own going: his cookie binds his state, not Alice's.
	bobsOwn := bob.consent(bob.startOAuth(ltB.LinkToken), "bob", "allow")
	alicesAnswer := alice.consent(alice.startOAuth(ltA.LinkToken), "alice", "allow")
	forwardedRefusal(t, bob.get(alicesAnswer.String()))
	if len(h.accountsOf("tenant-a")) != 0 || len(h.accountsOf("tenant-b")) != 0 || len(h.outbox()) != 0 {
		t.Fatal("an answer presented by another browser changed something")
	}

	// A browser that lost its cookie is another browser.
	lost := h.newAgent()
	forwardedRefusal(t, lost.get(alicesAnswer.String()))

	// Each browser finishes its own flow.
	if r := bob.get(bobsOwn.String()); r.status != http.StatusOK {
		t.Fatalf("bob's own answer = %d:\n%s", r.status, r.body)
	}
	if r := alice.get(alicesAnswer.String()); r.status != http.StatusOK {
		t.Fatalf("alice's own answer = %d:\n%s", r.status, r.body)
	}
	if len(h.accountsOf("tenant-a")) != 1 || len(h.accountsOf("tenant-b")) != 1 {
		t.Fatal("the browsers' own answers did not connect")
	}
	h.outbox()

	// Replayed by the same browser, the answer finds its state spent.
	if r := alice.get(alicesAnswer.String()); r.status != http.StatusBadRequest || !strings.Contains(r.body, "already used") {
		t.Errorf("replayed answer = %d:\n%s", r.status, r.body)
	}
	if len(h.accountsOf("tenant-a")) != 1 || len(h.outbox()) != 0 {
		t.Error("a replayed answer changed something")
	}
}

// TestBindingCookieAttributes pins what the browser is told to keep: a
// __Host- cookie (Secure, Path=/, no Domain: no subdomain can plant or read
// it), HttpOnly, SameSite=None and Partitioned so that it also comes back
// to a connect page framed by another site (CHIPS), and no longer than the
// state can be used. It holds a keyed hash of the state, never the state.
func TestBindingCookieAttributes(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	lt := h.linkToken(map[string]any{"tenant_id": "tenant-c", "integration": "acme"})
	r := h.postForm(h.public+"/connect-account", url.Values{"link_token": {lt.LinkToken}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("connect = %d", r.status)
	}
	loc, _ := url.Parse(r.header.Get("Location"))
	state := loc.Query().Get("state")
	set := r.header.Values("Set-Cookie")
	if len(set) != 1 {
		t.Fatalf("Set-Cookie %q, want one cookie", set)
	}
	line := set[0]
	for _, want := range []string{"__Host-linkgate-connect=", "Path=/", "Secure", "HttpOnly", "SameSite=None", "Partitioned", "Max-Age="} {
		if !strings.Contains(line, want) {
			t.Errorf("Set-Cookie %q lacks %s", line, want)
		}
	}
	if strings.Contains(line, "Domain=") || strings.Contains(line, state) {
		t.Errorf("Set-Cookie %q has a Domain or holds the state", line)
	}
	c := h.agent.cookie("__Host-linkgate-connect")
	if c == nil || c.MaxAge <= 0 || c.MaxAge > 3600 {
		t.Fatalf("cookie %+v: want a lifetime of the order of the state's", c)
	}
}

// serviceWithKeys is another instance of the gateway over h's store, with
// its own secret keys and public URL.
func serviceWithKeys(t *testing.T, h *harness, public string, keys ...[]byte) *linkflow.Service {
	t.Helper()
	svc, err := linkflow.New(h.store, h.ints, linkflow.Options{
		PublicURL: public, AllowedOrigins: []string{appOriginForHandlers}, Now: h.clock.Now, SecretKeys: keys,
	})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// serve sends one request from a to svc directly, and records the cookies
// it sets as a.do does.
func serve(t *testing.T, svc http.Handler, req *http.Request, cookie string) *httptest.ResponseRecorder {
	t.Helper()
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	rec := httptest.NewRecorder()
	svc.ServeHTTP(rec, req)
	return rec
}

// TestStateBindingAcrossInstancesAndKeyRotation: instances that share the
// secret keys (a cluster on one database) accept each other's flows; an
// instance with other keys does not; after a rotation (new key first, old
// key kept) a flow started under the old key still finishes.
func TestStateBindingAcrossInstancesAndKeyRotation(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	other, err := tokenstore.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		keys [][]byte
		ok   bool
	}{
		{"same keys", [][]byte{h.key}, true},
		{"rotated: new key first, old kept", [][]byte{other, h.key}, true},
		{"other keys", [][]byte{other}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			lt := h.linkToken(map[string]any{"tenant_id": "tenant-keys", "integration": "acme"})
			browser := h.newAgent()
			cb := browser.consent(browser.startOAuth(lt.LinkToken), "kim", "allow")
			req := httptest.NewRequest(http.MethodGet, cb.String(), nil)
			rec := serve(t, serviceWithKeys(t, h, h.public, c.keys...), req, browser.cookieHeader())
			if c.ok && rec.Code != http.StatusOK {
				t.Fatalf("callback on the other instance = %d:\n%s", rec.Code, rec.Body)
			}
			if !c.ok && (rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "not started in this browser")) {
				t.Fatalf("callback on an instance with other keys = %d:\n%s", rec.Code, rec.Body)
			}
		})
	}
	if _, err := linkflow.New(h.store, h.ints, linkflow.Options{PublicURL: h.public}); err == nil {
		t.Error("a service without a secret key was built")
	}
}

// TestBindingCookieOnPlainHTTP: browsers drop a Secure cookie set over plain
// http except on loopback hosts, so a public_url on http elsewhere gets a
// cookie they keep (SameSite=Lax, no __Host- prefix, scoped to the connect
// path), and a warning in the log.
func TestBindingCookieOnPlainHTTP(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for _, c := range []struct {
		public string
		secure bool
	}{
		{"http://gateway.internal:8080/lg", false},
		{"https://gateway.example.com", true},
		{"http://127.0.0.1:8080", true},
		{"http://[::1]:8080", true},
		{"http://app.localhost", true},
	} {
		t.Run(c.public, func(t *testing.T) {
			lt := h.linkToken(map[string]any{"tenant_id": "tenant-http", "integration": "acme"})
			svc := serviceWithKeys(t, h, c.public, h.key)
			req := httptest.NewRequest(http.MethodPost, "/connect-account", strings.NewReader(url.Values{"link_token": {lt.LinkToken}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			rec := serve(t, svc, req, "")
			if rec.Code != http.StatusSeeOther {
				t.Fatalf("connect = %d:\n%s", rec.Code, rec.Body)
			}
			line := rec.Header().Get("Set-Cookie")
			if c.secure {
				for _, want := range []string{"__Host-linkgate-connect=", "Path=/;", "Secure", "SameSite=None", "Partitioned"} {
					if !strings.Contains(line, want) {
						t.Errorf("Set-Cookie %q lacks %s", line, want)
					}
				}
				return
			}
			if !strings.HasPrefix(line, "linkgate-connect=") || !strings.Contains(line, "Path=/lg/connect-account") ||
				!strings.Contains(line, "SameSite=Lax") || !strings.Contains(line, "HttpOnly") || strings.Contains(line, "Secure") {
				t.Errorf("Set-Cookie %q, want a Lax cookie without Secure on the connect path", line)
			}
		})
	}
}
