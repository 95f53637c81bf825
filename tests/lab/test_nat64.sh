#!/usr/bin/env bash
# NAT64 (issue 10): a node on an IPv6-only site whose router translates to IPv4 (Debian's
# tayga, stateless NAT64, behind a NAT44 masquerade) and runs a DNS64 resolver (Debian's
# unbound, "dns64 iterator", answering ipv4only.arpa from a local zone: RFC 7050).
#   - n6 finds the prefix (trellis netcheck --json, status --json), with no IPv4 route;
#   - it joins the control server, which has only an IPv4 address (dial through the prefix);
#   - it reaches p4, a node with only an IPv4 address, through the tunnel, and the path is
#     direct through the NAT64: n6 pings p4's IPv4 candidate at its synthesized IPv6
#     address; p4 answers at n6's STUN-reflexive address (the NAT44's, STUN also through
#     the NAT64), which the NAT44 lets in once n6's own packets opened it (it keeps the port,
#     so the mapping STUN saw is the one disco uses). Asserted: both ends show "direct" with
#     those endpoints, and WireGuard data from p4 crosses the router's WAN;
#   - a dual-stack relay (r46, a standalone trellis-relay with an IPv4 and an IPv6 address,
#     first in the relay map's one region, before the control server's IPv4-only embedded
#     one) is reached natively over IPv6: n6's STUN arrives at r46 from n6's own IPv6
#     address and none from the NAT44 (counters on r46, and on r6 at tayga's TUN device);
#     n6's relay connection is to r46's IPv6 address; status says which address and family
#     each STUN probe used (r46 "ipv6", ctl "nat64"), as does `trellis netcheck`. The
#     IPv4-only ctl is still STUN-probed through the NAT64, whose IPv4 mapping p4 needs;
#   - negative control: n7 behind the same router, whose resolver is an unbound without the
#     dns64 module, detects no prefix and cannot reach the control server;
#   - PREF64 (RFC 8781): r6 then sends a router advertisement on n7's LAN with the prefix in
#     a PREF64 option (radvd 2.19 in Debian 12 has no nat64prefix: 2.20 added it, so a few
#     lines of python on a raw ICMPv6 socket send it). n7 finds the prefix from the RA alone
#     (status/netcheck "source": "ra", n6's says "dns64"), joins the control server and goes
#     direct to p4 through the NAT64; a lifetime of 0 withdraws the prefix, one not
#     refreshed expires (8 s, the shortest RFC 8781 can say), and n7's link going down
#     drops it at once.
#
#   lab internet 192.0.2.0/24: ctl .1:8080 (relay, STUN 3478), p4 .14, both IPv4 only;
#   relay r46 .3:8080 and [2001:db8:1::3]:8080 (STUN 3478 on both); router r6 .66 and
#   2001:db8:1::42 (NAT44 for tayga's pool 198.19.64.0/24); LANs n6 2001:db8:6::2/64 and
#   n7 2001:db8:7::2/64; NAT64 prefix 2001:db8:64:64::/64, a network-specific one: the
#   well-known 64:ff9b::/96 must not carry non-global IPv4 (RFC 6052 §3.1), and tayga
#   refuses it for every lab address; a /64 also puts the u octet to the test.
LAB_TIMEOUT=${LAB_TIMEOUT:-300}
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/natlab.sh"
lab_init
lab_require_control_plane
lab_require nft
lab_require_pkgs "tayga unbound" tayga unbound
[[ -c /dev/net/tun ]] || lab_skip "no /dev/net/tun for tayga"

PREFIX=2001:db8:64:64::/64
# ipv4only.arpa's addresses and the lab's under the prefix (RFC 6052 §2.2, /64).
WKA6="2001:db8:64:64:c0:0:aa00:0 2001:db8:64:64:c0:0:ab00:0"
CTL6=2001:db8:64:64:c0:2:100:0
P46=2001:db8:64:64:c0:2:e00:0

