package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"html/template"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/storage"
)

// Client is an OAuth 2 client registered with an AuthServer.
type Client struct {
	// ID is the client_id.
	ID string
	// Secret is the client secret; empty for a public client.
	Secret string
	// RedirectURIs are the exact redirect URIs the client may use. A
	// 127.0.0.1 URI matches any port (RFC 8252); a localhost URI must match
	// exactly, port included.
	RedirectURIs []string
	// Public marks a client without a secret (PKCE alone protects its code).
	Public bool
	// Scopes are the scopes the client may request. Empty allows any scope,
	// so tests that do not care about scopes need not list them.
	Scopes []string
}

// AuthServerOptions configures NewAuthServer.
type AuthServerOptions struct {
	// Clients are the registered clients. Every client may use the
	// authorization_code, refresh_token and client_credentials grants.
	Clients []Client
	// AccessTokenLifespan is how long an access token lives; 1h when zero.
	// fosite rounds expiry to whole seconds.
	AccessTokenLifespan time.Duration
	// RefreshTokenLifespan is how long a refresh token lives; 30 days when
	// zero, never expiring when -1 (fosite's convention).
	RefreshTokenLifespan time.Duration
	// Issuer, when set, is sent as the "iss" parameter of the authorization
	// response (RFC 9207). SetIssuer changes it once the URL is known.
	Issuer string
}

// Fault makes the token endpoint misbehave the way real providers do. The
// zero Fault is no fault. When several fields are set, DropConnection wins
// over Status, Status over Error, Error over HTML, HTML over NoAccessToken;
// none of those process the request (a refresh token stays as it was).
// Delay and NegativeExpiresIn do process it.
type Fault struct {
	// Delay sleeps before answering. The request is processed first, so a
	// refresh rotates even when the client has given up waiting.
	Delay time.Duration
	// Status answers this HTTP status (e.g. 503) with a JSON error body.
	Status int
	// RetryAfter is sent as the Retry-After header with Status.
	RetryAfter string
	// DropConnection hijacks the connection and closes it without a byte.
	DropConnection bool
	// HTML answers 200 with a text/html maintenance page.
	HTML bool
	// NoAccessToken answers 200 JSON that lacks access_token.
	NoAccessToken bool
	// NegativeExpiresIn issues real tokens but with a negative expires_in.
	NegativeExpiresIn bool
	// Error answers 400 {"error": Error}, e.g. "invalid_client".
	Error string
	// Count limits the fault to the next Count token calls; 0 keeps it
	// until ClearFault.
	Count int
}

// rejects reports whether the fault answers without processing the request.
func (f Fault) rejects() bool {
	return f.DropConnection || f.Status != 0 || f.Error != "" || f.HTML || f.NoAccessToken
}

// AuthServer is a real OAuth 2 authorization server (ory/fosite with an
// in-memory store) listening on 127.0.0.1.
type AuthServer struct {
	srv      *httptest.Server
	provider fosite.OAuth2Provider
	store    *storage.MemoryStore
	strategy oauth2.CoreStrategy
	clients  map[string]Client
	done     chan struct{}

	// mu serialises every request that touches the store's grants, because
	// MemoryStore has no transactions: without it two concurrent refreshes
	// with one token could both succeed, which no real provider allows.
	mu     sync.Mutex
	grants map[string]map[string]struct{} // subject -> fosite request IDs

	stateMu   sync.Mutex
	calls     map[string]int
	fault     *Fault
	faultLeft int
	issuer    string
	// Quirk modes (see SetTokenExtra, SetCallbackParams, SetDiscovery).
	tokenExtra     map[string]any
	callbackParams map[string]string
	discovery      any
	quirks         Quirks
	// noPKCE switches fosite's PKCE enforcement off (Quirks.NoPKCE).
	noPKCE *atomic.Bool
	// offlineless are the authorization codes issued without
	// Quirks.OfflineParams: their exchange gets no refresh token.
	offlineless map[string]bool
	// refreshAlias maps a refresh token a client holds to the grant's
	// newest one, under Quirks.NoRefreshRotation.
	refreshAlias map[string]string
	// refreshMu serialises refreshes under Quirks.NoRefreshRotation, so
	// the alias is read and moved on as one step.
	refreshMu sync.Mutex
}

