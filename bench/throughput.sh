#!/usr/bin/env bash
# Throughput benchmark: two namespaces over a veth pair, measured
#   (1) raw veth, (2) wireguard-go <-> wireguard-go, (3) trellisd <-> trellisd (release build),
#   (4) trellisd with its offloads off (TRELLIS_NO_OFFLOAD=1: no TUN TSO/GRO, no UDP GSO/GRO),
#   (5) Debian's nebula <-> nebula (its default cipher, AES-256-GCM; no lighthouse, the
#       peer in each one's static host map; inner MTU 1420 like the others)
# with iperf3 TCP single stream both ways, 4 parallel streams, UDP at max rate with
# 1400-byte datagrams (receiver rate and loss), ping RTT, and each WireGuard process's peak
# RSS; then, per WireGuard configuration, syscalls and CPU time per MB of a fixed TCP
# transfer (perf stat on both daemons). Configurations are interleaved round by round and
# each figure is the median of the rounds. Writes docs/benchmarks.md.
#
# Environment:
#   TRELLIS_BENCH_BUILD  release build dir (default <repo>/build, built by `make`)
#   BENCH_DURATION       seconds per iperf3 run (default 10)
#   BENCH_CONFIGS        subset of "veth wggo trellisd nooff nebula ref" (default all but
#                        ref; trellisd and nooff are skipped with a note when not built,
#                        nebula when it is not installed)
#   BENCH_REF_TRELLISD   config "ref": another trellisd binary (an earlier revision's
#                        release build), measured like trellisd, for an A/B of a change
#   BENCH_ROUNDS         rounds of all configurations, interleaved (default 1)
#   BENCH_COST_MB        MB of the fixed transfer for syscalls and CPU per MB (default 256;
#                        0: not measured)
#   BENCH_UDP_LEN        UDP datagram size (default 1400: two inner IP fragments at MTU 1420,
#                        as iperf3 users often send; 1392 fits one inner packet)
#   BENCH_TESTS          subset of "tcp udp ping cost" (default all; cost is the syscalls
#                        and CPU per MB); the report leaves out the rows not measured
#   BENCH_OUT            output file (default <repo>/docs/benchmarks.md; "-" = stdout only)
# Don't run it while the machine is busy (compiling): the numbers would be meaningless.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
TRELLIS_BENCH_BUILD=${TRELLIS_BENCH_BUILD:-$REPO/build}
export TRELLISD=$TRELLIS_BENCH_BUILD/src/node/trellisd
DURATION=${BENCH_DURATION:-10}
CONFIGS=${BENCH_CONFIGS:-veth wggo trellisd nooff nebula}
ROUNDS=${BENCH_ROUNDS:-1}
COST_MB=${BENCH_COST_MB:-256}
UDP_LEN=${BENCH_UDP_LEN:-1400}
TESTS=${BENCH_TESTS:-tcp udp ping cost}
OUT=${BENCH_OUT:-$REPO/docs/benchmarks.md}
REF_TRELLISD=${BENCH_REF_TRELLISD:-}
export LAB_TIMEOUT=$(((DURATION * 20 + 300 + COST_MB) * ROUNDS * 2))

# shellcheck source=../tests/lab/lib.sh
source "$REPO/tests/lab/lib.sh"
lab_init
lab_require iperf3 ss lscpu
# A benchmark uses wireguard-go only where asked for: no stand-in for trellisd.
unset TRELLIS_LAB_IMPL
export WGGO_LOG_LEVEL=error

declare -A R=() # R[config.metric], the median of RR[config.metric.round]
declare -A RR=()

# iperf_bps NS TARGET ARGS...: receiver-side bits/s of one iperf3 run (0 on failure).
iperf_run()
{
	local ns=$1 target=$2 json="$LAB_TMP/iperf.json"
	shift 2
	nsx_timeout $((DURATION + 30)) "$ns" iperf3 -c "$target" -p 5201 -t "$DURATION" -J "$@" \
		>"$json" 2>/dev/null
	echo "$json"
}

