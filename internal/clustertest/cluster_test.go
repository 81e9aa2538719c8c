package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/testenv"
)

// TestClusterOneRefreshForAStampede: a thousand concurrent calls, spread
// over three instances, for one account whose access token has expired,
// cost the provider one token call, and all succeed.
func TestClusterOneRefreshForAStampede(t *testing.T) {
	c := newCluster(t, 3)
	token := c.expiredToken("alice")
	c.as.ResetCounts()
	// Hold the first refresh's answer back a moment, so that the calls
	// pile up on every instance while it is in flight.
	c.as.SetFault(testenv.Fault{Delay: 500 * time.Millisecond, Count: 1})
	id := c.importAccount(c.nodes[0], "stampede", token)

	const calls = 1000
	statuses := make([]int, calls)
	bodies := make([]string, calls)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			st, body, err := c.do(c.nodes[i%len(c.nodes)], "GET", "/proxy/me?integrated_account_id="+id, nil)
			statuses[i] = st
			if err != nil {
				bodies[i] = err.Error()
			} else {
				bodies[i] = string(body)
			}
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	t.Logf("%d proxied calls over %d instances in %v", calls, len(c.nodes), time.Since(began))

	failed := 0
	for i, st := range statuses {
		if st != http.StatusOK {
			if failed < 5 {
				t.Errorf("call %d via %s: %d %s", i, c.nodes[i%len(c.nodes)].name, st, bodies[i])
			}
			failed++
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d calls failed", failed, calls)
	}
	if n := c.as.TokenCalls("refresh_token"); n != 1 {
		t.Fatalf("the provider saw %d refresh_token calls, want exactly 1 for the whole cluster", n)
	}
}

// TestClusterOneAlarmWhenTheGrantIsRevoked: the user revokes the grant at
// the provider; every instance sees its calls fail, yet the application
// gets one integrated_account:authentication_error.
func TestClusterOneAlarmWhenTheGrantIsRevoked(t *testing.T) {
	c := newCluster(t, 3)
	tok := c.as.Authorize(t, oauthClient, redirectURI, "bob", nil)
	id := c.importAccount(c.nodes[0], "revoked", map[string]any{
		"access_token": tok.AccessToken, "refresh_token": tok.RefreshToken, "expires_in": 3600})
	// Every instance has used (and cached) the working token.
	for _, nd := range c.nodes {
		if st, body, err := c.do(nd, "GET", "/proxy/me?integrated_account_id="+id, nil); st != http.StatusOK {
			t.Fatalf("before revocation, %s answered %d %s %v", nd.name, st, body, err)
		}
	}
	c.as.RevokeSubject("bob")
	c.as.ResetCounts()

	const perNode = 30
	type result struct {
		node   string
		status int
		body   string
	}
	results := make(chan result, perNode*len(c.nodes))
	var wg sync.WaitGroup
	for _, nd := range c.nodes {
		for range perNode {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, body, err := c.do(nd, "GET", "/proxy/me?integrated_account_id="+id, nil)
				if err != nil {
					body = []byte(err.Error())
				}
				results <- result{nd.name, st, string(body)}
			}()
		}
	}
	wg.Wait()
	close(results)
	sawFailure := map[string]bool{}
	for r := range results {
		if r.status == http.StatusOK {
			t.Fatalf("%s served a call with a revoked grant", r.node)
		}
		if r.status != http.StatusUnauthorized {
			t.Errorf("%s answered %d %s, want 401", r.node, r.status, r.body)
			continue
		}
		var e struct {
			StatusCode int `json:"statusCode"`
		}
		if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: a 401 without the JSON error body: %s", r.node, r.body)
		}
		sawFailure[r.node] = true
	}
	if len(sawFailure) != len(c.nodes) {
		t.Fatalf("only %v saw the failure", sawFailure)
	}

	// The outbox is the truth: one transition, one event.
	db := c.db()
	var alarms int
	if err := db.QueryRow(context.Background(), "SELECT COUNT(*) FROM events WHERE name = $1 AND account_id = $2",
		account.EventAuthenticationError, id).Scan(&alarms); err != nil {
		t.Fatal(err)
	}
	if alarms != 1 {
		t.Fatalf("%d authentication_error events written, want 1", alarms)
	}
	// And the application receives it (a redelivery keeps its webhook-id).
	var got []webhookEvent
	waitFor(t, 30*time.Second, "the authentication_error delivery", func() bool {
		got = got[:0]
		for _, e := range parseDeliveries(t, c.hooks.Deliveries()) {
			if e.Event == account.EventAuthenticationError && e.AccountID == id {
				got = append(got, e)
			}
		}
		return len(got) > 0
	})
	for _, e := range got {
		if e.WebhookID != got[0].WebhookID {
			t.Fatalf("authentication_error delivered under two ids: %s and %s", got[0].WebhookID, e.WebhookID)
		}
	}
	st, body, err := c.do(c.nodes[2], "GET", "/integrated-account/"+id, nil)
	if err != nil || st != http.StatusOK || !strings.Contains(string(body), `"needs_reauth"`) {
		t.Fatalf("account after revocation: %d %s %v", st, body, err)
	}
	if n := c.as.TokenCalls("refresh_token"); n != 1 {
		t.Errorf("the provider saw %d refresh_token calls for a revoked grant, want 1 for the whole cluster", n)
	}
}

