#!/usr/bin/env bash
# Limits shared through Redis (backend: redis), in one run on this machine, driven by the same
# client (sluice-bench, 50 connections, depth 1 and 16): Redis + the GCRA Lua script called once
# per request (what scripts/bench-vs-redis.sh measures), one sluiced and two sluiced sharing that
# Redis in exact mode and in fast mode (redis.mode: fast), and one sluiced on its local table.
#   scripts/bench-fleet.sh [seconds=5] [out=bench-fleet.json]
# Workload: one GCRA decision per request on uniform random keys out of 100,000 (100 per second,
# burst 100). With two daemons, two clients of 25 connections run at once, one per daemon, and
# their answers are added. Everything listens on Unix sockets in a temp folder; every process
# started here is stopped on exit.
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
cat >"$dir/fleet.yaml" <<YAML
backend: redis
redis: { url: "unix://$dir/redis.sock", connections: 4, timeout: 1s, expected_daemons: 2 }
YAML
cat >"$dir/fast.yaml" <<YAML
backend: redis
redis: { url: "unix://$dir/redis.sock", connections: 4, timeout: 1s, expected_daemons: 2, mode: fast }
YAML
for name in a b c d; do
  config="$dir/fleet.yaml"
  case $name in c|d) config="$dir/fast.yaml" ;; esac
  "$bin/sluiced" --config "$config" --unix "$dir/$name.sock" --tcp 127.0.0.1:0 --snapshot off --store off --metrics off \
    --log-level warning >"$dir/sluiced-$name.log" 2>&1 &
  pids+=($!)
  wait_for_socket "$dir/$name.sock" "sluiced ($name)"
done
"$bin/sluiced" --unix "$dir/local.sock" --tcp 127.0.0.1:0 --snapshot off --store off --metrics off --log-level warning \
  >"$dir/sluiced-local.log" 2>&1 &
pids+=($!)
wait_for_socket "$dir/local.sock" "sluiced (local)"
sha=$(timeout 10 redis-cli -s "$dir/redis.sock" SCRIPT LOAD "$(cat scripts/gcra.lua)")
[ ${#sha} = 40 ] || { echo "bench-fleet.sh: SCRIPT LOAD failed: $sha" >&2; exit 1; }

bench() { # name, then sluice-bench arguments
  local name=$1; shift
  timeout $((seconds + 60)) "$bin/sluice-bench" --quiet --json --duration "${seconds}s" --warmup 1 \
    --keys 100000 --limit 100/1s --burst 100 "$@" >"$dir/$name.json"
}

for depth in 1 16; do
  echo "  depth $depth" >&2
  bench "redis-lua.d$depth" -c 50 -d "$depth" --target redis --redis-sha "$sha" -e "unix:$dir/redis.sock"
  bench "local.d$depth" -c 50 -d "$depth" --target sluice -e "unix:$dir/local.sock"
  bench "one.d$depth" -c 50 -d "$depth" --target sluice -e "unix:$dir/a.sock"
  bench "two-a.d$depth" -c 25 -d "$depth" --target sluice -e "unix:$dir/a.sock" &
  first=$!
  bench "two-b.d$depth" -c 25 -d "$depth" --target sluice -e "unix:$dir/b.sock"
  wait "$first"
  bench "fast.d$depth" -c 50 -d "$depth" --target sluice -e "unix:$dir/c.sock"
  bench "fast-two-a.d$depth" -c 25 -d "$depth" --target sluice -e "unix:$dir/c.sock" &
  first=$!
  bench "fast-two-b.d$depth" -c 25 -d "$depth" --target sluice -e "unix:$dir/d.sock"
  wait "$first"
done

python3 - "$dir" "$out" <<'PY'
import json, os, sys
d, out = sys.argv[1], sys.argv[2]
def load(name): return json.load(open(os.path.join(d, f"{name}.json")))
summary = {}
print(f"{'run':<22}{'requests/s':>12}{'p50 us':>9}{'p99 us':>9}{'errors':>8}")
for depth in (1, 16):
    runs = {k: load(f"{k}.d{depth}") for k in ["redis-lua", "local", "one", "two-a", "two-b", "fast", "fast-two-a", "fast-two-b"]}
    two = runs["two-a"]["requests_per_s"] + runs["two-b"]["requests_per_s"]
    fast_two = runs["fast-two-a"]["requests_per_s"] + runs["fast-two-b"]["requests_per_s"]
    for k in ["redis-lua", "local", "one", "fast"]:
        r = runs[k]
        print(f"{k + ' d' + str(depth):<22}{r['requests_per_s']:>12,.0f}{r['latency_us']['p50']:>9.0f}{r['latency_us']['p99']:>9.0f}"
              f"{r['errors'] + r['unanswered']:>8}")
    print(f"{'two daemons d' + str(depth):<22}{two:>12,.0f}{max(runs['two-a']['latency_us']['p50'], runs['two-b']['latency_us']['p50']):>9.0f}"
          f"{max(runs['two-a']['latency_us']['p99'], runs['two-b']['latency_us']['p99']):>9.0f}"
          f"{runs['two-a']['errors'] + runs['two-b']['errors'] + runs['two-a']['unanswered'] + runs['two-b']['unanswered']:>8}")
    print(f"{'fast, two daemons d' + str(depth):<22}{fast_two:>12,.0f}")
    ratios = {"one daemon / redis+lua": runs["one"]["requests_per_s"] / runs["redis-lua"]["requests_per_s"],
              "fast one daemon / local table": runs["fast"]["requests_per_s"] / runs["local"]["requests_per_s"],
              "fast two daemons / local table": fast_two / runs["local"]["requests_per_s"],
              "two daemons / redis+lua": two / runs["redis-lua"]["requests_per_s"],
              "one daemon / local table": runs["one"]["requests_per_s"] / runs["local"]["requests_per_s"]}
    for k, v in ratios.items(): print(f"  {k + ' at 50 x ' + str(depth):<40}{v:6.2f}")
    summary[f"d{depth}"] = {"runs": runs, "two_daemons_requests_per_s": two, "fast_two_daemons_requests_per_s": fast_two, "ratios": ratios}
json.dump(summary, open(out, "w"), indent=2, sort_keys=True)
print(f"JSON: {out}")
PY
