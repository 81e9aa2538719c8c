package refresh

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/linkgate/linkgate/account"
)

// Sealer encrypts the journal's records; *tokenstore.Sealer is one.
type Sealer interface {
	Seal(plaintext, ad []byte) ([]byte, error)
	Open(blob, ad []byte) ([]byte, error)
}

// Journal makes token calls durable on the local disk, apart from the
// store: a "sent" record is written and fsync'd before a refresh token
// leaves, and the answer is written and fsync'd the moment it arrives,
// before it waits for the store (SQLite has one writer; a burst of
// refreshes queues there). After a crash the records are read back: an
// answer that did not reach the store is applied, and a call sent without
// an answer marks its account so that a refusal of its next refresh is
// reported as refresh_answer_lost rather than as a revocation by the user.
//
// Records are sealed (AES-256-GCM with the store's keys, the account id as
// associated data): an answer holds the new tokens. A record holds a digest
// of the refresh token it was sent with, never the token. The file is
// emptied whenever no record in it is still needed.
type Journal struct {
	path   string
	sealer Sealer

	mu   sync.Mutex
	f    *os.File
	live int // records whose call is in progress or whose answer is unsaved
	// recovered are the records found at open that still need applying,
	// by account id.
	recovered map[string]*journalEntry
}

// journalEntry is what is known of one refresh of an account.
type journalEntry struct {
	ID string `json:"id"`
	// Sent is the hex SHA-256 of the refresh token the call presented.
	Sent string `json:"sent"`
	// Answer is the credentials the answer brought, nil while none came.
	Answer *account.Credentials `json:"answer,omitempty"`
	At     time.Time            `json:"at"`
}

// OpenJournalExclusive opens the journal at base, or, while another live
// process holds that one, at base.1, base.2, … up to base.7: a journal
// belongs to one process at a time, and a file a dead process held is read
// back by the next process that opens it.
func OpenJournalExclusive(base string, s Sealer) (*Journal, error) {
	for i := range 8 {
		path := base
		if i > 0 {
			path = fmt.Sprintf("%s.%d", base, i)
		}
		j, err := openJournal(path, s, true)
		if errors.Is(err, errJournalBusy) {
			continue
		}
		return j, err
	}
	return nil, fmt.Errorf("opening refresh journal %s: eight processes on this machine hold journals of this store", base)
}

var errJournalBusy = errors.New("refresh journal held by another process")

// OpenJournal opens (creating it, mode 0600) the journal at path and reads
// back what a previous process left in it. The caller makes sure no other
// process uses the file; OpenJournalExclusive does that.
func OpenJournal(path string, s Sealer) (*Journal, error) { return openJournal(path, s, false) }

func openJournal(path string, s Sealer, exclusive bool) (*Journal, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening refresh journal %s: %w", path, err)
	}
	if exclusive {
		busy, err := lockFile(f)
		if busy || err != nil {
			f.Close()
			if busy {
				return nil, errJournalBusy
			}
			return nil, fmt.Errorf("locking refresh journal %s: %w", path, err)
		}
	}
	j := &Journal{path: path, sealer: s, f: f, recovered: map[string]*journalEntry{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		e, ok := j.decode(sc.Bytes())
		if !ok {
			// A record torn by the crash, or sealed with a key no longer
			// configured: nothing to recover from it.
			continue
		}
		prev := j.recovered[e.ID]
		if prev != nil && prev.Sent == e.Sent && prev.Answer != nil && e.Answer == nil {
			continue
		}
		j.recovered[e.ID] = e
	}
	if err := sc.Err(); err != nil {
		f.Close()
		return nil, fmt.Errorf("reading refresh journal %s: %w", path, err)
	}
	if _, err := f.Seek(0, 2); err != nil {
		f.Close()
		return nil, fmt.Errorf("opening refresh journal %s: %w", path, err)
	}
	if len(j.recovered) == 0 {
		_ = j.truncateLocked()
	}
	return j, nil
}

