package linkflow

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

// maxForm bounds the connect form's body.
const maxForm = 64 << 10

// pageError is a failure shown to the end user and posted to the application.
type pageError struct {
	status  int
	errType string
	heading string
	message string
}

func hashOf(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// randomToken returns n random bytes, base64url encoded.
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("linkflow: reading random bytes: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// usableLinkToken finds the link token whose value is token and checks that
// it can still be spent. A token that exists but cannot be used is returned
// with the error, so that its result still goes to its own application.
func (s *Service) usableLinkToken(ctx context.Context, token string) (*tokenstore.LinkToken, *account.Integration, *pageError) {
	if token == "" || len(token) > 128 {
		return nil, nil, &pageError{http.StatusBadRequest, errInvalidToken, "Connection link not valid",
			"This connection link has no valid link token. Ask the application for a new connection link."}
	}
	return s.linkTokenByHash(ctx, hashOf(token))
}

func (s *Service) linkTokenByHash(ctx context.Context, hash []byte) (*tokenstore.LinkToken, *account.Integration, *pageError) {
	lt, err := s.store.GetLinkToken(ctx, hash)
	if errors.Is(err, tokenstore.ErrNotFound) {
		return nil, nil, &pageError{http.StatusNotFound, errInvalidToken, "Connection link not valid",
			"This connection link is not valid. Ask the application for a new connection link."}
	}
	if err != nil {
		s.log.Error("reading a link token", zap.Error(err))
		return nil, nil, &pageError{http.StatusServiceUnavailable, errConnection, "Try again in a moment",
			"linkgate could not read this connection link right now. Try again in a moment."}
	}
	if !lt.UsedAt.IsZero() {
		return lt, nil, &pageError{http.StatusGone, errInvalidToken, "Connection link already used",
			"This connection link was already used. Ask the application for a new connection link."}
	}
	if !s.opts.Now().Before(lt.ExpiresAt) {
		return lt, nil, &pageError{http.StatusGone, errInvalidToken, "Connection link expired",
			fmt.Sprintf("This connection link expired on %s. Ask the application for a new connection link.", lt.ExpiresAt.UTC().Format("2 Jan 2006 15:04 MST"))}
	}
	if lt.Integration == "" {
		// The end user picks the integration on the connect page.
		return lt, nil, nil
	}
	in, ok := s.integrations[lt.Integration]
	if !ok {
		return lt, nil, &pageError{http.StatusNotFound, errInvalidIntegration, "Integration not available",
			fmt.Sprintf("The integration %s is not configured any more. Contact the application's support.", lt.Integration)}
	}
	return lt, in, nil
}

func (s *Service) showError(w http.ResponseWriter, lt *tokenstore.LinkToken, iframe bool, pe *pageError) {
	s.renderError(w, pe.status, lt, iframe, pe.errType, pe.heading, pe.message)
}

// connectData is the connect page of lt for integration in.
func connectData(lt *tokenstore.LinkToken, in *account.Integration, token string, iframe bool) *pageData {
	d := &pageData{
		Kind:        string(in.Auth),
		Iframe:      iframe,
		Integration: in.Title(),
		Monogram:    monogram(in.Title()),
		Help:        in.Help,
		Reconnect:   lt.AccountID != "",
		LinkToken:   token,
	}
	if lt.Integration == "" {
		d.Picked = in.Name
	}
	return d
}

// formTarget are the origins the connect form may lead to: the provider's
// authorization endpoint, reached by a redirect from the form's POST, and,
// because browsers check form-action on every redirect of the submission,
// any https origin the provider sends the user on to (a Salesforce login
// moves to the customer's own My Domain, for one).
func formTarget(in *account.Integration) string {
	if in.Auth != account.MethodOAuth2 {
		return ""
	}
	u, err := url.Parse(in.AuthorizeURL)
	if err != nil {
		return ""
	}
	return originOf(u) + " https:"
}

// connectPage serves GET /connect-account?link_token=…. Truto's Link SDK
// adds integration (preselect one), integrations (a comma-separated list
// to pick from), no_back and iframe.
func (s *Service) connectPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	iframe := q.Get("iframe") == "true"
	token := q.Get("link_token")
	lt, in, pe := s.usableLinkToken(r.Context(), token)
	if pe != nil {
		s.showError(w, lt, iframe, pe)
		return
	}
	unreachable := s.checkOpener(r, lt)
	want := q.Get("integration")
	if in == nil {
		if want == "" {
			d := s.pickerData(lt, token, iframe, q.Get("integrations"), q.Get("no_back") == "true")
			d.Unreachable = unreachable
			s.render(w, http.StatusOK, d, "")
			return
		}
		picked, err := s.connectable(want)
		if err != nil {
			s.showError(w, lt, iframe, &pageError{http.StatusBadRequest, errInvalidIntegration, "Integration not available",
				fmt.Sprintf("%s cannot be connected here. Ask the application for the right connection link.", oauthErrorCode(want))})
			return
		}
		in = picked
	} else if want != "" && want != lt.Integration {
		s.showError(w, lt, iframe, &pageError{http.StatusBadRequest, errInvalidIntegration, "Wrong integration",
			fmt.Sprintf("This connection link is for %s, not %s. Ask the application for the right connection link.", lt.Integration, oauthErrorCode(want))})
		return
	}
	d := connectData(lt, in, token, iframe)
	d.Fields = fieldInputs(in, s.knownConnection(r.Context(), lt, in), nil)
	d.Unreachable = unreachable
	if d.Picked != "" && q.Get("no_back") != "true" {
		d.Back = s.pickerURL(token, iframe, q.Get("integrations"))
	}
	s.render(w, http.StatusOK, d, formTarget(in))
}

// pickerURL is the connect page's integration list for a link token.
func (s *Service) pickerURL(token string, iframe bool, only string) string {
	v := url.Values{"link_token": {token}}
	if iframe {
		v.Set("iframe", "true")
	}
	if only != "" {
		v.Set("integrations", only)
	}
	return s.publicURL + PathConnect + "?" + v.Encode()
}

// pickerData is the list of integrations the end user may pick from for a
// link token that names none: every connectable one, or those of only (a
// comma-separated list, Truto's integrations option) that are.
func (s *Service) pickerData(lt *tokenstore.LinkToken, token string, iframe bool, only string, noBack bool) *pageData {
	names := s.connectableNames()
	if only != "" {
		keep := map[string]bool{}
		for _, n := range strings.Split(only, ",") {
			keep[strings.TrimSpace(n)] = true
		}
		var kept []string
		for _, n := range names {
			if keep[n] {
				kept = append(kept, n)
			}
		}
		names = kept
	}
	d := &pageData{Kind: kindPicker, Iframe: iframe}
	for _, n := range names {
		v := url.Values{"link_token": {token}, "integration": {n}}
		if iframe {
			v.Set("iframe", "true")
		}
		if only != "" {
			v.Set("integrations", only)
		}
		if noBack {
			v.Set("no_back", "true")
		}
		d.Choices = append(d.Choices, choice{Name: n, Label: s.integrations[n].Title(), Monogram: monogram(s.integrations[n].Title()), URL: s.publicURL + PathConnect + "?" + v.Encode()})
	}
	return d
}

// connectSubmit serves POST /connect-account: the connect button of an
// OAuth integration, or the credentials form of an API-key / basic one.
func (s *Service) connectSubmit(w http.ResponseWriter, r *http.Request) {
	// Only the connect page itself may submit: a form posted from another
	// site would send the user straight to the provider's consent screen,
	// past the page that says which tenant and account they are connecting.
	// (Origin is "null" under Referrer-Policy no-referrer, so it cannot
	// tell; Sec-Fetch-Site can, and browsers that lack it are let through.)
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		s.showError(w, nil, false, &pageError{http.StatusForbidden, errConnection, "Start from the connection page",
			"This connection was not started from linkgate's connection page. Open the connection link again."})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		s.showError(w, nil, false, &pageError{http.StatusBadRequest, errValidation, "Form not readable",
			"The form could not be read. Open the connection link again."})
		return
	}
	iframe := r.PostForm.Get("iframe") == "true"
	token := r.PostForm.Get("link_token")
	lt, in, pe := s.usableLinkToken(r.Context(), token)
	if pe != nil {
		s.showError(w, lt, iframe, pe)
		return
	}
	if in == nil {
		name := r.PostForm.Get("integration")
		picked, err := s.connectable(name)
		if err != nil {
			s.showError(w, lt, iframe, &pageError{http.StatusBadRequest, errInvalidIntegration, "Integration not available",
				fmt.Sprintf("%s cannot be connected here. Open the connection link again and pick an integration.", oauthErrorCode(name))})
			return
		}
		in = picked
	}
	if ok, wait := s.submits.allow(lt.Hash, s.opts.Now()); !ok {
		secs := int(math.Ceil(wait.Seconds()))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		s.showError(w, lt, iframe, &pageError{http.StatusTooManyRequests, errConnection, "Too many attempts",
			fmt.Sprintf("This connection link was used too often in a short time. Wait %d seconds, then open the connection link again.", secs)})
		return
	}
	switch in.Auth {
	case account.MethodOAuth2:
		conn, err := s.userConnection(r.Context(), lt, in, r.PostForm)
		if err != nil {
			// The form again, with what is wrong; nothing was stored.
			d := connectData(lt, in, token, iframe)
			d.Fields = fieldInputs(in, nil, r.PostForm)
			d.Error = fieldMessage(in, err)
			s.render(w, http.StatusBadRequest, d, formTarget(in))
			return
		}
		s.startOAuth(w, r, lt, in, conn)
	case account.MethodAPIKey, account.MethodBasic:
		s.submitCredentials(w, r, lt, in, token, iframe)
	default:
		s.showError(w, lt, iframe, &pageError{http.StatusBadRequest, errInvalidIntegration, "Nothing to connect",
			fmt.Sprintf("The integration %s does not connect through this page.", in.Title())})
	}
}

