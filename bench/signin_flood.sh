#!/usr/bin/env bash
# Sign-in flood benchmark: proxied throughput with and without a flood of
# console sign-ins (password guesses for a configured user whose hash has
# bcrypt cost 14, 50 attempts a second from 20 loopback addresses, each
# fetching the form first), interleaved rounds, same binary. Caddy and the
# upstream share core 0; wrk and the flood run on core 1, so what the flood
# costs shows as Caddy's lost throughput and its CPU time.
#
#   bench/signin_flood.sh [rounds] [seconds] [source tree] [attempts/s]   (needs wrk)
#
# The source tree defaults to this repository; give another checkout to
# measure it the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
bench="$PWD/bench"
rounds="${1:-3}"
secs="${2:-10}"
src="${3:-$PWD}"
rate="${4:-50}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

(cd "$src" && go build -o "$work/caddy" ./cmd/caddy)
go build -o "$work/upstream" ./bench/upstream
go build -o "$work/flood" ./bench/signinflood
hash=$("$work/caddy" hash-password --plaintext "the operator's real password")

cat > "$work/Caddyfile" <<CADDY
{
	admin off
	log default {
		level ERROR
	}
	integrated_accounts {
		storage sqlite $work/linkgate.db
		api_token bench-token
		public_url http://127.0.0.1:9505
		integration crm {
			auth api_key
			base_url http://127.0.0.1:9501
		}
	}
}
http://127.0.0.1:9500 {
	inject_credentials
	reverse_proxy {integrated_account.upstream} {
		transport linkgate {
			keepalive_idle_conns_per_host 128
		}
	}
}
# The console and the API, on a listener of their own (as one would bind
# them to an admin network); the flood reaches it from 20 addresses.
http://127.0.0.1:9505 {
	handle /console* {
		accounts_console {
			users {
				ops $hash
			}
		}
	}
	handle {
		accounts_api
	}
}
CADDY

taskset -c 0 "$work/upstream" -addr 127.0.0.1:9501 &
XDG_DATA_HOME="$work/xdg" taskset -c 0 "$work/caddy" run --config "$work/Caddyfile" >"$work/caddy.log" 2>&1 &
caddy_pid=$!
for _ in $(seq 1 50); do curl -sf -o /dev/null http://127.0.0.1:9505/console/login && break; sleep 0.2; done

id=$(curl -sf -X POST http://127.0.0.1:9505/integrated-account -H 'Authorization: Bearer bench-token' \
	-H 'Content-Type: application/json' -d '{"tenant_id":"bench","integration":"crm","context":{"api_key":"k"}}' |
	sed 's/.*"id":"\([^"]*\)".*/\1/')
proxy="http://127.0.0.1:9500/crm/v3/objects/contacts?limit=10&integrated_account_id=$id"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$caddy_pid/stat"; }
hz=$(getconf CLK_TCK)

run() { # name flood(0|1)
	before=$(cpu_ticks)
	if [ "$2" = 1 ]; then
		taskset -c 1 "$work/flood" -url http://127.0.0.1:9505/console/login -addrs 20 -c 40 -rate "$rate" -d "${secs}s" >"$work/$1.flood" &
		flood_pid=$!
	fi
	taskset -c 1 wrk -t1 -c64 -d"${secs}s" --latency -H 'Authorization: Bearer bench-token' "$proxy" >"$work/$1.out"
	flood=""
	if [ "$2" = 1 ]; then
		wait "$flood_pid"
		flood=" flood: $(cat "$work/$1.flood")"
	fi
	after=$(cpu_ticks)
	rps=$(awk '/Requests\/sec/ {print $2}' "$work/$1.out")
	p50=$(awk '$1=="50%" {print $2}' "$work/$1.out")
	p99=$(awk '$1=="99%" {print $2}' "$work/$1.out")
	non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/$1.out")
	cpu_s=$(awk -v t=$((after - before)) -v hz="$hz" 'BEGIN {printf "%.1f", t / hz}')
	echo "$1 rps=$rps p50=$p50 p99=$p99 non2xx=${non2xx:-0} caddy_cpu_s=$cpu_s$flood"
}

taskset -c 1 wrk -t1 -c64 -d2s -H 'Authorization: Bearer bench-token' "$proxy" >/dev/null
# The first seconds of a flood spend the server-wide budget of failed
# sign-ins (each a full password check); the rounds after it measure the
# flood as it goes on.
run "quiet-0" 0
run "flood-start" 1
for r in $(seq 1 "$rounds"); do
	run "quiet-$r" 0
	run "flood-$r" 1
done | tee "$work/results"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
q=$(grep '^quiet-[1-9]' "$work/results" | sed 's/.*rps=\([0-9.]*\).*/\1/' | median)
f=$(grep '^flood-[1-9]' "$work/results" | sed 's/.*rps=\([0-9.]*\).*/\1/' | median)
echo "median proxied rps: quiet=$q during_flood=$f flood/quiet=$(awk -v q="$q" -v f="$f" 'BEGIN {printf "%.3f", f/q}')"
# An operator with the API token signs in during a flood.
jar="$work/jar"
taskset -c 1 "$work/flood" -url http://127.0.0.1:9505/console/login -addrs 20 -c 40 -rate "$rate" -d 5s >/dev/null &
flood_pid=$!
sleep 1
csrf=$(curl -s -c "$jar" http://127.0.0.1:9505/console/login | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -1)
code=$(curl -s -o /dev/null -w '%{http_code} %{time_total}s' -b "$jar" -c "$jar" --data-urlencode "csrf=$csrf" --data-urlencode "secret=bench-token" http://127.0.0.1:9505/console/login)
echo "API-token sign-in during a flood: $code (303 = signed in)"
wait "$flood_pid"
