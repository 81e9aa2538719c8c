package webhook

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/wire"
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

	// A test event goes to the endpoint at once; the answer says how it
	// answered.
	rec := doAPI(t, api, http.MethodPost, "/webhook/test")
	var res wire.WebhookTestResult
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &res) != nil || !res.Success ||
		!strings.HasPrefix(res.EventID, "evt_") || len(res.Results) != 1 || res.Results[0].Status != http.StatusNoContent {
		t.Fatalf("POST /webhook/test: %d %s", rec.Code, rec.Body)
	}
	noSecrets(t, rec.Body.String())
	if rc.count() != 1 {
		t.Fatalf("the endpoint got %d requests, want the test event", rc.count())
	}
	if got := rc.deliveries()[0]; got.header.Get(HeaderID) != res.EventID || Verify([]string{sec}, got.header, got.body, 0) != nil {
		t.Fatalf("test delivery: %v", got.header)
	}

	// An event of the outbox is delivered and logged.
	created := struct{ ID string }{addTestEvents(t, st, 1)[0].ID}
	d.Notify()
	waitFor(t, "the event", 10*time.Second, func() bool { return rc.count() == 2 })
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
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"id":"wh_main"`) || !strings.Contains(rec.Body.String(), `"is_active":true`) ||
		!strings.Contains(rec.Body.String(), `"event_types":["test"]`) {
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
		{http.MethodGet, "/webhook/wh_unknown", http.StatusNotFound},
		{http.MethodPatch, "/webhook/wh_main", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/webhook/wh_main", http.StatusMethodNotAllowed},
		{http.MethodPost, "/webhook", http.StatusMethodNotAllowed},
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
	if !strings.Contains(rec.Body.String(), `"is_active":false`) || !strings.Contains(rec.Body.String(), "410") {
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

// TestWebhookTestEvent: POST /webhook/test {"id"} sends to that endpoint
// only, whatever its event filter, and reports the endpoint's actual
// answer; without an id every endpoint gets it.
func TestWebhookTestEvent(t *testing.T) {
	st := openStore(t)
	good, bad := newReceiver(t), newReceiver(t)
	bad.setAnswer(func(int, http.ResponseWriter, *http.Request) int { return http.StatusInternalServerError })
	plain := "6e17561c-a20c-44ce-b8b5-caff0bf786fe"
	d := NewDispatcher(st, []Endpoint{
		// The filter leaves test events out: a test asked for still goes.
		{ID: "wh_good", URL: good.URL(), Secrets: []string{plain}, Events: []string{"integrated_account:*"}},
		{ID: "wh_bad", URL: bad.URL(), Secrets: []string{newSecret(t)}},
	}, fastOptions(t))
	startDispatcher(t, d)
	api := NewAPI(st, d)
	post := func(body string) (int, wire.WebhookTestResult) {
		t.Helper()
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/webhook/test", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		api.ServeHTTP(rec, req)
		var res wire.WebhookTestResult
		_ = json.Unmarshal(rec.Body.Bytes(), &res)
		return rec.Code, res
	}

	code, res := post(`{"id":"wh_good"}`)
	if code != http.StatusOK || !res.Success || len(res.Results) != 1 || res.Results[0].ID != "wh_good" || res.Results[0].Status != http.StatusNoContent {
		t.Fatalf("test of wh_good: %d %+v", code, res)
	}
	if good.count() != 1 || bad.count() != 0 {
		t.Fatalf("deliveries: good %d, bad %d; want the named endpoint only", good.count(), bad.count())
	}
	got := good.deliveries()[0]
	var env Envelope
	if json.Unmarshal(got.body, &env) != nil || env.Event != "test" || env.WebhookID != "wh_good" {
		t.Fatalf("test envelope: %s", got.body)
	}
	if err := Verify([]string{plain}, got.header, got.body, 0); err != nil {
		t.Fatalf("signature with the plain secret: %v", err)
	}

	code, res = post(`{"id":"wh_bad"}`)
	if code != http.StatusOK || res.Success || len(res.Results) != 1 || res.Results[0].Status != http.StatusInternalServerError || res.Results[0].Error == "" {
		t.Fatalf("test of an endpoint answering 500: %d %+v", code, res)
	}
	code, res = post(``)
	if code != http.StatusOK || res.Success || len(res.Results) != 2 {
		t.Fatalf("test of every endpoint: %d %+v", code, res)
	}
	if code, _ := post(`{"id":"wh_nope"}`); code != http.StatusNotFound {
		t.Fatalf("unknown id: %d", code)
	}
	if code, _ := post(`{"id":""}`); code != http.StatusBadRequest {
		t.Fatalf("empty id: %d", code)
	}
	// A test is not an outbox event: nothing is queued to be sent again.
	if n, err := st.PendingDeliveries(context.Background()); err != nil || n != 0 {
		t.Fatalf("pending deliveries after tests: %d %v", n, err)
	}
}

// A delivery whose endpoint keeps failing is still pending while retries
// remain; ?status=retrying shows it before the retries run out, and
// ?status=failed does not.
func TestAPIListsRetryingDeliveries(t *testing.T) {
	st := openStore(t)
	rc := newReceiver(t)
	rc.setAnswer(func(int, http.ResponseWriter, *http.Request) int { return http.StatusInternalServerError })
	opts := fastOptions(t)
	opts.Schedule = []time.Duration{0, time.Hour}
	d := NewDispatcher(st, []Endpoint{{ID: "wh_main", URL: rc.URL(), Secrets: []string{newSecret(t)}}}, opts)
	startDispatcher(t, d)
	api := NewAPI(st, d)
	addTestEvents(t, st, 1)
	d.Notify()
	waitFor(t, "a failed attempt", 10*time.Second, func() bool {
		return len(deliveriesOf(t, st, tokenstore.DeliveryFilter{Status: tokenstore.DeliveryRetrying})) == 1
	})
	rec := doAPI(t, api, http.MethodGet, "/webhook-delivery?status=retrying")
	var list struct{ Result []DeliveryView }
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &list) != nil || len(list.Result) != 1 ||
		list.Result[0].Status != "pending" || list.Result[0].Attempts != 1 || list.Result[0].LastStatus != http.StatusInternalServerError {
		t.Fatalf("GET ?status=retrying: %d %s", rec.Code, rec.Body)
	}
	if rec := doAPI(t, api, http.MethodGet, "/webhook-delivery?status=failed"); !strings.Contains(rec.Body.String(), `"result":[]`) {
		t.Fatalf("a delivery with retries left is listed as failed: %s", rec.Body)
	}
}
