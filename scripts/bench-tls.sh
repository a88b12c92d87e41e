#!/usr/bin/env bash
# The cost of TLS per check: one sluiced (release) with two loopback listeners, plain TCP and TLS
# (a certificate made here by openssl), measured by the same client (sluice-bench --engine nio,
# the Swift client over SwiftNIO and swift-nio-ssl), alternating plain and TLS each round.
#   scripts/bench-tls.sh [seconds=10] [rounds=3] [batch=1]
# Prints one JSON line per run, then checks per second and p99 per transport and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10} rounds=${2:-3} batch=${3:-1}
swift build -c release --product sluiced >/dev/null
swift build -c release --product sluice-bench >/dev/null
bin=$(swift build -c release --show-bin-path)
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$dir/server.key" -out "$dir/server.pem" >/dev/null 2>&1
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
plain=$(free_port) secure=$(free_port)
cat >"$dir/sluice.yaml" <<YAML
listen:
  unix: ["$dir/s.sock"]
  tcp:
    - { address: "127.0.0.1:$plain", auth: none }
    - { address: "127.0.0.1:$secure", auth: none, tls: { certificate: "$dir/server.pem", key: "$dir/server.key" } }
server: { threads: 1, max_queue_delay: 0 }
YAML
"$bin/sluiced" --config "$dir/sluice.yaml" --snapshot off --store off --metrics off --log-level error >"$dir/sluiced.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do [ -S "$dir/s.sock" ] && break; sleep 0.1; done

for round in $(seq 1 "$rounds"); do
  for transport in plain tls; do
    if [ $transport = plain ]; then target=(-e "127.0.0.1:$plain"); else target=(-e "localhost:$secure" --tls-ca "$dir/server.pem"); fi
    "$bin/sluice-bench" --engine nio "${target[@]}" -c 16 -d 8 --batch "$batch" --keys 100000 --limit 1000000/1s \
      --duration "${seconds}s" --warmup 1 --json --quiet | python3 -c 'import json,sys; d=json.load(sys.stdin); d["transport"]=sys.argv[1]; d["round"]=int(sys.argv[2]); print(json.dumps(d))' "$transport" "$round"
  done
done | tee "$dir/all.jsonl"
python3 - "$dir/all.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
by = {t: [r for r in rows if r["transport"] == t] for t in ("plain", "tls")}
med = lambda t, f: statistics.median(f(r) for r in by[t])
for t in ("plain", "tls"):
    print(f"{t:6} checks/s median {med(t, lambda r: r['checks_per_s']):>10,.0f}   p99 median {med(t, lambda r: r['latency_us']['p99']):>8.0f} us   errors {sum(r['errors'] for r in by[t])}")
print(f"TLS / plain checks per second: {med('tls', lambda r: r['checks_per_s']) / med('plain', lambda r: r['checks_per_s']):.2f}x;"
      f" per-round ratios: {[round(t['checks_per_s'] / p['checks_per_s'], 2) for p, t in zip(by['plain'], by['tls'])]}")
PY
