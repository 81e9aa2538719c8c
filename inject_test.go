package linkgate

import (
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/linkgate/linkgate/account"
)

func TestCutQueryParam(t *testing.T) {
	tests := []struct {
		raw, rest, value string
		n                int
		joined           bool
	}{
		{"a=1&integrated_account_id=x%2Fy&b=2", "a=1&b=2", "x%2Fy", 1, false},
		{"integrated_account_id=x", "", "x", 1, false},
		{"z=9&a=1", "z=9&a=1", "", 0, false},
		{"z=%41&a=1", "z=%41&a=1", "", 0, false},
		{"not_integrated_account_id=x&b=2", "not_integrated_account_id=x&b=2", "", 0, false},
		{"q=integrated_account_id", "q=integrated_account_id", "", 0, false},
		{"b=2&integrated_account_id=1&integrated_account_id=2", "b=2", "2", 2, false},
		// Names are compared decoded, as the upstream reads them.
		{"integrated%5Faccount%5Fid=x&b=2", "b=2", "x", 1, false},
		{"%69ntegrated_account_id=x", "", "x", 1, false},
		{"integrated_account_id%00=x", "integrated_account_id%00=x", "", 0, false},
		// A ';' inside a parameter is a separator to some servers.
		{"a=1;integrated_account_id=x&b=2", "b=2", "", 1, true},
		{"a=1;b=2&c=3", "a=1;b=2&c=3", "", 0, false},
	}
	for _, tt := range tests {
		rest, v, n, joined := cutQueryParam(tt.raw, "integrated_account_id")
		if rest != tt.rest || v != tt.value || n != tt.n || joined != tt.joined {
			t.Errorf("cutQueryParam(%q) = %q %q %d %v, want %q %q %d %v", tt.raw, rest, v, n, joined, tt.rest, tt.value, tt.n, tt.joined)
		}
	}
}

// TestCutQueryParamAgreesWithSplitAndJoin checks the allocation-free
// paths of cutQueryParam against the plain definition: split at '&', drop
// the named pairs, join the rest (leading empty pairs leave no '&').
func TestCutQueryParamAgreesWithSplitAndJoin(t *testing.T) {
	reference := func(raw, name string) (string, string, int, bool) {
		var kept []string
		var value string
		var n int
		var joined bool
		for _, pair := range strings.Split(raw, "&") {
			if named, j, v := paramCut(pair, name); named {
				n++
				if j {
					joined = true
				} else {
					value = v
				}
				continue
			}
			if len(kept) == 0 && pair == "" {
				continue
			}
			kept = append(kept, pair)
		}
		if n == 0 {
			return raw, "", 0, false
		}
		return strings.Join(kept, "&"), value, n, joined
	}
	parts := []string{"id=1", "id=2", "a=1", "", "i%64=3", "b", "x;id=4", "c=%zz", "id", "=", "id=5=6", "i+d=7", "%69%64"}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		var pairs []string
		for range rng.IntN(6) {
			pairs = append(pairs, parts[rng.IntN(len(parts))])
		}
		raw := strings.Join(pairs, "&")
		r1, v1, n1, j1 := cutQueryParam(raw, "id")
		r2, v2, n2, j2 := reference(raw, "id")
		if r1 != r2 || v1 != v2 || n1 != n2 || j1 != j2 {
			t.Fatalf("cutQueryParam(%q) = %q %q %d %v, want %q %q %d %v", raw, r1, v1, n1, j1, r2, v2, n2, j2)
		}
		// cutQueryParam stops early when mayNameParam says there is
		// nothing to find: it must never say so of a query that names it.
		if n1 > 0 && !mayNameParam(raw, "id") {
			t.Fatalf("mayNameParam(%q) is false, but the query names id %d times", raw, n1)
		}
	}
}

// TestCutQueryParamAllocatesNothingUsually: the proxy path calls it on
// every request (the account id, an OAuth account's access_token).
func TestCutQueryParamAllocatesNothingUsually(t *testing.T) {
	for _, raw := range []string{"limit=10&integrated_account_id=x", "integrated_account_id=x&limit=10", "limit=10&after=5", ""} {
		if n := testing.AllocsPerRun(100, func() { cutQueryParam(raw, "integrated_account_id") }); n != 0 {
			t.Errorf("cutQueryParam(%q): %v allocations", raw, n)
		}
	}
}

