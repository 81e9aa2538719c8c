// Command callgrind runs Caddy with linkgate, a Go upstream and a Go client
// in one process, in phases of equal request counts: plain (reverse_proxy
// with a static header_up Authorization), placeholder (the same, dialing
// {vars.upstream}), linkgate (inject_credentials on an api_key account, then
// reverse_proxy {integrated_account.upstream} with the linkgate transport)
// and linkgate-oauth (the same on an OAuth account with a refresh token,
// whose 401s would be held back for a retry). Before each
// phase it calls phaseMarker, so that under
//
//	valgrind --tool=callgrind --dump-before=main.phaseMarker
//
// every phase is a dump of its own and nothing of the set-up needs to be
// subtracted. bench/callgrind.sh runs it and reads the dumps; the order of
// the phases is printed on standard error.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/linkgate/linkgate"
)

// markerSink keeps phaseMarker from being optimised away.
var markerSink int

// phaseMarker marks the start of a phase (or, with -1, the end of the
// last). callgrind dumps its counters before each call.
//
//go:noinline
func phaseMarker(phase int) { markerSink += phase }

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func main() {
	log.SetFlags(0)
	rounds := flag.Int("rounds", 5, "rounds of the four phases")
	requests := flag.Int("requests", 2000, "requests a phase")
	warmup := flag.Int("warmup", 500, "requests of each kind before the first phase")
	pacedGC := flag.Bool("paced-gc", false, "leave the GC paced by GOGC during the phases, instead of one full GC at the end of each")
	flag.Parse()

	dir, err := os.MkdirTemp("", "linkgate-callgrind")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Setenv("XDG_DATA_HOME", filepath.Join(dir, "xdg"))

	// The upstream: a small JSON answer, like a typical API read.
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	body := []byte(`{"results":[{"id":"1","properties":{"email":"ada@example.com","firstname":"Ada"}}],"paging":null}` + "\n")
	upSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" && r.Header.Get("X-Api-Key") == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})}
	go func() { _ = upSrv.Serve(up) }()
	defer upSrv.Close()
	upstream := up.Addr().String()

	ports := [4]int{freePort(), freePort(), freePort(), freePort()}
	cfg := fmt.Sprintf(`{
	admin off
	log default {
		level ERROR
	}
	integrated_accounts {
		storage sqlite %[6]s/linkgate.db
		api_token bench-token
		public_url http://127.0.0.1:%[1]d
		integration crm {
			auth api_key
			base_url http://%[5]s
		}
		integration mail {
			auth oauth2
			authorize_url http://127.0.0.1:1/authorize
			token_url http://127.0.0.1:1/token
			client_id bench
			client_secret bench-secret
			base_url http://%[5]s
		}
	}
}
http://127.0.0.1:%[1]d {
	inject_credentials
	reverse_proxy {integrated_account.upstream} {
		transport linkgate {
			keepalive_idle_conns_per_host 16
		}
	}
}
http://127.0.0.1:%[2]d {
	reverse_proxy %[5]s {
		header_up Authorization "Bearer static-key"
		transport http {
			keepalive_idle_conns_per_host 16
		}
	}
}
http://127.0.0.1:%[3]d {
	vars upstream %[5]s
	reverse_proxy {vars.upstream} {
		header_up Authorization "Bearer static-key"
		transport http {
			keepalive_idle_conns_per_host 16
		}
	}
}
http://127.0.0.1:%[4]d {
	accounts_api
}
`, ports[0], ports[1], ports[2], ports[3], upstream, dir)
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cfg), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		log.Fatal(err)
	}
	if err := caddy.Load(adapted, true); err != nil {
		log.Fatal(err)
	}
	defer func() { _ = caddy.Stop() }()

	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	// Both accounts' credentials are plain's static key, so that every
	// phase sends the upstream the same Authorization header: a longer
	// secret costs any proxy about 60 instructions a byte (written, parsed,
	// validated, logged), which is the secret's cost, not linkgate's.
	id := importAccount(client, ports[3], `{"tenant_id":"bench","integration":"crm","context":{"api_key":"static-key"}}`)
	// An OAuth account with a refresh token: its answers may be held back
	// for a refresh and a retry on a 401, which the api_key account's are
	// not. The token is valid for a year, so nothing is refreshed.
	oauthID := importAccount(client, ports[3], fmt.Sprintf(`{"tenant_id":"bench","integration":"mail","context":{"oauth":{"token":{"access_token":"static-key","refresh_token":"rt-0123456789abcdef","token_type":"bearer","expiry":%q}}}}`,
		time.Now().AddDate(1, 0, 0).UTC().Format(time.RFC3339)))
	phases := []struct {
		name string
		url  string
		auth string
	}{
		{"plain", fmt.Sprintf("http://127.0.0.1:%d/crm/v3/objects/contacts?limit=10", ports[1]), ""},
		{"placeholder", fmt.Sprintf("http://127.0.0.1:%d/crm/v3/objects/contacts?limit=10", ports[2]), ""},
		{"linkgate", fmt.Sprintf("http://127.0.0.1:%d/crm/v3/objects/contacts?limit=10&integrated_account_id=%s", ports[0], id), "Bearer bench-token"},
		{"linkgate-oauth", fmt.Sprintf("http://127.0.0.1:%d/crm/v3/objects/contacts?limit=10&integrated_account_id=%s", ports[0], oauthID), "Bearer bench-token"},
	}
	get := func(url, auth string) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			log.Fatalf("%s: %d", url, resp.StatusCode)
		}
	}
	if !*pacedGC {
		// A paced GC cycle marks the whole live heap (about 20 M
		// instructions here), and whether a phase of 1,000 requests gets
		// four cycles or five decides its count by ±4 %. Without pacing,
		// each phase has exactly one cycle, the full GC before the next
		// marker, and pays for sweeping its own garbage; its allocations
		// are counted below, exactly, instead. Set before the warm-up, so
		// that the heap has grown before the first phase: memory fresh
		// from the kernel needs no zeroing, and made the first phase
		// 10 k instructions a request cheaper than the same phase later.
		debug.SetGCPercent(-1)
	}
	for _, p := range phases {
		for range *warmup {
			get(p.url, p.auth)
		}
	}
	// One round as measured ones run, its phases cut by full GCs, in the
	// set-up's dump: the first round after the warm-up ran about 9 k
	// instructions a request lower than the next ones (less memory to
	// zero), in every phase.
	for _, p := range phases {
		runtime.GC()
		for range *requests {
			get(p.url, p.auth)
		}
	}
	var order []string
	var allocs []string
	var ms runtime.MemStats
	for range *rounds {
		for i, p := range phases {
			// Each phase pays for collecting its own garbage: a full GC
			// before each marker ends the previous phase's cycle inside
			// that phase's dump, instead of in whichever phase it falls.
			runtime.GC()
			runtime.ReadMemStats(&ms)
			mallocs, bytes, gcs := ms.Mallocs, ms.TotalAlloc, ms.NumGC
			phaseMarker(i)
			for range *requests {
				get(p.url, p.auth)
			}
			runtime.ReadMemStats(&ms)
			order = append(order, p.name)
			allocs = append(allocs, fmt.Sprintf("%s:%d:%d:%d", p.name, ms.Mallocs-mallocs, ms.TotalAlloc-bytes, ms.NumGC-gcs))
		}
	}
	runtime.GC()
	phaseMarker(-1)
	fmt.Fprintf(os.Stderr, "phases %s requests %d\n", strings.Join(order, ","), *requests)
	// Allocations of the whole process in each phase (phase:allocations:
	// bytes:paced GC cycles), from runtime.MemStats.
	fmt.Fprintf(os.Stderr, "allocs %s\n", strings.Join(allocs, ","))
}

// importAccount creates an account for a linkgate phase.
func importAccount(client *http.Client, apiPort int, body string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/integrated-account", apiPort),
		strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer bench-token")
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		log.Fatalf("import: %d %s", resp.StatusCode, b)
	}
	i := strings.Index(string(b), `"id":"`)
	return string(b[i+6 : i+6+36])
}
