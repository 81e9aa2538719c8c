package webhook

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/internal/wire"
	"github.com/linkgate/linkgate/tokenstore"
)

// Envelope is the JSON body of every delivery (Truto's shape).
type Envelope struct {
	// ID is the event id, "evt_…"; it is also the webhook-id header.
	ID    string `json:"id"`
	Event string `json:"event"`
	// Payload is the redacted account ({"id"} for a deletion).
	Payload       json.RawMessage `json:"payload"`
	EnvironmentID string          `json:"environment_id"`
	// WebhookID identifies the endpoint the delivery is for.
	WebhookID string `json:"webhook_id"`
	// CreatedAt is when the event happened, RFC 3339 with milliseconds, UTC.
	CreatedAt string `json:"created_at"`
}

// TimeFormat is RFC 3339 with milliseconds, as Truto writes times.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// NewEnvelope builds the envelope of event e for the endpoint webhookID.
// It depends on nothing but its arguments, so every retry and redelivery
// sends the same bytes.
func NewEnvelope(e tokenstore.Event, environmentID, webhookID string) Envelope {
	payload := json.RawMessage(e.Payload)
	if len(payload) == 0 {
		payload = json.RawMessage("{}")
	}
	return Envelope{
		ID:            e.ID,
		Event:         e.Name,
		Payload:       payload,
		EnvironmentID: environmentID,
		WebhookID:     webhookID,
		CreatedAt:     formatTime(e.CreatedAt),
	}
}

// envelope is the envelope of e for the endpoint webhookID, with an
// account payload in Truto's shape when the dispatcher knows its
// environment. It depends only on the event and the configuration, so a
// retry sends the same bytes.
func (d *Dispatcher) envelope(e tokenstore.Event, webhookID string) Envelope {
	env := d.opts.Environment
	if env == nil {
		return NewEnvelope(e, d.opts.EnvironmentID, webhookID)
	}
	if e.Name != account.EventDeleted && e.Name != account.EventTest {
		e.Payload = env.AccountPayload(e.Payload)
	}
	return NewEnvelope(e, env.ID, webhookID)
}

// Marshal encodes the envelope as the delivery body.
func (e Envelope) Marshal() ([]byte, error) {
	return json.Marshal(e)
}

func formatTime(t time.Time) string { return wire.FormatTime(t) }

func newEventID() string { return "evt_" + uuid.NewString() }
