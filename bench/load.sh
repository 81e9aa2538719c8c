#!/usr/bin/env bash
# Load benchmark: plain Caddy reverse_proxy with a static Authorization header
# (to a fixed upstream, and to a placeholder upstream) against
# inject_credentials + reverse_proxy with the linkgate transport (Caddy's http
# transport with the same settings underneath), same binary, interleaved
# runs. Caddy and the upstream share core 0, wrk runs on core 1.
#
#   bench/load.sh [rounds] [seconds]        (needs wrk: apt-get install -y wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
secs="${2:-10}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

go build -o "$work/caddy" ./cmd/caddy
go build -o "$work/upstream" ./bench/upstream

cat > "$work/Caddyfile" <<CADDY
{
	admin off
	log default {
		level ERROR
	}
	integrated_accounts {
		storage sqlite $work/linkgate.db
		api_token bench-token
		public_url http://127.0.0.1:9500
		integration crm {
			auth api_key
			base_url http://127.0.0.1:9501
		}
	}
}
# linkgate: the caller's token is checked and replaced by the account's key.
http://127.0.0.1:9500 {
	inject_credentials
	reverse_proxy {integrated_account.upstream} {
		transport linkgate {
			keepalive_idle_conns_per_host 128
		}
	}
}
# plain Caddy: a static credential, the same transport.
http://127.0.0.1:9502 {
	reverse_proxy 127.0.0.1:9501 {
		header_up Authorization "Bearer static-key"
		transport http {
			keepalive_idle_conns_per_host 128
		}
	}
}
# plain Caddy dialing a placeholder, as linkgate's reverse_proxy does: tells
# the cost of a per-request upstream apart from inject_credentials' own.
http://127.0.0.1:9504 {
	vars upstream 127.0.0.1:9501
	reverse_proxy {vars.upstream} {
		header_up Authorization "Bearer static-key"
		transport http {
			keepalive_idle_conns_per_host 128
		}
	}
}
# the API, to import the account.
http://127.0.0.1:9503 {
	accounts_api
}
CADDY

taskset -c 0 "$work/upstream" -addr 127.0.0.1:9501 &
XDG_DATA_HOME="$work/xdg" taskset -c 0 "$work/caddy" run --config "$work/Caddyfile" >"$work/caddy.log" 2>&1 &
caddy_pid=$!
for _ in $(seq 1 50); do curl -sf -o /dev/null http://127.0.0.1:9502/ && break; sleep 0.2; done

id=$(curl -sf -X POST http://127.0.0.1:9503/integrated-account -H 'Authorization: Bearer bench-token' \
	-H 'Content-Type: application/json' -d '{"tenant_id":"bench","integration":"crm","context":{"api_key":"k"}}' |
	sed 's/.*"id":"\([^"]*\)".*/\1/')
plain="http://127.0.0.1:9502/crm/v3/objects/contacts?limit=10"
placeholder="http://127.0.0.1:9504/crm/v3/objects/contacts?limit=10"
linkgate="http://127.0.0.1:9500/crm/v3/objects/contacts?limit=10&integrated_account_id=$id"

# cpu_ticks is the Caddy process's user+system CPU time, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$caddy_pid/stat"; }
hz=$(getconf CLK_TCK)

run() { # name url
	before=$(cpu_ticks)
	taskset -c 1 wrk -t1 -c64 -d"${secs}s" --latency -H 'Authorization: Bearer bench-token' "$2" >"$work/$1.out"
	after=$(cpu_ticks)
	rps=$(awk '/Requests\/sec/ {print $2}' "$work/$1.out")
	reqs=$(awk '/requests in/ {print $1}' "$work/$1.out")
	p50=$(awk '$1=="50%" {print $2}' "$work/$1.out")
	p99=$(awk '$1=="99%" {print $2}' "$work/$1.out")
	non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/$1.out")
	# CPU time Caddy spent per request: steadier than req/s on a noisy VM.
	cpu_us=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
	echo "$1 rps=$rps p50=$p50 p99=$p99 non2xx=${non2xx:-0} caddy_cpu_us_per_req=$cpu_us"
}

# Warm every path, then interleave.
taskset -c 1 wrk -t1 -c64 -d2s "$plain" >/dev/null
taskset -c 1 wrk -t1 -c64 -d2s "$placeholder" >/dev/null
taskset -c 1 wrk -t1 -c64 -d2s -H 'Authorization: Bearer bench-token' "$linkgate" >/dev/null
for r in $(seq 1 "$rounds"); do
	run "plain-$r" "$plain"
	run "placeholder-$r" "$placeholder"
	run "linkgate-$r" "$linkgate"
done | tee "$work/results"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
p=$(grep '^plain' "$work/results" | sed 's/.*rps=\([0-9.]*\).*/\1/' | median)
h=$(grep '^placeholder' "$work/results" | sed 's/.*rps=\([0-9.]*\).*/\1/' | median)
l=$(grep '^linkgate' "$work/results" | sed 's/.*rps=\([0-9.]*\).*/\1/' | median)
echo "median rps: plain=$p placeholder=$h linkgate=$l linkgate/plain=$(awk -v p="$p" -v l="$l" 'BEGIN {printf "%.3f", l/p}') linkgate/placeholder=$(awk -v p="$h" -v l="$l" 'BEGIN {printf "%.3f", l/p}')"
pc=$(grep '^plain' "$work/results" | sed 's/.*caddy_cpu_us_per_req=\([0-9.]*\).*/\1/' | median)
lc=$(grep '^linkgate' "$work/results" | sed 's/.*caddy_cpu_us_per_req=\([0-9.]*\).*/\1/' | median)
echo "median Caddy CPU per request: plain=${pc}us linkgate=${lc}us plain/linkgate=$(awk -v p="$pc" -v l="$lc" 'BEGIN {printf "%.3f", p/l}')"
