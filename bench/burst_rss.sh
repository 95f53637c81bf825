#!/usr/bin/env bash
# Memory after a burst (issue 14): a pair of trellisd (--wg, release build) and a pair of
# wireguard-go, each over its own veth pair, run one TCP burst (iperf3, BENCH_DURATION s)
# and then sit idle. Recorded for the sending side's tunnel process: VmRSS before the
# burst, its peak (VmHWM), VmRSS right after the burst and at fixed times after it. The
# packet pools of trellisd give their free pages back once a trim period (10 s, the
# wgdev trim timer) passed without the burst, the first trim after the keepalive timer
# saw the growth; wireguard-go's Go runtime returns memory on its own schedule.
# Configurations are interleaved round by round (BENCH_ROUNDS, default 1). Writes an
# "## Memory after a burst" section into docs/benchmarks.md.
#
# Environment:
#   TRELLIS_BENCH_BUILD  release build dir (default <repo>/build, built by `make`)
#   BENCH_DURATION       seconds of the burst (default 10)
#   BENCH_AFTER          seconds after the burst at which VmRSS is read (default "5 30 60")
#   BENCH_ROUNDS         rounds (default 1)
#   BENCH_REF_TRELLISD   another trellisd binary (an earlier revision's release build),
#                        measured like trellisd in a column "ref", for an A/B of a change
#   BENCH_OUT            output file (default <repo>/docs/benchmarks.md; "-" = stdout only)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
export TRELLIS_BUILD=${TRELLIS_BENCH_BUILD:-$REPO/build}
export TRELLISD=$TRELLIS_BUILD/src/node/trellisd
DURATION=${BENCH_DURATION:-10}
AFTER=${BENCH_AFTER:-5 30 60}
ROUNDS=${BENCH_ROUNDS:-1}
OUT=${BENCH_OUT:-$REPO/docs/benchmarks.md}
REF=${BENCH_REF_TRELLISD:-}
IMPLS="trellisd${REF:+ ref} wggo"
LAST=${AFTER##* }
export LAB_TIMEOUT=$(((DURATION + LAST + 120) * 2 * ROUNDS + 120))
export WGGO_LOG_LEVEL=error

# shellcheck source=../tests/lab/lib.sh
source "$REPO/tests/lab/lib.sh"
lab_init
lab_require_trellisd
lab_require iperf3
unset TRELLIS_LAB_IMPL

declare -A R=()
kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
mib() { awk -v v="$1" 'BEGIN { printf "%.1f", v / 1024 }'; }

# run CONFIG ROUND (CONFIG: trellisd, ref or wggo)
run()
{
	local cfg=$1 impl=$1 round=$2 a="a${1:0:2}$2" b="b${1:0:2}$2" ia ib pid t0 t
	if [[ $impl == ref ]]; then
		local -x TRELLISD=$REF
		impl=trellisd
		a="ar$2" b="br$2"
	fi
	lab_ns "$a"
	lab_ns "$b"
	lab_veth "$a" eth0 "$b" eth0
	lab_addr "$a" eth0 192.0.2.1/24
	lab_addr "$b" eth0 192.0.2.2/24
	ia=$(lab_iface "${a:0:2}$round")
	ib=$(lab_iface "${b:0:2}$round")
	lab_key "$a"
	lab_key "$b"
	lab_wg_start "$a" "$impl" "$ia" || return 1
	lab_wg_start "$b" "$impl" "$ib" || return 1
	nsx "$a" wg set "$ia" private-key "$(key_file "$a")" listen-port 51820 \
		peer "$(pub_of "$b")" allowed-ips 100.64.0.2/32 endpoint 192.0.2.2:51820
	nsx "$b" wg set "$ib" private-key "$(key_file "$b")" listen-port 51820 \
		peer "$(pub_of "$a")" allowed-ips 100.64.0.1/32 endpoint 192.0.2.1:51820
	lab_wg_up "$a" "$ia" 100.64.0.1/24
	lab_wg_up "$b" "$ib" 100.64.0.2/24
	ping_until "$a" 100.64.0.2 10 || return 1
	ip netns exec "$(ns_name "$b")" iperf3 -s -B 100.64.0.2 -p 5201 >/dev/null 2>&1 &
	LAB_PIDS+=($!)
	wait_listen "$b" 5201 || return 1
	pid=${LAB_WG_PID[$ia]}
	R[$cfg.before.$round]=$(kib "$pid" VmRSS)
	nsx_timeout $((DURATION + 30)) "$a" iperf3 -c 100.64.0.2 -p 5201 -t "$DURATION" -P 4 \
		>/dev/null 2>&1
	t0=$SECONDS
	R[$cfg.peak.$round]=$(kib "$pid" VmHWM)
	R[$cfg.end.$round]=$(kib "$pid" VmRSS)
	for t in $AFTER; do
		# A reading at a fixed time after the burst: the measurement, not a wait for an event.
		sleep $((t0 + t - SECONDS > 0 ? t0 + t - SECONDS : 0))
		R[$cfg.at$t.$round]=$(kib "$pid" VmRSS)
	done
	log "$cfg round $round: before $(mib "${R[$cfg.before.$round]}"), peak $(mib "${R[$cfg.peak.$round]}")," \
		"end $(mib "${R[$cfg.end.$round]}"), $(for t in $AFTER; do printf '+%ss %s ' "$t" "$(mib "${R[$cfg.at$t.$round]}")"; done)MiB"
	lab_wg_stop "$ia"
	lab_wg_stop "$ib"
}

R[load0]=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= ROUNDS; r++)); do
	for cfg in $IMPLS; do
		run "$cfg" "$r" || { log "$cfg: round $r failed"; lab_dump_logs; }
	done