// SetTokenExtra adds fields to every token response, as providers that
// return more than RFC 6749 do (Salesforce's instance_url).
func (a *AuthServer) SetTokenExtra(extra map[string]any) {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	a.tokenExtra = extra
}

// SetCallbackParams adds query parameters to the authorization response,
// as QuickBooks adds realmId.
func (a *AuthServer) SetCallbackParams(p map[string]string) {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	a.callbackParams = p
}

// SetDiscovery sets the JSON the discovery endpoint (DiscoveryURL) answers
// to a request with a valid access token, as Atlassian's
// accessible-resources does.
func (a *AuthServer) SetDiscovery(v any) {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	a.discovery = v
}

// DiscoveryURL is the discovery endpoint.
func (a *AuthServer) DiscoveryURL() string { return a.srv.URL + "/discovery" }

func (a *AuthServer) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	token, ok := bearerToken(r)
	if _, valid := a.ValidAccessToken(token); !ok || !valid {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
		return
	}
	a.stateMu.Lock()
	v := a.discovery
	a.stateMu.Unlock()
	writeJSON(w, http.StatusOK, v)
}

// NewAuthServer starts an authorization server with the given clients and
// stops it when the test ends.
func NewAuthServer(t testing.TB, opts AuthServerOptions) *AuthServer {
	t.Helper()
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatalf("generating the auth server's HMAC secret: %v", err)
	}
	cfg := &fosite.Config{
		AccessTokenLifespan:  opts.AccessTokenLifespan,
		RefreshTokenLifespan: opts.RefreshTokenLifespan,
		GlobalSecret:         secret,
		EnforcePKCE:          true,
		// Every authorization_code exchange gets a refresh token, as with
		// most providers linkgate talks to (no "offline" scope dance).
		RefreshTokenScopes: []string{},
		ScopeStrategy: func(allowed []string, scope string) bool {
			return len(allowed) == 0 || fosite.HierarchicScopeStrategy(allowed, scope)
		},
		// bcrypt's minimum cost keeps client authentication fast under
		// -race; set explicitly because fosite fills it in lazily, racily.
		HashCost: 4,
	}
	if cfg.AccessTokenLifespan == 0 {
		cfg.AccessTokenLifespan = time.Hour
	}
	cfg.ClientSecretsHasher = &fosite.BCrypt{Config: cfg}

	noPKCE := new(atomic.Bool)
	store := storage.NewMemoryStore()
	clients := make(map[string]Client, len(opts.Clients))
	for _, c := range opts.Clients {
		dc := &fosite.DefaultClient{
			ID:            c.ID,
			RedirectURIs:  c.RedirectURIs,
			GrantTypes:    []string{"authorization_code", "refresh_token", "client_credentials"},
			ResponseTypes: []string{"code"},
			Scopes:        c.Scopes,
			Public:        c.Public,
		}
		if !c.Public {
			hash, err := cfg.ClientSecretsHasher.Hash(context.Background(), []byte(c.Secret))
			if err != nil {
				t.Fatalf("hashing the secret of client %s: %v", c.ID, err)
			}
			dc.Secret = hash
		}
		store.Clients[c.ID] = dc
		clients[c.ID] = c
	}

	strategy := compose.NewOAuth2HMACStrategy(cfg)
	provider := compose.Compose(cfg, store, strategy,
		compose.OAuth2AuthorizeExplicitFactory,
		compose.OAuth2RefreshTokenGrantFactory,
		compose.OAuth2ClientCredentialsGrantFactory,
		compose.OAuth2TokenIntrospectionFactory,
		compose.OAuth2TokenRevocationFactory,
		func(config fosite.Configurator, storage, strategy any) any {
			return compose.OAuth2PKCEFactory(pkceSwitch{config, noPKCE}, storage, strategy)
		},
	)

	a := &AuthServer{
		provider: provider,
		store:    store,
		strategy: strategy,
		clients:  clients,
		done:     make(chan struct{}),
		grants:   make(map[string]map[string]struct{}),
		calls:    make(map[string]int),
		issuer:   opts.Issuer,
		noPKCE:   noPKCE,

		offlineless:  make(map[string]bool),
		refreshAlias: make(map[string]string),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/authorize", a.handleAuthorize)
	mux.HandleFunc("/token", a.handleToken)
	mux.HandleFunc("/revoke", a.handleRevoke)
	mux.HandleFunc("/userinfo", a.handleUserinfo)
	mux.HandleFunc("/discovery", a.handleDiscovery)
	a.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		// Release handlers sleeping on a Delay fault so Close need not wait.
		close(a.done)
		a.srv.Close()
	})
	return a
}

