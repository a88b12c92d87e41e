#!/usr/bin/env bash
# Runs libsluice's tests against a real sluiced: starts one on a temp Unix socket and an
# ephemeral loopback port with --clock request, runs build/test_sluice (under valgrind when
# it is installed: no leaks and no errors allowed), runs the example, and stops the daemon.
#   SLUICED=path/to/sluiced tests/run.sh      (default: the repository's .build/debug/sluiced)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(cd ../.. && pwd)
sluiced=${SLUICED:-$root/.build/debug/sluiced}
[ -x "$sluiced" ] || { echo "run.sh: no sluiced at $sluiced (swift build --product sluiced, or set SLUICED)" >&2; exit 1; }

dir=$(mktemp -d)
daemon=
anomaly=
secured=
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  [ -n "$secured" ] && kill "$secured" 2>/dev/null && wait "$secured" 2>/dev/null
  [ -n "$anomaly" ] && kill "$anomaly" 2>/dev/null && wait "$anomaly" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

# Waits for the daemon (pid $1, log $2) to be ready and prints its TCP port.
tcp_port() {
  for _ in $(seq 1 100); do
    grep -q "sluiced ready" "$2" && break
    kill -0 "$1" 2>/dev/null || { cat "$2" >&2; exit 1; }
    sleep 0.1
  done
  grep -q "sluiced ready" "$2" || { echo "run.sh: sluiced did not start in 10 s" >&2; cat "$2" >&2; exit 1; }
  local port
  port=$(sed -n 's/.*listen.tcp=.*:\([0-9]*\) .*/\1/p' "$2" | head -1)
  [ -n "$port" ] || { echo "run.sh: no TCP port in $2" >&2; cat "$2" >&2; exit 1; }
  echo "$port"
}

# The queueing-delay bound off: the pipelining test queues 20,000 checks at once, which a debug
# daemon takes longer than max_queue_delay (100 ms) to decide, and would rightly refuse some of
# them (CODE_OVERLOADED). This suite tests the client; the daemon's refusals are tested in its own.
# The embedded default (its rule "default" is tested) with the bound off.
"$sluiced" --print-default-config | sed 's/^  max_queue_delay: [0-9a-z]*/  max_queue_delay: 0/' >"$dir/sluice.yaml"
grep -q "^  max_queue_delay: 0 " "$dir/sluice.yaml" || { echo "run.sh: the default configuration has no max_queue_delay to turn off" >&2; exit 1; }
"$sluiced" --config "$dir/sluice.yaml" --clock request --unix "$dir/sluice.sock" --tcp 127.0.0.1:0 --tcp-auth none --snapshot off --store off \
  --metrics off >"$dir/log" 2>&1 &
daemon=$!
port=$(tcp_port "$daemon" "$dir/log")

# A second daemon with anomaly detection on and no warm-up, for outcomes and the alert stream,
# blocking credential stuffing, and with adaptive limits (a vip tier, a rule guarding a service)
# for the verdict's tier and load reports.
cat >"$dir/anomaly.yaml" <<'YAML'
rules: { api: { limit: 100, period: 1m, service: checkout } }
tiers: { vip: { multiplier: 4, priority: 100 } }
anomaly: { warmup: 1ms, responses: { credential_stuffing: { action: block, ttl: 1h } } }
features: { anomaly: { enabled: true }, adaptive: { enabled: true } }
YAML
"$sluiced" --config "$dir/anomaly.yaml" --unix "$dir/anomaly.sock" --snapshot off --store off --metrics off \
  --log-level error >"$dir/anomaly.log" 2>&1 &
anomaly=$!
for _ in $(seq 1 100); do
  [ -S "$dir/anomaly.sock" ] && break
  kill -0 "$anomaly" 2>/dev/null || { cat "$dir/anomaly.log" >&2; exit 1; }
  sleep 0.1
done
[ -S "$dir/anomaly.sock" ] || { echo "run.sh: the anomaly daemon did not start in 10 s" >&2; cat "$dir/anomaly.log" >&2; exit 1; }
"$(dirname "$sluiced")/sluicectl" -e "unix:$dir/anomaly.sock" tiers set c-vip vip >/dev/null

# A third with a TCP listener that requires a token, made by sluicectl for tenant acme.
token=$("$(dirname "$sluiced")/sluicectl" token create --file "$dir/tokens.yaml" --name c-client --tenant acme --role check 2>/dev/null)
# Its second listener speaks TLS, with a certificate for 127.0.0.1 made here.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$dir/server.key" -out "$dir/server.pem" >/dev/null 2>&1
cat >"$dir/secured.yaml" <<YAML
listen:
  unix: ["$dir/secured.sock"]
  tcp: ["127.0.0.1:0", { address: "127.0.0.1:0", tls: { certificate: "$dir/server.pem", key: "$dir/server.key" } }]
auth: { tokens_file: $dir/tokens.yaml }
server: { clock: request }
tenants: { acme: { rules: { api: { limit: 1, period: 1m } } } }
YAML
"$sluiced" --config "$dir/secured.yaml" --snapshot off --store off --metrics off >"$dir/secured.log" 2>&1 &
secured=$!
secured_port=$(tcp_port "$secured" "$dir/secured.log")
tls_port=$(sed -n 's/.*listen.tcp=.*:\([0-9]*\) .*/\1/p' "$dir/secured.log" | sed -n 2p)
[ -n "$tls_port" ] || { echo "run.sh: no TLS port in the token daemon's log" >&2; cat "$dir/secured.log" >&2; exit 1; }

if command -v valgrind >/dev/null; then
  valgrind --quiet --leak-check=full --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible \
    --error-exitcode=3 build/test_sluice "unix:$dir/sluice.sock" "127.0.0.1:$port" "unix:$dir/anomaly.sock" "127.0.0.1:$secured_port" "$token" "127.0.0.1:$tls_port" "$dir/server.pem"
else
  echo "run.sh: valgrind not installed; running without it" >&2
  build/test_sluice "unix:$dir/sluice.sock" "127.0.0.1:$port" "unix:$dir/anomaly.sock" "127.0.0.1:$secured_port" "$token" "127.0.0.1:$tls_port" "$dir/server.pem"
fi

# The example: allowed (exit 0) under the default rule, and exit 2 for an unreachable daemon.
build/check-example "unix:$dir/sluice.sock" "example:key" default >/dev/null
set +e
build/check-example "unix:$dir/absent.sock" "example:key" 2>/dev/null; status=$?
set -e
[ "$status" = 2 ] || { echo "run.sh: the example exited $status for an absent daemon, not 2" >&2; exit 1; }
# make install, then build the example against the installed library through pkg-config.
make --no-print-directory install PREFIX="$dir/prefix" >/dev/null
export PKG_CONFIG_PATH="$dir/prefix/lib/pkgconfig"
cc -o "$dir/installed-example" examples/check.c $(pkg-config --cflags --libs sluice)
LD_LIBRARY_PATH="$dir/prefix/lib" "$dir/installed-example" "unix:$dir/sluice.sock" "example:installed" >/dev/null
echo "libsluice tests passed"
