#!/usr/bin/env bash
# Throughput benchmark: two namespaces over a veth pair, measured
#   (1) raw veth, (2) wireguard-go <-> wireguard-go, (3) trellisd <-> trellisd (release build)
# with iperf3 TCP single stream both ways, 4 parallel streams, UDP at max rate with
# 1400-byte datagrams (receiver rate and loss), ping RTT, and each WireGuard process's peak
# RSS. Writes docs/benchmarks.md.
#
# Environment:
#   TRELLIS_BENCH_BUILD  release build dir (default <repo>/build, built by `make`)
#   BENCH_DURATION       seconds per iperf3 run (default 10)
#   BENCH_CONFIGS        subset of "veth wggo trellisd" (default all; trellisd is skipped
#                        with a note when not built)
#   BENCH_OUT            output file (default <repo>/docs/benchmarks.md; "-" = stdout only)
# Don't run it while the machine is busy (compiling): the numbers would be meaningless.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
TRELLIS_BENCH_BUILD=${TRELLIS_BENCH_BUILD:-$REPO/build}
export TRELLISD=$TRELLIS_BENCH_BUILD/src/node/trellisd
DURATION=${BENCH_DURATION:-10}
CONFIGS=${BENCH_CONFIGS:-veth wggo trellisd}
OUT=${BENCH_OUT:-$REPO/docs/benchmarks.md}
export LAB_TIMEOUT=$((DURATION * 20 + 300))

# shellcheck source=../tests/lab/lib.sh
source "$REPO/tests/lab/lib.sh"
lab_init
lab_require iperf3 ss lscpu
# A benchmark uses wireguard-go only where asked for: no stand-in for trellisd.
unset TRELLIS_LAB_IMPL
export WGGO_LOG_LEVEL=error

declare -A R=() # R[config.metric]

# iperf_bps NS TARGET ARGS...: receiver-side bits/s of one iperf3 run (0 on failure).
iperf_run()
{
	local ns=$1 target=$2 json="$LAB_TMP/iperf.json"
	shift 2
	nsx_timeout $((DURATION + 30)) "$ns" iperf3 -c "$target" -p 5201 -t "$DURATION" -J "$@" \
		>"$json" 2>/dev/null
	echo "$json"
}

gbps() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) / 1e9))' "$1"; }

# bench_config NAME: measure one configuration, fill R[NAME.*].
bench_config()
{
	local cfg=$1 target ia ib json v
	log "=== $cfg (iperf3 $DURATION s per run)"
	lab_ns "a$cfg"
	lab_ns "b$cfg"
	lab_veth "a$cfg" eth0 "b$cfg" eth0
	lab_addr "a$cfg" eth0 192.0.2.1/24
	lab_addr "b$cfg" eth0 192.0.2.2/24
	target=192.0.2.2
	if [[ $cfg != veth ]]; then
		ia=$(lab_iface "a${cfg:0:1}")
		ib=$(lab_iface "b${cfg:0:1}")
		lab_key "a$cfg"
		lab_key "b$cfg"
		lab_wg_start "a$cfg" "$cfg" "$ia" || return 1
		lab_wg_start "b$cfg" "$cfg" "$ib" || return 1
		nsx "a$cfg" wg set "$ia" private-key "$(key_file "a$cfg")" listen-port 51820 \
			peer "$(pub_of "b$cfg")" allowed-ips 100.64.0.2/32 endpoint 192.0.2.2:51820
		nsx "b$cfg" wg set "$ib" private-key "$(key_file "b$cfg")" listen-port 51820 \
			peer "$(pub_of "a$cfg")" allowed-ips 100.64.0.1/32 endpoint 192.0.2.1:51820
		lab_wg_up "a$cfg" "$ia" 100.64.0.1/24
		lab_wg_up "b$cfg" "$ib" 100.64.0.2/24
		target=100.64.0.2
		ping_until "a$cfg" "$target" 10 || { log "$cfg: tunnel does not come up"; return 1; }
	fi
	ip netns exec "$(ns_name "b$cfg")" iperf3 -s -B "$target" -p 5201 >/dev/null 2>&1 &
	LAB_PIDS+=($!)
	wait_listen "b$cfg" 5201 || { log "$cfg: iperf3 server does not listen"; return 1; }

	json=$(iperf_run "a$cfg" "$target")
	R[$cfg.tcp]=$(json_get "$json" "j['end']['sum_received']['bits_per_second']" 2>/dev/null || echo 0)
	json=$(iperf_run "a$cfg" "$target" -R)
	R[$cfg.tcpr]=$(json_get "$json" "j['end']['sum_received']['bits_per_second']" 2>/dev/null || echo 0)
	json=$(iperf_run "a$cfg" "$target" -P 4)
	R[$cfg.tcp4]=$(json_get "$json" "j['end']['sum_received']['bits_per_second']" 2>/dev/null || echo 0)
	json=$(iperf_run "a$cfg" "$target" -u -b 0 -l 1400)
	R[$cfg.udp]=$(json_get "$json" "j['end']['sum_received']['bits_per_second']" 2>/dev/null || echo 0)
	R[$cfg.udploss]=$(json_get "$json" "'%.1f' % j['end']['sum_received']['lost_percent']" 2>/dev/null ||
		echo "?")
	# Two rates: an idle path (threads asleep between pings, so thread wake-up
	# latency dominates) and a busy one.
	v=$(nsx "a$cfg" ping -n -q -c 100 -i 0.05 "$target" 2>/dev/null | awk -F/ '/^rtt/ { print $5 }')
	R[$cfg.rtt]=${v:-?}
	v=$(nsx "a$cfg" ping -n -q -c 300 -i 0.01 "$target" 2>/dev/null | awk -F/ '/^rtt/ { print $5 }')
	R[$cfg.rttbusy]=${v:-?}
	if [[ $cfg != veth ]]; then
		R[$cfg.rss]=$(for i in "$ia" "$ib"; do
			awk '/^VmHWM/ { print $2 }' "/proc/${LAB_WG_PID[$i]}/status"
		done | sort -n | tail -1)
		lab_wg_stop "$ia"
		lab_wg_stop "$ib"
	fi
	log "$cfg: tcp $(gbps "${R[$cfg.tcp]}") / -R $(gbps "${R[$cfg.tcpr]}") / -P4 $(gbps "${R[$cfg.tcp4]}") Gb/s," \
		"udp $(gbps "${R[$cfg.udp]}") Gb/s (${R[$cfg.udploss]} % loss), rtt ${R[$cfg.rtt]} / ${R[$cfg.rttbusy]} ms"
}

