package linkflow_test

import (
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/linkgate/linkgate/account"
)

// recorder is a listener that counts the connections made to it: proof
// that no request reached a host linkgate must not call.
type recorder struct {
	addr  string
	conns atomic.Int64
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{addr: l.Addr().String()}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r.conns.Add(1)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = l.Close() })
	return r
}

// A user field typed on the connect page (a subdomain) is checked before
// OAuth starts; a bad one shows the form again, starts nothing and stores
// nothing. A good one reaches the account's context.
func TestConnectFormSubdomain(t *testing.T) {
	h := newHarness(t, harnessOptions{configure: func(m map[string]*account.Integration) {
		in := m["acme"]
		u, _ := url.Parse(in.AuthorizeURL)
		in.AuthorizeURL += "?realm={connection.subdomain}"
		in.BaseURL += "/{connection.subdomain}"
		in.AllowedHosts = []string{u.Host}
		in.ConnectionFields = []account.ConnectionField{{Name: "subdomain", Label: "Your subdomain", Kind: account.KindDNSLabel}}
	}})
	lt := h.linkToken(map[string]any{"tenant_id": "tenant-s", "integration": "acme"})
	page := h.get(lt.URL)
	if page.status != http.StatusOK || !strings.Contains(page.body, `name="connection.subdomain"`) || !strings.Contains(page.body, "Your subdomain") {
		t.Fatalf("connect page does not ask for the subdomain: %d\n%s", page.status, page.body)
	}
	for _, bad := range []string{"evil.test#", "a.b", "..", ""} {
		r := h.postForm(h.public+"/connect-account", url.Values{"link_token": {lt.LinkToken}, "connection.subdomain": {bad}})
		if r.status != http.StatusBadRequest || !strings.Contains(r.body, "Your subdomain") || r.header.Get("Location") != "" {
			t.Fatalf("subdomain %q: %d %s\n%s", bad, r.status, r.header.Get("Location"), r.body)
		}
	}
	if n := h.auth.TokenCalls("authorization_code"); n != 0 {
		t.Fatalf("%d token calls after refused subdomains", n)
	}
	r := h.postForm(h.public+"/connect-account", url.Values{"link_token": {lt.LinkToken}, "connection.subdomain": {"Acme"}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("good subdomain: %d\n%s", r.status, r.body)
	}
	loc, _ := url.Parse(r.header.Get("Location"))
	if loc.Query().Get("realm") != "acme" {
		t.Fatalf("authorize URL %s does not carry the subdomain", loc)
	}
	cb := h.agent.consent(loc, "sam", "allow")
	if res := h.agent.get(cb.String()); res.status != http.StatusOK {
		t.Fatalf("callback = %d\n%s", res.status, res.body)
	}
	accts := h.accountsOf("tenant-s")
	if len(accts) != 1 || accts[0].Context["subdomain"] != "acme" {
		t.Fatalf("accounts = %+v", accts)
	}
}

// A link token whose context carries a bad connection field is refused
// with 400 naming the field.
func TestLinkTokenContextFieldChecked(t *testing.T) {
	h := newHarness(t, harnessOptions{configure: func(m map[string]*account.Integration) {
		in := m["acme"]
		u, _ := url.Parse(in.AuthorizeURL)
		in.BaseURL += "/{connection.subdomain}"
		in.AllowedHosts = []string{u.Host}
		in.ConnectionFields = []account.ConnectionField{{Name: "subdomain", Kind: account.KindDNSLabel}}
	}})
	r := h.postJSON(h.public+"/link-token", `{"tenant_id":"t","integration":"acme","context":{"subdomain":"evil.test#"}}`)
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, "context.subdomain") {
		t.Fatalf("bad subdomain in link token context: %d %s", r.status, r.body)
	}
}

