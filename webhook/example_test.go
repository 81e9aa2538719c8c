package webhook_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/linkgate/linkgate/webhook"
)

// A Go application's webhook handler: read the raw body, verify it before
// parsing it, and dedupe on webhook-id since delivery is at least once.
func ExampleVerify() {
	// The same secrets as in linkgate's config; during a rotation, both.
	secrets := []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}

	seen := map[string]bool{} // use a table with a unique key in production
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "unreadable body", http.StatusBadRequest)
			return
		}
		if err := webhook.Verify(secrets, r.Header, body, 5*time.Minute); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		id := r.Header.Get("webhook-id")
		if seen[id] {
			w.WriteHeader(http.StatusOK) // already handled: acknowledge again
			return
		}
		seen[id] = true
		// … parse body, and on integrated_account:authentication_error ask
		// the customer to reconnect …
		w.WriteHeader(http.StatusNoContent)
	})

	// What linkgate sends, for the sake of the example.
	body := []byte(`{"id":"evt_1","event":"integrated_account:authentication_error","payload":{"id":"acc_1"}}`)
	now := time.Now()
	sig, _ := webhook.Sign(secrets, "evt_1", now, body)
	send := func(signature string) int {
		req := httptest.NewRequest(http.MethodPost, "/hooks", strings.NewReader(string(body)))
		req.Header.Set("webhook-id", "evt_1")
		req.Header.Set("webhook-timestamp", fmt.Sprint(now.Unix()))
		req.Header.Set("webhook-signature", signature)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		return rec.Code
	}
	fmt.Println(send(sig))
	fmt.Println(send(sig))
	fmt.Println(send("v1,Zm9yZ2Vk"))
	// Output:
	// 204
	// 200
	// 401
}
