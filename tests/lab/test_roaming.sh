#!/usr/bin/env bash
# Roaming: A's outer address changes while an iperf3 transfer runs to B. The transfer must
# go on after the change and B must report A's new endpoint. Two ways to change it:
#   move: A itself moves to a new address in a new subnet (old address deleted);
#   nat:  R source-NATs A to 203.0.113.1:40000, then rebinds it to 203.0.113.77:50000
#         (A is unaware; only A's flow is removed from conntrack).
# wireguard-go (0.0.20220316) cannot do "move": it keeps sending from its cached, deleted
# source address (ENETUNREACH, only EINVAL clears the cache), so it roams only in "nat".
#
#   A 192.0.2.2 --(moves to 198.51.100.2)-- R 192.0.2.1 + 198.51.100.1 | 203.0.113.1/30 -- B 203.0.113.2/30
#   (B's link is a /30 so that the rebound NAT address 203.0.113.77 is routed via R)
source "$(dirname "$0")/lib.sh"
lab_init
lab_require iperf3 ss nft conntrack
lab_require_trellisd

IMPL_A=${IMPL_A:-trellisd}
IMPL_B=${IMPL_B:-trellisd}

lab_ns a
lab_ns r
lab_ns b
lab_veth a eth0 r eth0
lab_veth r eth1 b eth0
lab_forwarding r
lab_addr r eth0 192.0.2.1/24 198.51.100.1/24
lab_addr r eth1 203.0.113.1/30
lab_addr a eth0 192.0.2.2/24
lab_addr b eth0 203.0.113.2/30
nsx a ip route add default via 192.0.2.1
nsx b ip route add default via 203.0.113.1

roam()
{
	local impl_a=$1 impl_b=$2 tag=$3 mode=$4 ia ib name pa pb new_ep
	ia=$(lab_iface "a$tag")
	ib=$(lab_iface "b$tag")
	name="$impl_a(a, roams by $mode)->$impl_b(b)"
	log "=== $name"
	if [[ $mode == move && $impl_a == trellisd && $(lab_trellisd_impl) == wggo ]]; then
		log "skip: wireguard-go stands in for trellisd and cannot roam by moving (see top)"
		return
	fi
	local fails_before=$LAB_FAIL
	lab_key a
	lab_key b
	pa=$(pub_of a)
	pb=$(pub_of b)
	local old_ep=192.0.2.2:41641
	if [[ $mode == nat ]]; then
		nsx r nft -f - <<-EOF
			table ip roam {
				chain post {
					type nat hook postrouting priority srcnat;
					oifname "eth1" ip saddr 192.0.2.2 udp sport 41641 snat to 203.0.113.1:40000
				}
			}
		EOF
		old_ep=203.0.113.1:40000
	fi
	lab_wg_start a "$impl_a" "$ia" || return
	lab_wg_start b "$impl_b" "$ib" || return
	nsx a wg set "$ia" private-key "$(key_file a)" listen-port 41641 \
		peer "$pb" allowed-ips 100.64.0.2/32 endpoint 203.0.113.2:41642
	nsx b wg set "$ib" private-key "$(key_file b)" listen-port 41642 \
		peer "$pa" allowed-ips 100.64.0.1/32
	lab_wg_up a "$ia" 100.64.0.1/24
	lab_wg_up b "$ib" 100.64.0.2/24

	check "$name: tunnel up" ping_until a 100.64.0.2 10
	check_eq "$name: b sees a at its first address" "$old_ep" "$(wg_get "$ib" endpoints "$pa")"

	local json="$LAB_TMP/iperf-roam-$tag.json" port=$((5300 + tag))
	if ! iperf_server b 100.64.0.2 "$port"; then
		fail "$name: iperf3 server listens"
		return
	fi
	# 6 s transfer, reported per 0.5 s; the move happens ~2 s in.
	timeout 20 ip netns exec "$(ns_name a)" iperf3 -c 100.64.0.2 -p "$port" -t 6 -i 0.5 -J >"$json" 2>&1 &
	local client=$!
	LAB_PIDS+=("$client")
	sleep 2
	local t_move=$SECONDS
	if [[ $mode == move ]]; then
		log "moving a: 192.0.2.2 -> 198.51.100.2"
		nsx a ip addr add 198.51.100.2/24 dev eth0
		nsx a ip route replace default via 198.51.100.1
		nsx a ip addr del 192.0.2.2/24 dev eth0
		new_ep=198.51.100.2:41641
	else
		log "rebinding a's NAT mapping: now seen as 203.0.113.77:50000"
		nsx r nft -f - <<-EOF
			flush chain ip roam post
			add rule ip roam post oifname "eth1" ip saddr 192.0.2.2 udp sport 41641 snat to 203.0.113.77:50000
		EOF
		# Only A's own flow: a reply from B racing in must not take the new mapping.
		nsx r conntrack -D -p udp -s 192.0.2.2 >/dev/null 2>&1
		new_ep=203.0.113.77:50000
	fi
	wait "$client"
	local rc=$?
	lab_forget "$client"
	iperf_server_wait
	check_eq "$name: iperf3 completes across the move" 0 "$rc"

	# Bytes the server received in the intervals starting 3 s on (the move is at ~2 s):
	# the transfer went on from the new address.
	local after total
	after=$(json_get "$LAB_TMP/iperf-server-$port.json" \
		"sum(int(i['sum']['bytes']) for i in j['intervals'] if i['sum']['start'] >= 2.9)" \
		2>/dev/null || echo 0)
	total=$(json_get "$json" "int(j['end']['sum_received']['bytes'])" 2>/dev/null || echo 0)
	log "iperf3: $total bytes received in total, $after of them after the move"
	check_num "$name: > 1 MB received after the move" "$after" -gt 1000000
	check_num "$name: > 2 MB received in total" "$total" -gt 2000000
	check_eq "$name: b shows a's new endpoint" "$new_ep" "$(wg_get "$ib" endpoints "$pa")"
	check "$name: b->a ping over the new path" ping_all b 100.64.0.1 3

	((LAB_FAIL > fails_before)) && lab_dump_logs "$ia" "$ib"
	check "$name: a still running" lab_wg_alive "$ia"
	check "$name: b still running" lab_wg_alive "$ib"
	lab_wg_stop "$ia"
	lab_wg_stop "$ib"
	# Back to the first address for the next case.
	if [[ $mode == move ]]; then
		nsx a ip addr add 192.0.2.2/24 dev eth0
		nsx a ip route replace default via 192.0.2.1
		nsx a ip addr del 198.51.100.2/24 dev eth0
	else
		nsx r nft delete table ip roam
		nsx r conntrack -F >/dev/null 2>&1
	fi
	: "$t_move"
}

roam trellisd trellisd 1 move
roam trellisd wggo 2 move
roam trellisd trellisd 3 nat
roam wggo trellisd 4 nat

lab_finish
