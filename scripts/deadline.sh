#!/usr/bin/env bash
# deadline.sh SECONDS COMMAND...: runs COMMAND; if it still runs after SECONDS, prints the stack
# of every thread of each process under it (gdb, where installed), stops them and exits 124.
# A test that hangs then fails CI with where it hung, in minutes, instead of a run that says
# nothing until CI's own limit ends it.
set -uo pipefail
limit=$1
shift
marker=$(mktemp)
rm -f "$marker"

descendants() {
  local pid
  for pid in $(pgrep -P "$1" || true); do
    echo "$pid"
    descendants "$pid"
  done
}

"$@" &
child=$!
(
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  sleep "$limit" &
  sleeper=$!
  wait "$sleeper"
  kill -0 "$child" 2>/dev/null || exit 0
  touch "$marker"
  echo "deadline.sh: still running after ${limit} s: $*" >&2
  processes=$(descendants "$child")
  for pid in $processes; do
    name=$(tr '\0' ' ' < /proc/"$pid"/cmdline 2>/dev/null | cut -c1-160)
    case "$name" in
      *xctest*|*sluiced*)
        if command -v gdb >/dev/null; then
          echo "deadline.sh: the threads of process $pid ($name):" >&2
          timeout 120 gdb -p "$pid" -batch -ex 'thread apply all bt 24' 2>/dev/null | grep -E '^Thread|^#' | cut -c1-220 | head -4000 >&2
        else
          echo "deadline.sh: gdb is not installed: no stacks for process $pid ($name)" >&2
        fi ;;
    esac
  done
  kill -TERM $processes "$child" 2>/dev/null
  sleep 5
  kill -KILL $processes "$child" 2>/dev/null
) &
watcher=$!
wait "$child"
status=$?
kill -TERM "$watcher" 2>/dev/null
wait "$watcher" 2>/dev/null
if [ -e "$marker" ]; then
  rm -f "$marker"
  exit 124
fi
exit "$status"
