package tokenstore

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/linkgate/linkgate/account"
)

// NewEvent builds the outbox row for event name about a: its payload is the
// redacted account ({"id"} alone for a deletion).
func NewEvent(name string, a *account.Account, now time.Time) Event {
	var payload any = a.View()
	if name == account.EventDeleted {
		payload = map[string]string{"id": a.ID}
	}
	b, err := json.Marshal(payload)
	if err != nil {
		// A View holds only JSON-safe values; failing here is a bug.
		panic("tokenstore: encoding event payload: " + err.Error())
	}
	return Event{ID: newEventID(), Name: name, AccountID: a.ID, Payload: b, CreatedAt: now.UTC()}
}

// EventsFor builds the outbox rows of a transition's events.
func EventsFor(c account.Change, a *account.Account, now time.Time) []Event {
	return NewEvents(c.Events, a, now)
}

// NewEvents builds the outbox rows of the named events about a.
func NewEvents(names []string, a *account.Account, now time.Time) []Event {
	if len(names) == 0 {
		return nil
	}
	out := make([]Event, 0, len(names))
	for _, name := range names {
		out = append(out, NewEvent(name, a, now))
	}
	return out
}

// newEventID is "evt_" and a time-ordered (version 7) UUID: the events'
// unique index then grows at its end instead of at a random page, which
// keeps writes of many events (a bulk import) from touching a page per
// event.
func newEventID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return "evt_" + uuid.NewString()
	}
	return "evt_" + id.String()
}
