#!/usr/bin/env bash
# Hard NAT on both sides: how often birthday probing finds a direct path, and how fast
# (issue 10). Two pairs of nodes, each node behind its own NAT that maps per destination:
#   block   k1, k2: a CGNAT-like port block (UDP mapped into 40192-40447, a random port of
#           the block per flow): the block the engine probes is the NAT's
#   random  h1, h2: any port of 1024-65535 at random per flow (Linux fully-random)
# Both NATs let in only what answers a mapping they hold (conntrack). Two STUN servers
# (the control server's embedded relay and trellis-relay r2) let the nodes see that their
# mapping varies, which they report to the control server for their peers.
# Each trial restarts both daemons of a pair (new disco keys), flushes both routers'
# conntrack tables (fresh mappings), waits until each sees the other's hard-NAT flag,
# then pings k1 -> k2 (h1 -> h2) every 200 ms for up to BENCH_WAIT seconds and notes
# whether and when both ends say "direct".
# Writes a "## NAT traversal" section into docs/benchmarks.md (replacing an earlier one).
#
# Environment:
#   TRELLIS_BENCH_BUILD  build dir (default <repo>/build, built by `make`)
#   BENCH_TRIALS         trials per kind of NAT (default 8)
#   BENCH_WAIT           seconds a trial waits for a direct path (default 25)
#   BENCH_OUT            output file (default <repo>/docs/benchmarks.md; "-" = stdout only)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
export TRELLIS_BUILD=${TRELLIS_BENCH_BUILD:-$REPO/build}
export TRELLISD=$TRELLIS_BUILD/src/node/trellisd
TRIALS=${BENCH_TRIALS:-8}
WAIT=${BENCH_WAIT:-25}
OUT=${BENCH_OUT:-$REPO/docs/benchmarks.md}
export LAB_TIMEOUT=$((2 * TRIALS * (WAIT + 60) + 240))

# shellcheck source=../tests/lab/lib.sh
source "$REPO/tests/lab/lib.sh"
# shellcheck source=../tests/lab/natlab.sh
source "$REPO/tests/lab/natlab.sh"
lab_init
lab_require_control_plane
lab_require nft conntrack
RELAY=${TRELLIS_RELAY:-$TRELLIS_BUILD/src/relay/trellis-relay}

lab_internet
lab_public_host ctl 1
lab_public_host r2 3
for r in rk1:31 rk2:32 rh1:33 rh2:34; do
	lab_public_host "${r%:*}" "${r#*:}"
	lab_forwarding "${r%:*}"
done
n=1
for s in k1:rk1:40192-40447 k2:rk2:40192-40447 h1:rh1: h2:rh2:; do
	IFS=: read -r short router ports <<<"$s"
	lab_ns "$short"
	lab_veth "$short" eth0 "$router" eth1
	lab_addr "$router" eth1 "198.18.$n.1/24"
	lab_addr "$short" eth0 "198.18.$n.2/24"
	nsx "$short" ip route add default via "198.18.$n.1"
	natlab_nat "$router" hard "$ports"
	n=$((n + 1))
done

lab_control_start ctl 192.0.2.1 8080 || lab_finish
ip netns exec "$(ns_name r2)" "$RELAY" --listen 192.0.2.3:8080 --stun-port 3478 \
	>"$LAB_TMP/relay-r2.log" 2>&1 &
LAB_PIDS+=($!)
wait_listen r2 8080 || { fail "r2 listens"; lab_finish; }
cat >"$LAB_TMP/map.json" <<'EOF'
{"regions": [
 {"id": 1, "code": "default", "nodes": [{"name": "ctl", "ipv4": "192.0.2.1", "relay_port": 8080, "stun_port": 3478}]},
 {"id": 2, "code": "two", "nodes": [{"name": "r2", "ipv4": "192.0.2.3", "relay_port": 8080, "stun_port": 3478}]}]}
EOF
ctl relaymap set "$LAB_TMP/map.json" >/dev/null || { fail "relaymap set"; lab_finish; }
KEY=$(lab_authkey --reusable)
for n in k1 k2 h1 h2; do
	lab_node_join "$n" "$n" "$KEY"
done

declare -A IP4
for n in k1 k2 h1 h2; do
	IP4[$n]=$(node_ip "$n" 4)
done
peer_field() { status_eval "$1" "[p.get('$3') for p in j['peers'] if p['hostname'] == '$2'][0]"; }
flags_known() { [[ $(peer_field "$1" "$2" mapping_varies) == True && $(peer_field "$2" "$1" mapping_varies) == True ]]; }
path_is() { [[ $(peer_field "$1" "$2" path) == "$3" ]]; }
ms_now() { date +%s%3N; }

