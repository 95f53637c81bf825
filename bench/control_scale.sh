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
#   BENCH_POLICY_RULES   with a number R: the tailnet runs under a policy of R rules (see
#                        policy_section below), changed P times so that every node's filter
#                        changes, then J nodes join under it; each timed until every stream
#                        it affects has it. Writes a "## Control plane under a policy"
#                        section instead.
#   BENCH_POLICY_CHANGES P (default 5), BENCH_JOINS J (default 5)
#   BENCH_OUT            output file (default <repo>/docs/benchmarks.md; "-" = stdout only)
#   BENCH_BEFORE         another trellis-control (say, main's) run in the same loop, after
#                        ours at each N, as the reference column
#   BENCH_RESTART        0: no restart phase (default 1: the server restarts under the nodes)
#   BENCH_CHANGES        endpoint changes timed before the restart (default 5; 0: none)
#   BENCH_RECONNECT_CONCURRENCY  nodes reconnecting at once after the restart (default 256,
#                        as registration; N: every node at once, a storm)
#   BENCH_ZSTD           0: the nodes do not offer compressed full netmaps (default 1)
#   BENCH_PERF           a file: the restarted server runs under `perf record -g` into it
#   BENCH_PROCS          simulator processes for the reconnect after the restart (default 1)
# Only the restart at 10,000 nodes, say:
#   BENCH_NODES=10000 BENCH_CHANGES=0 BENCH_OUT=- bench/control_scale.sh
# Don't run it while the machine is busy: the numbers would be meaningless.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${TRELLIS_BENCH_BUILD:-$REPO/build}
CONTROL=${TRELLIS_CONTROL:-$BUILD/src/control/trellis-control}
NODES=${BENCH_NODES:-1000 10000}
OUT=${BENCH_OUT:-$REPO/docs/benchmarks.md}
PORT=${BENCH_PORT:-18080}
RULES=${BENCH_POLICY_RULES:-}
PCHANGES=${BENCH_POLICY_CHANGES:-5}
JOINS=${BENCH_JOINS:-5}
BEFORE=${BENCH_BEFORE:-}
RESTART=${BENCH_RESTART:-1}
CHANGES=${BENCH_CHANGES:-5}
RECONNECT=${BENCH_RECONNECT_CONCURRENCY:-}
ZSTD=${BENCH_ZSTD:-1}
PERF=${BENCH_PERF:-}
PROCS=${BENCH_PROCS:-1}
MPORT=$((PORT + 1))

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
	$(pkg-config --cflags --libs jansson libcrypto libzstd) -lpthread || die "build failed"

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
	extra=()
	if [[ -n $RULES ]]; then
		# Policies 0..P: rule 0 on port 60999 (the first) or 61000 + I (the changes), the same
		# rules after it. The server hands out addresses in order from 100.64.0.1, so /28
		# group g holds the nodes at 100.64.0.0 + 16 g.
		python3 - "$TMP/policy" "$RULES" "$PCHANGES" "$n" <<'PY' || die "policy generation failed"