done
R[load1]=$(cut -d' ' -f1-3 /proc/loadavg)

# cell IMPL WHAT: the median over the rounds, in MiB.
cell()
{
	local r
	for ((r = 1; r <= ROUNDS; r++)); do
		echo "${R[$1.$2.$r]:-}"
	done | sort -g | awk 'NF { a[++n] = $1 } END { if (!n) { print "-"; exit }
		printf "%.1f", a[int((n + 1) / 2)] / 1024 }'
}

{
	echo "## Memory after a burst"
	echo
	echo "\`bench/burst_rss.sh\` (issue 14), $(date -u +'%Y-%m-%d %H:%M UTC'), commit $(git -C "$REPO" rev-parse --short HEAD)."
	echo "The sending side's tunnel process: trellisd \`--wg\` (build \`$TRELLIS_BUILD\`) and"
	echo "wireguard-go $(wireguard-go --version 2>/dev/null | awk '{ print $NF }' | head -n 1), one peer, a $DURATION s iperf3 burst (4 TCP"
	echo "streams), then idle; medians of $ROUNDS round(s), configurations interleaved. Load"
	echo "average ${R[load0]} before, ${R[load1]} after (other builds ran beside it)."
	echo
	[[ -n $REF ]] && echo "Column ref: \`$REF\` ($("$REF" --version 2>/dev/null | awk '{ print $NF }'))."
	[[ -n $REF ]] && echo
	row() { local c s="| $1 |"; for c in $IMPLS; do s+=" $(cell "$c" "$2") |"; done; echo "$s"; }
	if [[ -n $REF ]]; then
		echo "| MiB | trellisd | ref | wireguard-go |"
		echo "|---|---:|---:|---:|"
	else
		echo "| MiB | trellisd | wireguard-go |"
		echo "|---|---:|---:|"
	fi
	row "VmRSS before the burst" before
	row "peak (VmHWM)" peak
	row "VmRSS at the end of the burst" end
	for t in $AFTER; do
		row "VmRSS $t s after the burst" "at$t"
	done
} >"$LAB_TMP/section.md"
cat "$LAB_TMP/section.md"
if [[ $OUT != - ]]; then
	python3 "$REPO/bench/md_section.py" "$OUT" "$LAB_TMP/section.md" "Memory after a burst"
fi
lab_finish
