package linkgate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/refresh"
	"github.com/linkgate/linkgate/tokenstore"
)

func init() {
	caddy.RegisterModule(Inject{})
}

// Inject is the inject_credentials handler: it authenticates the product's
// backend by its API token, finds the integrated account named by the
// request, gets the account's credentials and watches the upstream's answer
// for 401s. The request goes on to reverse_proxy with the linkgate
// transport, which sends it to the integration's base URL with the
// credentials:
//
//	inject_credentials
//	reverse_proxy {integrated_account.upstream} {
//		transport linkgate
//	}
//
// The credentials are never put on the request itself: a route whose
// reverse_proxy lacks the linkgate transport sends none, and its caller gets
// 502 with the fix in the log.
//
// Placeholders set: {integrated_account.id}, {integrated_account.tenant_id},
// {integrated_account.integration}, {integrated_account.upstream} (host:port
// of the integration's base URL, the address reverse_proxy must dial) and
// {integrated_account.scheme}.
type Inject struct {
	app    *App
	logger *zap.Logger
	// bypassed logs a misconfigured route once per loaded config; a
	// pointer, because the module value is copied by CaddyModule.
	bypassed *sync.Once
}

// CaddyModule returns the Caddy module information.
func (Inject) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.inject_credentials",
		New: func() caddy.Module { return new(Inject) },
	}
}

// Provision finds the integrated_accounts app.
func (h *Inject) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.bypassed = new(sync.Once)
	app, err := loadApp(ctx)
	if err != nil {
		return err
	}
	h.app = app
	return nil
}

// loadApp returns the integrated_accounts app of the config being loaded.
func loadApp(ctx caddy.Context) (*App, error) {
	v, err := ctx.AppIfConfigured("integrated_accounts")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil, fmt.Errorf("the integrated_accounts app is not configured: add an integrated_accounts global option block: %w", err)
	}
	if err != nil {
		// The app is there but refused its configuration: its own error
		// says why, and a prefix claiming it is missing would mislead.
		return nil, err
	}
	return v.(*App), nil
}

// accountIDHeader names the account when the query does not (canonical form).
const accountIDHeader = "X-Integrated-Account-Id"

// accountIDParam names the account in the query.
const accountIDParam = "integrated_account_id"

// callVar is the request variable (in the request context's vars, which
// reverse_proxy's copies of the request share) that holds a proxied
// request's *call.
const callVar = "linkgate.call"

// call is one proxied request as inject_credentials and the linkgate
// transport share it, through the request's context: inject_credentials
// decides where it goes and with which credentials, the transport reports
// whether it sent them.
type call struct {
	up     *upstream
	target *target
	// id and tenant are the account's, for the placeholders.
	id, tenant string
	// headers are the integration's static headers, resolved for the
	// account.
	headers [][2]string
	// creds are the credentials of the current attempt; inject_credentials
	// sets them before handing the request on.
	creds account.Credentials
	// sent: the transport sent this attempt with creds. An answer written
	// before it did is not the upstream's answer to them: it came by
	// another route, and a 401 in it is no verdict on the credentials.
	sent atomic.Bool
}

// proxied is what inject_credentials allocates for one proxied request.
type proxied struct {
	call    call
	sw      statusWriter
	wrapper caddyhttp.ResponseWriterWrapper
}

// String keeps the credentials out of a placeholder that names the
// variable ({http.vars.linkgate.call}).
func (c *call) String() string { return "integrated account call" }

// GoString does the same for %#v.
func (c *call) GoString() string { return c.String() }

// setCall attaches c to a request and makes the {integrated_account.*}
// placeholders name its account. The placeholders are answered from the
// call the request holds when they are read (one provider, added the first
// time, which a second inject_credentials on the same request only points
// elsewhere), instead of five values written into the replacer's map on
// every request, which also made Caddy's own values there outgrow it.
func setCall(ctx context.Context, c *call) {
	repl := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	vars, ok := ctx.Value(caddyhttp.VarsCtxKey).(map[string]any)
	if !ok {
		// Not a request Caddy's server handed over: no call for the
		// transport to find (it refuses to send), but the placeholders.
		repl.Set("integrated_account.id", c.id)
		repl.Set("integrated_account.tenant_id", c.tenant)
		repl.Set("integrated_account.integration", c.up.name)
		repl.Set("integrated_account.upstream", c.target.dialValue)
		repl.Set("integrated_account.scheme", c.target.schemeValue)
		return
	}
	prev, _ := vars[callVar].(*call)
	vars[callVar] = c
	if prev == nil {
		repl.Map(func(key string) (any, bool) { return accountPlaceholder(vars, key) })
	}
}

