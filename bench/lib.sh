# shellcheck shell=bash
# Shared by the throughput benchmarks that run trellisd in the lab (bench/flow.sh,
# bench/filter.sh, bench/filter_policy.sh): the knobs they all take, the lab library, one
# iperf3 run with the daemons' CPU, and rounds of two modes interleaved. Source it, export
# LAB_TIMEOUT from DURATION and ROUNDS, then call bench_init.
#
# Environment:
#   TRELLIS_BENCH_BUILD  build dir (default <repo>/build, the release build of `make`)
#   BENCH_DURATION       seconds per iperf3 run (default 10)
#   BENCH_ROUNDS         rounds of both modes (default 5)
#   BENCH_OUT            output file (default <repo>/docs/benchmarks.md; "-" = stdout only)
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export TRELLIS_BUILD=${TRELLIS_BENCH_BUILD:-$REPO/build}
export TRELLISD=$TRELLIS_BUILD/src/node/trellisd
DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-5}
# shellcheck disable=SC2034 # the scripts write their section there
OUT=${BENCH_OUT:-$REPO/docs/benchmarks.md}

# shellcheck source=../tests/lab/lib.sh
source "$REPO/tests/lab/lib.sh"

# bench_init: the lab (watchdog LAB_TIMEOUT), with the control plane and iperf3.
bench_init()
{
	lab_init
	lab_require_control_plane
	lab_require iperf3
}

# bench_build_kind: what TRELLIS_BUILD is, for the results ("release build", "debug build
# with address,undefined sanitizers"): a figure from a sanitizer build is not comparable.
bench_build_kind()
{
	meson introspect --buildoptions "$TRELLIS_BUILD" 2>/dev/null | python3 -c '
import json, sys
try:
    o = {x["name"]: x["value"] for x in json.load(sys.stdin)}
except ValueError:
    print("build of unknown kind"); sys.exit()
s = o.get("b_sanitize", "none")
print(o.get("buildtype", "unknown") + " build" + ("" if s == "none" else " with " + s + " sanitizers"))'
}

# bench_ticks NAME...: the node daemons' utime + stime together, in clock ticks.
bench_ticks()
{
	local n t=0
	for n; do
		t=$((t + $(awk '{ print $14 + $15 }' "/proc/${LAB_NODE_PID[$n]}/stat")))
	done
	echo "$t"
}

# bench_iperf TAG FROM ADDR NAME...: one single-stream iperf3 run of DURATION s from node
# namespace FROM to the iperf3 server at ADDR:5201 (the caller starts it); prints
# "Gbit/s CPU-ms-per-MB": the daemons NAME... (utime + stime from /proc, which load disturbs
# less than the rate) over the run per MB received. iperf3's JSON is $LAB_TMP/iperf-TAG.json.
bench_iperf()
{
	local tag=$1 from=$2 addr=$3 json bps bytes t0 t1
	shift 3
	json="$LAB_TMP/iperf-$tag.json"
	t0=$(bench_ticks "$@")
	nsx_timeout $((DURATION + 30)) "$from" iperf3 -c "$addr" -p 5201 -t "$DURATION" -J \
		>"$json" 2>/dev/null
	t1=$(bench_ticks "$@")
	bps=$(json_get "$json" "j['end']['sum_received']['bits_per_second']" 2>/dev/null || echo 0)
	bytes=$(json_get "$json" "j['end']['sum_received']['bytes']" 2>/dev/null || echo 0)
	python3 -c 'import sys
bps, b, t, hz = (float(x) for x in sys.argv[1:5])
print("%.3f %.2f" % (bps / 1e9, t / hz * 1000 / (b / 1e6) if b else 0))' \
		"$bps" "$bytes" $((t1 - t0)) "$(getconf CLK_TCK)"
}

# bench_rounds LABEL MODE1 MODE2: ROUNDS rounds of `measure MODE` (the script's; its last
# line is "Gbit/s [CPU-ms-per-MB]"), both modes each round, the order alternating round by
# round so neither always runs on a warmer machine. Fills ROWS (a markdown table row a run:
# round, mode, the figures) and SUM, CPU and RUNS per mode; logs "round N LABEL MODE: ...".
declare -A SUM=() CPU=() RUNS=()
ROWS=""
bench_rounds()
{
	local label=$1 round mode order g c
	for ((round = 1; round <= ROUNDS; round++)); do
		order="$2 $3"
		((round % 2 == 0)) && order="$3 $2"
		for mode in $order; do
			read -r g c <<<"$(measure "$mode" | tail -n 1)"
			log "round $round $label$mode: ${g:-?} Gbit/s${c:+, $c ms CPU per MB}"
			ROWS+="| $round | $mode | ${g:-0} |${c:+ $c |}"$'\n'
			SUM[$mode]=$(python3 -c "print(${SUM[$mode]:-0} + ${g:-0})")
			CPU[$mode]=$(python3 -c "print(${CPU[$mode]:-0} + ${c:-0})")
			RUNS[$mode]=$((${RUNS[$mode]:-0} + 1))
		done
	done
}

# bench_mean SUM|CPU MODE [DIGITS]: the mean over MODE's runs (3 digits by default).
bench_mean()
{
	local -n v=$1
	python3 -c "print('%.${3:-3}f' % (${v[$2]} / ${RUNS[$2]}))"
}

# bench_diff SUM|CPU BASE OTHER: OTHER's mean against BASE's, in percent ("+1.2").
bench_diff()
{
	local -n v=$1
	python3 -c "print('%+.1f' % ((${v[$3]} / ${RUNS[$3]}) / (${v[$2]} / ${RUNS[$2]}) * 100 - 100))"
}
