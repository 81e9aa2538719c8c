package tokenstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/linkgate/linkgate/account"
)

// CreateLinkToken stores a link token (ErrExists if its hash is taken).
func (p *Postgres) CreateLinkToken(ctx context.Context, lt *LinkToken) error {
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
	cx, err := encodeLinkContext(p.sealer, lt.Hash, lt.Context)
	if err != nil {
		return err
	}
	created := lt.CreatedAt
	if created.IsZero() {
		created = p.now().UTC()
	}
	_, err = p.pool.Exec(ctx, `INSERT INTO link_tokens (hash, account_id, tenant_id, integration, redirect_uri,
		scopes, context, persist_previous_context, created_at, expires_at, used_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		lt.Hash, lt.AccountID, lt.TenantID, lt.Integration, lt.RedirectURI, string(sc), string(cx),
		lt.PersistPreviousContext, nanos(created), nanos(lt.ExpiresAt), nanos(lt.UsedAt))
	if pgUniqueViolation(err) {
		return fmt.Errorf("creating link token: %w", ErrExists)
	}
	if err != nil {
		return storeErr("creating link token", err)
	}
	lt.CreatedAt = created
	return nil
}

// GetLinkToken reads a link token by the hash of its value.
func (p *Postgres) GetLinkToken(ctx context.Context, hash []byte) (*LinkToken, error) {
	var (
		lt                     = LinkToken{Hash: append([]byte(nil), hash...)}
		sc, cx                 string
		created, expires, used int64
	)
	err := p.pool.QueryRow(ctx, `SELECT account_id, tenant_id, integration, redirect_uri, scopes, context,
		persist_previous_context, created_at, expires_at, used_at FROM link_tokens WHERE hash = $1`, hash).
		Scan(&lt.AccountID, &lt.TenantID, &lt.Integration, &lt.RedirectURI, &sc, &cx, &lt.PersistPreviousContext,
			&created, &expires, &used)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("link token: %w", ErrNotFound)
	}
	if err != nil {
		return nil, storeErr("reading link token", err)
	}
	if err := json.Unmarshal([]byte(sc), &lt.Scopes); err != nil {
		return nil, fmt.Errorf("decoding link token scopes: %w", err)
	}
	if lt.Context, err = decodeLinkContext(p.sealer, lt.Hash, cx); err != nil {
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

// CreateConnectState stores an OAuth state; its verifier is sealed with the
// state hash as associated data. The link token must exist (ErrNotFound).
// Only the link token's newest ConnectStatesPerLinkToken states are kept.
func (p *Postgres) CreateConnectState(ctx context.Context, cs *ConnectState) error {
	if len(cs.Hash) == 0 {
		return errors.New("creating connect state: empty hash")
	}
	sealed, err := p.sealer.Seal(connectSecret(cs), cs.Hash)
	if err != nil {
		return fmt.Errorf("sealing connect state: %w", err)
	}
	return p.write(ctx, "creating connect state", func(tx pgx.Tx) error {
		// The link token's row lock orders the states of one link token,
		// so that concurrent creations cannot each miss the other's state
		// when they trim.
		var one int
		err := tx.QueryRow(ctx, "SELECT 1 FROM link_tokens WHERE hash = $1 FOR NO KEY UPDATE", cs.LinkTokenHash).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("creating connect state: link token: %w", ErrNotFound)
		}
		if err != nil {
			return storeErr("creating connect state", err)
		}
		_, err = tx.Exec(ctx, `INSERT INTO connect_states (hash, link_token_hash, verifier, redirect_uri, expires_at, integration)
			VALUES ($1, $2, $3, $4, $5, $6)`, cs.Hash, cs.LinkTokenHash, sealed, cs.RedirectURI, nanos(cs.ExpiresAt), cs.Integration)
		switch {
		case pgUniqueViolation(err):
			return fmt.Errorf("creating connect state: %w", ErrExists)
		case pgForeignKeyViolation(err):
			return fmt.Errorf("creating connect state: link token: %w", ErrNotFound)
		case err != nil:
			return storeErr("creating connect state", err)
		}
		if _, err := tx.Exec(ctx, trimConnectStates, cs.LinkTokenHash, cs.Hash, ConnectStatesPerLinkToken); err != nil {
			return storeErr("trimming connect states", err)
		}
		return nil
	})
}

// TakeConnectState reads and deletes a state in one statement: of two
// callers exactly one gets it. An expired state is returned too (and gone);
// the caller checks ExpiresAt.
func (p *Postgres) TakeConnectState(ctx context.Context, hash []byte) (*ConnectState, error) {
	var (
		cs      = ConnectState{Hash: append([]byte(nil), hash...)}
		sealed  []byte
		expires int64
	)
	err := p.pool.QueryRow(ctx, `DELETE FROM connect_states WHERE hash = $1
		RETURNING link_token_hash, verifier, redirect_uri, expires_at, integration`, hash).
		Scan(&cs.LinkTokenHash, &sealed, &cs.RedirectURI, &expires, &cs.Integration)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("connect state: %w", ErrNotFound)
	}
	if err != nil {
		return nil, storeErr("taking connect state", err)
	}
	v, err := p.sealer.Open(sealed, hash)
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
// in one transaction: if the account write fails the token stays unused. Of
// two callers with one token, the second waits on the first's row lock and
// then finds the token used.
func (p *Postgres) CompleteLink(ctx context.Context, linkTokenHash []byte, a *account.Account, create bool, events []Event) error {
	var commit func()
	err := p.write(ctx, "completing link", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "UPDATE link_tokens SET used_at = $1 WHERE hash = $2 AND used_at = 0",
			p.now().UnixNano(), linkTokenHash)
		if err != nil {
			return storeErr("completing link", err)
		}
		if tag.RowsAffected() == 0 {
			var one int
			err := tx.QueryRow(ctx, "SELECT 1 FROM link_tokens WHERE hash = $1", linkTokenHash).Scan(&one)
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("completing link: link token: %w", ErrNotFound)
			}
			if err != nil {
				return storeErr("completing link", err)
			}
			return fmt.Errorf("completing link: link token: %w", ErrUsed)
		}
		if create {
			commit, err = p.createAccount(ctx, tx, a, events)
			return err
		}
		next, err := p.updateAccount(ctx, tx, a, events)
		commit = func() { a.Version = next }
		return err
	})
	if err != nil {
		return err
	}
	commit()
	return nil
}
