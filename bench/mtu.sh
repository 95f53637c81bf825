#!/usr/bin/env bash
# MTU benchmark (issue 15): single-stream TCP through a tunnel at an inner MTU, the
# implementations taking turns round by round so that a busy machine slows all of them
# alike. Two namespaces joined by a veth pair whose MTU is the tunnel's + 80.
#
# Environment:
#   BENCH_CASES     "NAME=IMPL[:TRELLISD_PATH]@MTU ..." (IMPL trellisd or wggo), default
#                   "trellisd=trellisd@1420 wireguard-go=wggo@9000 trellisd=trellisd@9000"
#   BENCH_ROUNDS    rounds (default 3); BENCH_DURATION seconds per iperf3 run (default 5)
#   TRELLIS_BENCH_BUILD  release build dir for a trellisd without a path (default <repo>/build)
# Prints a markdown table of the median receiver-side Gb/s per case (and every round's).
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
TRELLIS_BENCH_BUILD=${TRELLIS_BENCH_BUILD:-$REPO/build}
DEFAULT_TRELLISD=$TRELLIS_BENCH_BUILD/src/node/trellisd
CASES=${BENCH_CASES:-trellisd=trellisd@1420 wireguard-go=wggo@9000 trellisd=trellisd@9000}
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-5}
export TRELLISD=$DEFAULT_TRELLISD
export LAB_TIMEOUT=$((ROUNDS * DURATION * 40 + 300))

# shellcheck source=../tests/lab/lib.sh
source "$REPO/tests/lab/lib.sh"
lab_init
lab_require iperf3 ss
unset TRELLIS_LAB_IMPL
export WGGO_LOG_LEVEL=error

lab_two_hosts

declare -A R=() # R[case index] = "gbps gbps ..."
run=0

# one_run IMPL TRELLISD MTU: BPS = the receiver-side bits/s of one iperf3 run (0 if none).
# Runs in the main shell (not in $(...)), so the daemons' PIDs are tracked for cleanup.
one_run()
{
	local impl=$1 bin=$2 mtu=$3 ia ib json port
	BPS=0
	run=$((run + 1))
	ia=$(lab_iface "a$run")
	ib=$(lab_iface "b$run")
	ip -n "$(ns_name a)" link set eth0 mtu $((mtu + 80))
	ip -n "$(ns_name b)" link set eth0 mtu $((mtu + 80))
	TRELLISD=$bin
	lab_wg_start a "$impl" "$ia" || return 1
	lab_wg_start b "$impl" "$ib" || return 1
	nsx a wg set "$ia" private-key "$(key_file a)" listen-port 51820 \
		peer "$(pub_of b)" allowed-ips 100.64.0.2/32 endpoint 192.0.2.2:51820
	nsx b wg set "$ib" private-key "$(key_file b)" listen-port 51820 \
		peer "$(pub_of a)" allowed-ips 100.64.0.1/32 endpoint 192.0.2.1:51820
	lab_wg_up a "$ia" 100.64.0.1/24
	lab_wg_up b "$ib" 100.64.0.2/24
	ip -n "$(ns_name a)" link set "$ia" mtu "$mtu"
	ip -n "$(ns_name b)" link set "$ib" mtu "$mtu"
	ping_until a 100.64.0.2 10 || log "$impl mtu $mtu: tunnel does not come up"
	port=$((5400 + run))
	json="$LAB_TMP/iperf-server-$port.json"
	if iperf_server b 100.64.0.2 "$port"; then
		nsx_timeout $((DURATION + 30)) a iperf3 -c 100.64.0.2 -p "$port" -t "$DURATION" \
			>/dev/null 2>&1
	fi
	iperf_server_wait
	lab_wg_stop "$ia"
	lab_wg_stop "$ib"
	BPS=$(json_get "$json" "j['end']['sum_received']['bits_per_second']" 2>/dev/null || echo 0)
}

read -ra cases <<<"$CASES"
for ((round = 1; round <= ROUNDS; round++)); do
	for i in "${!cases[@]}"; do
		c=${cases[$i]}
		spec=${c#*=}
		impl=${spec%%@*}
		mtu=${spec##*@}
		bin=$DEFAULT_TRELLISD
		[[ $impl == *:* ]] && bin=${impl#*:} impl=${impl%%:*}
		one_run "$impl" "$bin" "$mtu"
		gb=$(python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) / 1e9))' "$BPS")
		log "round $round: ${c%%=*} mtu $mtu: $gb Gb/s"
		R[$i]="${R[$i]:-} $gb"
	done
done

echo "| case | inner MTU | TCP, 1 stream, median (Gb/s) | each round (Gb/s) |"
echo "|---|---:|---:|---|"
for i in "${!cases[@]}"; do
	c=${cases[$i]}
	# shellcheck disable=SC2086
	med=$(python3 -c 'import statistics, sys; print("%.2f" % statistics.median(map(float, sys.argv[1:])))' ${R[$i]})
	echo "| ${c%%=*} | ${c##*@} | $med | $(echo "${R[$i]}" | sed 's/^ //; s/ /, /g') |"
done
lab_finish
