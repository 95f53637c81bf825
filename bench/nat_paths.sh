#!/usr/bin/env bash
# NAT traversal timings (issue 10) through the NAT lab's kinds of site (tests/lab/natlab.sh):
#   time to direct  for each pair of BENCH_PAIRS, BENCH_TRIALS times: both daemons are
#                   killed and started again (new disco keys), the routers' conntrack is
#                   flushed (fresh NAT mappings), and once both see each other online, A
#                   pings B every 200 ms: each end's own measure, from the first packet of
#                   the flow to the first trusted direct path (`disco.time_to_direct_ms`;
#                   polling status instead would time the status reads on a busy machine).
#                   The reference, in the same trial: the relay's time, from the flow's
#                   first packet to its first answer (the handshake and the ping through
#                   the relay: (icmp_seq - 1) x 200 ms + that ping's round trip)
#   failover        e1 <-> e2 (easy NAT on both sides), BENCH_FAILOVERS times: A pings B
#                   every 50 ms; UDP between the two NATs is cut: the longest silence
#                   between two replies (the stream moved to the relay); then UDP is back:
#                   the time until B's NAT sees WireGuard data from A's NAT again (direct)
# There is no reference implementation of NAT traversal on this machine (wireguard-go
# has none): the references are the relay's time above and the issue's targets.
# Writes the sections "## NAT time to direct" (BENCH_TRIALS > 0) and "## NAT failover"
# (BENCH_FAILOVERS > 0) into docs/benchmarks.md, replacing earlier ones.
#
# Environment:
#   TRELLIS_BENCH_BUILD  build dir (default <repo>/build, built by `make`)
#   BENCH_PAIRS          pairs of kinds (default "p-e e-e d-e h-p h-m l-l": every kind that
#                        can go direct; tests/lab/test_nat_pairs)
#   BENCH_TRIALS         trials per pair (default 7); BENCH_FAILOVERS (default 5)
#   BENCH_REF_TRELLISD   another trellisd (e.g. this tree with one change reverted): every
#                        time-to-direct trial then runs with both, in alternating order, and
#                        the table gets the reference's row under each pair (an A/B in one run)
#   BENCH_REF_LABEL      what the reference is, for the table (default "reference")
#   BENCH_OUT            output file (default <repo>/docs/benchmarks.md; "-" = stdout only)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
export TRELLIS_BUILD=${TRELLIS_BENCH_BUILD:-$REPO/build}
export TRELLISD=$TRELLIS_BUILD/src/node/trellisd
PAIRS=${BENCH_PAIRS:-p-e e-e d-e h-p h-m l-l}
TRIALS=${BENCH_TRIALS:-7}
FAILOVERS=${BENCH_FAILOVERS:-5}
OUT=${BENCH_OUT:-$REPO/docs/benchmarks.md}
REF=${BENCH_REF_TRELLISD:-}
REF_LABEL=${BENCH_REF_LABEL:-reference}
BUILDS=1
[[ -n $REF ]] && BUILDS=2
NPAIRS=$(wc -w <<<"$PAIRS")
export LAB_TIMEOUT=$((TRIALS * NPAIRS * BUILDS * 150 + FAILOVERS * 120 + 600))

# shellcheck source=../tests/lab/lib.sh
source "$REPO/tests/lab/lib.sh"
# shellcheck source=../tests/lab/natlab.sh
source "$REPO/tests/lab/natlab.sh"
lab_init
lab_require_control_plane
lab_require nft conntrack

# The nodes: A and B of each pair, and e1, e2 for the failovers.
if [[ $PAIRS == *m* ]]; then
	lab_require miniupnpd turnserver
