#!/usr/bin/env bash
# The in-process table benchmark against its C yardstick, in the same run, as ratios.
#   scripts/bench-table.sh [rounds=3] [seconds=3]
# Builds sluice-table-bench (release) and Benchmarks/c-baseline/gcra_table.c, runs them in
# alternation `rounds` times (the machine is shared and noisy: compare within a round), and prints
# the median of each figure and of each ratio. Bounded: rounds x (8 + 2) runs of `seconds` each.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-3}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

swift build -c release --product sluice-table-bench >/dev/null
cc -O2 -o "$out/gcra_table" Benchmarks/c-baseline/gcra_table.c

for round in $(seq 1 "$rounds"); do
  "$out/gcra_table" 1000000 "$seconds" 2>/dev/null > "$out/c.$round"
  # The yardstick on both cores at once (two processes), for the two-thread comparison.
  "$out/gcra_table" 1000000 "$seconds" 2>/dev/null > "$out/c2a.$round" &
  "$out/gcra_table" 1000000 "$seconds" 2>/dev/null > "$out/c2b.$round"
  wait
  memory=""
  [ "$round" = 1 ] && memory="1000000,10000000" || memory="1000"
  .build/release/sluice-table-bench --seconds "$seconds" --memory-keys "$memory" --json \
    | sed -n '/^{/,/^}/p' > "$out/swift.$round.json"
  echo "round $round done" >&2
done

python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys, os
out, rounds = sys.argv[1], int(sys.argv[2])
rows = {}
for r in range(1, rounds + 1):
    for line in open(os.path.join(out, f"c.{r}")):
        k, v = line.split(); rows.setdefault(k, []).append(float(v))
    pair = {}
    for name in (f"c2a.{r}", f"c2b.{r}"):
        for line in open(os.path.join(out, name)):
            k, v = line.split()
            if "decisions" in k: pair[k] = pair.get(k, 0) + float(v)
    for k, v in pair.items(): rows.setdefault(k.replace("c_baseline.", "c_baseline_two_cores."), []).append(v)
    for k, v in json.load(open(os.path.join(out, f"swift.{r}.json"))).items():
        rows.setdefault(k, []).append(float(v))
    c_each, c_cached = rows["c_baseline.decisions_per_s.clock_each"][-1], rows["c_baseline.decisions_per_s.clock_cached"][-1]
    for p in (0, 8):
        for clock, base in (("clock_each", c_each), ("clock_cached", c_cached)):
            key = f"decisions_per_s.prefetch_{p}.threads_1.{clock}"
            rows.setdefault(f"ratio_to_c.prefetch_{p}.threads_1.{clock}", []).append(rows[key][-1] / base)
            key2 = f"decisions_per_s.prefetch_{p}.threads_2.{clock}"
            base2 = rows[f"c_baseline_two_cores.decisions_per_s.{clock}"][-1]
            rows.setdefault(f"ratio_to_c_two_cores.prefetch_{p}.threads_2.{clock}", []).append(rows[key2][-1] / base2)
width = max(len(k) for k in rows)
for k in sorted(rows):
    v = statistics.median(rows[k])
    shown = f"{v:.2f}" if k.startswith("ratio") else (f"{v/1e6:.2f} M/s" if "per_s" in k else f"{v:.1f}")
    print(f"{k.ljust(width)}  {shown}   (runs: {', '.join(f'{x/1e6:.2f}' if 'per_s' in k and not k.startswith('ratio') else f'{x:.2f}' for x in rows[k])})")
PY
