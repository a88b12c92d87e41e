#!/usr/bin/env bash
# The whole test suite: the Swift tests (swift test), then libsluice's C tests, the Python
# client's tests and Envoy's rate limit service (grpcio acting as Envoy), each against a real sluiced, then a short run of every fuzz target (libFuzzer).
# Needs protobuf-c and valgrind for the C part and
# python3 with venv for the Python part (.ci/run installs them); a part whose tools are missing
# fails with a sentence saying what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

# The PostgreSQL suites run after the rest, on their own: they start clusters (initdb) and up
# to six daemons at once, which on CI's two cores starved the tests bound by time (Redis
# deadlines, stalled frames) when both ran together.
postgres='PostgresStoreTests|PostgresTLSTests|StoreCopyTests|StoreBehaviourTests|PostgresEndToEndTests|PostgresFleetTests|StoreCommandLineTests|FleetSyncTests'
# A test process that crashes prints its backtrace at once: symbolicated in full, a debug
# build's took more than 13 minutes in CI.
export SWIFT_BACKTRACE=${SWIFT_BACKTRACE:-enable=yes,interactive=no,symbolicate=fast}
# Each run has a deadline: one that hangs prints its threads' stacks and fails in minutes
# (scripts/deadline.sh), instead of saying nothing until CI's own limit.
# The Redis suites run on their own as well: they start servers and Clusters, kill and pause
# them, and count on replies within deadlines.
redis='SluiceRedisTests|Redis'
echo "== swift test"
swift build --build-tests
scripts/deadline.sh 1500 swift test --skip-build --skip "$postgres" --skip "$redis"
echo "== swift test: the Redis suites"
scripts/deadline.sh 1500 swift test --skip-build --filter "$redis"
echo "== swift test: the PostgreSQL suites"
SLUICE_TEST_TURNS=2 scripts/deadline.sh 900 swift test --skip-build --filter "$postgres"

sluiced=$(swift build --show-bin-path)/sluiced
[ -x "$sluiced" ] || swift build --product sluiced

echo "== libsluice (C)"
pkg-config --exists libprotobuf-c || { echo "test.sh: libprotobuf-c missing (apt-get install -y libprotobuf-c-dev)" >&2; exit 1; }
make -C clients/c --no-print-directory -s
SLUICED=$sluiced make -C clients/c --no-print-directory -s test

echo "== sluice_client (Python)"
venv=.build-python
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" || { echo "test.sh: python3 -m venv failed (apt-get install -y python3-venv)" >&2; exit 1; }
fi
"$venv/bin/python" -c 'import google.protobuf' 2>/dev/null || "$venv/bin/pip" install -q "protobuf>=4.21,<8"
SLUICED=$sluiced "$venv/bin/python" -W error::ResourceWarning -m unittest discover -s clients/python/tests
echo "== sluice_client is typed: mypy --strict"
"$venv/bin/python" -c 'import mypy' 2>/dev/null || "$venv/bin/pip" install -q "mypy>=1.10,<3" "types-protobuf"
(cd clients/python && "../../$venv/bin/python" -m mypy --strict sluice_client)

echo "== Envoy's rate limit service (Python grpcio acting as Envoy)"
"$venv/bin/python" -c 'import grpc, envoy.service.ratelimit.v3.rls_pb2_grpc' 2>/dev/null ||
  "$venv/bin/pip" install -q "protobuf>=4.21,<8" "grpcio==1.85.*" "xds-protos==1.85.0"
SLUICED=$sluiced "$venv/bin/python" -m unittest discover -s tests/envoy

echo "== the HTTP/JSON API (checked against docs/openapi.json)"
"$venv/bin/python" -c 'import jsonschema, openapi_spec_validator' 2>/dev/null ||
  "$venv/bin/pip" install -q "jsonschema==4.*" "openapi-spec-validator==0.7.*"
SLUICED=$sluiced "$venv/bin/python" -m unittest discover -s tests/http

echo "== scripts/install.sh into a staging folder, and the Debian package installed, run and purged"
staged=$(mktemp -d)
scripts/install.sh --destdir "$staged" --binaries "$(dirname "$sluiced")" --python "$venv/bin/python" >/dev/null
for path in usr/local/bin/sluiced usr/local/bin/sluicectl usr/local/share/man/man1/sluicectl.1 usr/local/share/man/man8/sluiced.8 \
            usr/local/share/bash-completion/completions/sluicectl usr/local/include/sluice.h usr/local/lib/libsluice.so.1 usr/local/share/man/man3/sluice.3 \
            etc/systemd/system/sluiced.service etc/sluice/sluice.yaml; do
  [ -e "$staged/$path" ] || { echo "test.sh: install.sh did not install $path" >&2; exit 1; }
done
ls "$staged"/usr/local/lib/python3*/site-packages/sluice_client/__init__.py >/dev/null
[ ! -e clients/python/build ] && ! ls clients/python/*.egg-info >/dev/null 2>&1 || { echo "test.sh: installing the Python package left build files in the source tree" >&2; exit 1; }
rm -rf "$staged"
if [ "$(id -u)" = 0 ] && command -v dpkg-deb >/dev/null; then
  BINARIES=$(dirname "$sluiced") scripts/test-deb.sh
else
  echo "(the Debian package test needs root and dpkg-deb: skipped)"
fi

echo "== contrib: the Grafana dashboard and the Prometheus alert rules (promtool)"
"$venv/bin/python" -m unittest discover -s tests/contrib

echo "== the second trace generator (scripts/traces/gen_field.py), and sluicectl report in headless Chromium"
SLUICECTL=$(swift build --show-bin-path)/sluicectl "$venv/bin/python" -m unittest discover -s tests/traces

# A short run of every fuzz target from its checked-in corpus (docs/FUZZING.md): about a minute,
# after a build of its own (.build-fuzz-debug): a debug build, which took half as long as a release
# one in CI; long runs use release (scripts/fuzz.sh without --debug). SLUICE_SKIP_FUZZ=1 leaves it
# out of a local run.
if [ "${SLUICE_SKIP_FUZZ:-0}" != 1 ]; then
  echo "== fuzz targets (8 s each)"
  scripts/fuzz.sh --debug --seconds 8
fi
echo "== all tests passed"
