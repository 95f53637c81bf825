# shellcheck shell=bash disable=SC2034 # its globals are read by the scripts that source it
# The NAT lab's sites and path checks (issue 10), shared by test_nat, test_nat_pairs,
# test_nat64, test_relay_path, bench/nat* and bench/relay_path. Source it after lib.sh.
# The checks "with traffic" read the global associative array IP4 (node name ->
# tailnet IPv4 address).

# natlab_nat ROUTER easy|hard [PORTS] [OIF]: masquerade out of OIF (default eth0). easy
# keeps the port when it is free; hard takes a random one per flow (from PORTS, e.g.
# "40192-40447", a CGNAT-like port block, else any). Like a home router, it takes
# nothing unsolicited for itself: such a datagram left in conntrack would hold the port
# its host's own flow to the same peer wants, and the mapping would no longer be the one
# STUN saw. What comes in is only what answers a flow from inside (conntrack).
natlab_nat()
{
	local rule="masquerade" oif=${4:-eth0}
	if [[ $2 == hard ]]; then
		rule="meta l4proto udp masquerade ${3:+to :$3} fully-random
		oifname \"$oif\" masquerade"
	fi
	nsx "$1" nft -f - <<EOF
table ip nat {
	chain post {
		type nat hook postrouting priority srcnat;
		oifname "$oif" $rule
	}
}
table inet host {
	chain input {
		type filter hook input priority filter;
		iifname "$oif" ct state new drop
	}
}
EOF
}

# natlab_stun5780: coturn on st at 192.0.2.8 and .9 (lab_stun5780), once.
natlab_stun5780() { [[ -e /run/netns/$(ns_name st) ]] || lab_stun5780 st 8 9; }

