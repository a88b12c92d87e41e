#!/usr/bin/env bash
# Where the CPU goes when Redis decides (issue 17's latency target): one sluiced in exact mode on
# one Redis, and one on its local table, driven open loop (sluice-bench -c 50 -d 16 --rate R) at
# 1/2, 1/4, 1/6 and 1/12 of exact mode's measured peak. For each run: p50/p99, and the CPU each
# process used (from /proc/PID/stat) and the whole machine's busy share (from /proc/stat, of
# 100 % per core), over the run and its 1 s warmup.
#   scripts/bench-redis-load.sh [seconds=5]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
# shellcheck source=bench-lib.sh
source scripts/bench-lib.sh
need_redis
build_release
cores=$(nproc)
redis-server --port 0 --unixsocket "$dir/redis.sock" --save '' --appendonly no --loglevel warning >"$dir/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
wait_for_socket "$dir/redis.sock" redis-server
cat >"$dir/exact.yaml" <<YAML
backend: redis
redis: { url: "unix://$dir/redis.sock", connections: 4, timeout: 1s }
YAML
start() { # socket name, then sluiced arguments
  local name=$1; shift
  "$bin/sluiced" "$@" --unix "$dir/$name.sock" --tcp 127.0.0.1:0 --tcp-auth none --snapshot off --store off --metrics off --log-level warning \
    >"$dir/sluiced-$name.log" 2>&1 &
  pids+=($!)
  wait_for_socket "$dir/$name.sock" "sluiced ($name)"
}
start exact --config "$dir/exact.yaml"
exact_pid=${pids[-1]}
start local
local_pid=${pids[-1]}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
machine() { awk '/^cpu /{print $2 + $3 + $4 + $5 + $6 + $7 + $8, $5 + $6}' /proc/stat; }
run() { # label, socket name, rate (empty: closed loop)
  local r0 e0 l0 m0 r1 e1 l1 m1
  r0=$(ticks "$redis_pid"); e0=$(ticks "$exact_pid"); l0=$(ticks "$local_pid"); m0=$(machine)
  timeout $((seconds + 60)) "$bin/sluice-bench" --quiet --json --duration "${seconds}s" --warmup 1 --keys 100000 --limit 100/1s \
    --burst 100 -c 50 -d 16 ${3:+--rate "$3"} --target sluice -e "unix:$dir/$2.sock" >"$dir/$1.json"
  r1=$(ticks "$redis_pid"); e1=$(ticks "$exact_pid"); l1=$(ticks "$local_pid"); m1=$(machine)
  python3 - "$dir/$1.json" "$1" "$((r1 - r0))" "$((e1 - e0))" "$((l1 - l0))" "$m0" "$m1" "$((seconds + 1))" "$cores" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
label = sys.argv[2]
redis, exact, local = (int(x) / 100 for x in sys.argv[3:6])  # seconds of CPU (100 ticks a second)
t0, i0 = map(int, sys.argv[6].split()); t1, i1 = map(int, sys.argv[7].split())
secs, cores = float(sys.argv[8]), int(sys.argv[9])
busy = 100 * cores * (1 - (i1 - i0) / (t1 - t0))
print(f"{label:<12}{r['requests_per_s']:>11,.0f}{r['latency_us']['p50']:>9.0f}{r['latency_us']['p99']:>9.0f}"
      f"{100 * redis / secs:>8.0f}%{100 * exact / secs:>8.0f}%{100 * local / secs:>8.0f}%{busy:>8.0f}% of {100 * cores}%")
PY
}
printf "%-12s%11s%9s%9s%9s%9s%9s%9s\n" run requests/s "p50 us" "p99 us" redis exact local machine
run exact.peak exact
peak=$(python3 -c "import json; print(int(json.load(open('$dir/exact.peak.json'))['requests_per_s']))")
for share in 2 4 6 12; do
  run "exact.1_$share" exact $((peak / share))
  run "local.1_$share" local $((peak / share))
done
