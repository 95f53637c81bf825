#!/usr/bin/env bash
# `trellis-control flows prune` (issue 13) on a running server with real nodes: a pings b,
# then after a cut a pings c; `flows prune --before CUT`
#   - removes every flow reported before the cut (no a-b flow is listed any more) and
#     keeps the ones after it (a-c ICMP, confirmed from both ends);
#   - writes a flows.prune audit entry for the tailnet, by the admin on the socket;
#   - leaves `audit verify` clean (each node's chain verifiable from its anchor);
#   - a second prune with nothing older than the cut removes nothing and writes no entry.
# test_flows.sh covers the retention setting (the server's own prunes); this is the
# admin's command end to end.
#
#   lab internet 192.0.2.0/24, 2001:db8:1::/64: ctl .1:8080, a .11, b .12, c .13
source "$(dirname "$0")/lib.sh"
LAB_TIMEOUT=${LAB_TIMEOUT:-420}
lab_init
lab_require_control_plane

lab_tailnet_up a b c
B4=$(node_ip b 4) C4=$(node_ip c 4)
check "a, b and c see each other online" wait_for 30 peers_online_are a "b c"
# One-second batches keep the waits below short; the prune does not depend on them.
check "flow-log interval 1 s" ctl tailnets set default --flow-log-interval 1s
all_1s() { for n in a b c; do [[ $(status_eval $n "j['flow_log']['interval_ms']") == 1000 ]] || return 1; done; }
check "... every node has it" wait_for 30 all_1s

# pairs: "PROTO:NAME-NAME:VERDICT" of every flow the collector lists, sorted, one a line.
pairs()
{
	ctl flows --json | python3 -c '
import json, sys
out = set()
for line in sys.stdin:
    f = json.loads(line)
    ends = sorted(x["name"] for x in (f["a"], f["b"]) if x)
    out.add("%d:%s:%s" % (f["proto"], "-".join(ends), f["verdict"]))
print("\n".join(sorted(out)))'
}
has_pair() { pairs | grep -qx "$1"; }

# ---- before the cut: a pings b, both ends' reports in
check "a reaches b" ping_until a "$B4" 15
check "a pings b 5 times" nsx a ping -n -q -c 5 -i 0.2 -W 2 "$B4"
check "a-b ICMP confirmed from both ends" wait_for 30 has_pair "1:a-b:confirmed"
# The 5 pings as a and b counted them (5 x 84 bytes each way).
ab_pings_in() { [[ $(flows_last_icmp a b) == "a 5 420 5 420 b 5 420 5 420" ]]; }
# A node ships its batches in order, so once both ends' counts of the last pings are
# whole, every a-b record is stored. Batches are stored with the second they arrived: the
# cut is a second after that, and a-c starts after the cut.
check "both ends' reports of the 5 pings are in" wait_for 30 ab_pings_in
cut=$(($(date +%s) + 1))
past_cut() { (($(date +%s) > cut)); }
check "the clock passes the cut" wait_for 5 past_cut
check_not "no a-c flow before the cut" has_pair "1:a-c:confirmed"

# ---- after the cut: a pings c
check "a reaches c" ping_until a "$C4" 15
check "a pings c 5 times" nsx a ping -n -q -c 5 -i 0.2 -W 2 "$C4"
check "a-c ICMP confirmed from both ends" wait_for 30 has_pair "1:a-c:confirmed"
log "flows before the prune: $(pairs | tr '\n' ' ')"

prunes() { ctl audit log --json | grep -c '"flows.prune"'; }
check_eq "no flows.prune entry yet" 0 "$(prunes)"
out=$(ctl flows prune --before "$cut" 2>&1)
check "flows prune --before the cut" test $? -eq 0
log "$out"
check "... removed batches" grep -Eq '^[1-9][0-9]* flow-log batches removed$' <<<"$out"
check_eq "no a-b flow is listed after the prune" "" "$(pairs | grep -- '-b:\|:b-\|a-b')"
check "the a-c flow after the cut stays, confirmed" has_pair "1:a-c:confirmed"
# The entry is the admin's (the CLI on the admin socket), for the default tailnet.
prune_entry_ok()
{
	ctl audit log --json | python3 -c '
import json, sys
es = [e for e in map(json.loads, sys.stdin) if e["action"] == "flows.prune"]
sys.exit(0 if es and all(e["target"] == "tailnet:default" and e["actor"] != "server"
                         for e in es) else 1)'
}
check "a flows.prune audit entry for tailnet:default, by the admin" prune_entry_ok
entries=$(prunes)
check "audit verify after the prune" ctl audit verify
out=$(ctl audit verify 2>&1)
check "... walks the flow chains from the anchors" grep -q "chains from pruning anchors" <<<"$out"

# ---- again: nothing older than the cut is left, nothing is written
log_len() { ctl audit log --json | wc -l; }
len=$(log_len)
out=$(ctl flows prune --before "$cut" 2>&1)
check "a second prune succeeds" test $? -eq 0
check_eq "... removes nothing" "0 flow-log batches removed" "$out"
check_eq "... writes no flows.prune entry" "$entries" "$(prunes)"
check_eq "... nor any other audit entry" "$len" "$(log_len)"
check "the a-c flow is still listed" has_pair "1:a-c:confirmed"
check "audit verify after the second prune" ctl audit verify

for n in a b c; do
	check_eq "$n's log has no sanitizer report" "" \
		"$(grep -m1 -E 'AddressSanitizer|runtime error:' "$LAB_TMP/node-$n.log")"
done
lab_node_stop a
lab_node_stop b
lab_node_stop c
lab_finish
