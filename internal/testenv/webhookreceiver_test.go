package testenv

import (
	"bytes"
	"net/http"
	"testing"
	"time"
)

func post(c *http.Client, url, body string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewBufferString(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Webhook-Id", "msg_1")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp, nil
}

func TestWebhookReceiverRecordsAndScripts(t *testing.T) {
	w := NewWebhookReceiver(t)
	c := &http.Client{Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()

	raw := `{"event":"integrated_account:authentication_error", "payload":{}}`
	resp, err := post(c, w.URL(), raw)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first delivery: %v %v; want 200", resp, err)
	}
	got := w.Deliveries()
	if len(got) != 1 || string(got[0].Body) != raw || got[0].Header.Get("Webhook-Id") != "msg_1" || got[0].Status != 200 || got[0].Path != "/webhook" {
		t.Fatalf("recorded %+v", got)
	}

	w.FailNext(2, http.StatusInternalServerError)
	w.SetRetryAfter("3")
	for i := 0; i < 2; i++ {
		resp, err := post(c, w.URL(), raw)
		if err != nil || resp.StatusCode != 500 || resp.Header.Get("Retry-After") != "3" {
			t.Fatalf("scripted failure %d: %v %v; want 500 with Retry-After 3", i, resp, err)
		}
	}
	if resp, err := post(c, w.URL(), raw); err != nil || resp.StatusCode != 200 || resp.Header.Get("Retry-After") != "" {
		t.Fatalf("after FailNext ran out: %v %v; want 200 without Retry-After", resp, err)
	}

	w.SetStatus(http.StatusGone)
	for i := 0; i < 2; i++ {
		if resp, err := post(c, w.URL(), raw); err != nil || resp.StatusCode != http.StatusGone {
			t.Fatalf("SetStatus call %d: %v %v; want 410", i, resp, err)
		}
	}
	if n := len(w.Deliveries()); n != 6 {
		t.Fatalf("%d deliveries recorded, want 6", n)
	}
	w.Reset()
	if resp, err := post(c, w.URL(), raw); err != nil || resp.StatusCode != 200 || len(w.Deliveries()) != 1 {
		t.Fatalf("after Reset: %v %v, %d deliveries; want 200 and 1", resp, err, len(w.Deliveries()))
	}
}

func TestWebhookReceiverWaitFor(t *testing.T) {
	w := NewWebhookReceiver(t)
	sent := make(chan struct{})
	defer func() { <-sent }()
	go func() {
		defer close(sent)
		for i := 0; i < 3; i++ {
			resp, err := post(http.DefaultClient, w.URL(), "{}")
			if err != nil || resp.StatusCode != 200 {
				t.Errorf("delivery %d: %v %v", i, resp, err)
			}
		}
	}()
	if got := w.WaitFor(t, 3, 10*time.Second); len(got) < 3 {
		t.Fatalf("WaitFor returned %d deliveries, want 3", len(got))
	}
}

func TestWebhookReceiverDownAndUp(t *testing.T) {
	w := NewWebhookReceiver(t)
	url := w.URL()
	c := &http.Client{Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	if resp, err := post(c, url, "{}"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("before Down: %v %v", resp, err)
	}

	w.Down()
	// Twice: the first may meet the kept-alive connection Down closed, the
	// second must find nothing listening.
	for i := 0; i < 2; i++ {
		if resp, err := post(c, url, "{}"); err == nil {
			t.Fatalf("delivery %d while down answered %d", i, resp.StatusCode)
		}
	}
	if n := len(w.Deliveries()); n != 1 {
		t.Fatalf("%d deliveries recorded while down, want just the first", n)
	}

	w.Up()
	if w.URL() != url {
		t.Fatalf("URL moved from %s to %s", url, w.URL())
	}
	if resp, err := post(c, url, "{}"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after Up: %v %v", resp, err)
	}
	if n := len(w.Deliveries()); n != 2 {
		t.Fatalf("%d deliveries after Up, want 2", n)
	}
}
