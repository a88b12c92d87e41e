#!/usr/bin/env bash
# The daemon's dependency versions, pinned for releases. Package.resolved is not kept in git:
# the package mirror this project builds from rewrites commit ids, so a resolved file from one
# machine names commits another cannot fetch. What is pinned instead is each package's URL and
# exact version, in Package.pins (checked in):
#   scripts/pin-dependencies.sh           writes Package.pins from the current resolution
#   scripts/pin-dependencies.sh --check   fails when the resolution differs from Package.pins
#                                         (CI, after the build resolved the packages)
# A release changes Package.pins on purpose, in the commit that says why (docs/RELEASING.md).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f Package.resolved ] || swift package resolve >/dev/null
current=$(python3 - <<'PY'
import json
pins = json.load(open("Package.resolved"))["pins"]
for pin in sorted(pins, key=lambda p: p["location"].lower()):
    state = pin["state"]
    print(pin["location"], state.get("version") or ("branch " + state.get("branch", "?")))
PY
)
if [ "${1:-}" = --check ]; then
  if ! diff <(printf '%s\n' "$current") <(grep -v '^#' Package.pins) >/dev/null; then
    echo "pin-dependencies.sh: the packages resolved are not those pinned in Package.pins:" >&2
    diff <(grep -v '^#' Package.pins) <(printf '%s\n' "$current") >&2 || true
    echo "(run scripts/pin-dependencies.sh and commit Package.pins if the change is meant)" >&2
    exit 1
  fi
  echo "dependencies match Package.pins"
else
  { echo "# Package URL and exact version of every dependency the build resolves (scripts/pin-dependencies.sh)."
    printf '%s\n' "$current"; } > Package.pins
  echo "Package.pins written"
fi