ran=()
for cfg in $CONFIGS; do
	if [[ $cfg == trellisd && ! -x $TRELLISD ]]; then
		log "trellisd: not built at $TRELLISD (run make), skipped"
		continue
	fi
	if bench_config "$cfg"; then
		ran+=("$cfg")
	else
		log "$cfg: failed, left out of the table"
		lab_dump_logs
	fi
done

# ------------------------------------------------------------------ report
label() { case $1 in veth) echo "veth (no tunnel)" ;; wggo) echo "wireguard-go" ;; *) echo "$1" ;; esac; }
cell()
{
	local cfg=$1 m=$2
	case $m in
	tcp | tcpr | tcp4 | udp) gbps "${R[$cfg.$m]:-0}" ;;
	udploss) echo "${R[$cfg.udploss]:-?}" ;;
	rtt | rttbusy) echo "${R[$cfg.$m]:-?}" ;;
	rss) [[ -n ${R[$cfg.rss]:-} ]] && python3 -c 'import sys; print("%.1f" % (int(sys.argv[1]) / 1024))' "${R[$cfg.rss]}" || echo "-" ;;
	esac
}
ratio()
{
	local m=$1
	[[ -n ${R[trellisd.$m]:-} && -n ${R[wggo.$m]:-} ]] || { echo "-"; return; }
	python3 -c 'import sys
try:
    print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))
except (ValueError, ZeroDivisionError):
    print("-")' "${R[trellisd.$m]}" "${R[wggo.$m]}"
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
	echo "| iperf3 | $(iperf3 --version 2>/dev/null | head -1 | awk '{ print $2 }') |"
	echo "| trellis revision | $rev |"
	echo "| iperf3 run length | $DURATION s |"
	echo
	printf '| metric |'
	for c in "${ran[@]}"; do printf ' %s |' "$(label "$c")"; done
	printf ' trellisd / wireguard-go |\n|---|'
	for c in "${ran[@]}"; do printf -- '---:|'; done
	printf -- '---:|\n'
	for m in tcp tcpr tcp4 udp udploss rtt rttbusy rss; do
		case $m in
		tcp) printf '| TCP, 1 stream, A→B (Gb/s) |' ;;
		tcpr) printf '| TCP, 1 stream, B→A (-R) (Gb/s) |' ;;
		tcp4) printf '| TCP, 4 streams (Gb/s) |' ;;
		udp) printf '| UDP, 1400-byte datagrams, max rate, received (Gb/s) |' ;;
		udploss) printf '| UDP loss (%%) |' ;;
		rtt) printf '| ping RTT, 100 pings 50 ms apart, avg (ms) |' ;;
		rttbusy) printf '| ping RTT, 300 pings 10 ms apart, avg (ms) |' ;;
		rss) printf '| peak RSS of a WireGuard process (MiB) |' ;;
		esac
		for c in "${ran[@]}"; do printf ' %s |' "$(cell "$c" "$m")"; done
		printf ' %s |\n' "$(ratio "$m")"
	done
	echo
	echo "Gb/s are iperf3's receiver-side rates. The ratio column is trellisd divided by"
	echo "wireguard-go (above 1 is better for throughput, below 1 is better for RTT and RSS)."
	echo "Peak RSS is VmHWM from /proc/PID/status, the larger of the two sides."
	[[ " ${ran[*]} " == *" trellisd "* ]] || echo -e "\ntrellisd was not measured in this run (not built, or failed)."
} >"$LAB_TMP/report.md"

cat "$LAB_TMP/report.md"
if [[ $OUT != - ]]; then
	cp "$LAB_TMP/report.md" "$OUT"
	log "wrote $OUT"
fi
LAB_FINISHED=1 # read by lab_cleanup
export LAB_FINISHED
exit 0
