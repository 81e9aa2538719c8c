package linkgate

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/linkgate/linkgate/refresh"
	"github.com/linkgate/linkgate/tokenstore"
)

// storeHolder opens the store on first use and closes it when the last
// config that uses it is cleaned up.
type storeHolder struct {
	cfg       StorageConfig
	keys      [][]byte
	cacheSize int64

	mu          sync.Mutex
	store       *tokenstore.Cached
	stopListen  func()
	stopJanitor func()
	// journal keeps token calls and their answers durable on local disk
	// (see refresh.Journal); nil when it could not be opened.
	journal *refresh.Journal
	// inUse are the keys the open store seals with: the configured ones,
	// or the generated one.
	inUse [][]byte
	// missingKeys are the ids of keys that sealed secrets in the store and
	// are not configured (their accounts' calls fail), for the readiness
	// answer.
	missingKeys []string
	// listener is the state of the PostgreSQL change listener:
	// listenerUnused for SQLite.
	listener atomic.Int32
	// bulk is held by the one bulk import or bulk delete of the API that
	// may run at a time on this store (in this process, across config
	// reloads): each writes for seconds, and SQLite has one writer, so
	// callers that ran them side by side would take every write slot from
	// the proxy's refreshes and the connect flow.
	bulk sync.Mutex
}

// The states of storeHolder.listener.
const (
	listenerUnused int32 = iota
	listenerDown
	listenerUp
)

// missingKeyIDs returns the ids of the keys the open store lacks.
func (h *storeHolder) missingKeyIDs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.missingKeys
}

// missingKeysMessage says which keys sealed secrets the configuration
// cannot open, and how to fix it. Key ids are not secrets: every sealed
// value carries its key's.
func missingKeysMessage(check tokenstore.KeyCheck, sealer *tokenstore.Sealer, generated bool) string {
	ids := strings.Join(check.Missing, ", ")
	msg := fmt.Sprintf("encryption_key: the store holds secrets sealed with key id %s, which no configured key opens (configured: key id %s)", ids, strings.Join(sealer.KeyIDs(), ", "))
	if generated {
		msg += fmt.Sprintf("; no encryption_key is configured, so this host generated %s: copy the encryption.key file from the Caddy data directory of the host where the store was created over it, or configure that key with encryption_key", keyFile())
	} else {
		msg += "; add the key with that id to encryption_key (after the first key: the first one seals), and to re-seal everything with the first key run caddy linkgate-reseal, then remove the old key"
	}
	if len(check.Matched) > 0 {
		msg += "; until then the accounts sealed with it answer 500 and cannot refresh"
	} else {
		msg += "; if that key is lost, so are the secrets it sealed: start on a new store and reconnect the accounts"
	}
	return msg
}

// secretKeys are the keys the open store seals with, first current; the
// connect flow derives its state-binding key from them, so instances that
// share the store's keys share that key too.
func (h *storeHolder) secretKeys() [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.inUse
}

