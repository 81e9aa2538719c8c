package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

func newSecret(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(b)
}

func TestParseSecret(t *testing.T) {
	good := newSecret(t)
	if k, err := ParseSecret(good); err != nil || len(k) != 32 {
		t.Fatalf("ParseSecret(good) = %d bytes, %v", len(k), err)
	}
	for name, s := range map[string]string{
		"short plain":        "hunter2-not-a-whsec",
		"plain with a space": "f49fa6c3-3d60-4d7e-bc86 16259a5d0db0",
		"not base64":         SecretPrefix + "!!!!not-base64-secret-value!!!!",
		"too short":          SecretPrefix + base64.StdEncoding.EncodeToString([]byte("short")),
		"empty":              "",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseSecret(s)
			if err == nil {
				t.Fatal("accepted")
			}
			if rest := strings.TrimPrefix(s, SecretPrefix); len(rest) > 3 && strings.Contains(err.Error(), rest) {
				t.Fatalf("error quotes the secret: %v", err)
			}
		})
	}
}

// signedHeaders signs like the dispatcher does.
func signedHeaders(t *testing.T, secrets []string, encoding, id string, ts time.Time, body []byte) http.Header {
	t.Helper()
	s, err := newSigner(secrets, encoding)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	s.sign(h, id, ts, body)
	return h
}

func TestSignatureVerifiesWithOfficialLibrary(t *testing.T) {
	old, cur := newSecret(t), newSecret(t)
	body := []byte(`{"id":"evt_1","event":"integrated_account:authentication_error","payload":{"id":"a1"}}`)
	h := signedHeaders(t, []string{cur, old}, "", "evt_1", time.Now(), body)

	if got := strings.Fields(h.Get(HeaderSignature)); len(got) != 2 {
		t.Fatalf("want one signature per secret, got %q", h.Get(HeaderSignature))
	}
	// Rotation: a receiver holding either secret accepts the delivery.
	for name, sec := range map[string]string{"current": cur, "previous": old} {
		wh, err := standardwebhooks.NewWebhook(sec)
		if err != nil {
			t.Fatal(err)
		}
		if err := wh.Verify(body, h); err != nil {
			t.Errorf("%s secret: official library rejects our signature: %v", name, err)
		}
		if err := wh.Verify(append([]byte(" "), body...), h); err == nil {
			t.Errorf("%s secret: official library accepts a changed body", name)
		}
	}
	other, _ := standardwebhooks.NewWebhook(newSecret(t))
	if err := other.Verify(body, h); err == nil {
		t.Fatal("official library accepts a signature made with other secrets")
	}

	sig, err := Sign([]string{cur}, "evt_1", time.Now(), body)
	if err != nil || !strings.HasPrefix(sig, "v1,") || strings.Contains(sig, " ") {
		t.Fatalf("Sign = %q, %v", sig, err)
	}
}

