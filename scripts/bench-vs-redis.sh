#!/usr/bin/env bash
# Sluice against Redis with a GCRA Lua script, and both against a bare C echo server, in one run
# on this machine, driven by the same client (sluice-bench, one thread, 50 connections).
#   scripts/bench-vs-redis.sh [seconds=10] [rounds=1] [out=bench-vs-redis.json]
# Workload: one GCRA decision per request on uniform random keys out of 100,000 (100 per second,
# burst 100), pipeline depth 1 and 16; plus Sluice with 100 checks per frame. Redis runs
# scripts/gcra.lua through EVALSHA. Everything listens on Unix sockets in a temp folder; every run
# is bounded in time; every process started here is stopped on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
rounds=${2:-1}
out=${3:-bench-vs-redis.json}
# shellcheck source=bench-lib.sh
source scripts/bench-lib.sh
need_redis
build_release
cc -O2 -o "$dir/echo_server" Benchmarks/c-baseline/echo_server.c

redis-server --port 0 --unixsocket "$dir/redis.sock" --save '' --appendonly no --loglevel warning >"$dir/redis.log" 2>&1 &
pids+=($!)
"$bin/sluiced" --unix "$dir/sluice.sock" --tcp 127.0.0.1:0 --tcp-auth none --snapshot off --store off --metrics off --log-level warning >"$dir/sluiced.log" 2>&1 &
pids+=($!)
"$dir/echo_server" "$dir/echo.sock" >"$dir/echo.log" 2>&1 &
pids+=($!)
wait_for_socket "$dir/redis.sock" redis-server
wait_for_socket "$dir/sluice.sock" sluiced
wait_for_socket "$dir/echo.sock" echo_server
sha=$(timeout 10 redis-cli -s "$dir/redis.sock" SCRIPT LOAD "$(cat scripts/gcra.lua)")
[ ${#sha} = 40 ] || { echo "bench-vs-redis.sh: SCRIPT LOAD failed: $sha" >&2; exit 1; }

bench() { # name, then sluice-bench arguments
  local name=$1; shift
  echo "  $name" >&2
  timeout $((seconds + 60)) "$bin/sluice-bench" --quiet --json --duration "${seconds}s" --warmup 1 \
    --keys 100000 --limit 100/1s --burst 100 -c 50 "$@" >"$dir/$name.json"
}

for round in $(seq 1 "$rounds"); do
  echo "round $round of $rounds ($seconds s per run)" >&2
  for depth in 1 16; do
    bench "echo.d$depth.r$round" --target echo -e "unix:$dir/echo.sock" -d "$depth"
    bench "redis.d$depth.r$round" --target redis --redis-sha "$sha" -e "unix:$dir/redis.sock" -d "$depth"
    bench "sluice.d$depth.r$round" --target sluice -e "unix:$dir/sluice.sock" -d "$depth"
  done
  bench "sluice.batch100.r$round" --target sluice -e "unix:$dir/sluice.sock" -d 1 -b 100
done

python3 - "$dir" "$rounds" "$out" <<'PY'
import json, os, statistics, sys
d, rounds, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(name): return [json.load(open(os.path.join(d, f"{name}.r{r}.json"))) for r in range(1, rounds + 1)]
def med(runs, f): return statistics.median(f(x) for x in runs)
rows, summary = [], {"rounds": rounds, "runs": {}}
for name in ["echo.d1", "redis.d1", "sluice.d1", "echo.d16", "redis.d16", "sluice.d16", "sluice.batch100"]:
    runs = load(name)
    summary["runs"][name] = runs
    rows.append((name, med(runs, lambda x: x["requests_per_s"]), med(runs, lambda x: x["decisions_per_s"]),
                 med(runs, lambda x: x["latency_us"]["p50"]), med(runs, lambda x: x["latency_us"]["p99"]),
                 med(runs, lambda x: x["latency_us"]["p99.9"]), sum(x["errors"] + x["unanswered"] for x in runs)))
print(f"{'run':<16}{'requests/s':>12}{'decisions/s':>13}{'p50 us':>9}{'p99 us':>9}{'p99.9 us':>10}{'errors':>8}")
for r in rows:
    print(f"{r[0]:<16}{r[1]:>12,.0f}{r[2]:>13,.0f}{r[3]:>9.0f}{r[4]:>9.0f}{r[5]:>10.0f}{r[6]:>8}")
# Ratios within each round, then the median over rounds.
def ratio(a, b, field="requests_per_s"):
    return statistics.median(x[field] / y[field] for x, y in zip(load(a), load(b)))
ratios = {
    "sluice/redis at 50x1": ratio("sluice.d1", "redis.d1"),
    "sluice/redis at 50x16": ratio("sluice.d16", "redis.d16"),
    "sluice/echo at 50x1 (target >= 0.5)": ratio("sluice.d1", "echo.d1"),
    "sluice/echo at 50x16 (target >= 0.4)": ratio("sluice.d16", "echo.d16"),
    "redis/echo at 50x1": ratio("redis.d1", "echo.d1"),
    "redis/echo at 50x16": ratio("redis.d16", "echo.d16"),
}
for k, v in ratios.items(): print(f"{k:<40}{v:6.2f}")
batch = med(load("sluice.batch100"), lambda x: x["decisions_per_s"])
print(f"{'sluice decisions/s, 100 checks per frame (target >= 3,000,000)':<64}{batch:,.0f}")
summary["ratios"] = ratios
summary["batch100_decisions_per_s"] = batch
json.dump(summary, open(out, "w"), indent=2, sort_keys=True)
print(f"JSON: {out}")
PY