# natlab_portmapped ROUTER: a NAT that maps each flow of its LAN to a random port (hard),
# whose miniupnpd (Debian's, nftables backend) grants NAT-PMP, PCP and UPnP-IGD mappings:
# a mapped port is the one way in that does not depend on the peer's own flows. Its own
# STUN probes (to st) are let in. miniupnpd starts in the background (its STUN probes take
# seconds): natlab_portmapped_wait ROUTER waits until it forwards.
declare -A NATLAB_MINIUPNPD=()
natlab_portmapped()
{
	local r=$1
	natlab_stun5780
	# miniupnpd adds its rules to the ruleset's chains; forward's policy is drop, so the
	# WAN reaches the LAN only through them or as an answer.
	lab_miniupnpd_ruleset "$r" udp-random stun-from=192.0.2.8,192.0.2.9
	lab_miniupnpd_stun "$r" 192.0.2.8 120 "$(printf '%02x' "${#NATLAB_MINIUPNPD[@]}")"
	NATLAB_MINIUPNPD[$r]=$MINIUPNPD_PID
}
natlab_portmapped_wait()
{
	# Up to about 9 s of STUN probes; it exits if they fail.
	check "$1's miniupnpd forwards ports (external address from STUN)" \
		wait_for 30 natlab_portmapped_ready "$1"
}
natlab_portmapped_ready()
{
	local log=$LAB_TMP/miniupnpd-$1.log
	kill -0 "${NATLAB_MINIUPNPD[$1]}" && grep -q 'Port forwarding is now enabled' "$log" &&
		grep -q 'Listening for NAT-PMP/PCP traffic' "$log"
}

# natlab_block_udp ROUTER: a firewall that forwards no UDP at all.
natlab_block_udp()
{
	nsx "$1" nft -f - <<'EOF'
table inet fw {
	chain forward {
		type filter hook forward priority filter;
		meta l4proto udp counter drop
	}
}
EOF
}

# natlab_lan SHORT ROUTER IFACE NET: host SHORT at NET.2/24 behind ROUTER's IFACE (NET.1),
# NET being the first three octets ("198.18.5").
natlab_lan()
{
	local short=$1 router=$2 ifc=$3 net=$4
	lab_ns "$short"
	lab_veth "$short" eth0 "$router" "$ifc"
	lab_addr "$router" "$ifc" "$net.1/24"
	lab_addr "$short" eth0 "$net.2/24"
	nsx "$short" ip route add default via "$net.1"
}

# natlab_two_regions: a second relay with STUN, r2 at 192.0.2.3, and a relay map of two
# regions (default: the control server's at 192.0.2.1, two: r2), so that nodes see
# whether their NAT's mapping varies by destination. Asserts both.
natlab_two_regions()
{
	local relay=${TRELLIS_RELAY:-$TRELLIS_BUILD/src/relay/trellis-relay}
	lab_public_host r2 3
	ip netns exec "$(ns_name r2)" "$relay" --listen 192.0.2.3:8080 --stun-port 3478 \
		>"$LAB_TMP/relay-r2.log" 2>&1 &
	LAB_PIDS+=($!)
	LAB_EXTRA_LOGS+=("trellis-relay r2=$LAB_TMP/relay-r2.log")
	check "a second relay with STUN (r2) listens" wait_listen r2 8080
	cat >"$LAB_TMP/map.json" <<'EOF'
{"regions": [
 {"id": 1, "code": "default", "nodes": [{"name": "ctl", "ipv4": "192.0.2.1", "relay_port": 8080, "stun_port": 3478}]},
 {"id": 2, "code": "two", "nodes": [{"name": "r2", "ipv4": "192.0.2.3", "relay_port": 8080, "stun_port": 3478}]}]}
EOF
	check "relaymap set: two regions" ctl relaymap set "$LAB_TMP/map.json"
}

# ---- what a node's status says about a peer

# path_of NAME PEER: "direct" or "relay:CODE" as NAME's status shows its path to PEER.
path_of()
{
	status_eval "$1" "[p['path'] + (':' + p['relay'] if p['path'] == 'relay' else '') for p in j['peers'] if p['hostname'] == '$2'][0]"
}
path_is() { [[ $(path_of "$1" "$2") == "$3" ]]; }
# relayed NAME PEER: through any region.
relayed() { [[ $(path_of "$1" "$2") == relay:* ]]; }
peer_field() { status_eval "$1" "[p.get('$3') for p in j['peers'] if p['hostname'] == '$2'][0]"; }
reason_is() { [[ $(peer_field "$1" "$2" relay_reason) == "$3" ]]; }
# relayed_because NAME PEER REASON: through a relay, for that reason (one status read).
relayed_because()
{
	[[ $(status_eval "$1" "[p['path'] + ' ' + str(p.get('relay_reason')) for p in j['peers'] if p['hostname'] == '$2'][0]") == "relay $3" ]]
}
home_connected()
{
	[[ $(status_eval "$1" "[r['state'] for r in j['relay']['regions'] if r['home']][0]") == connected ]]
}
# A path is chosen for traffic, and probing stops once a peer is idle (45 s): each look at
# the path or the reason comes with a ping.
path_with_traffic()
{
	nsx "$1" ping -c 1 -W 1 "${IP4[$2]}" >/dev/null 2>&1
	path_is "$@"
}
reason_with_traffic()
{
	nsx "$1" ping -c 1 -W 1 "${IP4[$2]}" >/dev/null 2>&1
	reason_is "$@"
}
ms_now() { date +%s%3N; }

# ---- WireGuard data on the wire

# natlab_count EDGE TAG SRC [DPORT]: a named counter in EDGE's namespace of the WireGuard
# transport data (message type 4: the first word of the UDP payload is 0x04000000) that
# arrives from SRC (IPv4 or IPv6: only that family counts), to UDP port DPORT if given,
# before any NAT or filter sees it. Disco and handshakes do not count: only packets of the
# tunnel that took the path.
# natlab_counted EDGE TAG prints the count.
natlab_count()
{
	local fam=ip
	[[ $3 == *:* ]] && fam=ip6
	nsx "$1" nft -f - <<EOF
table inet natlab_count {
	counter $2 {}
	chain pre {
		type filter hook prerouting priority raw - 10;
		$fam saddr $3 ${4:+udp dport $4} udp length > 12 @th,64,32 0x04000000 counter name "$2"
	}
}
EOF
}
natlab_counted()
{
	nsx "$1" nft list counter inet natlab_count "$2" | awk '$1 == "packets" { print $2 }'
}

# ---- sites by kind (test_nat_pairs, bench/nat_paths)

# natlab_site NODE: the namespace of NODE (KIND+N: p1, e2, ...) and what stands between it
# and the lab internet (made with lab_internet first), by kind:
#   p  public: 192.0.2.1N
#   e  easy NAT reN at 192.0.2.2N, LAN 198.18.2N.0/24
#   h  hard NAT rhN at 192.0.2.3N (a random port per flow), LAN 198.18.3N.0/24
#   d  double NAT: carrier-grade NAT cgN at 192.0.2.4N, its inside 198.19.4N.0/24 with the
#      home router rdN at .2, whose LAN is 198.18.4N.0/24; both easy
#   b  UDP blocked: rbN at 192.0.2.5N (easy NAT, forwards no UDP), LAN 198.18.5N.0/24
#   l  l1, l2 behind one easy NAT rl at 192.0.2.60, on its LANs 198.18.61/24 and .62/24
#   m  port-mapped: rmN at 192.0.2.7N, a hard NAT whose miniupnpd maps ports
#      (natlab_portmapped; coturn st at 192.0.2.8 and .9 for its STUN), LAN 198.18.7N.0/24
# Fills NATLAB_EDGE[NODE] (where its traffic enters from the lab internet), NATLAB_PUB[NODE]
# (its source address there), NATLAB_DIRECT[NODE] (where a direct peer reaches it: for the
# LAN pair its LAN address), NATLAB_PUB6[NODE] (a public node's IPv6 address,
# 2001:db8:1::N in hex: only the public sites have IPv6) and NATLAB_ROUTERS[NODE] (its NATs).
declare -A NATLAB_EDGE=() NATLAB_PUB=() NATLAB_PUB6=() NATLAB_DIRECT=() NATLAB_ROUTERS=()
declare -A NATLAB_BASE=([p]=10 [e]=20 [h]=30 [d]=40 [b]=50 [m]=70)
natlab_site()
{
	local name=$1 kind=${1:0:1} i=${1:1} oct r
	oct=$((NATLAB_BASE[$kind] + i))
	case $kind in
	p)
		lab_public_host "$name" "$oct"
		NATLAB_EDGE[$name]=$name NATLAB_PUB[$name]=192.0.2.$oct
		NATLAB_PUB6[$name]=2001:db8:1::$(printf '%x' "$oct")
		NATLAB_DIRECT[$name]=192.0.2.$oct NATLAB_ROUTERS[$name]=""
		return
		;;
	e | h | b | m)
		r=r$name
		lab_public_host "$r" "$oct"
		lab_forwarding "$r"
		natlab_lan "$name" "$r" eth1 "198.18.$oct"
		case $kind in
		m) natlab_portmapped "$r" ;;
		h) natlab_nat "$r" hard ;;
		*) natlab_nat "$r" easy ;;
		esac
		[[ $kind == b ]] && natlab_block_udp "$r"
		NATLAB_ROUTERS[$name]=$r
		;;
	d)
		r=cg$i
		lab_public_host "$r" "$oct"
		lab_forwarding "$r"
		lab_ns "rd$i"
		lab_forwarding "rd$i"
		lab_veth "rd$i" eth0 "$r" eth1
		lab_addr "$r" eth1 "198.19.$oct.1/24"
		lab_addr "rd$i" eth0 "198.19.$oct.2/24"
		nsx "rd$i" ip route add default via "198.19.$oct.1"
		natlab_lan "$name" "rd$i" eth1 "198.18.$oct"
		natlab_nat "$r" easy
		natlab_nat "rd$i" easy
		NATLAB_ROUTERS[$name]="$r rd$i"
		;;
	l)
		if [[ ! -e /run/netns/$(ns_name rl) ]]; then
			lab_public_host rl 60
			lab_forwarding rl
			natlab_nat rl easy
		fi
		oct=6$i
		natlab_lan "$name" rl "eth$i" "198.18.$oct"
		# From one LAN of the router to the other: no NAT between them.
		NATLAB_EDGE[$name]=rl NATLAB_PUB[$name]=198.18.$oct.2
		NATLAB_DIRECT[$name]=198.18.$oct.2 NATLAB_ROUTERS[$name]=rl
		return
		;;
	esac
	NATLAB_EDGE[$name]=$r NATLAB_PUB[$name]=192.0.2.$oct NATLAB_DIRECT[$name]=192.0.2.$oct
}