# tun_counts NS IFACE: "tx_packets tx_dropped rx_bytes" of a TUN device, to see where the
# UDP test's datagrams go: the sender's TUN queue drops what its daemon does not read in
# time, and the receiver's TUN counts what the tunnel delivered to that kernel (inner IP
# bytes), of which the receiving socket may still drop some.
tun_counts()
{
	nsx "$1" ip -j -s link show dev "$2" | python3 -c 'import json, sys
s = json.load(sys.stdin)[0]["stats64"]
print(s["tx"]["packets"], s["tx"]["dropped"], s["rx"]["bytes"])'
}

# tun_delta BEFORE AFTER EXPR: EXPR of d, the list of counter differences.
tun_delta()
{
	python3 -c 'import sys
d = [int(b) - int(a) for a, b in zip(sys.argv[1].split(), sys.argv[2].split())]
print(eval(sys.argv[3]))' "$1" "$2" "$3" 2>/dev/null || echo "?"
}

# want TEST: whether BENCH_TESTS asks for TEST.
want() { [[ " $TESTS " == *" $1 "* ]]; }

# rate BPS: Gb/s, or "-" when not measured (BENCH_TESTS).
rate() { [[ -n $1 ]] && gbps "$1" || echo "-"; }

gbps() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) / 1e9))' "$1"; }

# cost CFG NSA IFACE_A IFACE_B TARGET: syscalls and CPU ms per MB of a COST_MB transfer
# A -> B, sender's and receiver's daemon each (perf stat on all their threads).
cost()
{
	local cfg=$1 ns=$2 ia=$3 ib=$4 target=$5 side pid out
	local -A pp=()
	((COST_MB > 0)) || return 0
	for side in a b; do
		[[ $side == a ]] && pid=${LAB_WG_PID[$ia]} || pid=${LAB_WG_PID[$ib]}
		out="$LAB_TMP/perf-$cfg-$side.txt"
		perf stat -x, -e raw_syscalls:sys_enter,task-clock -p "$pid" -o "$out" &
		pp[$side]=$!
	done
	sleep 0.5 # perf attaches
	nsx_timeout 120 "$ns" iperf3 -c "$target" -p 5201 -n "${COST_MB}M" -J >"$LAB_TMP/cost.json" 2>/dev/null
	for side in a b; do
		kill -INT "${pp[$side]}" 2>/dev/null
		wait "${pp[$side]}" 2>/dev/null
		out="$LAB_TMP/perf-$cfg-$side.txt"
		RR[$cfg.sys_$side.$round]=$(awk -F, -v mb="$COST_MB" '/raw_syscalls:sys_enter/ { printf "%.0f", $1 / mb }' "$out")
		RR[$cfg.cpu_$side.$round]=$(awk -F, -v mb="$COST_MB" '/task-clock/ { printf "%.2f", $1 / mb }' "$out")
	done
}

# nebula_start NS IFACE ADDR/PREFIX PEER_ADDR PEER_UNDERLAY: a nebula node in NS with a
# certificate from the run's CA and the peer in its static host map, waiting (bounded)
# for its TUN device. Tracked like lab_wg_start's daemons (LAB_WG_PID, LAB_PIDS).
nebula_start()
{
	local short=$1 iface=$2 addr=$3 peer=$4 under=$5 dir="$LAB_TMP/nebula-$1" n pid
	mkdir -p "$dir"
	if [[ ! -f $LAB_TMP/nebula-ca.crt ]]; then
		nebula-cert ca -name trellis-bench -out-crt "$LAB_TMP/nebula-ca.crt" \
			-out-key "$LAB_TMP/nebula-ca.key" || return 1
	fi
	nebula-cert sign -ca-crt "$LAB_TMP/nebula-ca.crt" -ca-key "$LAB_TMP/nebula-ca.key" \
		-name "$short" -ip "$addr" -out-crt "$dir/host.crt" -out-key "$dir/host.key" || return 1
	cat >"$dir/config.yml" <<EOF
pki:
  ca: $LAB_TMP/nebula-ca.crt
  cert: $dir/host.crt
  key: $dir/host.key
static_host_map:
  "$peer": ["$under:4242"]
lighthouse:
  am_lighthouse: false
listen:
  host: 0.0.0.0
  port: 4242
tun:
  dev: $iface
  mtu: 1420
logging:
  level: error
firewall:
  outbound:
    - port: any
      proto: any
      host: any
  inbound:
    - port: any
      proto: any
      host: any
EOF
	ip netns exec "$(ns_name "$short")" nebula -config "$dir/config.yml" >"$dir/log" 2>&1 &
	pid=$!
	LAB_PIDS+=("$pid")
	LAB_WG_PID[$iface]=$pid
	for ((n = 0; n < 300; n++)); do
		nsx "$short" ip link show "$iface" >/dev/null 2>&1 && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	log "nebula in $short: no $iface within 30 s"
	cat "$dir/log" >&2
	return 1
}

