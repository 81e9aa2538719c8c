package tokenstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the length of an encryption key: AES-256.
const KeySize = 32

const (
	sealVersion = 1
	keyIDSize   = 4
	nonceSize   = 12
	headerSize  = 1 + keyIDSize + nonceSize
	// keyIDPrefix separates the key id hash from any other use of the key,
	// so that the id published in every blob says nothing else about it.
	keyIDPrefix = "linkgate tokenstore key id v1\x00"
)

// Sealer encrypts secrets at rest with AES-256-GCM. Several keys may be
// configured so that keys can be rotated: the first seals, all open.
type Sealer struct {
	primary uint32
	aeads   map[uint32]cipher.AEAD
}

// NewSealer returns a Sealer for keys, each exactly 32 bytes. The first key
// seals; every key opens blobs sealed with it.
func NewSealer(keys ...[]byte) (*Sealer, error) {
	if len(keys) == 0 {
		return nil, errors.New("at least one encryption key is required")
	}
	s := &Sealer{aeads: make(map[uint32]cipher.AEAD, len(keys))}
	for i, k := range keys {
		if len(k) != KeySize {
			return nil, fmt.Errorf("encryption key %d must be %d bytes; got %d bytes", i+1, KeySize, len(k))
		}
		id := keyID(k)
		if _, dup := s.aeads[id]; dup {
			return nil, fmt.Errorf("encryption key %d is configured twice", i+1)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("encryption key %d: %w", i+1, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("encryption key %d: %w", i+1, err)
		}
		s.aeads[id] = aead
		if i == 0 {
			s.primary = id
		}
	}
	return s, nil
}

func keyID(k []byte) uint32 {
	h := sha256.New()
	h.Write([]byte(keyIDPrefix))
	h.Write(k)
	return binary.BigEndian.Uint32(h.Sum(nil)[:keyIDSize])
}

// KeyHelp says how to make a key, for the errors about one.
const KeyHelp = "generate one with: openssl rand -base64 32"

// ParseKey decodes a 32-byte key written as standard or URL-safe base64
// (padded or not) or as 64 hex digits. Its errors never repeat the input,
// and say how to generate a key.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("encryption key is empty: " + KeyHelp)
	}
	if len(s) == 2*KeySize {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(b) != KeySize {
			// A password-like key ("0123456789abcdef") is valid base64 of
			// fewer bytes: say so, rather than leave the reader to wonder
			// where 12 bytes came from.
			return nil, fmt.Errorf("encryption key must be %d random bytes written as 44 base64 characters or 64 hex digits; got %d characters, which read as base64 are %d bytes: %s", KeySize, len(s), len(b), KeyHelp)
		}
		return b, nil
	}
	return nil, fmt.Errorf("encryption key must be %d random bytes written as 44 base64 characters or 64 hex digits; got %d characters that are neither: %s", KeySize, len(s), KeyHelp)
}

// GenerateKey returns a new random key.
func GenerateKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generating encryption key: %w", err)
	}
	return k, nil
}

// EncodeKey writes a key as standard base64, the form ParseKey reads back.
func EncodeKey(k []byte) string { return base64.StdEncoding.EncodeToString(k) }

// Seal encrypts plaintext with the first key. ad is bound to the blob: Open
// fails unless given the same ad, so a blob copied to another row is useless.
func (s *Sealer) Seal(plaintext, ad []byte) ([]byte, error) {
	aead := s.aeads[s.primary]
	out := make([]byte, headerSize, headerSize+len(plaintext)+aead.Overhead())
	out[0] = sealVersion
	binary.BigEndian.PutUint32(out[1:], s.primary)
	if _, err := rand.Read(out[1+keyIDSize : headerSize]); err != nil {
		return nil, fmt.Errorf("sealing: reading nonce: %w", err)
	}
	return aead.Seal(out, out[1+keyIDSize:headerSize], plaintext, sealAD(out[:1+keyIDSize], ad)), nil
}

// Open decrypts a blob made by Seal with any configured key.
func (s *Sealer) Open(blob, ad []byte) ([]byte, error) {
	if len(blob) < headerSize {
		return nil, errors.New("opening sealed value: too short")
	}
	if blob[0] != sealVersion {
		return nil, fmt.Errorf("opening sealed value: unknown format version %d", blob[0])
	}
	id := binary.BigEndian.Uint32(blob[1:])
	aead, ok := s.aeads[id]
	if !ok {
		return nil, &KeyError{KeyID: formatKeyID(id), reason: fmt.Sprintf("sealed with a key that is not configured (key id %s)", formatKeyID(id))}
	}
	pt, err := aead.Open(nil, blob[1+keyIDSize:headerSize], blob[headerSize:], sealAD(blob[:1+keyIDSize], ad))
	if err != nil {
		return nil, &KeyError{KeyID: formatKeyID(id), reason: "authentication failed (corrupted, or sealed for another record)"}
	}
	return pt, nil
}

// sealedWithPrimary reports whether blob was sealed with the first key, so
// Reseal can skip it.
func (s *Sealer) sealedWithPrimary(blob []byte) bool {
	return len(blob) >= headerSize && blob[0] == sealVersion && binary.BigEndian.Uint32(blob[1:]) == s.primary
}

// sealAD authenticates the header along with the caller's associated data so
// that the version and key id cannot be swapped.
func sealAD(header, ad []byte) []byte {
	out := make([]byte, 0, len(header)+len(ad))
	return append(append(out, header...), ad...)
}