import random, sys
import json
base, rules, changes, nodes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
random.seed(7)
def group(g):
    a = 16 * g
    return "100.%d.%d.%d/28" % (64 + a // 65536, a // 256 % 256, a % 256)
joiners = (nodes + 1) // 16  # the group of the first joiner's address; random rules avoid it
rest = [{"action": "accept", "src": ["100.64.0.0/22"], "dst": [group(joiners) + ":22"],
         "proto": "tcp"}]
for i in range(rules - 2):
    a, b = random.randrange(joiners), random.randrange(joiners)
    lo = random.randrange(1, 59000)
    hi = lo + random.choice([0, 0, 10, 100])
    rest.append({"action": "accept", "src": [group(a)], "dst": ["%s:%d-%d" % (group(b), lo, hi)],
                 "proto": random.choice(["tcp", "udp"])})
for c in range(changes + 1):
    port = 61000 + c if c else 60999
    pol = {"acls": [{"action": "accept", "src": ["100.127.255.254/32"], "dst": ["*:%d" % port],
                     "proto": "tcp"}] + rest}
    json.dump(pol, open("%s-%d.hujson" % (base, c), "w"), indent=1)
PY
		printf '#!/bin/sh\nexec "%s" --state "%s" policy set "%s-$1.hujson" >/dev/null\n' \
			"$bin" "$state" "$TMP/policy" >"$TMP/setpolicy.sh"
		chmod +x "$TMP/setpolicy.sh"
		# No endpoint changes: node 0 has a few peers, not every stream.
		extra=(--changes 0 --policy-cmd "$TMP/setpolicy.sh" --policy-changes "$PCHANGES" --joins "$JOINS"
			--join-src 100.64.0.0/22)
	fi
	"$bin" --state "$state" serve --listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$MPORT" \
		>"$TMP/server-$run.log" 2>&1 &
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
		"$bin" --state "$state" serve --listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$MPORT" \
			>>"$TMP/server-$run.log" 2>&1 &
		echo \$! >"$TMP/server.pid"
		if [[ -n "$PERF" ]]; then
			perf record -q -F 999 -g -o "$PERF" -p \$! >/dev/null 2>&1 &
			echo \$! >"$TMP/perf.pid"
		fi
		for ((k = 0; k < 300; k++)); do
			ss -Hltn "sport = :$PORT" | grep -q . && exit 0
			sleep 0.05
		done
		exit 1
	EOF
	chmod +x "$TMP/restart.sh"
	restart=()
	[[ $RESTART == 1 ]] && restart=(--restart-cmd "$TMP/restart.sh" --pid-file "$TMP/server.pid")
	[[ $RESTART == 1 && -n $RECONNECT ]] && restart+=(--reconnect-concurrency "$RECONNECT")
	[[ $RESTART == 1 ]] && restart+=(--procs "$PROCS")
	[[ $ZSTD == 1 ]] || extra+=(--no-zstd)
	[[ -n $RULES ]] || extra+=(--changes "$CHANGES")
	# 10 connections per source address: under the server's per-source cap of connections
	# that are not yet a map stream (docs/security.md), or registration stops at 64 x 64.
	timeout 3600 "$TMP/control_scale" --server "127.0.0.1:$PORT" --auth-key "$key" -n "$n" \
		--sources $(((n + 9) / 10)) --server-pid "$SERVER_PID" "${extra[@]}" "${restart[@]}" \
		>"$TMP/result-$run.txt"
	echo "control_scale exit $?" >&2
	if [[ -f $TMP/perf.pid ]]; then
		kill -INT "$(cat "$TMP/perf.pid")" 2>/dev/null
		while kill -0 "$(cat "$TMP/perf.pid")" 2>/dev/null; do sleep 0.1; done
		rm -f "$TMP/perf.pid"
	fi
	cat "$TMP/result-$run.txt" >&2
	# What the server counted (since its last start): why connections were dropped, resumes.
	curl -s "http://127.0.0.1:$MPORT/metrics" >"$TMP/metrics-$run.txt"
	grep -E '^trellis_control_(drops_total|resume|netmap_bytes|netmaps_compressed|connections_total|late_reads)' \
		"$TMP/metrics-$run.txt" | grep -v ' 0$' | sed "s/^/server metric: /" >&2
	echo "load_avg_end $(cut -d' ' -f1 /proc/loadavg)" >>"$TMP/result-$run.txt"
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
# The machine's table (with an extra row, if given), then the head of the metrics table.
machine_and_head()
{
	echo "| | |"
	echo "|---|---|"
	echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
	echo "| CPU | $(lscpu | sed -n 's/^Model name: *//p' | head -n 1) |"
	echo "| cores | $(nproc) |"
	[[ -n ${1:-} ]] && echo "$1"
	echo "| trellis revision | $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo -) |"
	echo
	printf '| metric |'
	for run in "${RUNS[@]}"; do printf ' N = %s%s |' "${run#*:}" "$([[ -n $BEFORE ]] && echo ", ${run%%:*}")"; done
	printf '\n|---|'
	for run in "${RUNS[@]}"; do printf -- '---:|'; done
	printf '\n'
}
# row LABEL KEY [FORMAT]: one metric for every run (N, and ours or the reference).
row() { local label=$1 key=$2 f=${3:-v} run; printf '| %s |' "$label"; for run in "${RUNS[@]}"; do printf ' %s |' "$($f "$run.$key")"; done; printf '\n'; }
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
	machine_and_head
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
		row "restart: load average (1 min) before, after" restart_load
		row "restart: nodes reconnecting at once" restart_reconnect_concurrency
		row "restart: streams open before" restart_streams
		row "restart: nodes holding a current netmap after" restart_synced
		row "restart: time until all hold it (s)" restart_sync_s
		row "restart: resumed with a delta" restart_resumed
		row "restart: sent a full netmap" restart_full
		row "restart: reconnects retried (trellisd's backoff)" restart_retries
		row "restart: SYNs the full accept queue turned away" restart_listen_overflows
		row "restart: MiB the nodes received" restart_mib_received
		row "restart: server CPU until all hold it (s)" restart_server_cpu_s
		row "restart: simulator CPU until all hold it (s)" restart_sim_cpu_s
		row "restart: simulator processes" restart_sim_procs
		row "restart: server CPU until quiet (s)" restart_server_cpu_quiet_s
		row "restart: a change after it reached (streams)" restart_change_reached
		row "restart: connections lost after it" restart_dead_connections
	fi
	echo
	echo "Anchor: Headscale users report its server saturating at 300–600 nodes. Target:"
	echo "10,000 nodes on this 2-core machine, a change at every stream in under 1 s,"
	echo "≥ 1,000 registrations/s. The simulator shares the 2 cores with the server."
}