lab_internet
lab_public_host ctl 1
lab_public_host p4 14
lab_public_host r6 66
lab_public_host r46 3
# IPv4 only on the lab internet but for r6 and r46: the NAT64 is the only way from the site
# to ctl and p4; r46 is reached over IPv6 too.
for n in ctl p4; do
	ip -n "$(ns_name "$n")" -6 addr flush dev eth0 scope global
done
for lan in 2001:db8:6::/64 2001:db8:7::/64; do
	nsx r46 ip -6 route add "$lan" via 2001:db8:1::42
done
lab_forwarding r6
lab_ns n6
lab_ns n7
lab_veth r6 eth1 n6 eth0
lab_veth r6 eth2 n7 eth0
lab_addr r6 eth1 2001:db8:6::1/64
lab_addr r6 eth2 2001:db8:7::1/64
lab_addr n6 eth0 2001:db8:6::2/64
lab_addr n7 eth0 2001:db8:7::2/64
nsx n6 ip -6 route add default via 2001:db8:6::1
nsx n7 ip -6 route add default via 2001:db8:7::1

# tayga: IPv6 hosts get an address of the pool, which the NAT44 hides behind r6's.
mkdir -p "$LAB_TMP/tayga"
printf '%s\n' "tun-device nat64" "ipv4-addr 198.19.64.1" "ipv6-addr 2001:db8:6::64" \
	"prefix $PREFIX" "dynamic-pool 198.19.64.0/24" "data-dir $LAB_TMP/tayga" \
	>"$LAB_TMP/tayga.conf"
check "tayga makes its TUN device" nsx r6 tayga --mktun -c "$LAB_TMP/tayga.conf"
nsx r6 ip link set nat64 up
nsx r6 ip route add 198.19.64.0/24 dev nat64
nsx r6 ip route add "$PREFIX" dev nat64
ip netns exec "$(ns_name r6)" tayga -c "$LAB_TMP/tayga.conf" -n >"$LAB_TMP/tayga.log" 2>&1 &
LAB_PIDS+=($!)
LAB_EXTRA_LOGS+=("tayga=$LAB_TMP/tayga.log")
natlab_nat r6 easy # the NAT44: tayga's pool goes out as 192.0.2.66

# r46's STUN by where it comes from: n6's own IPv6 address (native) or the NAT44's IPv4
# one (through tayga); and on r6, what tayga hands over towards r46's STUN port.
nsx r46 nft -f - <<'EOF_NFT'
table inet stun_from {
	counter native6 {}
	counter nat64 {}
	chain pre {
		type filter hook prerouting priority raw - 10;
		ip6 saddr 2001:db8:6::2 udp dport 3478 counter name native6
		ip saddr 192.0.2.66 udp dport 3478 counter name nat64
	}
}
EOF_NFT
nsx r6 nft -f - <<'EOF_NFT'
table inet tayga_out {
	counter to_r46 {}
	chain from_tayga {
		type filter hook forward priority filter - 10;
		iifname "nat64" ip daddr 192.0.2.3 udp dport 3478 counter name to_r46
	}
}
EOF_NFT
stun_counted() { nsx "$1" nft list counter inet "$2" "$3" | awk '$1 == "packets" { print $2 }'; }
RELAY=${TRELLIS_RELAY:-$TRELLIS_BUILD/src/relay/trellis-relay}
ip netns exec "$(ns_name r46)" "$RELAY" --listen '[::]:8080' --stun-port 3478 \
	>"$LAB_TMP/relay-r46.log" 2>&1 &
LAB_PIDS+=($!)
LAB_EXTRA_LOGS+=("trellis-relay r46=$LAB_TMP/relay-r46.log")
check "the dual-stack relay r46 listens" wait_listen r46 8080

# Two resolvers on r6 with ipv4only.arpa in a zone the iterator reads as if from upstream
# (an auth-zone for-upstream: local-data would be answered before the dns64 module saw
# it): 2001:db8:6::1 with DNS64, 2001:db8:7::1 without. No route out: nothing else answers.
printf '%s\n' '$ORIGIN ipv4only.arpa.' '$TTL 3600' \
	'@ IN SOA localhost. nobody.invalid. 1 3600 1200 604800 10800' '@ IN NS localhost.' \
	'@ IN A 192.0.0.170' '@ IN A 192.0.0.171' >"$LAB_TMP/ipv4only.zone"
