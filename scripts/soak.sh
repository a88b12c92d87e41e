#!/usr/bin/env bash
# Soak test (not in CI): a release sluiced under valid, invalid and abusive clients at once for
# 30 minutes (scripts/soak.py: pipelined valid requests of every kind, garbage, stalled frames,
# idle and never-reading clients, split frames, connection churn), its resident memory and a
# ping's round trip sampled every 10 s. Writes the samples to .build-soak/soak.jsonl and prints a
# summary; fails if the daemon died or answered a request with the wrong id.
#
#   scripts/soak.sh                  30 minutes
#   scripts/soak.sh --seconds 120    a short one
#   SLUICED=PATH scripts/soak.sh      a sluiced built already
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=1800
[ "${1:-}" = "--seconds" ] && seconds="$2"
out=.build-soak
mkdir -p "$out"
if [ -n "${SLUICED:-}" ]; then
  sluiced=$SLUICED   # a release binary built already
else
  swift build -c release --product sluiced 2>&1 | grep -E "error|Build complete" | tail -1
  sluiced=$(swift build -c release --show-bin-path)/sluiced
fi
dir=$(mktemp -d /tmp/sluice-soak.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
metrics=$(free_port)
cat >"$dir/sluice.yaml" <<YAML
server: { idle_timeout: 30s, read_timeout: 5s, max_connections: 2000, evict_idle_after: 5s }
rules:
  default:
    limits:
      - { limit: 10, period: 1s, burst: 20 }
      - { limit: 10000, period: 1d }
  api: { limit: 100, period: 1s, service: checkout }
  leases: { limit: 3, period: 1m, algorithm: concurrency }
  sliding: { limit: 5, period: 1m, algorithm: sliding_window }
  fixed: { limit: 5, period: 1m, algorithm: fixed_window }
  bucket: { limit: 5, period: 1s, burst: 10, algorithm: token_bucket }
  export: { limit: 100, period: 1m, baseline: { factor: 3, floor: 10, ceiling: 1000 } }
tiers:
  vip: { multiplier: 4, priority: 100, reserve: 0.9 }
features:
  reputation: { enabled: true, shadow: false }
  adaptive: { enabled: true, shadow: false }
  anomaly: { enabled: true, shadow: true }
tenants:
  acme: { rules: { login: { limit: 5, period: 1m, algorithm: sliding_window } } }
YAML
"$sluiced" --config "$dir/sluice.yaml" --unix "$dir/s.sock" --tcp "127.0.0.1:$port" --tcp-auth none --metrics "127.0.0.1:$metrics" \
  --snapshot "$dir/table.snapshot" --store "$dir/sluice.db" --log-level error >"$out/sluiced.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [ -S "$dir/s.sock" ] && break; sleep 0.1; done
echo "== soaking sluiced (pid $pid) for $seconds s; samples in $out/soak.jsonl"
status=0
python3 scripts/soak.py ${SOAK_ONLY:+--only $SOAK_ONLY} --unix "$dir/s.sock" --tcp "127.0.0.1:$port" --tcp-auth none --pid "$pid" --seconds "$seconds" --root . --metrics "127.0.0.1:$metrics" | tee "$out/soak.jsonl" || status=$?
kill -TERM $pid 2>/dev/null || status=1
exited=0
wait $pid 2>/dev/null || exited=$?
[ "$exited" = 0 ] || status=1
echo "== sluiced exited with $exited; its log (errors only): $(wc -l <"$out/sluiced.log") lines in $out/sluiced.log"
exit $status
