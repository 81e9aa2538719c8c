package refresh

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"golang.org/x/oauth2"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/testenv"
)

func tokenWith(access, refresh string) *oauth2.Token {
	return &oauth2.Token{AccessToken: access, RefreshToken: refresh, TokenType: "bearer", ExpiresIn: 3600}
}

// A transient failure never blames the end user: the still-valid token keeps
// being served, the status does not change, no event is written, and the
// next attempt after the back-off succeeds.
func TestTransientFaults(t *testing.T) {
	cases := []struct {
		name  string
		fault testenv.Fault
		code  string
	}{
		{"hang past the hard limit", testenv.Fault{Delay: 3 * time.Second, Count: 1}, "timeout"},
		{"dropped connection", testenv.Fault{DropConnection: true, Count: 1}, "network"},
		{"503", testenv.Fault{Status: 503, Count: 1}, "server_error"},
		{"html", testenv.Fault{HTML: true, Count: 1}, "malformed_response"},
		{"no access token", testenv.Fault{NoAccessToken: true, Count: 1}, "malformed_response"},
		{"negative expires_in", testenv.Fault{NegativeExpiresIn: true, Count: 1}, "malformed_response"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(o *Options) {
				// Short only for the hang: a slow machine must not turn
				// another fault into a lost answer.
				if tc.fault.Delay > 0 {
					o.TokenTimeout = 300 * time.Millisecond
					o.TokenHardLimit = 300 * time.Millisecond
					o.LockTimeout = lockTimeout
				}
			})
			a := e.connect("acc-fault", e.clock.Now().Add(30*time.Second))
			e.auth.SetFault(tc.fault)

			// Inside the skew: the background refresh fails, the valid
			// token is still served.
			c, err := e.r.Credentials(context.Background(), a)
			if err != nil || c.AccessToken != a.Credentials.AccessToken {
				t.Fatalf("valid token not served: %v", err)
			}
			eventually(t, "the failure is logged", func() bool { return e.logged(zapcore.WarnLevel, "token endpoint") })

			// The classified failure is what callers get while backing off.
			var re *Error
			eventually(t, "the background refresh ends", func() bool {
				e.r.mu.Lock()
				defer e.r.mu.Unlock()
				return !e.r.background[a.ID]
			})
			e.r.mu.Lock()
			b := e.r.backoff[a.ID]
			e.r.mu.Unlock()
			if b == nil || b.last == nil {
				t.Fatal("no back-off recorded")
			}
			re = b.last
			var err2 error = re
			if re.Class != Transient || re.Code != tc.code {
				t.Fatalf("got %v, want transient %s", re, tc.code)
			}
			e.get(a.ID) // learn a salvaged refresh token, if any
			e.assertNoSecretIn(re)
			err = err2
			if errors.Is(err, ErrNeedsReauth) {
				t.Fatal("a transient failure reads as needs_reauth")
			}
			got := e.get(a.ID)
			// A call sent and never answered (a hang, a dropped
			// connection) may have rotated the grant: the account says so,
			// and stays active.
			uncertain := tc.fault.Delay > 0 || tc.fault.DropConnection
			marked := got.LastError != nil && got.LastError.Code == CodeOutcomeUnknown
			if got.Status != account.StatusActive || (got.LastError != nil && !(uncertain && marked)) || (uncertain && !marked) {
				t.Fatalf("a transient failure changed the account: %s %+v", got.Status, got.LastError)
			}
			if evs := e.eventsOf(a.ID); len(evs) != 0 {
				t.Fatalf("a transient failure wrote events %v", evs)
			}
			if tc.fault.Delay > 0 {
				// The server rotated behind the lost answer; what follows
				// is TestLostAnswerIsNotRetriedAndTheNextAttemptFindsOut.
				return
			}
			// The grant survives: once the fault is gone, a refresh works
			// (for negative expires_in this needs the salvaged rotated
			// refresh token, since the server did rotate).
			e.auth.ClearFault()
			eventually(t, "a refresh succeeds after the fault", func() bool {
				err := e.r.Refresh(context.Background(), a.ID)
				if err != nil {
					t.Logf("refresh after the fault: %v", err)
				}
				return err == nil
			})
			if got := e.get(a.ID); got.Status != account.StatusActive || got.LastError != nil {
				t.Fatalf("status %s, last error %+v after recovery", got.Status, got.LastError)
			}
		})
	}
}

