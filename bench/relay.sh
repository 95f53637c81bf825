#!/usr/bin/env bash
# Relay capacity benchmark: a release-built trellis-relay on loopback and relay_probe
# (tests/tools/relay_probe.c, the real protocol: HTTP upgrade, handshake with proof of the
# node key, frames) as its clients:
#   - hold: N clients (default 10,000), each with its own key, established one after
#     another and kept idle; the relay's RSS before and after gives memory per client
#   - pairs: 2 x P clients (default P = 1,000), client i sending 1200-byte datagrams as
#     fast as it can to client P+i, for S seconds; datagrams per second received
# Writes a "## Relay" section into docs/benchmarks.md (replacing an earlier one).
#
# Environment:
#   TRELLIS_BENCH_BUILD  release build dir (default <repo>/build, built by `make`)
#   BENCH_CLIENTS        idle clients held (default 10000)
#   BENCH_PAIRS          client pairs forwarding (default "1 1000")
#   BENCH_SECONDS        seconds per forwarding run (default 10)
#   BENCH_SOURCES        loopback source addresses of the clients (default 250)
#   BENCH_OUT            output file (default <repo>/docs/benchmarks.md; "-" = stdout only)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${TRELLIS_BENCH_BUILD:-$REPO/build}
RELAY=$BUILD/src/relay/trellis-relay
PROBE=$BUILD/tests/tools/relay_probe
CLIENTS=${BENCH_CLIENTS:-10000}
PAIRS=${BENCH_PAIRS:-1 1000}
SECONDS_RUN=${BENCH_SECONDS:-10}
OUT=${BENCH_OUT:-$REPO/docs/benchmarks.md}
# Loopback source addresses the clients take turns on: the relay's front end allows 64
# upgrades at once (then 20/s) and 4,096 connections per source address.
SOURCES=${BENCH_SOURCES:-250}
PORT=${BENCH_PORT:-18443}
URL=http://127.0.0.1:$PORT

die() { echo "relay.sh: $*" >&2; exit 1; }
[[ -x $RELAY && -x $PROBE ]] || die "no trellis-relay or relay_probe in $BUILD (run make)"

