#!/usr/bin/env bash
# Control-plane scale benchmark: bench/control_scale.c (one process simulating N nodes
# over the real protocol) against a trellis-control on loopback with a fresh state dir,
# for N = 1,000 and 10,000. Writes a "## Control plane" section into docs/benchmarks.md
# (replacing an earlier one, leaving the rest of the file alone).
#
# Environment:
#   TRELLIS_BENCH_BUILD  release build dir holding src/control/trellis-control
#                        (default <repo>/build, built by `make`)
#   BENCH_NODES          node counts (default "1000 10000")
#   BENCH_OUT            output file (default <repo>/docs/benchmarks.md; "-" = stdout only)
#   BENCH_BEFORE         another trellis-control (say, main's) run in the same loop, after
#                        ours at each N, as the reference column
#   BENCH_RESTART        0: no restart phase (default 1: the server restarts under the nodes)
# Don't run it while the machine is busy: the numbers would be meaningless.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${TRELLIS_BENCH_BUILD:-$REPO/build}
CONTROL=${TRELLIS_CONTROL:-$BUILD/src/control/trellis-control}
NODES=${BENCH_NODES:-1000 10000}
OUT=${BENCH_OUT:-$REPO/docs/benchmarks.md}
PORT=${BENCH_PORT:-18080}
BEFORE=${BENCH_BEFORE:-}
RESTART=${BENCH_RESTART:-1}

die() { echo "control_scale.sh: $*" >&2; exit 1; }
[[ -x $CONTROL ]] || die "no trellis-control at $CONTROL (run make)"
command -v pkg-config >/dev/null || die "pkg-config missing"

