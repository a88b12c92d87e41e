#!/usr/bin/env bash
# Scores the anomaly detector on labeled traces (../shared/traces/FORMAT.md): generates a trace
# per seed with gen_dev.py, replays it with `sluicectl replay`, and scores the alerts with
# score.py. Prints one line per trace and writes the JSON scores to OUT (default: stdout only).
#   scripts/score-anomaly.sh [seeds="2 3 4 5 6 7"] [hours=2] [OUT.json]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seeds=${1:-"2 3 4 5 6 7"}
hours=${2:-2}
out=${3:-}
traces=$root/../shared/traces
[ -f "$traces/gen_dev.py" ] || { echo "score-anomaly.sh: $traces/gen_dev.py not found (shared/ beside the repository)" >&2; exit 1; }
swift build -c release --product sluicectl >/dev/null
venv=.build-python
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import numpy' 2>/dev/null || "$venv/bin/pip" install -q numpy
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
results=()
for seed in $seeds; do
  "$venv/bin/python" "$traces/gen_dev.py" --seed "$seed" --hours "$hours" --out "$work/seed$seed" 2>/dev/null
  .build/release/sluicectl replay "$work/seed$seed.csv.gz" --alerts "$work/seed$seed.alerts.jsonl" 2>"$work/replay.log"
  json=$("$venv/bin/python" "$traces/score.py" "$work/seed$seed" "$work/seed$seed.alerts.jsonl" --json)
  printf '%s' "$json" >"$work/seed$seed.score.json"
  results+=("$work/seed$seed.score.json")
  "$venv/bin/python" - "$json" "$(cat "$work/replay.log")" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
print(f"{s['trace']:8} episodes {s['episodes']['detected']}/{s['episodes']['total']} recall {s['episodes']['recall']:.3f}  "
      f"FPR {s['subject_fp']['fpr']:.4f}  false global {s['false_global_alarms']}  "
      f"delay median {s['delay_s']['median']:.1f} s p90 {s['delay_s']['p90']:.1f} s  alerts/h {s['alerts_per_hour']:.1f}  | {sys.argv[2]}")
PY
done
if [ -n "$out" ]; then
  "$venv/bin/python" -c 'import json,sys; json.dump([json.load(open(p)) for p in sys.argv[2:]], open(sys.argv[1], "w"), indent=1)' "$out" "${results[@]}"
fi
