#!/usr/bin/env bash
# The Debian package as an operator meets it, on this machine (as root; CI's is thrown away):
# build it (from BINARIES, default a release build), install it with dpkg, check what it put
# where, start the daemon as the unit would (as user sluice, with the packaged configuration;
# with systemctl where systemd runs), ask it a question with the packaged sluicectl, stop it
# (it writes its snapshot), then purge the package and check that nothing is left.
#   [BINARIES=.build/debug] scripts/test-deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test-deb.sh: run as root (it installs and purges a package)" >&2; exit 1; }
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  dpkg --purge sluice >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "test-deb.sh: $*" >&2; exit 1; }

deb=$(scripts/package-deb.sh ${BINARIES:+--binaries "$BINARIES"} --out "$work" 2>"$work/package.log") || { cat "$work/package.log" >&2; fail "packaging failed"; }
[ "$(dpkg-deb -f "$deb" Package)" = sluice ] || fail "no control file"
[ "$(dpkg-deb -f "$deb" Version)" = "$(tr -d ' \n' < VERSION)" ] || fail "the package's version is not VERSION's"
dpkg -i "$deb" >"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; fail "dpkg -i failed"; }

for path in /usr/bin/sluiced /usr/bin/sluicectl /usr/lib/systemd/system/sluiced.service /etc/sluice/sluice.yaml \
            /usr/share/man/man8/sluiced.8.gz /usr/share/man/man1/sluicectl.1.gz /usr/share/bash-completion/completions/sluicectl \
            /usr/share/zsh/vendor-completions/_sluicectl /usr/share/fish/vendor_completions.d/sluicectl.fish \
            /usr/share/doc/sluice/copyright /usr/share/doc/sluice/OPERATIONS.md; do
  [ -e "$path" ] || fail "$path was not installed"
done
getent passwd sluice >/dev/null || fail "no user sluice"
[ "$(stat -c %U /var/lib/sluice)" = sluice ] || fail "/var/lib/sluice is not sluice's"
[ "$(/usr/bin/sluiced --version)" = "$(tr -d ' \n' < VERSION)" ] || fail "sluiced --version"
/usr/bin/sluiced --config /etc/sluice/sluice.yaml --check-config >/dev/null || fail "the packaged configuration does not pass --check-config"
# Output is read whole before it is searched: with pipefail, `grep -q` leaving a pipe early fails
# the writer with SIGPIPE (it did, for zcat of the man page, in CI).
manual=$(zcat /usr/share/man/man1/sluicectl.1.gz)
grep -q "^.SH COMMANDS" <<<"$manual" || fail "sluicectl(1) lists no commands"
grep -q "sluicectl" /usr/share/bash-completion/completions/sluicectl || fail "bash completion"
grep -qx "/etc/sluice/sluice.yaml" /var/lib/dpkg/info/sluice.conffiles || fail "the configuration is not a conffile"

# Start: with systemd where it runs; else as the unit would (its runtime directory, user sluice).
if [ -d /run/systemd/system ]; then
  systemctl start sluiced.service
else
  install -d -o sluice -g sluice -m 0750 /run/sluice
  setpriv --reuid=sluice --regid=sluice --init-groups /usr/bin/sluiced --config /etc/sluice/sluice.yaml --metrics off >"$work/sluiced.log" 2>&1 &
  pid=$!
fi
for _ in $(seq 1 300); do [ -S /run/sluice/sluice.sock ] && break; sleep 0.1; done
[ -S /run/sluice/sluice.sock ] || { cat "$work/sluiced.log" >&2 || true; fail "no socket at /run/sluice/sluice.sock"; }
/usr/bin/sluicectl -e unix:/run/sluice/sluice.sock check deb:test --rule default >/dev/null || fail "check through the packaged sluicectl"
stats=$(/usr/bin/sluicectl -e unix:/run/sluice/sluice.sock stats --json) || fail "stats"
grep -q '"checks":1' <<<"$stats" || fail "stats: $stats"

# Stop: SIGTERM, exit 0, the snapshot written where the packaged configuration says.
if [ -d /run/systemd/system ]; then
  systemctl stop sluiced.service
else
  kill -TERM "$pid"
  wait "$pid" || fail "sluiced did not exit 0 on SIGTERM: $(cat "$work/sluiced.log")"
  pid=""
fi
[ -s /var/lib/sluice/table.snapshot ] || fail "no snapshot in /var/lib/sluice"

# On a machine without Swift: a release package links the Swift runtime in
# (--static-swift-stdlib), so its programs run with the toolchain hidden (a private mount
# namespace with an empty folder over it): a daemon answers the packaged sluicectl. Packages of
# debug binaries need the toolchain, and skip this.
without_swift=skipped
toolchain=$(dirname "$(dirname "$(dirname "$(readlink -f "$(command -v swiftc || echo /nonexistent/usr/bin/swiftc)")")")")
libraries=$(ldd /usr/bin/sluiced)
if grep -q 'libswiftCore\|libFoundation' <<<"$libraries"; then
  echo "(the package's programs need the toolchain's runtime (a debug build): the run without Swift is skipped)"
elif [ -d "$toolchain" ] && command -v unshare >/dev/null; then
  install -d "$work/empty" "$work/bare"
  unshare -m sh -c "
    mount --bind '$work/empty' '$toolchain' || exit 3
    [ -z \"\$(ls -A '$toolchain')\" ] || exit 3
    /usr/bin/sluiced --version >/dev/null || exit 4
    /usr/bin/sluiced --unix '$work/bare/s.sock' --snapshot off --store off --metrics off >'$work/bare/log' 2>&1 &
    for i in \$(seq 1 100); do [ -S '$work/bare/s.sock' ] && break; sleep 0.1; done
    /usr/bin/sluicectl -e 'unix:$work/bare/s.sock' check bare:test --rule default >/dev/null; status=\$?
    kill -TERM \$! && wait \$! || status=5
    exit \$status
  " || { cat "$work/bare/log" >&2 2>/dev/null || true; fail "the packaged programs do not run with the Swift toolchain hidden ($toolchain)"; }
  without_swift="run with $toolchain hidden"
fi

# Purge: the files, the state and the user go; the configuration too.
dpkg --purge sluice >"$work/purge.log" 2>&1 || { cat "$work/purge.log" >&2; fail "dpkg --purge failed"; }
for path in /usr/bin/sluiced /usr/bin/sluicectl /usr/lib/systemd/system/sluiced.service /etc/sluice/sluice.yaml /var/lib/sluice; do
  [ ! -e "$path" ] || fail "$path is still there after purge"
done
! getent passwd sluice >/dev/null || fail "user sluice is still there after purge"
echo "test-deb.sh: $(basename "$deb"): installed, started, checked, stopped (snapshot written), without Swift: $without_swift, purged"