fi
declare -A NODE_KIND=()
PAIR_NODES=()
for pair in $PAIRS; do
	ka=${pair%-*} kb=${pair#*-}
	a=${ka}1 b=${kb}1
	[[ $ka == "$kb" ]] && b=${kb}2
	PAIR_NODES+=("$a $b")
	NODE_KIND[$a]=1 NODE_KIND[$b]=1
done
((FAILOVERS > 0)) && NODE_KIND[e1]=1 NODE_KIND[e2]=1
NODES=$(printf '%s\n' "${!NODE_KIND[@]}" | sort | tr '\n' ' ')

# shellcheck disable=SC2086 # a list of names
natlab_tailnet $NODES

# sees NAME PEER: NAME has PEER online and its home relay connected.
sees()
{
	[[ $(status_eval "$1" "str([p['online'] for p in j['peers'] if p['hostname'] == '$2'][0]) + ' ' + [r['state'] for r in j['relay']['regions'] if r['home']][0]") == "True connected" ]]
}
ttd_of() { status_eval "$1" "int([p['disco'].get('time_to_direct_ms', -1) for p in j['peers'] if p['hostname'] == '$2'][0])"; }

declare -A R=()
R[load0]=$(cut -d' ' -f1-3 /proc/loadavg)

# trial A B N [ref]: R[A.B.N] and R[B.A.N] = each end's ms to direct (trellisd's measure),
# or "-"; R[relay.A.B.N] = ms from the flow's first packet to its first answer (through the
# relay). With "ref" both daemons run BENCH_REF_TRELLISD, and every key starts "ref.".
trial()
{
	local a=$1 b=$2 n=$3 k=${4:+ref.} end pinger r f=$LAB_TMP/trial-$1-$2-$3${4:+-ref}.txt
	local TRELLISD=$TRELLISD
	[[ -n $k ]] && TRELLISD=$REF
	R[$k$a.$b.$n]=- R[$k$b.$a.$n]=- R[${k}relay.$a.$b.$n]=-
	for r in "$a" "$b"; do
		lab_node_stop "$r" KILL
	done
	for r in ${NATLAB_ROUTERS[$a]} ${NATLAB_ROUTERS[$b]}; do
		nsx "$r" conntrack -F >/dev/null 2>&1
	done
	lab_node_start "$a" "$a" && lab_node_start "$b" "$b" || return
	if ! wait_for 60 sees "$a" "$b" || ! wait_for 60 sees "$b" "$a"; then
		log "$a -> $b trial $n${k:+ (reference)}: the peers did not come up"
		return
	fi
	# ip netns exec, not nsx: $! must be ping itself, not a subshell (see iperf_server).
	ip netns exec "$(ns_name "$a")" ping -n -i 0.2 -w 60 "${IP4[$b]}" >"$f" 2>&1 &
	pinger=$!
	LAB_PIDS+=("$pinger")
	end=$((SECONDS + 60))
	while ((SECONDS < end)); do
		R[$k$a.$b.$n]=$(ttd_of "$a" "$b")
		[[ ${R[$k$a.$b.$n]} =~ ^[0-9]+$ ]] && break
		sleep 0.2
	done
	# B has no measure when it trusted the path before A's flow reached it (its "-"): once
	# A has its own, B gets 10 s more, not the whole minute.
	[[ ${R[$k$a.$b.$n]} =~ ^[0-9]+$ ]] && end=$((SECONDS + 10 < end ? SECONDS + 10 : end))
	while ((SECONDS < end)); do
		R[$k$b.$a.$n]=$(ttd_of "$b" "$a")
		[[ ${R[$k$b.$a.$n]} =~ ^[0-9]+$ ]] && break
		sleep 0.2
	done
	kill "$pinger" 2>/dev/null
	wait "$pinger" 2>/dev/null
	lab_forget "$pinger"
	# Ping n leaves (n - 1) x 200 ms after the first: its answer's time since the flow began.
	R[${k}relay.$a.$b.$n]=$(awk -F'icmp_seq=| ttl=|time=| ms' \
		'/bytes from/ { printf "%d", ($2 - 1) * 200 + $4; exit }' "$f")
	[[ ${R[${k}relay.$a.$b.$n]} =~ ^[0-9]+$ ]] || R[${k}relay.$a.$b.$n]=-
	log "$a -> $b trial $n${k:+ (reference)}: $a ${R[$k$a.$b.$n]} ms, $b ${R[$k$b.$a.$n]} ms; first answer (relay) ${R[${k}relay.$a.$b.$n]} ms"
}
for ((n = 1; n <= TRIALS; n++)); do
	for pair in "${PAIR_NODES[@]}"; do
		# shellcheck disable=SC2086 # "A B"
		if [[ -z $REF ]]; then
			trial $pair "$n"
		elif ((n % 2)); then
			trial $pair "$n" ref
			trial $pair "$n"
		else
			trial $pair "$n"
			trial $pair "$n" ref
		fi
	done
done

# ---- failover and back, e1 -> e2
# With a reference, the last trial of e1 and e2 may have run it: this build from here on.
if [[ -n $REF ]] && ((FAILOVERS > 0)); then
	for r in e1 e2; do
		lab_node_stop "$r" KILL
		lab_node_start "$r" "$r"
	done
fi
((FAILOVERS > 0)) && natlab_count "${NATLAB_EDGE[e2]}" fo "${NATLAB_PUB[e1]}"
counted() { natlab_counted "${NATLAB_EDGE[e2]}" fo; }
failover()
{
	local n=$1 f=$LAB_TMP/failover-$1.txt pinger c0 t0 back
	R[fo.$n]=- R[back.$n]=-
	if ! wait_for 60 path_with_traffic e1 e2 direct; then
		log "failover $n: e1 -> e2 not direct to begin with"
		return
	fi
	ip netns exec "$(ns_name e1)" ping -n -D -i 0.05 -c 600 -W 1 "${IP4[e2]}" >"$f" 2>&1 &
	pinger=$!
	LAB_PIDS+=("$pinger")
	wait_for 15 grep -q 'icmp_seq=20 ' "$f"
	nsx "${NATLAB_EDGE[e1]}" nft -f - <<EOF
table inet cut {
	chain forward {
		type filter hook forward priority filter - 1;
		ip daddr ${NATLAB_PUB[e2]} meta l4proto udp drop
		ip saddr ${NATLAB_PUB[e2]} meta l4proto udp drop
	}
}
EOF
	local cut_at
	cut_at=$(grep -c 'icmp_seq=' "$f")
	# Through either region: the second one (natlab_two_regions) may be the home. (Waiting
	# for "relay:default" alone timed out whenever r2 was, and UDP came back 30 s late.)
	wait_for 30 relayed e1 e2 || log "failover $n: e1 -> e2 not on the relay after 30 s"
	wait_for 15 bash -c "(( \$(grep -c 'icmp_seq=' '$f') > $cut_at + 40 ))"
	c0=$(counted)
	t0=$(ms_now)
	nsx "${NATLAB_EDGE[e1]}" nft delete table inet cut
	while (($(ms_now) - t0 < 60000)); do
		if (($(counted) > c0)); then
			back=$(($(ms_now) - t0))
			break
		fi
		sleep 0.05
	done
	R[back.$n]=${back:--}
	kill -INT "$pinger" 2>/dev/null
	wait "$pinger" 2>/dev/null
	lab_forget "$pinger"
	# The longest silence between two replies ([unix time] of ping -D), in ms.
	R[fo.$n]=$(python3 - "$f" <<'PY'
import re, sys
ts = [float(t) for t in re.findall(r'^\[(\d+\.\d+)\] \d+ bytes from', open(sys.argv[1]).read(), re.M)]
print(int(max(b - a for a, b in zip(ts, ts[1:])) * 1000) if len(ts) > 1 else "-")
PY
)
	log "failover $n: longest silence ${R[fo.$n]} ms; back to direct ${R[back.$n]} ms after UDP returned"
}
for ((n = 1; n <= FAILOVERS; n++)); do
	failover "$n"
done
R[load1]=$(cut -d' ' -f1-3 /proc/loadavg)

# stats KEY COUNT: "ok/count | median | worst" of R[KEY.1..COUNT].
stats()
{
	local key=$1 count=$2 vals=() n v
	for ((n = 1; n <= count; n++)); do
		v=${R[$key.$n]:--}
		[[ $v =~ ^[0-9]+$ ]] && vals+=("$v")
	done
	if ((${#vals[@]})); then
		printf '%s\n' "${vals[@]}" | sort -n | awk -v c="$count" \
			'{ a[NR] = $1 } END { printf "%d/%d | %d | %d", NR, c, a[int((NR + 1) / 2)], a[NR] }'
	else
		printf '0/%d | - | -' "$count"
	fi
}
# each KEY COUNT: R[KEY.1..COUNT], comma-separated ("-" where none).
each()
{
	local n out=""
	for ((n = 1; n <= $2; n++)); do
		out+="${out:+, }$([[ ${R[$1.$n]:-} =~ ^[0-9]+$ ]] && echo "${R[$1.$n]}" || echo -)"
	done
	echo "$out"
}
declare -A NAME=([p]=public [e]="easy NAT" [h]="hard NAT" [d]="double NAT" [b]="UDP blocked"
	[l]="one NAT, two LANs" [m]="port-mapped")
# header SECTION: the section's heading and the run it comes from.
header()
{
	echo "## $1"
	echo
	echo "\`bench/nat_paths.sh\` (issue 10), $(date -u +'%Y-%m-%d %H:%M UTC'), commit $(git -C "$REPO" rev-parse --short HEAD)."
	echo "Build \`$TRELLIS_BUILD\`. Load average ${R[load0]} before, ${R[load1]} after: other"
	echo "builds and tests ran beside it (a busy machine), so the times are upper bounds."
	echo
}
if ((TRIALS > 0)); then {
	header "NAT time to direct"
	echo "$TRIALS trials a pair (both daemons restarted, conntrack flushed, A pings B every"
	echo "200 ms): A's own measure (\`disco.time_to_direct_ms\`), from the first packet of the"
	echo "flow to its first trusted direct path. Reference, in the same trials: the relay's"
	echo "time, from the same first packet to the first ping answered (the handshake and that"
	echo "ping through the relay). The issue's target: a median under 1 s. (Polling"
	echo "\`trellis status\` until both ends say direct measured the status reads instead:"
	echo "10-40 s on this machine.)"
	echo
	echo "| pair (A -> B) | direct | median ms | worst ms | relay: answered | median ms | worst ms | B's measure, each trial |"
	echo "|---|---:|---:|---:|---:|---:|---:|---|"
	for p in "${PAIR_NODES[@]}"; do
		set -- $p
		echo "| ${NAME[${1:0:1}]} -> ${NAME[${2:0:1}]} | $(stats "$1.$2" "$TRIALS") | $(stats "relay.$1.$2" "$TRIALS") | $(each "$2.$1" "$TRIALS") |"
		[[ -n $REF ]] &&
			echo "| ... $REF_LABEL | $(stats "ref.$1.$2" "$TRIALS") | $(stats "ref.relay.$1.$2" "$TRIALS") | $(each "ref.$2.$1" "$TRIALS") |"
	done
	echo
	echo "B's measure starts when B's side of the flow becomes active (A's first packet reaches"
	echo "it): \"-\" when B had the path trusted before that (it answered A's pings first)."
	if [[ -n $REF ]]; then
		echo
		echo "Each \"... $REF_LABEL\" row: the same trials with the reference build on both"
		echo "ends, alternating with this build trial by trial (odd trials the reference first)."
	fi
} >"$LAB_TMP/section.md"; fi
if ((FAILOVERS > 0)); then {
	header "NAT failover"
	echo "Easy NAT <-> easy NAT, $FAILOVERS times: pings every 50 ms; UDP between the"
	echo "NATs cut mid-stream (the longest silence between two replies, while the stream moves"
	echo "to the relay; reference: the issue's 2 s), then restored (until B's NAT sees"
	echo "WireGuard data from A's NAT again, polled every 50 ms)."
	echo
	echo "| | done | median ms | worst ms |"
	echo "|---|---:|---:|---:|"
	echo "| to the relay (longest silence) | $(stats fo "$FAILOVERS") |"
	echo "| back to direct | $(stats back "$FAILOVERS") |"
} >"$LAB_TMP/failover.md"; fi
for sec in "section.md:NAT time to direct" "failover.md:NAT failover"; do
	[[ -s $LAB_TMP/${sec%%:*} ]] || continue
	cat "$LAB_TMP/${sec%%:*}"
	if [[ $OUT != - ]]; then
		python3 "$REPO/bench/md_section.py" "$OUT" "$LAB_TMP/${sec%%:*}" "${sec#*:}"
	fi
done
for n in $NODES; do
	lab_node_stop "$n" KILL
done
lab_control_stop TERM
lab_finish
