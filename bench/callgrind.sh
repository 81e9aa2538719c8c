#!/usr/bin/env bash
# Instructions per request of linkgate against plain Caddy, counted by
# callgrind: Caddy, the Go upstream and the Go client run in one process
# (bench/callgrind), in phases of equal request counts (plain, placeholder,
# linkgate, linkgate-oauth, repeated), each its own callgrind dump (--dump-before on the
# phase marker). Every instruction of the process counts: Caddy's, the
# client's and the upstream's, the runtime's and the GC's.
#
#   bench/callgrind.sh [rounds] [requests a phase]     (needs valgrind: apt-get install -y valgrind)
#
# KEEP=<dir> keeps the dumps there (cg.out.N, and phases.txt naming them).
# FUNCS=<rows> also prints the functions whose own instructions differ most
# between plain and each linkgate phase, and linkgate's functions
# (bench/callgrind_report.py). BENCH_ARGS passes flags to bench/callgrind
# (-paced-gc: leave the GC paced by GOGC, as before 2026-11-30).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
requests="${2:-1000}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Without cgo, no thread starts with a signal mask callgrind cannot follow;
# asynchronous preemption (signals) and RDTSCP (which valgrind 3.19 does not
# decode) are off: neither changes the work of a request.
#
# Built without DWARF (-ldflags=-w): valgrind 3.19 misreads Go 1.26's DWARF 5
# and charges instructions to the wrong functions; from the symbol table
# alone it names them right (the totals are the same either way).
# GOMAXPROCS=1: valgrind runs one thread at a time, so a second P brings no
# parallelism, only idle Ms spinning and stealing, as much as valgrind's
# thread switches happen to allow (±3 % of a phase from round to round).
CGO_ENABLED=0 go build -ldflags=-w -o "$work/bench" ./bench/callgrind
GOMAXPROCS="${GOMAXPROCS:-1}" GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off valgrind --tool=callgrind --dump-before=main.phaseMarker --callgrind-out-file="$work/cg.out" \
	"$work/bench" -rounds "$rounds" -requests "$requests" ${BENCH_ARGS:-} 2>"$work/stderr" >/dev/null || {
	tail -20 "$work/stderr"
	exit 1
}
phases=$(sed -n 's/^phases \([^ ]*\) requests.*/\1/p' "$work/stderr")
allocs=$(sed -n 's/^allocs \(.*\)/\1/p' "$work/stderr")
if [ -n "${KEEP:-}" ]; then
	mkdir -p "$KEEP"
	cp "$work"/cg.out* "$KEEP"/
	echo "$phases" >"$KEEP/phases.txt"
fi

# The dumps in order: cg.out.1, cg.out.2, ... (one before each marker call),
# then cg.out (at exit). Dump k+1 holds what ran between marker calls k and
# k+1: dump 1 is the set-up, dumps 2.. the phases, the last the tear-down.
python3 bench/callgrind_report.py "$work" "$phases" "$requests" "$allocs" "${FUNCS:-}"
