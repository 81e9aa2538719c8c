package webhook

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/tokenstore"
)

func TestAPI(t *testing.T) {
	st := openStore(t)
	rc := newReceiver(t)
	sec := newSecret(t)
	url := rc.URL() + "?token=receiver-secret"
	d := NewDispatcher(st, []Endpoint{{ID: "wh_main", URL: url, Secrets: []string{sec}, Events: []string{"test"}}}, fastOptions(t))
	startDispatcher(t, d)
	api := NewAPI(st, d)
	noSecrets := func(t *testing.T, body string) {
		t.Helper()
		for _, s := range []string{strings.TrimPrefix(sec, SecretPrefix), "receiver-secret"} {
			if strings.Contains(body, s) {
				t.Fatalf("response shows a secret: %s", body)
			}
		}
	}

	// A test event reaches the endpoint.
	rec := doAPI(t, api, http.MethodPost, "/webhook/test")
	var created struct {
		Success bool
		ID      string
	}
	if rec.Code != http.StatusCreated || json.Unmarshal(rec.Body.Bytes(), &created) != nil || !created.Success ||
		!strings.HasPrefix(created.ID, "evt_") {
		t.Fatalf("POST /webhook/test: %d %s", rec.Code, rec.Body)
	}
	waitFor(t, "the test event", 10*time.Second, func() bool { return rc.count() == 1 })
	if got := rc.deliveries()[0]; got.header.Get(HeaderID) != created.ID || Verify([]string{sec}, got.header, got.body, 0) != nil {
		t.Fatalf("test delivery: %v", got.header)
	}
	waitFor(t, "delivered", 5*time.Second, func() bool {
		return len(deliveriesOf(t, st, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryDelivered})) == 1
	})

	// The delivery log.
	rec = doAPI(t, api, http.MethodGet, "/webhook-delivery?status=delivered&event=test&limit=10")
	var list struct {
		Result     []DeliveryView
		NextCursor *string `json:"next_cursor"`
	}
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &list) != nil || len(list.Result) != 1 || list.NextCursor != nil {
		t.Fatalf("GET /webhook-delivery: %d %s", rec.Code, rec.Body)
	}
	noSecrets(t, rec.Body.String())
	item := list.Result[0]
	if item.EventID != created.ID || item.Event != "test" || item.Status != "delivered" || item.Attempts != 1 ||
		item.LastStatus != http.StatusNoContent || item.NextAttemptAt != nil || item.CreatedAt == "" {
		t.Fatalf("item = %+v", item)
	}
	rec = doAPI(t, api, http.MethodGet, "/webhook-delivery?status=failed")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"result":[]`) {
		t.Fatalf("filtered list: %d %s", rec.Code, rec.Body)
	}
	rec = doAPI(t, api, http.MethodGet, "/webhook-delivery/"+item.ID)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), item.ID) {
		t.Fatalf("GET one: %d %s", rec.Code, rec.Body)
	}
	noSecrets(t, rec.Body.String())

	// Endpoints, never their secrets.
	rec = doAPI(t, api, http.MethodGet, "/webhook")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"id":"wh_main"`) || !strings.Contains(rec.Body.String(), `"disabled":false`) {
		t.Fatalf("GET /webhook: %d %s", rec.Code, rec.Body)
	}
	noSecrets(t, rec.Body.String())

	// Bad input: clear 4xx, JSON, nothing changed.
	for _, c := range []struct {
		method, target string
		status         int
	}{
		{http.MethodGet, "/webhook-delivery?status=lost", http.StatusBadRequest},
		{http.MethodGet, "/webhook-delivery?event=nope", http.StatusBadRequest},
		{http.MethodGet, "/webhook-delivery?limit=0", http.StatusBadRequest},
		{http.MethodGet, "/webhook-delivery?limit=x", http.StatusBadRequest},
		{http.MethodGet, "/webhook-delivery?next_cursor=garbage", http.StatusBadRequest},
		{http.MethodGet, "/webhook-delivery/dlv_unknown", http.StatusNotFound},
		{http.MethodPost, "/webhook-delivery/dlv_unknown/redeliver", http.StatusNotFound},
		{http.MethodPost, "/webhook/wh_unknown/enable", http.StatusNotFound},
		{http.MethodGet, "/webhook/test", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/webhook-delivery/" + item.ID, http.StatusMethodNotAllowed},
		{http.MethodGet, "/webhook-deliveries", http.StatusNotFound},
	} {
		rec := doAPI(t, api, c.method, c.target)
		var e struct {
			StatusCode int
			Error      string
			Message    string
		}
		if rec.Code != c.status || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.StatusCode != c.status || e.Message == "" {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.target, rec.Code, rec.Body, c.status)
		}
	}
	if g, err := st.GetDelivery(context.Background(), item.ID); err != nil || g.Status != tokenstore.DeliveryDelivered || g.Attempts != 1 {
		t.Fatalf("bad requests changed the delivery: %+v %v", g, err)
	}
}

func TestAPIEnableAfterGone(t *testing.T) {
	st := openStore(t)
	rc := newReceiver(t)
	rc.setAnswer(func(n int, _ http.ResponseWriter, _ *http.Request) int {
		if n == 1 {
			return http.StatusGone
		}
		return http.StatusOK
	})
	d := NewDispatcher(st, []Endpoint{{ID: "wh_main", URL: rc.URL(), Secrets: []string{newSecret(t)}}}, fastOptions(t))
	startDispatcher(t, d)
	api := NewAPI(st, d)
	addTestEvents(t, st, 1)
	d.Notify()
	waitFor(t, "the 410 recorded", 10*time.Second, func() bool {
		return len(deliveriesOf(t, st, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryFailed})) == 1
	})
	rec := doAPI(t, api, http.MethodGet, "/webhook")
	if !strings.Contains(rec.Body.String(), `"disabled":true`) || !strings.Contains(rec.Body.String(), "410") {
		t.Fatalf("GET /webhook after 410: %s", rec.Body)
	}
	if rec := doAPI(t, api, http.MethodPost, "/webhook/wh_main/enable"); rec.Code != http.StatusOK {
		t.Fatalf("enable: %d %s", rec.Code, rec.Body)
	}
	failed := deliveriesOf(t, st, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryFailed})
	if len(failed) != 1 {
		t.Fatalf("failed deliveries: %v", failed)
	}
	if rec := doAPI(t, api, http.MethodPost, "/webhook-delivery/"+failed[0].ID+"/redeliver"); rec.Code != http.StatusOK {
		t.Fatalf("redeliver: %d %s", rec.Code, rec.Body)
	}
	waitFor(t, "delivered after enabling", 10*time.Second, func() bool {
		g, err := st.GetDelivery(context.Background(), failed[0].ID)
		return err == nil && g.Status == tokenstore.DeliveryDelivered
	})
}