// The instance URL of a token response must match allowed_hosts: one
// outside is refused with post_install_error, nothing is stored, and no
// request reaches it; one inside is stored and used.
func TestInstanceURLFromTokenResponse(t *testing.T) {
	evil := newRecorder(t)
	h := newHarness(t, harnessOptions{configure: func(m map[string]*account.Integration) {
		in := m["acme"]
		u, _ := url.Parse(in.AuthorizeURL)
		in.BaseURL = "{connection.instance_url}/api"
		in.UserinfoURL = "{connection.instance_url}/userinfo"
		in.AllowedHosts = []string{u.Host}
		in.ConnectionFields = []account.ConnectionField{{Name: "instance_url", Kind: account.KindHTTPSURL, Source: account.SourceTokenResponse, Path: "instance_url"}}
	}})
	h.auth.SetTokenExtra(map[string]any{"instance_url": "http://" + evil.addr})
	lt := h.linkToken(map[string]any{"tenant_id": "tenant-i", "integration": "acme"})
	r := h.connectOAuth(lt.LinkToken, "ivy")
	p := postedBy(t, r.body)
	if r.status != http.StatusBadGateway || p.Message["error_type"] != "post_install_error" {
		t.Fatalf("instance_url outside allowed_hosts: %d %v\n%s", r.status, p.Message, r.body)
	}
	if n := len(h.accountsOf("tenant-i")); n != 0 || evil.conns.Load() != 0 {
		t.Fatalf("%d accounts stored, %d connections to the refused host", n, evil.conns.Load())
	}
	h.auth.SetTokenExtra(map[string]any{"instance_url": h.auth.URL()})
	r = h.connectOAuth(lt.LinkToken, "ivy")
	if r.status != http.StatusOK {
		t.Fatalf("instance_url inside allowed_hosts: %d\n%s", r.status, r.body)
	}
	accts := h.accountsOf("tenant-i")
	if len(accts) != 1 || accts[0].Context["instance_url"] != h.auth.URL() || accts[0].Context["upstream_user_id"] != "ivy" {
		t.Fatalf("accounts = %+v", accts)
	}
}

// Discovery fills a field from its answer after the token; an answer
// without the field is post_install_error and stores nothing. A callback
// parameter fills another.
func TestDiscoveryAndCallbackFields(t *testing.T) {
	h := newHarness(t, harnessOptions{configure: func(m map[string]*account.Integration) {
		in := m["acme"]
		u, _ := url.Parse(in.AuthorizeURL)
		in.BaseURL += "/ex/{connection.cloud_id}/{connection.realm}"
		in.AllowedHosts = []string{u.Host}
		in.Discovery = &account.Discovery{URL: in.AuthorizeURL[:strings.LastIndex(in.AuthorizeURL, "/")] + "/discovery"}
		in.ConnectionFields = []account.ConnectionField{
			{Name: "cloud_id", Kind: account.KindUUID, Source: account.SourceDiscovery, Path: "0.id"},
			{Name: "realm", Kind: account.KindPattern, Pattern: "[0-9]{4,20}", Source: account.SourceCallback, Param: "realmId"},
		}
	}})
	h.auth.SetCallbackParams(map[string]string{"realmId": "4620816365"})
	h.auth.SetDiscovery([]any{})
	lt := h.linkToken(map[string]any{"tenant_id": "tenant-d", "integration": "acme"})
	r := h.connectOAuth(lt.LinkToken, "dan")
	if p := postedBy(t, r.body); r.status != http.StatusBadGateway || p.Message["error_type"] != "post_install_error" {
		t.Fatalf("discovery without the field: %d %v", r.status, p.Message)
	}
	if n := len(h.accountsOf("tenant-d")); n != 0 {
		t.Fatalf("%d accounts stored after a failed discovery", n)
	}
	const cloud = "1324a887-45db-1bf4-1e99-ef0ff456d421"
	h.auth.SetDiscovery([]any{map[string]any{"id": cloud, "name": "acme"}})
	r = h.connectOAuth(lt.LinkToken, "dan")
	if r.status != http.StatusOK {
		t.Fatalf("discovery: %d\n%s", r.status, r.body)
	}
	accts := h.accountsOf("tenant-d")
	if len(accts) != 1 || accts[0].Context["cloud_id"] != cloud || accts[0].Context["realm"] != "4620816365" {
		t.Fatalf("accounts = %+v", accts)
	}
}
