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
# KEEP=<dir> keeps the dumps there (cg.out.N, and phases.txt naming them),
# to read one function's instructions with callgrind_annotate --inclusive=yes.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
requests="${2:-1000}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Without cgo, no thread starts with a signal mask callgrind cannot follow;
# asynchronous preemption (signals) and RDTSCP (which valgrind 3.19 does not
# decode) are off: neither changes the work of a request.
CGO_ENABLED=0 go build -o "$work/bench" ./bench/callgrind
GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off valgrind --tool=callgrind --dump-before=main.phaseMarker --callgrind-out-file="$work/cg.out" \
	"$work/bench" -rounds "$rounds" -requests "$requests" 2>"$work/stderr" >/dev/null || {
	tail -20 "$work/stderr"
	exit 1
}
phases=$(sed -n 's/^phases \([^ ]*\) requests.*/\1/p' "$work/stderr")
if [ -n "${KEEP:-}" ]; then
	mkdir -p "$KEEP"
	cp "$work"/cg.out* "$KEEP"/
	echo "$phases" >"$KEEP/phases.txt"
fi

# The dumps in order: cg.out.1, cg.out.2, ... (one before each marker call),
# then cg.out (at exit). Dump k+1 holds what ran between marker calls k and
# k+1: dump 1 is the set-up, dumps 2.. the phases, the last the tear-down.
# A marker call that grows the goroutine's stack runs twice and splits one
# dump in two: a dump far smaller than the others is merged into the next.
for f in $(ls "$work"/cg.out.* | sort -t. -k3 -n); do
	sed -n 's/^totals: *\([0-9]*\).*/\1/p; s/^summary: *\([0-9]*\).*/\1/p' "$f" | head -1
done >"$work/dumps"
python3 - "$work/dumps" "$phases" "$requests" <<'PY'
import sys, statistics
dumps = [int(x) for x in open(sys.argv[1]) if x.strip()]
phases = sys.argv[2].split(",")
requests = int(sys.argv[3])
body = dumps[1:]  # drop the set-up
median = statistics.median(body)
merged, carry = [], 0
for d in body:
    if d < median / 20:
        carry += d
        continue
    merged.append(d + carry)
    carry = 0
if len(merged) < len(phases):
    sys.exit(f"{len(merged)} dumps for {len(phases)} phases: {dumps}")
per = {}
rounds = []
for name, ir in zip(phases, merged):
    per.setdefault(name, []).append(ir / requests)
    if name == phases[0]:
        rounds.append({})
    rounds[-1][name] = ir / requests
names = list(per)
lg = [n for n in names if n.startswith("linkgate")]
for i, r in enumerate(rounds):
    print(f"round {i + 1}: " + "  ".join(f"{n} {r[n]:,.0f}" for n in names) + " instr/request  "
          + "  ".join(f"{n}/plain {r[n] / r['plain']:.3f}" for n in lg))
m = {k: statistics.median(v) for k, v in per.items()}
print("median: " + "  ".join(f"{n} {m[n]:,.0f}" for n in names) + " instr/request")
print("  ".join(f"{n}/plain {m[n] / m['plain']:.3f}" for n in names[1:])
      + "  " + "  ".join(f"{n}/placeholder {m[n] / m['placeholder']:.3f}" for n in lg))
PY
