package linkgate_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
)

// eventRecorder is a Caddy event handler module, as another Caddy module
// subscribing to linkgate's events would be.
type eventRecorder struct{}

var (
	recordedMu sync.Mutex
	recorded   []caddy.Event
)

func (eventRecorder) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.linkgate_test_recorder", New: func() caddy.Module { return new(eventRecorder) }}
}

func (eventRecorder) Handle(_ context.Context, e caddy.Event) error {
	recordedMu.Lock()
	defer recordedMu.Unlock()
	recorded = append(recorded, e)
	return nil
}

func init() { caddy.RegisterModule(eventRecorder{}) }

var _ caddyevents.Handler = eventRecorder{}

func TestAccountEventsAreCaddyEvents(t *testing.T) {
	g := newGateway(t)
	cfg, err := adapt(t, g.expand(`{
	admin off
	integrated_accounts {
		storage sqlite {{DATA}}/linkgate.db
		api_token test-api-token-0123456789
		public_url http://{{GATEWAY}}
		integration keyed {
			auth api_key
			base_url http://127.0.0.1:1
		}
	}
}
http://{{GATEWAY}} {
	accounts_api
}`))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(cfg, &c); err != nil {
		t.Fatal(err)
	}
	c["apps"].(map[string]any)["events"] = map[string]any{"subscriptions": []any{map[string]any{
		"events":   []string{"integrated_account:created", "integrated_account:active"},
		"handlers": []any{map[string]any{"handler": "linkgate_test_recorder"}},
	}}}
	raw, _ := json.Marshal(c)
	recordedMu.Lock()
	recorded = nil
	recordedMu.Unlock()
	if err := caddy.Load(raw, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	id := g.importAccount(map[string]any{"tenant_id": "ev", "integration": "keyed", "context": map[string]any{"api_key": "secret-key-in-event-test"}})
	deadline := time.Now().Add(10 * time.Second)
	for {
		recordedMu.Lock()
		got := append([]caddy.Event(nil), recorded...)
		recordedMu.Unlock()
		if len(got) >= 2 {
			names := map[string]bool{}
			for _, e := range got {
				names[e.Name()] = true
				if e.Data["integrated_account_id"] != id {
					t.Errorf("event %s is about %v, want %s", e.Name(), e.Data["integrated_account_id"], id)
				}
				b, _ := json.Marshal(e.Data)
				if strings.Contains(string(b), "secret-key-in-event-test") {
					t.Errorf("event data carries the API key: %s", b)
				}
			}
			if !names["integrated_account:created"] || !names["integrated_account:active"] {
				t.Errorf("events = %v", names)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d Caddy events after 10s, want created and active", len(got))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
