#!/usr/bin/env bash
# What trellis-control's machine-certificate auto-renewal costs every 5 s (issue 11, serve
# --machine-cert-auto-renew): tests/tools/mcert_renew_bench (release build) on a store of N
# certificates, the old way (every certificate and CA read, then ca_renew_due) and the new
# (store_mcert_due: the index range of those ending within the window) in turns, in one
# run. Writes a "## Machine-certificate auto-renewal" section into docs/benchmarks.md.
#
# Environment:
#   TRELLIS_BENCH_BUILD  build dir (default <repo>/build, the release build of `make`)
#   BENCH_CERTS          certificate counts (default "1000 10000")
#   BENCH_ROUNDS         ticks of each per count, in turns; the table has the medians (50)
#   BENCH_OUT            output file (default <repo>/docs/benchmarks.md; "-" = stdout only)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${TRELLIS_BENCH_BUILD:-$REPO/build}
CERTS=${BENCH_CERTS:-1000 10000}
ROUNDS=${BENCH_ROUNDS:-50}
OUT=${BENCH_OUT:-$REPO/docs/benchmarks.md}
BIN=$BUILD/tests/tools/mcert_renew_bench

die() { echo "mcert_renew.sh: $*" >&2; exit 1; }
[[ -x $BIN ]] || die "$BIN missing: build first (make)"
TMP=$(mktemp -d /var/tmp/trellis-mcertbench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
kind=$(meson introspect --buildoptions "$BUILD" 2>/dev/null | python3 -c '
import json, sys
o = {x["name"]: x["value"] for x in json.load(sys.stdin)}
s = o.get("b_sanitize", "none")
print(o.get("buildtype", "?") + ("" if s in ("none", "") else ", sanitizers " + s))' 2>/dev/null)

declare -A R=()
for n in $CERTS; do
	mkdir -p "$TMP/$n"
	echo "=== N=$n" >&2
	"$BIN" -n "$n" -r "$ROUNDS" "$TMP/$n" >"$TMP/r" || die "N=$n failed"
	while read -r key v; do R[$n.$key]=$v; done <"$TMP/r"
done

{
	echo "## Machine-certificate auto-renewal"
	echo
	echo "\`bench/mcert_renew.sh\` ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load"
	echo "$(cut -d' ' -f1-3 /proc/loadavg) at the end; ${kind:-unknown} build, $(git -C "$REPO" rev-parse --short HEAD)):"
	echo "one tick of \`serve --machine-cert-auto-renew 7d\` (every 5 s) finding the certificates"
	echo "to renew in a SQLite store of N certificates, one per machine, ending uniformly over"
	echo "the next year, each with its DER (as \`ca sign\` keeps it). *before*: every certificate"
	echo "and CA read, then \`ca_renew_due\` (what the server did); *now*: \`store_mcert_due\`,"
	echo "the range of the \`not_after\` index within the window, each checked to be its"
	echo "machine's newest (migration 15). Both found the same certificates. Wall time of the"
	echo "tick on the server's event loop, median of $ROUNDS, the two in turns in one process."
	echo
	printf '| N certificates | due (7 d window) | before, µs | now, µs |\n|---:|---:|---:|---:|\n'
	for n in $CERTS; do
		printf '| %s | %s | %s | %s |\n' "$n" "${R[$n.due]}" "${R[$n.list_us]}" "${R[$n.due_us]}"
	done
} >"$TMP/section.md"
cat "$TMP/section.md"
[[ $OUT == - ]] || python3 "$REPO/bench/md_section.py" "$OUT" "$TMP/section.md" \
	"Machine-certificate auto-renewal"
