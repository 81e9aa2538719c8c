package account

import (
	"slices"
	"testing"
	"time"
)

func TestTransition(t *testing.T) {
	tests := []struct {
		from    Status
		trigger Trigger
		to      Status
		events  []string
		wantErr bool
	}{
		{"", Created, StatusActive, []string{EventCreated, EventActive}, false},
		{StatusConnecting, Created, StatusActive, []string{EventCreated, EventActive}, false},
		{StatusActive, Created, StatusActive, nil, true},
		{StatusConnecting, Reconnected, StatusActive, []string{EventCreated, EventActive}, false},
		{StatusNeedsReauth, Reconnected, StatusActive, []string{EventUpdated, EventActive}, false},
		{StatusActive, Reconnected, StatusActive, []string{EventUpdated, EventActive}, false},
		{StatusActive, AuthFailed, StatusNeedsReauth, []string{EventAuthenticationError}, false},
		{StatusNeedsReauth, AuthFailed, StatusNeedsReauth, nil, false},
		{StatusConnecting, AuthFailed, StatusConnecting, nil, false},
		{StatusNeedsReauth, UpstreamOK, StatusActive, []string{EventReactivated}, false},
		{StatusActive, UpstreamOK, StatusActive, nil, false},
		{"bogus", AuthFailed, "bogus", nil, true},
		{StatusActive, "bogus", StatusActive, nil, true},
	}
	for _, tt := range tests {
		t.Run(string(tt.from)+"/"+string(tt.trigger), func(t *testing.T) {
			c, err := Transition(tt.from, tt.trigger)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if c.To != tt.to || !slices.Equal(c.Events, tt.events) {
				t.Fatalf("got %s %v, want %s %v", c.To, c.Events, tt.to, tt.events)
			}
		})
	}
}

func TestApplyRecordsAndClearsLastError(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a := &Account{Status: StatusActive}
	c, err := a.Apply(AuthFailed, &Error{Code: "invalid_grant", Message: "refresh token revoked"}, now)
	if err != nil || a.Status != StatusNeedsReauth || len(c.Events) != 1 {
		t.Fatalf("apply: %v %v %v", err, a.Status, c.Events)
	}
	if a.LastError == nil || a.LastError.Code != "invalid_grant" || !a.LastError.At.Equal(now) {
		t.Fatalf("last error = %+v", a.LastError)
	}
	// A second failure is not a second incident and keeps the first error.
	c, _ = a.Apply(AuthFailed, &Error{Code: "other"}, now.Add(time.Minute))
	if c.Changed() || a.LastError.Code != "invalid_grant" {
		t.Fatalf("second failure changed the account: %+v %+v", c, a.LastError)
	}
	c, _ = a.Apply(UpstreamOK, nil, now.Add(time.Hour))
	if a.Status != StatusActive || a.LastError != nil || c.Events[0] != EventReactivated {
		t.Fatalf("reactivate: %+v %+v", a, c)
	}
}
