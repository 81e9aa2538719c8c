package linkflow

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/oauth2"

	"github.com/linkgate/linkgate/account"
)

// TestExchangeFailureLogsStatusAndErrorCode: whatever the provider answers
// to the code exchange, the log says its HTTP status and OAuth error code
// (never the body, which may quote secrets); a call that got no answer
// says what kind of failure it was.
func TestExchangeFailureLogsStatusAndErrorCode(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	s := &Service{log: zap.New(core)}
	in := &account.Integration{Name: "crm"}
	for _, c := range []struct {
		status int
		code   string
	}{{400, "invalid_grant"}, {401, "invalid_client"}, {500, "server_error"}, {503, ""}} {
		logs.TakeAll()
		err := fmt.Errorf("oauth2: %w", &oauth2.RetrieveError{
			Response: &http.Response{StatusCode: c.status}, ErrorCode: c.code, Body: []byte(`{"secret":"do-not-log"}`)})
		s.exchangeFailed(in, err)
		found := false
		for _, e := range logs.All() {
			f := e.ContextMap()
			if f["status"] == int64(c.status) && f["error"] == c.code && f["integration"] == "crm" {
				found = true
			}
			for _, v := range f {
				if fmt.Sprint(v) == `{"secret":"do-not-log"}` {
					t.Fatalf("the answer's body was logged: %v", f)
				}
			}
		}
		if !found {
			t.Errorf("status %d %q: no entry with the status and error code: %v", c.status, c.code, logs.All())
		}
	}
	logs.TakeAll()
	s.exchangeFailed(in, fmt.Errorf("oauth2: %w", context.DeadlineExceeded))
	if e := logs.FilterField(zap.String("cause", "timeout")).All(); len(e) != 1 {
		t.Errorf("a timed-out exchange: entries %v, want one with cause timeout", logs.All())
	}
}
