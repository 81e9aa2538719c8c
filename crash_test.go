package linkgate_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testenv"
	"github.com/linkgate/linkgate/webhook"
)

// slowReceiver records webhook deliveries after holding each one for a
// while, so that a crash finds deliveries in flight.
type slowReceiver struct {
	srv   *httptest.Server
	delay time.Duration
	mu    sync.Mutex
	got   []received
}

type received struct {
	id    string
	event string
	acct  string
}

func newSlowReceiver(t *testing.T, delay time.Duration) *slowReceiver {
	s := &slowReceiver{delay: delay}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		select {
		case <-time.After(s.delay):
		case <-r.Context().Done():
			return
		}
		if err := webhook.Verify([]string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, r.Header, body, time.Hour); err != nil {
			t.Errorf("a delivery does not verify: %v", err)
		}
		var env struct {
			ID      string `json:"id"`
			Event   string `json:"event"`
			Payload struct {
				ID string `json:"id"`
			} `json:"payload"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			t.Errorf("delivery body: %v", err)
		}
		if env.ID != r.Header.Get("webhook-id") {
			t.Errorf("envelope id %s, webhook-id %s", env.ID, r.Header.Get("webhook-id"))
		}
		s.mu.Lock()
		s.got = append(s.got, received{id: env.ID, event: env.Event, acct: env.Payload.ID})
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *slowReceiver) deliveries() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.got...)
}

// process is a Caddy process built from ./cmd/caddy.
type process struct {
	cmd *exec.Cmd
	log *bytes.Buffer
}

func startProcess(t *testing.T, bin, config, dataHome string) *process {
	t.Helper()
	var log bytes.Buffer
	cmd := exec.Command(bin, "run", "--config", config, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dataHome)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, log: &log}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})
	return p
}

func (p *process) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
}

// TestKilledProcessLosesNoWebhook kills a real Caddy process with SIGKILL
// while webhook deliveries are in flight and pending, restarts it on the same
// SQLite file, and checks that every event arrives, under one webhook-id each.
func TestKilledProcessLosesNoWebhook(t *testing.T) {
	dir := t.TempDir()
	bin := testenv.CaddyBinary(t)
	recv := newSlowReceiver(t, 150*time.Millisecond)
	g := newGateway(t)
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, []byte(g.expand(`{
	admin off
	integrated_accounts {
		storage sqlite {{DATA}}/linkgate.db
		api_token test-api-token-0123456789
		public_url http://{{GATEWAY}}
		webhook_timeout 2s
		webhook_lease 3s
		webhook_retry_schedule 0s 200ms 500ms 1s 1s 2s 2s 5s 5s
		webhook {{HOOK}} {
			secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
		}
		integration keyed {
			auth api_key
			base_url http://127.0.0.1:1
		}
	}
}
http://{{GATEWAY}} {
	accounts_api
}`, "{{HOOK}}", recv.srv.URL+"/hooks")), 0o600); err != nil {
		t.Fatal(err)
	}
	dataHome := filepath.Join(dir, "xdg")

	ready := func() {
		deadline := time.Now().Add(30 * time.Second)
		for {
			req, _ := http.NewRequest("GET", g.base+"/integrated-account?limit=1", nil)
			req.Header.Set("Authorization", "Bearer "+apiToken)
			if resp, err := g.client.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("the Caddy process did not become ready")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	first := startProcess(t, bin, config, dataHome)
	ready()
	const accounts = 40
	var ids []string
	for i := range accounts {
		ids = append(ids, g.importAccount(map[string]any{"tenant_id": fmt.Sprintf("crash-%d", i), "integration": "keyed",
			"context": map[string]any{"api_key": "k"}}))
	}
	// Let some deliveries finish and others start, then crash.
	deadline := time.Now().Add(20 * time.Second)
	for len(recv.deliveries()) < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("no delivery before the crash:\n%s", first.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	first.kill(t)
	before := len(recv.deliveries())
	if before >= 2*accounts {
		t.Fatalf("all %d events were delivered before the crash: the test proves nothing", before)
	}

	second := startProcess(t, bin, config, dataHome)
	ready()
	want := map[string]bool{}
	for _, id := range ids {
		want["integrated_account:created/"+id] = true
		want["integrated_account:active/"+id] = true
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		idsOf := map[string]map[string]bool{}
		for _, d := range recv.deliveries() {
			k := d.event + "/" + d.acct
			if idsOf[k] == nil {
				idsOf[k] = map[string]bool{}
			}
			idsOf[k][d.id] = true
		}
		complete := true
		for k := range want {
			if len(idsOf[k]) == 0 {
				complete = false
			}
		}
		if complete {
			for k, set := range idsOf {
				if !want[k] {
					t.Errorf("unexpected event %s", k)
				}
				if len(set) != 1 {
					t.Errorf("event %s arrived under %d webhook-ids: a duplicate must keep its id", k, len(set))
				}
			}
			t.Logf("%d events: %d delivered before the SIGKILL, %d deliveries in all (repeats keep their webhook-id)", len(want), before, len(recv.deliveries()))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after restart only %d of %d events arrived\nfirst process:\n%s\nsecond process:\n%s",
				len(idsOf), len(want), tail(first.log.String()), tail(second.log.String()))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = second.cmd.Wait()
}

func tail(s string) string {
	lines := strings.Split(s, "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}
