#!/usr/bin/env bash
# `make demo`: two network namespaces ("alice" and "bob") joined by a virtual cable, a
# trellisd --wg in each, configured with the stock wg(8) tool, and a ping through the
# encrypted tunnel. Builds nothing (make does) and removes everything it made on exit.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
TRELLISD=${TRELLISD:-${TRELLIS_BUILD:-$REPO/build}/src/node/trellisd}

if [[ -t 1 ]]; then B=$'\033[1m' BLUE=$'\033[1;34m' N=$'\033[0m'; else B='' BLUE='' N=''; fi
bold() { printf '%s%s%s\n' "$B" "$*" "$N"; }
step() { printf '\n%s==>%s %s%s%s\n' "$BLUE" "$N" "$B" "$*" "$N"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (network namespaces): try sudo make demo"
[[ -x $TRELLISD ]] || die "no trellisd at $TRELLISD: run make first"
for t in ip wg ping; do
	command -v "$t" >/dev/null || die "missing $t (scripts/install-deps.sh installs it)"
done

# Unique names per run: several demos (or lab tests) can run at once.
id=$(printf '%x' $$)
NS_A="demo-$id-alice" NS_B="demo-$id-bob"
WG_A="tdemo${id}a" WG_B="tdemo${id}b"
TMP=$(mktemp -d "/tmp/trellis-demo-$id.XXXXXX")
pids=()
namespaces=()

cleanup()
{
	local p n
	set +e
	trap '' PIPE INT TERM HUP # finish the cleanup whatever happens to stdout
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do
		for ((n = 0; n < 30; n++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$p" 2>/dev/null
	done
	wait 2>/dev/null
	for n in "${namespaces[@]}"; do ip netns del "$n" 2>/dev/null; done
	rm -f "/var/run/wireguard/$WG_A.sock" "/var/run/wireguard/$WG_B.sock"
	rm -rf "$TMP"
	((${#namespaces[@]})) && printf '\nCleaned up: namespaces, interfaces and daemons are gone.\n'
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE # a closed pipe (demo | head) must not skip the cleanup

step "Creating two network namespaces joined by a veth cable"
for ns in "$NS_A" "$NS_B"; do
	ip netns add "$ns"
	namespaces+=("$ns")
	ip -n "$ns" link set lo up
done
ip -n "$NS_A" link add eth0 type veth peer name eth0 netns "$NS_B"
ip -n "$NS_A" addr add 192.0.2.1/24 dev eth0
ip -n "$NS_B" addr add 192.0.2.2/24 dev eth0
ip -n "$NS_A" link set eth0 up
ip -n "$NS_B" link set eth0 up
echo "  alice  192.0.2.1  <---- veth ---->  192.0.2.2  bob"

step "Starting trellisd --wg in each namespace"
start()
{
	local ns=$1 ifc=$2 n
	ip netns exec "$ns" "$TRELLISD" --wg "$ifc" >"$TMP/$ifc.log" 2>&1 &
	pids+=($!)
	for ((n = 0; n < 100; n++)); do
		[[ -S /var/run/wireguard/$ifc.sock ]] && wg show "$ifc" >/dev/null 2>&1 && break
		kill -0 "${pids[-1]}" 2>/dev/null || { cat "$TMP/$ifc.log" >&2; die "trellisd exited"; }
		sleep 0.1
	done
	[[ -S /var/run/wireguard/$ifc.sock ]] || die "trellisd did not create its socket"
	echo "  $ns: trellisd pid ${pids[-1]}, interface $ifc, socket /var/run/wireguard/$ifc.sock"
}
start "$NS_A" "$WG_A"
start "$NS_B" "$WG_B"

step "Generating keys with wg genkey / wg pubkey"
umask 077
wg genkey >"$TMP/alice.key"
wg genkey >"$TMP/bob.key"
PUB_A=$(wg pubkey <"$TMP/alice.key")
PUB_B=$(wg pubkey <"$TMP/bob.key")
echo "  alice: $PUB_A"
echo "  bob:   $PUB_B"

step "Configuring the tunnel with wg set and ip"
set -x
ip netns exec "$NS_A" wg set "$WG_A" private-key "$TMP/alice.key" listen-port 51820 \
	peer "$PUB_B" allowed-ips 100.64.0.2/32 endpoint 192.0.2.2:51820
ip netns exec "$NS_B" wg set "$WG_B" private-key "$TMP/bob.key" listen-port 51820 \
	peer "$PUB_A" allowed-ips 100.64.0.1/32
ip -n "$NS_A" addr add 100.64.0.1/24 dev "$WG_A"
ip -n "$NS_B" addr add 100.64.0.2/24 dev "$WG_B"
ip -n "$NS_A" link set "$WG_A" mtu 1420 up
ip -n "$NS_B" link set "$WG_B" mtu 1420 up
{ set +x; } 2>/dev/null

step "Pinging bob (100.64.0.2) from alice through the tunnel"
ip netns exec "$NS_A" ping -c 4 -i 0.3 -W 2 100.64.0.2 || die "the ping did not go through"

step "wg show on alice"
wg show "$WG_A"
step "wg show on bob"
wg show "$WG_B"

printf '\n'
bold "It works: alice and bob talk over WireGuard, both ends run by trellisd."