func TestTakeAccountID(t *testing.T) {
	tests := []struct {
		name, query string
		header      []string
		want        string // the id, or "400" for a refusal
		wantQuery   string
	}{
		{"query", "a=1&integrated_account_id=acc-1", nil, "acc-1", "a=1"},
		{"header", "a=1", []string{"acc-1"}, "acc-1", "a=1"},
		{"both agree", "integrated_account_id=acc-1&a=1", []string{"acc-1"}, "acc-1", "a=1"},
		{"escaped value", "integrated_account_id=acc%2D1", nil, "acc-1", ""},
		{"encoded name", "integrated%5Faccount_id=acc-1", nil, "acc-1", ""},
		{"both disagree", "integrated_account_id=acc-2", []string{"acc-1"}, "400", ""},
		{"encoded name disagrees with the header", "integrated%5faccount%5fid=acc-2", []string{"acc-1"}, "400", ""},
		{"query repeated", "integrated_account_id=acc-1&integrated_account_id=acc-1", nil, "400", ""},
		{"query repeated, once encoded", "integrated_account_id=acc-1&integrated%5Faccount_id=acc-2", nil, "400", ""},
		{"header repeated", "", []string{"acc-1", "acc-1"}, "400", ""},
		{"header repeated with the query", "integrated_account_id=acc-1", []string{"acc-1", "acc-2"}, "400", ""},
		{"empty query value", "integrated_account_id=", nil, "400", ""},
		{"empty query value beside the header", "integrated_account_id=", []string{"acc-1"}, "400", ""},
		{"empty header", "", []string{""}, "400", ""},
		{"joined by a semicolon", "a=1;integrated_account_id=acc-1", nil, "400", ""},
		{"bad escape", "integrated_account_id=acc%zz", nil, "400", ""},
		{"none", "a=1", nil, "400", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/x?"+tt.query, nil)
			for _, v := range tt.header {
				r.Header.Add(accountIDHeader, v)
			}
			id, err := takeAccountID(r)
			if tt.want == "400" {
				if err == nil {
					t.Fatalf("id %q, want a 400", id)
				}
				return
			}
			if err != nil || id != tt.want {
				t.Fatalf("id %q, err %v; want %q", id, err, tt.want)
			}
			if r.URL.RawQuery != tt.wantQuery || r.Header.Get(accountIDHeader) != "" {
				t.Errorf("left query %q and header %q", r.URL.RawQuery, r.Header.Get(accountIDHeader))
			}
		})
	}
}

func TestTargetDirect(t *testing.T) {
	tests := []struct {
		base, path, want string
	}{
		{"https://api.example.com", "/contacts", "https://api.example.com/contacts"},
		{"https://api.example.com/v1/", "/contacts", "https://api.example.com/v1/contacts"},
		// A base path with an escaped slash keeps it whether or not the
		// request's path has escapes of its own.
		{"https://api.example.com/b%2Fx", "/contacts", "https://api.example.com/b%2Fx/contacts"},
		{"https://api.example.com/b%2Fx", "/a%2Fb/c", "https://api.example.com/b%2Fx/a%2Fb/c"},
		{"https://api.example.com/v1", "/a%2Fb/c", "https://api.example.com/v1/a%2Fb/c"},
		{"https://api.example.com/v1", "/a%20b", "https://api.example.com/v1/a%20b"},
		// Leading slashes never make an authority.
		{"https://api.example.com", "//evil.example/x", "https://api.example.com/evil.example/x"},
		{"https://api.example.com/v1", "///evil.example", "https://api.example.com/v1/evil.example"},
		{"http://127.0.0.1:9090", "/", "http://127.0.0.1:9090/"},
	}
	for _, tt := range tests {
		tg, err := newTarget(tt.base)
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.ParseRequestURI(tt.path)
		if err != nil {
			t.Fatal(err)
		}
		tg.direct(u)
		if got := u.String(); got != tt.want {
			t.Errorf("%s + %s = %s, want %s", tt.base, tt.path, got, tt.want)
		}
	}
}

func TestNewTargetRefusesWhatItCannotHonour(t *testing.T) {
	for _, base := range []string{"ftp://x.example", "https://user:pw@x.example", "https://x.example/?a=1", "https://x.example/#f", "/relative"} {
		if _, err := newTarget(base); err == nil {
			t.Errorf("newTarget(%q): no error", base)
		}
	}
	tg, err := newTarget("https://api.example.com")
	if err != nil || tg.dial != "api.example.com:443" || tg.host != "api.example.com" || tg.scheme != "https" {
		t.Errorf("target %+v, %v", tg, err)
	}
}

func TestRefusedMethod(t *testing.T) {
	for m, want := range map[string]bool{"TRACE": true, "trace": true, "Track": true, "CONNECT": true, "connect": true,
		"GET": false, "POST": false, "OPTIONS": false, "PATCH": false, "TRACES": false} {
		if refusedMethod(m) != want {
			t.Errorf("refusedMethod(%q) = %v", m, !want)
		}
	}
}