// URL is the server's base URL, http://127.0.0.1:port.
func (a *AuthServer) URL() string { return a.srv.URL }

// AuthorizeURL is the authorization endpoint.
func (a *AuthServer) AuthorizeURL() string { return a.srv.URL + "/authorize" }

// TokenURL is the token endpoint.
func (a *AuthServer) TokenURL() string { return a.srv.URL + "/token" }

// RevokeURL is the RFC 7009 revocation endpoint.
func (a *AuthServer) RevokeURL() string { return a.srv.URL + "/revoke" }

// UserinfoURL answers {"sub": subject} for a valid bearer access token.
func (a *AuthServer) UserinfoURL() string { return a.srv.URL + "/userinfo" }

// SetIssuer sets the "iss" parameter of later authorization responses;
// empty stops sending it. Use it when the issuer is the server's own URL.
func (a *AuthServer) SetIssuer(issuer string) {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	a.issuer = issuer
}

// TokenCalls is how many requests reached the token endpoint with this
// grant_type ("authorization_code", "refresh_token", "client_credentials")
// since the start or the last ResetCounts, faulted ones included.
func (a *AuthServer) TokenCalls(grantType string) int {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	return a.calls[grantType]
}

// ResetCounts zeroes every TokenCalls counter.
func (a *AuthServer) ResetCounts() {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	a.calls = make(map[string]int)
}

// SetFault makes the token endpoint misbehave as f describes until
// ClearFault, or for the next f.Count calls.
func (a *AuthServer) SetFault(f Fault) {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	a.fault = &f
	a.faultLeft = f.Count
}

// ClearFault makes the token endpoint behave again.
func (a *AuthServer) ClearFault() {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	a.fault = nil
}

// ValidAccessToken introspects an access token in-process and returns the
// subject it was issued for; a revoked, expired or unknown token (or a
// refresh token) is not valid.
func (a *AuthServer) ValidAccessToken(token string) (subject string, ok bool) {
	use, ar, err := a.provider.IntrospectToken(context.Background(), token, fosite.AccessToken, &fosite.DefaultSession{})
	if err != nil || use != fosite.AccessToken {
		return "", false
	}
	return ar.GetSession().GetSubject(), true
}

// RevokeRefreshToken kills the grant the refresh token belongs to, as a user
// removing the app at the provider would: the next refresh with it gets
// invalid_grant and its access token stops working. Unknown tokens are
// ignored.
func (a *AuthServer) RevokeRefreshToken(rt string) {
	rt = a.currentRefreshToken(rt)
	a.mu.Lock()
	defer a.mu.Unlock()
	ctx := context.Background()
	ar, err := a.store.GetRefreshTokenSession(ctx, a.strategy.RefreshTokenSignature(ctx, rt), nil)
	if ar == nil || (err != nil && !errors.Is(err, fosite.ErrInactiveToken)) {
		return
	}
	a.revokeGrantLocked(ar.GetID())
}

// ValidRefreshToken reports whether the refresh token would be accepted by
// the next refresh: not yet used, revoked or expired.
func (a *AuthServer) ValidRefreshToken(rt string) bool {
	rt = a.currentRefreshToken(rt)
	a.mu.Lock()
	defer a.mu.Unlock()
	ctx := context.Background()
	ar, err := a.store.GetRefreshTokenSession(ctx, a.strategy.RefreshTokenSignature(ctx, rt), nil)
	if err != nil {
		return false
	}
	return a.strategy.ValidateRefreshToken(ctx, ar, rt) == nil
}

// ExpireAccessToken makes the access token stop working at once while its
// refresh token still refreshes, as when a provider cuts a token's life
// short: the upstream answers 401 and a refresh recovers.
func (a *AuthServer) ExpireAccessToken(at string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ctx := context.Background()
	_ = a.store.DeleteAccessTokenSession(ctx, a.strategy.AccessTokenSignature(ctx, at))
}

// RevokeSubject kills every grant issued for the subject (the username typed
// on the consent page, or the client ID for client_credentials).
func (a *AuthServer) RevokeSubject(subject string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id := range a.grants[subject] {
		a.revokeGrantLocked(id)
	}
	delete(a.grants, subject)
}

