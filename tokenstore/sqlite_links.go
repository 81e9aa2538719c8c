package tokenstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/linkgate/linkgate/account"
)

// CreateLinkToken stores a link token (ErrExists if its hash is taken).
func (s *SQLite) CreateLinkToken(ctx context.Context, lt *LinkToken) error {
	if len(lt.Hash) == 0 {
		return errors.New("creating link token: empty hash")
	}
	scopes := lt.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	sc, err := json.Marshal(scopes)
	if err != nil {
		return fmt.Errorf("encoding link token scopes: %w", err)
	}
	cx, err := encodeLinkContext(s.sealer, lt.Hash, lt.Context)
	if err != nil {
		return err
	}
	created := lt.CreatedAt
	if created.IsZero() {
		created = s.now().UTC()
	}
	return s.write(ctx, "creating link token", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO link_tokens (hash, account_id, tenant_id, integration, redirect_uri,
			scopes, context, persist_previous_context, created_at, expires_at, used_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			lt.Hash, lt.AccountID, lt.TenantID, lt.Integration, lt.RedirectURI, string(sc), string(cx),
			lt.PersistPreviousContext, nanos(created), nanos(lt.ExpiresAt), nanos(lt.UsedAt))
		if isUniqueViolation(err) {
			return fmt.Errorf("creating link token: %w", ErrExists)
		}
		if err != nil {
			return storeErr("creating link token", err)
		}
		lt.CreatedAt = created
		return nil
	})
}

// GetLinkToken reads a link token by the hash of its value.
func (s *SQLite) GetLinkToken(ctx context.Context, hash []byte) (*LinkToken, error) {
	var (
		lt                     = LinkToken{Hash: append([]byte(nil), hash...)}
		sc, cx                 string
		created, expires, used int64
	)
	err := s.r.QueryRowContext(ctx, `SELECT account_id, tenant_id, integration, redirect_uri, scopes, context,
		persist_previous_context, created_at, expires_at, used_at FROM link_tokens WHERE hash = ?`, hash).
		Scan(&lt.AccountID, &lt.TenantID, &lt.Integration, &lt.RedirectURI, &sc, &cx, &lt.PersistPreviousContext,
			&created, &expires, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("link token: %w", ErrNotFound)
	}
	if err != nil {
		return nil, storeErr("reading link token", err)
	}
	if err := json.Unmarshal([]byte(sc), &lt.Scopes); err != nil {
		return nil, fmt.Errorf("decoding link token scopes: %w", err)
	}
	if lt.Context, err = decodeLinkContext(s.sealer, lt.Hash, cx); err != nil {
		return nil, err
	}
	if len(lt.Scopes) == 0 {
		lt.Scopes = nil
	}
	if len(lt.Context) == 0 {
		lt.Context = nil
	}
	lt.CreatedAt, lt.ExpiresAt, lt.UsedAt = fromNanos(created), fromNanos(expires), fromNanos(used)
	return &lt, nil
}

// trimConnectStates deletes a link token's states beyond the newest
// ConnectStatesPerLinkToken, keeping the state just created (keep) and the
// ones that expire last. SQLite and PostgreSQL run it as written.
const trimConnectStates = `DELETE FROM connect_states WHERE link_token_hash = $1 AND hash NOT IN (
	SELECT hash FROM connect_states WHERE link_token_hash = $1
	ORDER BY hash = $2 DESC, expires_at DESC, hash DESC LIMIT $3)`

// CreateConnectState stores an OAuth state; its verifier is sealed with the
// state hash as associated data. The link token must exist (ErrNotFound).
// Only the link token's newest ConnectStatesPerLinkToken states are kept.
func (s *SQLite) CreateConnectState(ctx context.Context, cs *ConnectState) error {
	if len(cs.Hash) == 0 {
		return errors.New("creating connect state: empty hash")
	}
	sealed, err := s.sealer.Seal(connectSecret(cs), cs.Hash)
	if err != nil {
		return fmt.Errorf("sealing connect state: %w", err)
	}
	return s.write(ctx, "creating connect state", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO connect_states (hash, link_token_hash, verifier, redirect_uri, expires_at, integration)
			VALUES (?, ?, ?, ?, ?, ?)`, cs.Hash, cs.LinkTokenHash, sealed, cs.RedirectURI, nanos(cs.ExpiresAt), cs.Integration)
		switch {
		case isUniqueViolation(err):
			return fmt.Errorf("creating connect state: %w", ErrExists)
		case isForeignKeyViolation(err):
			return fmt.Errorf("creating connect state: link token: %w", ErrNotFound)
		case err != nil:
			return storeErr("creating connect state", err)
		}
		// SQLite has one writer at a time: the trim sees every state.
		if _, err := tx.ExecContext(ctx, trimConnectStates, cs.LinkTokenHash, cs.Hash, ConnectStatesPerLinkToken); err != nil {
			return storeErr("trimming connect states", err)
		}
		return nil
	})
}

// TakeConnectState reads and deletes a state in one statement: of two
// callers exactly one gets it. An expired state is returned too (and gone);
// the caller checks ExpiresAt.
func (s *SQLite) TakeConnectState(ctx context.Context, hash []byte) (*ConnectState, error) {
	var (
		cs      = ConnectState{Hash: append([]byte(nil), hash...)}
		sealed  []byte
		expires int64
	)
	err := s.write(ctx, "taking connect state", func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `DELETE FROM connect_states WHERE hash = ?
			RETURNING link_token_hash, verifier, redirect_uri, expires_at, integration`, hash).
			Scan(&cs.LinkTokenHash, &sealed, &cs.RedirectURI, &expires, &cs.Integration)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("connect state: %w", ErrNotFound)
		}
		if err != nil {
			return storeErr("taking connect state", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	v, err := s.sealer.Open(sealed, hash)
	if err != nil {
		return nil, fmt.Errorf("connect state verifier: %w", err)
	}
	if err := openConnectSecret(&cs, v); err != nil {
		return nil, err
	}
	cs.ExpiresAt = fromNanos(expires)
	return &cs, nil
}

// CompleteLink marks the link token used (ErrUsed if it already was,
// ErrNotFound if there is none) and creates or updates a with its events, all
// in one transaction: if the account write fails the token stays unused.
func (s *SQLite) CompleteLink(ctx context.Context, linkTokenHash []byte, a *account.Account, create bool, events []Event) error {
	var commit func()
	err := s.write(ctx, "completing link", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE link_tokens SET used_at = ? WHERE hash = ? AND used_at = 0",
			s.now().UnixNano(), linkTokenHash)
		if err != nil {
			return storeErr("completing link", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			var one int
			err := tx.QueryRowContext(ctx, "SELECT 1 FROM link_tokens WHERE hash = ?", linkTokenHash).Scan(&one)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("completing link: link token: %w", ErrNotFound)
			}
			if err != nil {
				return storeErr("completing link", err)
			}
			return fmt.Errorf("completing link: link token: %w", ErrUsed)
		}
		if create {
			commit, err = s.createAccount(ctx, tx, a, events)
			return err
		}
		next, err := s.updateAccount(ctx, tx, a, events)
		commit = func() { a.Version = next }
		return err
	})
	if err != nil {
		return err
	}
	commit()
	return nil
}
