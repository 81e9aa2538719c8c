package tokenstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// keyedMutex is a set of mutexes, one per key, that exist only while someone
// holds or waits for them, and whose Lock gives up when ctx ends.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	ch   chan struct{}
	refs int
}

// Lock takes the mutex of key, or returns ctx's error; on success the
// returned func releases it.
func (k *keyedMutex) Lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = make(map[string]*keyedEntry)
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{ch: make(chan struct{}, 1)}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()

	select {
	case e.ch <- struct{}{}:
		return func() {
			<-e.ch
			k.drop(key, e)
		}, nil
	case <-ctx.Done():
		k.drop(key, e)
		return nil, ctx.Err()
	}
}

func (k *keyedMutex) drop(key string, e *keyedEntry) {
	k.mu.Lock()
	e.refs--
	if e.refs == 0 {
		delete(k.m, key)
	}
	k.mu.Unlock()
}

// WithRefreshLock runs fn while holding the refresh lock of account id. In
// this process the lock is a mutex per account; across processes sharing the
// file it is a row in refresh_locks with a lease that is renewed while fn
// runs. The row names its owner's process (see lockowner.go): a row whose
// process has died is taken over at once; one whose owner cannot be judged
// frees the account when its lease runs out. The
// caller's ctx bounds only the wait: fn runs on a context that ctx does not
// cancel, because a refresh abandoned half way can lose the only copy of a
// rotated refresh token.
func (s *SQLite) WithRefreshLock(ctx context.Context, id string, fn func(ctx context.Context) error) error {
	unlock, err := s.locks.Lock(ctx, id)
	if err != nil {
		return fmt.Errorf("waiting for the refresh lock of account %s: %w", id, err)
	}
	defer unlock()

	owner := newLockOwner()
	for {
		ok, err := s.tryLockRow(ctx, id, owner)
		if err != nil {
			return fmt.Errorf("taking the refresh lock of account %s: %w", id, err)
		}
		if ok {
			break
		}
		t := time.NewTimer(s.lockPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for the refresh lock of account %s: %w", id, ctx.Err())
		case <-t.C:
		}
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := time.NewTicker(s.lockLease / 3)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				// A failed renewal is retried on the next tick; the lease
				// covers two missed ticks.
				_, _ = s.w.ExecContext(runCtx, "UPDATE refresh_locks SET lease_until = ? WHERE account_id = ? AND owner = ?",
					s.now().Add(s.lockLease).UnixNano(), id, owner)
			}
		}
	}()
	defer func() {
		cancel()
		<-renewed
		// Released on a context of its own: the caller may be gone, and a
		// row left behind would block other processes for a whole lease.
		relCtx, relCancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer relCancel()
		_, _ = s.w.ExecContext(relCtx, "DELETE FROM refresh_locks WHERE account_id = ? AND owner = ?", id, owner)
	}()
	return fn(runCtx)
}

// tryLockRow takes the lock row of id for owner if it is free, its lease
// has run out or its owner process has died.
func (s *SQLite) tryLockRow(ctx context.Context, id, owner string) (bool, error) {
	var took bool
	err := s.write(ctx, "taking refresh lock", func(tx *sql.Tx) error {
		now := s.now()
		var held string
		err := tx.QueryRowContext(ctx, "SELECT owner FROM refresh_locks WHERE account_id = ? AND lease_until >= ?", id, now.UnixNano()).Scan(&held)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return storeErr("taking refresh lock", err)
		case ownerDead(held):
			// A killed process left its row: the account need not wait
			// for the lease (up to 30 s of failed requests) to run out.
			if _, err := tx.ExecContext(ctx, "DELETE FROM refresh_locks WHERE account_id = ? AND owner = ?", id, held); err != nil {
				return storeErr("taking refresh lock", err)
			}
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO refresh_locks (account_id, owner, lease_until) VALUES (?, ?, ?)
			ON CONFLICT (account_id) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until
			WHERE refresh_locks.lease_until < ?`,
			id, owner, now.Add(s.lockLease).UnixNano(), now.UnixNano())
		if err != nil {
			return storeErr("taking refresh lock", err)
		}
		n, _ := res.RowsAffected()
		took = n == 1
		return nil
	})
	return took, err
}

// dropDeadLocks deletes the refresh lock rows of processes that have died,
// so that accounts a crashed instance was refreshing are free at start.
func (s *SQLite) dropDeadLocks(ctx context.Context) error {
	rows, err := s.r.QueryContext(ctx, "SELECT account_id, owner FROM refresh_locks")
	if err != nil {
		return storeErr("reading refresh locks", err)
	}
	type row struct{ id, owner string }
	var dead []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.owner); err != nil {
			rows.Close()
			return storeErr("reading refresh locks", err)
		}
		if ownerDead(r.owner) {
			dead = append(dead, r)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return storeErr("reading refresh locks", err)
	}
	for _, r := range dead {
		if _, err := s.w.ExecContext(ctx, "DELETE FROM refresh_locks WHERE account_id = ? AND owner = ?", r.id, r.owner); err != nil {
			return storeErr("dropping a dead process's refresh lock", err)
		}
	}
	return nil
}
