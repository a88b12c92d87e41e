# Shared by the benchmark scripts that start servers (source it after `cd` to the repository):
# a temp folder `$dir`, the processes started in `pids` stopped (and the folder removed) on exit
# whatever happens, the release build of sluiced and sluice-bench in `$bin`, and wait_for_socket.
# `$script_name` is the sourcing script's name, for messages.
script_name=$(basename "$0")
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

need_redis() {
  command -v redis-server >/dev/null || { echo "$script_name: redis-server missing (apt-get install -y redis-server)" >&2; exit 1; }
}

build_release() {
  echo "building (release)..." >&2
  swift build -c release --product sluiced >/dev/null
  swift build -c release --product sluice-bench >/dev/null
  bin=$(swift build -c release --show-bin-path)
}

wait_for_socket() { # path, what
  for _ in $(seq 1 100); do [ -S "$1" ] && return 0; sleep 0.1; done
  echo "$script_name: $2 did not create $1 within 10 s" >&2; exit 1
}
