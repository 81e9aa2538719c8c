package webhook

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"path"

	"github.com/linkgate/linkgate/account"
)

// Endpoint is one configured webhook receiver.
type Endpoint struct {
	// ID names the endpoint in envelopes (webhook_id) and in the API; when
	// empty it is derived from the URL, so it is stable across restarts.
	ID string `json:"id,omitempty"`
	// URL receives the deliveries by POST; it is also the endpoint's
	// identity in the delivery log, so changing it starts a new log.
	URL string `json:"url,omitempty"`
	// Secrets are signing secrets, "whsec_<base64>" or plain strings of at
	// least 32 characters such as Truto's UUIDs (see ParseSecret). Every one
	// signs each delivery (rotation: add the new one first, remove the old
	// one once receivers have it); the first also keys X-Truto-Signature.
	Secrets []string `json:"secrets,omitempty"`
	// Events filters what is sent, by name or glob such as
	// "integrated_account:*"; empty sends every event.
	Events []string `json:"events,omitempty"`
	// SignatureEncoding is how X-Truto-Signature is encoded: "hex"
	// (default) or "base64".
	SignatureEncoding string `json:"signature_encoding,omitempty"`
}

// Validate checks the endpoint and names what is wrong, never quoting a
// secret.
func (e Endpoint) Validate() error {
	u, err := url.Parse(e.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("webhook %s: url must be an absolute http(s) URL", redactURL(e.URL))
	}
	if len(e.Secrets) == 0 {
		return fmt.Errorf("webhook %s: at least one secret (whsec_… or a plain secret of 32 characters or more) is required", redactURL(e.URL))
	}
	for i, s := range e.Secrets {
		if _, err := ParseSecret(s); err != nil {
			return fmt.Errorf("webhook %s: secret %d: %w", redactURL(e.URL), i+1, err)
		}
	}
	switch e.SignatureEncoding {
	case "", EncodingHex, EncodingBase64:
	default:
		return fmt.Errorf("webhook %s: signature_encoding %q is not hex or base64", redactURL(e.URL), e.SignatureEncoding)
	}
	for _, p := range e.Events {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("webhook %s: event pattern %q is malformed", redactURL(e.URL), p)
		}
		if !matchesAny(p) {
			return fmt.Errorf("webhook %s: event pattern %q matches none of %v", redactURL(e.URL), p, account.Events)
		}
	}
	return nil
}

func matchesAny(pattern string) bool {
	for _, ev := range account.Events {
		if ok, _ := path.Match(pattern, ev); ok {
			return true
		}
	}
	return false
}

// Matches reports whether the endpoint wants event.
func (e Endpoint) Matches(event string) bool {
	if len(e.Events) == 0 {
		return true
	}
	for _, p := range e.Events {
		if ok, _ := path.Match(p, event); ok {
			return true
		}
	}
	return false
}

// WebhookID returns ID, or when it is empty "wh_" and a hash of the URL.
func (e Endpoint) WebhookID() string {
	if e.ID != "" {
		return e.ID
	}
	sum := sha256.Sum256([]byte(e.URL))
	return "wh_" + hex.EncodeToString(sum[:8])
}

// redactURL shows a URL without its query, fragment and user info, which
// may hold a receiver's token, for logs, errors and the API.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "redacted"
	}
	u.Fragment = ""
	u.RawFragment = ""
	return u.String()
}
