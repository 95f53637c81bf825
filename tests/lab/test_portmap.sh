#!/usr/bin/env bash
# Port mapping (issue 10): trellisd behind a NAT router running Debian's miniupnpd gets a
# mapping by PCP, NAT-PMP and UPnP-IGD (each forced in turn with --portmap, then all three
# with the default "auto", where PCP must win), and for each:
#   - the mapping is in the router's nftables (miniupnpd's DNAT to A's WireGuard port);
#   - the control server hands the mapped endpoint to B, and B, on the lab internet,
#     completes a WireGuard handshake and pings A through it. The router drops every UDP
#     flow the LAN starts (only replies and mapped flows pass), so A cannot have opened the
#     way itself: the packets came in through the mapping;
#   - the mapping is renewed (a lifetime of 6 s, renewed at least twice: it outlives its
#     first lifetime) and still carries traffic;
#   - stopping trellisd deletes it from the router.
# Negative controls: with no mapping, a datagram to the router's port does not reach A; with
# --portmap off, A cannot start a UDP flow to B (the drop rule's counter shows it matched).
#
#   lab internet 192.0.2.0/24: control .1:8080 (no relay), router WAN .2, STUN .10 + .11,
#   B .13; LAN 198.18.0.0/24: router .1, A .2
#
# miniupnpd refuses documentation addresses as its external address unless STUN reports
# them, and STUN must answer RFC 5780 change requests: coturn on two addresses
# (/work/shared/lab/miniupnpd-lab.sh is the recipe this follows).
LAB_TIMEOUT=${LAB_TIMEOUT:-540} # the watchdog: 240 s seen under load
source "$(dirname "$0")/lib.sh"
lab_init
lab_require_control_plane
lab_require nft
lab_require_pkgs "miniupnpd turnserver" miniupnpd miniupnpd-nftables coturn

LIFETIME=6
A_PORT=41641

lab_internet
lab_public_host ctl 1
lab_public_host gw 2
lab_public_host b 13
lab_ns a
lab_veth gw eth1 a eth0
lab_forwarding gw
lab_addr gw eth1 198.18.0.1/24
lab_addr a eth0 198.18.0.2/24
nsx a ip route add default via 198.18.0.1

# miniupnpd's nft backend adds its rules to the chains of the router's ruleset; forward's
# policy is drop, so WAN -> LAN passes only through them. LAN -> WAN: TCP (the control
# connection) is masqueraded; a UDP flow the LAN starts is dropped.
lab_miniupnpd_ruleset gw drop-lan-udp

# STUN with two addresses and two ports (3478, 3479), before miniupnpd: it exits without.
lab_stun5780 stun 10 11
lab_miniupnpd_stun gw 192.0.2.10 "$LIFETIME" 41
MLOG=$MINIUPNPD_LOG
MPID=$MINIUPNPD_PID
mini_ready() { kill -0 "$MPID" && grep -q 'Listening for NAT-PMP/PCP traffic on port 5351' "$MLOG"; }
# Its STUN probes take up to about 9 s.
check "miniupnpd listens for NAT-PMP/PCP" wait_for 20 mini_ready
check "miniupnpd enabled port forwarding (external address from STUN)" \
	grep -q 'Port forwarding is now enabled' "$MLOG"

LAB_CONTROL_SERVE_ARGS="--no-relay"
lab_control_start ctl 192.0.2.1 8080 || lab_finish
KEY=$(lab_authkey --reusable)
lab_node_join b b "$KEY"