TMP=$(mktemp -d /tmp/trellis-ctlbench.XXXXXX)
SERVER_PID=
cleanup()
{
	[[ -f $TMP/server.pid ]] && SERVER_PID=$(cat "$TMP/server.pid")
	[[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The simulator links the project's own protocol code (base, crypto, proto), built here
# with release flags: the same sources as the meson libraries, no second build system.
echo "building control_scale (release)" >&2
# shellcheck disable=SC2046 # pkg-config output is a word list
gcc -O2 -DNDEBUG -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Wno-missing-field-initializers \
	-fno-strict-aliasing -I "$REPO/src" -o "$TMP/control_scale" "$REPO/bench/control_scale.c" \
	"$REPO"/src/base/*.c "$REPO"/src/crypto/*.c "$REPO"/src/proto/*.c \
	$(pkg-config --cflags --libs jansson libcrypto) -lpthread || die "build failed"

# The server needs a descriptor per node too.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

declare -A R=()
RUNS=()
for n in $NODES; do
	RUNS+=("after:$n")
	[[ -n $BEFORE ]] && RUNS+=("before:$n")
done
for run in "${RUNS[@]}"; do
	label=${run%%:*} n=${run#*:}
	bin=$CONTROL
	[[ $label == before ]] && bin=$BEFORE
	[[ -x $bin ]] || die "no trellis-control at $bin"
	state="$TMP/state-$run"
	echo "=== $label N=$n: $bin on 127.0.0.1:$PORT, state $state" >&2
	key=$("$bin" --state "$state" --offline authkey create --reusable) || die "authkey create failed"
	"$bin" --state "$state" serve --listen "127.0.0.1:$PORT" >"$TMP/server-$run.log" 2>&1 &
	SERVER_PID=$!
	echo "$SERVER_PID" >"$TMP/server.pid"
	for ((k = 0; k < 100; k++)); do
		ss -Hltn "sport = :$PORT" | grep -q . && break
		sleep 0.1
	done
	# The restart: SIGTERM (the server says goodbye to its streams), wait until it is gone,
	# start it again on the same state, wait until it listens.
	cat >"$TMP/restart.sh" <<-EOF
		#!/bin/bash
		pid=\$(cat "$TMP/server.pid")
		kill "\$pid"
		while kill -0 "\$pid" 2>/dev/null; do sleep 0.05; done
		"$bin" --state "$state" serve --listen "127.0.0.1:$PORT" >>"$TMP/server-$run.log" 2>&1 &
		echo \$! >"$TMP/server.pid"
		for ((k = 0; k < 300; k++)); do
			ss -Hltn "sport = :$PORT" | grep -q . && exit 0
			sleep 0.05
		done
		exit 1
	EOF
	chmod +x "$TMP/restart.sh"
	restart=()
	[[ $RESTART == 1 ]] && restart=(--restart-cmd "$TMP/restart.sh" --pid-file "$TMP/server.pid")
	# 10 connections per source address: under the server's per-source cap of connections
	# that are not yet a map stream (docs/security.md), or registration stops at 64 x 64.
	timeout 3600 "$TMP/control_scale" --server "127.0.0.1:$PORT" --auth-key "$key" -n "$n" \
		--sources $(((n + 9) / 10)) --server-pid "$SERVER_PID" "${restart[@]}" \
		>"$TMP/result-$run.txt"
	echo "control_scale exit $?" >&2
	cat "$TMP/result-$run.txt" >&2
	while read -r k v; do
		R[$run.$k]=$v
	done <"$TMP/result-$run.txt"
	SERVER_PID=$(cat "$TMP/server.pid")
	kill "$SERVER_PID"
	while kill -0 "$SERVER_PID" 2>/dev/null; do sleep 0.05; done
	SERVER_PID=
	R[$run.db]=$(du -sk "$state" | cut -f1)
	grep -ciE 'error|warn' "$TMP/server-$run.log" | sed 's/^/server log lines with error|warn: /' >&2
	grep -vE "register|registered|online|offline" "$TMP/server-$run.log" | sed -E "s/^[0-9T:.-]+Z //" | sort | uniq -c | sort -rn | head -n 8 | sed "s/^/server log: /" >&2
	rm -rf "$state"
done

v() { echo "${R[$1]:--}"; }
mib() { [[ ${R[$1]:-} =~ ^[0-9]+$ ]] && awk -v k="${R[$1]}" 'BEGIN { printf "%.1f", k / 1024 }' || echo -; }
section()
{
	local n
	echo "## Control plane"
	echo
	echo "Produced by \`bench/control_scale.sh\`: \`bench/control_scale\`, one process simulating"
	echo "N nodes over the real protocol (HTTP upgrade, Noise_IK, framed JSON), against a"
	echo "release-built \`trellis-control serve\` on loopback with a fresh SQLite state dir, all"
	echo "nodes in one tailnet (every node is every other node's peer). Registrations use one"
	echo "reusable key, 256 in flight; map streams are opened 64 at a time; the endpoint change"
	echo "is node 0 sending \`endpoints\`, timed until every other stream received it (median"
	echo "and worst of 5). Server CPU is utime+stime from /proc/PID/stat, RSS is VmRSS with"
	echo "every stream open and VmHWM at the end."
	echo
	echo "| | |"
	echo "|---|---|"
	echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
	echo "| CPU | $(lscpu | sed -n 's/^Model name: *//p' | head -n 1) |"
	echo "| cores | $(nproc) |"
	echo "| trellis revision | $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo -) |"
	echo
	printf '| metric |'
	for run in "${RUNS[@]}"; do printf ' N = %s%s |' "${run#*:}" "$([[ -n $BEFORE ]] && echo ", ${run%%:*}")"; done
	printf '\n|---|'
	for run in "${RUNS[@]}"; do printf -- '---:|'; done
	printf '\n'
	row() { local label=$1 key=$2 f=${3:-v} run; printf '| %s |' "$label"; for run in "${RUNS[@]}"; do printf ' %s |' "$($f "$run.$key")"; done; printf '\n'; }
	row "nodes registered" registered
	row "registrations per second" register_per_s
	row "server CPU during registration (s)" server_cpu_register_s
	row "map streams open" streams
	row "time to open all map streams (s)" map_all_s
	row "server CPU while opening streams (s)" server_cpu_map_s
	row "endpoint change → all streams, median (ms)" change_median_ms
	row "endpoint change → all streams, worst (ms)" change_max_ms
	row "server RSS, all streams open, idle (MiB)" server_rss_kib mib
	row "server peak RSS (MiB)" server_rss_hwm_kib mib
	row "server CPU when idle (% of a core)" server_cpu_idle_pct
	row "state dir on disk (MiB)" db mib
	row "connections lost" dead_connections
	if [[ $RESTART == 1 ]]; then
		row "restart: streams open before" restart_streams
		row "restart: nodes holding a current netmap after" restart_synced
		row "restart: time until all hold it (s)" restart_sync_s
		row "restart: resumed with a delta" restart_resumed
		row "restart: sent a full netmap" restart_full
		row "restart: MiB the nodes received" restart_mib_received
		row "restart: server CPU until all hold it (s)" restart_server_cpu_s
		row "restart: server CPU until quiet (s)" restart_server_cpu_quiet_s
		row "restart: a change after it reached (streams)" restart_change_reached
		row "restart: connections lost after it" restart_dead_connections
	fi
	echo
	echo "Anchor: Headscale users report its server saturating at 300–600 nodes. Target:"
	echo "10,000 nodes on this 2-core machine, a change at every stream in under 1 s,"
	echo "≥ 1,000 registrations/s. The simulator shares the 2 cores with the server."
}

section >"$TMP/section.md"
if [[ $OUT == - ]]; then
	cat "$TMP/section.md"
	exit 0
fi
# Replace an existing "## Control plane" section (up to the next "## " heading), or append.
python3 "$REPO/bench/md_section.py" "$OUT" "$TMP/section.md" "Control plane"
echo "wrote the Control plane section of $OUT" >&2
