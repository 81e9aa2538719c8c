package refresh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/quirks"
)

// tokenResult is what one token-endpoint call brought back.
type tokenResult struct {
	tok *oauth2.Token
	// received is the gateway's clock when the answer arrived; expires_in
	// counts from it, not from when the provider wrote it.
	received time.Time
	// salvage is a new refresh token found in an answer that is otherwise
	// unusable; it must be stored, or the next attempt presents a token the
	// provider has already rotated away.
	salvage string
	// uncertain: the request was sent and no answer came back, so the
	// provider may have rotated the refresh token.
	uncertain bool
	// entry is the call's journal record, when there is a journal.
	entry *journalEntry
	// dropRefresh: the answer carried no refresh token and the
	// integration keeps none then (keep_refresh_token off).
	dropRefresh bool
	// answer is the decoded JSON of a successful answer, from which the
	// connection fields with source token_response are read again.
	answer any
}

// apply writes the token into c. A refresh answer without refresh_token
// keeps the old one (x/oauth2 already carries it over).
func (t *tokenResult) apply(c *account.Credentials) {
	c.AccessToken = t.tok.AccessToken
	if t.tok.TokenType != "" {
		c.TokenType = t.tok.TokenType
	}
	if t.tok.RefreshToken != "" {
		c.RefreshToken = t.tok.RefreshToken
	}
	if t.dropRefresh {
		c.RefreshToken = ""
	}
	c.Expiry, c.IssuedAt = time.Time{}, time.Time{}
	if secs := expiresIn(t.tok); secs > 0 {
		c.Expiry = t.received.Add(time.Duration(secs) * time.Second)
		c.IssuedAt = t.received
	}
	if s, ok := t.tok.Extra("scope").(string); ok && s != "" {
		c.Scope = s
	}
}

func authStyle(s string) oauth2.AuthStyle {
	if s == "params" {
		return oauth2.AuthStyleInParams
	}
	// x/oauth2's auto-detection retries a failed call with the other style,
	// which would present a refresh token twice; RFC 6749 §2.3.1 requires
	// token endpoints to accept HTTP Basic, so that is the default.
	return oauth2.AuthStyleInHeader
}

// callRefresh presents refreshToken to integ's token endpoint.
func (r *Refresher) callRefresh(integ *account.Integration, refreshToken string) (*tokenResult, *Error) {
	cfg := &oauth2.Config{
		ClientID:     integ.ClientID,
		ClientSecret: integ.ClientSecret,
		Endpoint:     oauth2.Endpoint{TokenURL: integ.TokenURL, AuthStyle: authStyle(integ.AuthStyle)},
	}
	return r.tokenCall(integ, refreshToken, []string{integ.ClientSecret}, func(ctx context.Context) (*oauth2.Token, error) {
		return cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	})
}

// callClientCredentials asks integ's token endpoint for the gateway's own
// token.
func (r *Refresher) callClientCredentials(integ *account.Integration) (*tokenResult, *Error) {
	cfg := &clientcredentials.Config{
		ClientID:     integ.ClientID,
		ClientSecret: integ.ClientSecret,
		TokenURL:     integ.TokenURL,
		Scopes:       integ.Scopes,
		AuthStyle:    authStyle(integ.AuthStyle),
	}
	return r.tokenCall(integ, "", []string{integ.ClientSecret}, cfg.Token)
}

// tokenCall runs one token request on its own context bounded by
// TokenHardLimit, never a caller's (callers stop waiting at TokenTimeout;
// the request goes on, since the provider may already have rotated the
// refresh token), and classifies its outcome. secrets are
// scrubbed from any text of the answer that reaches an error message.
func (r *Refresher) tokenCall(integ *account.Integration, refreshToken string, secrets []string, call func(context.Context) (*oauth2.Token, error)) (*tokenResult, *Error) {
	base := r.opts.Client.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	// The integration's quirks (a JSON body, nested token fields, a
	// default lifetime) are undone below the capture, so that a salvaged
	// refresh token is found where the integration says it is.
	q := quirks.New(integ, base)
	capt := &captureTransport{base: q}
	client := &http.Client{Transport: capt, Timeout: r.opts.Client.Timeout, CheckRedirect: r.opts.Client.CheckRedirect}
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.TokenHardLimit)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, client)

	start := time.Now()
	tok, err := call(ctx)
	r.metrics.duration.Observe(time.Since(start).Seconds())
	res := &tokenResult{tok: tok, received: r.opts.Now()}
	doc, had := q.Answer()
	if err == nil && refreshToken != "" && !had && !integ.KeepsRefreshToken() {
		res.dropRefresh = true
	}
	if err == nil {
		res.answer = doc
	}
	secrets = append(secrets, refreshToken)
	if err != nil {
		body, answered := capt.answer()
		res.uncertain = capt.sent.Load() && !answered
		if answered && refreshToken != "" {
			if rt := refreshTokenIn(body); rt != "" && rt != refreshToken {
				res.salvage = rt
			}
		}
		return res, classify(err, secrets)
	}
	if expiresIn(tok) < 0 {
		if tok.RefreshToken != "" && tok.RefreshToken != refreshToken {
			res.salvage = tok.RefreshToken
		}
		return res, &Error{Class: Transient, Code: "malformed_response", Message: "token endpoint answered with a negative expires_in"}
	}
	return res, nil
}

