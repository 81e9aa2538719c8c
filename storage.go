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
	// bulk is held by the one bulk import or bulk delete of the API that
	// may run at a time on this store (in this process, across config
	// reloads): each writes for seconds, and SQLite has one writer, so
	// callers that ran them side by side would take every write slot from
	// the proxy's refreshes and the connect flow.
	bulk sync.Mutex
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
	cached, err := tokenstore.NewCached(inner, h.cacheSize)
	if err != nil {
		_ = inner.Close()
		return nil, err
	}
	h.journal = openJournal(h.cfg, sealer, logger)
	h.store = cached
	h.inUse = keys
	h.stopListen = startPostgresListener(inner, cached, logger)
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
	h.store, h.inUse = nil, nil
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
