#!/usr/bin/env bash
# Anomaly detection's replay speed and memory: `sluicectl replay` over ../shared/traces'
# dev-sample, then over a synthetic trace of 3,000,000 rows from 1,000,000 subjects (each on its
# own address), with /usr/bin/time's peak resident memory; then the same rows from twice as many
# subjects, which the default anomaly.max_subjects (1,000,000) bounds.
#   scripts/bench-anomaly.sh [rows=3000000] [subjects=1000000]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-3000000}
subjects=${2:-1000000}
swift build -c release --product sluicectl >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -f ../shared/traces/dev-sample.csv.gz ]; then
  echo "== dev-sample"
  .build/release/sluicectl replay ../shared/traces/dev-sample.csv.gz --alerts "$work/sample.jsonl"
fi
make_trace() {
python3 - "$1" "$2" "$3" <<'PY'
import gzip, random, sys
path, rows, subjects = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(3)
t0 = 1710243000000
with gzip.open(path, "wt", compresslevel=1) as f:
    f.write("ts_ms,tenant,subject,ip,route,status,cost\n")
    for i in range(rows):
        # Every subject twice in order first, then at random; 500 rows per second of trace time.
        s = i % subjects if i < 2 * subjects else random.randrange(subjects)
        f.write(f"{t0 + i * 2},acme,u{s},10.{(s >> 16) & 255}.{(s >> 8) & 255}.{s & 255},GET /api/items/{random.randrange(100000)},200,1\n")
PY
}
echo "== synthetic: $rows rows, $subjects subjects"
make_trace "$work/big.csv.gz" "$rows" "$subjects"
/usr/bin/time -f "peak resident memory: %M KiB" .build/release/sluicectl replay "$work/big.csv.gz" --alerts "$work/big.jsonl"
echo "== synthetic: $rows rows, $((2 * subjects)) subjects (the default max_subjects is 1,000,000)"
make_trace "$work/bigger.csv.gz" "$rows" "$((2 * subjects))"
/usr/bin/time -f "peak resident memory: %M KiB" .build/release/sluicectl replay "$work/bigger.csv.gz" --alerts "$work/bigger.jsonl"
