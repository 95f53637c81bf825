#!/usr/bin/env bash
# IPv6 pinholes (issue 10): trellisd, behind a router whose IPv6 firewall lets in only
# replies and the pinholes Debian's miniupnpd opens, asks for a pinhole by PCP (RFC 6887
# §11, an IPv6 internal address: the external endpoint is the node's own global address
# and port), and a peer on the public IPv6 side goes direct to it:
#   - the pinhole is in the router's nftables (miniupnpd's chain) and in a's status and
#     `trellis netcheck`; the control server gives b the pinhole as a's first endpoint;
#   - b's path to a goes direct over IPv6 (`trellis ping` answers via [2001:db8:2::2]:41641);
#   - it is renewed (a lifetime of 6 s, renewed at least twice) and still carries traffic;
#   - stopping trellisd deletes it (asked with a 7200 s lease, so expiry cannot explain it;
#     a renewed one miniupnpd 2.3.1 refuses to delete: it ends with its lifetime).
# The router drops every UDP flow the LAN starts (replies and pinholes pass; a real router
# lets them out, this one does not, so a cannot open the way itself and only the pinhole
# explains a direct path). IPv4 gives no direct path: the same drop, and miniupnpd maps
# nothing on IPv4 (its WAN address is a documentation one and it runs no STUN).
# Negative controls: a datagram from b to a's address does not get in without a pinhole,
# and with `--portmap off` b's path to a stays on the relay.
#
#   lab internet 192.0.2.0/24 + 2001:db8:1::/64: control .1 (embedded relay), router WAN .2,
#   b .13 (2001:db8:1::d); LAN 198.18.0.0/24 + 2001:db8:2::/64: router .1, ::1 and fe80::1
#   (a's IPv6 default route, as a router advertisement would give it), a .2 and ::2
LAB_TIMEOUT=${LAB_TIMEOUT:-400}
source "$(dirname "$0")/lib.sh"
lab_init
lab_require_control_plane
lab_require nft
lab_require_pkgs "miniupnpd" miniupnpd miniupnpd-nftables

LIFETIME=6
A_PORT=41641
A6=2001:db8:2::2
B6=2001:db8:1::d

lab_internet
lab_public_host ctl 1
lab_public_host gw 2
lab_public_host b 13
lab_ns a
lab_veth gw eth1 a eth0
lab_forwarding gw
lab_addr gw eth1 198.18.0.1/24 2001:db8:2::1/64 fe80::1/64
lab_addr a eth0 198.18.0.2/24 "$A6/64"
nsx a ip route add default via 198.18.0.1
nsx a ip -6 route add default via fe80::1 dev eth0
for h in ctl b; do
	nsx "$h" ip -6 route add 2001:db8:2::/64 via 2001:db8:1::2
done

# Both families (table inet): forward's policy is drop; WAN -> LAN passes only as a reply
# or through miniupnpd's chain, where its pinholes go. LAN -> WAN: TCP passes (IPv4
# masqueraded), UDP the LAN starts is dropped and counted (IPv6 on its own).
lab_miniupnpd_ruleset gw drop-lan-udp6 drop-lan-udp

# IPv6 on (ipv6_disable=no: PCP also listens on [::]:5351 and opens pinholes in
# upnp_forward_chain); no STUN, so IPv4 forwarding stays off (a reserved WAN address) and
# an IPv4 MAP gets NO_RESOURCES. (Not a "deny" rule for IPv4: miniupnpd then tries every
# external port in turn, logging each, and answers nothing else for minutes.)
lab_miniupnpd_start gw ext_ifname=eth0 listening_ip=eth1 enable_natpmp=yes enable_upnp=no \
	ipv6_disable=no secure_mode=yes system_uptime=yes min_lifetime=$LIFETIME \
	max_lifetime=86400 uuid=6a1e2f7c-0d3b-4c55-9a7e-5b0c1d2e3f46 \
	"allow 1024-65535 198.18.0.0/15 1024-65535"
MLOG=$MINIUPNPD_LOG
MPID=$MINIUPNPD_PID
pcp6_listening() { kill -0 "$MPID" && nsx gw ss -Hlun6 'sport = :5351' | grep -q .; }
check "miniupnpd listens for PCP on IPv6 port 5351" wait_for 20 pcp6_listening

lab_control_start ctl 192.0.2.1 8080 || lab_finish
KEY=$(lab_authkey --reusable)

# pm NAME EXPR: a python expression on NAME's status "portmap" "ipv6" object (p).
pm6() { status_eval "$1" "(lambda p: $2)((j.get('portmap') or {}).get('ipv6') or {})"; }
has_pinhole() { [[ $(pm6 a "p.get('external')") == "[$A6]:$A_PORT" ]]; }
renewed() { (($(pm6 a "p.get('renewals', 0)") >= $1)); }
# router_pinhole: miniupnpd's rule letting UDP to a's WireGuard port in is in the router.
# Its 2.3.1 writes daddr and next header as raw payload matches, which nft shows as
# `iif "eth0" th dport 41641 @nh,192,128 0x20010db8...0002 @nh,48,8 0x11 accept`.
A6_HEX=0x20010db8000200000000000000000002
router_pinhole()
{
	nsx gw nft list chain inet filter miniupnpd | tee /dev/stderr |
		grep -E "iif \"eth0\" th dport $A_PORT @nh,192,128 $A6_HEX @nh,48,8 0x11 accept"
}
router_clean() { ! router_pinhole; }
# b_endpoints_of_a: the endpoints b's netmap has for a, in order.
b_endpoints_of_a() { status_eval b "[p.get('endpoints') for p in j['peers'] if p['hostname'] == 'a'][0]"; }
b_first_endpoint_is() { [[ $(status_eval b "[p.get('endpoints') for p in j['peers'] if p['hostname'] == 'a'][0][0]") == "$1" ]]; }
# direct_via NAME PEER EP: NAME's path to PEER is direct, to EP.
direct_via()
{
	[[ $(status_eval "$1" "[p['path'] + ' ' + str(p.get('endpoint')) for p in j['peers'] if p['hostname'] == '$2'][0]") == "direct $3" ]]
}
path_of() { status_eval "$1" "[p['path'] for p in j['peers'] if p['hostname'] == '$2'][0]"; }
path_is() { [[ $(path_of "$1" "$2") == "$3" ]]; }