nebula_stop()
{
	local pid=${LAB_WG_PID[$1]}
	kill -TERM "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	lab_forget "$pid"
}

# bench_config NAME: measure one configuration, fill RR[NAME.*.round].
bench_config()
{
	local cfg=$1 target ia ib json v impl=$1 tun_a tun_b
	[[ $cfg == nooff || $cfg == ref ]] && impl=trellisd
	# The reference binary for this configuration's daemons only.
	[[ $cfg == ref ]] && local -x TRELLISD=$REF_TRELLISD
	log "=== $cfg round $round (iperf3 $DURATION s per run)"
	lab_ns "a$cfg$round"
	lab_ns "b$cfg$round"
	lab_veth "a$cfg$round" eth0 "b$cfg$round" eth0
	lab_addr "a$cfg$round" eth0 192.0.2.1/24
	lab_addr "b$cfg$round" eth0 192.0.2.2/24
	target=192.0.2.2
	if [[ $cfg == nebula ]]; then
		ia=$(lab_iface "a${cfg:0:1}$round")
		ib=$(lab_iface "b${cfg:0:1}$round")
		nebula_start "a$cfg$round" "$ia" 100.64.0.1/24 100.64.0.2 192.0.2.2 || return 1
		nebula_start "b$cfg$round" "$ib" 100.64.0.2/24 100.64.0.1 192.0.2.1 || return 1
		target=100.64.0.2
		ping_until "a$cfg$round" "$target" 20 || { log "$cfg: tunnel does not come up"; return 1; }
	elif [[ $cfg != veth ]]; then
		ia=$(lab_iface "a${cfg:0:1}$round")
		ib=$(lab_iface "b${cfg:0:1}$round")
		lab_key "a$cfg$round"
		lab_key "b$cfg$round"
		[[ $cfg == nooff ]] && export TRELLIS_NO_OFFLOAD=1
		lab_wg_start "a$cfg$round" "$impl" "$ia" || return 1
		lab_wg_start "b$cfg$round" "$impl" "$ib" || return 1
		unset TRELLIS_NO_OFFLOAD
		nsx "a$cfg$round" wg set "$ia" private-key "$(key_file "a$cfg$round")" listen-port 51820 \
			peer "$(pub_of "b$cfg$round")" allowed-ips 100.64.0.2/32 endpoint 192.0.2.2:51820
		nsx "b$cfg$round" wg set "$ib" private-key "$(key_file "b$cfg$round")" listen-port 51820 \
			peer "$(pub_of "a$cfg$round")" allowed-ips 100.64.0.1/32 endpoint 192.0.2.1:51820
		lab_wg_up "a$cfg$round" "$ia" 100.64.0.1/24
		lab_wg_up "b$cfg$round" "$ib" 100.64.0.2/24
		target=100.64.0.2
		ping_until "a$cfg$round" "$target" 10 || { log "$cfg: tunnel does not come up"; return 1; }
	fi
	ip netns exec "$(ns_name "b$cfg$round")" iperf3 -s -B "$target" -p 5201 >/dev/null 2>&1 &
	LAB_PIDS+=($!)
	wait_listen "b$cfg$round" 5201 || { log "$cfg: iperf3 server does not listen"; return 1; }

	if want tcp; then
		json=$(iperf_run "a$cfg$round" "$target")
		RR[$cfg.tcp.$round]=$(json_get "$json" "j['end']['sum_received']['bits_per_second']" 2>/dev/null || echo 0)
		json=$(iperf_run "a$cfg$round" "$target" -R)
		RR[$cfg.tcpr.$round]=$(json_get "$json" "j['end']['sum_received']['bits_per_second']" 2>/dev/null || echo 0)
		json=$(iperf_run "a$cfg$round" "$target" -P 4)
		RR[$cfg.tcp4.$round]=$(json_get "$json" "j['end']['sum_received']['bits_per_second']" 2>/dev/null || echo 0)
	fi
	if want udp; then
		[[ $cfg != veth ]] && tun_a=$(tun_counts "a$cfg$round" "$ia") && tun_b=$(tun_counts "b$cfg$round" "$ib")
		json=$(iperf_run "a$cfg$round" "$target" -u -b 0 -l "$UDP_LEN")
		if [[ $cfg != veth ]]; then
			RR[$cfg.udpdrop.$round]=$(tun_delta "$tun_a" "$(tun_counts "a$cfg$round" "$ia")" \
				'"%.1f" % (100 * d[1] / max(1, d[0] + d[1]))')
			RR[$cfg.udptun.$round]=$(tun_delta "$tun_b" "$(tun_counts "b$cfg$round" "$ib")" \
				"'%.0f' % (d[2] * 8 / $DURATION)")
		fi
		RR[$cfg.udp.$round]=$(json_get "$json" "j['end']['sum_received']['bits_per_second']" 2>/dev/null || echo 0)
		RR[$cfg.udploss.$round]=$(json_get "$json" "'%.1f' % j['end']['sum_received']['lost_percent']" 2>/dev/null ||
			echo "?")
	fi
	# Two rates: an idle path (threads asleep between pings, so thread wake-up
	# latency dominates) and a busy one.
	if want ping; then
		v=$(nsx "a$cfg$round" ping -n -q -c 100 -i 0.05 "$target" 2>/dev/null | awk -F/ '/^rtt/ { print $5 }')
		RR[$cfg.rtt.$round]=${v:-?}
		v=$(nsx "a$cfg$round" ping -n -q -c 300 -i 0.01 "$target" 2>/dev/null | awk -F/ '/^rtt/ { print $5 }')
		RR[$cfg.rttbusy.$round]=${v:-?}
	fi
	if [[ $cfg != veth ]]; then
		RR[$cfg.rss.$round]=$(for i in "$ia" "$ib"; do
			awk '/^VmHWM/ { print $2 }' "/proc/${LAB_WG_PID[$i]}/status"
		done | sort -n | tail -1)
		want cost && cost "$cfg" "a$cfg$round" "$ia" "$ib" "$target"
		if [[ $cfg == nebula ]]; then
			nebula_stop "$ia"
			nebula_stop "$ib"
		else
			lab_wg_stop "$ia"
			lab_wg_stop "$ib"
		fi
	fi
	log "$cfg: tcp $(rate "${RR[$cfg.tcp.$round]:-}") / -R $(rate "${RR[$cfg.tcpr.$round]:-}") / -P4 $(rate "${RR[$cfg.tcp4.$round]:-}") Gb/s," \
		"udp $(rate "${RR[$cfg.udp.$round]:-}") Gb/s (${RR[$cfg.udploss.$round]:--} % loss), rtt ${RR[$cfg.rtt.$round]:--} / ${RR[$cfg.rttbusy.$round]:--} ms," \
		"syscalls/MB ${RR[$cfg.sys_a.$round]:--} / ${RR[$cfg.sys_b.$round]:--}, CPU ms/MB ${RR[$cfg.cpu_a.$round]:--} / ${RR[$cfg.cpu_b.$round]:--}"
}

