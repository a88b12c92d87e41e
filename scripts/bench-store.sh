#!/usr/bin/env bash
# Event ingestion into the store: SQLite and PostgreSQL in the same run (issue 18's figures).
# Starts a PostgreSQL 15 cluster of its own (fsync and synchronous_commit on, as in production;
# on a Unix socket in a temp folder; as the postgres user when run as root), then runs
#   sluice-reputation-bench --only ingest --postgres URL
# which measures, for each store: one transaction of 100,000 events (median of rounds), and
# the write-behind committing every 100 ms for 10 s; then the whole RecordEvents path into SQLite.
#   scripts/bench-store.sh [rounds=5]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
bin_pg=/usr/lib/postgresql/15/bin
[ -x "$bin_pg/initdb" ] || { echo "bench-store.sh: PostgreSQL 15 missing (apt-get install -y postgresql)" >&2; exit 1; }
swift build -c release --product sluice-reputation-bench >/dev/null
bench=$(swift build -c release --show-bin-path)/sluice-reputation-bench
dir=$(mktemp -d)
as_pg=()
if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; as_pg=(runuser -u postgres --); fi
cleanup() {
  "${as_pg[@]}" "$bin_pg/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM
"${as_pg[@]}" "$bin_pg/initdb" -D "$dir/data" -U sluice --auth-local=trust -E UTF8 --locale=C >/dev/null
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_pg[@]}" "$bin_pg/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-k $dir -p $port -c listen_addresses='' -c shared_buffers=128MB" start >/dev/null
"${as_pg[@]}" "$bin_pg/psql" -h "$dir" -p "$port" -U sluice -d postgres -q -c "CREATE DATABASE bench" >/dev/null
"$bench" --only ingest --rounds "$rounds" --postgres "postgres://sluice@/bench?host=$dir&port=$port"