TMP=$(mktemp -d /tmp/trellis-relaybench.XXXXXX)
RELAY_PID= HOLD_PID=
cleanup()
{
	[[ -n $HOLD_PID ]] && kill "$HOLD_PID" 2>/dev/null
	[[ -n $RELAY_PID ]] && kill "$RELAY_PID" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

relay_start()
{
	"$RELAY" --listen "127.0.0.1:$PORT" --stun-port 0 >"$TMP/relay.log" 2>&1 &
	RELAY_PID=$!
	for ((k = 0; k < 100; k++)); do
		ss -Hltn "sport = :$PORT" | grep -q . && return 0
		sleep 0.1
	done
	die "relay did not start"
}
relay_stop() { kill "$RELAY_PID"; wait "$RELAY_PID" 2>/dev/null; RELAY_PID=; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
metric() { curl -sf "$URL/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }

declare -A R=()
R[load]=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- idle clients
relay_start
R[rss0]=$(rss_kib "$RELAY_PID")
mkfifo "$TMP/hold.in"
"$PROBE" hold --url "$URL" --clients "$CLIENTS" --sources "$SOURCES" <"$TMP/hold.in" >"$TMP/hold.out" 2>&1 &
HOLD_PID=$!
exec 9>"$TMP/hold.in"
for ((k = 0; k < 6000; k++)); do
	grep -q '^held' "$TMP/hold.out" && break
	kill -0 "$HOLD_PID" 2>/dev/null || break
	sleep 0.1
done
cat "$TMP/hold.out" >&2
R[held]=$(metric trellis_relay_clients)
R[hold_s]=$(awk '/^held/ { print $4 }' "$TMP/hold.out")
R[rss1]=$(rss_kib "$RELAY_PID")
R[per_client_b]=$(awk -v a="${R[rss0]}" -v b="${R[rss1]}" -v n="${R[held]:-0}" \
	'BEGIN { if (n > 0) printf "%.0f", (b - a) * 1024 / n; else print "-" }')
exec 9>&-
wait "$HOLD_PID" 2>/dev/null
HOLD_PID=
relay_stop

# ---- forwarding between pairs
for p in $PAIRS; do
	relay_start
	c0=$(cpu_ticks "$RELAY_PID")
	"$PROBE" pairs --url "$URL" --pairs "$p" --seconds "$SECONDS_RUN" --size 1200 --sources "$SOURCES" \
		>"$TMP/pairs-$p.out" 2>&1
	c1=$(cpu_ticks "$RELAY_PID")
	cat "$TMP/pairs-$p.out" >&2
	R[$p.pps]=$(awk '/^pairs/ { printf "%.0f", $10 }' "$TMP/pairs-$p.out")
	R[$p.mbs]=$(awk '/^pairs/ { print $12 }' "$TMP/pairs-$p.out")
	R[$p.cpu]=$(awk -v t=$((c1 - c0)) -v s="$SECONDS_RUN" -v hz="$(getconf CLK_TCK)" \
		'BEGIN { printf "%.0f", t / hz / s * 100 }')
	curl -sf "$URL/metrics" >"$TMP/metrics-$p.txt"
	R[$p.drops]=$(awk '/^trellis_relay_drops_total/ { s += $2 } END { print s + 0 }' "$TMP/metrics-$p.txt")
	R[$p.in_pps]=$(awk -v s="$SECONDS_RUN" '$1 == "trellis_relay_packets_total{dir=\"in\"}" { printf "%.0f", $2 / s }' "$TMP/metrics-$p.txt")
	grep -E '^trellis_relay_(drops|packets)_total' "$TMP/metrics-$p.txt" | grep -v ' 0$' >&2
	R[$p.rss]=$(rss_kib "$RELAY_PID")
	relay_stop
done

v() { echo "${R[$1]:--}"; }
section()
{
	local p
	echo "## Relay"
	echo
	echo "Produced by \`bench/relay.sh\`: a release-built \`trellis-relay\` on loopback (plain"
	echo "HTTP, no TLS) and \`relay_probe\` clients speaking the real protocol (HTTP upgrade,"
	echo "handshake with proof of the node key, frames), each client with its own key and"
	echo "connecting from one of $SOURCES loopback addresses in turn (the front end limits"
	echo "upgrades and connections per source address, as it should for real hosts). Idle"
	echo "clients are established one after another and kept; memory per client is the"
	echo "relay's VmRSS growth divided by the clients held (user space only: the kernel's"
	echo "socket buffers come on top, as for any relay). Forwarding: client i sends 1200-byte"
	echo "datagrams as fast as it can to client P+i; the rate is what the receivers got. The"
	echo "clients run on the same 2 cores as the relay, and other helpers were building on"
	echo "this machine during the run: the figures are noisy and on the low side."
	echo
	echo "| | |"
	echo "|---|---|"
	echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
	echo "| CPU | $(lscpu | sed -n 's/^Model name: *//p' | head -n 1) |"
	echo "| cores | $(nproc) |"
	echo "| load average at start (1, 5, 15 min) | $(v load) |"
	echo "| trellis revision | $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo -) |"
	echo
	echo "| metric | trellis-relay | Tailscale derper (published) |"
	echo "|---|---:|---:|"
	echo "| idle clients held (target 10,000) | $(v held) of $CLIENTS | - |"
	echo "| time to establish them one by one (s) | $(v hold_s) | - |"
	echo "| relay RSS before / with them (MiB) | $(awk -v a="${R[rss0]:-0}" -v b="${R[rss1]:-0}" 'BEGIN { printf "%.1f / %.1f", a / 1024, b / 1024 }') | - |"
	echo "| memory per idle client (bytes; target ≤ 16 KiB) | $(v per_client_b) | ~63,000 |"
	for p in $PAIRS; do
		echo "| $p pair(s): datagrams/s taken from the senders | $(v "$p.in_pps") | - |"
		echo "| $p pair(s): datagrams/s received by the receivers (1200 B) | $(v "$p.pps") | - |"
		echo "| $p pair(s): MB/s of frames received | $(v "$p.mbs") | - |"
		echo "| $p pair(s): relay CPU (% of one core) | $(v "$p.cpu") | - |"
		echo "| $p pair(s): datagrams dropped (queue full, rate limit) | $(v "$p.drops") | - |"
	done
	echo
	echo "No other relay is installable here, so derper's figure is the one Tailscale"
	echo "published (about 63 KB per connection after its memory work), not a measurement"
	echo "on this machine. Per-client limits during the forwarding runs are the defaults"
	echo "(128 MiB/s and 200,000 datagrams/s per sender, 64 datagrams queued per receiver)."
	echo "The senders write as fast as TCP takes"
	echo "it, faster than one probe thread can read for the receivers, so the relay drops"
	echo "the oldest queued datagrams of receivers that lag (as it should); the relay's own"
	echo "CPU shows it was not the bottleneck."
	echo
	echo "Relayed single-stream TCP between two nodes, beside direct, is \`bench/relay_path.sh\`"
	echo "(section \"Relayed TCP\")."

}

section >"$TMP/section.md"
if [[ $OUT == - ]]; then
	cat "$TMP/section.md"
	exit 0
fi
python3 "$REPO/bench/md_section.py" "$OUT" "$TMP/section.md" "Relay"
echo "wrote $OUT" >&2