func (a *AuthServer) revokeGrantLocked(requestID string) {
	ctx := context.Background()
	// MemoryStore's revocations only fail for a dangling index entry, which
	// leaves nothing to revoke.
	_ = a.store.RevokeRefreshToken(ctx, requestID)
	_ = a.store.RevokeAccessToken(ctx, requestID)
}

func (a *AuthServer) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	switch r.Method {
	case http.MethodGet:
		ar, err := a.newAuthorizeRequest(r)
		if err != nil {
			a.provider.WriteAuthorizeError(ctx, w, ar, err)
			return
		}
		// Refuse before showing the page, as strict providers do; fosite
		// itself would only notice at the POST.
		if !a.Quirks().NoPKCE && (ar.GetRequestForm().Get("code_challenge") == "" || ar.GetRequestForm().Get("code_challenge_method") != "S256") {
			a.provider.WriteAuthorizeError(ctx, w, ar, fosite.ErrInvalidRequest.WithHint("PKCE with code_challenge_method S256 is required."))
			return
		}
		renderConsent(w, http.StatusOK, ar.GetClient().GetID(), r.URL.Query(), "")
	case http.MethodPost:
		if err := r.ParseForm(); err != nil {
			http.Error(w, "unreadable form", http.StatusBadRequest)
			return
		}
		action := r.PostForm.Get("action")
		username := strings.TrimSpace(r.PostForm.Get("username"))
		offline := a.offline(r.Form)
		ar, err := a.newAuthorizeRequest(r)
		if err != nil {
			a.provider.WriteAuthorizeError(ctx, w, ar, err)
			return
		}
		switch action {
		case "deny":
			a.provider.WriteAuthorizeError(ctx, w, ar, fosite.ErrAccessDenied.WithHint("The user denied the request."))
			return
		case "allow":
		default:
			http.Error(w, `action must be "allow" or "deny"`, http.StatusBadRequest)
			return
		}
		if username == "" {
			params := url.Values{}
			for k, v := range r.Form {
				if k != "action" && k != "username" {
					params[k] = v
				}
			}
			renderConsent(w, http.StatusBadRequest, ar.GetClient().GetID(), params, "Enter a username.")
			return
		}
		for _, scope := range ar.GetRequestedScopes() {
			ar.GrantScope(scope)
		}
		a.mu.Lock()
		resp, err := a.provider.NewAuthorizeResponse(ctx, ar, &fosite.DefaultSession{Subject: username, Username: username})
		a.mu.Unlock()
		if err != nil {
			a.provider.WriteAuthorizeError(ctx, w, ar, err)
			return
		}
		if !offline {
			a.stateMu.Lock()
			a.offlineless[resp.GetCode()] = true
			a.stateMu.Unlock()
		}
		a.stateMu.Lock()
		issuer := a.issuer
		a.stateMu.Unlock()
		if issuer != "" {
			resp.AddParameter("iss", issuer)
		}
		a.stateMu.Lock()
		for k, v := range a.callbackParams {
			resp.AddParameter(k, v)
		}
		a.stateMu.Unlock()
		a.provider.WriteAuthorizeResponse(ctx, w, ar, resp)
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

var consentPage = template.Must(template.New("consent").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Sign in</title></head>
<body>
<h1>Sign in to continue to {{.Client}}</h1>
{{if .Problem}}<p id="problem">{{.Problem}}</p>{{end}}
<form method="post" action="/authorize">
{{range $k, $vs := .Params}}{{range $vs}}<input type="hidden" name="{{$k}}" value="{{.}}">
{{end}}{{end}}<label>Username <input type="text" id="username" name="username" autocomplete="off"></label>
<p>{{.Client}} asks for access to your account.</p>
<button type="submit" id="allow" name="action" value="allow">Allow</button>
<button type="submit" id="deny" name="action" value="deny">Deny</button>
</form>
</body></html>
`))

func renderConsent(w http.ResponseWriter, status int, client string, params url.Values, problem string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = consentPage.Execute(w, struct {
		Client, Problem string
		Params          url.Values
	}{client, problem, params})
}

func (a *AuthServer) handleToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	q := a.Quirks()
	if q.JSONBody {
		if err := jsonToForm(r); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": err.Error()})
			return
		}
	}
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	grant := r.PostForm.Get("grant_type")
	fault, faulted := a.takeFault(grant)
	if faulted && fault.rejects() {
		if !a.sleep(r, fault.Delay) {
			return
		}
		writeFault(w, fault)
		return
	}
	if status, code, desc := q.refuseToken(r); status != 0 {
		writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
		return
	}
	var held string
	if grant == "refresh_token" && q.NoRefreshRotation {
		// The client keeps presenting the refresh token it was first
		// given; fosite knows the grant's newest one.
		a.refreshMu.Lock()
		defer a.refreshMu.Unlock()
		held = r.PostForm.Get("refresh_token")
		if cur := a.currentRefreshToken(held); cur != held {
			r.PostForm.Set("refresh_token", cur)
			r.Form.Set("refresh_token", cur)
		}
	}

	// fosite writes into a recorder so a Delay fault can hold the answer
	// back after the grant has changed, as a slow provider does.
	rec := httptest.NewRecorder()
	a.issue(rec, r, faulted && fault.NegativeExpiresIn)
	body := rec.Body.Bytes()
	if rec.Code == http.StatusOK {
		body = a.shape(q, r, held, body)
	}
	if faulted && !a.sleep(r, fault.Delay) {
		return
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.Header().Del("Content-Length")
	w.WriteHeader(rec.Code)
	_, _ = w.Write(body)
}

// issue runs the token request through fosite under the store lock.
func (a *AuthServer) issue(w http.ResponseWriter, r *http.Request, negativeExpiry bool) {
	ctx := r.Context()
	a.mu.Lock()
	defer a.mu.Unlock()
	session := &fosite.DefaultSession{}
	ar, err := a.provider.NewAccessRequest(ctx, r, session)
	if errors.Is(err, fosite.ErrInactiveToken) {
		// fosite v0.47 answers a used or revoked refresh token with its own
		// "token_inactive" (401); providers answer invalid_grant (RFC 6749
		// section 5.2), which is what linkgate must recognise. fosite has
		// revoked the grant by now either way.
		err = fosite.ErrInvalidGrant.WithWrap(err).WithHint("The refresh token was already used or has been revoked.")
	}
	if err != nil {
		a.provider.WriteAccessError(ctx, w, ar, err)
		return
	}
	if ar.GetGrantTypes().ExactOne("client_credentials") {
		// A machine grant's subject is the client itself.
		session.Subject = ar.GetClient().GetID()
		for _, scope := range ar.GetRequestedScopes() {
			ar.GrantScope(scope)
		}
	}
	resp, err := a.provider.NewAccessResponse(ctx, ar)
	if err != nil {
		a.provider.WriteAccessError(ctx, w, ar, err)
		return
	}
	subject := ar.GetSession().GetSubject()
	if a.grants[subject] == nil {
		a.grants[subject] = make(map[string]struct{})
	}
	a.grants[subject][ar.GetID()] = struct{}{}
	if negativeExpiry {
		resp.SetExpiresIn(-time.Hour)
	}
	a.stateMu.Lock()
	for k, v := range a.tokenExtra {
		resp.SetExtra(k, v)
	}
	a.stateMu.Unlock()
	a.provider.WriteAccessResponse(ctx, w, ar, resp)
}

// Quirks makes the server behave like a provider that strays from RFC 6749
// in one of the ways linkgate has an integration option for, strictly: a
// client that does not use the matching option fails. The zero Quirks is a
// plain RFC 6749 server.
type Quirks struct {
	// NestTokens moves the token fields (access_token, refresh_token,
	// expires_in, token_type, scope) of an authorization_code answer into
	// an object of this name, as Slack's "authed_user" holds the user
	// token, with token_type "user"; the top-level access_token is then a
	// decoy no upstream accepts, with token_type "bot".
	NestTokens string
	// NestOnRefresh nests refresh answers too; without it they are flat,
	// as Slack's token rotation answers are.
	NestOnRefresh bool
	// NoExpiresIn leaves expires_in out of every answer, as Salesforce
	// does; the access token still expires after AccessTokenLifespan.
	NoExpiresIn bool
	// ScopeSeparator, when set (","), is the only separator of the scope
	// parameter the authorize endpoint reads: a scope with a space in it
	// is refused with invalid_scope. Answers join scopes with it too.
	ScopeSeparator string
	// NoPKCE refuses an authorization request carrying code_challenge and
	// a token request carrying code_verifier, as providers without PKCE
	// support do.
	NoPKCE bool
	// OfflineParams are authorization request parameters without which
	// the code's exchange returns no refresh token, as Google's
	// access_type=offline and prompt=consent.
	OfflineParams map[string]string
	// ClientAuth, when set, is the only client authentication the token
	// endpoint accepts: "basic" (client_secret_basic) or "post"
	// (client_secret_post); the other is refused with invalid_client.
	ClientAuth string
	// JSONBody makes the token endpoint read only a JSON object body, as
	// Notion's does; a form body is refused with invalid_request.
	JSONBody bool
	// NoRefreshRotation answers a refresh without a refresh_token: the
	// one the client presented keeps working, as Google's does.
	NoRefreshRotation bool
}

// SetQuirks makes the server behave as q says for later requests.
func (a *AuthServer) SetQuirks(q Quirks) {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	a.quirks = q
	a.noPKCE.Store(q.NoPKCE)
}

// Quirks returns the quirk modes in force.
func (a *AuthServer) Quirks() Quirks {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	return a.quirks
}

// pkceSwitch lets SetQuirks turn fosite's PKCE enforcement off.
type pkceSwitch struct {
	fosite.Configurator
	off *atomic.Bool
}

func (p pkceSwitch) GetEnforcePKCE(context.Context) bool { return !p.off.Load() }

// newAuthorizeRequest parses an authorization request through the quirk
// modes: a comma-separated scope is read as fosite's space-separated one,
// and what the provider would refuse is refused.
func (a *AuthServer) newAuthorizeRequest(r *http.Request) (fosite.AuthorizeRequester, error) {
	q := a.Quirks()
	if err := r.ParseForm(); err != nil {
		return nil, fosite.ErrInvalidRequest.WithHint("Unreadable request.")
	}
	raw := r.Form.Get("scope")
	if q.ScopeSeparator != "" {
		r.Form.Set("scope", strings.ReplaceAll(raw, q.ScopeSeparator, " "))
	}
	ar, err := a.provider.NewAuthorizeRequest(r.Context(), r)
	if err != nil {
		return ar, err
	}
	if q.ScopeSeparator != "" && strings.Contains(raw, " ") {
		return ar, fosite.ErrInvalidScope.WithHintf("Scopes are separated by %q here.", q.ScopeSeparator)
	}
	if q.NoPKCE && (r.Form.Has("code_challenge") || r.Form.Has("code_challenge_method")) {
		return ar, fosite.ErrInvalidRequest.WithHint("PKCE is not supported.")
	}
	return ar, nil
}

// offline reports whether an authorization request carries every one of
// the OfflineParams.
func (a *AuthServer) offline(form url.Values) bool {
	for k, v := range a.Quirks().OfflineParams {
		if form.Get(k) != v {
			return false
		}
	}
	return true
}

// refuseToken is the quirk modes' refusal of a token request: an HTTP
// status (0 for none), an error code and a description.
func (q Quirks) refuseToken(r *http.Request) (int, string, string) {
	_, _, basic := r.BasicAuth()
	inBody := r.PostForm.Get("client_secret") != ""
	switch {
	case q.ClientAuth == "basic" && (!basic || inBody):
		return http.StatusUnauthorized, "invalid_client", "Client authentication must use client_secret_basic."
	case q.ClientAuth == "post" && (basic || !inBody):
		return http.StatusUnauthorized, "invalid_client", "Client authentication must use client_secret_post."
	case q.NoPKCE && r.PostForm.Has("code_verifier"):
		return http.StatusBadRequest, "invalid_request", "PKCE is not supported."
	}
	return 0, "", ""
}

// jsonToForm turns a JSON object token request into the form fosite reads,
// refusing any other body.
func jsonToForm(r *http.Request) error {
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		return errors.New("the token endpoint reads a JSON body only")
	}
	var m map[string]any
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&m); err != nil {
		return errors.New("the body is not a JSON object")
	}
	v := url.Values{}
	for k, x := range m {
		s, ok := x.(string)
		if !ok {
			return errors.New(k + " is not a string")
		}
		v.Set(k, s)
	}
	enc := v.Encode()
	r.Body = io.NopCloser(strings.NewReader(enc))
	r.ContentLength = int64(len(enc))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Form, r.PostForm = nil, nil
	return nil
}

// currentRefreshToken is the grant's newest refresh token for the one a
// client holds (itself unless NoRefreshRotation hid a rotation).
func (a *AuthServer) currentRefreshToken(rt string) string {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	if cur, ok := a.refreshAlias[rt]; ok {
		return cur
	}
	return rt
}

var tokenFieldNames = []string{"access_token", "refresh_token", "expires_in", "token_type", "scope"}

// shape rewrites a successful token answer as the quirk modes say; held is
// the refresh token the client presented under NoRefreshRotation.
func (a *AuthServer) shape(q Quirks, r *http.Request, held string, body []byte) []byte {
	var m map[string]any
	if json.Unmarshal(body, &m) != nil {
		return body
	}
	grant := r.PostForm.Get("grant_type")
	switch grant {
	case "authorization_code":
		a.stateMu.Lock()
		code := r.PostForm.Get("code")
		drop := a.offlineless[code]
		delete(a.offlineless, code)
		a.stateMu.Unlock()
		if drop {
			delete(m, "refresh_token")
		}
	case "refresh_token":
		if q.NoRefreshRotation {
			if rt, _ := m["refresh_token"].(string); rt != "" && held != "" {
				a.stateMu.Lock()
				a.refreshAlias[held] = rt
				a.stateMu.Unlock()
			}
			delete(m, "refresh_token")
		}
	}
	if q.NoExpiresIn {
		delete(m, "expires_in")
	}
	if s, ok := m["scope"].(string); ok && q.ScopeSeparator != "" {
		m["scope"] = strings.ReplaceAll(s, " ", q.ScopeSeparator)
	}
	if q.NestTokens != "" && (grant == "authorization_code" || (grant == "refresh_token" && q.NestOnRefresh)) {
		inner := map[string]any{}
		for _, k := range tokenFieldNames {
			if v, ok := m[k]; ok {
				inner[k] = v
				delete(m, k)
			}
		}
		// Slack's user token says token_type "user", its bot token "bot";
		// both are bearer tokens.
		inner["token_type"] = "user"
		m[q.NestTokens] = inner
		m["access_token"] = "decoy-" + randomState()
		m["token_type"] = "bot"
		m["ok"] = true
	} else if q.NestTokens != "" {
		m["token_type"] = "user"
	}
	out, err := json.Marshal(m)
	if err != nil {
		return body
	}
	return append(out, '\n')
}

// takeFault counts the call and returns the fault that applies to it.
func (a *AuthServer) takeFault(grantType string) (Fault, bool) {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	a.calls[grantType]++
	if a.fault == nil {
		return Fault{}, false
	}
	f := *a.fault
	if a.faultLeft > 0 {
		a.faultLeft--
		if a.faultLeft == 0 {
			a.fault = nil
		}
	}
	return f, true
}

// sleep waits d, or less if the client leaves or the server stops; it
// reports whether the answer should still be written.
func (a *AuthServer) sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-r.Context().Done():
		return false
	case <-a.done:
		return false
	}
}

func writeFault(w http.ResponseWriter, f Fault) {
	switch {
	case f.DropConnection:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			// HTTP/2 cannot be hijacked; the test server speaks HTTP/1.1.
			panic(http.ErrAbortHandler)
		}
		_ = conn.Close()
	case f.Status != 0:
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		writeJSON(w, f.Status, map[string]string{
			"error":             "temporarily_unavailable",
			"error_description": "The authorization server is temporarily unavailable.",
		})
	case f.Error != "":
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": f.Error})
	case f.HTML:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("<!doctype html><html><body><h1>Down for maintenance</h1></body></html>\n"))
	case f.NoAccessToken:
		writeJSON(w, http.StatusOK, map[string]any{"token_type": "bearer", "expires_in": 3600})
	}
}

func (a *AuthServer) handleRevoke(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	ctx := r.Context()
	a.mu.Lock()
	err := a.provider.NewRevocationRequest(ctx, r)
	a.mu.Unlock()
	a.provider.WriteRevocationResponse(ctx, w, err)
}

func (a *AuthServer) handleUserinfo(w http.ResponseWriter, r *http.Request) {
	token, ok := bearerToken(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
		return
	}
	subject, ok := a.ValidAccessToken(token)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"sub": subject})
}

func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < len("Bearer ") || !strings.EqualFold(h[:len("Bearer ")], "Bearer ") {
		return "", false
	}
	token := strings.TrimSpace(h[len("Bearer "):])
	return token, token != ""
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// randomState returns an unguessable OAuth state value.
func randomState() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