ran=()
declare -A okr=() # rounds a configuration completed
for ((round = 1; round <= ROUNDS; round++)); do
	for cfg in $CONFIGS; do
		if [[ ($cfg == trellisd || $cfg == nooff) && ! -x $TRELLISD ]]; then
			log "$cfg: trellisd not built at $TRELLISD (run make), skipped"
			continue
		fi
		if [[ $cfg == ref && ! -x $REF_TRELLISD ]]; then
			log "ref: no BENCH_REF_TRELLISD binary, skipped"
			continue
		fi
		if [[ $cfg == nebula ]] && ! command -v nebula >/dev/null; then
			log "nebula: not installed (Debian's nebula package), skipped"
			continue
		fi
		if bench_config "$cfg"; then
			okr[$cfg]=$((${okr[$cfg]:-0} + 1))
		else
			log "$cfg: failed in round $round, left out of its medians"
			lab_dump_logs
		fi
	done
done
for cfg in $CONFIGS; do
	[[ -n ${okr[$cfg]:-} ]] && ran+=("$cfg")
done
# The median of the rounds that measured it.
for key in "${!RR[@]}"; do
	m=${key%.*}
	[[ -n ${R[$m]:-} ]] && continue
	R[$m]=$(for ((r = 1; r <= ROUNDS; r++)); do echo "${RR[$m.$r]:-}"; done | python3 -c 'import sys
v = sorted(float(x) for x in sys.stdin.read().split() if x not in ("?", "-"))
print("?" if not v else ("%g" % v[len(v) // 2] if len(v) % 2 else "%g" % ((v[len(v) // 2 - 1] + v[len(v) // 2]) / 2)))')
done

# ------------------------------------------------------------------ report
label() { case $1 in veth) echo "veth (no tunnel)" ;; wggo) echo "wireguard-go" ;; nooff) echo "trellisd, offloads off" ;; ref) echo "trellisd, reference build" ;; nebula) echo "nebula" ;; *) echo "$1" ;; esac; }
cell()
{
	local cfg=$1 m=$2
	case $m in
	tcp | tcpr | tcp4 | udp) gbps "${R[$cfg.$m]:-0}" ;;
	udptun) [[ -n ${R[$cfg.udptun]:-} ]] && gbps "${R[$cfg.udptun]}" || echo "-" ;;
	udploss) echo "${R[$cfg.udploss]:-?}" ;;
	udpdrop) echo "${R[$cfg.udpdrop]:--}" ;;
	rtt | rttbusy | sys_a | sys_b | cpu_a | cpu_b) echo "${R[$cfg.$m]:--}" ;;
	rss) [[ -n ${R[$cfg.rss]:-} ]] && python3 -c 'import sys; print("%.1f" % (int(sys.argv[1]) / 1024))' "${R[$cfg.rss]}" || echo "-" ;;
	esac
}
# ratio METRIC [OTHER]: trellisd's figure over OTHER's (default wireguard-go).
ratio()
{
	local m=$1 o=${2:-wggo}
	[[ -n ${R[trellisd.$m]:-} && -n ${R[$o.$m]:-} ]] || { echo "-"; return; }
	python3 -c 'import sys
try:
    print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))