// open returns the store, opening it if this is the first use. A failed open
// is tried again on the next use, so a database that comes back heals.
func (h *storeHolder) open(logger *zap.Logger) (*tokenstore.Cached, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.store != nil {
		return h.store, nil
	}
	keys := h.keys
	if len(keys) == 0 {
		k, err := loadOrCreateKey(logger)
		if err != nil {
			return nil, err
		}
		keys = [][]byte{k}
	}
	sealer, err := tokenstore.NewSealer(keys...)
	if err != nil {
		return nil, fmt.Errorf("encryption_key: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var inner tokenstore.Store
	switch h.cfg.Driver {
	case "postgres":
		inner, err = openPostgres(ctx, h.cfg.DSN, sealer, logger)
		if err != nil {
			return nil, fmt.Errorf("storage postgres: %w", err)
		}
	default:
		path := h.cfg.Path
		if path == "" {
			path = filepath.Join(caddy.AppDataDir(), "linkgate", "linkgate.db")
		}
		// A fresh checkout has no data directory yet: make it, private.
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("storage sqlite %s: creating its directory: %w", path, err)
		}
		inner, err = tokenstore.OpenSQLite(ctx, path, sealer)
		if err != nil {
			return nil, fmt.Errorf("storage sqlite %s: %w", path, err)
		}
	}
	if kc, ok := inner.(tokenstore.KeyChecker); ok {
		check, err := kc.CheckKeys(ctx)
		if err != nil {
			_ = inner.Close()
			return nil, fmt.Errorf("encryption_key: %w", err)
		}
		if len(check.Missing) > 0 {
			msg := missingKeysMessage(check, sealer, len(h.keys) == 0)
			if len(check.Matched) == 0 {
				// Not one stored secret opens: the key is wrong (a store
				// copied without its key, a wrong variable). Serving would
				// only answer every call with an error.
				_ = inner.Close()
				return nil, errors.New(msg)
			}
			// Some keys match: serve the accounts they open, and say
			// loudly which key the others need.
			logger.Error(msg, zap.Strings("missing_key_ids", check.Missing))
		}
		h.missingKeys = check.Missing
	}
	cached, err := tokenstore.NewCached(inner, h.cacheSize)
	if err != nil {
		_ = inner.Close()
		return nil, err
	}
	h.journal = openJournal(h.cfg, sealer, logger)
	h.store = cached
	h.inUse = keys
	if _, ok := inner.(*tokenstore.Postgres); ok {
		h.listener.Store(listenerDown)
	}
	h.stopListen = startPostgresListener(inner, cached, logger, func(up bool) {
		if up {
			h.listener.Store(listenerUp)
		} else {
			h.listener.Store(listenerDown)
		}
	})
	// One janitor per open store, not per config: reloads share the store.
	h.stopJanitor = startJanitor(cached, logger.Named("janitor"), time.Hour, tokenstore.DefaultRetention)
	return cached, nil
}

// Destruct closes the store when no config uses it any more.
func (h *storeHolder) Destruct() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.store == nil {
		return nil
	}
	h.stopJanitor()
	h.stopListen()
	if h.journal != nil {
		_ = h.journal.Close()
		h.journal = nil
	}
	err := h.store.Close()
	h.store, h.inUse, h.missingKeys = nil, nil, nil
	h.listener.Store(listenerUnused)
	return err
}

// refreshJournal is the open store's refresh journal, or nil.
func (h *storeHolder) refreshJournal() *refresh.Journal {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.journal
}

// openJournal opens the refresh journal of a store: next to a SQLite file,
// or in Caddy's data directory for PostgreSQL (one per database). Two
// processes on one machine sharing the store each get a file of their own.
// Without a journal refreshes still work; a crash can then lose the grants
// whose answers had not reached the store, so the failure is logged loudly.
func openJournal(cfg StorageConfig, sealer *tokenstore.Sealer, logger *zap.Logger) *refresh.Journal {
	var base string
	if cfg.Driver == "postgres" {
		sum := sha256.Sum256([]byte(cfg.DSN))
		base = filepath.Join(caddy.AppDataDir(), "linkgate", fmt.Sprintf("refresh-journal-%x", sum[:8]))
	} else {
		path := cfg.Path
		if path == "" {
			path = filepath.Join(caddy.AppDataDir(), "linkgate", "linkgate.db")
		}
		base = path + "-refresh-journal"
	}
	if err := os.MkdirAll(filepath.Dir(base), 0o700); err != nil {
		logger.Error("cannot create the refresh journal's directory; a crash may lose grants whose refresh answers had not reached the store", zap.Error(err))
		return nil
	}
	j, err := refresh.OpenJournalExclusive(base, sealer)
	if err != nil {
		logger.Error("cannot open the refresh journal; a crash may lose grants whose refresh answers had not reached the store", zap.Error(err))
		return nil
	}
	return j
}

// keyFile is where the generated key of an unconfigured SQLite store lives,
// under Caddy's data directory.
func keyFile() string { return filepath.Join(caddy.AppDataDir(), "linkgate", "encryption.key") }

// loadOrCreateKey reads the generated key, creating it (mode 0600) on first
// start, so that the example configuration runs with no setup. It warns,
// because a key that lives next to the data protects less than one kept
// elsewhere.
func loadOrCreateKey(logger *zap.Logger) ([]byte, error) {
	path := keyFile()
	b, err := os.ReadFile(path)
	if err == nil {
		key, err := tokenstore.ParseKey(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("generated encryption key %s: %w", path, err)
		}
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading generated encryption key %s: %w", path, err)
	}
	key, err := tokenstore.GenerateKey()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		// Another instance created it meanwhile: use theirs.
		return loadOrCreateKey(logger)
	}
	if err != nil {
		return nil, fmt.Errorf("creating generated encryption key %s: %w", path, err)
	}
	if _, err := f.WriteString(tokenstore.EncodeKey(key) + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing generated encryption key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	logger.Warn("no encryption_key configured: generated one for the SQLite store; configure encryption_key to keep the key apart from the data",
		zap.String("key_file", path))
	return key, nil
}
