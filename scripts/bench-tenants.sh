#!/usr/bin/env bash
# A noisy tenant and a quiet one on one sluiced (release, one event-loop thread so that on a
# 2-core machine the daemon saturates before the clients). Each round runs three phases:
#   alone:    the quiet tenant alone, open loop at QUIET_RATE checks/s (latency from each
#             request's intended send time: no coordinated omission);
#   quota:    the same, while the noisy tenant floods new keys as fast as 32 connections 16 deep
#             can send, held to tenants.noisy.quotas.checks_per_second (NOISY_QUOTA);
#   no_quota: the same flood with the quota removed by a reload.
#   scripts/bench-tenants.sh [seconds=10] [rounds=2]
# Prints one JSON line per phase, then the quiet tenant's p50/p99 per phase and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10} rounds=${2:-2}
quiet_rate=${QUIET_RATE:-2000} noisy_quota=${NOISY_QUOTA:-2000}
swift build -c release --product sluiced >/dev/null
swift build -c release --product sluice-bench >/dev/null
bin=$(swift build -c release --show-bin-path)
dir=$(mktemp -d)
pid= flood=
cleanup() { [ -n "$flood" ] && kill "$flood" 2>/dev/null; [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

configure() { # with or without the noisy tenant's quota
  local quota=""
  [ "$1" = quota ] && quota=", quotas: { checks_per_second: $noisy_quota }"
  cat >"$dir/sluice.yaml" <<YAML
listen: { unix: ["$dir/s.sock"], tcp: [] }
server: { threads: 1, max_queue_delay: 0 }
rules: { api: { limit: 1000000, period: 1s } }
tenants:
  quiet: {}
  noisy: { rules: {}$quota }
YAML
}
configure quota
"$bin/sluiced" --config "$dir/sluice.yaml" --snapshot off --store off --metrics off --log-level error >"$dir/sluiced.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do [ -S "$dir/s.sock" ] && break; sleep 0.1; done

quiet() { # phase
  "$bin/sluice-bench" -e "unix:$dir/s.sock" --tenant quiet --rule api --keys 10000 --rate "$quiet_rate" -c 4 -d 64 \
    --duration "${seconds}s" --warmup 1 --json --quiet >"$dir/quiet.json"
}
noisy() {
  "$bin/sluice-bench" -e "unix:$dir/s.sock" --tenant noisy --rule api --keys 50000000 -c 32 -d 16 --threads 1 \
    --duration "$((seconds + 2))s" --warmup 1 --json --quiet >"$dir/noisy.json" &
  flood=$!
  sleep 1
}
report() { # phase round
  python3 -c 'import json,sys
q = json.load(open(sys.argv[3]))
n = json.load(open(sys.argv[4])) if sys.argv[4] != "-" else {}
print(json.dumps({"phase": sys.argv[1], "round": int(sys.argv[2]), "quiet": q, "noisy": n}))' "$1" "$2" "$dir/quiet.json" "${3:--}"
}

for round in $(seq 1 "$rounds"); do
  quiet; report alone "$round"
  noisy; quiet; wait "$flood"; flood=; report quota "$round" "$dir/noisy.json"
  configure none; kill -HUP "$pid"; sleep 1
  noisy; quiet; wait "$flood"; flood=; report no_quota "$round" "$dir/noisy.json"
  configure quota; kill -HUP "$pid"; sleep 1
done | tee "$dir/all.jsonl"
python3 - "$dir/all.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
lat = lambda r, k: r["quiet"]["latency_us"][k] / 1000
phases = ("alone", "quota", "no_quota")
med = {p: {k: statistics.median(lat(r, k) for r in rows if r["phase"] == p) for k in ("p50", "p99")} for p in phases}
for p in phases:
    noisy = [r["noisy"] for r in rows if r["phase"] == p and r["noisy"]]
    flood = f"noisy {statistics.median(n['requests_per_s'] for n in noisy):>9,.0f} req/s answered, {statistics.median(n.get('errors', 0) for n in noisy):>9,.0f} refused" if noisy else ""
    print(f"{p:9} quiet p50 {med[p]['p50']:7.3f} ms  p99 {med[p]['p99']:7.3f} ms   {flood}")
print(f"quiet p99 under the flood / alone: with the quota {med['quota']['p99'] / med['alone']['p99']:.2f}x, without {med['no_quota']['p99'] / med['alone']['p99']:.2f}x")
PY