// accountPlaceholder answers an {integrated_account.*} placeholder from the
// call in a request's variables.
func accountPlaceholder(vars map[string]any, key string) (any, bool) {
	name, ok := strings.CutPrefix(key, "integrated_account.")
	if !ok {
		return nil, false
	}
	c, _ := vars[callVar].(*call)
	if c == nil {
		return nil, false
	}
	switch name {
	case "id":
		return c.id, true
	case "tenant_id":
		return c.tenant, true
	case "integration":
		return c.up.name, true
	case "upstream":
		return c.target.dialValue, true
	case "scheme":
		return c.target.schemeValue, true
	}
	return nil, false
}

// callOf returns the call inject_credentials attached to a request.
func callOf(r *http.Request) *call {
	c, _ := caddyhttp.GetVar(r.Context(), callVar).(*call)
	return c
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Inject) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if refusedMethod(r.Method) {
		w.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		wire.WriteError(w, http.StatusMethodNotAllowed, "TRACE, TRACK and CONNECT are not forwarded to upstream APIs")
		return nil
	}
	a := h.app
	// An API token (any, or one tenant's) or an integrated account token
	// (one account's, checked against the account once it is known).
	rt, _ := a.runtime()
	grant, err := a.proxyGrant(r, rt, bearerToken(r))
	if err != nil {
		a.metrics.count(outcomeUnauthorized)
		wire.WriteErr(w, err)
		return nil
	}
	id, err := takeAccountID(r)
	if err != nil {
		wire.WriteErr(w, err)
		return nil
	}
	rt, ok := a.runtimeOr503(w, h.logger)
	if !ok {
		return nil
	}
	ctx := r.Context()
	acct, err := rt.store.GetAccount(ctx, id)
	if err == nil && !grant.allows(acct.ID, acct.TenantID) {
		// Another tenant's or another account's: as if it did not exist.
		a.metrics.count(outcomeUnauthorized)
		err = tokenstore.ErrNotFound
	}
	if err != nil {
		logUndecryptable(h.logger, err, id)
		wire.WriteErr(w, storeError(err, id))
		return nil
	}
	up, ok := a.upstreams[acct.Integration]
	if !ok {
		a.metrics.count(outcomeNoIntegration)
		wire.WriteErr(w, &wire.Error{Status: http.StatusBadGateway, AccountID: id,
			Message: fmt.Sprintf("integration %q is not configured in this gateway", acct.Integration)})
		return nil
	}
	// Where this account's requests go, checked against allowed_hosts
	// before anything is sent, the token endpoint included.
	tg, headers, err := up.forAccount(acct)
	if err != nil {
		a.metrics.count(outcomeCredentialsError)
		wire.WriteErr(w, &wire.Error{Status: http.StatusBadRequest, AccountID: id,
			Message: fmt.Sprintf("integrated account %s cannot be proxied: %s: set the field in the account's context or reconnect the account", id, err)})
		return nil
	}
	creds, err := rt.refresher.Credentials(ctx, acct)
	if err != nil {
		a.metrics.count(outcomeCredentialsError)
		logUndecryptable(h.logger, err, id)
		wire.WriteErr(w, credentialsError(err, id))
		return nil
	}

	// The caller's credentials stay here, whatever route follows. (A
	// delete hashes its key even when the map lacks it; a lookup of a
	// small map does not, and Proxy-Authorization is seldom sent.)
	delete(r.Header, "Authorization")
	if _, ok := r.Header["Proxy-Authorization"]; ok {
		delete(r.Header, "Proxy-Authorization")
	}
	// Where this request goes: the one place that decides it (the
	// integration's target, or the account's own when base_url uses its
	// connection fields). The call and the writers that watch its answer
	// come in one allocation.
	p := &proxied{call: call{up: up, target: tg, headers: headers, id: acct.ID, tenant: acct.TenantID}}
	c := &p.call
	setCall(ctx, c)

	// A 401 from an OAuth upstream may be a token revoked early: refresh and
	// retry once, if the request can be sent again.
	var body []byte
	canRetry := (acct.Method == account.MethodOAuth2 && acct.Credentials.RefreshToken != "") ||
		acct.Method == account.MethodClientCredentials
	if canRetry {
		body, canRetry = replayableBody(r, a.RetryBodyLimit)
	}

	for attempt := 0; ; attempt++ {
		c.creds = creds
		c.sent.Store(false)
		if body != nil {
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		p.wrapper = caddyhttp.ResponseWriterWrapper{ResponseWriter: w}
		p.sw = statusWriter{ResponseWriterWrapper: &p.wrapper, call: c, hold401: canRetry && attempt == 0}
		sw := &p.sw
		err := next.ServeHTTP(sw, r)
		if sw.status == 0 {
			// No answer was written: the headers of one that may have
			// been held back do not stay for whoever answers instead.
			sw.restore()
		}
		switch {
		case sw.bypassed:
			a.metrics.count(outcomeNoTransport)
			h.bypassed.Do(func() {
				h.logger.Error("a proxied request answered without the linkgate transport, so it went out without the account's credentials and its answer was replaced with 502: "+
					"proxy with reverse_proxy {integrated_account.upstream} { transport linkgate }",
					zap.String("integrated_account_id", id), zap.String("integration", acct.Integration))
			})
			wire.WriteErr(w, &wire.Error{Status: http.StatusBadGateway, AccountID: id,
				Message: "this gateway's proxy route is misconfigured (its reverse_proxy lacks transport linkgate); no credentials were sent: see the gateway's log"})
			return err
		case sw.status == http.StatusUnauthorized:
			var newCreds account.Credentials
			var retry bool
			var uerr error
			if attempt == 0 {
				newCreds, retry, uerr = rt.refresher.Unauthorized(context.WithoutCancel(ctx), acct, creds)
			} else {
				// A 401 to fresh credentials: the grant itself is refused.
				uerr = rt.refresher.UnauthorizedAfterRetry(context.WithoutCancel(ctx), acct, creds)
			}
			if uerr != nil && !errors.Is(uerr, refresh.ErrNeedsReauth) {
				h.logger.Warn("handling an upstream 401", zap.String("integrated_account_id", id), zap.Error(uerr))
			}
			if sw.held {
				if retry && err == nil {
					creds = newCreds
					canRetry = false
					if up.perAccount {
						// The refresh may have moved the account (a new
						// instance_url in its answer): the retry goes where
						// the account is now, checked as before. If the
						// account cannot be read, it goes where the first
						// try went.
						if fresh, ferr := rt.store.GetAccount(ctx, id); ferr == nil {
							if ntg, nh, terr := up.forAccount(fresh); terr == nil {
								// The placeholders follow c.target.
								c.target, c.headers = ntg, nh
							}
						}
					}
					a.metrics.count(outcomeRetried)
					continue
				}
				// The upstream's 401 was held back for a retry that cannot
				// happen: answer it ourselves.
				a.metrics.count(outcomeUpstream401)
				wire.WriteErr(w, &wire.Error{Status: http.StatusUnauthorized, Remote: true, AccountID: id,
					Message: "the upstream API refused the integrated account's credentials"})
				return err
			}
			a.metrics.count(outcomeUpstream401)
		case sw.status >= 200 && sw.status < 300:
			a.metrics.count(outcomeOk)
			if acct.Status == account.StatusNeedsReauth {
				rt.refresher.Succeeded(context.WithoutCancel(ctx), acct, creds)
			}
		default:
			a.metrics.count(outcomeOk)
		}
		return err
	}
}

