package linkflow

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/quirks"
	"github.com/linkgate/linkgate/tokenstore"
)

// UpstreamUserKey is the context key under which an account's upstream
// identity (from the integration's userinfo endpoint) is kept.
const UpstreamUserKey = "upstream_user_id"

// completeAttempts bounds retries of CompleteLink when the account changed
// concurrently (a refresh running while the user reconnects).
const completeAttempts = 3

// callback serves GET /connect-account/callback, the provider's redirect.
func (s *Service) callback(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" || len(state) > 512 {
		s.showError(w, nil, false, &pageError{http.StatusBadRequest, errConnection, "Sign-in not recognised",
			"This sign-in answer carries no valid state. Start again from the connection link."})
		return
	}
	// A state is good only in the browser that started it. Checked before
	// the store is touched: an answer forwarded to another browser spends
	// nothing, changes nothing, and the code in it is never redeemed.
	if !s.binding.check(r, state) {
		s.log.Warn("sign-in answer refused: its state was not started in this browser")
		s.showError(w, nil, false, &pageError{http.StatusForbidden, errConnection, "Sign-in not accepted",
			"This sign-in was not started in this browser, so linkgate did not use it and nothing was changed. " +
				"To connect an account, open the connection link you were given in this browser and start from there."})
		return
	}
	// Taking the state spends it: a replayed or raced callback finds nothing.
	cs, err := s.store.TakeConnectState(ctx, hashOf(state))
	if errors.Is(err, tokenstore.ErrNotFound) {
		s.showError(w, nil, false, &pageError{http.StatusBadRequest, errConnection, "Sign-in not recognised",
			"This sign-in answer is not valid or was already used. Start again from the connection link."})
		return
	}
	if err != nil {
		s.log.Error("taking an oauth state", zap.Error(err))
		s.showError(w, nil, false, &pageError{http.StatusServiceUnavailable, errConnection, "Try again in a moment",
			"linkgate could not finish the connection right now. Start again from the connection link."})
		return
	}
	lt, in, pe := s.linkTokenByHash(ctx, cs.LinkTokenHash)
	if pe != nil {
		s.showError(w, lt, false, pe)
		return
	}
	if in == nil {
		// A link token that left the choice to the end user: the state
		// keeps what they picked.
		picked, err := s.connectable(cs.Integration)
		if err != nil {
			s.showError(w, lt, false, &pageError{http.StatusNotFound, errInvalidIntegration, "Integration not available",
				"The integration picked for this connection is not configured any more. Start again from the connection link."})
			return
		}
		in = picked
	}
	if !s.opts.Now().Before(cs.ExpiresAt) {
		s.showError(w, lt, false, &pageError{http.StatusBadRequest, errConnection, "Sign-in took too long",
			"The sign-in took too long. Start again from the connection link."})
		return
	}
	if in.Issuer != "" {
		// RFC 9207: a provider that identifies itself must send iss, and
		// it must be the one configured, or the answer may come from a
		// mix-up attack through another provider.
		if subtle.ConstantTimeCompare([]byte(q.Get("iss")), []byte(in.Issuer)) != 1 {
			s.log.Warn("authorization response from an unexpected issuer", zap.String("integration", in.Name))
			s.showError(w, lt, false, &pageError{http.StatusBadRequest, errConnection, "Sign-in not recognised",
				fmt.Sprintf("This sign-in answer does not come from %s. Start again from the connection link.", in.Title())})
			return
		}
	}
	if e := q.Get("error"); e != "" {
		code := oauthErrorCode(e)
		s.log.Info("provider refused the authorization", zap.String("integration", in.Name), zap.String("error", code))
		msg := fmt.Sprintf("%s did not grant access (%s). Nothing was changed; you can try again with the same link.", in.Title(), code)
		if code == "access_denied" {
			msg = fmt.Sprintf("Access to %s was denied. Nothing was changed; you can try again with the same link.", in.Title())
		}
		s.showError(w, lt, false, &pageError{http.StatusBadRequest, errConnection, "Connection not completed", msg})
		return
	}
	code := q.Get("code")
	if code == "" {
		s.showError(w, lt, false, &pageError{http.StatusBadRequest, errConnection, "Sign-in not recognised",
			"This sign-in answer carries no authorization code. Start again from the connection link."})
		return
	}
	// The token endpoint of this account (a Zendesk subdomain's), checked
	// against allowed_hosts before the code is sent.
	pre, pe := s.callbackFields(in, cs.Connection, q)
	if pe != nil {
		s.showError(w, lt, false, pe)
		return
	}
	tokenURL, err := in.ResolveURL("token_url", in.TokenURL, pre)
	if err != nil {
		s.showError(w, lt, false, &pageError{http.StatusBadRequest, errValidation, "Check the connection details", fieldMessage(in, err)})
		return
	}
	cfg := s.oauthConfig(in, nil)
	cfg.Endpoint.TokenURL = tokenURL
	cfg.RedirectURL = cs.RedirectURI
	// The integration's quirks (JSON body, nested token fields, a default
	// lifetime) are undone under x/oauth2, which keeps the answer for the
	// connection fields read from it.
	qt := quirks.New(in, s.opts.Client.Transport)
	xclient := *s.opts.Client
	xclient.Transport = qt
	xctx := context.WithValue(ctx, oauth2.HTTPClient, &xclient)
	var opts []oauth2.AuthCodeOption
	if cs.Verifier != "" { // empty when the integration turns PKCE off
		opts = append(opts, oauth2.VerifierOption(cs.Verifier))
	}
	tok, err := cfg.Exchange(xctx, code, opts...)
	if err != nil {
		s.showError(w, lt, false, s.exchangeFailed(in, err))
		return
	}
	creds := account.Credentials{
		AccessToken:  tok.AccessToken,
		RefreshToken: tok.RefreshToken,
		TokenType:    tok.Type(),
		Expiry:       tok.Expiry.UTC(),
	}
	if !creds.Expiry.IsZero() {
		// x/oauth2 counts expires_in from its receipt, now: the token's
		// lifetime paces its refreshes.
		creds.IssuedAt = time.Now().UTC()
	}
	if sc, ok := tok.Extra("scope").(string); ok {
		creds.Scope = sc
	}
	answer, _ := qt.Answer()
	conn, pe := s.afterToken(ctx, in, cs.Connection, answer, q, tok.AccessToken)
	if pe != nil {
		s.showError(w, lt, false, pe)
		return
	}
	var upstreamID string
	if in.UserinfoURL != "" {
		upstreamID, err = s.upstreamUser(ctx, in, conn, tok.AccessToken)
		if err != nil {
			s.log.Warn("reading the upstream identity failed", zap.String("integration", in.Name), zap.Error(err))
			s.showError(w, lt, false, &pageError{http.StatusBadGateway, errConnection, "Connection not completed",
				fmt.Sprintf("linkgate could not read which %s user signed in. Nothing was changed; try again with the same link.", in.Title())})
			return
		}
	}
	id, pe := s.complete(ctx, lt, in, creds, upstreamID, conn)
	if pe != nil {
		s.showError(w, lt, false, pe)
		return
	}
	s.renderSuccess(w, lt, in, id, false)
}

