package linkflow

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/tokenstore"
)

// tenantIDPattern is what a tenant id may look like: the application's own
// identifier, kept printable so it is safe in logs, pages and URLs.
var tenantIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:@+\-]{1,256}$`)

// maxScopes bounds the scopes a link token may add.
const maxScopes = 100

// CreateLinkToken handles POST /link-token. The caller must already be
// authenticated with the API token. The body names either an existing
// account to reconnect ({"integrated_account_id"}) or a new connection
// ({"tenant_id"}, with "integration" or "environment_integration_id" to
// choose the integration, or without to let the end user pick one on the
// connect page); it answers 201 with the token, the magic link and its
// expiry. Only the token's SHA-256 is stored.
func (s *Service) CreateLinkToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		wire.WriteError(w, http.StatusMethodNotAllowed, "use POST to create a link token")
		return
	}
	var req wire.LinkTokenRequest
	if err := wire.DecodeJSON(r, &req); err != nil {
		wire.WriteErr(w, err)
		return
	}
	lt, err := s.linkTokenFor(r.Context(), &req)
	if err != nil {
		s.writeAPIError(w, err)
		return
	}
	token := uuid.New().String()
	sum := sha256.Sum256([]byte(token))
	// Milliseconds, as in the rest of the wire format.
	now := s.opts.Now().UTC().Truncate(time.Millisecond)
	lt.Hash = sum[:]
	lt.CreatedAt = now
	lt.ExpiresAt = now.Add(s.opts.LinkTokenTTL)
	if err := s.store.CreateLinkToken(r.Context(), lt); err != nil {
		s.log.Error("storing a link token", zap.String("integration", lt.Integration), zap.Error(err))
		s.writeAPIError(w, err)
		return
	}
	s.log.Info("link token created",
		zap.String("integrated_account_id", lt.AccountID),
		zap.String("tenant_id", lt.TenantID),
		zap.String("integration", lt.Integration),
		zap.Time("expires_at", lt.ExpiresAt))
	wire.WriteJSON(w, http.StatusCreated, wire.LinkToken{
		LinkToken: token,
		URL:       s.publicURL + PathConnect + "?" + url.Values{"link_token": {token}}.Encode(),
		ExpiresAt: wire.Time(lt.ExpiresAt),
	})
}

// linkTokenFor checks a request and returns the link token it asks for,
// without hash and times.
func (s *Service) linkTokenFor(ctx context.Context, req *wire.LinkTokenRequest) (*tokenstore.LinkToken, error) {
	isReconnect := req.IntegratedAccountID != nil
	isNew := req.TenantID != nil
	switch {
	case isReconnect && isNew:
		return nil, wire.Errorf(http.StatusBadRequest, "give either integrated_account_id (to reconnect an account) or tenant_id (for a new connection), not both")
	case !isReconnect && !isNew:
		return nil, wire.Errorf(http.StatusBadRequest, "give integrated_account_id (to reconnect an account) or tenant_id (for a new connection)")
	}
	lt := &tokenstore.LinkToken{
		Context:                req.Context,
		PersistPreviousContext: req.PersistPreviousContext,
	}
	if isReconnect {
		if req.Integration != nil || req.EnvironmentIntegrationID != nil {
			return nil, wire.Errorf(http.StatusBadRequest, "a reconnect keeps the account's integration: leave out integration and environment_integration_id")
		}
		id := *req.IntegratedAccountID
		if id == "" || len(id) > 256 {
			return nil, wire.Errorf(http.StatusBadRequest, "integrated_account_id must be a non-empty account id")
		}
		a, err := s.store.GetAccount(ctx, id)
		if errors.Is(err, tokenstore.ErrNotFound) || (err == nil && !s.tenantAllowed(ctx, a.TenantID)) {
			return nil, &wire.Error{Status: http.StatusNotFound, Message: fmt.Sprintf("integrated account %s does not exist", id), AccountID: id}
		}
		if err != nil {
			return nil, fmt.Errorf("loading account %s: %w", id, err)
		}
		lt.AccountID, lt.TenantID, lt.Integration = a.ID, a.TenantID, a.Integration
	} else {
		if !tenantIDPattern.MatchString(*req.TenantID) {
			return nil, wire.Errorf(http.StatusBadRequest, "tenant_id must be 1 to 256 characters of letters, digits and . _ : @ + -")
		}
		if !s.tenantAllowed(ctx, *req.TenantID) {
			return nil, wire.Errorf(http.StatusForbidden, "this API token may not create link tokens for tenant %s", *req.TenantID)
		}
		lt.TenantID = *req.TenantID
		name, err := s.integrationNamed(req)
		if err != nil {
			return nil, err
		}
		lt.Integration = name
	}
	if lt.Integration != "" {
		in, err := s.connectable(lt.Integration)
		if err != nil {
			return nil, err
		}
		// Connection fields given in the context (a subdomain) are
		// checked now: a bad one is refused here, not on the end user's
		// page.
		if lt.Context, err = in.CheckContext(lt.Context, nil); err != nil {
			var fe *account.FieldError
			if errors.As(err, &fe) {
				return nil, wire.Errorf(http.StatusBadRequest, "context.%s: %s", fe.Field, fe.Message)
			}
			return nil, wire.Errorf(http.StatusBadRequest, "context: %s", err)
		}
	} else if len(s.connectableNames()) == 0 {
		return nil, wire.Errorf(http.StatusBadRequest, "no integration of this gateway can be connected by an end user (oauth2, api_key or basic): name one with integration")
	}
	if req.RedirectURI != "" {
		u, err := url.Parse(req.RedirectURI)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return nil, wire.Errorf(http.StatusBadRequest, "redirect_uri must be an absolute http(s) URL")
		}
		if !s.allowedOrigin(originOf(u)) {
			return nil, wire.Errorf(http.StatusBadRequest, "redirect_uri origin %s is not one of the allowed origins", originOf(u))
		}
		lt.RedirectURI = u.String()
	}
	if len(req.Scopes) > maxScopes {
		return nil, wire.Errorf(http.StatusBadRequest, "at most %d scopes", maxScopes)
	}
	for _, sc := range req.Scopes {
		if !validScope(sc) {
			return nil, wire.Errorf(http.StatusBadRequest, "scope %q is not a valid OAuth scope token", sc)
		}
	}
	lt.Scopes = req.Scopes
	return lt, nil
}

// integrationNamed is the integration a new connection's request names, by
// name or by environment_integration_id ("" when it names none: the end
// user picks).
func (s *Service) integrationNamed(req *wire.LinkTokenRequest) (string, error) {
	var name string
	if req.Integration != nil {
		name = *req.Integration
		if name == "" {
			return "", wire.Errorf(http.StatusBadRequest, "integration must not be empty: leave it out to let the end user pick")
		}
	}
	if req.EnvironmentIntegrationID != nil {
		id := *req.EnvironmentIntegrationID
		byID, ok := "", false
		if s.opts.Environment != nil {
			byID, ok = s.opts.Environment.IntegrationByEnvironmentID(id)
		}
		if !ok {
			return "", wire.Errorf(http.StatusBadRequest, "environment_integration_id %q is not an integration of this gateway", id)
		}
		if name != "" && name != byID {
			return "", wire.Errorf(http.StatusBadRequest, "integration %q and environment_integration_id %q name different integrations", name, id)
		}
		name = byID
	}
	return name, nil
}

// connectable returns the integration name if an end user can connect it
// on the connect page.
func (s *Service) connectable(name string) (*account.Integration, error) {
	in, ok := s.integrations[name]
	if !ok {
		return nil, wire.Errorf(http.StatusBadRequest, "integration %q is not configured", name)
	}
	switch in.Auth {
	case account.MethodOAuth2, account.MethodAPIKey, account.MethodBasic:
		return in, nil
	}
	return nil, wire.Errorf(http.StatusBadRequest, "integration %q authenticates with %s: there is nothing for an end user to connect", in.Name, in.Auth)
}

// connectableNames are the integrations an end user can connect, sorted.
func (s *Service) connectableNames() []string {
	var out []string
	for name := range s.integrations {
		if _, err := s.connectable(name); err == nil {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// tenantAllowed reports whether the API caller may act for tenant.
func (s *Service) tenantAllowed(ctx context.Context, tenant string) bool {
	if s.opts.TenantAllowed == nil {
		return true
	}
	return s.opts.TenantAllowed(ctx, tenant)
}

// validScope reports whether sc is a scope-token of RFC 6749 §3.3.
func validScope(sc string) bool {
	if sc == "" || len(sc) > 256 {
		return false
	}
	for i := 0; i < len(sc); i++ {
		c := sc[i]
		if c < 0x21 || c == 0x22 || c == 0x5c || c > 0x7e {
			return false
		}
	}
	return true
}

// writeAPIError answers an API call: *wire.Error as is, store trouble as 503,
// anything else as an opaque 500.
func (s *Service) writeAPIError(w http.ResponseWriter, err error) {
	var we *wire.Error
	switch {
	case errors.As(err, &we):
		wire.WriteErr(w, we)
	case errors.Is(err, tokenstore.ErrUnavailable):
		wire.WriteError(w, http.StatusServiceUnavailable, "the store is unavailable; try again")
	default:
		s.log.Error("link token request failed", zap.Error(err))
		wire.WriteErr(w, err)
	}
}
