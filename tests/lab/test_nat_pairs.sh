#!/usr/bin/env bash
# NAT traversal by pairs of sites (issue 10): for each pair, the path it ends on (direct,
# or relayed with the reason each side gives) and that the tunnel's packets take it.
# Kinds of site (node N of a kind is KIND+N, e.g. e1, e2):
#   p  public address
#   e  easy NAT (masquerade: port preserved; conntrack lets in only answers)
#   h  hard NAT (a random port per flow: the mapping varies by destination)
#   d  double NAT: a home router (easy) behind a carrier-grade NAT (easy), two layers of
#      conntrack to open
#   b  a firewall that forwards no UDP (behind an easy NAT)
#   l  two nodes behind one easy NAT, on two LANs of its router (only as the pair l-l)
#   m  port-mapped: a NAT that maps each flow to a random port (hard) and runs Debian's
#      miniupnpd, which maps the node's port (PCP, NAT-PMP or UPnP-IGD)
# NAT_PAIRS names the pairs, "A-B" by kind (a kind with itself takes nodes 1 and 2);
# "all" is every pair of kinds (make lab-full); the default (make check) is the pairs no
# other test covers: easy<->hard, the double NAT with an easy and a hard NAT, and
# hard->port-mapped (direct only through the mapping). Every kind runs in make check:
# these, test_nat (public, easy, UDP blocked, the LAN pair) and test_portmap.
# Expected (the rules of the issue, as this lab's NATs behave):
#   direct   at least one side public, or both sides easy or double (call-me-maybe
#            through the relay: both probe at once and each NAT opens for the other), or
#            the LAN pair (over the LAN: a LAN address), or a port-mapped side with any
#            kind that allows UDP: the peer reaches it at its mapped port (the endpoint
#            and B's edge count it exactly, when the peer is behind a NAT that lets in
#            only answers; a public or port-mapped peer may also answer the pings that
#            the port-mapped side's own flows carry, through their random ports). Over
#            IPv4, except public<->public: both have IPv6 too and disco prefers IPv6
#            paths (issue 10), so p-p goes direct over IPv6
#   relayed  UDP blocked on a side: "udp-blocked-here" there, "peer-udp-blocked" (or, from
#            a hard NAT, "hard-nat-here") on the other; a hard NAT with an easy or double
#            one: the hard side's mapping towards the peer is not the one STUN saw and the
#            easy side lets in only what answers its own flows ("hard-nat-here" /
#            "peer-hard-nat"); hard<->hard: "hard-nat-both-sides" (birthday probing
#            rarely meets with ports at random: bench/nat.sh). A port-mapped side with
#            a UDP-blocked one says "peer-udp-blocked": its STUN mappings vary by
#            destination, but it holds a mapping that gives peers a fixed endpoint, so it
#            is no hard NAT
# A port-mapped node: STUN sees its mapping vary, yet it does not report a hard NAT (its
# peers see mapping_varies false), and no birthday probing runs between it and its peer.
# Each pair: A pings B in the background while the paths settle; then A sends 20 pings, all
# answered, and a counter at B's edge (its outermost router, or B itself) of WireGuard data
# arriving from A's public address (IPv6 for p-p) shows all 20 for a direct pair and none
# for a relayed one. A second STUN server (r2) lets the nodes see whether their mapping varies.
#
#   lab internet 192.0.2.0/24: ctl .1, r2 .3; pN .1N; routers reN .2N, rhN .3N, cgN .4N,
#   rbN .5N, rl .60, rmN .7N, coturn st .8 and .9. LANs 198.18.X.0/24 with X the router's
#   last octet; rdN (home router of dN) 198.19.4N.2 behind cgN, its LAN 198.18.4N.0/24;
#   l1 198.18.61.2, l2 198.18.62.2.
LAB_TIMEOUT=${LAB_TIMEOUT:-540}
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/natlab.sh"
lab_init
lab_require_control_plane
lab_require nft
"$TRELLIS_CONTROL" --help 2>&1 | grep -q -- --no-relay ||
	lab_skip "this trellis-control has no embedded relay"

ALL_PAIRS="p-p p-e p-h p-d p-b p-m e-e e-h e-d e-b e-m h-h h-d h-b h-m d-d d-b d-m b-b m-b m-m
	l-l"
NAT_PAIRS=${NAT_PAIRS:-e-h d-e d-h h-m}
[[ $NAT_PAIRS == all ]] && NAT_PAIRS=$ALL_PAIRS
# A port-mapped site needs miniupnpd, and coturn for its STUN.
if [[ $NAT_PAIRS == *m* ]]; then
	lab_require miniupnpd turnserver
fi