// oauthConfig is the x/oauth2 client of an integration for this service.
func (s *Service) oauthConfig(in *account.Integration, scopes []string) *oauth2.Config {
	// HTTP Basic unless the integration says params, as the refresher
	// does: x/oauth2's auto-detection would resend a refused exchange the
	// other way, and a provider that accepts only one style would see the
	// exchange succeed and every refresh fail.
	style := oauth2.AuthStyleInHeader
	if in.AuthStyle == "params" {
		style = oauth2.AuthStyleInParams
	}
	return &oauth2.Config{
		ClientID:     in.ClientID,
		ClientSecret: in.ClientSecret,
		Endpoint:     oauth2.Endpoint{AuthURL: in.AuthorizeURL, TokenURL: in.TokenURL, AuthStyle: style},
		RedirectURL:  s.RedirectURI(),
		Scopes:       scopes,
	}
}

// scopesFor are the integration's scopes followed by those the link token
// adds, each once.
func scopesFor(in *account.Integration, lt *tokenstore.LinkToken) []string {
	seen := map[string]bool{}
	var out []string
	for _, list := range [][]string{in.Scopes, lt.Scopes} {
		for _, sc := range list {
			if !seen[sc] {
				seen[sc] = true
				out = append(out, sc)
			}
		}
	}
	return out
}

