package linkflow_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"net/http"
	"net/url"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/linkgate/linkgate/account"
)

// connectStateRows counts the connect states stored for the link token
// whose value is token, reading the SQLite file directly.
func (h *harness) connectStateRows(token string) int {
	h.t.Helper()
	raw, err := sql.Open("sqlite", h.dbFile)
	if err != nil {
		h.t.Fatal(err)
	}
	defer raw.Close()
	sum := sha256.Sum256([]byte(token))
	var n int
	if err := raw.QueryRow("SELECT COUNT(*) FROM connect_states WHERE link_token_hash = ?", sum[:]).Scan(&n); err != nil {
		h.t.Fatalf("counting connect states: %v", err)
	}
	return n
}

// stateStored reports whether the state's row is still in the store.
func (h *harness) stateStored(state string) bool {
	h.t.Helper()
	raw, err := sql.Open("sqlite", h.dbFile)
	if err != nil {
		h.t.Fatal(err)
	}
	defer raw.Close()
	sum := sha256.Sum256([]byte(state))
	var n int
	if err := raw.QueryRow("SELECT COUNT(*) FROM connect_states WHERE hash = ?", sum[:]).Scan(&n); err != nil {
		h.t.Fatalf("looking up a connect state: %v", err)
	}
	return n == 1
}

// TestConnectPressesAreBounded loops presses of the connect button with one
// link token, as a script holding the token would: the presses are
// rate-limited per link token, and the store keeps only the newest few
// states of it whatever gets through.
func TestConnectPressesAreBounded(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	lt := h.linkToken(map[string]any{"tenant_id": "tenant-loop", "integration": "acme"})
	other := h.linkToken(map[string]any{"tenant_id": "tenant-other", "integration": "acme"})
	press := func(token string) response {
		return h.postForm(h.public+"/connect-account", url.Values{"link_token": {token}})
	}

	accepted, limited := 0, 0
	for range 300 {
		r := press(lt.LinkToken)
		switch r.status {
		case http.StatusSeeOther:
			accepted++
		case http.StatusTooManyRequests:
			limited++
			if secs, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || secs < 1 || secs > 60 {
				t.Fatalf("429 with Retry-After %q", r.header.Get("Retry-After"))
			}
			if !strings.Contains(r.body, "Too many attempts") {
				t.Fatalf("429 page:\n%s", r.body)
			}
			if p := postedBy(t, r.body); p.Message["error_type"] != "connection_error" {
				t.Fatalf("429 posts %v", p.Message)
			}
		default:
			t.Fatalf("press = %d:\n%s", r.status, r.body)
		}
	}
	if accepted == 0 || accepted > 10 || limited != 300-accepted {
		t.Fatalf("%d presses accepted and %d limited out of 300 within a second, want at most 10 accepted", accepted, limited)
	}
	if n := h.connectStateRows(lt.LinkToken); n > 5 {
		t.Fatalf("%d connect states stored for one link token, want at most 5", n)
	}
	// The limit is per link token: another link is not held up.
	if r := press(other.LinkToken); r.status != http.StatusSeeOther {
		t.Fatalf("a press with another link token = %d", r.status)
	}

	// Presses spread over time all get through, and the store still keeps
	// only the newest five; the newest works, the oldest is gone.
	var states []string
	for range 40 {
		h.clock.Advance(10 * time.Second)
		r := press(lt.LinkToken)
		if r.status != http.StatusSeeOther {
			t.Fatalf("a press 10 s after the last = %d", r.status)
		}
		loc, _ := url.Parse(r.header.Get("Location"))
		states = append(states, loc.Query().Get("state"))
	}
	if n := h.connectStateRows(lt.LinkToken); n != 5 {
		t.Fatalf("%d connect states stored after 40 spaced presses, want the newest 5", n)
	}
	for i, st := range states {
		if want := i >= len(states)-5; h.stateStored(st) != want {
			t.Errorf("state of press %d stored = %v, want %v", i, !want, want)
		}
	}
	// The last press's flow completes.
	last := h.startOAuth(lt.LinkToken)
	if r := h.get(h.consent(last, "lou", "allow").String()); r.status != http.StatusOK {
		t.Fatalf("the newest flow = %d:\n%s", r.status, r.body)
	}
}

// TestReconnectLeavesTheCachedAccountAlone holds the account the cache hands
// to proxied requests across a reconnect: the reconnect must write its own
// copy, never the shared one (run with -race, a reader of the shared copy
// during the reconnect would report the write too).
func TestReconnectLeavesTheCachedAccountAlone(t *testing.T) {
	h := newHarness(t, harnessOptions{cached: true})
	ctx := context.Background()
	a, old := h.seedAccount("ivy", account.StatusNeedsReauth, map[string]any{"upstream_user_id": "ivy", "region": "eu"})

	// Read until the cache serves the account: the same pointer twice.
	shared, err := h.cache.GetAccount(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		again, err := h.cache.GetAccount(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if again == shared {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cache never served the account")
		}
		shared = again
		runtime.Gosched()
	}
	snapshot := shared.Clone()

	// A proxied request reads the shared account while the reconnect runs.
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = shared.Credentials.AccessToken + string(shared.Status) + string(shared.Method)
			for k, v := range shared.Context {
				_, _ = k, v
			}
			_ = shared.Version
			runtime.Gosched()
		}
	}()
	lt := h.linkToken(map[string]any{"integrated_account_id": a.ID, "context": map[string]any{"region": "us"}})
	r := h.connectOAuth(lt.LinkToken, "ivy")
	close(stop)
	<-done
	if r.status != http.StatusOK {
		t.Fatalf("reconnect = %d:\n%s", r.status, r.body)
	}
	if !reflect.DeepEqual(shared, snapshot) {
		t.Errorf("the reconnect wrote into the account the cache shares:\n got %+v\nwant %+v", shared, snapshot)
	}
	fresh, err := h.cache.GetAccount(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if fresh == shared || fresh.Status != account.StatusActive || fresh.Credentials.AccessToken == old.access || fresh.Context["region"] != "us" {
		t.Errorf("after the reconnect the cache serves %+v", fresh)
	}
}
