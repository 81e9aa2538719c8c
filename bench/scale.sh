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
# databases in $WORK (default a temporary directory). With REUSE=1 a database
# kept there (and its key, $WORK/key) is measured again instead of being
# built; STEPS picks the steps (default "build measure idle webhooks"), e.g.
#
#   KEEP=1 WORK=/var/tmp/lgscale STEPS=build bench/scale.sh postgres 1000000
#   KEEP=1 REUSE=1 WORK=/var/tmp/lgscale STEPS=webhooks bench/scale.sh postgres 1000000
#
# STEPS=build alone is the bulk import benchmark: the import's wall time,
# the import process's CPU time (steadier on a shared machine) and the load
# average around it. RANDOM_IDS=1 gives the accounts random UUIDs, tenants
# and expiries, as a migration from another vendor brings (every index then
# takes its inserts at random places), instead of ids in insertion order;
# such a database is for the import figures only (measure names accounts by
# their ordered ids).
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

steps=" ${STEPS:-build measure idle webhooks} "
step() { [[ "$steps" == *" $1 "* ]]; }

go build -o "$work/caddy" ./cmd/caddy
go build -o "$work/scale" ./bench/scale
if [ "${REUSE:-}" = 1 ] && [ -s "$work/key" ]; then
	key=$(cat "$work/key")
else
	key=$(head -c 32 /dev/urandom | base64)
	echo "$key" >"$work/key"
fi

pgdsn() { # the DSN of database $1 on the server of LINKGATE_TEST_POSTGRES
	echo "$LINKGATE_TEST_POSTGRES" | sed -E "s#/[^/?]+(\?|$)#/$1\1#"
}

for n in "$@"; do
	case "$store" in
	sqlite)
		db="$work/linkgate-$n.db"
		if step build; then
			rm -f "$db" "$db-wal" "$db-shm"
		fi
		storage="storage sqlite $db"
		;;
	postgres)
		name="lgscale_$n"
		if step build; then
			psql "$LINKGATE_TEST_POSTGRES" -qc "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" >/dev/null
		fi
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
	if step build; then
	ids=seq
	[ "${RANDOM_IDS:-}" = 1 ] && ids=random
	"$work/scale" gen -n "$n" -ids "$ids" >"$work/accounts.jsonl"
	load=$(cut -d' ' -f1 /proc/loadavg)
	t0=$(date +%s.%N)
	/usr/bin/time -f '%U %S' -o "$work/import.time" "$work/caddy" linkgate-import --config "$work/Caddyfile" \
		--adapter caddyfile --input "$work/accounts.jsonl" --events none >"$work/failed.jsonl" 2>"$work/import.log" || true
	t1=$(date +%s.%N)
	rm -f "$work/accounts.jsonl"
	cpu_s=$(tail -1 "$work/import.time" | awk '{print $1 + $2}')
	echo "{\"store\":\"$store\",\"accounts\":$n,\"ids\":\"$ids\",\"load_before\":$load,\"load_after\":$(cut -d' ' -f1 /proc/loadavg),\"import_s\":$(echo "$t1 - $t0" | bc),\"import_per_s\":$(echo "$n / ($t1 - $t0)" | bc),\"import_cpu_s\":$cpu_s,\"import_cpu_us_per_account\":$(echo "$cpu_s * 1000000 / $n" | bc),\"import_log\":$(tail -1 "$work/import.log" | sed 's/"/\\"/g; s/.*/"&"/')}"
	[ "$ids" = seq ] && "$work/scale" mark -store "$store" -db "$db" -n "$n" >/dev/null
	if [ "$store" = sqlite ]; then
		echo "{\"store\":\"$store\",\"accounts\":$n,\"db_mib\":$(( $(stat -c %s "$db") >> 20 ))}"
	fi
	fi

	# (c) claim, pages, cache.
	step measure && "$work/scale" measure -store "$store" -db "$db" -key "$key" -n "$n" | sed "s/^{/{\"store\":\"$store\",/"

	# (c) an idle gateway's CPU per minute (sweeper, dispatcher polls, janitor).
	if step idle; then
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
	echo "{\"store\":\"$store\",\"accounts\":$n,\"idle_cpu_s_per_min\":$(printf %.3f "$(echo "scale=3; ($u1 + $s1 - $u0 - $s0) / $ticks * 60 / $idle" | bc)"),\"idle_rss_mib\":$((rss >> 10))}"
	fi

	# (c) webhook drain with a slow endpoint (the outbox is emptied first),
	# and with three healthy ones, for comparison.
	if step webhooks; then
		for slow in 2s 0; do
			"$work/scale" webhooks -store "$store" -db "$db" -key "$key" -slow "$slow" | sed "s/^{/{\"store\":\"$store\",\"accounts\":$n,/"
		done
	fi

	if [ "$store" = postgres ] && [ "${KEEP:-}" != 1 ]; then
		psql "$LINKGATE_TEST_POSTGRES" -qc "DROP DATABASE IF EXISTS lgscale_$n" >/dev/null
	fi
done
