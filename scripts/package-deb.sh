#!/usr/bin/env bash
# Builds the Debian package of sluiced and sluicectl: dist/sluice_VERSION_ARCH.deb, with the
# systemd unit, /etc/sluice/sluice.yaml (a conffile), shell completions, man pages and the docs.
#
#   scripts/package-deb.sh                      release binaries with the Swift runtime linked in
#                                               (--static-swift-stdlib): installable on a machine
#                                               without Swift
#   scripts/package-deb.sh --binaries DIR       binaries already built in DIR (tests use the debug
#                                               build; those need the toolchain's runtime)
#   scripts/package-deb.sh --out DIR            where the .deb goes (default: dist)
#
# scripts/test-deb.sh installs it, starts and checks the daemon, stops it and purges it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
binaries=""
out=dist
while [ $# -gt 0 ]; do
  case $1 in
    --binaries) binaries=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "package-deb.sh: unknown option $1 (--binaries DIR, --out DIR)" >&2; exit 2 ;;
  esac
done
command -v dpkg-deb >/dev/null || { echo "package-deb.sh: dpkg-deb not found (apt-get install -y dpkg)" >&2; exit 1; }
version=$(tr -d ' \n' < VERSION)
arch=$(dpkg --print-architecture)
if [ -z "$binaries" ]; then
  swift build -c release --static-swift-stdlib --product sluiced >&2
  swift build -c release --static-swift-stdlib --product sluicectl >&2
  binaries=$(swift build -c release --show-bin-path)
fi
for tool in sluiced sluicectl; do
  [ -x "$binaries/$tool" ] || { echo "package-deb.sh: $binaries/$tool is missing" >&2; exit 1; }
done

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
package=$stage/sluice_${version}_$arch
install -d "$package/DEBIAN" "$package/usr/bin" "$package/usr/lib/systemd/system" "$package/etc/sluice" \
  "$package/usr/share/doc/sluice" "$package/usr/share/man/man1" "$package/usr/share/man/man8" \
  "$package/usr/share/bash-completion/completions" "$package/usr/share/zsh/vendor-completions" \
  "$package/usr/share/fish/vendor_completions.d"
install -m 0755 "$binaries/sluiced" "$binaries/sluicectl" "$package/usr/bin/"
install -m 0644 contrib/systemd/sluiced.service "$package/usr/lib/systemd/system/"
install -m 0644 contrib/systemd/sluice.yaml "$package/etc/sluice/sluice.yaml"
for doc in README.md CHANGELOG.md docs/OPERATIONS.md docs/CONFIGURATION.md docs/PROTOCOL.md docs/SECURITY.md; do
  install -m 0644 "$doc" "$package/usr/share/doc/sluice/"
done
# Debian's copyright file: the licence's text is in /usr/share/common-licenses/Apache-2.0.
cat > "$package/usr/share/doc/sluice/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: sluice

Files: *
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
# Completions and man pages, from the executables' own argument parsers.
"$package/usr/bin/sluicectl" --generate-completion-script bash > "$package/usr/share/bash-completion/completions/sluicectl"
"$package/usr/bin/sluicectl" --generate-completion-script zsh > "$package/usr/share/zsh/vendor-completions/_sluicectl"
"$package/usr/bin/sluicectl" --generate-completion-script fish > "$package/usr/share/fish/vendor_completions.d/sluicectl.fish"
"$package/usr/bin/sluiced" --generate-completion-script bash > "$package/usr/share/bash-completion/completions/sluiced"
"$package/usr/bin/sluiced" --generate-completion-script zsh > "$package/usr/share/zsh/vendor-completions/_sluiced"
"$package/usr/bin/sluiced" --generate-completion-script fish > "$package/usr/share/fish/vendor_completions.d/sluiced.fish"
python3 scripts/man-pages.py --sluiced "$package/usr/bin/sluiced" --sluicectl "$package/usr/bin/sluicectl" \
  --out "$package/usr/share/man" --version "$version"
gzip -9n "$package"/usr/share/man/man*/*

# Dependencies: the shared libraries the binaries load, by their Debian packages where dpkg
# knows them (the system SQLite and glibc; the Swift runtime only when it is not linked in).
owners=(adduser)
toolchain=0
for library in $(ldd "$package/usr/bin/sluiced" "$package/usr/bin/sluicectl" | awk '/=> \// {print $3}' | sort -u); do
  owner=$(dpkg -S "$(readlink -f "$library")" 2>/dev/null | head -1 | cut -d: -f1 || true)
  [ -z "$owner" ] && owner=$(dpkg -S "$library" 2>/dev/null | head -1 | cut -d: -f1 || true)
  if [ -n "$owner" ]; then
    owners+=("$owner")
  else
    toolchain=1
  fi
done
depends=$(printf '%s\n' "${owners[@]}" | sort -u | paste -sd, | sed 's/,/, /g')
[ $toolchain = 0 ] || echo "package-deb.sh: note: the binaries load the Swift toolchain's runtime, which no Debian package provides: this package needs the toolchain installed (build without --binaries for one that does not)" >&2
size=$(du -sk "$package" | cut -f1)
cat > "$package/DEBIAN/control" <<CONTROL
Package: sluice
Version: $version
Architecture: $arch
Maintainer: Sluice maintainers <maintainers@sluice.invalid>
Installed-Size: $size
Depends: $depends
Section: net
Priority: optional
Description: rate-limiting decision daemon
 Before doing work for a caller, a service asks sluiced "may this caller do this
 now?" over a Unix socket or TCP and gets an answer in microseconds: GCRA, token
 bucket, sliding and fixed windows and concurrency leases, Envoy's rate limit
 service, an HTTP/JSON API, limits shared through Redis, reputation and anomaly
 detection. sluicectl talks to it.
CONTROL
echo "/etc/sluice/sluice.yaml" > "$package/DEBIAN/conffiles"
install -m 0755 contrib/debian/postinst contrib/debian/prerm contrib/debian/postrm "$package/DEBIAN/"
mkdir -p "$out"
dpkg-deb --root-owner-group --build "$package" "$out/sluice_${version}_$arch.deb" >/dev/null
echo "$out/sluice_${version}_$arch.deb"
