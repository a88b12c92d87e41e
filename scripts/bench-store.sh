#!/usr/bin/env bash
# Event ingestion into the store: SQLite and PostgreSQL in the same run (issue 18's figures).
# Starts a PostgreSQL 15 cluster of its own (fsync and synchronous_commit on, as in production;
# on a Unix socket in a temp folder; as the postgres user when run as root), then runs
#   sluice-reputation-bench --only ingest --postgres URL
# which measures, for each store: one transaction of 100,000 events (median of rounds), and
# the write-behind committing every 100 ms for 10 s; then the whole RecordEvents path into SQLite;
# then one and three daemons' engines on PostgreSQL, ingesting at once, with the propagation
# delay between them under that load and idle. Last, the cost of a check with the store on
# SQLite and on PostgreSQL: a real sluiced (reputation on) under sluice-bench, 50 connections x 1,
# alternating the two `rounds` times; the ratio of the medians.
#   scripts/bench-store.sh [rounds=5] [fleet]     (fleet: only the fleet on PostgreSQL)
# KEEP_LOG=1 keeps PostgreSQL's log (statements over 100 ms) in /tmp/bench-pg.log.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
part=${2:-all}
bin_pg=/usr/lib/postgresql/15/bin
[ -x "$bin_pg/initdb" ] || { echo "bench-store.sh: PostgreSQL 15 missing (apt-get install -y postgresql)" >&2; exit 1; }
for product in sluice-reputation-bench sluiced sluice-bench; do swift build -c release --product $product >/dev/null; done
bin=$(swift build -c release --show-bin-path)
bench=$bin/sluice-reputation-bench
dir=$(mktemp -d)
as_pg=()
if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; as_pg=(runuser -u postgres --); fi
cleanup() {
  "${as_pg[@]}" "$bin_pg/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  [ -n "${KEEP_LOG:-}" ] && cp "$dir/server.log" /tmp/bench-pg.log
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM
"${as_pg[@]}" "$bin_pg/initdb" -D "$dir/data" -U sluice --auth-local=trust -E UTF8 --locale=C >/dev/null
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_pg[@]}" "$bin_pg/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-k $dir -p $port -c listen_addresses='' -c shared_buffers=128MB -c log_min_duration_statement=100" start >/dev/null
"${as_pg[@]}" "$bin_pg/psql" -h "$dir" -p "$port" -U sluice -d postgres -q -c "CREATE DATABASE bench" >/dev/null
url="postgres://sluice@/bench?host=$dir&port=$port"
if [ "$part" = fleet ]; then "$bench" --only fleet --postgres "$url"; exit 0; fi
"$bench" --only ingest --rounds "$rounds" --postgres "$url"

echo
echo "== the cost of a check with the store on SQLite and on PostgreSQL (sluiced, reputation on; sluice-bench 50 x 1, 5 s)"
cat >"$dir/checks.yaml" <<YAML
features: { reputation: { enabled: true, rollout: 100 } }
YAML
check_run() { # name, --store value
  local socket="$dir/$1.sock"
  "$bin/sluiced" --config "$dir/checks.yaml" --store "$2" --unix "$socket" --snapshot off --metrics off --log-level error &
  local pid=$!
  for _ in $(seq 1 200); do [ -S "$socket" ] && break; sleep 0.05; done
  "$bin/sluice-bench" --quiet --json -e "unix:$socket" -c 50 -d 1 --duration 5s --warmup 1 --keys 100000 --limit 100/1s \
    >"$dir/$1.json"
  kill "$pid"; wait "$pid" || true
}
for round in $(seq 1 "$rounds"); do
  check_run "sqlite-$round" "$dir/checks.db"
  check_run "postgres-$round" "$url"
done
python3 - "$dir" "$rounds" <<'PY'
import json, statistics, sys
folder, rounds = sys.argv[1], int(sys.argv[2])
runs = {name: [json.load(open(f"{folder}/{name}-{r}.json")) for r in range(1, rounds + 1)] for name in ("sqlite", "postgres")}
rate = {name: statistics.median(r["requests_per_s"] for r in runs[name]) for name in runs}
p99 = {name: statistics.median(r["latency_us"]["p99"] for r in runs[name]) for name in runs}
for name in runs:
    each = ", ".join(f"{r['requests_per_s']:,.0f}" for r in runs[name])
    print(f"{name:<9} {rate[name]:>10,.0f} checks/s (median of {each}), p99 {p99[name]:.0f} us")
print(f"postgres / sqlite: {rate['postgres'] / rate['sqlite']:.2f}x the checks per second")
PY