unbound_start()
{
	local name=$1 addr=$2 modules=$3
	printf '%s\n' "server:" "interface: $addr" "port: 53" \
		"access-control: 2001:db8::/32 allow" 'username: ""' 'chroot: ""' \
		"directory: \"$LAB_TMP\"" "pidfile: \"$LAB_TMP/unbound-$name.pid\"" \
		"use-syslog: no" 'logfile: ""' "do-daemonize: no" "module-config: \"$modules\"" \
		"dns64-prefix: $PREFIX" "auth-zone:" 'name: "ipv4only.arpa"' \
		"zonefile: \"$LAB_TMP/ipv4only.zone\"" "for-downstream: no" "for-upstream: yes" \
		"fallback-enabled: no" >"$LAB_TMP/unbound-$name.conf"
	ip netns exec "$(ns_name r6)" unbound -d -c "$LAB_TMP/unbound-$name.conf" \
		>"$LAB_TMP/unbound-$name.log" 2>&1 &
	LAB_PIDS+=($!)
	LAB_EXTRA_LOGS+=("unbound $name=$LAB_TMP/unbound-$name.log")
}
unbound_start dns64 2001:db8:6::1 "dns64 iterator"
unbound_start plain 2001:db8:7::1 "iterator"
lab_resolver n6 2001:db8:6::1
lab_resolver n7 2001:db8:7::1
# AAAA records only (getent ahostsv6 would map the A records into ::ffff:0:0/96).
aaaa()
{
	nsx "$1" python3 -c '
import socket, sys
try:
    print(" ".join(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], None, socket.AF_INET6)})))
except socket.gaierror:
    print("none")' ipv4only.arpa
}
resolves_to() { [[ $(aaaa "$1") == "$2" ]]; }
udp53() { nsx r6 ss -Hlun "sport = :53" | grep -q "$1"; }
both_resolvers() { udp53 '2001:db8:6::1' && udp53 '2001:db8:7::1'; }
check "unbound listens with DNS64 and without" wait_for 20 both_resolvers
check "the DNS64 synthesizes ipv4only.arpa under the prefix" wait_for 10 resolves_to n6 "$WKA6"
check "the resolver without dns64 has no AAAA for it" resolves_to n7 none
check "the NAT64 carries n6's ping to the IPv4-only server" nsx n6 ping -c 1 -W 5 "$CTL6"
check_not "n6 has no IPv4 route" nsx n6 ping -c 1 -W 1 192.0.2.1

lab_control_start ctl 192.0.2.1 8080 || lab_finish
# One region: r46 first (the relay connections go to it), ctl's embedded relay second
# (STUN only: IPv4 only, so n6 reaches it through the NAT64 and learns its mapping).
cat >"$LAB_TMP/map.json" <<'EOF_MAP'
{"regions": [
 {"id": 1, "code": "default", "nodes": [
  {"name": "r46", "ipv4": "192.0.2.3", "ipv6": "2001:db8:1::3", "relay_port": 8080, "stun_port": 3478},
  {"name": "ctl", "ipv4": "192.0.2.1", "relay_port": 8080, "stun_port": 3478}]}]}
EOF_MAP
check "relaymap set: r46 (dual-stack) and ctl (IPv4 only) in one region" \
	ctl relaymap set "$LAB_TMP/map.json"
KEY=$(lab_authkey --reusable)
lab_node_join p4 p4 "$KEY"
lab_node_start n6 n6
lab_node_start n7 n7

