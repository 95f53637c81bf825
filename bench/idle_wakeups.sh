#!/usr/bin/env bash
# Idle wakeups (issue 10) and idle memory (issue 14): trellisd and wireguard-go, each a
# WireGuard device with 100 peers, side by side in the same run (each in its own
# namespace, measured over the same windows). A wakeup is a context switch of any of the
# process's threads: the sum of voluntary_ctxt_switches and nonvoluntary_ctxt_switches
# over /proc/PID/task/*/status, read at the start and end of each window. Memory is
# VmRSS after the quiet windows and after the keepalive ones.
#   quiet      100 peers with endpoints, no traffic and no keepalive: nothing to do
#   keepalive  the same with persistent-keepalive 25 s on every peer; the peers do not
#              exist, so each device also retries its handshakes on WireGuard's timers
#              (every 5 s while a keepalive wants a session): both do the same work
# trellisd in control mode adds its control, relay and disco timers; an idle peer adds
# none of disco's (src/disco/engine.h).
# Writes an "## Idle wakeups" section into docs/benchmarks.md (replacing an earlier one).
#
# BENCH_MODE=control runs trellisd in its control-plane mode instead: a real
# trellis-control in the lab, the node joined with an auth key, and its PEERS peers
# simulated by bench/control_scale.c (--hold: registered, streaming, keepalives) in the
# same tailnet; wireguard-go with its PEERS peers as above. Only the quiet windows (the
# simulated peers send no traffic), and an "## Idle in control mode" section. The peers
# report no disco key, so trellisd runs no path discovery for them; its own relay
# connection, STUN rounds and control stream are what it does while idle.
#
# Environment:
#   TRELLIS_BENCH_BUILD  build dir (default <repo>/build, built by `make`)
#   BENCH_PEERS          peers per device (default 100)
#   BENCH_WINDOW         seconds per window (default 30); BENCH_ROUNDS windows per case (3)
#   BENCH_OUT            output file (default <repo>/docs/benchmarks.md; "-" = stdout only)
#   BENCH_MODE           wg (default) or control
#   TRELLIS_CONTROL, TRELLIS_CLI  control mode: the server and CLI (default: the build's)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
export TRELLIS_BUILD=${TRELLIS_BENCH_BUILD:-$REPO/build}
export TRELLISD=$TRELLIS_BUILD/src/node/trellisd
PEERS=${BENCH_PEERS:-100}
WINDOW=${BENCH_WINDOW:-30}
ROUNDS=${BENCH_ROUNDS:-3}
OUT=${BENCH_OUT:-$REPO/docs/benchmarks.md}
MODE=${BENCH_MODE:-wg}
[[ $MODE == wg || $MODE == control ]] || { echo "BENCH_MODE: wg or control" >&2; exit 2; }
export LAB_TIMEOUT=$((2 * ROUNDS * WINDOW + 900))
export WGGO_LOG_LEVEL=error

# shellcheck source=../tests/lab/lib.sh
source "$REPO/tests/lab/lib.sh"
lab_init
lab_require_trellisd
unset TRELLIS_LAB_IMPL

