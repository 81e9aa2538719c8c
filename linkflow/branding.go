package linkflow

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Branding is how the product that sends end users to the connect page
// presents itself there: its name, its logo and its primary colour. Every
// field is optional; the page is plain linkgate without them.
type Branding struct {
	// Name is the product's name, e.g. "Acme CRM": the page says that
	// this product asks the end user to connect. At most 80 characters.
	Name string `json:"name,omitempty"`
	// LogoURL is an image the product serves, shown at the top of the
	// page: an absolute https URL (http only on localhost), without user
	// name, password or fragment. Its origin joins the page's img-src.
	LogoURL string `json:"logo_url,omitempty"`
	// PrimaryColor colours the page's buttons and the integration's
	// monogram: "#rrggbb". The button text is white or near-black,
	// whichever contrasts more.
	PrimaryColor string `json:"primary_color,omitempty"`
}

var hexColor = regexp.MustCompile(`^#[0-9a-fA-F]{6}$`)

// maxBrandName bounds Branding.Name.
const maxBrandName = 80

// Validate checks the branding, naming the field that is wrong. The values
// are rendered into every connect page, so they are held to a strict form
// rather than escaped after the fact alone.
func (b *Branding) Validate() error {
	if b == nil {
		return nil
	}
	if utf8.RuneCountInString(b.Name) > maxBrandName {
		return fmt.Errorf("branding name is longer than %d characters", maxBrandName)
	}
	for _, r := range b.Name {
		if unicode.IsControl(r) {
			return errors.New("branding name holds a control character")
		}
	}
	if b.PrimaryColor != "" && !hexColor.MatchString(b.PrimaryColor) {
		return fmt.Errorf("branding primary_color %q is not a colour like #1a73e8", b.PrimaryColor)
	}
	if b.LogoURL != "" {
		if _, err := logoOrigin(b.LogoURL); err != nil {
			return fmt.Errorf("branding logo_url %q: %w", b.LogoURL, err)
		}
	}
	return nil
}

// logoOrigin checks a logo URL and returns its origin for the CSP.
func logoOrigin(raw string) (string, error) {
	if len(raw) > 2048 {
		return "", errors.New("longer than 2048 characters")
	}
	if strings.ContainsAny(raw, " \t\r\n\"'<>;,\\") {
		return "", errors.New("holds a space, quote, angle bracket, semicolon, comma or backslash")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return "", errors.New("not an absolute URL")
	}
	if u.User != nil || u.Fragment != "" {
		return "", errors.New("must have no user name, password or fragment")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !loopbackHost(u.Hostname()) {
			return "", errors.New("must be https (plain http only on localhost)")
		}
	default:
		return "", errors.New("must be https")
	}
	return originOf(u), nil
}

func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// brandCSS is the style sheet that applies the primary colour, served
// beside style.css: the page's CSP allows no inline style.
func (b *Branding) brandCSS() string {
	if b == nil || b.PrimaryColor == "" {
		return ""
	}
	fg := "#ffffff"
	if contrast(b.PrimaryColor, "#ffffff") < contrast(b.PrimaryColor, "#111111") {
		fg = "#111111"
	}
	return ":root { --brand: " + strings.ToLower(b.PrimaryColor) + "; --brand-fg: " + fg + "; }\n"
}

// luminance is the WCAG relative luminance of "#rrggbb".
func luminance(hex string) float64 {
	var c [3]float64
	for i := range c {
		v, _ := strconv.ParseUint(hex[1+2*i:3+2*i], 16, 8)
		s := float64(v) / 255
		if s <= 0.04045 {
			c[i] = s / 12.92
		} else {
			c[i] = math.Pow((s+0.055)/1.055, 2.4)
		}
	}
	return 0.2126*c[0] + 0.7152*c[1] + 0.0722*c[2]
}

// contrast is the WCAG contrast ratio of two colours.
func contrast(a, b string) float64 {
	la, lb := luminance(a), luminance(b)
	if la < lb {
		la, lb = lb, la
	}
	return (la + 0.05) / (lb + 0.05)
}

// serveBrand serves brand.css.
func (s *Service) serveBrand(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/css; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "public, max-age=300")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte(s.opts.Branding.brandCSS()))
	}
}

// monogram is up to two initials of a display name, for the integration's
// icon: no vendor logo is shipped.
func monogram(name string) string {
	var out []rune
	for _, word := range strings.FieldsFunc(name, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }) {
		r, _ := utf8.DecodeRuneInString(word)
		out = append(out, unicode.ToUpper(r))
		if len(out) == 2 {
			break
		}
	}
	if len(out) == 0 {
		return "?"
	}
	return string(out)
}
