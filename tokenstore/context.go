package tokenstore

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/linkgate/linkgate/account"
)

// A context may hold values under secret-looking keys (account.IsSecretKey):
// applications put secrets there, and the API shows them redacted. So that
// a database dump shows none of them either, the stores keep such a context
// in two parts: the context column holds it redacted (what listings, which
// never decrypt, show anyway) and the sealed column holds it whole.

// sealedAccount is the plaintext of an account's sealed column: its
// credentials and, when its context holds a secret, the whole context. A
// blob sealed before contexts were kept there decodes with no context.
type sealedAccount struct {
	account.Credentials
	Context map[string]any `json:"sealed_context,omitempty"`
}

// accountSecrets returns the JSON of a's context column and the plaintext
// of its sealed column.
func accountSecrets(a *account.Account) (ctxJSON, sealed []byte, err error) {
	sa := sealedAccount{Credentials: a.Credentials}
	public := a.Context
	if account.HasSecret(a.Context) {
		sa.Context, public = a.Context, account.RedactContext(a.Context)
	}
	ctxJSON = []byte("{}")
	if public != nil {
		if ctxJSON, err = json.Marshal(public); err != nil {
			return nil, nil, fmt.Errorf("encoding context of account %s: %w", a.ID, err)
		}
	}
	if sealed, err = json.Marshal(sa); err != nil {
		return nil, nil, fmt.Errorf("encoding credentials of account %s: %w", a.ID, err)
	}
	return ctxJSON, sealed, nil
}

// openAccountSecrets sets a's credentials, and its whole context when the
// blob holds one, from the plaintext of its sealed column.
func openAccountSecrets(a *account.Account, pt []byte) error {
	var sa sealedAccount
	if err := json.Unmarshal(pt, &sa); err != nil {
		return fmt.Errorf("decoding credentials of account %s: %w", a.ID, err)
	}
	a.Credentials = sa.Credentials
	if sa.Context != nil {
		a.Context = sa.Context
	}
	return nil
}

// A link token's context column holds its context as a JSON object, or,
// when the context holds a secret, the context sealed: a JSON string of
// sealedContextPrefix and the base64 of the blob. The link token's hash is
// the associated data, so a blob opens in its own row only.
const sealedContextPrefix = "sealed:"

func linkContextAD(hash []byte) []byte {
	return append([]byte("link_tokens.context\x00"), hash...)
}

// encodeLinkContext returns the text of a link token's context column.
func encodeLinkContext(s *Sealer, hash []byte, ctx map[string]any) (string, error) {
	if ctx == nil {
		return "{}", nil
	}
	b, err := json.Marshal(ctx)
	if err != nil {
		return "", fmt.Errorf("encoding link token context: %w", err)
	}
	if !account.HasSecret(ctx) {
		return string(b), nil
	}
	blob, err := s.Seal(b, linkContextAD(hash))
	if err != nil {
		return "", fmt.Errorf("sealing link token context: %w", err)
	}
	q, _ := json.Marshal(sealedContextPrefix + base64.StdEncoding.EncodeToString(blob))
	return string(q), nil
}

// decodeLinkContext reads a link token's context column.
func decodeLinkContext(s *Sealer, hash []byte, col string) (map[string]any, error) {
	raw := []byte(col)
	if blob, ok, err := linkContextBlob(col); err != nil {
		return nil, err
	} else if ok {
		if raw, err = s.Open(blob, linkContextAD(hash)); err != nil {
			return nil, fmt.Errorf("link token context: %w", err)
		}
	}
	var ctx map[string]any
	if err := json.Unmarshal(raw, &ctx); err != nil {
		return nil, fmt.Errorf("decoding link token context: %w", err)
	}
	if len(ctx) == 0 {
		return nil, nil
	}
	return ctx, nil
}

// linkContextBlob returns the sealed blob of a context column, if it holds
// one.
func linkContextBlob(col string) ([]byte, bool, error) {
	if !strings.HasPrefix(col, `"`) {
		return nil, false, nil
	}
	var s string
	if err := json.Unmarshal([]byte(col), &s); err != nil || !strings.HasPrefix(s, sealedContextPrefix) {
		return nil, false, fmt.Errorf("decoding link token context: not an object or a sealed context")
	}
	blob, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, sealedContextPrefix))
	if err != nil {
		return nil, false, fmt.Errorf("decoding link token context: %w", err)
	}
	return blob, true, nil
}

// resealLinkContext re-seals a context column's blob under the first key;
// it reports false when the column holds no blob or one sealed with it.
func resealLinkContext(s *Sealer, hash []byte, col string) (string, bool, error) {
	blob, ok, err := linkContextBlob(col)
	if err != nil || !ok || s.sealedWithPrimary(blob) {
		return col, false, err
	}
	pt, err := s.Open(blob, linkContextAD(hash))
	if err != nil {
		return col, false, fmt.Errorf("link token context: %w", err)
	}
	nb, err := s.Seal(pt, linkContextAD(hash))
	if err != nil {
		return col, false, err
	}
	q, _ := json.Marshal(sealedContextPrefix + base64.StdEncoding.EncodeToString(nb))
	return string(q), true, nil
}