func TestLoopbackClient(t *testing.T) {
	tests := []struct {
		remote string
		want   bool
	}{
		{"127.0.0.1:5000", true},
		{"[::1]:5000", true},
		{"127.8.9.10:1", true},
		{"[::ffff:127.0.0.1]:5000", true},
		{"@", true},
		{"10.0.0.5:5000", false},
		{"[2001:db8::1]:5000", false},
		{"garbage", false},
	}
	for _, tt := range tests {
		r := &http.Request{RemoteAddr: tt.remote}
		r = r.WithContext(t.Context())
		if got := loopbackClient(r); got != tt.want {
			t.Errorf("loopbackClient(%s) = %v", tt.remote, got)
		}
	}
	// A proxy on this machine that Caddy does not trust: the addresses it
	// forwards count too.
	headers := []struct {
		name, value string
		want        bool
	}{
		{"X-Forwarded-For", "127.0.0.1", true},
		{"X-Forwarded-For", "127.0.0.1, ::1", true},
		{"X-Forwarded-For", "203.0.113.7", false},
		{"X-Forwarded-For", "127.0.0.1, 203.0.113.7", false},
		{"X-Real-Ip", "203.0.113.7", false},
		{"Forwarded", "for=127.0.0.1;proto=http", true},
		{"Forwarded", `for="[::1]:4711"`, true},
		{"Forwarded", "proto=https", true},
		{"Forwarded", "for=203.0.113.7", false},
		{"Forwarded", `for=127.0.0.1, for="[2001:db8::7]"`, false},
		{"Forwarded", "for=unknown", false},
	}
	for _, tt := range headers {
		r := &http.Request{RemoteAddr: "127.0.0.1:5000", Header: http.Header{tt.name: {tt.value}}}
		r = r.WithContext(t.Context())
		if got := loopbackClient(r); got != tt.want {
			t.Errorf("loopbackClient with %s: %s = %v", tt.name, tt.value, got)
		}
	}
}

func TestUnfitCredentialHeadersRefused(t *testing.T) {
	for _, h := range []string{"Connection", "connection", "Upgrade", "Host", "Transfer-Encoding", "Te", "X-Forwarded-For", "Proxy-Authorization"} {
		in := &account.Integration{Name: "x", Auth: account.MethodAPIKey, BaseURL: "https://x.example", APIKeyHeader: h}
		if _, err := newUpstream(in); err == nil {
			t.Errorf("api_key_header %s: accepted", h)
		}
	}
	for _, h := range []string{"X-Api-Key", "Authorization", "Cookie", "Api-Key"} {
		in := &account.Integration{Name: "x", Auth: account.MethodAPIKey, BaseURL: "https://x.example", APIKeyHeader: h}
		if _, err := newUpstream(in); err != nil {
			t.Errorf("api_key_header %s: %v", h, err)
		}
	}
}

// TestHeldAnswerLeavesNoHeader: the headers of an answer held back (a 401
// kept for a retry, an answer that bypassed the transport) never reach the
// client, even when the proxy changed the response's own headers in place;
// the answer that is sent keeps every change the proxy made.
func TestHeldAnswerLeavesNoHeader(t *testing.T) {
	before := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		rec.Header().Set("Server", "Caddy")
		rec.Header()["X-Pre"] = []string{"orig", "two"}
		return rec
	}
	answer := func(sw *statusWriter, code int, extra string) {
		h := sw.Header()
		h.Set("Www-Authenticate", "Bearer "+extra)
		h.Del("Server")
		h["X-Pre"][0] = "changed-" + extra
		h.Add("X-Pre", "added-"+extra)
		sw.WriteHeader(code)
		_, _ = sw.Write([]byte("body-" + extra))
	}
	attempt := func(rec *httptest.ResponseRecorder, sent, hold401 bool) *statusWriter {
		c := &call{}
		c.sent.Store(sent)
		return &statusWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: rec}, call: c, hold401: hold401}
	}
	pristine := http.Header{"Server": {"Caddy"}, "X-Pre": {"orig", "two"}}

	for _, tc := range []struct {
		name          string
		sent, hold401 bool
		code          int
	}{
		{"401 held for a retry", true, true, http.StatusUnauthorized},
		{"answer that bypassed the transport", false, false, http.StatusBadGateway},
	} {
		rec := before()
		sw := attempt(rec, tc.sent, tc.hold401)
		answer(sw, tc.code, "held")
		if !sw.held {
			t.Fatalf("%s: not held", tc.name)
		}
		if !reflect.DeepEqual(rec.Header(), pristine) || rec.Body.Len() != 0 {
			t.Errorf("%s: the client's response holds %v %q, want %v and no body", tc.name, rec.Header(), rec.Body, pristine)
		}
		// The retry's answer is what the client gets.
		answer(attempt(rec, true, false), http.StatusOK, "sent")
		want := http.Header{"Www-Authenticate": {"Bearer sent"}, "X-Pre": {"changed-sent", "two", "added-sent"}}
		if !reflect.DeepEqual(rec.Header(), want) || rec.Code != http.StatusOK || rec.Body.String() != "body-sent" {
			t.Errorf("%s: retry answered %d %v %q, want 200 %v", tc.name, rec.Code, rec.Header(), rec.Body, want)
		}
	}

	// An answer that may have been held but is not keeps all its changes.
	rec := before()
	answer(attempt(rec, true, true), http.StatusOK, "ok")
	want := http.Header{"Www-Authenticate": {"Bearer ok"}, "X-Pre": {"changed-ok", "two", "added-ok"}}
	if !reflect.DeepEqual(rec.Header(), want) || rec.Body.String() != "body-ok" {
		t.Errorf("an answer let through: %v %q, want %v", rec.Header(), rec.Body, want)
	}
}

