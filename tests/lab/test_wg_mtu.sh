#!/usr/bin/env bash
# WireGuard padding and MTU as the kernel and wireguard-go do them (issue 15).
#   - padding never takes a datagram past the tunnel MTU + overhead: over an IPv6 underlay
#     sized exactly for the tunnel, whose receiver drops every fragment, full-size pings
#     and TCP arrive, and not one fragment is seen. MTU 1420 (the default, underlay 1500)
#     and 1340 (not a multiple of 16, as in wg-in-wg; underlay 1420), the tunnel MTU set
#     with `ip link` after the daemon started, so trellisd must follow it.
#   - any MTU the kernel accepts works: 1280, 1500, 9000 and 65000 besides 1420 (jumbo
#     frames need larger packet buffers), set with `trellisd --mtu` at start or raised with
#     `ip link` after it; full-size pings with DF and a TCP run whose bytes must arrive.
#   - an MTU beyond what one UDP datagram carries is set back to the largest that works
#     (65475), and the log says so.
#   - trellisd <-> trellisd and trellisd <-> wireguard-go.
#
#   A (ns a) 2001:db8:15::1  ==== veth, MTU = tunnel MTU + 80 ====  B (ns b) 2001:db8:15::2
#   tunnel: A 100.64.15.1 fd7a:115c:a1e0:15::1                     B 100.64.15.2 ...::2
LAB_TIMEOUT=${LAB_TIMEOUT:-540} # the watchdog: 240 s seen under load
source "$(dirname "$0")/lib.sh"
lab_init
lab_require iperf3 ss nft
lab_require_trellisd

lab_ns a
lab_ns b
lab_veth a eth0 b eth0
lab_addr a eth0 2001:db8:15::1/64
lab_addr b eth0 2001:db8:15::2/64
lab_key a
lab_key b
# B drops IPv6 fragments before reassembly (as many Internet paths do), and counts them.
nsx b nft -f - <<'NFT' || fail "nft: fragment filter"
table ip6 nofrag {
	chain pre {
		type filter hook prerouting priority -500; policy accept;
		exthdr frag exists counter drop
	}
}
NFT
link_mtu() { ip -n "$(ns_name "$1")" -o link show "$2" | sed -nE 's/.* mtu ([0-9]+) .*/\1/p'; }
# wait_for_mtu NS IFACE MTU: bounded wait for the interface MTU to become MTU.
wait_for_mtu()
{
	local n
	for ((n = 0; n < 50; n++)); do
		[[ $(link_mtu "$1" "$2") == "$3" ]] && return 0
		sleep 0.1
	done
	return 1
}
frags_dropped() { nsx b nft list table ip6 nofrag | sed -nE 's/.*counter packets ([0-9]+).*/\1/p'; }
run=0

