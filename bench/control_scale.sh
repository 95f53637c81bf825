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
# Don't run it while the machine is busy: the numbers would be meaningless.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${TRELLIS_BENCH_BUILD:-$REPO/build}
CONTROL=${TRELLIS_CONTROL:-$BUILD/src/control/trellis-control}
NODES=${BENCH_NODES:-1000 10000}
OUT=${BENCH_OUT:-$REPO/docs/benchmarks.md}
PORT=${BENCH_PORT:-18080}

die() { echo "control_scale.sh: $*" >&2; exit 1; }
[[ -x $CONTROL ]] || die "no trellis-control at $CONTROL (run make)"
command -v pkg-config >/dev/null || die "pkg-config missing"

TMP=$(mktemp -d /tmp/trellis-ctlbench.XXXXXX)
SERVER_PID=
cleanup()
{
	[[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
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
for n in $NODES; do
	state="$TMP/state-$n"
	echo "=== N=$n: trellis-control on 127.0.0.1:$PORT, state $state" >&2
	key=$("$CONTROL" --state "$state" --offline authkey create --reusable) || die "authkey create failed"
	"$CONTROL" --state "$state" serve --listen "127.0.0.1:$PORT" >"$TMP/server-$n.log" 2>&1 &
	SERVER_PID=$!
	for ((k = 0; k < 100; k++)); do
		ss -Hltn "sport = :$PORT" | grep -q . && break
		sleep 0.1
	done
	timeout 3600 "$TMP/control_scale" --server "127.0.0.1:$PORT" --auth-key "$key" -n "$n" \
		--server-pid "$SERVER_PID" >"$TMP/result-$n.txt"
	echo "control_scale exit $?" >&2
	cat "$TMP/result-$n.txt" >&2
	while read -r k v; do
		R[$n.$k]=$v
	done <"$TMP/result-$n.txt"
	kill "$SERVER_PID"
	wait "$SERVER_PID" 2>/dev/null
	SERVER_PID=
	R[$n.db]=$(du -sk "$state" | cut -f1)
	grep -ciE 'error|warn' "$TMP/server-$n.log" | sed 's/^/server log lines with error|warn: /' >&2
	grep -vE "register|registered" "$TMP/server-$n.log" | sed -E "s/^[0-9T:.-]+Z //" | sort | uniq -c | sort -rn | head -n 8 | sed "s/^/server log: /" >&2
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
	for n in $NODES; do printf ' N = %s |' "$n"; done
	printf '\n|---|'
	for n in $NODES; do printf -- '---:|'; done
	printf '\n'
	row() { local label=$1 key=$2 f=${3:-v} n; printf '| %s |' "$label"; for n in $NODES; do printf ' %s |' "$($f "$n.$key")"; done; printf '\n'; }
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