func TestVerifyAcceptsOfficialLibrarySignatures(t *testing.T) {
	sec := newSecret(t)
	wh, err := standardwebhooks.NewWebhook(sec)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"hello":"world"}`)
	mk := func(id string, ts time.Time, sigBody []byte) http.Header {
		sig, err := wh.Sign(id, ts, sigBody)
		if err != nil {
			t.Fatal(err)
		}
		h := http.Header{}
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
		h.Set("webhook-signature", sig)
		return h
	}
	now := time.Now()
	if err := Verify([]string{sec}, mk("msg_1", now, body), body, 0); err != nil {
		t.Fatalf("Verify rejects the official library's signature: %v", err)
	}
	// A receiver rotating secrets lists both; the message was signed with
	// one of them.
	if err := Verify([]string{newSecret(t), sec}, mk("msg_1", now, body), body, 0); err != nil {
		t.Fatalf("Verify with the signing secret second: %v", err)
	}
	// Several signatures in the header, the matching one last.
	h := mk("msg_1", now, body)
	h.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(make([]byte, 32))+" "+h.Get("webhook-signature"))
	if err := Verify([]string{sec}, h, body, 0); err != nil {
		t.Fatalf("Verify with two signature entries: %v", err)
	}

	cases := map[string]struct {
		h       http.Header
		body    []byte
		secrets []string
		want    error
	}{
		"changed body":  {mk("msg_1", now, body), []byte(`{"hello":"World"}`), []string{sec}, ErrNoMatchingSecret},
		"other id":      {func() http.Header { h := mk("msg_1", now, body); h.Set("webhook-id", "msg_2"); return h }(), body, []string{sec}, ErrNoMatchingSecret},
		"wrong secret":  {mk("msg_1", now, body), body, []string{newSecret(t)}, ErrNoMatchingSecret},
		"too old":       {mk("msg_1", now.Add(-10*time.Minute), body), body, []string{sec}, ErrTimestampTooOld},
		"too new":       {mk("msg_1", now.Add(10*time.Minute), body), body, []string{sec}, ErrTimestampTooNew},
		"no id":         {func() http.Header { h := mk("msg_1", now, body); h.Del("webhook-id"); return h }(), body, []string{sec}, ErrMissingHeaders},
		"no timestamp":  {func() http.Header { h := mk("msg_1", now, body); h.Del("webhook-timestamp"); return h }(), body, []string{sec}, ErrMissingHeaders},
		"bad timestamp": {func() http.Header { h := mk("msg_1", now, body); h.Set("webhook-timestamp", "yesterday"); return h }(), body, []string{sec}, ErrBadTimestamp},
		"v2 only": {func() http.Header {
			h := mk("msg_1", now, body)
			h.Set("webhook-signature", strings.Replace(h.Get("webhook-signature"), "v1,", "v2,", 1))
			return h
		}(), body, []string{sec}, ErrNoMatchingSecret},
		"no secrets":   {mk("msg_1", now, body), body, nil, ErrNoSecrets},
		"no signature": {func() http.Header { h := mk("msg_1", now, body); h.Del("webhook-signature"); return h }(), body, []string{sec}, ErrMissingHeaders},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := Verify(c.secrets, c.h, c.body, 5*time.Minute)
			if !errors.Is(err, c.want) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
			if strings.Contains(err.Error(), strings.TrimPrefix(sec, SecretPrefix)) {
				t.Fatal("error quotes the secret")
			}
		})
	}
	// A wider tolerance accepts the ten-minute-old message.
	if err := Verify([]string{sec}, mk("msg_1", now.Add(-10*time.Minute), body), body, time.Hour); err != nil {
		t.Fatalf("tolerance of an hour: %v", err)
	}
}

// TestPlainSecret: a Truto-style UUID secret keys X-Truto-Signature as
// Truto does (the string as given), and webhook-signature with its bytes,
// which a Standard Webhooks library verifies when given StandardSecret.
func TestPlainSecret(t *testing.T) {
	const sec = "6e17561c-a20c-44ce-b8b5-caff0bf786fe"
	body := []byte(`{"id":"evt_1","event":"test"}`)
	h := signedHeaders(t, []string{sec}, "", "evt_1", time.Now(), body)
	m := hmac.New(sha256.New, []byte(sec))
	m.Write(body)
	if got, want := h.Get(HeaderTruto), "format=sha256,v="+hex.EncodeToString(m.Sum(nil)); got != want {
		t.Fatalf("X-Truto-Signature = %q, want %q", got, want)
	}
	wh, err := standardwebhooks.NewWebhook(StandardSecret(sec))
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(body, h); err != nil {
		t.Fatalf("the official library with StandardSecret rejects the signature: %v", err)
	}
	if err := Verify([]string{sec}, h, body, time.Minute); err != nil {
		t.Fatalf("Verify with the plain secret: %v", err)
	}
	if StandardSecret("whsec_abc") != "whsec_abc" {
		t.Fatal("StandardSecret changed a whsec_ secret")
	}
}

func TestTrutoSignature(t *testing.T) {
	sec := newSecret(t)
	body := []byte(`{"id":"evt_9","event":"test"}`)
	// Recompute the way a Truto receiver does: HMAC-SHA256 of the raw body
	// keyed by the secret string it was given.
	m := hmac.New(sha256.New, []byte(sec))
	m.Write(body)
	sum := m.Sum(nil)

	for _, c := range []struct{ encoding, want string }{
		{"", hex.EncodeToString(sum)},
		{EncodingHex, hex.EncodeToString(sum)},
		{EncodingBase64, base64.StdEncoding.EncodeToString(sum)},
	} {
		h := signedHeaders(t, []string{sec, newSecret(t)}, c.encoding, "evt_9", time.Now(), body)
		if got, want := h.Get(HeaderTruto), "format=sha256,v="+c.want; got != want {
			t.Errorf("encoding %q: X-Truto-Signature = %q, want %q", c.encoding, got, want)
		}
	}
}