except (ValueError, ZeroDivisionError):
    print("-")' "${R[trellisd.$m]}" "${R[$o.$m]}"
}

cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null) ]] && rev="$rev (with uncommitted changes)"
{
	echo "# Benchmarks"
	echo
	echo "Produced by \`bench/throughput.sh\` (\`make bench\`): two network namespaces joined by a"
	echo "veth pair, iperf3 and ping between them, through no tunnel, through wireguard-go and"
	echo "through trellisd (release build). Inner MTU 1420 for both WireGuard implementations."
	echo
	echo "| | |"
	echo "|---|---|"
	echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
	echo "| CPU | ${cpu:-unknown} |"
	echo "| cores | $(nproc) |"
	echo "| kernel | $(uname -r) |"
	echo "| wireguard-go | $(wireguard-go --version 2>/dev/null | head -1) |"
	echo "| nebula | $(nebula -version 2>/dev/null | head -1) (AES-256-GCM, its default) |"
	echo "| iperf3 | $(iperf3 --version 2>/dev/null | head -1 | awk '{ print $2 }') |"
	echo "| trellis revision | $rev |"
	echo "| iperf3 run length | $DURATION s |"
	echo "| rounds (configurations interleaved; medians) | $ROUNDS |"
	echo "| load average at the end | $(cut -d' ' -f1-3 /proc/loadavg) |"
	echo
	printf '| metric |'
	for c in "${ran[@]}"; do printf ' %s |' "$(label "$c")"; done
	printf ' trellisd / wireguard-go | trellisd / offloads off | trellisd / nebula |\n|---|'
	for c in "${ran[@]}"; do printf -- '---:|'; done
	printf -- '---:|---:|---:|\n'
	for m in tcp tcpr tcp4 udp udploss udptun udpdrop rtt rttbusy rss sys_a sys_b cpu_a cpu_b; do
		case $m in
		tcp*) want tcp ;; udp*) want udp ;; rtt*) want ping ;; sys_* | cpu_*) want cost ;; *) true ;;
		esac || continue
		case $m in
		tcp) printf '| TCP, 1 stream, A→B (Gb/s) |' ;;
		tcpr) printf '| TCP, 1 stream, B→A (-R) (Gb/s) |' ;;
		tcp4) printf '| TCP, 4 streams (Gb/s) |' ;;
		udp) printf '| UDP, %s-byte datagrams, max rate, received (Gb/s) |' "$UDP_LEN" ;;
		udploss) printf '| UDP loss (%%) |' ;;
		udptun) printf '| UDP, delivered by the tunnel into the receiver'"'"'s kernel (inner IP, Gb/s) |' ;;
		udpdrop) printf '| UDP, dropped by the sender'"'"'s TUN queue, unread by the daemon (%% of packets) |' ;;
		rtt) printf '| ping RTT, 100 pings 50 ms apart, avg (ms) |' ;;
		rttbusy) printf '| ping RTT, 300 pings 10 ms apart, avg (ms) |' ;;
		rss) printf '| peak RSS of a tunnel process (MiB) |' ;;
		sys_a) printf '| syscalls per MB, sender (TCP A→B, %s MB) |' "$COST_MB" ;;
		sys_b) printf '| syscalls per MB, receiver |' ;;
		cpu_a) printf '| CPU ms per MB, sender (all threads) |' ;;
		cpu_b) printf '| CPU ms per MB, receiver |' ;;
		esac
		for c in "${ran[@]}"; do printf ' %s |' "$(cell "$c" "$m")"; done
		printf ' %s | %s | %s |\n' "$(ratio "$m")" "$(ratio "$m" nooff)" "$(ratio "$m" nebula)"
	done
	echo
	echo "Gb/s are iperf3's receiver-side rates. The ratio columns are trellisd divided by"
	echo "wireguard-go, by itself with offloads off and by nebula (above 1 is better for"
	echo "throughput, below 1 is better for RTT and RSS)."
	echo "In the UDP test the sending iperf3 offers more than any tunnel here carries. Each"
	echo "datagram is lost in one of three places: the sender's TUN queue (the daemon did not"
	echo "read it in time; a row above), inside the tunnel (the difference between what the"
	echo "sender's daemon read and what the receiver's TUN delivered), or at the receiving"
	echo "socket (delivered into the kernel, but the receiving iperf3 did not read it in time:"
	echo "the difference between the \"delivered\" and \"received\" rows, less 28 bytes of"
	echo "headers per datagram and inner fragments' headers)."
	echo "Peak RSS is VmHWM from /proc/PID/status, the larger of the two sides."
	echo "Syscalls and CPU per MB: \`perf stat -e raw_syscalls:sys_enter,task-clock\` on each"
	echo "daemon (all threads) during one iperf3 transfer of $COST_MB MB from A to B, divided by"
	echo "the MB; CPU time is less sensitive to the machine's load than the rates are."
	[[ " ${ran[*]} " == *" trellisd "* ]] || echo -e "\ntrellisd was not measured in this run (not built, or failed)."
} >"$LAB_TMP/report.md"

cat "$LAB_TMP/report.md"
if [[ $OUT != - ]]; then
	# The report is the file's head, up to the first "## " section (other benchmarks' own).
	python3 -c 'import re, sys
new = open(sys.argv[1]).read().rstrip("\n") + "\n"
try:
    old = open(sys.argv[2]).read()
except FileNotFoundError:
    old = ""
m = re.search(r"^## ", old, flags=re.M)
open(sys.argv[2], "w").write(new + ("\n" + old[m.start():] if m else ""))' "$LAB_TMP/report.md" "$OUT"
	log "wrote $OUT"
fi
LAB_FINISHED=1 # read by lab_cleanup
export LAB_FINISHED
exit 0
