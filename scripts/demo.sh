#!/usr/bin/env bash
# `make demo`: a whole tailnet on this one machine. A coordination server (trellis-control)
# and three nodes (trellisd), each in its own network namespace on a small virtual
# internet; the nodes join with one auth key, `trellis status` shows the tailnet, and pings
# cross it. Two more nodes, each behind a NAT router of its own that lets in only answers,
# find a direct path to each other (`trellis ping` shows the first answers through the
# relay, then direct); a last one behind a firewall that drops all UDP reaches the others
# through the relay embedded in trellis-control. Builds nothing (make does) and removes
# everything it made on exit.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${TRELLIS_BUILD:-$REPO/build}
CONTROL=${TRELLIS_CONTROL:-$BUILD/src/control/trellis-control}
TRELLISD=${TRELLISD:-$BUILD/src/node/trellisd}
TRELLIS=${TRELLIS_CLI:-$BUILD/src/cli/trellis}

if [[ -t 1 ]]; then B=$'\033[1m' BLUE=$'\033[1;34m' N=$'\033[0m'; else B='' BLUE='' N=''; fi
bold() { printf '%s%s%s\n' "$B" "$*" "$N"; }
step() { printf '\n%s==>%s %s%s%s\n' "$BLUE" "$N" "$B" "$*" "$N"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (network namespaces): try sudo make demo"
for b in "$CONTROL" "$TRELLISD" "$TRELLIS"; do
	[[ -x $b ]] || die "no $(basename "$b") at $b: run make first"
done
for t in ip ping ss; do
	command -v "$t" >/dev/null || die "missing $t (scripts/install-deps.sh installs it)"
done

# Unique names per run: several demos (or lab tests) can run at once.
id=$(printf '%x' $$)
NS_NET="demo-$id-net"
TMP=$(mktemp -d "/tmp/trellis-demo-$id.XXXXXX")
NODES=(alice bob carol)
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
	if [[ ${DEMO_FAILED:-0} == 1 ]]; then
		printf '\nLogs of the run:\n' >&2
		for n in "$TMP"/*.log; do
			[[ -s $n ]] || continue
			printf -- '--- %s\n' "$(basename "$n")" >&2
			tail -n 15 "$n" >&2
		done
	fi
	rm -rf "$TMP"
	((${#namespaces[@]})) && printf '\nCleaned up: namespaces, interfaces and daemons are gone.\n'
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE # a closed pipe (demo | head) must not skip the cleanup
fail() { DEMO_FAILED=1; die "$@"; }

ns() { echo "demo-$id-$1"; }
# host NAME N: a namespace on the virtual internet with 192.0.2.N and 2001:db8:1::N.
host()
{
	local name=$1 n=$2
	ip netns add "$(ns "$name")"
	namespaces+=("$(ns "$name")")
	ip -n "$(ns "$name")" link set lo up
	ip netns exec "$(ns "$name")" sysctl -qw net.ipv6.conf.all.accept_dad=0 \
		net.ipv6.conf.default.accept_dad=0
	ip -n "$NS_NET" link add "v$name" type veth peer name eth0 netns "$(ns "$name")"
	ip -n "$NS_NET" link set "v$name" master br0 up
	ip -n "$(ns "$name")" link set eth0 up
	ip -n "$(ns "$name")" addr add "192.0.2.$n/24" dev eth0
	ip -n "$(ns "$name")" addr add "2001:db8:1::$n/64" dev eth0 nodad
	printf '  %-8s 192.0.2.%-4s (namespace %s)\n' "$name" "$n" "$(ns "$name")"
}

step "Building a small internet: one switch, four machines"
ip netns add "$NS_NET"
namespaces+=("$NS_NET")
ip -n "$NS_NET" link add br0 type bridge
ip -n "$NS_NET" link set br0 up
host control 1
i=11
for n in "${NODES[@]}"; do
	host "$n" "$i"
	i=$((i + 1))
done

step "Starting the coordination server on 192.0.2.1:8080"
ip netns exec "$(ns control)" "$CONTROL" --state "$TMP/control" serve --listen 192.0.2.1:8080 \
	>"$TMP/control.log" 2>&1 &
pids+=($!)
for ((k = 0; k < 100; k++)); do
	ip netns exec "$(ns control)" ss -Hltn 'sport = :8080' | grep -q . && break
	kill -0 "${pids[-1]}" 2>/dev/null || fail "trellis-control exited"
	sleep 0.1
done
echo "  trellis-control pid ${pids[-1]}, state in $TMP/control"

step "Creating an auth key (trellis-control authkey create --reusable)"
KEY=$("$CONTROL" --state "$TMP/control" authkey create --reusable) || fail "authkey create failed"
echo "  $KEY"

trellis() { local who=$1; shift; timeout 30 "$TRELLIS" --socket "$TMP/$who.sock" "$@"; }

step "Starting trellisd on each machine and joining the tailnet"
for n in "${NODES[@]}"; do
	ip netns exec "$(ns "$n")" "$TRELLISD" --state "$TMP/$n" --socket "$TMP/$n.sock" \
		--tun trellis0 --port 41641 >"$TMP/$n.log" 2>&1 &
	pids+=($!)
	for ((k = 0; k < 100; k++)); do
		[[ -S $TMP/$n.sock ]] && break
		kill -0 "${pids[-1]}" 2>/dev/null || fail "trellisd on $n exited"
		sleep 0.1
	done
	printf '  %s$ trellis up --login-server http://192.0.2.1:8080 --auth-key … --hostname %s\n' \
		"$n" "$n"
	trellis "$n" up --login-server http://192.0.2.1:8080 --auth-key "$KEY" --hostname "$n" ||
		fail "trellis up on $n failed"
	printf '  %s is on the tailnet as %s\n' "$n" "$(trellis "$n" ip -4 | tr '\n' ' ')"
done

# The netmap reaches everyone within a second; wait (bounded) until alice sees both.
for ((k = 0; k < 50; k++)); do
	[[ $(trellis alice status --json | grep -c '"hostname"') -ge 3 ]] && break
	sleep 0.1
done

step "trellis status on alice"
trellis alice status || fail "trellis status failed"

BOB4=$(trellis bob ip -4)
CAROL6=$(trellis carol ip -6)
step "Pinging bob ($BOB4) from alice across the tailnet"
ip netns exec "$(ns alice)" ping -c 4 -i 0.3 -W 2 "$BOB4" || fail "the ping did not go through"
step "Pinging carol over IPv6 ($CAROL6) from bob"
ip netns exec "$(ns bob)" ping -c 4 -i 0.3 -W 2 "$CAROL6" || fail "the ping did not go through"

step "trellis status on alice, after the traffic"
trellis alice status

# behind NAME ROUTER N NET: a machine NAME behind the router ROUTER (192.0.2.N on the
# internet) at NET.2, the router NAT-ing it; the caller adds the router's firewall rules.
behind()
{
	local name=$1 r=$2 n=$3 net=$4
	host "$r" "$n"
	ip netns add "$(ns "$name")"
	namespaces+=("$(ns "$name")")
	ip -n "$(ns "$name")" link set lo up
	ip -n "$(ns "$r")" link add eth1 type veth peer name eth0 netns "$(ns "$name")"
	ip -n "$(ns "$r")" link set eth1 up
	ip -n "$(ns "$r")" addr add "$net.1/24" dev eth1
	ip -n "$(ns "$name")" link set eth0 up
	ip -n "$(ns "$name")" addr add "$net.2/24" dev eth0
	ip -n "$(ns "$name")" route add default via "$net.1"
	ip netns exec "$(ns "$r")" sysctl -qw net.ipv4.ip_forward=1
}
# join NAME: trellisd on NAME, joined to the tailnet.
join()
{
	local k
	ip netns exec "$(ns "$1")" "$TRELLISD" --state "$TMP/$1" --socket "$TMP/$1.sock" \
		--tun trellis0 --port 41641 >"$TMP/$1.log" 2>&1 &
	pids+=($!)
	for ((k = 0; k < 100; k++)); do
		[[ -S $TMP/$1.sock ]] && break
		kill -0 "${pids[-1]}" 2>/dev/null || fail "trellisd on $1 exited"
		sleep 0.1
	done
	trellis "$1" up --login-server http://192.0.2.1:8080 --auth-key "$KEY" --hostname "$1" ||
		fail "trellis up on $1 failed"
}
# home_ready NAME: NAME is connected to its home relay.
home_ready()
{
	trellis "$1" status --json | python3 -c 'import json,sys
j = json.load(sys.stdin)
sys.exit(0 if any(r["home"] and r["state"] == "connected" for r in j["relay"]["regions"]) else 1)'
}

# Two machines behind NATs: the relay carries the first packets, path discovery finds a
# direct path through both NATs (call-me-maybe through the relay: each pings the other at
# once, so each NAT opens for the other's pings).
if "$CONTROL" --help 2>&1 | grep -q -- --no-relay && command -v nft >/dev/null; then
	step "Two machines behind NAT routers of their own: erin and frank"
	for m in erin:nat1:21:198.18.6 frank:nat2:22:198.18.7; do
		IFS=: read -r name r n net <<<"$m"
		behind "$name" "$r" "$n" "$net"
		# Like a home router: it masquerades and lets in only answers to its LAN's flows.
		ip netns exec "$(ns "$r")" nft -f - <<'NFT'
table ip nat {
	chain post {
		type nat hook postrouting priority srcnat;
		oifname "eth0" masquerade
	}
}
table inet fw {
	chain forward {
		type filter hook forward priority filter;
		iifname "eth0" ct state new drop
	}
	chain input {
		type filter hook input priority filter;
		iifname "eth0" ct state new drop
	}
}
NFT
		printf '  %-8s %s.2 behind %s (192.0.2.%s): NAT, nothing gets in unasked\n' \
			"$name" "$net" "$r" "$n"
		join "$name"
	done
	for ((k = 0; k < 100; k++)); do
		home_ready erin 2>/dev/null && home_ready frank 2>/dev/null &&
			[[ $(trellis erin status --json | grep -c '"hostname"') -ge 6 ]] && break
		sleep 0.1
	done
	step "trellis ping frank from erin: the first answers come through the relay, then direct"
	trellis erin ping frank || fail "trellis ping did not reach frank"
	direct()
	{
		trellis erin status --json | python3 -c 'import json,sys
j = json.load(sys.stdin)
sys.exit(0 if any(p["hostname"] == "frank" and p["path"] == "direct" for p in j["peers"]) else 1)'
	}
	for ((k = 0; k < 100; k++)); do
		direct 2>/dev/null && break
		sleep 0.1
	done
	direct || fail "erin and frank did not find a direct path"
	step "trellis status on erin: frank is direct, at his NAT's public address"
	trellis erin status
fi

# A machine without UDP: only possible with the relay embedded in trellis-control.
if "$CONTROL" --help 2>&1 | grep -q -- --no-relay && command -v nft >/dev/null; then
	step "A last machine, dave, behind a firewall that drops all UDP"
	behind dave fw 20 198.18.5
	ip netns exec "$(ns fw)" nft -f - <<'NFT'
table ip nat {
	chain post {
		type nat hook postrouting priority srcnat;
		oifname "eth0" masquerade
	}
}
table inet fw {
	chain forward {
		type filter hook forward priority filter;
		meta l4proto udp counter drop
	}
}
NFT
	echo "  dave     198.18.5.2 behind fw (192.0.2.20): NAT, and every UDP packet dropped"
	join dave
	DAVE4=$(trellis dave ip -4)
	printf '  dave is on the tailnet as %s\n' "$DAVE4"
	# Bounded wait until dave is connected to its home relay and alice knows that home.
	ready()
	{
		home_ready dave &&
			trellis alice status --json | python3 -c 'import json,sys
j = json.load(sys.stdin)
sys.exit(0 if any(p["hostname"] == "dave" and p.get("home_relay") for p in j["peers"]) else 1)'
	}
	for ((k = 0; k < 100; k++)); do
		ready 2>/dev/null && break
		sleep 0.1
	done
	step "Pinging dave ($DAVE4) from alice: no UDP path exists, so it goes through the relay"
	ip netns exec "$(ns alice)" ping -c 4 -i 0.3 -W 2 "$DAVE4" || fail "the ping did not go through"
	step "trellis status on alice: dave's path is the relay"
	trellis alice status
	step "trellis status on dave: its home relay region and connection"
	trellis dave status
	printf '\n'
	bold "dave has no UDP at all, yet reaches everyone through the relay (still WireGuard end to end)."
fi

printf '\n'
bold "It works: machines joined one tailnet with one key each and talk end to end, directly"
bold "through NATs where UDP gets through, through the relay where it does not."
bold "The same commands work across real hosts: see the README's \"real deployment\"."
