#!/usr/bin/env bash
# Packet filter under a real policy (issue 12, "≤ 5 % slower"): single-stream TCP a -> b
# through trellisd with the tailnet's policy switched between allow-all and a realistic
# policy of 50 rules (groups, tags, hosts, port lists, protocols; the rule that lets a reach
# b in the middle), interleaved round by round with the order alternating. The policy goes
# in with `trellis-control policy set` on the running server and each run starts once b
# holds the compiled filter of that policy (its rule count checked), so both modes run the
# same daemons: only the filter differs. Reports iperf3's rate and both daemons' CPU per MB
# (utime + stime from /proc, which load disturbs less than the rate). Writes the "Packet
# filter: allow-all vs a 50-rule policy" section of docs/benchmarks.md.
#
# Environment:
#   TRELLIS_BENCH_BUILD  build dir (default <repo>/build, the release build of `make`)
#   BENCH_DURATION       seconds per iperf3 run (default 10)
#   BENCH_ROUNDS         rounds of both policies (default 5)
#   BENCH_OUT            output file (default <repo>/docs/benchmarks.md; "-" = stdout only)
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
export LAB_TIMEOUT=$((ROUNDS * 2 * (DURATION + 90) + 600))
bench_init

lab_internet
lab_public_host ctl 1
lab_public_host a 11
lab_public_host b 12
lab_control_start ctl 192.0.2.1 8080 || lab_finish
check "users create dev@example.com" ctl users create dev@example.com
lab_node_join a a "$(lab_authkey --user dev@example.com)"
lab_node_join b b "$(lab_authkey --tags tag:build)"
B4=$(node_ip b 4)
check "b reachable" ping_until a "$B4" 20

cat >"$LAB_TMP/allow-all.hujson" <<'POL'
{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}
POL
# 50 rules as a company of a dozen teams writes them: 20 by hand, 30 per team. a is
# dev@example.com (group:eng), b is tag:build; rule 13 lets eng reach the build servers.
python3 - "$LAB_TMP/policy50.hujson" <<'PY'
import json, sys
teams = ["t%02d" % i for i in range(10)]
groups = {
    "group:eng": ["dev@example.com", "ann@example.com", "bob@example.com"],
    "group:ops": ["ops1@example.com", "ops2@example.com"],
    "group:security": ["sec@example.com"],
    "group:sales": ["sal1@example.com", "sal2@example.com"],
    "group:contractors": ["c1@partner.example", "c2@partner.example"],
    "group:finance": ["fin@example.com"],
}
for t in teams:
    groups["group:" + t] = ["%s-%d@example.com" % (t, k) for k in range(3)]
tags = ["tag:web", "tag:db", "tag:build", "tag:ci", "tag:monitoring", "tag:staging",
        "tag:vpn", "tag:mail", "tag:wiki", "tag:crm"]
tags += ["tag:svc-" + t for t in teams] + ["tag:db-" + t for t in teams]
owners = {t: ["group:ops"] for t in tags}
# The lab has two nodes: the other people's devices stand in as hosts (tailnet prefixes),
# so the rules they source compile into b's filter as they would in a tailnet of hundreds.
hosts = {"office": "198.18.10.0/24", "lab": "198.18.20.0/24", "printer": "198.18.10.7",
         "legacy-db": "198.18.30.5", "ops-devices": "100.100.1.0/28",
         "scanner": "100.100.2.9", "prometheus": "100.100.3.4", "ci-runners": "100.100.4.0/26"}
for i, t in enumerate(teams):
    hosts[t + "-devices"] = "100.101.%d.0/27" % i
def r(src, dst, proto=None):
    x = {"action": "accept", "src": src, "dst": dst}
    if proto:
        x["proto"] = proto
    return x
acls = [
    r(["group:ops", "ops-devices"], ["*:22"], "tcp"),
    r(["group:security", "scanner"], ["*:*"]),
    r(["tag:monitoring", "prometheus"], ["*:9100", "*:9115"], "tcp"),
    r(["tag:monitoring", "prometheus"], ["*:*"], "icmp"),
    r(["autogroup:member"], ["autogroup:self:*"]),
    r(["autogroup:member"], ["tag:web:80,443"], "tcp"),
    r(["autogroup:member"], ["tag:wiki:443", "tag:mail:25,465,587,993"], "tcp"),
    r(["group:sales"], ["tag:crm:443"], "tcp"),
    r(["group:finance"], ["tag:crm:443", "legacy-db:1433"], "tcp"),
    r(["group:contractors"], ["tag:staging:80,443"], "tcp"),
    r(["group:eng"], ["tag:staging:*"]),
    r(["group:eng"], ["tag:web:22,8000-8999"], "tcp"),
    r(["group:eng"], ["tag:build:22,443,5000-5999"], "tcp"),
    r(["group:eng"], ["tag:db:5432"], "tcp"),
    r(["tag:ci", "ci-runners"], ["tag:build:22,8080"], "tcp"),
    r(["tag:build"], ["tag:ci:443"], "tcp"),
    r(["tag:web"], ["tag:db:5432,6379"], "tcp"),
    r(["office", "lab"], ["tag:vpn:51820"], "udp"),
    r(["tag:vpn"], ["printer:631,9100"], "tcp"),
    r(["group:ops"], ["tag:vpn:*", "tag:mail:*"]),
]
for i, t in enumerate(teams):
    dev = ["group:" + t, t + "-devices"]
    acls.append(r(dev, ["tag:svc-%s:443,8443" % t], "tcp"))
    acls.append(r(dev + ["tag:svc-" + t], ["tag:db-%s:5432" % t], "tcp"))
    # Each team's own build port range on the build servers.
    acls.append(r(dev, ["tag:build:%d-%d" % (10000 + 100 * i, 10099 + 100 * i)],
                  "udp" if i % 2 else "tcp"))