# The detection runs on a worker at start: wait until it reported.
nat64_of()
{
	tr_node "$1" netcheck --json | python3 -c '
import json, sys
n = json.load(sys.stdin)["nat64"]
print("pending" if n is None else "%s %s" % (n["prefix"], n["active"]))'
}
nat64_is() { [[ $(nat64_of "$1") == "$2" ]]; }
status_prefix_is() { [[ $(status_eval "$1" "j['netcheck']['nat64']['prefix']") == "$2" ]]; }
check "n6 detects the prefix, active (no IPv4 route): netcheck --json" \
	wait_for 20 nat64_is n6 "$PREFIX True"
check "status --json has it too" status_prefix_is n6 "$PREFIX"
check "negative control: n7, without DNS64, detects none" wait_for 20 nat64_is n7 "None False"

check "n6 joins the IPv4-only control server through the NAT64" lab_node_up n6 "$KEY"
n7_up() { timeout 8 "$TRELLIS_CLI" --socket "$(lab_node_sock n7)" up \
	--login-server "$LAB_CONTROL_URL" --auth-key "$KEY" --hostname n7; }
check_not "n7 cannot join it (nothing reaches IPv4 there)" n7_up
check "n6 sees p4" wait_for 15 peers_are n6 p4
check "p4 sees n6" wait_for 15 peers_are p4 n6
IP4[n6]=$(node_ip n6 4)
IP4[p4]=$(node_ip p4 4)
check "n6's home relay is connected" wait_for 20 home_connected n6
# STUN through the NAT64 (to ctl): its reflexive address is the NAT44's, port kept.
reflexive_is() { [[ $(status_eval n6 "j['netcheck'].get('ipv4')") == "$1" ]]; }
check "n6's STUN-reflexive address is r6's NAT44 (192.0.2.66:41641)" \
	wait_for 30 reflexive_is 192.0.2.66:41641

# The dual-stack relay natively: STUN, the connection, and what status says of both.
stun_via()
{
	status_eval "$1" "' '.join('%s=%s@%s' % (p['node'], p['via'], p['address'])
		for r in j['relay']['regions'] for p in (r.get('stun') or []))"
}
stun_via_is() { [[ $(stun_via "$1") == "$2" ]]; }
check "n6's status: STUN to r46 natively over IPv6, to ctl through the NAT64" \
	wait_for 30 stun_via_is n6 "r46=ipv6@[2001:db8:1::3]:3478 ctl=nat64@[$CTL6]:3478"
check_num "r46 counted STUN from n6's own IPv6 address" \
	"$(stun_counted r46 stun_from native6)" -gt 0
check_num "r46 counted no STUN through the NAT44 (tayga)" "$(stun_counted r46 stun_from nat64)" -eq 0
check_num "tayga handed r6 no STUN for r46" "$(stun_counted r6 tayga_out to_r46)" -eq 0
relay_addr_is() { [[ $(status_eval "$1" "j['relay']['regions'][0].get('address')") == "$2" ]]; }
check "n6's relay connection is to r46's IPv6 address" \
	wait_for 20 relay_addr_is n6 "[2001:db8:1::3]:8080"
# Peers of r46's established connections (with a state filter, ss leaves out the state).
r46_sees() { nsx r46 ss -Htn state established '( sport = :8080 )' | awk '{ print $4 }' | grep -qF "$1"; }
check "r46 sees n6's connection from its own IPv6 address" r46_sees "[2001:db8:6::2]:"
check_not "and none from the NAT44 (through tayga; IPv4-mapped on its dual-stack socket)" \
	r46_sees "192.0.2.66]:"
netcheck_says() { tr_node n6 netcheck | grep -qF "$1"; }
check "trellis netcheck says so" \
	netcheck_says "STUN r46 at [2001:db8:1::3]:3478 over IPv6"
check "and how ctl was reached" \
	netcheck_says "STUN ctl at [$CTL6]:3478 to its IPv4 address through the NAT64"