# wakeups PID: context switches of all its threads so far.
wakeups()
{
	cat /proc/"$1"/task/*/status 2>/dev/null |
		awk '/^(non)?voluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }'
}
threads() { ls /proc/"$1"/task | wc -l; }
rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
# rss_split PID: "anonymous / file-backed" resident MiB (smaps_rollup; shared libraries are
# file-backed).
rss_split()
{
	awk '/^Rss:/ { r = $2 } /^Anonymous:/ { a = $2 } END { printf "%.1f / %.1f", a / 1024, (r - a) / 1024 }' \
		"/proc/$1/smaps_rollup"
}
# breakdown PID IMPL: where its resident memory is (bench/smaps_breakdown.py), into
# R[mem.PART.IMPL] (MiB) and R[anon_top.IMPL] (its largest anonymous mappings).
breakdown()
{
	local part kib rest
	while read -r part kib rest; do
		case $part in
		map) R[anon_top.$2]+="${R[anon_top.$2]:+, }$(awk -v s="$kib" -v r="$rest" \
			'BEGIN { split(r, a, " "); printf "%d of %d KiB", a[1], s }')" ;;
		threads) R[mem.threads.$2]=$kib ;;
		*) R[mem.$part.$2]=$(awk -v k="$kib" 'BEGIN { printf "%.2f", k / 1024 }') ;;
		esac
	done < <(python3 "$REPO/bench/smaps_breakdown.py" "$1")
}

# A device per implementation, each in its own namespace with a link towards the peers'
# (absent) endpoints on 192.0.2.0/24: a veth whose other end, in namespace "void",
# answers nothing (no dummy links on this kernel).
declare -A DEV=() PID=()
IMPLS="trellisd wggo"
[[ $MODE == control ]] && IMPLS=wggo
lab_ns void
for impl in $IMPLS; do
	lab_ns "$impl"
	lab_veth "$impl" eth0 void "v${impl:0:2}"
	lab_addr "$impl" eth0 192.0.2.1/24
	lab_key "$impl"
	DEV[$impl]=$(lab_iface "${impl:0:2}")
	lab_wg_start "$impl" "$impl" "${DEV[$impl]}" || lab_finish
	PID[$impl]=${LAB_WG_PID[${DEV[$impl]}]}
	lab_wg_up "$impl" "${DEV[$impl]}" 100.64.0.1/10
done
# One configuration for both: PEERS peers, endpoint 192.0.2.(2+i/250).(i%250), a /32 each.
conf=$LAB_TMP/peers.conf
{
	echo "[Interface]"
	echo "ListenPort = 51820"
	for ((i = 0; i < PEERS; i++)); do
		echo "[Peer]"
		echo "PublicKey = $(wg genkey | wg pubkey)"
		echo "AllowedIPs = 100.64.$((1 + i / 250)).$((i % 250 + 1))/32"
		echo "Endpoint = 192.0.2.$((2 + i % 250)):$((51820 + i / 250))"
	done
} >"$conf"
for impl in $IMPLS; do
	nsx "$impl" wg setconf "${DEV[$impl]}" "$conf"
	nsx "$impl" wg set "${DEV[$impl]}" private-key "$(key_file "$impl")"
	check_eq "$impl has $PEERS peers" "$PEERS" "$(nsx "$impl" wg show "${DEV[$impl]}" peers | wc -l)"
done

# Control mode: trellisd joins a real trellis-control whose other PEERS nodes are simulated.
peer_count() { status_eval "$1" "len(j['peers'])"; }
has_peers() { [[ $(peer_count "$1") == "$2" ]]; }
control_peers()
{
	local key
	lab_require_control_plane
	lab_internet
	lab_public_host ctl 1
	lab_public_host node 11
	lab_control_start ctl 192.0.2.1 8080 || return 1
	key=$(lab_authkey --reusable)
	lab_node_join node node "$key" || return 1
	# shellcheck disable=SC2046 # pkg-config output is a word list
	gcc -O2 -DNDEBUG -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Wno-missing-field-initializers \
		-fno-strict-aliasing -I "$REPO/src" -o "$LAB_TMP/control_scale" \
		"$REPO/bench/control_scale.c" "$REPO"/src/base/*.c "$REPO"/src/crypto/*.c \
		"$REPO"/src/proto/*.c $(pkg-config --cflags --libs jansson libcrypto libzstd) -lpthread ||
		return 1
	# One source address per 32 nodes: the server's limits per source (its upgrade burst
	# of 64) are not what this measures.
	ip netns exec "$(ns_name ctl)" "$LAB_TMP/control_scale" --server 192.0.2.1:8080 \
		--auth-key "$key" -n "$PEERS" --sources $(((PEERS + 31) / 32)) --changes 0 --hold \
		>"$LAB_TMP/sims.out" 2>"$LAB_TMP/sims.err" &
	LAB_PIDS+=($!)
	check "the simulated nodes are up" wait_for 300 grep -q '^holding' "$LAB_TMP/sims.out" ||
		return 1
	check "all $PEERS stream" grep -q "^streams $PEERS\$" "$LAB_TMP/sims.out" || return 1
	check "trellisd (control mode) has $PEERS peers" wait_for 120 has_peers node "$PEERS" ||
		return 1
	PID[trellisd]=${LAB_NODE_PID[node]}
}
if [[ $MODE == control ]]; then
	control_peers || lab_finish
fi

# window CASE ROUND: both measured over the same WINDOW seconds.
declare -A R=()
window()
{
	local w0t w0g
	w0t=$(wakeups "${PID[trellisd]}")
	w0g=$(wakeups "${PID[wggo]}")
	sleep "$WINDOW" # the measurement itself: a fixed window, not a wait for an event
	R[$1.trellisd.$2]=$(awk -v a="$w0t" -v b="$(wakeups "${PID[trellisd]}")" -v w="$WINDOW" \
		'BEGIN { printf "%.2f", (b - a) / w }')
	R[$1.wggo.$2]=$(awk -v a="$w0g" -v b="$(wakeups "${PID[wggo]}")" -v w="$WINDOW" \
		'BEGIN { printf "%.2f", (b - a) / w }')
	log "$1 round $2: trellisd ${R[$1.trellisd.$2]}/s, wireguard-go ${R[$1.wggo.$2]}/s"
}
# median CASE IMPL
median()
{
	local r
	for ((r = 1; r <= ROUNDS; r++)); do
		echo "${R[$1.$2.$r]}"
	done | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}
rounds() { local r s=""; for ((r = 1; r <= ROUNDS; r++)); do s+="${s:+, }${R[$1.$2.$r]}"; done; echo "$s"; }

part_name()
{
	case $1 in
	exe) echo "the program's own file" ;;
	libcrypto) echo "libcrypto + libssl" ;;
	libc) echo "libc, libm, ld.so" ;;
	libs) echo "other shared libraries and files" ;;
	heap) echo "[heap] (main malloc arena)" ;;
	arenas) echo "malloc arenas of other threads" ;;
	stack) echo "main thread's stack" ;;
	tstacks) echo "other threads' stacks" ;;
	anon) echo "other anonymous (pools, large allocations; Go heap)" ;;
	kernel) echo "vdso, vvar" ;;
	total) echo "sum (MiB)" ;;
	esac
}

# Control mode ends after the quiet windows.
control_report()
{
	{
		echo "## Idle in control mode"
		echo
		echo "\`BENCH_MODE=control bench/idle_wakeups.sh\` (issue 14), $(date -u +'%Y-%m-%d %H:%M UTC'), commit $(git -C "$REPO" rev-parse --short HEAD)."
		echo "trellisd in control mode (build \`$TRELLIS_BUILD\`), joined to a real trellis-control in"
		echo "the lab with $PEERS other nodes simulated by \`bench/control_scale.c --hold\` (streaming,"
		echo "keepalives, no traffic, no disco keys), so its netmap has $PEERS peers; beside it"
		echo "wireguard-go $(wireguard-go --version 2>/dev/null | awk '{ print $NF }' | head -n 1) with $PEERS configured peers and no keepalive, over"
		echo "the same $WINDOW s windows ($ROUNDS). Threads: trellisd $(threads "${PID[trellisd]}"), wireguard-go"
		echo "$(threads "${PID[wggo]}"). Load average ${R[load0]} before, $(cut -d' ' -f1-3 /proc/loadavg) after (other builds ran"
		echo "beside it: a busy machine adds involuntary switches to both alike)."
		echo
		echo "| $PEERS peers, idle | trellisd (control mode) | wireguard-go |"
		echo "|---|---:|---:|"
		echo "| resident memory (VmRSS, MiB) | ${R[rss_quiet.trellisd]} | ${R[rss_quiet.wggo]} |"
		echo "| of which anonymous / file-backed (MiB) | ${R[rss_split.trellisd]} | ${R[rss_split.wggo]} |"
		for part in exe libcrypto libc libs heap arenas stack tstacks anon kernel total; do
			echo "| smaps: $(part_name "$part") | ${R[mem.$part.trellisd]} | ${R[mem.$part.wggo]} |"
		done
		echo "| context switches /s (median) | $(median quiet trellisd) | $(median quiet wggo) |"
		echo "| context switches /s, each window | $(rounds quiet trellisd) | $(rounds quiet wggo) |"
		echo
		echo "Largest anonymous mappings (resident of size): trellisd ${R[anon_top.trellisd]};"
		echo "wireguard-go ${R[anon_top.wggo]}."
	} >"$LAB_TMP/section.md"
	cat "$LAB_TMP/section.md"
	if [[ $OUT != - ]]; then
		python3 "$REPO/bench/md_section.py" "$OUT" "$LAB_TMP/section.md" "Idle in control mode"
	fi
	lab_finish
}

R[load0]=$(cut -d' ' -f1-3 /proc/loadavg)
# Settle: startup and the configuration's own work are not idle.
sleep 5 # not a wait for an event: the windows start after a settled configuration
for ((r = 1; r <= ROUNDS; r++)); do
	window quiet "$r"
done
for impl in trellisd wggo; do
	R[rss_quiet.$impl]=$(rss_mib "${PID[$impl]}")
	R[rss_split.$impl]=$(rss_split "${PID[$impl]}")
	breakdown "${PID[$impl]}" "$impl"
done
[[ $MODE == control ]] && control_report
for impl in trellisd wggo; do
	nsx "$impl" wg show "${DEV[$impl]}" peers | while read -r k; do
		nsx "$impl" wg set "${DEV[$impl]}" peer "$k" persistent-keepalive 25
	done
done
sleep 5 # as above
for ((r = 1; r <= ROUNDS; r++)); do
	window keepalive "$r"
done
R[load1]=$(cut -d' ' -f1-3 /proc/loadavg)
for impl in trellisd wggo; do
	R[threads.$impl]=$(threads "${PID[$impl]}")
	R[rss_ka.$impl]=$(rss_mib "${PID[$impl]}")
done

{
	echo "## Idle wakeups"
	echo
	echo "\`bench/idle_wakeups.sh\` (issue 10), $(date -u +'%Y-%m-%d %H:%M UTC'), commit $(git -C "$REPO" rev-parse --short HEAD)."
	echo "trellisd (\`--wg\`, build \`$TRELLIS_BUILD\`) and wireguard-go $(wireguard-go --version 2>/dev/null | awk '{ print $NF }' | head -n 1),"
	echo "each with $PEERS peers, measured over the same $WINDOW s windows ($ROUNDS per case):"
	echo "context switches per second of all the process's threads (voluntary and not, from"
	echo "\`/proc/PID/task/*/status\`; perf is not needed). Threads at the end: trellisd"
	echo "${R[threads.trellisd]}, wireguard-go ${R[threads.wggo]}. Load average ${R[load0]} before,"
	echo "${R[load1]} after (other builds ran beside it: a busy machine adds involuntary switches"
	echo "to both alike)."
	echo
	echo "| $PEERS peers | trellisd /s (median) | wireguard-go /s (median) | trellisd, each window | wireguard-go, each window |"
	echo "|---|---:|---:|---|---|"
	echo "| quiet: no traffic, no keepalive | $(median quiet trellisd) | $(median quiet wggo) | $(rounds quiet trellisd) | $(rounds quiet wggo) |"
	echo "| persistent-keepalive 25 s, peers absent | $(median keepalive trellisd) | $(median keepalive wggo) | $(rounds keepalive trellisd) | $(rounds keepalive wggo) |"
	echo "| resident memory (VmRSS, MiB) after the quiet windows | ${R[rss_quiet.trellisd]} | ${R[rss_quiet.wggo]} | | |"
	echo "| resident memory (VmRSS, MiB) after the keepalive windows | ${R[rss_ka.trellisd]} | ${R[rss_ka.wggo]} | | |"
	echo
	echo "With keepalive and no answer, WireGuard's timers want a handshake initiation every"
	echo "5 s (REKEY_TIMEOUT) per peer: $PEERS peers need about $((PEERS / 5)) sends a second."
} >"$LAB_TMP/section.md"
cat "$LAB_TMP/section.md"
if [[ $OUT != - ]]; then
	python3 "$REPO/bench/md_section.py" "$OUT" "$LAB_TMP/section.md" "Idle wakeups"
fi
lab_finish
