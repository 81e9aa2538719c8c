package tokenstore

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
)

// Listener timing: how long a reconnect waits at first and at most, and how
// far before the moment it noticed a lost connection a catch-up looks for
// changed accounts.
const (
	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 5 * time.Second
	// listenCatchUp covers changes made between the real drop and its
	// detection, however late that was: it is at least the cache's TTL cap,
	// and an entry cached before a change older than the cap has expired
	// anyway.
	listenCatchUp = 2 * DefaultTTLCap
	// listenKeepAlive bounds how long a silently dead listener connection
	// (a network partition, not a server restart) goes unnoticed.
	listenKeepAlive = 10 * time.Second
)

// ListenerApplicationName is the application_name of the connection Listen
// holds, as pg_stat_activity shows it, when the DSN names no application;
// when it does, the listener's name is that name and " cache listener".
const ListenerApplicationName = "linkgate cache listener"

// Listen keeps this instance's cache coherent with the other instances'
// writes: it holds one connection LISTENing on the accounts channel and
// calls invalidate with the id of every account any instance changes or
// deletes, as soon as the change commits. It calls onLost(false) once
// LISTEN is in place. When that connection drops it calls onLost(true)
// (notifications may now be missed, so the caller should cache for less
// time), reconnects with backoff, invalidates every account changed or
// deleted while it was away, and then calls onLost(false) again. A first
// connection that cannot be made counts as lost too.
//
// Listen blocks until ctx ends or the store is closed; run it in its own
// goroutine. invalidate and onLost are called from that goroutine only.
func (p *Postgres) Listen(ctx context.Context, invalidate func(id string), onLost func(lost bool)) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.closed:
			cancel()
		case <-ctx.Done():
		}
	}()

	var (
		lost    bool
		lostAt  time.Time
		backoff = listenBackoffMin
	)
	markLost := func() {
		if !lost {
			lost, lostAt = true, time.Now()
			onLost(true)
		}
	}
	for ctx.Err() == nil {
		conn, err := p.listenConn(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			markLost()
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, listenBackoffMax)
			continue
		}
		backoff = listenBackoffMin
		if !lost {
			onLost(false)
		} else {
			// LISTEN is in place before the catch-up reads, so a change
			// commits either before the read (and is caught up) or after
			// LISTEN (and is notified).
			if err := catchUp(ctx, conn, time.Since(lostAt)+listenCatchUp, invalidate); err != nil {
				conn.Close(context.WithoutCancel(ctx))
				if !sleepCtx(ctx, backoff) {
					return
				}
				continue
			}
			lost = false
			onLost(false)
		}
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				break
			}
			invalidate(n.Payload)
		}
		closeCtx, closeCancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		conn.Close(closeCtx)
		closeCancel()
		if ctx.Err() != nil {
			return
		}
		markLost()
	}
}

// listenConn opens a connection of its own (not the pool's: it is held for
// as long as the store lives) and LISTENs on the accounts channel.
func (p *Postgres) listenConn(ctx context.Context) (*pgx.Conn, error) {
	cfg := p.pool.Config().ConnConfig.Copy()
	// Named, so that an operator can tell it from the pool's connections.
	name := ListenerApplicationName
	if app := cfg.RuntimeParams["application_name"]; app != "" {
		name = app + " cache listener"
	}
	cfg.RuntimeParams["application_name"] = name
	d := &net.Dialer{KeepAlive: listenKeepAlive, Timeout: cfg.ConnectTimeout}
	cfg.DialFunc = d.DialContext
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, storeErr("connecting the cache listener", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+accountsChannel); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, storeErr("listening for account changes", err)
	}
	return conn, nil
}

// catchUp invalidates every account changed or deleted in the last window
// of the database's own clock.
func catchUp(ctx context.Context, conn *pgx.Conn, window time.Duration, invalidate func(id string)) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rows, err := conn.Query(ctx, `SELECT id FROM accounts WHERE changed_at >= now() - $1::interval
		UNION SELECT id FROM account_tombstones WHERE deleted_at >= now() - $1::interval`,
		fmt.Sprintf("%d microseconds", window.Microseconds()))
	if err != nil {
		return storeErr("reading accounts changed while the cache listener was away", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return storeErr("reading accounts changed while the cache listener was away", err)
	}
	for _, id := range ids {
		invalidate(id)
	}
	return nil
}

// sleepCtx waits for d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
