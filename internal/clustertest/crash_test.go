package clustertest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// crashBound is the default bound on token calls in flight per instance
// (refresh { max_in_flight }): the most grants one SIGKILL may cost.
const crashBound = 4

// crashSize is the wave and the number of kills per store: small for go
// test; LINKGATE_CRASH_ACCOUNTS and LINKGATE_CRASH_KILLS (bench/crash.sh)
// set the full run (250 accounts, 10 kills).
func crashSize() (accounts, kills int) {
	accounts, kills = 40, 2
	if n, err := strconv.Atoi(os.Getenv("LINKGATE_CRASH_ACCOUNTS")); err == nil && n > 0 {
		accounts = n
	}
	if n, err := strconv.Atoi(os.Getenv("LINKGATE_CRASH_KILLS")); err == nil && n > 0 {
		kills = n
	}
	return accounts, kills
}

// TestCrashDuringRefreshWave SIGKILLs a real Caddy process at a random
// moment of a wave of forced refreshes (every account at once), against an
// authorization server that rotates refresh tokens and revokes the whole
// grant when an old one is presented again. After each restart every
// account is refreshed once more: a grant the crash lost is refused then.
// Each kill may lose at most the token calls that were on the wire (the
// bound); each lost grant must read refresh_answer_lost (not a user's
// revocation) and raise exactly one alarm; no surviving account may raise
// one.
func TestCrashDuringRefreshWave(t *testing.T) {
	for _, st := range storages {
		t.Run(st.name, func(t *testing.T) {
			if st.name == "postgres" {
				pgSchema(t) // skip early without a database
			}
			crashWave(t, st.opts)
		})
	}
}

func crashWave(t *testing.T, opts []option) {
	accounts, kills := crashSize()
	c := newCluster(t, 1, opts...)
	nd := c.nodes[0]
	ids := make([]string, accounts)
	for i := range ids {
		tok := c.as.Authorize(t, oauthClient, redirectURI, fmt.Sprintf("crash-%d", i), nil)
		ids[i] = c.importAccount(nd, fmt.Sprintf("crash-%d", i), map[string]any{
			"access_token": tok.AccessToken, "refresh_token": tok.RefreshToken, "expires_in": 3600})
	}
	lostAt := map[string]int{} // account -> kill that lost it
	var perKill []int
	for k := range kills {
		live := make([]string, 0, len(ids))
		for _, id := range ids {
			if _, gone := lostAt[id]; !gone {
				live = append(live, id)
			}
		}
		// The wave: every live account refreshed at once.
		before := c.as.TokenCalls("refresh_token")
		at := 1 + rand.N(max(1, len(live)*3/4))
		var wg sync.WaitGroup
		for _, id := range live {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, _ = c.do(nd, "POST", "/integrated-account/refresh-credentials", map[string]string{"id": id})
			}()
		}
		waitFor(t, 60*time.Second, "the wave's token calls", func() bool {
			return c.as.TokenCalls("refresh_token")-before >= at
		})
		nd.kill()
		sent := c.as.TokenCalls("refresh_token") - before
		wg.Wait()
		c.restart(nd)

		// Every account once more: a lost grant is refused now.
		type outcome struct {
			id, problem string
			refused     bool
		}
		results := make(chan outcome, len(live))
		work := make(chan string)
		var vg sync.WaitGroup
		for range 8 {
			vg.Add(1)
			go func() {
				defer vg.Done()
				for id := range work {
					st, body, err := c.do(nd, "POST", "/integrated-account/refresh-credentials", map[string]string{"id": id})
					switch {
					case err != nil:
						results <- outcome{id: id, problem: err.Error()}
					case st == http.StatusOK:
						results <- outcome{id: id}
					default:
						results <- outcome{id: id, refused: true, problem: fmt.Sprintf("%d %s", st, body)}
					}
				}
			}()
		}
		for _, id := range live {
			work <- id
		}
		close(work)
		vg.Wait()
		close(results)
		lost := 0
		for o := range results {
			if !o.refused {
				if o.problem != "" {
					t.Fatalf("refreshing %s after the restart: %s", o.id, o.problem)
				}
				continue
			}
			acct := c.account(nd, o.id)
			if acct.Status != "needs_reauth" {
				t.Fatalf("refreshing %s after the restart: %s (account %s)", o.id, o.problem, acct.Status)
			}
			if acct.LastError.Code != "refresh_answer_lost" {
				t.Errorf("grant of %s lost by the SIGKILL reads %q: %s; want refresh_answer_lost", o.id, acct.LastError.Code, acct.LastError.Message)
			}
			lostAt[o.id] = k
			lost++
		}
		perKill = append(perKill, lost)
		t.Logf("kill %d: after %d of %d token calls; %d grants lost", k+1, sent, len(live), lost)
		if lost > crashBound {
			t.Errorf("kill %d lost %d grants; at most %d token calls are on the wire at once", k+1, lost, crashBound)
		}
	}

	// Alarms: one per lost grant, under one webhook-id; none for the rest.
	waitFor(t, 60*time.Second, "an alarm for every lost grant", func() bool {
		got := map[string]bool{}
		for _, ev := range parseDeliveries(t, c.hooks.Deliveries()) {
			if ev.Event == "integrated_account:authentication_error" {
				got[ev.AccountID] = true
			}
		}
		for id := range lostAt {
			if !got[id] {
				return false
			}
		}
		return true
	})
	alarms := map[string]map[string]bool{}
	for _, ev := range parseDeliveries(t, c.hooks.Deliveries()) {
		if ev.Event != "integrated_account:authentication_error" {
			continue
		}
		if alarms[ev.AccountID] == nil {
			alarms[ev.AccountID] = map[string]bool{}
		}
		alarms[ev.AccountID][ev.WebhookID] = true
	}
	falseAlarms, duplicates := 0, 0
	for id, set := range alarms {
		if _, lost := lostAt[id]; !lost {
			falseAlarms++
			t.Errorf("alarm for %s, whose grant survived", id)
		}
		if len(set) > 1 {
			duplicates++
			t.Errorf("%d alarms (webhook-ids) for %s; want one", len(set), id)
		}
	}
	total := 0
	for _, n := range perKill {
		total += n
	}
	t.Logf("%d accounts, %d kills: %d grants lost (per kill %v), %d alarms, %d false, %d duplicated",
		accounts, kills, total, perKill, len(alarms), falseAlarms, duplicates)
}

