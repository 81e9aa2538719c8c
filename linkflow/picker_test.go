package linkflow_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestPicker: a link token with a tenant alone shows the end user the
// integrations they can connect (narrowed by the SDK's integrations
// option), refuses one that cannot be connected here, and keeps the one
// picked through the OAuth sign-in, so the new account is of it.
func TestPicker(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	lt := h.linkToken(map[string]any{"tenant_id": "tenant-pick"})
	page := func(q url.Values) response {
		t.Helper()
		q.Set("link_token", lt.LinkToken)
		return h.get(h.public + "/connect-account?" + q.Encode())
	}

	r := page(url.Values{})
	if r.status != http.StatusOK || !strings.Contains(r.body, `id="picker"`) {
		t.Fatalf("picker page: %d %s", r.status, r.body)
	}
	for _, name := range []string{"acme", "keyco", "basicco"} {
		if !strings.Contains(r.body, `id="pick-`+name+`"`) {
			t.Errorf("the picker does not offer %s", name)
		}
	}
	if strings.Contains(r.body, `pick-machine`) {
		t.Error("the picker offers a client-credentials integration, which no end user can connect")
	}
	r = page(url.Values{"integrations": {"keyco,machine,nope"}})
	if !strings.Contains(r.body, `id="pick-keyco"`) || strings.Contains(r.body, `pick-acme`) || strings.Contains(r.body, "pick-machine") {
		t.Errorf("integrations=keyco,machine,nope lists: %s", r.body)
	}
	r = page(url.Values{"integrations": {"machine"}})
	if !strings.Contains(r.body, `id="picker-empty"`) {
		t.Errorf("a list with nothing connectable: %s", r.body)
	}
	for _, bad := range []string{"machine", "nope"} {
		r = page(url.Values{"integration": {bad}})
		if r.status != http.StatusBadRequest || !strings.Contains(r.body, "invalid_integration") {
			t.Errorf("integration=%s: %d %s", bad, r.status, r.body)
		}
		form := url.Values{"link_token": {lt.LinkToken}, "integration": {bad}}
		if r := h.postForm(h.public+"/connect-account", form); r.status != http.StatusBadRequest {
			t.Errorf("POST with integration=%s: %d %s", bad, r.status, r.body)
		}
	}
	// Preselected (the SDK's integration option), with a way back.
	r = page(url.Values{"integration": {"acme"}})
	if r.status != http.StatusOK || !strings.Contains(r.body, `name="integration" value="acme"`) || !strings.Contains(r.body, `id="back"`) {
		t.Fatalf("integration=acme: %d %s", r.status, r.body)
	}
	if r = page(url.Values{"integration": {"acme"}, "no_back": {"true"}}); strings.Contains(r.body, `id="back"`) {
		t.Error("no_back=true still shows Back")
	}

	// Picking acme and signing in creates an acme account for the tenant.
	a := h.newAgent()
	r = a.postForm(h.public+"/connect-account", url.Values{"link_token": {lt.LinkToken}, "integration": {"acme"}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("connect: %d %s", r.status, r.body)
	}
	authorize, _ := url.Parse(r.header.Get("Location"))
	cb := a.consent(authorize, "picker-user", "allow")
	r = a.get(cb.String())
	if r.status != http.StatusOK || !strings.Contains(r.body, "Connection successful") {
		t.Fatalf("callback: %d %s", r.status, r.body)
	}
	accts := h.accountsOf("tenant-pick")
	if len(accts) != 1 || accts[0].Integration != "acme" {
		t.Fatalf("accounts of the tenant: %+v", accts)
	}
}

// TestOpenerNotAllowed: a connect page opened from an origin the result
// cannot be posted to is marked for the end user, and the operator is told
// once, at warn level, which option to set; an allowed opener is not.
func TestOpenerNotAllowed(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	lt := h.linkToken(map[string]any{"tenant_id": "t", "integration": "acme"})
	open := func(referer string) response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, h.local(h.public+"/connect-account?link_token="+lt.LinkToken), nil)
		req.Header.Set("Referer", referer)
		return h.do(req)
	}
	warnings := func() int {
		n := 0
		for _, e := range h.logs.All() {
			if strings.Contains(e.Message, "not allowed") && e.ContextMap()["option"] == "allowed_origins https://other.example" {
				n++
			}
		}
		return n
	}
	for range 3 {
		r := open("https://other.example/settings/integrations")
		if r.status != http.StatusOK || !strings.Contains(r.body, `data-unreachable="https://other.example"`) {
			t.Fatalf("page opened from another origin: %d %s", r.status, r.body)
		}
	}
	if n := warnings(); n != 1 {
		t.Errorf("%d warnings naming allowed_origins https://other.example, want one", n)
	}
	if r := open(appOriginForHandlers + "/page"); strings.Contains(r.body, "data-unreachable") {
		t.Errorf("an allowed opener is marked unreachable: %s", r.body)
	}
}
