package console

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/linkgate/linkgate/account"
	"github.com/linkgate/linkgate/tokenstore"
)

// historySize is how many of an account's events its timeline shows.
const historySize = 50

// historyItem is one line of an account's timeline.
type historyItem struct {
	At time.Time
	// Kind is the line's class: transition, failure, delivery, change or
	// created.
	Kind   string
	Title  string
	Detail string
}

// eventTitles say what each event means for the account.
var eventTitles = map[string]string{
	account.EventCreated:             "Connected for the first time",
	account.EventUpdated:             "Reconnected through a connection link",
	account.EventActive:              "Became active",
	account.EventAuthenticationError: "Needs reauthorization",
	account.EventReactivated:         "Reactivated: a later call succeeded",
	account.EventDeleted:             "Deleted",
}

// history is an account's timeline, newest first: its events (status
// transitions with the failure that caused them), the webhook deliveries
// of those events with each endpoint's last answer, its last failure,
// its last stored change (a token refresh writes one) and its creation.
// The account's credentials are never read into it.
func history(a *account.Account, events []tokenstore.Event, deliveries []tokenstore.Delivery) []historyItem {
	var out []historyItem
	failureShown := false
	for _, ev := range events {
		it := historyItem{At: ev.CreatedAt, Kind: "transition", Title: eventTitles[ev.Name]}
		if it.Title == "" {
			it.Title = ev.Name
		}
		var p struct {
			Status    string         `json:"status"`
			LastError *account.Error `json:"last_error"`
		}
		_ = json.Unmarshal(ev.Payload, &p)
		if ev.Name == account.EventAuthenticationError {
			it.Kind = "failure"
			if p.LastError != nil {
				it.Detail = p.LastError.Code + ": " + p.LastError.Message
				if a.LastError != nil && *a.LastError == *p.LastError {
					failureShown = true
				}
			}
		}
		if it.Detail == "" {
			it.Detail = ev.Name
		}
		out = append(out, it)
	}
	for _, d := range deliveries {
		it := historyItem{At: d.UpdatedAt, Kind: "delivery",
			Title: "Webhook " + d.Event.Name + " " + deliveryVerb(d.Status)}
		it.Detail = endpointLabel(d.Endpoint)
		switch {
		case d.LastStatus != 0:
			it.Detail += fmt.Sprintf(" answered HTTP %d", d.LastStatus)
		case d.LastError != "":
			it.Detail += ": " + d.LastError
		}
		if d.Attempts == 1 {
			it.Detail += " (1 try)"
		} else {
			it.Detail += fmt.Sprintf(" (%d tries)", d.Attempts)
		}
		out = append(out, it)
	}
	if a.LastError != nil && !failureShown {
		out = append(out, historyItem{At: a.LastError.At, Kind: "failure", Title: "Last failure",
			Detail: a.LastError.Code + ": " + a.LastError.Message})
	}
	if !a.UpdatedAt.Equal(a.CreatedAt) {
		detail := "Its credentials or settings were written: a token refresh, a reconnect or an update."
		if !a.Credentials.Expiry.IsZero() {
			detail += " The current access token is valid until " + a.Credentials.Expiry.UTC().Format("2006-01-02 15:04:05 UTC") + "."
		}
		out = append(out, historyItem{At: a.UpdatedAt, Kind: "change", Title: "Last stored change", Detail: detail})
	}
	out = append(out, historyItem{At: a.CreatedAt, Kind: "created", Title: "Account created",
		Detail: string(a.Method) + " account of tenant " + a.TenantID})
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.After(out[j].At) })
	return out
}

func deliveryVerb(s tokenstore.DeliveryStatus) string {
	switch s {
	case tokenstore.DeliveryDelivered:
		return "delivered"
	case tokenstore.DeliveryFailed:
		return "failed"
	}
	return "pending, retrying"
}
