#!/usr/bin/env python3
"""Reads the dumps of bench/callgrind.sh: instructions per request of each
phase, round by round, the allocations of each phase, and with FUNCS=<rows>
the functions whose instructions differ most between plain and each
linkgate phase.

    callgrind_report.py <dir with cg.out.N> <phases> <requests> <allocs> [rows]

Only own instructions (exclusive counts) are given: they are exact, while
callgrind's inclusive counts follow its idea of the call stack, which Go's
goroutine switches confuse (a function that blocks is charged with what
other goroutines ran meanwhile).

The SQLite engine (modernc.org/...) runs only in the background loops here
(the webhook outbox poll every second, the refresh sweeper): a proxied
request on a warm cache never reads SQLite. How often those loops run in a
phase depends on the wall-clock time the phase takes under valgrind, that is
on the machine's load, so the figures are also given without the engine's
own instructions.
"""
import collections, glob, re, statistics, sys


def summary(path):
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(r"(?:summary|totals):\s*(\d+)", line)
            if m:
                return int(m.group(1))
    return 0


def functions(path):
    """Per function (recursion levels folded): own instructions, and the
    instructions of the calls it makes."""
    names, own, calls = {}, collections.Counter(), collections.Counter()
    npos, fn, in_call = 1, None, False

    def name(s):
        m = re.match(r"\((\d+)\)(?: (.*))?", s)
        if not m:
            return s
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), m.group(1))

    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("positions:"):
                npos = len(line.split()) - 1
            elif line.startswith("fn="):
                fn = re.sub(r"'\d+$", "", name(line[3:].strip()))
            elif line.startswith("cfn="):
                name(line[4:].strip())
            elif line.startswith("calls="):
                in_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                p = line.split()
                if len(p) > npos:
                    if in_call:
                        if fn is not None:
                            calls[fn] += int(p[npos])
                        in_call = False
                    else:
                        own[fn] += int(p[npos])
    return own, calls


def main():
    d, phases, requests = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
    allocs = sys.argv[4].split(",") if len(sys.argv) > 4 and sys.argv[4] else []
    rows = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[5] else 0
    files = sorted(glob.glob(d + "/cg.out.*"), key=lambda f: int(f.rsplit(".", 1)[1]))
    dumps = [(summary(f), f) for f in files][1:]  # drop the set-up
    # A marker call that grows the goroutine's stack runs twice and splits
    # one dump in two: a dump far smaller than the others goes with the next.
    median = statistics.median(x for x, _ in dumps)
    merged, carry = [], []
    for ir, f in dumps:
        carry.append((ir, f))
        if ir < median / 20:
            continue
        merged.append(carry)
        carry = []
    if len(merged) < len(phases):
        sys.exit(f"{len(merged)} dumps for {len(phases)} phases: {[x for x, _ in dumps]}")
    sqlite = {}
    for name, parts in zip(phases, merged):
        for _, f in parts:
            fo, _ = functions(f)
            sqlite[f] = sum(v for k, v in fo.items() if k and k.startswith("modernc.org/"))
    per, rounds = {}, []
    perx, roundsx = {}, []
    for name, parts in zip(phases, merged):
        ir = sum(x for x, _ in parts) / requests
        irx = ir - sum(sqlite[f] for _, f in parts) / requests
        perx.setdefault(name, []).append(irx)
        if name == phases[0]:
            roundsx.append({})
        roundsx[-1][name] = irx
        per.setdefault(name, []).append(ir)
        if name == phases[0]:
            rounds.append({})
        rounds[-1][name] = ir
    names = list(per)
    lg = [n for n in names if n.startswith("linkgate")]
    for i, r in enumerate(rounds):
        print(f"round {i + 1}: " + "  ".join(f"{n} {r[n]:,.0f}" for n in names) + " instr/request  "
              + "  ".join(f"{n}/plain {r[n] / r['plain']:.3f}" for n in lg))
    m = {k: statistics.median(v) for k, v in per.items()}
    print("median: " + "  ".join(f"{n} {m[n]:,.0f}" for n in names) + " instr/request")
    print("  ".join(f"{n}/plain {m[n] / m['plain']:.3f}" for n in names[1:])
          + "  " + "  ".join(f"{n}/placeholder {m[n] / m['placeholder']:.3f}" for n in lg))
    mx = {k: statistics.median(v) for k, v in perx.items()}
    print("without the SQLite engine (background loops): " + "  ".join(f"{n} {mx[n]:,.0f}" for n in names)
          + " instr/request  " + "  ".join(f"{n}/plain {mx[n] / mx['plain']:.3f}" for n in lg)
          + "  (rounds: " + "; ".join(", ".join(f"{r[n] / r['plain']:.3f}" for n in lg) for r in roundsx) + ")")
    if allocs:
        a = collections.defaultdict(list)
        for entry in allocs:
            name, n, b, gcs = entry.split(":")
            a[name].append((int(n) / requests, int(b) / requests, int(gcs)))
        print("allocations (whole process, median): " + "  ".join(
            f"{n} {statistics.median(x[0] for x in v):.1f} allocs {statistics.median(x[1] for x in v):,.0f} B"
            + (f" ({max(x[2] for x in v)} paced GC)" if max(x[2] for x in v) else "")
            for n, v in a.items()) + " per request")
    if not rows:
        return
    own, calls = {}, {}
    for name, parts in zip(phases, merged):
        o, c = own.setdefault(name, collections.Counter()), calls.setdefault(name, collections.Counter())
        for _, f in parts:
            fo, fc = functions(f)
            o.update(fo)
            c.update(fc)
    count = collections.Counter(phases[: len(merged)])
    avg = {n: {k: v / (requests * count[n]) for k, v in own[n].items()} for n in own}
    for n in lg:
        a, b = avg["plain"], avg[n]
        print(f"\nown instructions per request, plain -> {n} (largest differences; mean of {count[n]} rounds):")
        for k in sorted(set(a) | set(b), key=lambda k: -abs(b.get(k, 0) - a.get(k, 0)))[:rows]:
            print(f"{a.get(k, 0):10,.0f} {b.get(k, 0):10,.0f} {b.get(k, 0) - a.get(k, 0):+9,.0f}  {k}")
        print(f"\nlinkgate's own functions in {n}, own instructions per request:")
        for k in sorted((k for k in b if k and k.startswith("github.com/linkgate/linkgate.")), key=lambda k: -b[k]):
            if b[k] >= 1:
                print(f"{b[k]:10,.0f}  {k}")

main()