# expect KIND_A KIND_B: "direct" (over IPv4), "direct6" (over IPv6), or the relay reasons
# "A's B's".
expect()
{
	case "$1$2" in
	b?) echo "udp-blocked-here $(expect_b "$2")" ;;
	?b) echo "$(expect_b "$1") udp-blocked-here" ;;
	pp) echo direct6 ;;
	p? | ?p | ee | ed | de | dd | ll | ?m | m?) echo direct ;;
	hh) echo "hard-nat-both-sides hard-nat-both-sides" ;;
	h?) echo "hard-nat-here peer-hard-nat" ;;
	?h) echo "peer-hard-nat hard-nat-here" ;;
	esac
}
# What a side says of a UDP-blocked peer: a hard NAT names its own first (either would do).
expect_b()
{
	case $1 in
	b) echo udp-blocked-here ;;
	h) echo hard-nat-here ;;
	*) echo peer-udp-blocked ;;
	esac
}

# direct_at NAME PEER ADDR: NAME's direct path to PEER is ADDR (any port; IPv6 in brackets),
# or exactly ADDR:PORT.
direct_at()
{
	local ep
	ep=$(peer_field "$1" "$2" endpoint)
	[[ ${ep%:*} == "$3" || $ep == "$3" ]]
}
# mapped_path A B: A reaches B (port-mapped) only through B's mapping, so that is its
# endpoint exactly and what B's edge counts: A's own NAT lets in only answers (see above).
mapped_path() { [[ ${NODE_KIND[$2]} == m && ${NODE_KIND[$1]} != [pm] ]]; }