natlab_count r6 wg_from_p4 192.0.2.14 41641
check "n6 pings p4 through the tunnel" ping_all n6 "${IP4[p4]}" 5
check "p4 pings n6 through the tunnel" ping_all p4 "${IP4[n6]}" 5
endpoint_of() { status_eval "$1" "[p.get('endpoint') for p in j['peers'] if p['hostname'] == '$2'][0]"; }
direct_at() { path_with_traffic "$1" "$2" direct && [[ $(endpoint_of "$1" "$2") == "$3" ]]; }
check "n6 -> p4 is direct, at p4's IPv4 candidate through the prefix" \
	wait_for 20 direct_at n6 p4 "[$P46]:41641"
check "p4 -> n6 is direct, at the NAT64's IPv4 address" \
	wait_for 20 direct_at p4 n6 192.0.2.66:41641
check "ping over the direct path" ping_all n6 "${IP4[p4]}" 5
check_num "p4's WireGuard data crossed r6's WAN (not the relay)" \
	"$(natlab_counted r6 wg_from_p4)" -gt 0

# ra_send IFACE SCALED: one RA from r6 on IFACE with nothing but a PREF64 option for $PREFIX
# (PLC 1: /64) with a lifetime of SCALED units of 8 s; router lifetime 0, so n7 takes no
# default route from it. The kernel fills in the ICMPv6 checksum of a raw ICMPv6 socket.
ra_send()
{
	nsx r6 python3 - "$1" "$2" <<'EOF_PY'
import socket, struct, sys
ifname, scaled = sys.argv[1], int(sys.argv[2])
prefix = socket.inet_pton(socket.AF_INET6, "2001:db8:64:64::")
ra = struct.pack("!BBHBBHII", 134, 0, 0, 0, 0, 0, 0, 0)
pref64 = struct.pack("!BBH", 38, 2, scaled << 3 | 1) + prefix[:12]
idx = socket.if_nametoindex(ifname)
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
s.sendto(ra + pref64, ("ff02::1", 0, 0, idx))
EOF_PY
}
nat64_source_is()
{
	[[ $(status_eval "$1" "'%s %s' % (j['netcheck']['nat64']['source'],
		(j['netcheck']['nat64']['ra'] or {}).get('interface'))") == "$2" ]]
}
check "r6 sends a router advertisement with PREF64 $PREFIX (600 s) on n7's LAN" ra_send eth2 75
check "n7 finds the prefix from the RA alone (its resolver has no DNS64), active" \
	wait_for 10 nat64_is n7 "$PREFIX True"
check "n7's status says where from: source ra, on eth0" nat64_source_is n7 "ra eth0"
check "n6's status says source dns64" nat64_source_is n6 "dns64 None"
n7_up_ra() { timeout 20 "$TRELLIS_CLI" --socket "$(lab_node_sock n7)" up \
	--login-server "$LAB_CONTROL_URL" --auth-key "$KEY" --hostname n7; }
check "n7 joins the IPv4-only control server through the RA's prefix" n7_up_ra
check "n7 sees p4" wait_for 15 peers_are n7 "n6 p4"
check "n7 pings p4 through the tunnel" ping_all n7 "${IP4[p4]}" 5
check "n7 -> p4 is direct, at p4's IPv4 candidate through the RA's prefix" \
	wait_for 20 direct_at n7 p4 "[$P46]:41641"
check "r6 withdraws the prefix (lifetime 0)" ra_send eth2 0
check "n7 drops it at once" wait_for 5 nat64_is n7 "None False"
check "r6 advertises it for 8 s (scaled lifetime 1) and then no more" ra_send eth2 1
check "n7 has it again" wait_for 5 nat64_is n7 "$PREFIX True"
check "unrefreshed, it expires after its lifetime" wait_for 15 nat64_is n7 "None False"
check "r6 advertises it again (600 s)" ra_send eth2 75
check "n7 has it once more" wait_for 5 nat64_is n7 "$PREFIX True"
nsx n7 ip link set eth0 down
check "n7's link goes down: the prefix goes with it, long before its lifetime" \
	wait_for 10 nat64_is n7 "None False"
nsx n7 ip link set eth0 up

lab_node_stop n6
lab_node_stop n7
lab_node_stop p4
lab_finish
