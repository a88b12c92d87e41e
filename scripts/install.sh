#!/usr/bin/env bash
# Installs Sluice from this checkout: sluiced and sluicectl, their man pages and shell
# completions, the systemd unit and /etc/sluice/sluice.yaml (kept if present), the C library
# (libsluice, sluice.h, sluice.pc) and the Python package (sluice_client).
#
#   scripts/install.sh [--prefix /usr/local] [--destdir DIR] [--binaries DIR] [--python python3] [--no-python] [--no-c]
#
# Without --binaries it builds release binaries with the Swift runtime linked in
# (--static-swift-stdlib). --destdir stages everything under DIR (for packaging; nothing is
# started or enabled). The Debian package (scripts/package-deb.sh) is the other way in.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/usr/local destdir="" binaries="" python=python3 with_python=1 with_c=1
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) prefix=$2; shift 2 ;;
    --destdir) destdir=$2; shift 2 ;;
    --binaries) binaries=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --no-python) with_python=0; shift ;;
    --no-c) with_c=0; shift ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$binaries" ]; then
  swift build -c release --static-swift-stdlib --product sluiced
  swift build -c release --static-swift-stdlib --product sluicectl
  binaries=$(swift build -c release --show-bin-path)
fi
root=$destdir
bin=$root$prefix/bin man=$root$prefix/share/man share=$root$prefix/share
install -d "$bin" "$man" "$share/bash-completion/completions" "$share/zsh/site-functions" "$share/fish/vendor_completions.d" \
  "$root/etc/sluice" "$root/etc/systemd/system"
install -m 0755 "$binaries/sluiced" "$binaries/sluicectl" "$bin/"
for tool in sluiced sluicectl; do
  "$bin/$tool" --generate-completion-script bash > "$share/bash-completion/completions/$tool"
  "$bin/$tool" --generate-completion-script zsh > "$share/zsh/site-functions/_$tool"
  "$bin/$tool" --generate-completion-script fish > "$share/fish/vendor_completions.d/$tool.fish"
done
python3 scripts/man-pages.py --sluiced "$bin/sluiced" --sluicectl "$bin/sluicectl" --out "$man" --version "$(tr -d ' \n' < VERSION)"
# The unit names the binaries where this prefix puts them.
sed "s#/usr/bin/sluiced#$prefix/bin/sluiced#g" contrib/systemd/sluiced.service > "$root/etc/systemd/system/sluiced.service"
[ -e "$root/etc/sluice/sluice.yaml" ] || install -m 0644 contrib/systemd/sluice.yaml "$root/etc/sluice/sluice.yaml"
if [ $with_c = 1 ]; then
  make -C clients/c --no-print-directory -s
  make -C clients/c --no-print-directory -s install PREFIX="$prefix" DESTDIR="$destdir"
fi
if [ $with_python = 1 ]; then
  # A wheel built in a temporary folder: the source tree stays clean (no build/ or *.egg-info).
  wheels=$(mktemp -d)
  trap 'rm -rf "$wheels"' EXIT
  cp -r clients/python "$wheels/source"
  rm -rf "$wheels/source/tests"
  "$python" -m pip wheel --quiet --no-deps --wheel-dir "$wheels" "$wheels/source"
  if [ -n "$destdir" ]; then
    "$python" -m pip install --quiet --no-deps --root "$destdir" --prefix "$prefix" "$wheels"/sluice_client-*.whl
  else
    "$python" -m pip install --quiet "$wheels"/sluice_client-*.whl
  fi
fi
echo "installed under ${destdir:-/}$prefix (unit: ${destdir}/etc/systemd/system/sluiced.service; then: systemctl daemon-reload && systemctl enable --now sluiced)"