assert len(acls) == 50, len(acls)
pol = {"groups": groups, "tagOwners": owners, "hosts": hosts, "acls": acls,
       "tests": [{"src": "dev@example.com", "accept": ["tag:build:5201"],
                  "deny": ["tag:crm:443"]}]}
open(sys.argv[1], "w").write("// bench/filter_policy.sh: a realistic policy of 50 rules\n" +
                             json.dumps(pol, indent=1) + "\n")
PY

filter_rules() { status_eval b "len((j.get('filter') or {}).get('rules') or [])"; }
# policy MODE: MODE's policy set on the server, and b holding its filter (rule count in RULES).
declare -A RULES=()
policy()
{
	local mode=$1 prev
	ctl policy set "$LAB_TMP/$mode.hujson" >/dev/null || { fail "policy set $mode"; return 1; }
	if [[ -z ${RULES[$mode]:-} ]]; then
		# The first time: wait for the filter to change, then for the count to settle.
		prev=$(filter_rules)
		filter_differs() { [[ $(filter_rules) != "$prev" ]]; }
		wait_for 20 filter_differs || true
		RULES[$mode]=$(filter_rules)
		log "$mode: b's filter has ${RULES[$mode]} rules"
		return 0
	fi
	filter_is() { [[ $(filter_rules) == "${RULES[$mode]}" ]]; }
	wait_for 20 filter_is ||
		{ fail "b has the $mode filter (${RULES[$mode]} rules)"; return 1; }
}
# The counts first (the second of a pair can only be told by a change from the first).
policy allow-all
policy policy50
check "the two policies give b different filters" test "${RULES[allow-all]}" != "${RULES[policy50]}"

# measure MODE: one iperf3 run a -> b under MODE's policy; prints "Gbit/s cpu_ms_per_MB".
measure()
{
	local mode=$1 figures
	policy "$mode" || return 1
	iperf_server b "$B4" 5201 || { fail "iperf3 server on b"; return 1; }
	figures=$(bench_iperf "$mode" a "$B4" a b)
	# stdout is the figures: a refused packet of the stream fails the run on stderr.
	[[ $(status_eval b "sum(j['filter']['drops'].values())") == 0 ]] ||
		echo "b refused packets of the allowed stream under $mode" >&2
	echo "$figures"
}
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
bench_rounds "" allow-all policy50
G_A=$(bench_mean SUM allow-all)
G_P=$(bench_mean SUM policy50)
C_A=$(bench_mean CPU allow-all 2)
C_P=$(bench_mean CPU policy50 2)
G_DIFF=$(bench_diff SUM allow-all policy50)
C_DIFF=$(bench_diff CPU allow-all policy50)
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
BUILD_KIND=$(meson introspect --buildoptions "$TRELLIS_BUILD" 2>/dev/null |
	python3 -c 'import json,sys; o={x["name"]: x["value"] for x in json.load(sys.stdin)}; print("buildtype %s, optimization %s, sanitizers %s" % (o["buildtype"], o["optimization"], o["b_sanitize"]))' 2>/dev/null || echo "unknown build")
SECTION="$LAB_TMP/section.md"
cat >"$SECTION" <<MD
## Packet filter: allow-all vs a 50-rule policy

\`bench/filter_policy.sh\` (\`make bench-filter-policy\`; $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) CPUs,
load average $LOAD0 at the start and $LOAD at the end; trellisd $BUILD_KIND):
single-stream TCP (iperf3, $DURATION s) from a (dev@example.com, group:eng) to b (tag:build)
through trellisd, the tailnet's policy switched with \`trellis-control policy set\` before each
run between allow-all (\`*\` -> \`*:*\`; b's filter: ${RULES[allow-all]} rule) and a realistic
policy of 50 rules (6 groups and 10 team groups, 30 tags, 18 hosts, port lists and ranges,
tcp/udp/icmp, autogroups; rule 13 of 50 lets eng reach tag:build on 22, 443 and 5000-5999;
b's filter: ${RULES[policy50]} rules, those whose destination takes in b and whose sources
exist: the lab has two nodes, so other people's devices are hosts entries, tailnet
prefixes), rounds interleaved with the order alternating. CPU is both daemons' utime + stime over the run per MB received.

| round | policy | Gbit/s | CPU ms per MB (a + b) |
|---|---|---:|---:|
${ROWS}
Mean: allow-all $G_A Gbit/s, 50 rules $G_P Gbit/s ($G_DIFF %); CPU per MB allow-all $C_A ms,
50 rules $C_P ms ($C_DIFF %). Target: the policy costs at most 5 %.
MD
cat "$SECTION"
if [[ $OUT != - ]]; then
	python3 "$REPO/bench/md_section.py" "$OUT" "$SECTION" "Packet filter: allow-all vs a 50-rule policy"
fi
lab_finish
