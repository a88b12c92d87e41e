#!/usr/bin/env bash
# Limits shared through Redis (backend: redis), in one run on this machine, driven by the same
# client (sluice-bench, 50 connections, depth 1 and 16), against two peers on the same Redis:
#   redis-lua   Redis + the GCRA Lua script called once per request (scripts/bench-vs-redis.sh's)
#   redis-incr  envoy ratelimit's way: INCRBY + EXPIRE pipelined per request (a fixed window)
# and Sluice: one and three sluiced sharing that Redis in exact mode and in fast mode
# (redis.mode: fast), one sluiced on its local table (the floor), and one sluiced in exact mode
# on a 3-node Redis Cluster. Then the latency Redis adds: exact mode and the local table driven
# open loop at half of exact mode's measured peak, p50/p99 of each and the difference.
#   scripts/bench-fleet.sh [seconds=5] [out=bench-fleet.json]
# Workload: one GCRA decision per request on uniform random keys out of 100,000 (100 per second,
# burst 100). With three daemons, three clients of 17/17/16 connections run at once, one per
# daemon, and their answers are added. Redis and the daemons listen on Unix sockets in a temp
# folder (the Cluster's nodes on loopback TCP); every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
out=${2:-bench-fleet.json}
# shellcheck source=bench-lib.sh
source scripts/bench-lib.sh
need_redis
build_release

redis-server --port 0 --unixsocket "$dir/redis.sock" --save '' --appendonly no --loglevel warning >"$dir/redis.log" 2>&1 &
pids+=($!)
wait_for_socket "$dir/redis.sock" redis-server

# A 3-node Cluster on free loopback ports (client and bus port each).
read -r -a ports <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
nodes=()
for i in 0 1 2; do
  mkdir -p "$dir/node$i"
  redis-server --port "${ports[$i]}" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-port "${ports[$((i + 3))]}" --dir "$dir/node$i" --save '' --appendonly no --loglevel warning >"$dir/node$i.log" 2>&1 &
  pids+=($!)
  nodes+=("127.0.0.1:${ports[$i]}")