PAIRS=()
declare -A WANT=() NODE_KIND=()
for pair in $NAT_PAIRS; do
	ka=${pair%-*} kb=${pair#*-}
	if [[ $pair != "$ka-$kb" || ! ($ka$kb =~ ^[pehdbm]{2}$ || $ka$kb == ll) ]]; then
		echo "bad NAT_PAIRS entry '$pair' (want A-B, kinds p e h d b m, or l-l)"
		exit 1
	fi
	a=${ka}1 b=${kb}1
	[[ $ka == "$kb" ]] && b=${kb}2
	PAIRS+=("$a $b")
	WANT[$a.$b]=$(expect "$ka" "$kb")
	NODE_KIND[$a]=$ka NODE_KIND[$b]=$kb
done
NODES=$(printf '%s\n' "${!NODE_KIND[@]}" | sort | tr '\n' ' ')
log "pairs: ${PAIRS[*]/ /->}; nodes: $NODES"

# shellcheck disable=SC2086 # a list of names
natlab_tailnet $NODES
# ready NAME "PEERS": NAME sees exactly those peers and its home relay is connected.
ready()
{
	[[ $(status_eval "$1" "' '.join(sorted(p['hostname'] for p in j['peers'])) + ' ' + [r['state'] for r in j['relay']['regions'] if r['home']][0]") == "$2 connected" ]]
}
for n in $NODES; do
	others=$(printf '%s\n' $NODES | grep -vx "$n" | tr '\n' ' ' | sed 's/ $//')
	check "$n sees its peers, its home relay connected" wait_for 60 ready "$n" "$others"
done

# ---- a port-mapped node is no hard NAT: STUN sees its mapping vary by destination (its
# router maps each flow to a random port), but it holds a mapping (natlab_tailnet waited for
# it), so it reports no varying mapping and its peers see none: checked before any traffic,
# so that a hard peer cannot have started birthday probing on a stale flag.
# mapped_unhard M: M's STUN round saw its mapping vary and it does not count itself hard.
mapped_unhard()
{
	[[ $(status_eval "$1" "' '.join(str(j['netcheck'].get(k)) for k in ('measured', 'mapping_varies_by_dest', 'hard_nat'))") == "True True False" ]]
}
# sees_unhard N M: N's netmap says M's NAT does not map per destination.
sees_unhard() { [[ $(peer_field "$1" "$2" mapping_varies) == False ]]; }
# birthday_attempts A B: A's birthday attempts towards B.
birthday_attempts()
{
	status_eval "$1" "[(p.get('disco') or {}).get('birthday', {}).get('attempts', 0) for p in j['peers'] if p['hostname'] == '$2'][0]"
}
for m in $NODES; do
	[[ ${NODE_KIND[$m]} == m ]] || continue
	check "$m: STUN sees its mapping vary, but with its port mapping it is no hard NAT" \
		wait_for 30 mapped_unhard "$m"
	for n in $NODES; do
		[[ $n == "$m" ]] && continue
		check "$n sees $m as no hard NAT" wait_for 30 sees_unhard "$n" "$m"
	done
done

# ---- every pair at once: A pings B (5/s) while the paths settle, so that the waits overlap
declare -A PINGER=()
for pair in "${PAIRS[@]}"; do
	set -- $pair
	# Until killed (the watchdog bounds it): a pair idle for 45 s loses its direct path.
	# ip netns exec, not nsx: $! must be ping itself, not a subshell (see iperf_server).
	ip netns exec "$(ns_name "$1")" ping -n -q -i 0.2 -w "$LAB_TIMEOUT" "${IP4[$2]}" \
		>/dev/null 2>&1 &
	PINGER[$1.$2]=$!
	LAB_PIDS+=($!)
done
for pair in "${PAIRS[@]}"; do
	set -- $pair
	want=${WANT[$1.$2]}
	# Without its traffic A's side of the pair stays idle, and the waits below mean nothing.
	check "$1 pings $2 in the background" kill -0 "${PINGER[$1.$2]}"
	if [[ $want == direct* ]]; then
		check "$1 -> $2 goes direct" wait_for 60 path_is "$1" "$2" direct
		ttd=$(status_eval "$1" "[p['disco'].get('time_to_direct_ms') for p in j['peers'] if p['hostname'] == '$2'][0]")
		log "$1 -> $2: time to direct measured by trellisd: ${ttd:-?} ms"
		check "$2 -> $1 goes direct" wait_for 60 path_with_traffic "$2" "$1" direct
		at=${NATLAB_DIRECT[$2]}
		# p-p: the IPv4 path may answer first; the IPv6 one takes over at its pong.
		[[ $want == direct6 ]] && at="[${NATLAB_PUB6[$2]}]"
		mapped_path "$1" "$2" && at=${NATLAB_MAPPED[$2]}
		if ! check "$1 reaches $2 at $at" wait_for 10 direct_at "$1" "$2" "$at"; then
			log "$1's endpoint for $2: $(peer_field "$1" "$2" endpoint)"
		fi
	else
		read -r ra rb <<<"$want"
		# Probing takes its rounds (one every 5 s) before it gives a reason.
		check "$1 -> $2 relayed: $ra" wait_for 60 relayed_because "$1" "$2" "$ra"
		nsx "$2" ping -c 1 -W 1 "${IP4[$1]}" >/dev/null 2>&1
		check "$2 -> $1 relayed: $rb" wait_for 60 relayed_because "$2" "$1" "$rb"
	fi
done
# With a port-mapped side, neither end tried birthday probing (it needs two hard NATs).
for pair in "${PAIRS[@]}"; do
	set -- $pair
	[[ ${NODE_KIND[$1]}${NODE_KIND[$2]} == *m* ]] || continue
	check_eq "$1 -> $2: no birthday probing" 0 "$(birthday_attempts "$1" "$2")"
	check_eq "$2 -> $1: no birthday probing" 0 "$(birthday_attempts "$2" "$1")"
done
for pair in "${PAIRS[@]}"; do
	set -- $pair
	kill "${PINGER[$1.$2]}" 2>/dev/null
	wait "${PINGER[$1.$2]}" 2>/dev/null
	lab_forget "${PINGER[$1.$2]}"
done

# ---- the tunnel's packets take that path: 20 pings, all answered; B's edge counts the
# WireGuard data from A's public address (the pairs at once again)
# src_of A B: A's source address that B's edge counts (of the family the pair goes direct
# over), and for a mapped path the mapped port it goes to.
src_of()
{
	if [[ ${WANT[$1.$2]} == direct6 ]]; then
		echo "${NATLAB_PUB6[$1]}"
	else
		echo "${NATLAB_PUB[$1]}"
	fi
}
for pair in "${PAIRS[@]}"; do
	set -- $pair
	tag="c_$1_$2"
	dport=
	mapped_path "$1" "$2" && dport=${NATLAB_MAPPED[$2]##*:}
	natlab_count "${NATLAB_EDGE[$2]}" "$tag" "$(src_of "$1" "$2")" $dport
	# A deadline, as ping_all has it: a late answer is not a lost one.
	ip netns exec "$(ns_name "$1")" ping -n -c 20 -i 0.2 -w 14 "${IP4[$2]}" \
		>"$LAB_TMP/burst-$1-$2.txt" 2>&1 &
	PINGER[$1.$2]=$!
	LAB_PIDS+=($!)
done
for pair in "${PAIRS[@]}"; do
	set -- $pair
	wait "${PINGER[$1.$2]}"
	lab_forget "${PINGER[$1.$2]}"
	check "$1 -> $2: 20 pings, all answered" ping_answered 20 <"$LAB_TMP/burst-$1-$2.txt"
	got=$(natlab_counted "${NATLAB_EDGE[$2]}" "c_$1_$2")
	src=$(src_of "$1" "$2")
	mapped_path "$1" "$2" && src="$src to port ${NATLAB_MAPPED[$2]##*:}"
	log "$1 -> $2: $got WireGuard data packets from $src at ${NATLAB_EDGE[$2]}"
	if [[ ${WANT[$1.$2]} == direct* ]]; then
		check_num "$1 -> $2: the pings went direct (data from $src at ${NATLAB_EDGE[$2]})" \
			"$got" -ge 20
	else
		check_eq "$1 -> $2: none went direct" 0 "$got"
	fi
done

for n in $NODES; do
	lab_node_stop "$n"
done
lab_control_stop TERM
lab_finish
