package linkgate

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

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
// request, replaces the caller's Authorization with the account's
// credentials, points the request at the integration's base URL and watches
// the upstream's answer for 401s. It is followed by reverse_proxy, whose
// upstream is the placeholder {integrated_account.upstream}.
//
// Placeholders set: {integrated_account.id}, {integrated_account.tenant_id},
// {integrated_account.integration}, {integrated_account.upstream} (host:port
// of the integration's base URL) and {integrated_account.scheme}.
type Inject struct {
	app    *App
	logger *zap.Logger
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
	if err != nil {
		return nil, fmt.Errorf("the integrated_accounts app is not configured: add an integrated_accounts global option block: %w", err)
	}
	return v.(*App), nil
}

// accountIDHeader names the account when the query does not (canonical form).
const accountIDHeader = "X-Integrated-Account-Id"

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Inject) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	a := h.app
	if !a.authorized(bearerToken(r)) {
		a.metrics.count(outcomeUnauthorized)
		wire.WriteError(w, http.StatusUnauthorized, "missing or invalid API token: send Authorization: Bearer <api token>")
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
	if err != nil {
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
	in := up.integration
	creds, err := rt.refresher.Credentials(ctx, acct)
	if err != nil {
		a.metrics.count(outcomeCredentialsError)
		wire.WriteErr(w, credentialsError(err, id))
		return nil
	}

	// The upstream is the integration's, never the caller's choice.
	delete(r.Header, "Authorization")
	delete(r.Header, "Proxy-Authorization")
	r.URL.Scheme = up.scheme
	r.URL.Host = up.host
	if up.path != "" {
		r.URL.Path = up.path + "/" + strings.TrimLeft(r.URL.Path, "/")
		if r.URL.RawPath != "" {
			r.URL.RawPath = up.rawPath + "/" + strings.TrimLeft(r.URL.RawPath, "/")
		}
	}
	r.Host = up.host

	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Set("integrated_account.id", acct.ID)
	repl.Set("integrated_account.tenant_id", acct.TenantID)
	repl.Set("integrated_account.integration", up.name)
	repl.Set("integrated_account.upstream", up.dial)
	repl.Set("integrated_account.scheme", up.schemeValue)

	// A 401 from an OAuth upstream may be a token revoked early: refresh and
	// retry once, if the request can be sent again.
	var body []byte
	canRetry := (acct.Method == account.MethodOAuth2 && acct.Credentials.RefreshToken != "") ||
		acct.Method == account.MethodClientCredentials
	if canRetry {
		body, canRetry = replayableBody(r, a.RetryBodyLimit)
	}

	for attempt := 0; ; attempt++ {
		setCredentials(r, in, creds)
		if body != nil {
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		sw := &statusWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, hold401: canRetry && attempt == 0}
		err := next.ServeHTTP(sw, r)
		switch {
		case sw.status == http.StatusUnauthorized:
			var newCreds account.Credentials
			var retry bool
			var uerr error
			if attempt == 0 {
				newCreds, retry, uerr = rt.refresher.Unauthorized(context.WithoutCancel(ctx), acct, creds)
			} else {
				// A 401 to fresh credentials: the grant itself is refused.
				uerr = rt.refresher.UnauthorizedAfterRetry(context.WithoutCancel(ctx), acct)
			}
			if uerr != nil && !errors.Is(uerr, refresh.ErrNeedsReauth) {
				h.logger.Warn("handling an upstream 401", zap.String("integrated_account_id", id), zap.Error(uerr))
			}
			if sw.held {
				if retry && err == nil {
					creds = newCreds
					canRetry = false
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
				rt.refresher.Succeeded(context.WithoutCancel(ctx), acct)
			}
		default:
			a.metrics.count(outcomeOk)
		}
		return err
	}
}

// takeAccountID reads the account id from the query (removing it, so the
// upstream does not see it) or from the X-Integrated-Account-Id header. The
// rest of the query is forwarded byte for byte, in its order: some APIs sign
// their query strings.
func takeAccountID(r *http.Request) (string, error) {
	// Header keys here are canonical constants: index the map directly and
	// skip canonicalizing them on every request.
	var id string
	if v := r.Header[accountIDHeader]; len(v) > 0 {
		id = v[0]
		delete(r.Header, accountIDHeader)
	}
	if q, v, found := cutQueryParam(r.URL.RawQuery, "integrated_account_id"); found {
		r.URL.RawQuery = q
		if v != "" {
			id = v
		}
	}
	if id == "" {
		return "", wire.Errorf(http.StatusBadRequest, "no integrated account: pass ?integrated_account_id=<id> or the %s header", accountIDHeader)
	}
	if len(id) > 256 {
		return "", wire.Errorf(http.StatusBadRequest, "integrated_account_id is too long")
	}
	return id, nil
}

// cutQueryParam removes every name=value pair named name from a raw query
// and returns the rest unchanged, with the last value, unescaped.
func cutQueryParam(raw, name string) (rest, value string, found bool) {
	if !strings.Contains(raw, name) {
		return raw, "", false
	}
	var b strings.Builder
	for pair := range strings.SplitSeq(raw, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if k == name {
			found = true
			if u, err := url.QueryUnescape(v); err == nil {
				value = u
			}
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(pair)
	}
	if !found {
		return raw, "", false
	}
	return b.String(), value, true
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

// setCredentials puts the account's credentials where the integration wants them.
func setCredentials(r *http.Request, in *account.Integration, c account.Credentials) {
	switch in.Auth {
	case account.MethodAPIKey:
		if in.APIKeyQuery != "" {
			// Replace any caller-sent value; keep the rest of the query as sent.
			q, _, _ := cutQueryParam(r.URL.RawQuery, in.APIKeyQuery)
			if q != "" {
				q += "&"
			}
			r.URL.RawQuery = q + url.QueryEscape(in.APIKeyQuery) + "=" + url.QueryEscape(c.APIKey)
			return
		}
		header, prefix := in.APIKeyHeader, in.APIKeyPrefix
		if header == "" {
			header = "Authorization"
			if prefix == "" {
				prefix = "Bearer "
			}
		}
		r.Header.Set(header, prefix+c.APIKey)
	case account.MethodBasic:
		r.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(c.Username+":"+c.Password)))
	default:
		typ := c.TokenType
		if typ == "" || strings.EqualFold(typ, "bearer") {
			typ = "Bearer"
		}
		r.Header.Set("Authorization", typ+" "+c.AccessToken)
	}
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

// upstream is an integration's base URL, taken apart once when the config
// loads so that the proxy path does no parsing. The placeholder values are
// kept as interface values, boxed once.
type upstream struct {
	integration *account.Integration
	scheme      string
	host        string
	path        string // without a trailing slash
	rawPath     string
	name        any
	dial        any
	schemeValue any
}

func newUpstream(in *account.Integration) (*upstream, error) {
	base, err := url.Parse(in.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("integration %s: base_url: %w", in.Name, err)
	}
	return &upstream{
		integration: in,
		scheme:      base.Scheme,
		host:        base.Host,
		path:        strings.TrimRight(base.Path, "/"),
		rawPath:     strings.TrimRight(base.EscapedPath(), "/"),
		name:        in.Name,
		dial:        hostPort(base),
		schemeValue: base.Scheme,
	}, nil
}

// hostPort is the dial address of a base URL, with the scheme's port.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// statusWriter records the upstream's status. With hold401 it holds back a
// 401 answer (headers and body) so the request can be retried with fresh
// credentials; every other answer streams through untouched.
type statusWriter struct {
	*caddyhttp.ResponseWriterWrapper
	hold401 bool
	held    bool
	status  int
	// header collects the response headers while a 401 may still be held
	// back, so that a held answer's headers never reach the client.
	header http.Header
}

func (sw *statusWriter) WriteHeader(code int) {
	if code >= 100 && code < 200 {
		sw.ResponseWriter.WriteHeader(code)
		return
	}
	if sw.status != 0 {
		return
	}
	sw.status = code
	if code == http.StatusUnauthorized && sw.hold401 {
		sw.held = true
		return
	}
	if sw.header != nil {
		real := sw.ResponseWriter.Header()
		clear(real)
		for k, v := range sw.header {
			real[k] = v
		}
		sw.header = nil
	}
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

// Header hides the held 401's headers from the client's response.
func (sw *statusWriter) Header() http.Header {
	if sw.hold401 && sw.status == 0 {
		if sw.header == nil {
			sw.header = sw.ResponseWriter.Header().Clone()
		}
		return sw.header
	}
	if sw.held {
		if sw.header == nil {
			sw.header = http.Header{}
		}
		return sw.header
	}
	return sw.ResponseWriter.Header()
}

// storeError turns a store error into the API's answer.
func storeError(err error, id string) error {
	switch {
	case errors.Is(err, tokenstore.ErrNotFound):
		return &wire.Error{Status: http.StatusNotFound, Message: fmt.Sprintf("integrated account %s not found", id), AccountID: id}
	case errors.Is(err, tokenstore.ErrConflict):
		return &wire.Error{Status: http.StatusConflict, Message: "the integrated account changed meanwhile: retry", AccountID: id}
	case errors.Is(err, tokenstore.ErrInvalid):
		return &wire.Error{Status: http.StatusBadRequest, Message: "the request holds a value the store cannot keep: ids, filters and text must be UTF-8 without NUL characters"}
	default:
		return &wire.Error{Status: http.StatusServiceUnavailable, Message: errStoreUnavailable.Error()}
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
