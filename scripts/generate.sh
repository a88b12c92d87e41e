#!/usr/bin/env bash
# Regenerates every checked-in file derived from proto/: Swift (swift-protobuf), C for libsluice
# (protobuf-c) and Python for clients/python (protoc's own); and the Swift file embedding the
# store's numbered SQL migrations (scripts/embed-migrations.sh). `scripts/generate.sh --check` regenerates into a temp folder and
# fails if the checked-in code is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
check=0
[ "${1:-}" = "--check" ] && check=1

command -v protoc >/dev/null || { echo "generate.sh: protoc not found (apt-get install -y protobuf-compiler)" >&2; exit 1; }

# protoc-gen-swift is built from the exact swift-protobuf version Package.swift resolves.
swift build -c release --product protoc-gen-swift --scratch-path .build-protoc >/dev/null
plugin="$root/.build-protoc/release/protoc-gen-swift"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mkdir -p "$out/swift" "$out/c"
protos=$(cd proto && find ./sluice -name '*.proto' | sort)
# Envoy's rate limit service (trimmed): Swift only, for the daemon's gRPC front.
envoy_protos=$(cd proto && find ./envoy -name '*.proto' | sort)

(cd proto && protoc --plugin=protoc-gen-swift="$plugin" \
    --swift_opt=Visibility=Public --swift_opt=FileNaming=PathToUnderscores \
    --swift_out="$out/swift" $protos $envoy_protos)

have_c=0
if [ -d clients/c ]; then
  command -v protoc-c >/dev/null || { echo "generate.sh: protoc-c not found (apt-get install -y protobuf-c-compiler)" >&2; exit 1; }
  (cd proto && protoc-c --c_out="$out/c" $protos)
  have_c=1
fi

sync_dir() { # from to pattern
  local from=$1 to=$2 pattern=$3
  if [ $check = 1 ]; then
    if ! diff -r -q <(cd "$from" && find . -name "$pattern" | sort | xargs cat) \
                    <(cd "$to" && find . -name "$pattern" | sort | xargs cat) >/dev/null; then
      echo "generate.sh: generated code in $to is stale; run scripts/generate.sh and commit" >&2
      diff -r "$from" "$to" | head -40 >&2 || true
      exit 1
    fi
  else
    find "$to" -name "$pattern" -delete 2>/dev/null || true
    mkdir -p "$to"
    (cd "$from" && find . -name "$pattern" -exec cp --parents {} "$to" \;)
  fi
}

# Python: protoc --python_out, flattened into the package (the module imports nothing else).
mkdir -p "$out/python"
(cd proto && protoc --python_out="$out/python" $protos)
mkdir -p "$out/python-flat"
find "$out/python" -name '*_pb2.py' -exec cp {} "$out/python-flat/" \;

mkdir -p "$out/migrations"
scripts/embed-migrations.sh > "$out/migrations/StoreMigrations.swift"
sync_dir "$out/migrations" "$root/Sources/SluiceStore/Generated" 'StoreMigrations.swift'
sync_dir "$out/swift" "$root/Sources/SluiceProto/Generated" '*.pb.swift'
sync_dir "$out/python-flat" "$root/clients/python/sluice_client" '*_pb2.py'
if [ $have_c = 1 ]; then
  sync_dir "$out/c" "$root/clients/c/generated" '*.pb-c.[ch]'
fi
[ $check = 1 ] && echo "generated code is up to date" || echo "generated code written"
