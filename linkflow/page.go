package linkflow

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

//go:embed assets
var assets embed.FS

var pageTemplate = template.Must(template.ParseFS(assets, "assets/page.html"))

// Error types posted to the application, as in Truto's Link SDK protocol.
const (
	errInvalidToken       = "invalid_token"
	errInvalidIntegration = "invalid_integration"
	errConnection         = "connection_error"
	errValidation         = "validation_error"
	errPostInstall        = "post_install_error"
)

// Page kinds.
const (
	kindOAuth  = "oauth2"
	kindAPIKey = "api_key"
	kindBasic  = "basic"
	kindResult = "result"
	kindPicker = "picker"
)

// choice is one integration of the picker.
type choice struct {
	Name     string
	Label    string
	Monogram string
	URL      string
}

// fieldInput is one connection field of the connect form.
type fieldInput struct {
	Name, Label, Help, Value string
	Optional                 bool
}

// pageData is everything page.html shows. It holds the link token only on
// the connect page, in the form that spends it.
type pageData struct {
	Kind   string
	Base   string
	Iframe bool
	// Integration is the integration's display name; Monogram its
	// initials, the icon; Help the integration's help text.
	Integration string
	Monogram    string
	Help        string
	Reconnect   bool
	// The tenant and the account are never shown to the end user: they
	// are the application's ids, not words the end user knows.
	LinkToken string
	Error     string
	Username  string
	// Fields are the connection fields the end user gives before
	// connecting (a subdomain), with the values known so far.
	Fields []fieldInput
	// Picked is the integration the end user picked, for a link token
	// that names none; Back leads to the list again.
	Picked string
	Back   string
	// Choices are the integrations of the picker page.
	Choices []choice
	// Unreachable is the origin of the page that opened this one when the
	// result cannot be posted to it (not an allowed origin).
	Unreachable string

	// Brand is the product's branding; BrandCSS says brand.css applies.
	Brand    *Branding
	BrandCSS bool

	Success bool
	Heading string
	Message string
	// Post, when set, is what page.js posts to the opener or parent.
	Post *postConfig
}

// postConfig tells page.js what to post and to which origins.
type postConfig struct {
	Message  map[string]any `json:"message"`
	Targets  []string       `json:"targets"`
	Redirect string         `json:"redirect,omitempty"`
}

// targets are the origins a result about lt is posted to: the origin of its
// redirect_uri when it has one, else every allowed origin. A postMessage to
// an origin that is not the receiver's is dropped by the browser, so the
// message reaches only an application the operator allowed.
func (s *Service) targets(lt *tokenstore.LinkToken) []string {
	if lt != nil && lt.RedirectURI != "" {
		if u, err := url.Parse(lt.RedirectURI); err == nil {
			return []string{originOf(u)}
		}
	}
	return append([]string(nil), s.origins...)
}

// frameAncestors are the origins that may frame the pages (iframe mode).
func (s *Service) frameAncestors() string {
	parts := []string{s.publicOrigin}
	parts = append(parts, s.origins...)
	return strings.Join(parts, " ")
}

// render writes a page with the headers every connect page carries: no
// caching, no referrer (the link token is in the URL), a strict CSP that
// runs only linkgate's own script file, and no Cross-Origin-Opener-Policy,
// which would cut the opener the Link SDK listens to.
func (s *Service) render(w http.ResponseWriter, status int, d *pageData, formTarget string) {
	d.Base = s.publicURL
	d.Brand = s.opts.Branding
	d.BrandCSS = s.opts.Branding.brandCSS() != ""
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, d); err != nil {
		s.log.Error("rendering the connect page", zap.Error(err))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	formAction := s.publicOrigin
	if formTarget != "" {
		formAction += " " + formTarget
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	img := "data:"
	if s.logoOrigin != "" {
		img += " " + s.logoOrigin
	}
	h.Set("Content-Security-Policy", "default-src 'none'; script-src "+s.publicOrigin+"; style-src "+s.publicOrigin+
		"; img-src "+img+"; form-action "+formAction+"; frame-ancestors "+s.frameAncestors()+"; base-uri 'none'")
	h.Del("Content-Length")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// renderError shows a failure and posts it to the application, which then
// learns at once instead of waiting for the user to close the window.
func (s *Service) renderError(w http.ResponseWriter, status int, lt *tokenstore.LinkToken, iframe bool, errType, heading, message string) {
	s.render(w, status, &pageData{
		Kind:    kindResult,
		Iframe:  iframe,
		Heading: heading,
		Message: message,
		Post: &postConfig{
			Message: map[string]any{"is_truto": true, "result": "error", "error": message, "error_type": errType},
			Targets: s.targets(lt),
		},
	}, "")
}

// renderSuccess shows the end of a connection and posts it to the
// application; with no opener nor parent (same-window mode) page.js goes to
// the link token's redirect_uri instead.
func (s *Service) renderSuccess(w http.ResponseWriter, lt *tokenstore.LinkToken, in *account.Integration, accountID string, iframe bool) {
	integration := in.Name
	post := &postConfig{
		Message: map[string]any{"is_truto": true, "result": "success", "integration": integration, "integrated_account_id": accountID},
		Targets: s.targets(lt),
	}
	if lt.RedirectURI != "" {
		if u, err := url.Parse(lt.RedirectURI); err == nil {
			q := u.Query()
			q.Set("result", "success")
			q.Set("integration", integration)
			q.Set("integrated_account_id", accountID)
			u.RawQuery = q.Encode()
			post.Redirect = u.String()
		}
	}
	s.render(w, http.StatusOK, &pageData{
		Kind:        kindResult,
		Iframe:      iframe,
		Success:     true,
		Integration: in.Title(),
		Monogram:    monogram(in.Title()),
		Heading:     in.Title() + " connected",
		Message:     "Connection successful. You can close this tab.",
		Post:        post,
	}, "")
}

// serveAsset serves one embedded file. The SDK may be loaded by any
// application origin as a module script, so it is served with CORS.
func serveAsset(w http.ResponseWriter, r *http.Request, name, contentType string, cors bool) {
	b, err := assets.ReadFile("assets/" + name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "public, max-age=300")
	if cors {
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}
