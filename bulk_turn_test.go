package linkgate

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// TestOneBulkOperationAtATime: while a bulk import or bulk delete runs, another
// is answered 429 with a Retry-After before its body is read; each gives the
// turn back when it ends, however it ends.
func TestOneBulkOperationAtATime(t *testing.T) {
	h := &API{app: &App{storeHold: &storeHolder{}, logger: zap.NewNop(), live: new(liveRuntime)}, logger: zap.NewNop()}
	call := func(fn http.HandlerFunc, body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		fn(w, r)
		return w
	}
	h.app.storeHold.bulk.Lock() // a bulk operation in flight
	for name, fn := range map[string]http.HandlerFunc{"import": h.bulkImport, "delete": h.bulkDelete} {
		w := call(fn, `[{"tenant_id":"t","integration":"keyed","context":{"api_key":"k"}}]`)
		if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), "another bulk") {
			t.Errorf("%s during another: %d %q %s", name, w.Code, w.Header().Get("Retry-After"), w.Body)
		}
	}
	h.app.storeHold.bulk.Unlock()
	// Refused and failed operations give the turn back.
	for name, fn := range map[string]http.HandlerFunc{"import": h.bulkImport, "delete": h.bulkDelete} {
		if w := call(fn, `not json`); w.Code == http.StatusTooManyRequests {
			t.Errorf("%s alone: %d %s", name, w.Code, w.Body)
		}
		if !h.app.storeHold.bulk.TryLock() {
			t.Fatalf("%s kept the turn after it ended", name)
		}
		h.app.storeHold.bulk.Unlock()
	}
}
