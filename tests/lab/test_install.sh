#!/usr/bin/env bash
# Installing Trellis: the Debian package (scripts/build-deb.sh) installs into a private
# root with dpkg, its programs run and start (trellisd --wg in a namespace, trellis-control
# serving /key), and it removes cleanly; `make install DESTDIR=...` stages the expected
# files; man pages render without warnings; bash completion completes; systemd units pass
# `systemd-analyze verify`. systemd is not PID 1 on the test machines, so the units are
# verified, not started.
source "$(dirname "$0")/lib.sh"
LAB_TIMEOUT=${LAB_TIMEOUT:-540} # the package's release build, on a loaded machine
lab_init
lab_require dpkg-deb dpkg-shlibdeps meson ninja groff curl
SRC=$(cd "$(dirname "$0")/../.." && pwd)
# The release build behind the package lives in the test build dir: later runs only
# relink what changed.
OUT=$TRELLIS_BUILD/deb

# ---- the package
DEB=$("$SRC/scripts/build-deb.sh" "$OUT" 2>"$LAB_TMP/build-deb.log" | tail -n 1)
if ! check "scripts/build-deb.sh builds a package" test -f "$DEB"; then
	sed 's/^/  | /' "$LAB_TMP/build-deb.log" | tail -n 20
	lab_finish
fi
VERSION=$("$SRC/scripts/version.sh" "$(sed -n "s/^  version: '\(.*\)',$/\1/p" "$SRC/meson.build")" "$SRC")
field() { dpkg-deb -f "$DEB" "$1"; }
check_eq "package name" trellis "$(field Package)"
check_eq "package version is the build's" "${VERSION//-dirty/+dirty}" "$(field Version)"
for lib in libc6 libssl3 libjansson4 libmnl0 libsqlite3-0; do
	check "Depends names $lib (from the binaries)" grep -q "\b$lib\b" <<<"$(field Depends)"
done
LIST=$(dpkg-deb -c "$DEB" | awk '{ print $6 }')
for f in ./usr/bin/trellis ./usr/sbin/trellisd ./usr/sbin/trellis-control \
	./usr/share/man/man1/trellis.1.gz ./usr/share/man/man8/trellisd.8.gz \
	./usr/share/man/man8/trellis-control.8.gz ./usr/share/bash-completion/completions/trellis \
	./usr/lib/systemd/system/trellisd.service ./usr/lib/systemd/system/trellis-control.service \
	./usr/share/doc/trellis/copyright; do
	check "package holds $f" grep -qx -- "$f" <<<"$LIST"
done

# dpkg into a private root; the maintainer scripts run outside it (there is no shell in
# it) and leave the host's systemd alone (DPKG_ROOT).
R=$LAB_TMP/root
mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates"
touch "$R/var/lib/dpkg/status"
pkg() { dpkg --root="$R" --force-not-root --force-depends --force-script-chrootless "$@"; }
check "dpkg installs the package" pkg -i "$DEB"
check_eq "dpkg lists it installed" "install ok installed" \
	"$(dpkg-query --admindir="$R/var/lib/dpkg" -W -f='${Status}' trellis 2>/dev/null)"
check_eq "installed trellis version" "$VERSION" "$("$R/usr/bin/trellis" version)"
check_eq "installed trellisd --version" "trellisd $VERSION" "$("$R/usr/sbin/trellisd" --version)"
check_eq "installed trellis-control version" "$VERSION" "$("$R/usr/sbin/trellis-control" version)"

# The installed programs start: plain WireGuard in a namespace, and the server.
lab_ns a
ip -n "$(ns_name a)" link set lo up
IF=$(lab_iface p)
TRELLISD_BUILT=$TRELLISD
TRELLISD=$R/usr/sbin/trellisd
if check "the packaged trellisd starts (--wg)" lab_wg_start a trellisd "$IF"; then
	check "wg(8) talks to it" wg set "$IF" listen-port 51820
	check_eq "and reads back" 51820 "$(wg show "$IF" listen-port)"
	lab_wg_stop "$IF"
