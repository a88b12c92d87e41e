#!/usr/bin/env bash
# Two sluiced binaries against each other, in the same run, driven by the same client: for
# measuring what a change costs on the hot path (this machine is too noisy to compare runs made
# at different times). Rounds alternate A and B so drift in the machine's load hits both.
#   A_FLAGS="--metrics off" scripts/bench-ab.sh A_SLUICED B_SLUICED [seconds=5] [rounds=3] [extra sluiced flags for B...]
# (A_FLAGS: extra flags for A; leave it empty for a binary older than the flag.)
# Workload (as scripts/bench-vs-redis.sh): GCRA on uniform random keys out of 100,000, 50
# connections, depth 1 and 16, and 100 checks per frame. Prints medians and B/A per workload.
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1 b=$2 seconds=${3:-5} rounds=${4:-3}
shift $(( $# < 4 ? $# : 4 ))
extra_b=("$@")
swift build -c release --product sluice-bench >/dev/null
bin=$(swift build -c release --show-bin-path)
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

run() { # label, binary, extra flags...
  local label=$1 binary=$2; shift 2
  # --tcp-auth none where the binary has it (a build before authentication has no such flag).
  local auth=()
  "$binary" --help 2>&1 | grep -q -- --tcp-auth && auth=(--tcp-auth none)
  "$binary" --unix "$dir/s.sock" --tcp 127.0.0.1:0 "${auth[@]}" --snapshot off --store off --log-level warning "$@" >"$dir/$label.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do [ -S "$dir/s.sock" ] && break; sleep 0.1; done
  for workload in "d1:-d 1" "d16:-d 16" "b100:-d 1 -b 100"; do
    name=${workload%%:*}
    # shellcheck disable=SC2086
    timeout $((seconds + 60)) "$bin/sluice-bench" --quiet --json --duration "${seconds}s" --warmup 1 --keys 100000 \
      --limit 100/1s --burst 100 -c 50 ${workload#*:} -e "unix:$dir/s.sock" >"$dir/$label.$name.r$round.json"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}

for round in $(seq 1 "$rounds"); do
  echo "round $round of $rounds" >&2
  # shellcheck disable=SC2086
  run A "$a" ${A_FLAGS:-}
  run B "$b" "${extra_b[@]}"
done

python3 - "$dir" "$rounds" <<'PY'
import json, os, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
print(f"{'workload':<8}{'A decisions/s':>15}{'B decisions/s':>15}{'B/A':>7}   B/A per round")
for name in ["d1", "d16", "b100"]:
    a = [json.load(open(os.path.join(d, f"A.{name}.r{r}.json")))["decisions_per_s"] for r in range(1, rounds + 1)]
    b = [json.load(open(os.path.join(d, f"B.{name}.r{r}.json")))["decisions_per_s"] for r in range(1, rounds + 1)]
    ratios = [y / x for x, y in zip(a, b)]
    print(f"{name:<8}{statistics.median(a):>15,.0f}{statistics.median(b):>15,.0f}{statistics.median(ratios):>7.3f}   "
          + " ".join(f"{r:.3f}" for r in ratios))
PY