// oauthErrorCode keeps an error code fit to show: RFC 6749 codes are
// printable ASCII words.
func oauthErrorCode(e string) string {
	if len(e) > 64 {
		e = e[:64]
	}
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '-' || r == '.' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			return r
		}
		return -1
	}, e)
}

// exchangeFailed explains a failed code exchange. The provider refusing the
// code (replayed, expired, wrong verifier) is the caller's problem (400);
// anything else is the provider's or the network's (502).
func (s *Service) exchangeFailed(in *account.Integration, err error) *pageError {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 {
		code := oauthErrorCode(re.ErrorCode)
		s.log.Info("code exchange refused", zap.String("integration", in.Name), zap.Int("status", re.Response.StatusCode), zap.String("error", code))
		if code == "invalid_client" || code == "unauthorized_client" {
			s.log.Error("integration misconfigured: the token endpoint refused the client", zap.String("integration", in.Name), zap.String("error", code))
		}
		return &pageError{http.StatusBadRequest, errConnection, "Connection not completed",
			fmt.Sprintf("%s refused the sign-in (%s). Nothing was changed; start again from the connection link.", in.Title(), code)}
	}
	// The error of x/oauth2 may quote the answer's body: log the status and
	// the error code the provider gave, never the body.
	if errors.As(err, &re) && re.Response != nil {
		s.log.Warn("code exchange failed", zap.String("integration", in.Name),
			zap.Int("status", re.Response.StatusCode), zap.String("error", oauthErrorCode(re.ErrorCode)))
	} else {
		s.log.Warn("code exchange failed: the token endpoint could not be reached or gave no answer", zap.String("integration", in.Name),
			zap.String("cause", exchangeCause(err)))
	}
	return &pageError{http.StatusBadGateway, errConnection, "Connection not completed",
		fmt.Sprintf("%s could not be reached to finish the sign-in. Nothing was changed; start again from the connection link.", in.Title())}
}

// upstreamUser reads the signed-in user's id from the integration's
// userinfo endpoint. UserIDField may be a dotted path ("data.user.id").
func (s *Service) upstreamUser(ctx context.Context, in *account.Integration, conn map[string]string, accessToken string) (string, error) {
	target, err := in.ResolveURL("userinfo_url", in.UserinfoURL, conn)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return "", fmt.Errorf("building the userinfo request: %w", err)
	}
	req.Header.Set(in.TokenAuthorization(accessToken))
	req.Header.Set("Accept", "application/json")
	resp, err := s.noRedirects().Do(req)
	if err != nil {
		return "", fmt.Errorf("requesting userinfo of %s: %w", in.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("userinfo of %s answered %d", in.Name, resp.StatusCode)
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, 1<<20))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", fmt.Errorf("userinfo of %s is not JSON", in.Name)
	}
	for _, part := range strings.Split(in.UserIDField, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return "", fmt.Errorf("userinfo of %s has no field %s", in.Name, in.UserIDField)
		}
		v = m[part]
	}
	switch t := v.(type) {
	case string:
		if t != "" {
			return t, nil
		}
	case json.Number:
		return t.String(), nil
	}
	return "", fmt.Errorf("userinfo of %s has no usable field %s", in.Name, in.UserIDField)
}

