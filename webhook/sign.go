package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names of a delivery.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
	// HeaderTruto carries Truto's signature, so that receivers written for
	// Truto keep working unchanged.
	HeaderTruto = "X-Truto-Signature"
)

// SecretPrefix starts every webhook secret (Standard Webhooks).
const SecretPrefix = "whsec_"

// Signature encodings of X-Truto-Signature.
const (
	EncodingHex    = "hex"
	EncodingBase64 = "base64"
)

// DefaultTolerance is how far a webhook-timestamp may be from the
// receiver's clock when Verify is given no tolerance (Standard Webhooks' 5
// minutes).
const DefaultTolerance = 5 * time.Minute

// Errors of Verify; test them with errors.Is.
var (
	ErrMissingHeaders   = errors.New("missing webhook-id, webhook-timestamp or webhook-signature header")
	ErrBadTimestamp     = errors.New("webhook-timestamp is not a number of unix seconds")
	ErrTimestampTooOld  = errors.New("webhook-timestamp is older than the tolerance: a replay or a slow clock")
	ErrTimestampTooNew  = errors.New("webhook-timestamp is further in the future than the tolerance: check the clocks")
	ErrNoMatchingSecret = errors.New("no v1 signature matches any configured secret")
	ErrNoSecrets        = errors.New("no webhook secret configured")
)

// MinPlainSecret is the shortest plain (not whsec_) secret accepted: a
// UUID, the form of Truto's webhook secrets, has 36 characters.
const MinPlainSecret = 32

// ParseSecret returns the Standard Webhooks HMAC key of a secret, which is
// either "whsec_<base64>" (the key is the decoded bytes) or, as Truto issues
// them, a plain string of at least MinPlainSecret printable characters, such
// as a UUID (the key is the string's bytes; StandardSecret gives the
// whsec_ form a Standard Webhooks library expects). X-Truto-Signature is
// keyed by the secret exactly as configured in both cases. The error never
// quotes the secret.
func ParseSecret(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		if len(s) < MinPlainSecret {
			return nil, fmt.Errorf("webhook secret is %d characters long: use a plain secret of at least %d (a UUID, as Truto issues, has 36) or whsec_<base64>", len(s), MinPlainSecret)
		}
		for _, r := range s {
			if r <= ' ' || r > '~' {
				return nil, fmt.Errorf("a plain webhook secret must be printable ASCII without spaces")
			}
		}
		return []byte(s), nil
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("webhook secret after %q is not standard base64", SecretPrefix)
	}
	if len(key) < 16 {
		return nil, fmt.Errorf("webhook secret is %d bytes long; use at least 24 random bytes (e.g. whsec_ + `openssl rand -base64 32`)", len(key))
	}
	return key, nil
}

// StandardSecret returns the whsec_ form of a secret for Standard Webhooks
// libraries: a whsec_ secret as it is, a plain secret as "whsec_" and the
// base64 of its bytes, which is the key linkgate signs webhook-signature
// with.
func StandardSecret(secret string) string {
	if strings.HasPrefix(secret, SecretPrefix) {
		return secret
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString([]byte(secret))
}

// signer signs deliveries to one endpoint: a Standard Webhooks signature per
// key, and Truto's signature keyed by the first secret as configured.
type signer struct {
	keys     [][]byte
	truto    []byte
	encoding string
}

func newSigner(secrets []string, encoding string) (*signer, error) {
	if len(secrets) == 0 {
		return nil, ErrNoSecrets
	}
	s := &signer{truto: []byte(secrets[0]), encoding: encoding}
	if s.encoding == "" {
		s.encoding = EncodingHex
	}
	for i, sec := range secrets {
		k, err := ParseSecret(sec)
		if err != nil {
			return nil, fmt.Errorf("secret %d: %w", i+1, err)
		}
		s.keys = append(s.keys, k)
	}
	return s, nil
}

// sign sets the signature headers of one attempt on h.
func (s *signer) sign(h http.Header, id string, ts time.Time, body []byte) {
	unix := strconv.FormatInt(ts.Unix(), 10)
	sigs := make([]string, 0, len(s.keys))
	for _, k := range s.keys {
		sigs = append(sigs, "v1,"+signV1(k, id, unix, body))
	}
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, unix)
	h.Set(HeaderSignature, strings.Join(sigs, " "))
	h.Set(HeaderTruto, "format=sha256,v="+TrutoSignature(string(s.truto), body, s.encoding))
}

// signV1 is the base64 HMAC-SHA256 of "{id}.{timestamp}.{body}".
func signV1(key []byte, id, unix string, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(unix))
	m.Write([]byte{'.'})
	m.Write(body)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Sign returns the webhook-signature header value for a message: one
// space-separated "v1,<base64>" entry per secret, so that during a rotation
// receivers holding either secret accept it.
func Sign(secrets []string, id string, ts time.Time, body []byte) (string, error) {
	s, err := newSigner(secrets, "")
	if err != nil {
		return "", err
	}
	h := http.Header{}
	s.sign(h, id, ts, body)
	return h.Get(HeaderSignature), nil
}

// TrutoSignature is the v= part of X-Truto-Signature: the HMAC-SHA256 of the
// raw body keyed by secret exactly as configured (a Truto receiver HMACs
// with the string it was given), hex encoded, or base64 when encoding is
// "base64".
func TrutoSignature(secret string, body []byte, encoding string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	sum := m.Sum(nil)
	if encoding == EncodingBase64 {
		return base64.StdEncoding.EncodeToString(sum)
	}
	return hex.EncodeToString(sum)
}

// Verify checks a delivery on the receiving side, for Go applications:
// the webhook-id and webhook-timestamp headers are present, the timestamp is
// within tolerance of now (DefaultTolerance when tolerance ≤ 0), and one of
// the v1 signatures matches one of the secrets. Comparisons are constant
// time. The error says which check failed and never quotes a secret.
func Verify(secrets []string, h http.Header, body []byte, tolerance time.Duration) error {
	return verifyAt(secrets, h, body, tolerance, time.Now())
}

func verifyAt(secrets []string, h http.Header, body []byte, tolerance time.Duration, now time.Time) error {
	if len(secrets) == 0 {
		return ErrNoSecrets
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	id, tsv, sigv := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsv == "" || sigv == "" {
		return ErrMissingHeaders
	}
	unix, err := strconv.ParseInt(tsv, 10, 64)
	if err != nil {
		return ErrBadTimestamp
	}
	ts := time.Unix(unix, 0)
	if now.Sub(ts) > tolerance {
		return ErrTimestampTooOld
	}
	if ts.Sub(now) > tolerance {
		return ErrTimestampTooNew
	}
	keys := make([][]byte, 0, len(secrets))
	for i, sec := range secrets {
		k, err := ParseSecret(sec)
		if err != nil {
			return fmt.Errorf("secret %d: %w", i+1, err)
		}
		keys = append(keys, k)
	}
	matched := false
	for _, k := range keys {
		want := []byte(signV1(k, id, strconv.FormatInt(unix, 10), body))
		for entry := range strings.FieldsSeq(sigv) {
			version, sig, ok := strings.Cut(entry, ",")
			if !ok || version != "v1" {
				continue
			}
			// Keep looping after a match so the time taken does not
			// tell which entry or secret matched.
			if hmac.Equal([]byte(sig), want) {
				matched = true
			}
		}
	}
	if !matched {
		return ErrNoMatchingSecret
	}
	return nil
}