func TestRateLimitHonoursRetryAfter(t *testing.T) {
	e := newEnv(t, nil)
	a := e.connect("acc-429", e.clock.Now().Add(-time.Second))
	e.auth.SetFault(testenv.Fault{Status: 429, RetryAfter: "120", Count: 1})
	_, err := e.r.Credentials(context.Background(), a)
	var re *Error
	if !errors.As(err, &re) || re.Class != Transient || re.Code != "rate_limited" || re.RetryAfter < 119*time.Second {
		t.Fatalf("got %v (%+v), want transient rate_limited with Retry-After 120s", err, re)
	}
	// Within the two minutes: fail fast, no call.
	e.clock.Add(time.Minute)
	_, err = e.r.Credentials(context.Background(), a)
	if !errors.As(err, &re) || re.Code != "rate_limited" || re.RetryAfter > 61*time.Second {
		t.Fatalf("during Retry-After: %v", err)
	}
	if n := e.refreshCalls(); n != 1 {
		t.Fatalf("%d token calls during Retry-After", n)
	}
	e.clock.Add(61 * time.Second)
	if _, err := e.r.Credentials(context.Background(), a); err != nil {
		t.Fatalf("after Retry-After: %v", err)
	}
}

func TestMisconfiguredClientBlamesTheIntegrationNotTheUser(t *testing.T) {
	e := newEnv(t, nil)
	a := e.connect("acc-misconf", e.clock.Now().Add(-time.Second))
	// A real rejection: the configured secret is wrong.
	e.integ.ClientSecret = "wrong-secret-41b2"
	e.remember("wrong-secret-41b2")
	_, err := e.r.Credentials(context.Background(), a)
	var re *Error
	if !errors.As(err, &re) || re.Class != Misconfigured || re.Code != "invalid_client" {
		t.Fatalf("got %v, want misconfigured invalid_client", err)
	}
	e.assertNoSecretIn(err)
	if got := e.get(a.ID); got.Status != account.StatusActive || got.LastError != nil {
		t.Fatalf("a configuration error blamed the account: %s", got.Status)
	}
	if evs := e.eventsOf(a.ID); len(evs) != 0 {
		t.Fatalf("events %v", evs)
	}
	found := false
	for _, en := range e.logs.FilterLevelExact(zapcore.ErrorLevel).All() {
		if en.ContextMap()["integration"] == e.integ.Name {
			found = true
		}
	}
	if !found {
		t.Fatal("no error-level log naming the integration")
	}
	// unauthorized_client is the same class.
	e.integ.ClientSecret = clientSecret
	e.r.clearBackoff(a.ID)
	e.auth.SetFault(testenv.Fault{Error: "unauthorized_client", Count: 1})
	if err := e.r.Refresh(context.Background(), a.ID); !errors.As(err, &re) || re.Class != Misconfigured {
		t.Fatalf("unauthorized_client: %v", err)
	}
	if e.get(a.ID).Status != account.StatusActive {
		t.Fatal("unauthorized_client changed the status")
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		status int
		code   string
		desc   string
		want   Class
	}{
		{400, "invalid_grant", "", Revoked},
		{401, "invalid_token", "", Revoked},
		{400, "invalid_request", "The refresh token has been revoked", Revoked},
		{400, "invalid_client", "client secret expired", Misconfigured},
		{401, "unauthorized_client", "", Misconfigured},
		{400, "invalid_scope", "", Misconfigured},
		{503, "temporarily_unavailable", "", Transient},
		{500, "invalid_grant", "", Transient},
		{429, "", "", Transient},
		{403, "", "", Transient},
		{200, "temporarily_unavailable", "", Transient},
	}
	for _, tc := range cases {
		re := &oauth2.RetrieveError{ErrorCode: tc.code, ErrorDescription: tc.desc}
		re.Response = newResponse(tc.status)
		if got := classify(re, nil); got.Class != tc.want {
			t.Errorf("%d %s %q: class %s, want %s", tc.status, tc.code, tc.desc, got.Class, tc.want)
		}
	}
	// An echoed secret never reaches the message.
	re := &oauth2.RetrieveError{ErrorCode: "invalid_grant", ErrorDescription: "token rt-secret-1 is revoked", Response: newResponse(400)}
	if got := classify(re, []string{"rt-secret-1"}); got.Message != "token "+account.Redacted+" is revoked" {
		t.Errorf("message %q", got.Message)
	}
}

func newResponse(status int) *http.Response {
	return &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {"application/json"}}}
}