done
for port in "${ports[@]:0:3}"; do
  for _ in $(seq 1 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$dir/cluster-create.log" 2>&1
for port in "${ports[@]:0:3}"; do
  for _ in $(seq 1 300); do redis-cli -p "$port" CLUSTER INFO | grep -q cluster_state:ok && break; sleep 0.1; done
done

cat >"$dir/exact.yaml" <<YAML
backend: redis
redis: { url: "unix://$dir/redis.sock", connections: 4, timeout: 1s, expected_daemons: 3 }
YAML
cat >"$dir/fast.yaml" <<YAML
backend: redis
redis: { url: "unix://$dir/redis.sock", connections: 4, timeout: 1s, expected_daemons: 3, mode: fast }
YAML
cat >"$dir/cluster.yaml" <<YAML
backend: redis
redis: { cluster: ["redis://${nodes[0]}", "redis://${nodes[1]}"], connections: 2, timeout: 1s }
YAML
start() { # name, configuration (none: the embedded default, the local table)
  local name=$1 config=${2:-}
  "$bin/sluiced" ${config:+--config "$config"} --unix "$dir/$name.sock" --tcp 127.0.0.1:0 --tcp-auth none --snapshot off --store off --metrics off \
    --log-level warning >"$dir/sluiced-$name.log" 2>&1 &
  pids+=($!)
  wait_for_socket "$dir/$name.sock" "sluiced ($name)"
}
for name in a b c; do start "$name" "$dir/exact.yaml"; done
for name in d e f; do start "$name" "$dir/fast.yaml"; done
start cluster "$dir/cluster.yaml"
start local
sha=$(timeout 10 redis-cli -s "$dir/redis.sock" SCRIPT LOAD "$(cat scripts/gcra.lua)")
[ ${#sha} = 40 ] || { echo "bench-fleet.sh: SCRIPT LOAD failed: $sha" >&2; exit 1; }

bench() { # name, then sluice-bench arguments
  local name=$1; shift
  timeout $((seconds + 60)) "$bin/sluice-bench" --quiet --json --duration "${seconds}s" --warmup 1 \
    --keys 100000 --limit 100/1s --burst 100 "$@" >"$dir/$name.json"
}
three() { # name, depth, three daemons' names
  local name=$1 depth=$2
  bench "$name-1.d$depth" -c 17 -d "$depth" --target sluice -e "unix:$dir/$3.sock" &
  local first=$!
  bench "$name-2.d$depth" -c 17 -d "$depth" --target sluice -e "unix:$dir/$4.sock" &
  local second=$!
  bench "$name-3.d$depth" -c 16 -d "$depth" --target sluice -e "unix:$dir/$5.sock"
  wait "$first" "$second"
}

for depth in 1 16; do
  echo "  depth $depth" >&2
  bench "redis-lua.d$depth" -c 50 -d "$depth" --target redis --redis-sha "$sha" -e "unix:$dir/redis.sock"
  bench "redis-incr.d$depth" -c 50 -d "$depth" --target redis-incr -e "unix:$dir/redis.sock"
  bench "local.d$depth" -c 50 -d "$depth" --target sluice -e "unix:$dir/local.sock"
  bench "exact.d$depth" -c 50 -d "$depth" --target sluice -e "unix:$dir/a.sock"
  three exact-three "$depth" a b c
  bench "fast.d$depth" -c 50 -d "$depth" --target sluice -e "unix:$dir/d.sock"
  three fast-three "$depth" d e f
  bench "cluster.d$depth" -c 50 -d "$depth" --target sluice -e "unix:$dir/cluster.sock"
done

# Latency added by Redis: open loop at half of exact mode's peak, exact mode against the local
# table at the same rate (depth 16 leaves room, so a slow answer does not hold the next back).
half=$(python3 -c "
import json
print(int(max(json.load(open('$dir/exact.d1.json'))['requests_per_s'], json.load(open('$dir/exact.d16.json'))['requests_per_s']) / 2))")
echo "  open loop at $half requests/s" >&2
bench "exact.half" -c 50 -d 16 --rate "$half" --target sluice -e "unix:$dir/a.sock"
bench "local.half" -c 50 -d 16 --rate "$half" --target sluice -e "unix:$dir/local.sock"

python3 - "$dir" "$out" "$half" <<'PY'
import json, os, sys
d, out, half = sys.argv[1], sys.argv[2], int(sys.argv[3])
def load(name): return json.load(open(os.path.join(d, f"{name}.json")))
def errors(r): return r["errors"] + r["unanswered"]
summary = {}
print(f"{'run':<24}{'requests/s':>12}{'p50 us':>9}{'p99 us':>9}{'errors':>8}")
for depth in (1, 16):
    runs = {k: load(f"{k}.d{depth}") for k in ["redis-lua", "redis-incr", "local", "exact", "fast", "cluster"]}
    for group in ["exact-three", "fast-three"]:
        parts = [load(f"{group}-{i}.d{depth}") for i in (1, 2, 3)]
        runs[group] = {"requests_per_s": sum(p["requests_per_s"] for p in parts), "errors": sum(p["errors"] for p in parts),
                       "unanswered": sum(p["unanswered"] for p in parts),
                       "latency_us": {q: max(p["latency_us"][q] for p in parts) for q in ("p50", "p99")}}
    for k in ["redis-lua", "redis-incr", "local", "exact", "exact-three", "fast", "fast-three", "cluster"]:
        r = runs[k]
        print(f"{k + ' d' + str(depth):<24}{r['requests_per_s']:>12,.0f}{r['latency_us']['p50']:>9.0f}{r['latency_us']['p99']:>9.0f}{errors(r):>8}")
    rps = {k: r["requests_per_s"] for k, r in runs.items()}
    ratios = {"exact one daemon / redis+lua": rps["exact"] / rps["redis-lua"],
              "exact one daemon / redis incr+expire": rps["exact"] / rps["redis-incr"],
              "exact three daemons / redis+lua": rps["exact-three"] / rps["redis-lua"],
              "exact one daemon / local table": rps["exact"] / rps["local"],
              "fast one daemon / local table": rps["fast"] / rps["local"],
              "fast three daemons / local table": rps["fast-three"] / rps["local"],
              "exact on a 3-node Cluster / one Redis": rps["cluster"] / rps["exact"]}
    for k, v in ratios.items(): print(f"  {k + ' at 50 x ' + str(depth):<48}{v:6.2f}")
    summary[f"d{depth}"] = {"runs": runs, "ratios": ratios}
exact, local = load("exact.half"), load("local.half")
print(f"open loop at {half:,} requests/s (half of exact mode's peak), 50 x 16:")
for name, r in (("exact", exact), ("local", local)):
    print(f"  {name:<10}{r['requests_per_s']:>12,.0f}/s  p50 {r['latency_us']['p50']:>7.0f} us  p99 {r['latency_us']['p99']:>7.0f} us  errors {errors(r)}")
added = {q: exact["latency_us"][q] - local["latency_us"][q] for q in ("p50", "p99")}
print(f"  added by Redis: p50 {added['p50']:.0f} us, p99 {added['p99']:.0f} us")
summary["half_peak"] = {"rate": half, "exact": exact, "local": local, "added_us": added}
json.dump(summary, open(out, "w"), indent=2, sort_keys=True)
print(f"JSON: {out}")
PY
