#!/usr/bin/env bash
# Packet filter benchmark (issue 12): single-stream TCP a -> b through trellisd (release
# build) with no policy on b against a 1,000-rule packet filter on b (the allowing rule
# last), interleaved in the same run: b restarts from its cached netmap (control down)
# with or without the filter before each measurement. Writes the "Packet filter" section
# of docs/benchmarks.md.
#
# Environment:
#   TRELLIS_BENCH_BUILD  release build dir (default <repo>/build, built by `make`)
#   BENCH_DURATION       seconds per iperf3 run (default 10)
#   BENCH_ROUNDS         measurements of each (default 5)
#   BENCH_OUT            output file (default <repo>/docs/benchmarks.md; "-" = stdout only)
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
# Each measurement restarts b and waits for the tunnel: about 100 s at load 30.
export LAB_TIMEOUT=$((ROUNDS * 2 * (DURATION + 150) + 300))
bench_init

# The filter's cost per packet on its own (bench/filter_cost.sh), release flags.
COST_TABLE=$("$REPO/bench/filter_cost.sh") || lab_finish
log "cost per packet (ns):"$'\n'"$COST_TABLE"

lab_tailnet_up a b
A4=$(node_ip a 4) B4=$(node_ip b 4) B6=$(node_ip b 6)
check "b reachable" ping_until a "$B4" 20
lab_control_stop TERM
lab_node_stop b TERM
cp "$LAB_TMP/node-b/netmap.json" "$LAB_TMP/netmap-none.json"
# 999 rules from other sources (two prefixes each, port ranges, TCP or TCP+UDP), then a -> b.
python3 - "$LAB_TMP/netmap-none.json" "$LAB_TMP/netmap-filter.json" "$A4" "$B4" "$B6" <<'PY'
import json, random, sys
src, dst, a4, b4, b6 = sys.argv[1:]
random.seed(12)
j = json.load(open(src))
nm = j if "peers" in j else next(v for v in j.values() if isinstance(v, dict) and "peers" in v)
rules = []
for i in range(999):
    lo = random.randrange(1, 60000)
    hi = lo + random.choice([0, 0, 10, 1000])
    rules.append({"src": ["100.%d.%d.%d/32" % (64 + i % 64, random.randrange(256), random.randrange(256)),
                          "100.127.%d.0/24" % (i % 256)],
                  "dst": [{"ip": b4 + "/32", "ports": [lo, hi]}, {"ip": b6 + "/128", "ports": [lo, hi]}],
                  "proto": random.choice([[6], [6, 17]])})
rules.append({"src": [a4 + "/32"], "dst": [{"ip": b4 + "/32", "ports": [5201, 5201]}], "proto": [6]})
nm["packet_filter"] = {"rules": rules}
json.dump(j, open(dst, "w"))
PY

# measure MODE: b from the cache of MODE, one iperf3 run a -> b; prints Gbit/s.
measure()
{
	local mode=$1 want g
	cp "$LAB_TMP/netmap-$mode.json" "$LAB_TMP/node-b/netmap.json"
	lab_node_start b b || return 1
	want=0
	[[ $mode == filter ]] && want=1000
	rules_are() { [[ $(status_eval b "len(j['filter']['rules'] or [])") == "$want" ]]; }
	wait_for 10 rules_are ||
		{ fail "b has $want rules"; return 1; }
	iperf_server b "$B4" 5201 || { fail "iperf3 server on b"; return 1; }
	ping_until a "$B4" 20 || true
	read -r g _ <<<"$(bench_iperf "$mode" a "$B4" a b)"
	if [[ $mode == filter ]]; then
		check "b counted no drop of the allowed stream" test \
			"$(status_eval b "sum(j['filter']['drops'].values())")" = 0
	fi
	lab_node_stop b TERM
	echo "$g"
}

bench_rounds "" none filter
MN=$(bench_mean SUM none 2)
MF=$(bench_mean SUM filter 2)
DIFF=$(bench_diff SUM none filter)
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
SECTION="$LAB_TMP/section.md"
cat >"$SECTION" <<MD
## Packet filter

\`bench/filter.sh\` ($(date -u +%Y-%m-%d), $(nproc) CPUs, load average $LOAD at the end):
single-stream TCP (iperf3, $DURATION s) from a to b through trellisd ($(bench_build_kind)),
b with no policy and b with a 1,000-rule packet filter (999 rules from other sources
with two prefixes, port ranges and TCP or TCP+UDP each, then the rule admitting a ->
b:5201), interleaved in one run, the order alternating round by round (b restarts from its cached netmap before each).

| round | b's policy | Gbit/s |
|---|---|---:|
${ROWS}
Mean: no policy $MN Gbit/s, 1,000 rules $MF Gbit/s ($DIFF %).

On a loaded machine (other builds on the same cores) the spread between runs can be larger
than the difference the filter makes; its own cost says more. At the no-policy mean a
1,400-byte packet takes $(python3 -c "print('%.1f' % (11200 / $(bench_mean SUM none 6) / 1e3))") µs end to end; the filter alone (\`bench/filter_cost.c\`, same
run), nanoseconds per packet in batches of 64 decrypted TCP packets, the same 1,000 rules
(\`bench/filter_cost.c\` says what each case is; the median batch is the filter's cost, the
mean also counts the time the bench was preempted):

$COST_TABLE
MD
cat "$SECTION"
if [[ $OUT != - ]]; then
	python3 "$REPO/bench/md_section.py" "$OUT" "$SECTION" "Packet filter"
fi
lab_node_stop a
lab_finish