// refusedMethod reports the methods never forwarded with credentials: TRACE
// (and IIS's TRACK) would echo them back, CONNECT would open a tunnel.
// Methods are case-sensitive, but some servers are not.
func refusedMethod(m string) bool {
	switch len(m) {
	case 5:
		return strings.EqualFold(m, http.MethodTrace) || strings.EqualFold(m, "TRACK")
	case 7:
		return strings.EqualFold(m, http.MethodConnect)
	}
	return false
}

// takeAccountID reads the account id from the integrated_account_id query
// parameter (removing it, so the upstream does not see it) and from the
// X-Integrated-Account-Id header. Either may name the account; when both do
// they must agree, and neither may repeat, so that a backend that pins the
// account in the header cannot be overridden through a query string it
// passes on. The rest of the query is forwarded byte for byte, in its
// order: some APIs sign their query strings.
func takeAccountID(r *http.Request) (string, error) {
	// Header keys here are canonical constants: index the map directly and
	// skip canonicalizing them on every request.
	var id string
	hv, inHeader := r.Header[accountIDHeader]
	if inHeader {
		if len(hv) != 1 {
			return "", wire.Errorf(http.StatusBadRequest, "the %s header is sent more than once: send it once", accountIDHeader)
		}
		id = hv[0]
		if id == "" {
			return "", wire.Errorf(http.StatusBadRequest, "the %s header is empty", accountIDHeader)
		}
		delete(r.Header, accountIDHeader)
	}
	q, v, n, joined := cutQueryParam(r.URL.RawQuery, accountIDParam)
	switch {
	case n > 1:
		return "", wire.Errorf(http.StatusBadRequest, "%s is given more than once in the query: give it once", accountIDParam)
	case joined:
		return "", wire.Errorf(http.StatusBadRequest, "%s shares a query parameter with ';': separate parameters with '&'", accountIDParam)
	case n == 1:
		u := v
		if strings.IndexByte(v, '%') >= 0 || strings.IndexByte(v, '+') >= 0 {
			var err error
			if u, err = url.QueryUnescape(v); err != nil {
				return "", wire.Errorf(http.StatusBadRequest, "%s is not properly percent-encoded", accountIDParam)
			}
		}
		if u == "" {
			return "", wire.Errorf(http.StatusBadRequest, "%s is empty", accountIDParam)
		}
		if inHeader && u != id {
			return "", wire.Errorf(http.StatusBadRequest, "the %s query parameter and the %s header name different accounts: name it once", accountIDParam, accountIDHeader)
		}
		id = u
		r.URL.RawQuery = q
	}
	if id == "" {
		return "", wire.Errorf(http.StatusBadRequest, "no integrated account: pass ?%s=<id> or the %s header", accountIDParam, accountIDHeader)
	}
	if len(id) > 256 {
		return "", wire.Errorf(http.StatusBadRequest, "%s is too long", accountIDParam)
	}
	return id, nil
}

