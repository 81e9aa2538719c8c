package linkflow

import (
	"net/http"
	"net/url"
	"slices"
	"sync"

	"go.uber.org/zap"

	"github.com/linkgate/linkgate/tokenstore"
)

// maxWarnedOrigins bounds how many refused opener origins one process
// remembers having warned about, so a flood of pages opened from made-up
// origins cannot grow memory or the log without end.
const maxWarnedOrigins = 256

// openerWarnings remembers the opener origins already logged.
type openerWarnings struct {
	mu   sync.Mutex
	seen map[string]bool
}

// first reports whether origin is logged now for the first time.
func (o *openerWarnings) first(origin string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.seen == nil {
		o.seen = map[string]bool{}
	}
	if o.seen[origin] || len(o.seen) >= maxWarnedOrigins {
		return false
	}
	o.seen[origin] = true
	return true
}

// checkOpener looks at the page that opened the connect page (its origin,
// from Referer) and returns that origin when the result of the connection
// cannot be posted to it, because it is neither an allowed origin nor the
// link token's redirect_uri origin. A Link SDK popup or iframe opened from
// such a page would wait for a message the browser never delivers, so the
// operator is told, once per origin, which option to set; the page tells
// the end user at the end. A page opened with no Referer (a magic link
// from mail, a strict Referrer-Policy) cannot be judged and is let be.
func (s *Service) checkOpener(r *http.Request, lt *tokenstore.LinkToken) string {
	ref := r.Header.Get("Referer")
	if ref == "" {
		return ""
	}
	u, err := url.Parse(ref)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ""
	}
	origin := originOf(u)
	if origin == s.publicOrigin || slices.Contains(s.targets(lt), origin) {
		return ""
	}
	if s.openers.first(origin) {
		s.log.Warn("the connect page was opened from an origin that is not allowed: a Link SDK popup or iframe there will not be told the result; if it is your application, add it to allowed_origins",
			zap.String("origin", origin),
			zap.String("option", "allowed_origins "+origin))
	}
	return origin
}
