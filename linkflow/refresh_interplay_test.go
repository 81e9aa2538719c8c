package linkflow_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/refresh"
)

// heldAnswers lets token requests reach the provider (which rotates at
// once) and holds their answers until release.
type heldAnswers struct {
	base http.RoundTripper
	held chan struct{}
	open chan struct{}
}

func (g *heldAnswers) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := g.base.RoundTrip(req)
	if strings.HasSuffix(req.URL.Path, "/token") {
		g.held <- struct{}{}
		<-g.open
	}
	return resp, err
}

// TestReconnectDuringARefreshKeepsTheNewGrant: the end user reconnects
// through the real connect page and callback while a refresh of the old
// grant waits for the provider's answer. The callback's grant must stay:
// the late answer belongs to the credentials the reconnect replaced.
func TestReconnectDuringARefreshKeepsTheNewGrant(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	a, _ := h.seedAccount("alice", account.StatusActive, map[string]any{"upstream_user_id": "alice"})
	expired := h.account(a.ID).Clone()
	expired.Credentials.Expiry = time.Now().Add(-time.Second)
	if err := h.store.UpdateAccount(context.Background(), expired, nil); err != nil {
		t.Fatal(err)
	}

	g := &heldAnswers{base: http.DefaultTransport, held: make(chan struct{}, 4), open: make(chan struct{})}
	r := refresh.New(h.store, h.ints, refresh.Options{Client: &http.Client{Transport: g}})
	t.Cleanup(func() { _ = r.Stop() })
	released := false
	release := func() {
		if !released {
			released = true
			close(g.open)
		}
	}
	t.Cleanup(release)

	type result struct {
		c   account.Credentials
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := r.Credentials(context.Background(), h.account(a.ID))
		done <- result{c, err}
	}()
	<-g.held // the provider rotated alice's old grant; its answer is held

	lt := h.linkToken(map[string]any{"integrated_account_id": a.ID})
	if resp := h.connectOAuth(lt.LinkToken, "alice"); resp.status != http.StatusOK {
		t.Fatalf("reconnect callback = %d: %s", resp.status, resp.body)
	}
	reconnected := h.account(a.ID).Credentials
	release()
	res := <-done
	if res.err != nil {
		t.Fatalf("the waiting request: %v", res.err)
	}
	if res.c.AccessToken != reconnected.AccessToken {
		t.Errorf("the waiting request got the old grant's refreshed token, not the reconnected one")
	}
	got := h.account(a.ID)
	if got.Credentials.RefreshToken != reconnected.RefreshToken || got.Credentials.AccessToken != reconnected.AccessToken {
		t.Fatalf("the late refresh of the replaced grant overwrote the reconnect's credentials")
	}
	if !h.auth.ValidRefreshToken(got.Credentials.RefreshToken) {
		t.Errorf("the stored refresh token is dead")
	}
	if got.Status != account.StatusActive {
		t.Errorf("status %s", got.Status)
	}
}
