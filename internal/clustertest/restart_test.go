package clustertest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// TestClusterPostgresRestart restarts a PostgreSQL server under load: while
// it is down the instances answer a clear 503 JSON error (nothing else), and
// they recover by themselves when it is back. It must not restart the server
// other packages' tests are using at the same moment, so it runs on a cluster
// of its own: LINKGATE_TEST_POSTGRES_RESTART names it ("<version> <cluster>",
// for pg_ctlcluster) and LINKGATE_TEST_POSTGRES_RESTART_DSN reaches it.
// .ci/run creates and starts one; elsewhere the test skips saying so.
func TestClusterPostgresRestart(t *testing.T) {
	cluster, dsn := os.Getenv("LINKGATE_TEST_POSTGRES_RESTART"), os.Getenv("LINKGATE_TEST_POSTGRES_RESTART_DSN")
	if cluster == "" || dsn == "" {
		msg := "restarts a PostgreSQL cluster of its own: set LINKGATE_TEST_POSTGRES_RESTART=\"<version> <cluster>\" and LINKGATE_TEST_POSTGRES_RESTART_DSN (.ci/run does)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	restart := restartCommand(t, cluster)
	t.Setenv(testenv.PostgresEnv, dsn)
	c := newCluster(t, 3)
	tok := c.as.Authorize(t, oauthClient, redirectURI, "dave", nil)
	id := c.importAccount(c.nodes[0], "restart", map[string]any{
		"access_token": tok.AccessToken, "refresh_token": tok.RefreshToken, "expires_in": 3600})

	type tally struct {
		ok, unavailable atomic.Int64
		mu              sync.Mutex
		other           []string
	}
	var list, proxy tally
	record := func(tl *tally, nd *node, st int, body []byte, err error) {
		switch {
		case st == http.StatusOK:
			tl.ok.Add(1)
		case st == http.StatusServiceUnavailable && isJSONError(body, http.StatusServiceUnavailable):
			tl.unavailable.Add(1)
		default:
			tl.mu.Lock()
			tl.other = append(tl.other, fmt.Sprintf("%s: %d %s %v", nd.name, st, body, err))
			tl.mu.Unlock()
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, nd := range c.nodes {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					// The listing always reads the database; the proxied
					// call may be served from the cache.
					st, body, err := c.do(nd, "GET", "/integrated-account?limit=1", nil)
					record(&list, nd, st, body, err)
					st, body, err = c.do(nd, "GET", "/proxy/me?integrated_account_id="+id, nil)
					record(&proxy, nd, st, body, err)
					time.Sleep(10 * time.Millisecond)
				}
			}()
		}
	}
	// Load on every instance before the restart: each client has had
	// answers to both calls.
	waitFor(t, time.Minute, "every client's calls answered before the restart", func() bool {
		return list.ok.Load() >= 2*int64(len(c.nodes)) && proxy.ok.Load() >= 2*int64(len(c.nodes))
	})
	began := time.Now()
	if out, err := exec.Command(restart[0], restart[1:]...).CombinedOutput(); err != nil {
		close(stop)
		wg.Wait()
		t.Fatalf("restarting PostgreSQL: %v\n%s", err, out)
	}
	t.Logf("PostgreSQL restarted in %v", time.Since(began))

	// Every instance recovers by itself: its listing and a write succeed.
	took := waitFor(t, 60*time.Second, "every instance serving from the database again", func() bool {
		for _, nd := range c.nodes {
			if st, _, _ := c.do(nd, "GET", "/integrated-account?limit=1", nil); st != http.StatusOK {
				return false
			}
		}
		return true
	})
	close(stop)
	wg.Wait()
	t.Logf("recovered %v after the restart command returned; listing: %d ok, %d 503; proxied: %d ok, %d 503",
		took, list.ok.Load(), list.unavailable.Load(), proxy.ok.Load(), proxy.unavailable.Load())
	for _, tl := range []*tally{&list, &proxy} {
		for i, o := range tl.other {
			if i == 5 {
				break
			}
			t.Errorf("while the database restarted: %s (want 200 or a 503 JSON error)", o)
		}
	}
	if list.unavailable.Load() == 0 {
		t.Error("no request saw the database down: the restart was not observed, so the 503 path is unproven")
	}
	for i, nd := range c.nodes {
		c.importAccount(nd, fmt.Sprintf("after-restart-%d", i), map[string]any{
			"access_token": fmt.Sprintf("at-%d", i), "refresh_token": fmt.Sprintf("rt-%d", i), "expires_in": 3600})
		if st, body, err := c.do(nd, "GET", "/proxy/me?integrated_account_id="+id, nil); st != http.StatusOK {
			t.Errorf("%s proxied call after recovery: %d %s %v", nd.name, st, body, err)
		}
	}
}

// restartCommand is the command that restarts the PostgreSQL cluster named
// "<version> <cluster>".
func restartCommand(t *testing.T, cluster string) []string {
	t.Helper()
	f := strings.Fields(cluster)
	if len(f) != 2 {
		t.Fatalf("LINKGATE_TEST_POSTGRES_RESTART = %q: want \"<version> <cluster>\", e.g. \"15 lgrestart\"", cluster)
	}
	return []string{"pg_ctlcluster", "--skip-systemctl-redirect", f[0], f[1], "restart"}
}

// isJSONError reports whether body is linkgate's JSON error with status.
func isJSONError(body []byte, status int) bool {
	var e struct {
		StatusCode int    `json:"statusCode"`
		Error      string `json:"error"`
		Message    string `json:"message"`
	}
	return json.Unmarshal(body, &e) == nil && e.StatusCode == status && e.Error != "" && e.Message != ""
}
