package webhook

import (
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/tokenstore"
)

// TestAccountEventsArriveInCommitOrder: an account's events reach an
// endpoint in the order they were committed, even when the first needs a
// retry and the endpoint has several concurrent senders; another account's
// event is not held up meanwhile.
func TestAccountEventsArriveInCommitOrder(t *testing.T) {
	st := openStore(t)
	rc := newReceiver(t)
	var firstOfA string
	refused := false
	var mu sync.Mutex
	rc.setAnswer(func(_ int, _ http.ResponseWriter, r *http.Request) int {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get(HeaderID) == firstOfA && !refused {
			refused = true
			return http.StatusInternalServerError // retried
		}
		return http.StatusNoContent
	})
	opts := fastOptions(t)
	opts.Concurrency = 4
	d := NewDispatcher(st, []Endpoint{{URL: rc.URL(), Secrets: []string{newSecret(t)}}}, opts)
	evs := []tokenstore.Event{
		{ID: newEventID(), Name: "integrated_account:created", AccountID: "acc_a", Payload: []byte(`{}`), CreatedAt: time.Now()},
		{ID: newEventID(), Name: "integrated_account:active", AccountID: "acc_a", Payload: []byte(`{}`), CreatedAt: time.Now()},
		{ID: newEventID(), Name: "integrated_account:updated", AccountID: "acc_a", Payload: []byte(`{}`), CreatedAt: time.Now()},
		{ID: newEventID(), Name: "integrated_account:created", AccountID: "acc_b", Payload: []byte(`{}`), CreatedAt: time.Now()},
	}
	firstOfA = evs[0].ID
	if err := st.AddEvents(t.Context(), evs); err != nil {
		t.Fatal(err)
	}
	startDispatcher(t, d)
	d.Notify()
	waitFor(t, "every event delivered", 10*time.Second, func() bool {
		return len(deliveriesOf(t, st, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryDelivered})) == 4
	})
	var order []string
	for _, got := range rc.deliveries() {
		var env Envelope
		if err := json.Unmarshal(got.body, &env); err != nil {
			t.Fatal(err)
		}
		if env.ID != evs[3].ID {
			order = append(order, env.ID)
		}
	}
	want := []string{evs[0].ID, evs[0].ID, evs[1].ID, evs[2].ID}
	if len(order) != len(want) {
		t.Fatalf("acc_a's arrivals: %v, want created (refused), created, active, updated", order)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("acc_a's events arrived out of commit order: %v, want %v", order, want)
		}
	}
}
