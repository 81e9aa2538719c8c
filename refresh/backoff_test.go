package refresh

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
)

// TestEndpointRecoveryEndsOtherAccountsBackoff: during a token-endpoint
// outage each account backs off, its wait doubling with every failure.
// Once the endpoint issues a token for any account of the integration, the
// outage is over: the others retry within BackoffBase instead of waiting
// out minutes of their own back-off.
func TestEndpointRecoveryEndsOtherAccountsBackoff(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		o.BackoffBase = time.Minute
		o.BackoffMax = 30 * time.Minute
	})
	expired := e.clock.Now().Add(-time.Second)
	a := e.connect("acc-a", expired)
	b := e.connect("acc-b", expired)
	c := e.connect("acc-c", expired)

	e.auth.SetFault(testenv.Fault{Status: 503})
	wait := time.Duration(0)
	for range 4 {
		e.clock.Add(wait) // past the previous back-off
		wait = 0
		for _, acc := range []string{a.ID, b.ID} {
			_, err := e.r.Credentials(context.Background(), e.get(acc))
			var re *Error
			if !errors.As(err, &re) || re.Class != Transient {
				t.Fatalf("during the outage: %v", err)
			}
			wait = max(wait, re.RetryAfter)
		}
	}
	calls := e.refreshCalls() // 8: four failures each
	e.auth.ClearFault()

	// The outage is over, but a and b back off for minutes still.
	e.clock.Add(30 * time.Second)
	_, err := e.r.Credentials(context.Background(), e.get(a.ID))
	var re *Error
	if !errors.As(err, &re) || re.RetryAfter < 2*time.Minute {
		t.Fatalf("after four failures, a's back-off = %v; want minutes", err)
	}
	if e.refreshCalls() != calls {
		t.Fatal("a backing-off account called the token endpoint")
	}

	// Another account of the integration succeeds.
	if _, err := e.r.Credentials(context.Background(), e.get(c.ID)); err != nil {
		t.Fatalf("c after the outage: %v", err)
	}
	e.clock.Add(time.Minute) // BackoffBase: the longest spread
	for _, acc := range []string{a.ID, b.ID} {
		cr, err := e.r.Credentials(context.Background(), e.get(acc))
		if err != nil {
			t.Fatalf("%s a minute after the endpoint recovered: %v", acc, err)
		}
		if _, ok := e.auth.ValidAccessToken(cr.AccessToken); !ok {
			t.Fatalf("%s got a dead token", acc)
		}
	}
	if n := e.refreshCalls() - calls; n != 3 {
		t.Errorf("%d token calls after the outage, want 3 (c, a, b)", n)
	}
}

// TestRetryAfterOutlivesAnotherAccountsSuccess: a wait the endpoint asked
// for with Retry-After is kept even when another account succeeds.
func TestRetryAfterOutlivesAnotherAccountsSuccess(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.BackoffBase = time.Second })
	expired := e.clock.Now().Add(-time.Second)
	a := e.connect("acc-a", expired)
	c := e.connect("acc-c", expired)
	e.auth.SetFault(testenv.Fault{Status: 429, RetryAfter: "600", Count: 1})
	if _, err := e.r.Credentials(context.Background(), e.get(a.ID)); err == nil {
		t.Fatal("a succeeded against a 429")
	}
	e.clock.Add(time.Second)
	if _, err := e.r.Credentials(context.Background(), e.get(c.ID)); err != nil {
		t.Fatalf("c: %v", err)
	}
	e.clock.Add(time.Minute)
	var re *Error
	if _, err := e.r.Credentials(context.Background(), e.get(a.ID)); !errors.As(err, &re) || re.Code != "rate_limited" {
		t.Fatalf("a within its Retry-After: %v, want the rate limit kept", err)
	}
}