// account reads an account through the API.
func (c *cluster) account(nd *node, id string) (a struct {
	Status    string `json:"status"`
	LastError struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"last_error_detail"`
}) {
	c.t.Helper()
	st, body, err := c.do(nd, "GET", "/integrated-account/"+id, nil)
	if err != nil || st != http.StatusOK {
		c.t.Fatalf("reading %s: %d %s %v", id, st, body, err)
	}
	if err := json.Unmarshal(body, &a); err != nil {
		c.t.Fatalf("reading %s: %v", id, err)
	}
	return a
}

// restart starts a killed node again with the same configuration, data
// directory and address, as a supervisor would, and waits until it answers.
func (c *cluster) restart(nd *node) {
	c.t.Helper()
	old := nd.cmd
	logf, err := os.OpenFile(nd.logPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(old.Path, old.Args[1:]...)
	cmd.Dir, cmd.Env = old.Dir, old.Env
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatalf("restarting %s: %v", nd.name, err)
	}
	exited := make(chan struct{})
	nd.cmd, nd.exited = cmd, exited
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	c.waitReady(nd)
}

// TestSlowTokenEndpointLosesNoGrant: a token endpoint slower than
// token_timeout, with rotating refresh tokens. Requests on expired tokens
// stop waiting at the timeout, but the calls run to completion and their
// answers are stored: once the endpoint is fast again, every account
// refreshes and none raised an alarm.
func TestSlowTokenEndpointLosesNoGrant(t *testing.T) {
	for _, st := range storages {
		t.Run(st.name, func(t *testing.T) {
			if st.name == "postgres" {
				pgSchema(t)
			}
			c := newCluster(t, 1, append([]option{withGlobal("refresh {\n\t\t\ttoken_timeout 1s\n\t\t}")}, st.opts...)...)
			nd := c.nodes[0]
			const n = 8
			var ids []string
			for i := range n {
				ids = append(ids, c.importAccount(nd, fmt.Sprintf("slow-%d", i), c.expiredToken(fmt.Sprintf("slow-%d", i))))
			}
			c.as.SetFault(testenv.Fault{Delay: 2500 * time.Millisecond})
			// The sweeper may have refreshed some of the expired imports
			// before the fault was set: the server counts a call and picks
			// its fault under one lock, so no more calls than counted now
			// went unslowed, and only their accounts may answer at once.
			unslowed := c.as.TokenCalls("refresh_token")
			var (
				wg     sync.WaitGroup
				mu     sync.Mutex
				served []string
			)
			for _, id := range ids {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st, body, err := c.do(nd, "GET", "/proxy/me?integrated_account_id="+id, nil)
					if err == nil && st == http.StatusOK {
						mu.Lock()
						served = append(served, id+" "+string(body))
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if len(served) > unslowed {
				t.Errorf("%d calls answered at once, but only %d token calls escaped the slow endpoint: a call waited past token_timeout: %v", len(served), unslowed, served)
			}
			// Every slow answer is stored: n rotations, then no more calls.
			waitFor(t, 60*time.Second, "every slow call answered", func() bool {
				return c.as.TokenCalls("refresh_token") >= n
			})
			c.as.ClearFault()
			for _, id := range ids {
				waitFor(t, 30*time.Second, id+" served again", func() bool {
					st, _, err := c.do(nd, "GET", "/proxy/me?integrated_account_id="+id, nil)
					return err == nil && st == http.StatusOK
				})
				if a := c.account(nd, id); a.Status != "active" {
					t.Errorf("%s: %s %+v", id, a.Status, a.LastError)
				}
			}
			for _, ev := range parseDeliveries(t, c.hooks.Deliveries()) {
				if ev.Event == "integrated_account:authentication_error" {
					t.Errorf("alarm for %s: a slow provider lost its grant", ev.AccountID)
				}
			}
		})
	}
}