// cutQueryParam removes from a raw query every parameter named name and
// returns the rest byte for byte, the raw (still escaped) value of the last
// one, and how many there were. Names are compared percent-decoded, as the
// upstream will read them (api%5Fkey is api_key), and inside parameters
// joined by ';', which some servers also take as a separator: such a
// parameter is removed whole and reported as joined.
//
// It runs on every proxied request, so the usual cases allocate nothing:
// no parameter named name, or the named ones all before or after the rest
// (the rest is then a part of raw).
func cutQueryParam(raw, name string) (rest, value string, n int, joined bool) {
	if !mayNameParam(raw, name) {
		return raw, "", 0, false
	}
	// The parameters kept, while they are one run of raw: raw[start:end].
	start, end := -1, -1
	lastKept, split := false, false
	for i := 0; i <= len(raw); {
		j := strings.IndexByte(raw[i:], '&')
		if j < 0 {
			j = len(raw)
		} else {
			j += i
		}
		named, isJoined, v := paramCut(raw[i:j], name)
		switch {
		case named:
			n++
			if isJoined {
				joined = true
			} else {
				value = v
			}
			lastKept = false
		default:
			if start < 0 {
				start = i
			} else if !lastKept {
				split = true
			}
			end, lastKept = j, true
		}
		i = j + 1
	}
	switch {
	case n == 0:
		return raw, "", 0, false
	case start < 0:
		return "", value, n, joined
	case !split:
		// Kept parameters that are empty and come first leave no '&'.
		return strings.TrimLeft(raw[start:end], "&"), value, n, joined
	}
	var b strings.Builder
	b.Grow(len(raw))
	for pair := range strings.SplitSeq(raw, "&") {
		if named, _, _ := paramCut(pair, name); named {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(pair)
	}
	return b.String(), value, n, joined
}

// mayNameParam reports whether a raw query may hold a parameter named
// name, as cutQueryParam finds them: without a '%' a parameter's name is
// as written, so one named name has name in the query as it is. It scans
// the query twice instead of cutting it into parameters (a few dozen
// instructions against a few hundred): cutQueryParam's first check, as
// the proxy path cuts on every request parameters it seldom finds.
func mayNameParam(raw, name string) bool {
	return strings.IndexByte(raw, '%') >= 0 || strings.Contains(raw, name)
}

// paramCut reports whether one '&'-separated pair of a raw query names
// name, either itself or in a part joined by ';', and its raw value when it
// names it itself.
func paramCut(pair, name string) (named, joined bool, value string) {
	k, v, _ := strings.Cut(pair, "=")
	if paramNamed(k, name) {
		return true, false, v
	}
	if strings.IndexByte(pair, ';') >= 0 && joinedNames(pair, name) {
		return true, true, ""
	}
	return false, false, ""
}

// paramNamed reports whether the raw parameter name k decodes to name.
func paramNamed(k, name string) bool {
	if k == name {
		return true
	}
	if strings.IndexByte(k, '%') < 0 {
		return false
	}
	u, err := url.QueryUnescape(k)
	return err == nil && u == name
}

// joinedNames reports whether a parameter that holds ';' names name in one
// of its ';'-separated parts.
func joinedNames(pair, name string) bool {
	for part := range strings.SplitSeq(pair, ";") {
		k, _, _ := strings.Cut(part, "=")
		if paramNamed(k, name) {
			return true
		}
	}
	return false
}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) string {
	v := r.Header["Authorization"]
	if len(v) == 0 {
		return ""
	}
	h := v[0]
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// replayableBody reads a request body of at most limit bytes so it can be
// sent twice. A larger body is put back unread and the request is not
// retried.
func replayableBody(r *http.Request, limit int64) ([]byte, bool) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, true
	}
	if r.ContentLength > limit {
		return nil, false
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil || int64(len(buf)) > limit {
		r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		return nil, false
	}
	_ = r.Body.Close()
	return buf, true
}