# natlab_tailnet NODE...: the lab internet, the control server (ctl at 192.0.2.1:8080, its
# relay and STUN) and a second region (natlab_two_regions), each node's site
# (natlab_site), the nodes joined; IP4[NODE] is each one's tailnet address. A node of a
# port-mapped site joins once its router forwards, and must map its port there:
# NATLAB_MAPPED[NODE] is the external endpoint it got. Must run in the test's main shell
# (it starts the daemons).
declare -A IP4=() NATLAB_MAPPED=()
natlab_tailnet()
{
	local n key
	lab_internet
	lab_public_host ctl 1
	for n in "$@"; do
		natlab_site "$n"
	done
	lab_control_start ctl 192.0.2.1 8080 || lab_finish
	natlab_two_regions
	for n in "$@"; do
		[[ $n == m* ]] && natlab_portmapped_wait "r$n"
	done
	key=$(lab_authkey --reusable)
	for n in "$@"; do
		lab_node_join "$n" "$n" "$key"
	done
	for n in "$@"; do
		check "$n has its tailnet address" wait_for 30 natlab_ip4_learn "$n"
		[[ $n == m* ]] || continue
		check "$n maps its port at r$n (${NATLAB_PUB[$n]})" wait_for 30 natlab_mapped_at "$n"
		NATLAB_MAPPED[$n]=$(status_eval "$n" "(j.get('portmap') or {}).get('external')")
		log "$n: mapped ${NATLAB_MAPPED[$n]} by $(status_eval "$n" "(j.get('portmap') or {}).get('active')")"
	done
}
# natlab_ip4_learn NODE: IP4[NODE] is NODE's tailnet address, once the CLI gives one. Asked
# again rather than once: lab-full on 2 Dec read six of them empty while a build relinked
# the CLI it runs, and every ping to those nodes went nowhere (ping "" exits at once), so
# their pairs looked like disco going direct on one side only.
natlab_ip4_learn()
{
	IP4[$1]=$(node_ip "$1" 4)
	[[ -n ${IP4[$1]} ]]
}
# natlab_mapped_at NODE: NODE's port mapping has an external endpoint at its router.
natlab_mapped_at()
{
	[[ $(status_eval "$1" "(j.get('portmap') or {}).get('external')") == "${NATLAB_PUB[$1]}":* ]]
}
