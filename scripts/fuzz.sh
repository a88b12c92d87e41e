#!/usr/bin/env bash
# Fuzzes every decoder of outside bytes with libFuzzer (docs/FUZZING.md): builds sluice-fuzz with
# -sanitize=fuzzer,address (release, its own scratch path .build-fuzz), then runs each target for
# the time given, starting from its checked-in corpus (Fuzz/corpus/TARGET), and prints the
# executions each reached. New inputs go to .build-fuzz/corpus/TARGET (never into the checked-in
# corpus; `--merge` folds the interesting ones back, minimised); crashes to .build-fuzz/crashes/.
#
#   scripts/fuzz.sh                         every target for 10 s
#   scripts/fuzz.sh --seconds 3600 dispatcher   one target for an hour
#   scripts/fuzz.sh --seconds 600 --jobs 2  every target, two processes each
#   scripts/fuzz.sh --merge                 minimise the found inputs into Fuzz/corpus
#   scripts/fuzz.sh --no-build ...          run the binary built last (long runs while editing)
#   scripts/fuzz.sh --build-only            build it and stop
#   scripts/fuzz.sh --debug --seconds 8     a debug build (.build-fuzz-debug): built in about half
#                                           the time, runs fewer executions a second (test.sh)
#
# Exit status: 0 when no target failed; 1 when one crashed or broke a property (the input is
# named; reproduce with `swift run sluice-fuzz TARGET FILE`).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=10
jobs=1
merge=0
build=1
build_only=0
configuration=release
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --merge) merge=1; shift ;;
    --no-build) build=0; shift ;;
    --build-only) build_only=1; shift ;;
    --debug) configuration=debug; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(framer decoder dispatcher configuration snapshot anomaly-state trace redis envoy http)

scratch=.build-fuzz
[ "$configuration" = debug ] && scratch=.build-fuzz-debug
binary="$scratch/$configuration/sluice-fuzz"
if [ "$build" = 1 ]; then
  echo "== building sluice-fuzz (libFuzzer + AddressSanitizer, $configuration)"
  start=$(date +%s)
  rm -f "$binary"
  swift build -c "$configuration" --product sluice-fuzz --scratch-path "$scratch" \
    --sanitize=fuzzer -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING 2>&1 | grep -E "error|Build complete" || true
  echo "   built in $(( $(date +%s) - start )) s"
fi
[ -x "$binary" ] || { echo "fuzz.sh: the build failed (no $binary)" >&2; exit 1; }
[ "$build_only" = 1 ] && exit 0

mkdir -p "$scratch/crashes" "$scratch/logs"
failed=0
total=0
printf '%-15s %12s %10s  %s\n' target executions "per s" result
for target in "${targets[@]}"; do
  seeds="Fuzz/corpus/$target"
  [ -d "$seeds" ] || { echo "fuzz.sh: no corpus $seeds (targets: framer decoder dispatcher configuration snapshot anomaly-state trace)" >&2; exit 2; }
  work="$scratch/corpus/$target"
  mkdir -p "$work"
  log="$scratch/logs/$target.log"
  if [ "$merge" = 1 ]; then
    # Keeps the inputs of the working corpus that add coverage to the checked-in one.
    SLUICE_FUZZ_TARGET=$target SWIFT_BACKTRACE=enable=no "$binary" -merge=1 "$seeds" "$work" >"$log" 2>&1 || true
    echo "$target: $(ls "$seeds" | wc -l) inputs in $seeds after the merge"
    continue
  fi
  # -jobs runs that many processes; each prints its own final stats to fuzz-N.log in the cwd.
  set +e
  if [ "$jobs" -gt 1 ]; then
    (cd "$scratch/logs" && SLUICE_FUZZ_TARGET=$target SWIFT_BACKTRACE=enable=no "../../$binary" "../../$work" "../../$seeds" \
      -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -artifact_prefix="../crashes/$target-" -jobs="$jobs" -workers="$jobs" >"$target.log" 2>&1)
    status=$?
    cat "$scratch"/logs/fuzz-*.log >>"$log" 2>/dev/null || true
    rm -f "$scratch"/logs/fuzz-*.log
  else
    SLUICE_FUZZ_TARGET=$target SWIFT_BACKTRACE=enable=no "$binary" "$work" "$seeds" \
      -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -artifact_prefix="$scratch/crashes/$target-" >"$log" 2>&1
    status=$?
  fi
  set -e
  executions=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
  rate=$(( executions / (seconds > 0 ? seconds : 1) ))
  total=$(( total + executions ))
  if [ "$status" -eq 0 ]; then
    printf '%-15s %12d %10d  %s\n' "$target" "$executions" "$rate" ok
  else
    failed=1
    printf '%-15s %12d %10d  %s\n' "$target" "$executions" "$rate" "FAILED (see $log)"
    grep -E "Fatal error|ERROR: AddressSanitizer|ERROR: libFuzzer|deadly signal|Test unit written" "$log" | head -5 | sed 's/^/    /'
  fi
done
[ "$merge" = 1 ] && exit 0
echo "total: $total executions in ${seconds} s per target"
exit $failed