# trial KIND A B N: R[KIND.N] = ms to direct, or "-".
declare -A R=()
R[load0]=$(cut -d' ' -f1-3 /proc/loadavg)
trial()
{
	local kind=$1 a=$2 b=$3 n=$4 t0 t1 end pinger
	lab_node_stop "$a" KILL
	lab_node_stop "$b" KILL
	nsx "r$a" conntrack -F >/dev/null 2>&1
	nsx "r$b" conntrack -F >/dev/null 2>&1
	lab_node_start "$a" "$a" && lab_node_start "$b" "$b" || { R[$kind.$n]=error; return; }
	if ! wait_for 60 flags_known "$a" "$b"; then
		R[$kind.$n]=error
		fail "$kind $n: the hard-NAT flags did not arrive"
		return
	fi
	t0=$(ms_now)
	end=$((t0 + WAIT * 1000))
	nsx "$a" ping -n -q -i 0.2 -w "$WAIT" "${IP4[$b]}" >/dev/null 2>&1 &
	pinger=$!
	LAB_PIDS+=("$pinger")
	R[$kind.$n]=-
	while (($(ms_now) < end)); do
		if path_is "$a" "$b" direct && path_is "$b" "$a" direct; then
			t1=$(ms_now)
			R[$kind.$n]=$((t1 - t0))
			break
		fi
		sleep 0.2
	done
	kill "$pinger" 2>/dev/null
	wait "$pinger" 2>/dev/null
	lab_forget "$pinger"
	R[$kind.$n.bd]=$(status_eval "$a" "str((([p for p in j['peers'] if p['hostname'] == '$b'][0]['disco'].get('birthday')) or {}))")
	log "$kind trial $n: ${R[$kind.$n]} ms; $a's birthday view: ${R[$kind.$n.bd]}"
}
for ((n = 1; n <= TRIALS; n++)); do
	trial block k1 k2 "$n"
	trial random h1 h2 "$n"
done
R[load1]=$(cut -d' ' -f1-3 /proc/loadavg)

# summary KIND: "successes/trials | median ms | worst ms"
summary()
{
	local kind=$1 vals=() ok=0 n v
	for ((n = 1; n <= TRIALS; n++)); do
		v=${R[$kind.$n]:-error}
		[[ $v =~ ^[0-9]+$ ]] && { vals+=("$v"); ok=$((ok + 1)); }
	done
	if ((ok)); then
		printf '%s\n' "${vals[@]}" | sort -n | awk -v ok="$ok" -v t="$TRIALS" \
			'{ a[NR] = $1 } END { printf "%d/%d | %d | %d", ok, t, a[int((NR + 1) / 2)], a[NR] }'
	else
		printf '0/%d | - | -' "$TRIALS"
	fi
}

{
	echo "## NAT traversal"
	echo
	echo "\`bench/nat.sh\` (issue 10), $(date -u +'%Y-%m-%d %H:%M UTC'), commit $(git -C "$REPO" rev-parse --short HEAD)."
	echo "Hard NAT on both sides: each trial restarts both daemons, flushes both routers'"
	echo "conntrack and pings A -> B every 200 ms for up to ${WAIT} s; the time is from the"
	echo "first ping to both ends saying \"direct\". Build: \`$TRELLIS_BUILD\`."
	echo "The machine was loaded (load average ${R[load0]} before, ${R[load1]} after; other"
	echo "builds and tests ran beside it), so times are upper bounds."
	echo
	echo "| NATs (both sides) | direct | median ms | worst ms |"
	echo "|---|---:|---:|---:|"
	echo "| port block of 256, random port in it | $(summary block) |"
	echo "| any port at random (1024-65535) | $(summary random) |"
	echo
	echo "One socket per node, so each side opens one mapping per port it probes (256 an"
	echo "attempt, the aligned block around the peer's reflexive port). A path needs a probe"
	echo "of one side to meet a mapping the other opened towards exactly its source port:"
	echo "about one such meeting is expected per pair of attempts whatever the block size, so"
	echo "an attempt succeeds about 63 % of the time (1 - 1/e) when the NAT keeps its ports"
	echo "in the block, and further attempts within conntrack's 30 s reuse the same mappings."
	echo "With ports taken from the whole range of 64,512 the expected meetings per pair of"
	echo "attempts are about 256 x 256 / 64,512^2, one in 60,000: those pairs stay on the"
	echo "relay (\`relay_reason\` \`hard-nat-both-sides\`). The times include the restarted"
	echo "daemons' first handshake through the relay and polling \`trellis status\` on both."
} >"$LAB_TMP/section.md"
cat "$LAB_TMP/section.md"
if [[ $OUT != - ]]; then
	python3 "$REPO/bench/md_section.py" "$OUT" "$LAB_TMP/section.md" "NAT traversal"
fi
for n in k1 k2 h1 h2; do
	lab_node_stop "$n" KILL
done
lab_control_stop TERM
lab_finish
