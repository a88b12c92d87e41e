#!/usr/bin/env bash
# What authentication costs a check, one sluiced (release, one event-loop thread), one run:
#   none:   a loopback listener with auth: none (the connection may do everything);
#   root:   a token listener, a token of every tenant (checks go to the dispatcher untouched);
#   tenant: the same listener, a token of tenant acme, the checks naming no tenant (each is
#           pointed at acme's bytes on the fast path) — the path of a tenant-bound service.
# The epoll engine over TCP, 50 connections 16 deep, GCRA on 100,000 keys, rounds alternating.
#   scripts/bench-auth.sh [seconds=5] [rounds=3]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5} rounds=${2:-3}
swift build -c release --product sluiced >/dev/null
swift build -c release --product sluice-bench >/dev/null
swift build -c release --product sluicectl >/dev/null
bin=$(swift build -c release --show-bin-path)
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

root=$("$bin/sluicectl" token create --file "$dir/tokens.yaml" --name root --tenant "*" --role check 2>/dev/null)
acme=$("$bin/sluicectl" token create --file "$dir/tokens.yaml" --name acme --tenant acme --role check 2>/dev/null)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
open_port=$(free_port) token_port=$(free_port)
cat >"$dir/sluice.yaml" <<YAML
listen:
  unix: ["$dir/s.sock"]
  tcp: [{ address: "127.0.0.1:$open_port", auth: none }, "127.0.0.1:$token_port"]
auth: { tokens_file: tokens.yaml }
server: { threads: 1, max_queue_delay: 0 }
tenants: { acme: {} }
YAML
"$bin/sluiced" --config "$dir/sluice.yaml" --snapshot off --store off --metrics off --log-level error >"$dir/sluiced.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do [ -S "$dir/s.sock" ] && break; sleep 0.1; done

for round in $(seq 1 "$rounds"); do
  for mode in none root tenant; do
    case $mode in
      none) args=(-e "127.0.0.1:$open_port" --tenant acme) ;;
      root) args=(-e "127.0.0.1:$token_port" --token "$root" --tenant acme) ;;
      tenant) args=(-e "127.0.0.1:$token_port" --token "$acme") ;;
    esac
    "$bin/sluice-bench" "${args[@]}" -c 50 -d 16 --keys 100000 --limit 1000000/1s --duration "${seconds}s" --warmup 1 --json --quiet |
      python3 -c 'import json,sys; d=json.load(sys.stdin); d["mode"]=sys.argv[1]; d["round"]=int(sys.argv[2]); print(json.dumps(d))' "$mode" "$round"
  done
done | tee "$dir/all.jsonl"
python3 - "$dir/all.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
med = lambda m: statistics.median(r["decisions_per_s"] for r in rows if r["mode"] == m)
for m in ("none", "root", "tenant"):
    errors = sum(r["errors"] for r in rows if r["mode"] == m)
    print(f"{m:7} decisions/s median {med(m):>12,.0f}   / none {med(m) / med('none'):.2f}   errors {errors}")
PY