# pm NAME EXPR: a python expression on NAME's status "portmap" object (p).
pm() { status_eval "$1" "(lambda p: $2)(j.get('portmap') or {})"; }
# mapped_by PROTO: A's active protocol is PROTO and it has an external endpoint.
mapped_by() { [[ $(pm a "p.get('active')") == "$1" && $(pm a "p.get('external')") == 192.0.2.2:* ]]; }
# found_all: A's last round found all three protocols on the router.
found_all() { [[ $(pm a "(p['pcp'], p['nat_pmp'], p['upnp'])") == "(True, True, True)" ]]; }
# renewed N: A renewed its mapping at least N times.
renewed() { (($(pm a "p.get('renewals', 0)") >= $1)); }
# router_maps PORT: miniupnpd's DNAT of UDP PORT to A's WireGuard port is in the router.
router_maps()
{
	nsx gw nft list chain inet filter prerouting_miniupnpd | tee /dev/stderr |
		grep -E "dport $1 .*dnat.* to 198\.18\.0\.2:$A_PORT\$"
}
router_unmapped() { ! router_maps "$1"; }
# b_endpoint_of_a: the endpoint B's netmap has for A (first one: what B sends to).
b_endpoint_of_a() { status_eval b "[p.get('endpoint') for p in j['peers'] if p['hostname'] == 'a'][0]"; }
b_sends_to() { [[ $(b_endpoint_of_a) == "$1" ]]; }

# udp_arrives FROM DST PORT: a datagram sent from namespace FROM to DST:PORT reaches A's PORT.
udp_arrives() { lab_udp_arrives a 198.18.0.2 "$1" "$2" "$3"; }

lab_node_join a a "$KEY"
A_IP=$(node_ip a 4)
B_IP=$(node_ip b 4)
check "b sees a" wait_for 10 peers_are b a
lab_node_stop a

# ---- negative controls: without a mapping nothing gets in, and the LAN cannot open UDP
check "a datagram from the router to a's 198.18.0.2:41999 arrives (the probe works)" \
	udp_arrives gw 198.18.0.2 41999
check_not "no mapping: a datagram from b to the router's 192.0.2.2:41999 does not reach a" \
	udp_arrives b 192.0.2.2 41999
LAB_NODE_ARGS="--portmap off" lab_node_start a a
check_eq "portmap off: status says null" "None" "$(status_eval a "j.get('portmap')")"
check_not "portmap off: a cannot reach b (the router drops the UDP a starts)" \
	ping_until a "$B_IP" 3
check "the router counted a's dropped handshakes (the drop can fail a test)" \
	bash -c "ip netns exec '$(ns_name gw)' nft list chain inet filter forward |
		grep -q 'meta l4proto udp counter packets [1-9]'"
lab_node_stop a
lab_node_stop b

# round PROTO ARG: A with --portmap ARG maps by PROTO; the checks of the header. B starts
# after A has its mapping, so its first handshake goes to the mapped endpoint.
round()
{
	local proto=$1 arg=$2 ext eport
	LAB_NODE_ARGS="--portmap $arg --portmap-lifetime $LIFETIME" lab_node_start a a || return
	check "$arg: a maps its port by $proto" wait_for 15 mapped_by "$proto"
	ext=$(pm a "p.get('external')")
	eport=${ext##*:}
	check "$arg: the router has the mapping ($ext -> 198.18.0.2:$A_PORT)" router_maps "$eport"
	check_eq "$arg: lease as asked" "$LIFETIME" "$(pm a "p.get('lease_s')")"
	lab_node_start b b || return
	check "$arg: the control server gives b the mapped endpoint $ext" wait_for 15 b_sends_to "$ext"
	check "$arg: b reaches a through the mapping (handshake and ping)" ping_until b "$A_IP" 10
	if [[ $arg == auto ]]; then
		# Waits for all three, and says which was missing if one is.
		wait_for 20 found_all >/dev/null || true
		check_eq "auto: PCP, NAT-PMP and UPnP all found" "(True, True, True)" \
			"$(pm a "(p['pcp'], p['nat_pmp'], p['upnp'])")"
	else
		check_eq "$arg: only $proto was asked" "['$arg']" "$(pm a "p.get('enabled')")"
		# Two renewals of a 6 s lifetime: the mapping has outlived its first lifetime.
		check "$arg: the mapping is renewed" wait_for 20 renewed 2
		check "$arg: the renewed mapping is still in the router" router_maps "$eport"
		check "$arg: and still carries traffic" ping_all b "$A_IP" 3
	fi
	lab_node_stop b
	lab_node_stop a
	check "$arg: stopping trellisd deletes the mapping" wait_for 20 router_unmapped "$eport"
}

round pcp pcp
round nat-pmp nat-pmp
round upnp upnp
round pcp auto

lab_finish
