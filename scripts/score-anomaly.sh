#!/usr/bin/env bash
# Scores the anomaly detector on labeled traces (../shared/traces/FORMAT.md): generates a trace
# per seed with gen_dev.py (GENERATOR=dev, the default) or this repository's gen_field.py
# (GENERATOR=field, docs/TRACES.md), replays it with `sluicectl replay`, and scores the alerts
# with score.py. Prints one line per trace and writes the JSON scores to OUT (default: stdout only).
#   [GENERATOR=dev|field] [TRACES=DIR] scripts/score-anomaly.sh [seeds="2 3 4 5 6 7"] [hours=2] [OUT.json]
# With TRACES=DIR the generated traces are kept in DIR and reused by later runs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seeds=${1:-"2 3 4 5 6 7"}
hours=${2:-2}
out=${3:-}
traces=$root/../shared/traces
[ -f "$traces/score.py" ] || { echo "score-anomaly.sh: $traces/score.py not found (shared/ beside the repository)" >&2; exit 1; }
case ${GENERATOR:-dev} in
  dev) generator=$traces/gen_dev.py ;;
  field) generator=$root/scripts/traces/gen_field.py ;;
  *) echo "score-anomaly.sh: GENERATOR is dev or field" >&2; exit 1 ;;
esac
swift build -c release --product sluicectl >/dev/null
venv=.build-python
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import numpy' 2>/dev/null || "$venv/bin/pip" install -q numpy
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
results=()
for seed in $seeds; do
  trace=$work/seed$seed
  if [ -n "${TRACES:-}" ]; then
    mkdir -p "$TRACES"
    trace=$TRACES/${GENERATOR:-dev}-seed$seed-${hours}h
  fi
  [ -f "$trace.labels.json" ] || "$venv/bin/python" "$generator" --seed "$seed" --hours "$hours" --out "$trace" >/dev/null 2>&1
  .build/release/sluicectl replay "$trace.csv.gz" --alerts "$work/seed$seed.alerts.jsonl" 2>"$work/replay.log"
  [ -z "${TRACES:-}" ] || cp "$work/seed$seed.alerts.jsonl" "$trace.alerts.jsonl"
  json=$("$venv/bin/python" "$traces/score.py" "$trace" "$work/seed$seed.alerts.jsonl" --json)
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