// Close closes the file.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}

// Path is the journal's file.
func (j *Journal) Path() string { return j.path }

func digest(refreshToken string) string {
	sum := sha256.Sum256([]byte(refreshToken))
	return fmt.Sprintf("%x", sum)
}

func (j *Journal) decode(line []byte) (*journalEntry, bool) {
	id, blob, ok := bytes.Cut(line, []byte{' '})
	if !ok {
		return nil, false
	}
	raw, err := base64.StdEncoding.DecodeString(string(blob))
	if err != nil {
		return nil, false
	}
	plain, err := j.sealer.Open(raw, journalAD(string(id)))
	if err != nil {
		return nil, false
	}
	var e journalEntry
	if json.Unmarshal(plain, &e) != nil || e.ID != string(id) {
		return nil, false
	}
	return &e, true
}

func journalAD(id string) []byte { return []byte("linkgate refresh journal\x00" + id) }

// append writes e and fsyncs it.
func (j *Journal) append(e *journalEntry) error {
	plain, err := json.Marshal(e)
	if err != nil {
		return err
	}
	blob, err := j.sealer.Seal(plain, journalAD(e.ID))
	if err != nil {
		return err
	}
	line := e.ID + " " + base64.StdEncoding.EncodeToString(blob) + "\n"
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return fmt.Errorf("refresh journal %s is closed", j.path)
	}
	if _, err := j.f.WriteString(line); err != nil {
		return fmt.Errorf("writing refresh journal %s: %w", j.path, err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("syncing refresh journal %s: %w", j.path, err)
	}
	return nil
}

// sent records, durably, that a refresh of id with refreshToken is about to
// be sent. The returned entry is passed to answered and settle.
func (j *Journal) sent(id, refreshToken string, at time.Time) (*journalEntry, error) {
	e := &journalEntry{ID: id, Sent: digest(refreshToken), At: at}
	j.mu.Lock()
	j.live++
	j.mu.Unlock()
	if err := j.append(e); err != nil {
		j.settle()
		return nil, err
	}
	return e, nil
}

// answered records, durably, the credentials an answer to e brought.
func (j *Journal) answered(e *journalEntry, c account.Credentials) error {
	a := account.Credentials{AccessToken: c.AccessToken, RefreshToken: c.RefreshToken, TokenType: c.TokenType, Expiry: c.Expiry, Scope: c.Scope}
	e.Answer = &a
	return j.append(e)
}

// settle says a record is no longer needed: its answer is in the store, or
// the call failed in a way that leaves nothing to recover. When no record is
// needed any more the file is emptied.
func (j *Journal) settle() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.live--
	if j.live == 0 && len(j.recovered) == 0 {
		_ = j.truncateLocked()
	}
}

// keep hands the entry of a call whose answer could not be saved to the
// recovery path, as if read back after a crash: the next refresh of the
// account applies it instead of presenting the old refresh token.
func (j *Journal) keep(e *journalEntry) {
	j.mu.Lock()
	j.recovered[e.ID] = e
	j.live--
	j.mu.Unlock()
}

// pending returns the recovered entry of id, if any.
func (j *Journal) pending(id string) *journalEntry {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.recovered[id]
}

// pendingIDs lists the accounts with a recovered entry.
func (j *Journal) pendingIDs() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	ids := make([]string, 0, len(j.recovered))
	for id := range j.recovered {
		ids = append(ids, id)
	}
	return ids
}

// done forgets the recovered entry e of its account once it has been
// applied (or found superseded).
func (j *Journal) done(e *journalEntry) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.recovered[e.ID] == e {
		delete(j.recovered, e.ID)
	}
	if j.live == 0 && len(j.recovered) == 0 {
		_ = j.truncateLocked()
	}
}

func (j *Journal) truncateLocked() error {
	if j.f == nil {
		return nil
	}
	if err := j.f.Truncate(0); err != nil {
		return err
	}
	_, err := j.f.Seek(0, 0)
	return err
}
