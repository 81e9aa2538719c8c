#!/usr/bin/env bash
# Crash suite at full size: a real Caddy process (./cmd/caddy) with 250
# accounts of an authorization server that rotates refresh tokens and revokes
# the whole grant when an old one is presented again; every account refreshed
# at once, SIGKILL at a random moment of the wave, restart, every account
# refreshed again; 10 kills on each store (SQLite, and PostgreSQL when
# LINKGATE_TEST_POSTGRES is set). Prints the grants lost per kill, alarms,
# false alarms and duplicated alarms, then the slow-provider suite.
#
#   bench/crash.sh [accounts] [kills]
#   LINKGATE_CADDY_BINARY=/path/to/caddy bench/crash.sh   # measure another build
set -euo pipefail
cd "$(dirname "$0")/.."
export LINKGATE_CRASH_ACCOUNTS="${1:-250}"
export LINKGATE_CRASH_KILLS="${2:-10}"
uptime
go test -count=1 -timeout 60m -v -run 'TestCrashDuringRefreshWave|TestSlowTokenEndpointLosesNoGrant' ./internal/clustertest 2>&1 |
	grep -E 'crash_test.go:[0-9]+:|^(---|ok|FAIL|PASS)|^    ---'
uptime