type readCloser struct {
	io.Reader
	io.Closer
}

// statusWriter records the upstream's status. With hold401 it holds back a
// 401 answer (headers and body), so the request can be retried with fresh
// credentials. An answer written before the linkgate transport sent the
// request did not come from the upstream with the account's credentials: it
// is held back too, and marked bypassed. Every other answer streams through
// untouched.
type statusWriter struct {
	*caddyhttp.ResponseWriterWrapper
	call     *call
	hold401  bool
	held     bool
	bypassed bool
	status   int
	// header collects the headers written after an answer was held back,
	// so that they never reach the client.
	header http.Header
	// While an answer may still be held back, its headers go straight
	// into the client's response (no copy of the map on every request),
	// and the response's headers as they were before are kept here, to
	// be put back if the answer is held back. The few headers set before
	// an answer fit the arrays inline.
	saved     bool
	fields    []savedField
	vals      []string
	fieldsBuf [4]savedField
	valsBuf   [4]string
}

// savedField is one header of the client's response as it was before the
// answer: its name and how many of the saved values are its.
type savedField struct {
	key string
	n   int
}

// usualResponseHeaders are what Caddy's server sets on every response
// before any handler runs: Server, and Alt-Svc when HTTP/3 is on.
var usualResponseHeaders = [...]string{"Server", "Alt-Svc"}

// save keeps the client response's headers h, once per attempt. The values
// are copied, not shared: the proxy may change a slice in place.
//
// It runs before every answer that may be held back. When h holds only
// the headers Caddy's server sets, they are found by name, which costs a
// fraction of ranging over the map (a range starts at a random slot, and
// drawing it alone costs more).
func (sw *statusWriter) save(h http.Header) {
	if sw.saved {
		return
	}
	sw.saved = true
	sw.fields, sw.vals = sw.fieldsBuf[:0], sw.valsBuf[:0]
	n := len(h)
	for _, k := range usualResponseHeaders {
		if n == len(sw.fields) {
			return
		}
		if v, ok := h[k]; ok {
			sw.keep(k, v)
		}
	}
	if n == len(sw.fields) {
		return
	}
	sw.fields, sw.vals = sw.fieldsBuf[:0], sw.valsBuf[:0]
	for k, v := range h {
		sw.keep(k, v)
	}
}

// keep adds one header to those save keeps.
func (sw *statusWriter) keep(k string, v []string) {
	sw.fields = append(sw.fields, savedField{key: k, n: len(v)})
	sw.vals = append(sw.vals, v...)
}

// restore puts back the client response's headers as save found them,
// dropping whatever an answer that is not sent wrote.
func (sw *statusWriter) restore() {
	if !sw.saved {
		return
	}
	sw.saved = false
	real := sw.ResponseWriter.Header()
	clear(real)
	vals := sw.vals
	for _, f := range sw.fields {
		real[f.key] = slices.Clone(vals[:f.n:f.n])
		vals = vals[f.n:]
	}
}

func (sw *statusWriter) WriteHeader(code int) {
	if sw.status != 0 {
		return
	}
	if !sw.call.sent.Load() {
		sw.status, sw.held, sw.bypassed = code, true, true
		sw.restore()
		return
	}
	if code >= 100 && code < 200 {
		sw.ResponseWriter.WriteHeader(code)
		return
	}
	sw.status = code
	if code == http.StatusUnauthorized && sw.hold401 {
		sw.held = true
		sw.restore()
		return
	}
	sw.saved = false
	sw.ResponseWriter.WriteHeader(code)
}