policy_section()
{
	local n
	echo "## Control plane under a policy"
	echo
	echo "Produced by \`BENCH_POLICY_RULES=$RULES bench/control_scale.sh\` (issue 12's control"
	echo "target): as \"Control plane\" above, but the tailnet runs under a policy of $RULES rules"
	echo "(set once the nodes registered, before their streams open): rule 0 lets one address"
	echo "outside the tailnet reach every node on one TCP port (so every node's filter holds"
	echo "it), rule 1 lets the first"
	echo "1,023 nodes (100.64.0.0/22) reach the /28 where joining nodes get their addresses, and"
	echo "$((RULES - 2)) random rules each let one /28 of nodes reach another /28 on a port range"
	echo "below 60000 (TCP or UDP), so a node sees a few dozen peers. A policy change is"
	echo "\`trellis-control policy set\` (the admin CLI, a new process, through the running"
	echo "server's admin socket) of the same policy with rule 0 on another port, so every"
	echo "stream gets a new filter; it is timed from starting the command until the first and"
	echo "until every stream received the new filter. A join is a new node connecting,"
	echo "registering and opening its stream, timed from its connect until each stream of the"
	echo "first 1,023 nodes (those that may see it) received it (medians and worst of"
	echo "$PCHANGES changes and $JOINS joins). Server CPU is the server process's utime+stime over"
	echo "the same interval. The simulator shares the machine with the server."
	echo
	machine_and_head "| load average at the end | $(cut -d' ' -f1-3 /proc/loadavg) |"
	row "nodes registered" registered
	row "map streams open" streams
	row "time to open all map streams (s)" map_all_s
	row "policy change → first stream, median (ms)" policy_change_first_median_ms
	row "policy change → all streams, median (ms)" policy_change_median_ms
	row "policy change → all streams, worst (ms)" policy_change_max_ms
	row "server CPU per policy change, median (ms)" policy_change_cpu_median_ms
	row "node joins → first stream, median (ms)" join_first_median_ms
	row "node joins → all streams, median (ms)" join_median_ms
	row "node joins → all streams, worst (ms)" join_max_ms
	row "server CPU per join, median (ms)" join_cpu_median_ms
	row "server peak RSS (MiB)" server_rss_hwm_kib mib
	row "connections lost" dead_connections
	echo
	echo "Target: a one-node change under a 1,000-rule policy at every affected stream in"
	echo "under 1 s with 10,000 nodes."
}

if [[ -n $RULES ]]; then
	policy_section >"$TMP/section.md"
	title="Control plane under a policy"
else
	section >"$TMP/section.md"
	title="Control plane"
fi
if [[ $OUT == - ]]; then
	cat "$TMP/section.md"
	exit 0
fi
# Replace an existing section of that title (up to the next "## " heading), or append.
python3 "$REPO/bench/md_section.py" "$OUT" "$TMP/section.md" "$title"
echo "wrote the $title section of $OUT" >&2
