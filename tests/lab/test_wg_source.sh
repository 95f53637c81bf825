#!/usr/bin/env bash
# Replies leave from the address the peer sent to (issue 15): the "sticky" source address
# of the kernel's WireGuard and wireguard-go (IP_PKTINFO / IPV6_RECVPKTINFO on receive, the
# same source on send). B is multihomed; A, behind a stateful firewall that accepts from B
# only what answers its own flows, talks to one of B's addresses. For each of B's addresses:
#   the tunnel comes up through A's firewall and B-initiated traffic flows too; then, the
#   firewall off (a reply from another address would now get through and A would roam to
#   it), `wg show endpoints` on A still shows the address A chose.
# Then the stale case: the address B was answering from is removed from B; B's next packet
# must leave from an address that still exists (the tunnel goes on, A roams to it).
#
#   A (ns a) eth0 198.51.100.1/24 2001:db8:16::1/64
#     ==== veth ====
#   B (ns b) eth0 198.51.100.2/24 + .3/24, 2001:db8:16::2/64 + ::3/64;
#            eth1 192.0.2.99/32 2001:db8:99::99/128 (an address on another interface)
source "$(dirname "$0")/lib.sh"
lab_init
lab_require nft conntrack
lab_require_trellisd

lab_ns a
lab_ns b
lab_veth a eth0 b eth0
lab_addr a eth0 198.51.100.1/24 2001:db8:16::1/64
lab_addr b eth0 198.51.100.2/24 198.51.100.3/24 2001:db8:16::2/64 2001:db8:16::3/64
# No dummy driver here: a veth pair inside B stands for the other interface.
ip -n "$(ns_name b)" link add eth1 type veth peer name eth1p
ip -n "$(ns_name b)" link set eth1 up
ip -n "$(ns_name b)" link set eth1p up
lab_addr b eth1 192.0.2.99/32 2001:db8:99::99/128
nsx a ip route add 192.0.2.99/32 via 198.51.100.2
nsx a ip -6 route add 2001:db8:99::99/128 via 2001:db8:16::2
lab_key a
lab_key b
PORT_A=51820
PORT_B=51821

# A's stateful firewall: from B's port, only replies to flows A started. The flows of
# earlier cases are forgotten first: a reply from B's other address must not match one.
firewall_on()
{
	nsx a conntrack -F 2>/dev/null
	nsx a nft -f - <<-NFT
		table inet sticky {
			chain in {
				type filter hook input priority 0; policy accept;
				udp sport $PORT_B ct state established counter accept
				udp sport $PORT_B counter drop
			}
		}
	NFT
}
firewall_off() { nsx a nft delete table inet sticky 2>/dev/null; }
fw_dropped() { nsx a nft list table inet sticky | sed -nE 's/.*counter packets ([0-9]+).*drop.*/\1/p'; }

run=0
# one_case IMPL_B ADDR [stale]: A (wireguard-go) talks to B (IMPL_B) at ADDR.
one_case()
{
	local impl_b=$1 addr=$2 stale=${3:-} ia ib name pa pb ep fam
	run=$((run + 1))
	ia=$(lab_iface "a$run")
	ib=$(lab_iface "b$run")
	fam=4 ep="$addr:$PORT_B"
	[[ $addr == *:* ]] && fam=6 ep="[$addr]:$PORT_B"
	name="$impl_b(b) at $addr"
	log "=== $name"
	local fails_before=$LAB_FAIL
	lab_wg_start a wggo "$ia" || return
	lab_wg_start b "$impl_b" "$ib" || return
	pa=$(pub_of a)
	pb=$(pub_of b)
	firewall_on
	nsx a wg set "$ia" private-key "$(key_file a)" listen-port $PORT_A \
		peer "$pb" allowed-ips 100.64.16.2/32 endpoint "$ep"
	nsx b wg set "$ib" private-key "$(key_file b)" listen-port $PORT_B \
		peer "$pa" allowed-ips 100.64.16.1/32
	lab_wg_up a "$ia" 100.64.16.1/24
	lab_wg_up b "$ib" 100.64.16.2/24
	check "$name: the tunnel comes up through A's stateful firewall" ping_until a 100.64.16.2 10
	check "$name: B-initiated pings arrive" ping_all b 100.64.16.1 5
	check "$name: A-initiated pings arrive" ping_all a 100.64.16.2 5
	check_eq "$name: A's firewall dropped nothing from B" 0 "$(fw_dropped)"
	firewall_off
	# Up to 10 s: after failed handshakes, A's next attempt may be 5 s (REKEY_TIMEOUT) away.
	check "$name: without the firewall, the tunnel carries A's pings" ping_until a 100.64.16.2 10
	check_eq "$name: A's endpoint for B did not move" "$ep" "$(wg_get "$ia" endpoints "$pb")"
	if [[ -n $stale ]]; then
		if [[ $fam == 4 ]]; then
			ip -n "$(ns_name b)" addr del "$addr/24" dev eth0
		else
			ip -n "$(ns_name b)" addr del "$addr/64" dev eth0
		fi
		check "$name, removed from B: B's next packets leave from an address it has" \
			ping_until b 100.64.16.1 15
		check "$name, removed from B: A roamed to another address of B" \
			bash -c "[[ '$(wg_get "$ia" endpoints "$pb")' != '$ep' ]]"
		lab_addr b eth0 "$addr/$([[ $fam == 4 ]] && echo 24 || echo 64)"
	fi
	((LAB_FAIL > fails_before)) && lab_dump_logs "$ia" "$ib"
	lab_wg_stop "$ia"
	lab_wg_stop "$ib"
	if [[ -n $stale && $(lab_trellisd_impl) == trellisd ]]; then
		# The exit statistics: the removed source was refused and left out, not kept.
		check "$name, removed from B: B counted packets resent without the stale source" \
			grep -qE "stale source address [1-9]" "${LAB_WG_LOG[$ib]}"
	fi
}

for impl in trellisd wggo; do
	one_case "$impl" 198.51.100.2
	one_case "$impl" 198.51.100.3
	one_case "$impl" 2001:db8:16::2
	one_case "$impl" 2001:db8:16::3
	one_case "$impl" 192.0.2.99
	one_case "$impl" 2001:db8:99::99
done
# The stale source: wireguard-go keeps sending from a removed address, so only trellisd.
one_case trellisd 198.51.100.3 stale
one_case trellisd 2001:db8:16::3 stale

lab_finish