// refreshLockHolder returns the name of the node whose connection holds an
// advisory lock in the cluster's database, or "".
func (c *cluster) refreshLockHolder(db *pgx.Conn) string {
	var app string
	err := db.QueryRow(context.Background(), `SELECT a.application_name FROM pg_locks l
		JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE $1 LIMIT 1`,
		"lg-"+c.schema+"-%").Scan(&app)
	if err != nil {
		return ""
	}
	return strings.TrimPrefix(app, "lg-"+c.schema+"-")
}

// TestClusterKilledDuringRefresh: the instance holding an account's refresh
// lock is killed while the token call is in flight. Its lock dies with its
// connection, the refresh token is not lost, and another instance
// refreshes the account.
func TestClusterKilledDuringRefresh(t *testing.T) {
	c := newCluster(t, 3)
	db := c.db()
	token := c.expiredToken("carol")
	c.as.ResetCounts()
	// The provider stalls, then fails without touching the grant: the
	// refresh token the store holds stays the valid one.
	c.as.SetFault(testenv.Fault{Delay: 20 * time.Second, Status: http.StatusServiceUnavailable, Count: 1})
	id := c.importAccount(c.nodes[0], "killed", token)
	go c.do(c.nodes[0], "GET", "/proxy/me?integrated_account_id="+id, nil)

	var holder string
	waitFor(t, 15*time.Second, "an instance holding the refresh lock with the token call in flight", func() bool {
		holder = c.refreshLockHolder(db)
		return holder != "" && c.as.TokenCalls("refresh_token") == 1
	})
	var victim *node
	var survivors []*node
	for _, nd := range c.nodes {
		if nd.name == holder {
			victim = nd
		} else {
			survivors = append(survivors, nd)
		}
	}
	if victim == nil {
		t.Fatalf("lock held by unknown %q", holder)
	}
	victim.kill()
	t.Logf("killed %s while it held the refresh lock", victim.name)

	killedAt := time.Now()
	for _, nd := range survivors {
		st, body, err := c.do(nd, "GET", "/proxy/me?integrated_account_id="+id, nil)
		t.Logf("%s answered %d %v after the kill", nd.name, st, time.Since(killedAt))
		if st != http.StatusOK {
			t.Fatalf("%s after the kill: %d %s %v; the refresh token or the lock was lost", nd.name, st, body, err)
		}
	}
	if n := c.as.TokenCalls("refresh_token"); n != 2 {
		t.Errorf("the provider saw %d refresh_token calls, want 2 (the killed one and one after it)", n)
	}
	// The refresh token the store holds is the one the provider issued
	// last, and a forced refresh works again.
	st := c.store()
	a, err := st.GetAccount(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !c.as.ValidRefreshToken(a.Credentials.RefreshToken) {
		t.Fatal("the stored refresh token is no longer valid at the provider")
	}
	status, body, err := c.do(survivors[0], "POST", "/integrated-account/refresh-credentials", map[string]any{"id": id})
	if err != nil || status != http.StatusOK {
		t.Fatalf("forced refresh: %d %s %v", status, body, err)
	}
	if n := c.as.TokenCalls("refresh_token"); n != 3 {
		t.Errorf("after a forced refresh the provider saw %d refresh_token calls, want 3", n)
	}
}

// TestClusterKilledDuringDeliveries: an instance is killed while the cluster
// delivers webhooks. Every event still reaches the application, and an
// event delivered twice carries the same webhook-id both times.
func TestClusterKilledDuringDeliveries(t *testing.T) {
	c := newCluster(t, 3, withSlowWebhooks(300*time.Millisecond))
	db := c.db()
	const accounts = 45
	killed := false
	for i := range accounts {
		nd := c.nodes[i%len(c.nodes)]
		if killed && nd == c.nodes[1] {
			nd = c.nodes[0]
		}
		c.importAccount(nd, fmt.Sprintf("tenant-%d", i), map[string]any{
			"access_token": fmt.Sprintf("at-%d", i), "refresh_token": fmt.Sprintf("rt-%d", i), "expires_in": 3600})
		if !killed && len(c.hooks.Deliveries()) >= 3 {
			c.nodes[1].kill()
			killed = true
			t.Logf("killed node1 after %d imports, with %d deliveries received", i+1, len(c.hooks.Deliveries()))
		}
	}
	if !killed {
		c.nodes[1].kill()
		t.Log("killed node1 after every import: no delivery had arrived yet")
	}

	rows, err := db.Query(context.Background(), "SELECT id FROM events")
	if err != nil {
		t.Fatal(err)
	}
	want, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < accounts {
		t.Fatalf("%d events written for %d imports", len(want), accounts)
	}
	// A delivery the killed instance had claimed comes back when its lease
	// (webhook_lease, 5s here) runs out.
	var received []webhookEvent
	took := waitFor(t, 3*time.Minute, "every event delivered", func() bool {
		received = parseDeliveries(t, c.hooks.Deliveries())
		seen := map[string]bool{}
		for _, e := range received {
			seen[e.WebhookID] = true
		}
		for _, id := range want {
			if !seen[id] {
				return false
			}
		}
		return true
	})
	t.Logf("all %d events delivered %v after the imports (%d deliveries)", len(want), took, len(received))
	wantSet := map[string]bool{}
	for _, id := range want {
		wantSet[id] = true
	}
	idsOf := map[string]map[string]bool{}
	for _, e := range received {
		if !wantSet[e.WebhookID] {
			t.Fatalf("a delivery with webhook-id %q that no event has", e.WebhookID)
		}
		k := e.Event + " " + e.AccountID
		if idsOf[k] == nil {
			idsOf[k] = map[string]bool{}
		}
		idsOf[k][e.WebhookID] = true
	}
	for k, ids := range idsOf {
		if len(ids) != 1 {
			t.Fatalf("%s delivered under %d webhook-ids", k, len(ids))
		}
	}
}

// TestClusterCacheCoherence: an account deleted through one instance stops
// being served by the others at once, though they had it cached: the
// deletion's NOTIFY drops their entries.
func TestClusterCacheCoherence(t *testing.T) {
	c := newCluster(t, 3)
	tok := c.as.Authorize(t, oauthClient, redirectURI, "erin", nil)
	id := c.importAccount(c.nodes[0], "coherent", map[string]any{
		"access_token": tok.AccessToken, "refresh_token": tok.RefreshToken, "expires_in": 3600})
	for _, nd := range c.nodes {
		for range 3 { // used, so cached, on every instance
			if st, body, err := c.do(nd, "GET", "/proxy/me?integrated_account_id="+id, nil); st != http.StatusOK {
				t.Fatalf("%s: %d %s %v", nd.name, st, body, err)
			}
		}
	}
	if st, body, err := c.do(c.nodes[0], "DELETE", "/integrated-account/"+id, nil); err != nil || st/100 != 2 {
		t.Fatalf("deleting through node0: %d %s %v", st, body, err)
	}
	for _, nd := range c.nodes[1:] {
		// Generous for a busy machine, and still far below the five
		// minutes the entry would live without the NOTIFY.
		took := waitFor(t, time.Minute, nd.name+" refusing the deleted account", func() bool {
			st, _, _ := c.do(nd, "GET", "/proxy/me?integrated_account_id="+id, nil)
			return st == http.StatusNotFound
		})
		t.Logf("%s stopped serving the deleted account %v after the delete returned", nd.name, took)
	}
}
