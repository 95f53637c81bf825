#!/usr/bin/env bash
# Builds the Debian package of Trellis: trellis_VERSION_ARCH.deb in OUTDIR (default
# build-deb), from a release build with prefix /usr in OUTDIR/meson. Prints the path.
# Depends come from the binaries (dpkg-shlibdeps), as debhelper would compute them.
#
#   scripts/build-deb.sh [OUTDIR]
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-build-deb}" && cd "${1:-build-deb}" && pwd)
build=$out/meson
root=$out/root

if [[ ! -f $build/build.ninja ]]; then
	meson setup "$build" "$src" --buildtype=release -Dtests=false --prefix=/usr \
		--sysconfdir=/etc --localstatedir=/var >/dev/null
fi
ninja -C "$build" >/dev/null
rm -rf "$root"
DESTDIR=$root meson install -C "$build" --no-rebuild --quiet
# As Debian policy has it: stripped programs, compressed man pages, a copyright file.
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root"/usr/bin/* \
	"$root"/usr/sbin/*
gzip -9n "$root"/usr/share/man/man*/*
mkdir -p "$root/usr/share/doc/trellis"
printf 'Trellis\nLicense: MIT (SPDX-License-Identifier: MIT in every source file)\n' \
	>"$root/usr/share/doc/trellis/copyright"

# Debian versions: upstream part must start with a digit; "0.1.0-g1a2b" makes the commit
# the Debian revision, and "-dirty" a "+dirty" suffix on it.
version=$("$src/scripts/version.sh" "$(meson introspect "$build" --projectinfo |
	python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])')" "$src")
version=${version//-dirty/+dirty}
arch=$(dpkg --print-architecture)

# dpkg-shlibdeps wants a debian/control beside it.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/debian"
printf 'Source: trellis\n\nPackage: trellis\nArchitecture: any\n' >"$tmp/debian/control"
bins=("$root"/usr/bin/* "$root"/usr/sbin/*)
depends=$(cd "$tmp" && dpkg-shlibdeps -O "${bins[@]/#/-e}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')

mkdir -p "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<CONTROL
Package: trellis
Version: $version
Architecture: $arch
Maintainer: Trellis developers <trellis@localhost>
Section: net
Priority: optional
Depends: $depends
Recommends: wireguard-tools
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Description: mesh VPN over WireGuard: node daemon, CLI and coordination server
 Trellis gives every device a stable tailnet address and a direct, end-to-end
 encrypted WireGuard tunnel to each device it may reach. This package holds the
 node daemon trellisd (also a drop-in userspace WireGuard for wg-quick), the
 trellis command and the coordination server trellis-control.
CONTROL

# trellisd is started like tailscaled: enabled at install when systemd runs; the server
# only when the administrator enables it. Never for an install into another root
# (dpkg --root sets DPKG_ROOT): the host's systemd is not that root's.
cat >"$root/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	systemctl enable trellisd.service || true
	systemctl restart trellisd.service || true
fi
SCRIPT
cat >"$root/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
	systemctl stop trellisd.service trellis-control.service 2>/dev/null || true
	[ "$1" = remove ] && systemctl disable trellisd.service 2>/dev/null || true
fi
exit 0
SCRIPT
cat >"$root/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
[ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ] && systemctl daemon-reload || true
if [ "$1" = purge ]; then
	rm -rf "$DPKG_ROOT/var/lib/trellis" "$DPKG_ROOT/var/lib/trellis-control"
fi
exit 0
SCRIPT
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
deb=$out/trellis_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