// expiresIn is the answer's expires_in in seconds, 0 when absent. The
// clientcredentials package drops Token.ExpiresIn, so the raw field is read
// as well.
func expiresIn(tok *oauth2.Token) int64 {
	if tok.ExpiresIn != 0 {
		return tok.ExpiresIn
	}
	switch v := tok.Extra("expires_in").(type) {
	case float64:
		return int64(v)
	case string:
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	case json.Number:
		n, _ := v.Int64()
		return n
	}
	return 0
}

// classify sorts a token-endpoint failure into who is to blame.
func classify(err error, secrets []string) *Error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		var header http.Header
		if re.Response != nil {
			status = re.Response.StatusCode
			header = re.Response.Header
		}
		code := re.ErrorCode
		desc := scrub(re.ErrorDescription, secrets)
		msg := func(def string) string {
			if desc != "" {
				return desc
			}
			return def
		}
		switch {
		case status == http.StatusTooManyRequests:
			return &Error{Class: Transient, Code: "rate_limited", Message: "token endpoint answered 429 Too Many Requests", RetryAfter: retryAfter(header)}
		case status >= 500:
			return &Error{Class: Transient, Code: "server_error", Message: fmt.Sprintf("token endpoint answered %d", status), RetryAfter: retryAfter(header)}
		case code == "invalid_client" || code == "unauthorized_client":
			return &Error{Class: Misconfigured, Code: code, Message: msg("token endpoint rejected the client credentials")}
		case code == "invalid_grant":
			return &Error{Class: Revoked, Code: code, Message: msg("the refresh token was refused")}
		case code == "invalid_token" && (status == 400 || status == 401):
			return &Error{Class: Revoked, Code: code, Message: msg("the refresh token was refused")}
		case code == "temporarily_unavailable" || code == "server_error":
			return &Error{Class: Transient, Code: code, Message: msg("token endpoint is temporarily unavailable")}
		case code != "" && (status == 400 || status == 401) && revokedWords(desc):
			return &Error{Class: Revoked, Code: code, Message: desc}
		case code != "":
			// invalid_request, invalid_scope, unsupported_grant_type: the
			// request linkgate sends is wrong for this provider.
			return &Error{Class: Misconfigured, Code: code, Message: msg("token endpoint rejected the request")}
		}
		what := "a body that is not an OAuth error"
		if ct, _, _ := mime.ParseMediaType(header.Get("Content-Type")); ct == "text/html" {
			what = "HTML"
		}
		return &Error{Class: Transient, Code: "unexpected_response", Message: fmt.Sprintf("token endpoint answered %d with %s", status, what), RetryAfter: retryAfter(header)}
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return &Error{Class: Transient, Code: "timeout", Message: "token endpoint did not answer in time"}
	case strings.Contains(err.Error(), "missing access_token"):
		return &Error{Class: Transient, Code: "malformed_response", Message: "token endpoint answered without an access_token"}
	case strings.Contains(err.Error(), "cannot parse"):
		return &Error{Class: Transient, Code: "malformed_response", Message: "token endpoint answered with a body that is not a token"}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return &Error{Class: Transient, Code: "network", Message: "token endpoint unreachable or the connection dropped"}
	}
	return &Error{Class: Transient, Code: "network", Message: "token request failed"}
}

func revokedWords(desc string) bool {
	d := strings.ToLower(desc)
	return strings.Contains(d, "revoked") || strings.Contains(d, "expired")
}

// scrub shortens a provider's error description and removes any secret it
// echoes.
func scrub(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, account.Redacted)
		}
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// retryAfter reads a Retry-After header in seconds or as an HTTP date.
func retryAfter(h http.Header) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

// refreshTokenIn finds a refresh_token in a JSON or form-encoded answer.
func refreshTokenIn(body []byte) string {
	var j struct {
		RefreshToken string `json:"refresh_token"`
	}
	if json.Unmarshal(body, &j) == nil {
		return j.RefreshToken
	}
	if v, err := url.ParseQuery(string(body)); err == nil {
		return v.Get("refresh_token")
	}
	return ""
}

// captureTransport keeps a copy of the token endpoint's answer (x/oauth2
// discards it when the answer is malformed) and notes whether the request
// was written, which tells a lost answer from a refused connection.
type captureTransport struct {
	base http.RoundTripper
	sent atomic.Bool

	mu       sync.Mutex
	body     []byte
	answered bool
}

func (t *captureTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { t.sent.Store(true) }}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.body, t.answered = b, true
	t.mu.Unlock()
	resp.Body = io.NopCloser(strings.NewReader(string(b)))
	return resp, nil
}

func (t *captureTransport) answer() ([]byte, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.body, t.answered
}
