package tokenstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ErrUndecryptable marks a sealed secret that no configured key opens:
// the configuration lacks the key that sealed it, or the value is damaged.
// It is never a store outage.
var ErrUndecryptable = errors.New("cannot be decrypted with the configured encryption keys")

// KeyError is a sealed secret that could not be opened, with the id of the
// key that sealed it (not a secret: every sealed value carries it).
type KeyError struct {
	// KeyID is the id of the key that sealed the value, 8 hex digits.
	KeyID  string
	reason string
}

func (e *KeyError) Error() string { return "opening sealed value: " + e.reason }

// Unwrap makes a KeyError an ErrUndecryptable.
func (e *KeyError) Unwrap() error { return ErrUndecryptable }

// KeyCheck is what CheckKeys found.
type KeyCheck struct {
	// Missing are the ids of keys that sealed secrets in the store and
	// are not configured, 8 hex digits each.
	Missing []string
	// Matched are the ids of configured keys that sealed secrets in the
	// store (the first key among them once the check has passed).
	Matched []string
}

// keyCheckPlaintext is what each key's check value holds.
var keyCheckPlaintext = []byte("linkgate encryption key check v1")

// formatKeyID writes a key id as ParseKey's errors and logs do.
func formatKeyID(id uint32) string { return fmt.Sprintf("%08x", id) }

// PrimaryKeyID is the id of the key that seals, 8 hex digits.
func (s *Sealer) PrimaryKeyID() string { return formatKeyID(s.primary) }

// KeyIDs are the ids of the configured keys, first the one that seals.
func (s *Sealer) KeyIDs() []string {
	out := []string{formatKeyID(s.primary)}
	for id := range s.aeads {
		if id != s.primary {
			out = append(out, formatKeyID(id))
		}
	}
	return out
}

// sealKeyRow is one row of the seal_keys table.
type sealKeyRow struct{ id, check []byte }

// judge compares the stored key rows with the configured keys: a stored key
// id that is not configured is missing; a configured one must open its
// check value, else the store (or the key id) is not what it claims.
func (s *Sealer) judge(rows []sealKeyRow) (KeyCheck, error) {
	var kc KeyCheck
	for _, r := range rows {
		if len(r.id) != keyIDSize {
			continue
		}
		id := binary.BigEndian.Uint32(r.id)
		if _, ok := s.aeads[id]; !ok {
			kc.Missing = append(kc.Missing, formatKeyID(id))
			continue
		}
		kc.Matched = append(kc.Matched, formatKeyID(id))
		if r.check == nil {
			continue
		}
		if pt, err := s.openWith(id, r.check, r.id); err != nil || !bytes.Equal(pt, keyCheckPlaintext) {
			return kc, fmt.Errorf("checking encryption key %s: the configured key with that id does not open the value it sealed in this store", formatKeyID(id))
		}
	}
	return kc, nil
}

// openWith opens a blob that must have been sealed with key id.
func (s *Sealer) openWith(id uint32, blob, ad []byte) ([]byte, error) {
	if len(blob) < headerSize || binary.BigEndian.Uint32(blob[1:]) != id {
		return nil, errors.New("not sealed with that key")
	}
	return s.Open(blob, ad)
}

// primaryCheck returns the id of the sealing key and a check value sealed
// with it.
func (s *Sealer) primaryCheck() ([]byte, []byte, error) {
	id := binary.BigEndian.AppendUint32(nil, s.primary)
	v, err := s.Seal(keyCheckPlaintext, id)
	return id, v, err
}

// KeyChecker is a store that records which keys sealed its secrets.
type KeyChecker interface {
	// CheckKeys compares the keys that sealed secrets in the store with
	// the configured ones. When none is missing it records the sealing
	// key, so that a store later opened without it names it; when one is
	// missing it changes nothing, so that a wrong key is not recorded.
	CheckKeys(ctx context.Context) (KeyCheck, error)
}

// CheckKeys implements KeyChecker.
func (s *SQLite) CheckKeys(ctx context.Context) (KeyCheck, error) {
	var kc KeyCheck
	err := s.write(ctx, "checking the encryption keys", func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, "SELECT key_id, check_value FROM seal_keys")
		if err != nil {
			return storeErr("checking the encryption keys", err)
		}
		stored, err := collect(rows, "checking the encryption keys", scanSealKey)
		rows.Close()
		if err != nil {
			return err
		}
		if kc, err = s.sealer.judge(stored); err != nil || len(kc.Missing) > 0 && len(kc.Matched) == 0 {
			return err
		}
		return s.recordPrimaryKey(ctx, tx, false)
	})
	return kc, err
}

// recordPrimaryKey records the sealing key with its check value; after a
// re-seal (only) it forgets every other key, since nothing is sealed with
// them any more.
func (s *SQLite) recordPrimaryKey(ctx context.Context, tx *sql.Tx, forgetOthers bool) error {
	id, v, err := s.sealer.primaryCheck()
	if err != nil {
		return err
	}
	if forgetOthers {
		if _, err := tx.ExecContext(ctx, "DELETE FROM seal_keys WHERE key_id <> ?", id); err != nil {
			return storeErr("recording the encryption key", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO seal_keys (key_id, check_value) VALUES (?, ?)
		ON CONFLICT (key_id) DO UPDATE SET check_value = excluded.check_value WHERE seal_keys.check_value IS NULL`, id, v); err != nil {
		return storeErr("recording the encryption key", err)
	}
	return nil
}

// CheckKeys implements KeyChecker.
func (p *Postgres) CheckKeys(ctx context.Context) (KeyCheck, error) {
	var kc KeyCheck
	err := p.write(ctx, "checking the encryption keys", func(tx pgx.Tx) error {
		// Two instances starting at once check one after the other.
		if _, err := tx.Exec(ctx, "LOCK TABLE seal_keys IN SHARE ROW EXCLUSIVE MODE"); err != nil {
			return storeErr("checking the encryption keys", err)
		}
		rows, err := tx.Query(ctx, "SELECT key_id, check_value FROM seal_keys")
		if err != nil {
			return storeErr("checking the encryption keys", err)
		}
		stored, err := collect(rows, "checking the encryption keys", scanSealKey)
		rows.Close()
		if err != nil {
			return err
		}
		if kc, err = p.sealer.judge(stored); err != nil || len(kc.Missing) > 0 && len(kc.Matched) == 0 {
			return err
		}
		return p.recordPrimaryKey(ctx, tx, false)
	})
	return kc, err
}

// recordPrimaryKey is SQLite.recordPrimaryKey for PostgreSQL.
func (p *Postgres) recordPrimaryKey(ctx context.Context, tx pgx.Tx, forgetOthers bool) error {
	id, v, err := p.sealer.primaryCheck()
	if err != nil {
		return err
	}
	if forgetOthers {
		if _, err := tx.Exec(ctx, "DELETE FROM seal_keys WHERE key_id <> $1", id); err != nil {
			return storeErr("recording the encryption key", err)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO seal_keys (key_id, check_value) VALUES ($1, $2)
		ON CONFLICT (key_id) DO UPDATE SET check_value = excluded.check_value WHERE seal_keys.check_value IS NULL`, id, v); err != nil {
		return storeErr("recording the encryption key", err)
	}
	return nil
}

var (
	_ KeyChecker = (*SQLite)(nil)
	_ KeyChecker = (*Postgres)(nil)
)

func scanSealKey(r rowScanner) (sealKeyRow, error) {
	var k sealKeyRow
	return k, r.Scan(&k.id, &k.check)
}