// TestSaveRestoresEveryHeader: whatever the client's response held before
// an answer that is then held back, restore puts back exactly that: the
// headers Caddy's server sets (found by name), others (found by ranging
// over the map), none.
func TestSaveRestoresEveryHeader(t *testing.T) {
	for _, before := range []http.Header{
		{},
		{"Server": {"Caddy"}},
		{"Alt-Svc": {`h3=":443"`}},
		{"Server": {"Caddy"}, "Alt-Svc": {`h3=":443"`}},
		{"Server": {"Caddy"}, "X-Pre": {"orig", "two"}},
		{"X-Pre": {"orig"}},
		{"Server": {"Caddy"}, "Alt-Svc": {`h3=":443"`}, "X-Pre": {"orig"}},
		{"A": {"1"}, "B": {"2"}, "C": {"3"}, "D": {"4"}, "E": {"5", "6"}, "Server": {"Caddy"}},
	} {
		rec := httptest.NewRecorder()
		for k, v := range before {
			rec.Header()[k] = slices.Clone(v)
		}
		c := &call{}
		c.sent.Store(true)
		sw := &statusWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: rec}, call: c, hold401: true}
		h := sw.Header()
		for k, v := range h {
			v[0] = "changed"
			h[k] = append(v, "added")
		}
		delete(h, "Server")
		h["Via"] = []string{"1.1 Caddy"}
		h.Set("Www-Authenticate", "Bearer")
		sw.WriteHeader(http.StatusUnauthorized)
		if !sw.held {
			t.Fatalf("%v: the 401 was not held", before)
		}
		if !reflect.DeepEqual(rec.Header(), before) {
			t.Errorf("held answer over %v left %v", before, rec.Header())
		}
	}
}

// TestAccountPlaceholders: {integrated_account.*} name the account of the
// request's call, also when a second inject_credentials on the same request
// chose another, and on a request Caddy's server did not hand over.
func TestAccountPlaceholders(t *testing.T) {
	h, id := benchInjector(t, account.MethodAPIKey)
	const all = "{integrated_account.id} {integrated_account.tenant_id} {integrated_account.integration} {integrated_account.upstream} {integrated_account.scheme}"
	want := id + " t crm api.example.com:443 https"
	var got []string
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		got = append(got, repl.ReplaceAll(all, "?"))
		return nil
	})
	r := benchRequest(id)
	if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
		t.Fatal(err)
	}
	// A second pass over the same request, for another call: the
	// placeholders follow it.
	other := &call{id: "other", tenant: "t2", up: h.app.upstreams["crm"], target: &target{dialValue: "elsewhere:80", schemeValue: "http"}}
	setCall(r.Context(), other)
	_ = next.ServeHTTP(nil, r)
	// A request without Caddy's variables still gets them.
	bare := httptest.NewRequest("GET", "/x", nil)
	caddyhttp.NewTestReplacer(bare)
	setCall(bare.Context(), other)
	_ = next.ServeHTTP(nil, bare)
	if len(got) != 3 || got[0] != want || got[1] != "other t2 crm elsewhere:80 http" || got[2] != got[1] {
		t.Fatalf("placeholders %q, want %q then the other call's twice", got, want)
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if v, ok := repl.Get("integrated_account.nothing"); ok {
		t.Errorf("an unknown placeholder answered %v", v)
	}
}
