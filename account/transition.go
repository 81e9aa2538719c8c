package account

import (
	"fmt"
	"time"
)

// Trigger is something that happened to an account and may change its status.
type Trigger string

// The triggers of the state machine (DESIGN §3).
const (
	// Created: a new account was stored with working credentials (import
	// through the API, or a new connection through a link token).
	Created Trigger = "created"
	// Reconnected: the end user re-authorized through a link token.
	Reconnected Trigger = "reconnected"
	// AuthFailed: a refresh was refused or an upstream answered 401.
	AuthFailed Trigger = "auth_failed"
	// UpstreamOK: an upstream call for the account succeeded.
	UpstreamOK Trigger = "upstream_ok"
)

// Event names sent to webhook endpoints.
const (
	EventCreated             = "integrated_account:created"
	EventUpdated             = "integrated_account:updated"
	EventActive              = "integrated_account:active"
	EventAuthenticationError = "integrated_account:authentication_error"
	EventReactivated         = "integrated_account:reactivated"
	EventDeleted             = "integrated_account:deleted"
	EventTest                = "test"
)

// Events lists every event name linkgate can send, for event filters.
var Events = []string{
	EventCreated, EventUpdated, EventActive, EventAuthenticationError,
	EventReactivated, EventDeleted, EventTest,
}

// Change is the outcome of a transition: the new status and the events that
// must be written, in the same transaction, with it.
type Change struct {
	From, To Status
	Events   []string
}

// Changed reports whether the transition changed anything worth writing.
func (c Change) Changed() bool { return c.From != c.To || len(c.Events) > 0 }

// Transition is the state machine: the one place that decides what a trigger
// does to an account in status from. A trigger that does not apply to from is
// not an error when it simply changes nothing (a second failure of an account
// that already needs reauthorization changes nothing and sends no second
// alarm); it is an error when it makes no sense.
func Transition(from Status, t Trigger) (Change, error) {
	c := Change{From: from, To: from}
	switch t {
	case Created:
		if from != "" && from != StatusConnecting {
			return c, fmt.Errorf("account already exists in status %s", from)
		}
		c.To = StatusActive
		c.Events = []string{EventCreated, EventActive}
	case Reconnected:
		switch from {
		case StatusConnecting:
			c.To = StatusActive
			c.Events = []string{EventCreated, EventActive}
		case StatusActive, StatusNeedsReauth:
			c.To = StatusActive
			c.Events = []string{EventUpdated, EventActive}
		default:
			return c, fmt.Errorf("cannot reconnect an account in status %q", from)
		}
	case AuthFailed:
		switch from {
		case StatusActive:
			c.To = StatusNeedsReauth
			c.Events = []string{EventAuthenticationError}
		case StatusNeedsReauth, StatusConnecting:
			// Already failing, or never connected: no new incident.
		default:
			return c, fmt.Errorf("unknown status %q", from)
		}
	case UpstreamOK:
		switch from {
		case StatusNeedsReauth:
			c.To = StatusActive
			c.Events = []string{EventReactivated}
		case StatusActive, StatusConnecting:
		default:
			return c, fmt.Errorf("unknown status %q", from)
		}
	default:
		return c, fmt.Errorf("unknown trigger %q", t)
	}
	return c, nil
}

// Apply runs the trigger on a, updating its status, last error and times, and
// returns the change so the caller can store it with its events in one
// transaction. cause is recorded as the last error on AuthFailed; a trigger
// that makes the account active clears the last error.
func (a *Account) Apply(t Trigger, cause *Error, now time.Time) (Change, error) {
	c, err := Transition(a.Status, t)
	if err != nil {
		return c, err
	}
	switch {
	case t == AuthFailed && c.From != c.To:
		if cause == nil {
			cause = &Error{Code: "unauthorized", Message: "the account can no longer authenticate"}
		}
		e := *cause
		if e.At.IsZero() {
			e.At = now
		}
		a.LastError = &e
	case c.To == StatusActive && c.From != c.To:
		a.LastError = nil
		a.NextProbeAt = time.Time{}
	}
	a.Status = c.To
	if c.Changed() {
		a.UpdatedAt = now
	}
	return c, nil
}
