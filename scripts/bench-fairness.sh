#!/usr/bin/env bash
# Fairness and overload, two sluiced builds in the same run (A, then B, alternating by round):
#   1. a flood of 200 connections pipelining 256 checks deep (closed loop), and meanwhile a new
#      client asking 20 times a second: its latency (p50, p99, max) is what a newcomer waits;
#   2. open loop at twice the capacity measured in 1 (50 connections, up to 256 in flight each): how many checks are answered
#      CODE_OVERLOADED at once, and the latency of the rest (measured from each request's
#      intended send time, so queueing shows).
#   scripts/bench-fairness.sh A_SLUICED B_SLUICED [seconds=10] [rounds=2]
#   OPEN_TCP=1   the open loop over TCP rather than the Unix socket (a TCP socket's queue grows to
#                MiBs; a Unix socket's is bounded by the sender's buffer)
#   OPEN_DEPTH=N requests in flight per connection at most in the open loop (default 256); the
#                rest wait in the client, where no daemon can see them
# The daemons run one event-loop thread (server.threads: 1) so that on a 2-core machine the
# daemon saturates before the client does. Prints one JSON line per run and a table.
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1 b=$2 seconds=${3:-10} rounds=${4:-2}
swift build -c release --product sluice-bench >/dev/null
bin=$(swift build -c release --show-bin-path)
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, d))" "$@"; }

run() { # label, binary
  local label=$1 binary=$2
  rm -f "$dir/s.sock"
  # One event-loop thread, so that on 2 cores the daemon, not the client, is what saturates.
  printf 'server: { threads: 1 }\n' >"$dir/sluice.yaml"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$binary" --config "$dir/sluice.yaml" --unix "$dir/s.sock" --tcp "127.0.0.1:$port" --tcp-auth none --snapshot off --store off --metrics off \
    --log-level critical >"$dir/$label.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do [ -S "$dir/s.sock" ] && break; sleep 0.1; done
  # 1. The flood, and a newcomer's checks during it.
  timeout $((seconds + 60)) "$bin/sluice-bench" --quiet --json --duration "$((seconds + 4))s" --warmup 1 --keys 100000 \
    --limit 1000000/1s -c 200 -d 256 -e "unix:$dir/s.sock" >"$dir/$label.flood.json" &
  local flood=$!
  sleep 2
  timeout $((seconds + 60)) "$bin/sluice-bench" --quiet --json --duration "${seconds}s" --warmup 0 --keys 100000 \
    --limit 1000000/1s -c 1 -d 1 --rate 20 -e "unix:$dir/s.sock" >"$dir/$label.newcomer.json"
  wait $flood
  local capacity
  capacity=$(field "$dir/$label.flood.json" "int(requests_per_s)")
  # 2. Open loop at twice that.
  timeout $((seconds + 60)) "$bin/sluice-bench" --quiet --json --duration "${seconds}s" --warmup 0 --keys 100000 \
    --limit 1000000/1s -c 50 -d "${OPEN_DEPTH:-256}" --rate $((2 * capacity)) \
    -e "$([ -n "${OPEN_TCP:-}" ] && echo "127.0.0.1:$port" || echo "unix:$dir/s.sock")" >"$dir/$label.open.json" || true
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  python3 -c 'import json,sys; print(json.dumps({"build": sys.argv[1], "round": int(sys.argv[2]), "flood_rps": int(sys.argv[3]),
    "newcomer": json.load(open(sys.argv[4])), "open": json.load(open(sys.argv[5]))}))' "$label" "$round" "$capacity" \
    "$dir/$label.newcomer.json" "$dir/$label.open.json"
}

for round in $(seq 1 "$rounds"); do
  run A "$a"
  run B "$b"
done | tee "$dir/all.jsonl"
python3 - "$dir/all.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'build':5} {'flood req/s':>12} {'newcomer p50 ms':>16} {'p99 ms':>8} {'max ms':>8} {'open-loop rate':>15} {'overloaded':>11} {'answered p50 ms':>16} {'p99 ms':>8}")
for r in rows:
    n, o = r["newcomer"], r["open"]
    lat = lambda d, k: d.get("latency_us", {}).get(k, 0) / 1000
    print(f"{r['build']:5} {r['flood_rps']:>12,} {lat(n,'p50'):>16.1f} {lat(n,'p99'):>8.1f} {lat(n,'max'):>8.1f} "
          f"{int(o.get('rate', 0)):>15,} {o.get('errors', 0):>11,} {lat(o,'p50'):>16.1f} {lat(o,'p99'):>8.1f}")
PY