# udp6_arrives FROM PORT: a datagram from namespace FROM to [A6]:PORT reaches a.
udp6_arrives() { lab_udp_arrives a "$A6" "$1" "$A6" "$2"; }

# ---- negative controls: nothing gets in unasked, and without a pinhole b stays relayed
check "a datagram from the router to a's [$A6]:41999 arrives (the probe works)" \
	udp6_arrives gw 41999
check_not "no pinhole: a datagram from b to a's [$A6]:41999 does not get in" \
	udp6_arrives b 41999

LAB_NODE_ARGS="--portmap off" lab_node_join a a "$KEY"
lab_node_join b b "$KEY"
A_IP=$(node_ip a 4)
check "b sees a" wait_for 15 peers_are b a
check "portmap off: b reaches a (through the relay)" ping_until b "$A_IP" 15
# Traffic flowed, so both sides probe; neither probe can get in (b's: no pinhole; a's: the
# router drops the UDP a starts). With the pinhole the path is direct within seconds.
ping_all b "$A_IP" 10 >/dev/null 2>&1
check_not "portmap off: b's path to a stays on the relay (10 s of probing)" \
	wait_for 10 path_is b a direct
tr_node b ping a -c 3 >"$LAB_TMP/ping-off.txt" 2>&1
check_not "portmap off: no trellis ping answer comes direct" grep -q 'via \[' "$LAB_TMP/ping-off.txt"
check "the router dropped IPv6 UDP that a started (its probes to b)" \
	bash -c "ip netns exec '$(ns_name gw)' nft list chain inet filter forward |
		grep -q 'meta nfproto ipv6 meta l4proto udp counter packets [1-9]'"
lab_node_stop b
lab_node_stop a

# ---- the pinhole: opened, published, used, renewed
LAB_NODE_ARGS="--portmap pcp --portmap-lifetime $LIFETIME" lab_node_start a a || lab_finish
check "a opens an IPv6 pinhole by PCP ([$A6]:$A_PORT)" wait_for 15 has_pinhole
check_eq "the pinhole was asked of the IPv6 default gateway" fe80::1 "$(pm6 a "p.get('gateway')")"
check_eq "lease as asked" "$LIFETIME" "$(pm6 a "p.get('lease_s')")"
check "the router has the pinhole (miniupnpd's nft chain)" router_pinhole
check "miniupnpd logged the PCP MAP for a's address" \
	grep -q "PCP MAP: added mapping UDP $A_PORT->$A6:$A_PORT" "$MLOG"
check "trellis netcheck shows the pinhole" \
	bash -c "'$TRELLIS_CLI' --socket '$(lab_node_sock a)' netcheck | grep -F 'IPv6 pinhole: [$A6]:$A_PORT (PCP at fe80::1: '"
lab_node_start b b || lab_finish
check "the control server gives b the pinhole as a's first endpoint" \
	wait_for 15 b_first_endpoint_is "[$A6]:$A_PORT"
log "b's endpoints for a: $(b_endpoints_of_a)"
check "b reaches a" ping_until b "$A_IP" 15
check "b's path to a goes direct to the pinhole" wait_for 20 direct_via b a "[$A6]:$A_PORT"
check "a's path to b goes direct over IPv6" wait_for 10 direct_via a b "[$B6]:$A_PORT"
tr_node b ping a >"$LAB_TMP/ping-on.txt" 2>&1
cat "$LAB_TMP/ping-on.txt" >&2
check "trellis ping b -> a answers via [$A6]:$A_PORT" \
	grep -qF "pong from a via [$A6]:$A_PORT in" "$LAB_TMP/ping-on.txt"
# Two renewals of a 6 s lifetime: the pinhole has outlived its first lifetime.
check "the pinhole is renewed" wait_for 20 renewed 2
check "the renewed pinhole is still in the router" router_pinhole
check "and still carries traffic" ping_all b "$A_IP" 5
check "b's path to a is still direct to it" direct_via b a "[$A6]:$A_PORT"
lab_node_stop b
lab_node_stop a
# miniupnpd 2.3.1 loses a pinhole's nonce when it renews it and then refuses its deletion
# (docs/architecture.md): trellisd says so, and the pinhole ends with its lifetime.
check "a logged that the gateway refused to delete the renewed pinhole" \
	grep -q 'portmap: the gateway did not delete the IPv6 pinhole (PCP result 2)' \
	"$LAB_TMP/node-a.log"
check "the renewed pinhole is gone at the end of its lifetime" wait_for 20 router_clean

# ---- deletion at exit: a lease of 7200 s, never renewed, so only trellisd's deletion
# removes it
LAB_NODE_ARGS="--portmap pcp" lab_node_start a a || lab_finish
check "a opens the pinhole again (lease 7200 s)" wait_for 15 has_pinhole
check "the router has it" router_pinhole
lab_node_stop a
check "stopping trellisd deletes the pinhole at once (not expiry)" wait_for 3 router_clean
check "a logged the deletion" grep -q 'portmap: IPv6 pinhole deleted' "$LAB_TMP/node-a.log"

lab_finish