# one_case IMPL_A IMPL_B MTU [PINGS] [HOW_A]: HOW_A = link (default: the MTU is set with
# `ip link` after start on both sides) or flag (A is a trellisd started with --mtu MTU).
one_case()
{
	local impl_a=$1 impl_b=$2 mtu=$3 pings=${4:-20} how_a=${5:-link} ia ib name pa pb f0 got
	local json port args=()
	run=$((run + 1))
	ia=$(lab_iface "a$run")
	ib=$(lab_iface "b$run")
	[[ $how_a == flag && $(lab_trellisd_impl) == trellisd ]] || how_a=link
	[[ $how_a == flag ]] && args=(--mtu "$mtu")
	name="$impl_a(a$([[ $how_a == flag ]] && echo ", --mtu"))<->$impl_b(b) mtu $mtu"
	log "=== $name"
	local fails_before=$LAB_FAIL
	ip -n "$(ns_name a)" link set eth0 mtu $((mtu + 80))
	ip -n "$(ns_name b)" link set eth0 mtu $((mtu + 80))
	lab_wg_start a "$impl_a" "$ia" "${args[@]}" || return
	lab_wg_start b "$impl_b" "$ib" || return
	pa=$(pub_of a)
	pb=$(pub_of b)
	nsx a wg set "$ia" private-key "$(key_file a)" listen-port 51820 \
		peer "$pb" allowed-ips 100.64.15.2/32,fd7a:115c:a1e0:15::2/128 endpoint "[2001:db8:15::2]:51821"
	nsx b wg set "$ib" private-key "$(key_file b)" listen-port 51821 \
		peer "$pa" allowed-ips 100.64.15.1/32,fd7a:115c:a1e0:15::1/128 endpoint "[2001:db8:15::1]:51820"
	if [[ $how_a == flag ]]; then
		check_eq "$name: --mtu set the interface MTU" "$mtu" "$(link_mtu a "$ia")"
		lab_addr a "$ia" 100.64.15.1/24 fd7a:115c:a1e0:15::1/64
		ip -n "$(ns_name a)" link set "$ia" up
	else
		lab_wg_up a "$ia" 100.64.15.1/24 fd7a:115c:a1e0:15::1/64
	fi
	lab_wg_up b "$ib" 100.64.15.2/24 fd7a:115c:a1e0:15::2/64
	# After start: the daemons must follow a change of the interface MTU.
	[[ $how_a == link ]] && ip -n "$(ns_name a)" link set "$ia" mtu "$mtu"
	ip -n "$(ns_name b)" link set "$ib" mtu "$mtu"
	check "$name: tunnel up" ping_until a 100.64.15.2 10
	f0=$(frags_dropped)
	check "$name: $pings full-size IPv4 pings a->b (${mtu} bytes, DF)" \
		ping_all a 100.64.15.2 "$pings" -s $((mtu - 28)) -M do
	check "$name: $pings full-size IPv4 pings b->a" \
		ping_all b 100.64.15.1 "$pings" -s $((mtu - 28)) -M do
	check "$name: $pings full-size IPv6 pings a->b" \
		ping_all a fd7a:115c:a1e0:15::2 "$pings" -s $((mtu - 48)) -M do
	port=$((5300 + run)) json="$LAB_TMP/iperf-$run.json"
	if iperf_server b 100.64.15.2 "$port"; then
		nsx_timeout 15 a iperf3 -c 100.64.15.2 -p "$port" -t 2 -J >"$json" 2>&1
		got=$(json_get "$json" "int(j['end']['sum_received']['bytes'])" 2>/dev/null || echo 0)
		log "iperf3 $name: $got bytes received in 2 s"
		check_num "$name: iperf3 TCP 2 s a->b delivers > 1 MB" "$got" -gt 1000000
	else
		fail "$name: iperf3 server listens"
	fi
	iperf_server_wait
	check_eq "$name: no IPv6 fragment reached b" "$f0" "$(frags_dropped)"
	if [[ $impl_a == trellisd && $(lab_trellisd_impl) == trellisd && $mtu == 65000 ]]; then
		# Beyond one UDP datagram: set back, and said so.
		ip -n "$(ns_name a)" link set "$ia" mtu 65535
		check "$name: MTU 65535 is set back to 65475" wait_for_mtu a "$ia" 65475
		check "$name: the log says why the MTU was set back" \
			grep -q "MTU 65535 is too large" "${LAB_WG_LOG[$ia]}"
	fi
	((LAB_FAIL > fails_before)) && lab_dump_logs "$ia" "$ib"
	lab_wg_stop "$ia"
	lab_wg_stop "$ib"
}

# The filter works: a datagram larger than the underlay MTU is fragmented, and dropped.
f0=$(frags_dropped)
nsx a ping -6 -n -q -c 1 -W 1 -s 1600 2001:db8:15::2 >/dev/null 2>&1
check "negative control: an oversized IPv6 ping is fragmented and dropped at b" \
	test "$(frags_dropped)" -gt "$f0"

for mtu in 1420 1340; do
	one_case trellisd trellisd "$mtu"
	one_case trellisd wggo "$mtu"
done
# Any MTU: A's trellisd starts with --mtu (B raises its MTU after start), or raises it
# after start itself against wireguard-go. 1420 is the first loop's.
for mtu in 1280 1500 9000 65000; do
	one_case trellisd trellisd "$mtu" 5 flag
	one_case trellisd wggo "$mtu" 5 link
done

lab_finish
