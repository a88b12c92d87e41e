#!/usr/bin/env bash
# The adaptive-limiting demonstration of docs/ADAPTIVE.md: a rising load from sluice-bench
# (--upstream mode) against a small upstream whose latency grows with concurrency and which
# reports its load to Sluice; run once with features.adaptive off and once on, then plotted.
#   scripts/adaptive-demo.sh [seconds=60] [from=200] [to=2000]
# Writes docs/adaptive-demo.png and docs/adaptive-demo.json (both runs' figures); the work files
# (each run's configuration, logs and timelines) go to a temporary folder, removed at the end
# unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-60}
from=${2:-200}
to=${3:-2000}

swift build -c release --product sluiced >/dev/null
swift build -c release --product sluicectl >/dev/null
swift build -c release --product sluice-bench >/dev/null
bin=$root/.build/release

venv=.build-python
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import google.protobuf, matplotlib' 2>/dev/null || "$venv/bin/pip" install -q "protobuf>=4.21,<8" matplotlib
py=$root/$venv/bin/python

work=$(mktemp -d /tmp/sluice-adaptive-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "work files kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
for mode in off on; do
  dir=$work/$mode
  mkdir -p "$dir"
  enabled=$([ "$mode" = on ] && echo true || echo false)
  cat >"$dir/sluice.yaml" <<YAML
listen:
  unix: [{ path: $dir/sluice.sock }]
snapshot: { path: $dir/sluice.snapshot, interval: 1m }
store: { path: $dir/sluice.db }
metrics: { listen: "127.0.0.1:0" }
log: { level: warning }
rules:
  api: { limit: 100, period: 1s, service: upstream }   # per subject
tiers:
  vip:         { multiplier: 1, priority: 100, reserve: 0.9 }
  best_effort: { multiplier: 1, priority: 0 }
adaptive:
  target_p99: 20ms
  tolerance: 0.2
  decrease: 0.7
  increase: 0.02
  cooldown: 2
  minimum: 0.15
  smoothing: 0.8
  interval: 250ms
features:
  adaptive: { enabled: $enabled, rollout: 100, shadow: false }
  reputation: { enabled: false }
YAML
  "$bin/sluiced" --config "$dir/sluice.yaml" >"$dir/sluiced.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do [ -S "$dir/sluice.sock" ] && break; sleep 0.1; done
  for n in $(seq 0 49); do
    SLUICE_ENDPOINT="unix:$dir/sluice.sock" "$bin/sluicectl" tiers set "vip-$n" vip >/dev/null
    SLUICE_ENDPOINT="unix:$dir/sluice.sock" "$bin/sluicectl" tiers set "best_effort-$n" best_effort >/dev/null
  done
  port=$((port + 1))
  "$py" scripts/adaptive-demo/upstream.py --port "$port" --sluice "$dir/sluice.sock" --timeline "$dir/upstream.jsonl" \
    --lifetime $((seconds + 60)) &
  upstream=$!
  pids+=($upstream)
  sleep 1
  echo "== adaptive $mode: $from -> $to requests/s over ${seconds}s"
  "$bin/sluice-bench" -e "unix:$dir/sluice.sock" --upstream "127.0.0.1:$port" --rule api --ramp "$from:$to" \
    --duration "${seconds}s" --tiers vip:0.1,best_effort:0.9 --subjects-per-tier 50 --upstream-timeout 1s \
    --timeline "$dir/bench.jsonl" | tee "$dir/summary.txt"
  kill "$upstream" 2>/dev/null || true
  kill "${pids[0]}" 2>/dev/null || true
  wait 2>/dev/null || true
  pids=()
done

"$py" scripts/adaptive-demo/plot.py --off "$work/off" --on "$work/on" --seconds "$seconds" --png docs/adaptive-demo.png \
  --json docs/adaptive-demo.json
echo "wrote docs/adaptive-demo.png and docs/adaptive-demo.json"
