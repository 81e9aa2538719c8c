package console

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/linkgate/linkgate/account"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// pages are the parsed templates, one set per page, each with the layout.
type pages struct {
	byName map[string]*template.Template
}

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"statusLabel": func(s account.Status) string {
		return strings.ReplaceAll(string(s), "_", " ")
	},
	"pretty": func(v any) string {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return "{}"
		}
		return string(b)
	},
	"pathEscape": url.PathEscape,
	// short keeps a long id readable in a crowded table; the full id is in
	// the link's title and accessible name.
	"short": func(id string) string {
		r := []rune(id)
		if len(r) <= 13 {
			return id
		}
		return string(r[:8]) + "…"
	},
	"endpoint": endpointLabel,
	// clock is a compact time for crowded rows: the time of day when it
	// is today, else the date and time; the full time is in the title.
	"clock": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		t = t.UTC()
		if t.Format("2006-01-02") == time.Now().UTC().Format("2006-01-02") {
			return t.Format("15:04:05")
		}
		return t.Format("Jan 2 15:04")
	},
	// answer is a delivery's last answer in one line.
	"answer": func(status int, errText string) string {
		switch {
		case status != 0 && errText != "":
			return fmt.Sprintf("HTTP %d %s", status, errText)
		case status != 0:
			return fmt.Sprintf("HTTP %d", status)
		case errText != "":
			return errText
		}
		return "—"
	},
	// dict passes several values to a shared template.
	"dict": func(kv ...any) (map[string]any, error) {
		if len(kv)%2 != 0 {
			return nil, fmt.Errorf("dict needs key-value pairs")
		}
		m := make(map[string]any, len(kv)/2)
		for i := 0; i < len(kv); i += 2 {
			k, ok := kv[i].(string)
			if !ok {
				return nil, fmt.Errorf("dict key %v is not a string", kv[i])
			}
			m[k] = kv[i+1]
		}
		return m, nil
	},
}

func loadPages() (*pages, error) {
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html")
	if err != nil {
		return nil, fmt.Errorf("console: parsing the layout: %w", err)
	}
	p := &pages{byName: map[string]*template.Template{}}
	for _, name := range []string{"login", "accounts", "account", "deliveries", "error", "newlink", "tenantlinks", "webhooks"} {
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: parsing page %s: %w", name, err)
		}
		p.byName[name] = t
	}
	return p, nil
}

// view is what the layout needs; Data is the page's own.
type view struct {
	Prefix string
	Title  string
	Nav    string
	User   string
	CSRF   string
	Flash  string
	Data   any
}

// render writes a page; the template runs into a buffer first so that a
// failure answers 500 instead of half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, page, title, nav string, data any) {
	v := view{Prefix: c.prefix, Title: title, Nav: nav, Data: data}
	if s := sessionOf(r); s != nil {
		v.User, v.CSRF = s.user, s.csrf
		v.Flash = c.sessions.takeFlash(s)
	}
	var buf bytes.Buffer
	if err := c.pages.byName[page].ExecuteTemplate(&buf, "layout.html", v); err != nil {
		c.log.Error("rendering a console page", zap.String("page", page), zap.Error(err))
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

// renderError shows a problem page with a message that holds no secret.
func (c *Console) renderError(w http.ResponseWriter, r *http.Request, status int, message string) {
	c.render(w, r, status, "error", http.StatusText(status), "", struct {
		Status  int
		Heading string
		Message string
	}{status, http.StatusText(status), message})
}

// serveAsset serves an embedded CSS or JS file.
func (c *Console) serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var ct string
	switch {
	case strings.HasSuffix(name, ".css"):
		ct = "text/css; charset=utf-8"
	case strings.HasSuffix(name, ".js"):
		ct = "text/javascript; charset=utf-8"
	default:
		http.NotFound(w, r)
		return
	}
	b, err := fs.ReadFile(assetFS, "assets/"+name)
	if err != nil || strings.Contains(name, "/") {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", ct)
	// Assets hold nothing secret and change only with the binary.
	w.Header().Set("Cache-Control", "public, max-age=300")
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(b)
}

// endpointLabel shows a webhook endpoint without its query or user info,
// where a secret might hide.
func endpointLabel(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(endpoint)"
	}
	return u.Scheme + "://" + u.Host + u.Path
}
