package tokenstore

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

func mustKey(t testing.TB) []byte {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpenRoundTrip(t *testing.T) {
	s, err := NewSealer(mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	blob, err := s.Seal([]byte("secret-token"), []byte("acct_1"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, []byte("secret-token")) {
		t.Fatal("blob contains the plaintext")
	}
	if len(blob) != headerSize+len("secret-token")+16 {
		t.Fatalf("blob length %d", len(blob))
	}
	got, err := s.Open(blob, []byte("acct_1"))
	if err != nil || string(got) != "secret-token" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := s.Open(blob, []byte("acct_2")); err == nil {
		t.Fatal("opened with the wrong associated data")
	}
	blob[len(blob)-1] ^= 1
	if _, err := s.Open(blob, []byte("acct_1")); err == nil {
		t.Fatal("opened a tampered blob")
	}
	b2, _ := s.Seal([]byte("secret-token"), []byte("acct_1"))
	b3, _ := s.Seal([]byte("secret-token"), []byte("acct_1"))
	if bytes.Equal(b2, b3) {
		t.Fatal("two seals of one plaintext are equal: nonce reused")
	}
}

func TestSealerRotation(t *testing.T) {
	oldKey, newKey := mustKey(t), mustKey(t)
	old, _ := NewSealer(oldKey)
	blob, _ := old.Seal([]byte("v"), nil)
	rotated, err := NewSealer(newKey, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := rotated.Open(blob, nil); err != nil || string(got) != "v" {
		t.Fatalf("rotated Open = %q, %v", got, err)
	}
	if rotated.sealedWithPrimary(blob) {
		t.Fatal("old blob reported as sealed with the new key")
	}
	nb, _ := rotated.Seal([]byte("v"), nil)
	if !rotated.sealedWithPrimary(nb) {
		t.Fatal("new blob not sealed with the first key")
	}
	onlyNew, _ := NewSealer(newKey)
	_, err = onlyNew.Open(blob, nil)
	if err == nil || !strings.Contains(err.Error(), "sealed with a key that is not configured") {
		t.Fatalf("Open with a missing key: %v", err)
	}
	if strings.Contains(err.Error(), hex.EncodeToString(oldKey)) {
		t.Fatal("error names the key")
	}
}

func TestNewSealerRejects(t *testing.T) {
	if _, err := NewSealer(); err == nil {
		t.Fatal("no keys accepted")
	}
	if _, err := NewSealer(make([]byte, 16)); err == nil || !strings.Contains(err.Error(), "got 16 bytes") {
		t.Fatalf("short key: %v", err)
	}
	k := mustKey(t)
	if _, err := NewSealer(k, k); err == nil {
		t.Fatal("duplicate key accepted")
	}
}

func TestParseKey(t *testing.T) {
	k := mustKey(t)
	for name, s := range map[string]string{
		"std":        base64.StdEncoding.EncodeToString(k),
		"raw std":    base64.RawStdEncoding.EncodeToString(k),
		"url":        base64.URLEncoding.EncodeToString(k),
		"raw url":    base64.RawURLEncoding.EncodeToString(k),
		"hex":        hex.EncodeToString(k),
		"EncodeKey":  EncodeKey(k),
		"whitespace": " " + EncodeKey(k) + "\n",
	} {
		got, err := ParseKey(s)
		if err != nil || !bytes.Equal(got, k) {
			t.Errorf("%s: ParseKey = %x, %v", name, got, err)
		}
	}
	// A 16-character password is valid base64 of 12 bytes: the error must
	// speak of the 16 characters the operator wrote, and say how to make a key.
	_, err := ParseKey("0123456789abcdef")
	if err == nil || !strings.Contains(err.Error(), "got 16 characters") || !strings.Contains(err.Error(), "openssl rand -base64 32") {
		t.Fatalf("16-character key error: %v", err)
	}
	for _, bad := range []string{"", "not a key!!"} {
		if _, err := ParseKey(bad); err == nil || !strings.Contains(err.Error(), KeyHelp) {
			t.Errorf("ParseKey(%q) error %v does not say how to generate a key", bad, err)
		}
	}
	for _, bad := range []string{"", "not a key!!", "zz" + strings.Repeat("0", 62)} {
		_, err := ParseKey(bad)
		if err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
			continue
		}
		if bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("error echoes the key: %v", err)
		}
	}
}
