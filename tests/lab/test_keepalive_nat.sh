#!/usr/bin/env bash
# Persistent keepalive keeps a NAT mapping open. A sits behind a masquerading router whose
# conntrack forgets idle UDP flows after 2 s; B is public and has no endpoint for A.
#   keepalive 1: after 5 s idle, B can still reach A.
#   keepalive 0 (negative control): after 5 s idle, B cannot reach A — proves the test can
#   fail, i.e. the NAT really expires and the positive case is the keepalive's doing.
#
#   A 198.18.0.2 -- 198.18.0.1 R (masquerade) 203.0.113.1 -- 203.0.113.2 B
source "$(dirname "$0")/lib.sh"
lab_init
lab_require nft conntrack
lab_require_trellisd

lab_ns a
lab_ns r
lab_ns b
lab_veth a eth0 r eth0
lab_veth r eth1 b eth0
lab_forwarding r
lab_addr a eth0 198.18.0.2/24
lab_addr r eth0 198.18.0.1/24
lab_addr r eth1 203.0.113.1/24
lab_addr b eth0 203.0.113.2/24
nsx a ip route add default via 198.18.0.1
# B has no route to the LAN: only the NAT makes A reachable.
nsx r nft -f - <<'EOF'
table ip nat {
	chain post {
		type nat hook postrouting priority srcnat;
		oifname "eth1" masquerade
	}
}
EOF
# The nat table loaded conntrack in R's namespace; its UDP timeouts are per namespace.
nsx r sysctl -qw net.netfilter.nf_conntrack_udp_timeout=2 net.netfilter.nf_conntrack_udp_timeout_stream=2
check_eq "router conntrack UDP timeout is 2 s" 2 "$(nsx r sysctl -n net.netfilter.nf_conntrack_udp_timeout)"
check_eq "router conntrack UDP stream timeout is 2 s" 2 \
	"$(nsx r sysctl -n net.netfilter.nf_conntrack_udp_timeout_stream)"

# nat_case IMPL_A IMPL_B KEEPALIVE TAG: prints nothing; asserts B->A after 5 s idle works iff
# KEEPALIVE > 0.
nat_case()
{
	local impl_a=$1 impl_b=$2 ka=$3 tag=$4 ia ib pa pb name
	ia=$(lab_iface "a$tag")
	ib=$(lab_iface "b$tag")
	name="$impl_a(a, behind NAT)<->$impl_b(b) keepalive=$ka"
	log "=== $name"
	local fails_before=$LAB_FAIL
	lab_key a
	lab_key b
	pa=$(pub_of a)
	pb=$(pub_of b)
	nsx r conntrack -F >/dev/null 2>&1
	lab_wg_start a "$impl_a" "$ia" || return
	lab_wg_start b "$impl_b" "$ib" || return
	nsx a wg set "$ia" private-key "$(key_file a)" listen-port 41641 \
		peer "$pb" allowed-ips 100.64.0.2/32 endpoint 203.0.113.2:41642 persistent-keepalive "$ka"
	nsx b wg set "$ib" private-key "$(key_file b)" listen-port 41642 peer "$pa" allowed-ips 100.64.0.1/32
	lab_wg_up a "$ia" 100.64.0.1/24
	lab_wg_up b "$ib" 100.64.0.2/24

	check_eq "$name: a's keepalive configured" "$([[ $ka == 0 ]] && echo off || echo "$ka")" \
		"$(wg_get "$ia" persistent-keepalive "$pb")"
	check "$name: a->b through the NAT" ping_until a 100.64.0.2 10
	check "$name: b->a while the mapping is fresh" ping_all b 100.64.0.1 2
	local ep
	ep=$(wg_get "$ib" endpoints "$pa")
	check "$name: b sees a at the router's public address ($ep)" test "${ep%:*}" = 203.0.113.1

	log "idle for 5 s (conntrack UDP timeout 2 s)"
	sleep 5
	if [[ $ka == 0 ]]; then
		check_not "$name: b->a after 5 s idle fails (mapping expired)" \
			nsx b ping -n -c 3 -i 0.3 -W 1 100.64.0.1
	else
		check "$name: b->a after 5 s idle works (keepalive held the mapping)" \
			ping_all b 100.64.0.1 3
		check "$name: router still has a's UDP mapping" \
			bash -c "ip netns exec $(ns_name r) conntrack -L -p udp --orig-src 198.18.0.2 2>/dev/null | grep -q 41641"
	fi

	((LAB_FAIL > fails_before)) && lab_dump_logs "$ia" "$ib"
	check "$name: a still running" lab_wg_alive "$ia"
	check "$name: b still running" lab_wg_alive "$ib"
	lab_wg_stop "$ia"
	lab_wg_stop "$ib"
}

nat_case trellisd trellisd 1 1
nat_case trellisd trellisd 0 2
nat_case trellisd wggo 1 3
nat_case wggo trellisd 0 4

lab_finish
