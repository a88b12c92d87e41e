#!/usr/bin/env bash
# What reputation adds to a check, then ingestion into SQLite and memory per subject.
#   scripts/bench-reputation.sh [checks=100000]
# 1. Instructions per check (callgrind: exact, unaffected by the machine's noise): for each mode,
#    the instructions of RequestDispatcher.answerChecks, inclusive, divided by the checks answered.
# 2. The timed in-process run (alternating modes, median of rounds), ingestion and memory.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
swift build -c release --product sluice-reputation-bench >/dev/null
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# valgrind 3.19 cannot read Swift 6.3's DWARF.
strip --strip-debug -o "$out/bench" .build/release/sluice-reputation-bench
if command -v valgrind >/dev/null; then
  printf "%-16s %14s %10s\n" mode instr/check "vs off"
  base=""
  for mode in off on_untracked on_tracked shadow_tracked adaptive_idle tiered load baseline all; do
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.$mode" "$out/bench" --only checks --modes "$mode" --rounds 1 \
      --checks "$n" --subjects 20000 >/dev/null 2>&1
    total=$(callgrind_annotate --inclusive=yes "$out/cg.$mode" 2>/dev/null | grep 'RequestDispatcherC12answerChecks' | head -1 \
      | awk '{gsub(",", "", $1); print $1}')
    per=$((total / n))
    [ -z "$base" ] && base=$per
    printf "%-16s %14d %9.3fx\n" "$mode" "$per" "$(echo "$per / $base" | bc -l)"
  done
  echo
fi
"$out/bench" --rounds 5 --seconds 1 2>/dev/null
