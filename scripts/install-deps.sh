#!/usr/bin/env bash
# Installs the Debian packages Trellis builds and tests with. Does nothing when
# they are all present, so `make check` stays fast on a prepared machine.
set -euo pipefail

pkgs=(
	# build
	meson ninja-build pkg-config gcc clang libclang-rt-14-dev
	libssl-dev libmnl-dev libcmocka-dev libjansson-dev libsqlite3-dev
	# compressed full netmaps (src/proto/mapz.c, src/control/mapzc.c)
	libzstd-dev
	# local accounts (src/auth: Argon2id; the control server's TOTP QR codes)
	libargon2-dev libqrencode-dev
	# OIDC client (src/oidc)
	libcurl4-openssl-dev
	# UPnP-IGD client (src/portmap)
	libminiupnpc-dev
	# lab tests and benchmarks
	iproute2 nftables conntrack iputils-ping iperf3 tcpdump wireguard-tools wireguard-go
	procps psmisc python3 sqlite3 openssl curl
	# bench/throughput.sh: another mesh VPN's data plane, side by side (issue 14)
	nebula
	# packaging (make deb, lab/test_install)
	dpkg-dev man-db systemd
	# turnutils_stunclient, an RFC 5389 STUN client for the relay's lab test (Debian's
	# coturn does not start its TURN server unless configured to)
	coturn
	# lab/test_portmap: a NAT router granting NAT-PMP, PCP and UPnP-IGD mappings (coturn above
	# is its STUN server, answering the change requests miniupnpd needs)
	miniupnpd miniupnpd-nftables
	# lab/test_nat64: an IPv6-only site's router: a NAT64 (tayga) and a DNS64 (unbound); its
	# router advertisements with PREF64 come from python3 above (radvd 2.19 in Debian 12 has
	# no nat64prefix)
	tayga unbound
	# lab/test_login: a browser (driven by playwright-core from npm, tests/lab/browser) and
	# TOTP codes to type into it; lab/test_oidc: the lab's identity provider (oidc-provider
	# from npm, tests/lab/idp) and the same browser
	chromium oathtool nodejs
	# lab/test_login: zbarimg decodes the terminal QR code of `users add --totp`
	zbar-tools
)
# npm: Debian's, unless the installed nodejs brings its own (NodeSource's conflicts with it).
command -v npm >/dev/null 2>&1 || pkgs+=(npm)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0

if [[ $(id -u) != 0 ]]; then
	echo "install-deps: missing packages: ${missing[*]} (run as root, or install them)" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# No recommends: wireguard-tools would otherwise pull in a kernel image.
apt-get install -y -qq --no-install-recommends "${missing[@]}"
