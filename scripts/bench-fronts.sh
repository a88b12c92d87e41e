#!/usr/bin/env bash
# Decisions per second and latency through each front door of one sluiced (release): the native
# framed protocol (sluice-bench's epoll engine), the HTTP/JSON API (the same engine, POST
# /v1/check on kept-alive HTTP/1.1) and Envoy's gRPC rate limit service (sluice-bench --target
# grpc: the same engine writing each ShouldRateLimit call as raw HTTP/2 frames, a client as lean as
# Envoy's), each at 50 connections and one request in flight per connection, alternating each
# round; then the gRPC front's p99 at half of its peak (open loop), and once more with the Swift
# gRPC client (--engine grpc, grpc-swift-2) for comparison. Every request is one check on one of 100,000 keys, allowed (a limit far above
# the load), decided by the same fixed-window limit behind each door.
#   scripts/bench-fronts.sh [seconds=10] [rounds=3] [threads=1]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10} rounds=${2:-3} threads=${3:-1}
swift build -c release --product sluiced >/dev/null
swift build -c release --product sluice-bench >/dev/null
bin=$(swift build -c release --show-bin-path)
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
native=$(free_port) http=$(free_port) grpc=$(free_port)
cat >"$dir/sluice.yaml" <<YAML
listen:
  unix: ["$dir/s.sock"]
  tcp: [{ address: "127.0.0.1:$native", auth: none }]
http:
  listen: { tcp: [{ address: "127.0.0.1:$http", auth: none }] }
envoy:
  listen: { tcp: [{ address: "127.0.0.1:$grpc", auth: none }] }
  domains:
    - domain: bench
      descriptors:
        - key: user
          rate_limit: { unit: second, requests_per_unit: 1000000000 }
tenants:
  bench:
    rules:
      native: { limit: 1000000000, period: 1s, algorithm: fixed_window }
server: { threads: $threads, max_queue_delay: 0 }
YAML
"$bin/sluiced" --config "$dir/sluice.yaml" --snapshot off --store off --metrics off --log-level error >"$dir/sluiced.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do [ -S "$dir/s.sock" ] && break; sleep 0.1; done

tag() { python3 -c 'import json,sys; d=json.load(sys.stdin); d["front"]=sys.argv[1]; d["round"]=sys.argv[2]; print(json.dumps(d))' "$@"; }
common=(-c 50 -d 1 --keys 100000 --duration "${seconds}s" --warmup 1 --json --quiet)
for round in $(seq 1 "$rounds"); do
  "$bin/sluice-bench" -e "127.0.0.1:$native" --tenant bench --rule native "${common[@]}" | tag native "$round"
  "$bin/sluice-bench" -e "127.0.0.1:$http" --target http --tenant bench --rule native "${common[@]}" | tag http "$round"
  "$bin/sluice-bench" --target grpc -e "127.0.0.1:$grpc" --domain bench --descriptor-key user "${common[@]}" | tag grpc "$round"
done | tee "$dir/all.jsonl"
"$bin/sluice-bench" --engine grpc -e "127.0.0.1:$grpc" --domain bench --descriptor-key user "${common[@]}" | tag grpc-swift-client 0 | tee -a "$dir/all.jsonl"
peak=$(python3 -c 'import json,sys,statistics; print(statistics.median(json.loads(l)["requests_per_s"] for l in open(sys.argv[1]) if json.loads(l)["front"]=="grpc"))' "$dir/all.jsonl")
half=$(python3 -c "print(round($peak / 2))")
"$bin/sluice-bench" --target grpc -e "127.0.0.1:$grpc" --domain bench --descriptor-key user -c 50 -d 1 --keys 100000 \
  --duration "${seconds}s" --warmup 1 --rate "$half" --json --quiet | tag grpc-half-peak 0 | tee -a "$dir/all.jsonl"
python3 - "$dir/all.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def of(front): return [r for r in rows if r["front"] == front]
def rate(r): return r.get("requests_per_s", 0)
med = {f: statistics.median(rate(r) for r in of(f)) for f in ("native", "http", "grpc")}
for f in ("native", "http", "grpc"):
    p = statistics.median(r["latency_us"]["p99"] for r in of(f))
    q = statistics.median(r["latency_us"]["p50"] for r in of(f))
    print(f"{f:7} requests/s median {med[f]:>10,.0f}   p50 {q:>7.0f} us   p99 {p:>7.0f} us   errors {sum(r.get('errors', 0) for r in of(f))}")
print(f"gRPC / native: {med['grpc'] / med['native']:.2f}x (goal >= 0.3); HTTP / native: {med['http'] / med['native']:.2f}x;"
      f" per-round gRPC/native: {[round(rate(g) / rate(n), 2) for n, g in zip(of('native'), of('grpc'))]}")
swift = of("grpc-swift-client")[0]
print(f"gRPC with the Swift client (grpc-swift-2, --engine grpc): {rate(swift):,.0f} calls/s, p99 {swift['latency_us']['p99']:.0f} us")
half = of("grpc-half-peak")[0]
print(f"gRPC at half its peak ({rate(half):,.0f} calls/s offered open loop): p50 {half['latency_us']['p50']:.0f} us,"
      f" p99 {half['latency_us']['p99']:.0f} us (goal < 2000), errors {half.get('errors', 0)}")
PY