// complete stores creds for the link token's account, reconnecting it or
// creating it, with its events, marking the link token used, in one
// transaction. It returns the account id.
func (s *Service) complete(ctx context.Context, lt *tokenstore.LinkToken, in *account.Integration, creds account.Credentials, upstreamID string, conn map[string]string) (string, *pageError) {
	for attempt := 0; attempt < completeAttempts; attempt++ {
		now := s.opts.Now().UTC()
		var a *account.Account
		var change account.Change
		create := lt.AccountID == ""
		if create {
			a = &account.Account{
				ID:          uuid.NewString(),
				TenantID:    lt.TenantID,
				Integration: in.Name,
				Method:      in.Auth,
				Context:     withConnection(mergeContext(nil, lt.Context), conn),
				Credentials: creds,
				CreatedAt:   now,
				UpdatedAt:   now,
			}
			if upstreamID != "" {
				a.Context = setKey(a.Context, UpstreamUserKey, upstreamID)
			}
			c, err := a.Apply(account.Created, nil, now)
			if err != nil {
				return "", s.internalPage("creating the account", err)
			}
			change = c
		} else {
			var err error
			a, err = s.store.GetAccount(ctx, lt.AccountID)
			if errors.Is(err, tokenstore.ErrNotFound) {
				return "", &pageError{http.StatusGone, errInvalidToken, "Account no longer exists",
					"The account this link reconnects was deleted. Ask the application for a new connection link."}
			}
			if err != nil {
				return "", s.internalPage("loading the account", err)
			}
			// The store's cache may share a with proxied requests: change,
			// and let CompleteLink write its version into, a copy.
			a = a.Clone()
			if upstreamID != "" {
				if old, ok := a.Context[UpstreamUserKey]; ok && fmt.Sprint(old) != upstreamID {
					s.log.Warn("reconnect as a different upstream user refused",
						zap.String("integrated_account_id", a.ID), zap.String("integration", in.Name))
					return "", &pageError{http.StatusConflict, errConnection, "Different account",
						fmt.Sprintf("You signed in to %s as a different user than the one this connection belongs to. Nothing was changed; sign in as the original user, or ask the application for a new connection.", in.Title())}
				}
			}
			var base map[string]any
			if lt.PersistPreviousContext {
				base = a.Context
			}
			a.Context = withConnection(mergeContext(base, lt.Context), conn)
			if upstreamID != "" {
				a.Context = setKey(a.Context, UpstreamUserKey, upstreamID)
			}
			a.Credentials = creds
			a.Method = in.Auth
			c, err := a.Apply(account.Reconnected, nil, now)
			if err != nil {
				return "", s.internalPage("reconnecting the account", err)
			}
			change = c
		}
		events := tokenstore.EventsFor(change, a, now)
		err := s.store.CompleteLink(ctx, lt.Hash, a, create, events)
		switch {
		case err == nil:
			s.log.Info("account connected",
				zap.String("integrated_account_id", a.ID),
				zap.String("tenant_id", a.TenantID),
				zap.String("integration", a.Integration),
				zap.Bool("new", create))
			if len(events) > 0 {
				s.committed()
			}
			return a.ID, nil
		case errors.Is(err, tokenstore.ErrUsed):
			return "", &pageError{http.StatusConflict, errInvalidToken, "Connection link already used",
				"This connection link was already used. Ask the application for a new connection link."}
		case errors.Is(err, tokenstore.ErrNotFound):
			// The link token or the account was deleted meanwhile.
			return "", &pageError{http.StatusGone, errInvalidToken, "Connection link not valid",
				"This connection link or its account no longer exists. Ask the application for a new connection link."}
		case errors.Is(err, tokenstore.ErrConflict), errors.Is(err, tokenstore.ErrExists):
			// The account changed meanwhile (a refresh): read it again.
			continue
		default:
			return "", s.internalPage("storing the connection", err)
		}
	}
	return "", &pageError{http.StatusConflict, errConnection, "Try again",
		"The account kept changing while it was being connected. Start again from the connection link."}
}

func (s *Service) internalPage(what string, err error) *pageError {
	s.log.Error(what+" failed", zap.Error(err))
	return &pageError{http.StatusServiceUnavailable, errConnection, "Connection not completed",
		"linkgate could not store the connection right now. Start again from the connection link."}
}

// mergeContext returns a copy of base with add's keys over it.
func mergeContext(base, add map[string]any) map[string]any {
	if base == nil && add == nil {
		return nil
	}
	out := (&account.Account{Context: base}).Clone().Context
	if out == nil {
		out = map[string]any{}
	}
	for k, v := range add {
		out[k] = v
	}
	return out
}

func setKey(m map[string]any, k string, v any) map[string]any {
	if m == nil {
		m = map[string]any{}
	}
	m[k] = v
	return m
}

// exchangeCause names the class of a failed token call without its text,
// which may quote the provider's answer.
func exchangeCause(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &ne):
		return "network"
	default:
		return "malformed_answer"
	}
}