// startOAuth creates a one-time state bound to the link token, with a PKCE
// verifier the store seals, binds it to this browser (a cookie the callback
// checks), and sends the browser to the provider.
func (s *Service) startOAuth(w http.ResponseWriter, r *http.Request, lt *tokenstore.LinkToken, in *account.Integration, conn map[string]string) {
	state := randomToken(32)
	var verifier string
	if in.UsesPKCE() {
		verifier = oauth2.GenerateVerifier()
	}
	to, err := AuthorizeURL(in, conn, s.RedirectURI(), scopesFor(in, lt), state, verifier)
	if err != nil {
		s.showError(w, lt, false, &pageError{http.StatusBadRequest, errValidation, "Check the connection details",
			fieldMessage(in, err)})
		return
	}
	cs := &tokenstore.ConnectState{
		Hash:          hashOf(state),
		LinkTokenHash: lt.Hash,
		Verifier:      verifier,
		RedirectURI:   s.RedirectURI(),
		ExpiresAt:     s.opts.Now().UTC().Add(s.opts.StateTTL),
		Connection:    conn,
	}
	if lt.Integration == "" {
		cs.Integration = in.Name
	}
	if err := s.store.CreateConnectState(r.Context(), cs); err != nil {
		s.log.Error("storing an oauth state", zap.String("integration", in.Name), zap.Error(err))
		s.showError(w, lt, false, &pageError{http.StatusServiceUnavailable, errConnection, "Try again in a moment",
			"linkgate could not start the connection right now. Try again in a moment."})
		return
	}
	s.binding.bind(w, r, state)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// submitCredentials checks the API-key / basic form, validates the
// credentials upstream when the integration says how, and stores them.
func (s *Service) submitCredentials(w http.ResponseWriter, r *http.Request, lt *tokenstore.LinkToken, in *account.Integration, token string, iframe bool) {
	var creds account.Credentials
	var missing string
	if in.Auth == account.MethodAPIKey {
		creds.APIKey = strings.TrimSpace(r.PostForm.Get("api_key"))
		if creds.APIKey == "" {
			missing = "Enter the API key."
		}
	} else {
		creds.Username = strings.TrimSpace(r.PostForm.Get("username"))
		creds.Password = r.PostForm.Get("password")
		if creds.Username == "" || creds.Password == "" {
			missing = "Enter both the username and the password."
		}
	}
	again := func(status int, msg string) {
		d := connectData(lt, in, token, iframe)
		d.Fields = fieldInputs(in, nil, r.PostForm)
		d.Error = msg
		d.Username = creds.Username
		s.render(w, status, d, "")
	}
	if missing != "" {
		again(http.StatusBadRequest, missing)
		return
	}
	conn, err := s.userConnection(r.Context(), lt, in, r.PostForm)
	if err != nil {
		again(http.StatusBadRequest, fieldMessage(in, err))
		return
	}
	if in.ValidateURL != "" {
		if msg, errType := s.validate(r.Context(), in, creds, conn); msg != "" {
			// The form is shown again for another try, and the
			// application hears of the failure at once, as from Truto.
			d := connectData(lt, in, token, iframe)
			d.Fields = fieldInputs(in, nil, r.PostForm)
			d.Error = msg
			d.Username = creds.Username
			d.Post = &postConfig{
				Message: map[string]any{"is_truto": true, "result": "error", "error": msg, "error_type": errType},
				Targets: s.targets(lt),
			}
			s.render(w, http.StatusBadRequest, d, "")
			return
		}
	}
	id, pe := s.complete(r.Context(), lt, in, creds, "", conn)
	if pe != nil {
		s.showError(w, lt, iframe, pe)
		return
	}
	s.renderSuccess(w, lt, in, id, iframe)
}

// validate requests the integration's ValidateURL with creds as the proxy
// would send them, and returns what to tell the user when it does not
// answer 2xx (empty when it does).
func (s *Service) validate(ctx context.Context, in *account.Integration, creds account.Credentials, conn map[string]string) (msg, errType string) {
	// The credentials go to a host allowed_hosts names, or nowhere.
	target, err := in.ResolveURL("validate_url", in.ValidateURL, conn)
	if err != nil {
		return fieldMessage(in, err), errValidation
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return "linkgate could not check these credentials: the integration's validation URL is wrong.", errConnection
	}
	if in.Auth == account.MethodBasic {
		req.SetBasicAuth(creds.Username, creds.Password)
	} else if in.APIKeyQuery != "" {
		q := req.URL.Query()
		q.Set(in.APIKeyQuery, creds.APIKey)
		req.URL.RawQuery = q.Encode()
	} else {
		header, prefix := in.APIKeyHeader, in.APIKeyPrefix
		if header == "" {
			header = "Authorization"
			if prefix == "" {
				prefix = "Bearer "
			}
		}
		req.Header.Set(header, prefix+creds.APIKey)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.noRedirects().Do(req)
	if err != nil {
		// The URL may carry the key in its query: log the host only.
		s.log.Warn("validating credentials failed", zap.String("integration", in.Name), zap.String("host", req.URL.Host))
		return fmt.Sprintf("%s could not be reached to check these credentials. Try again in a moment.", in.Title()), errConnection
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		s.log.Info("credentials refused by validation", zap.String("integration", in.Name), zap.Int("status", resp.StatusCode))
		return fmt.Sprintf("%s did not accept these credentials (HTTP %d). Check them and try again.", in.Title(), resp.StatusCode), errValidation
	}
	return "", ""
}