fi
TRELLISD=$TRELLISD_BUILT
TRELLIS_CONTROL_BUILT=$TRELLIS_CONTROL
TRELLIS_CONTROL=$R/usr/sbin/trellis-control
if check "the packaged trellis-control serves" lab_control_start a 127.0.0.1 8080; then
	check "GET /key answers" nsx a curl -fsS -o /dev/null http://127.0.0.1:8080/key
	lab_control_stop
fi
TRELLIS_CONTROL=$TRELLIS_CONTROL_BUILT

check "dpkg removes it" pkg -r trellis
check_not "its programs are gone" test -e "$R/usr/sbin/trellisd"
check "dpkg purges it" pkg -P trellis

# ---- make install DESTDIR=... (with the package's build dir: no second build)
STAGE=$LAB_TMP/stage
make_install() { make -s -C "$SRC" install BUILD="$OUT/meson" PREFIX=/usr DESTDIR="$STAGE" >"$LAB_TMP/install.log" 2>&1; }
check "make install DESTDIR=... PREFIX=/usr" make_install
for f in usr/bin/trellis usr/sbin/trellisd usr/sbin/trellis-control usr/share/man/man1/trellis.1 \
	usr/share/man/man8/trellisd.8 usr/share/man/man8/trellis-control.8 \
	usr/share/bash-completion/completions/trellis usr/share/bash-completion/completions/trellisd \
	usr/share/bash-completion/completions/trellis-control \
	usr/share/bash-completion/completions/trellis-relay \
	usr/lib/systemd/system/trellisd.service usr/lib/systemd/system/trellis-control.service \
	usr/sbin/trellis-relay usr/share/man/man8/trellis-relay.8 \
	usr/lib/systemd/system/trellis-relay.service; do
	check "make install stages $f" test -e "$STAGE/$f"
done
check_eq "units start the installed programs" \
	"/usr/sbin/trellisd /usr/sbin/trellis-control" \
	"$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$STAGE"/usr/lib/systemd/system/trellisd.service \
		"$STAGE"/usr/lib/systemd/system/trellis-control.service | tr '\n' ' ' | sed 's/ $//')"

# Man pages: groff's own warnings (-ww), none allowed.
for m in "$STAGE"/usr/share/man/man?/*; do
	out=$(groff -man -ww -z "$m" 2>&1)
	check_eq "$(basename "$m") renders without warnings" "" "$out"
done

# Bash completion: complete "trellis st" and "trellis-control nodes ap".
complete_of()
{
	bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); "$F"; echo "${COMPREPLY[*]}"' \
		_ "$STAGE/usr/share/bash-completion/completions/trellis" "$@"
}
check_eq "completion: trellis st" status "$(F=_trellis complete_of trellis st)"
check_eq "completion: trellis-control nodes ap" approve \
	"$(F=_trellis_control complete_of trellis-control nodes ap)"
check_eq "completion: trellisd --log-level d" debug "$(F=_trellisd complete_of trellisd --log-level d)"
check_eq "completion: trellis-relay --mesh-p" --mesh-peer \
	"$(F=_trellis_relay complete_of trellis-relay --mesh-p)"

# Units: systemd's own checker. It wants ExecStart to exist on this host: a copy of each
# unit points at the staged program instead of /usr/sbin.
if command -v systemd-analyze >/dev/null; then
	mkdir -p "$LAB_TMP/units"
	for u in trellisd.service trellis-control.service trellis-relay.service; do
		sed "s|^ExecStart=/usr/sbin/|ExecStart=$STAGE/usr/sbin/|" \
			"$STAGE/usr/lib/systemd/system/$u" >"$LAB_TMP/units/$u"
		out=$(systemd-analyze verify --man=no "$LAB_TMP/units/$u" 2>&1)
		check_eq "systemd-analyze verify $u" "" "$out"
	done
fi
lab_finish