func (sw *statusWriter) Write(p []byte) (int, error) {
	if sw.status == 0 {
		sw.WriteHeader(http.StatusOK)
	}
	if sw.held {
		return len(p), nil
	}
	return sw.ResponseWriter.Write(p)
}

// ReadFrom keeps io.Copy from writing around the held 401.
func (sw *statusWriter) ReadFrom(src io.Reader) (int64, error) {
	if sw.status == 0 {
		sw.WriteHeader(http.StatusOK)
	}
	if sw.held {
		return io.Copy(io.Discard, src)
	}
	return sw.ResponseWriterWrapper.ReadFrom(src)
}

// FlushError flushes what was written, except a held 401: reverse_proxy
// flushes through http.ResponseController, which would otherwise reach past
// this writer and send the held answer's status.
func (sw *statusWriter) FlushError() error {
	if sw.status == 0 {
		sw.WriteHeader(http.StatusOK)
	}
	if sw.held {
		return nil
	}
	return http.NewResponseController(sw.ResponseWriter).Flush()
}

// Header keeps the headers of an answer that is held back from the
// client's response: before the answer's status is known they are written
// into the response after saving what it held, and put back if it is held.
func (sw *statusWriter) Header() http.Header {
	if sw.held {
		if sw.header == nil {
			sw.header = http.Header{}
		}
		return sw.header
	}
	h := sw.ResponseWriter.Header()
	if sw.status == 0 && (sw.hold401 || !sw.call.sent.Load()) {
		sw.save(h)
	}
	return h
}

// storeError turns a store error into the API's answer.
func storeError(err error, id string) error {
	switch {
	case errors.Is(err, tokenstore.ErrNotFound):
		return &wire.Error{Status: http.StatusNotFound, Message: fmt.Sprintf("integrated account %s not found", id), AccountID: id}
	case errors.Is(err, tokenstore.ErrConflict):
		return &wire.Error{Status: http.StatusConflict, Message: "the integrated account changed meanwhile: retry", AccountID: id}
	case errors.Is(err, tokenstore.ErrUndecryptable):
		return &wire.Error{Status: http.StatusInternalServerError, AccountID: id,
			Message: "the integrated account's credentials cannot be decrypted with the gateway's encryption keys: the gateway's log names the key id it needs"}
	case errors.Is(err, tokenstore.ErrInvalid):
		return &wire.Error{Status: http.StatusBadRequest, Message: "the request holds a value the store cannot keep: ids, filters and text must be UTF-8 without NUL characters"}
	default:
		return &wire.Error{Status: http.StatusServiceUnavailable, Message: errStoreUnavailable.Error()}
	}
}

// logUndecryptable logs a read that failed because no configured key opens
// the account's credentials, with the id of the key that sealed them: the
// fix is in the configuration, and the answer to the caller cannot say so.
func logUndecryptable(logger *zap.Logger, err error, id string) {
	var ke *tokenstore.KeyError
	if errors.As(err, &ke) {
		logger.Error("the account's credentials cannot be decrypted: configure the encryption key with this key id",
			zap.String("integrated_account_id", id), zap.String("key_id", ke.KeyID), zap.Error(err))
	}
}

// credentialsError turns a refresh error into the proxy's answer.
func credentialsError(err error, id string) error {
	var re *refresh.Error
	switch {
	case errors.Is(err, refresh.ErrNeedsReauth):
		return &wire.Error{Status: http.StatusUnauthorized, Message: "integrated account needs reauthorization", AccountID: id}
	case errors.As(err, &re):
		switch re.Class {
		case refresh.Revoked:
			return &wire.Error{Status: http.StatusUnauthorized, Message: "integrated account needs reauthorization", AccountID: id}
		case refresh.Misconfigured:
			return &wire.Error{Status: http.StatusBadGateway, Remote: true, AccountID: id,
				Message: "the integration's OAuth client is misconfigured (" + re.Code + "): check its client_id and client_secret"}
		default:
			return &wire.Error{Status: http.StatusServiceUnavailable, Remote: true, AccountID: id,
				Message: "refreshing the access token failed for now (" + re.Code + "); retry later"}
		}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &wire.Error{Status: http.StatusGatewayTimeout, Message: "gave up waiting for the access token refresh", AccountID: id}
	default:
		return storeError(err, id)
	}
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Inject)(nil)
	_ caddyhttp.MiddlewareHandler = (*Inject)(nil)
	_ io.ReaderFrom               = (*statusWriter)(nil)
)
