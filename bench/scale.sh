#!/usr/bin/env bash
# Scale benchmark: how linkgate's costs grow from 10,000 to 1,000,000
# accounts, on SQLite and PostgreSQL. For each size it builds a database
# through the bulk path (caddy linkgate-import, timed), marks 1 % of the
# accounts needs_reauth, measures claim and listing times, the cache's heap
# and RSS (bench/scale measure), the idle gateway's CPU per minute (a real
# caddy process, from /proc/<pid>/stat), and webhook drain times with a slow
# endpoint (bench/scale webhooks). One JSON object per figure set goes to
# stdout.
#
#   bench/scale.sh sqlite 10000 100000 1000000
#   bench/scale.sh postgres 10000 100000        # needs LINKGATE_TEST_POSTGRES (a server; databases are created)
#
# IDLE_SECONDS (default 60) sets the idle measurement; KEEP=1 keeps the
# databases in $WORK (default a temporary directory). IMPORT_ONLY=1 stops
# after the import (its rate and CPU time, the database's size): the bulk
# import benchmark, or a quick build of a large database with KEEP=1.
# RANDOM_IDS=1 (with IMPORT_ONLY) gives the accounts random UUIDs, as a
# migration from another vendor brings, instead of ids in insertion order.
set -euo pipefail
cd "$(dirname "$0")/.."
store="${1:?usage: bench/scale.sh sqlite|postgres N...}"
shift
idle="${IDLE_SECONDS:-60}"
work="${WORK:-$(mktemp -d)}"
mkdir -p "$work"
cleanup() {
	kill $(jobs -p) 2>/dev/null || true
	[ "${KEEP:-}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/caddy" ./cmd/caddy
go build -o "$work/scale" ./bench/scale
key=$(head -c 32 /dev/urandom | base64)

pgdsn() { # the DSN of database $1 on the server of LINKGATE_TEST_POSTGRES
	echo "$LINKGATE_TEST_POSTGRES" | sed -E "s#/[^/?]+(\?|$)#/$1\1#"
}

for n in "$@"; do
	case "$store" in
	sqlite)
		db="$work/linkgate-$n.db"
		rm -f "$db" "$db-wal" "$db-shm"
		storage="storage sqlite $db"
		;;
	postgres)
		name="lgscale_$n"
		psql "$LINKGATE_TEST_POSTGRES" -qc "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" >/dev/null
		db=$(pgdsn "$name")
		storage="storage postgres \"$db\""
		;;
	esac
	cat >"$work/Caddyfile" <<CADDY
{
	admin off
	log default {
		level ERROR
	}
	integrated_accounts {
		$storage
		encryption_key $key
		api_token bench-token
		public_url http://127.0.0.1:9600
		integration crm {
			auth oauth2
			authorize_url http://127.0.0.1:1/authorize
			token_url http://127.0.0.1:1/token
			client_id bench
			client_secret bench-secret
			base_url http://127.0.0.1:9501
		}
		integration mail {
			auth oauth2
			authorize_url http://127.0.0.1:1/authorize
			token_url http://127.0.0.1:1/token
			client_id bench
			client_secret bench-secret
			base_url http://127.0.0.1:9501
		}
		integration keyed {
			auth api_key
			base_url http://127.0.0.1:9501
		}
	}
}
http://127.0.0.1:9600 {
	accounts_api
}
CADDY
	export XDG_DATA_HOME="$work/xdg" XDG_CONFIG_HOME="$work/xdg"

	# (a) the database, through the bulk path.
	ids=seq
	[ "${RANDOM_IDS:-}" = 1 ] && ids=random
	"$work/scale" gen -n "$n" -ids "$ids" >"$work/accounts.jsonl"
	load=$(cut -d' ' -f1 /proc/loadavg)
	t0=$(date +%s.%N)
	# CPU time of the import process (user and system), from bash's times.
	cpu=$( { /usr/bin/time -f '%U %S' "$work/caddy" linkgate-import --config "$work/Caddyfile" --adapter caddyfile \
		--input "$work/accounts.jsonl" --events none >"$work/failed.jsonl" 2>"$work/import.log"; } 2>&1 | tail -1)
	t1=$(date +%s.%N)
	rm -f "$work/accounts.jsonl"
	cpu_s=$(echo "$cpu" | awk '{print $1 + $2}')
	echo "{\"store\":\"$store\",\"accounts\":$n,\"ids\":\"$ids\",\"load_before\":$load,\"load_after\":$(cut -d' ' -f1 /proc/loadavg),\"import_s\":$(echo "$t1 - $t0" | bc),\"import_per_s\":$(echo "$n / ($t1 - $t0)" | bc),\"import_cpu_s\":$cpu_s,\"cpu_us_per_account\":$(echo "$cpu_s * 1000000 / $n" | bc),\"import_log\":$(tail -1 "$work/import.log" | sed 's/"/\\"/g; s/.*/"&"/')}"
	if [ "${IMPORT_ONLY:-}" = 1 ]; then
		if [ "$store" = sqlite ]; then
			echo "{\"store\":\"$store\",\"accounts\":$n,\"db_mib\":$(( ($(stat -c %s "$db") + $(stat -c %s "$db-wal" 2>/dev/null || echo 0)) >> 20 ))}"
		elif [ "${KEEP:-}" != 1 ]; then
			psql "$LINKGATE_TEST_POSTGRES" -qc "DROP DATABASE IF EXISTS lgscale_$n" >/dev/null
		fi
		continue
	fi
	"$work/scale" mark -store "$store" -db "$db" -n "$n" >/dev/null
	if [ "$store" = sqlite ]; then
		echo "{\"store\":\"$store\",\"accounts\":$n,\"db_mib\":$(( $(stat -c %s "$db") >> 20 ))}"
	fi

	# (c) claim, pages, cache.
	"$work/scale" measure -store "$store" -db "$db" -key "$key" -n "$n" | sed "s/^{/{\"store\":\"$store\",/"

	# (c) an idle gateway's CPU per minute (sweeper, dispatcher polls, janitor).
	"$work/caddy" run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 &
	pid=$!
	for _ in $(seq 1 100); do curl -sf -o /dev/null -H 'Authorization: Bearer bench-token' http://127.0.0.1:9600/integrated-account?limit=1 && break; sleep 0.2; done
	sleep 15 # start-up and the first sweep
	ticks=$(getconf CLK_TCK)
	read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
	sleep "$idle"
	read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
	rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	echo "{\"store\":\"$store\",\"accounts\":$n,\"idle_cpu_s_per_min\":$(echo "scale=3; ($u1 + $s1 - $u0 - $s0) / $ticks * 60 / $idle" | bc),\"idle_rss_mib\":$((rss >> 10))}"

	# (c) webhook drain with a slow endpoint.
	"$work/scale" webhooks -store "$store" -db "$db" -key "$key" | sed "s/^{/{\"store\":\"$store\",\"accounts\":$n,/"

	if [ "$store" = postgres ] && [ "${KEEP:-}" != 1 ]; then
		psql "$LINKGATE_TEST_POSTGRES" -qc "DROP DATABASE IF EXISTS lgscale_$n" >/dev/null
	fi
done
