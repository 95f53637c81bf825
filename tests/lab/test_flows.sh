#!/usr/bin/env bash
# Flow logs (issue 13) with real trellisd and trellis-control: three nodes talk, each counts
# its flows and ships signed, chained batches to the collector over its control connection.
#   - a pings b, a and c exchange UDP, b opens TCP to c: the collector holds each flow
#     from both ends, confirmed, with a's ping bytes exactly (5 x 84 bytes each way);
#   - a pings b over IPv6: confirmed from both ends, 5 x 104 bytes each way; the nodes'
#     own router solicitations on their TUNs (to ff02::2) are counted as link-scope
#     packets, not flows, and once the collector holds every batch after them no ICMPv6
#     flow is flagged;
#   - a pings a tailnet address no node holds: the flow, which no other end could report,
#     is listed as no-peer (its record names no peer) and not by flows --flagged;
#   - iperf3 a -> c (200 MiB): the flow confirmed, the payload both ends counted (IP bytes
#     less 52 header bytes a packet) between iperf3's received and sent bytes, 1 % slack;
#   - audit verify walks every node's batch chain; a stored record edited or deleted is
#     named; put back, it verifies again;
#   - control down 30 s while a pings b: the batches wait in the nodes' spools and arrive
#     in order afterwards, no sequence gap, the chain verifies;
#   - the tailnet's flow-log setting reaches every node: off, nothing a node sends or
#     receives is counted (no record, no batch covers the time) until it is on again;
#     a 2 s interval shows in the spacing of a's batches (5 s before);
#   - a node that under-reports (d, through a test hook) is caught by its peer's report;
#   - retention: a 20 s retention is pruned by the server (flows.prune in the audit log,
#     each node's anchor kept), verify walks the chains from the anchors, an edited
#     anchor and a batch deleted after one are named; a `tailnets set` that changes
#     nothing writes no audit entry;
#   - the three registrations are in the configuration audit log, by the auth key.
#
#   lab internet 192.0.2.0/24, 2001:db8:1::/64: ctl .1:8080, a .11, b .12, c .13
source "$(dirname "$0")/lib.sh"
LAB_TIMEOUT=${LAB_TIMEOUT:-560} # below meson's 600; 155 s seen at load 25
lab_init
lab_require_control_plane

PEER="$(dirname "$0")/filter_peer.py"
DB="$LAB_TMP/control/control.db"
# dbq SQL INTS...: one value from control.db (flowdb, lib.sh).
dbq() { flowdb "$DB" "$@"; }
lab_tailnet_up a b c
B4=$(node_ip b 4) C4=$(node_ip c 4)
check "a, b and c see each other online" wait_for 30 peers_online_are a "b c"
check "every node registered its audit key" test "$(ctl nodes list --json | python3 -c '
import json, sys; print(all(len(n.get("audit_key", "")) == 44 for n in json.load(sys.stdin)))')" = True

# Registrations are in the configuration audit log: actor the auth key, target the node.
registered_by_key() {
	ctl audit log --json | python3 -c '
import json, sys
want = {"node:a", "node:b", "node:c"}
got = {e["target"] for e in map(json.loads, sys.stdin)
       if e["action"] == "node.register" and e["actor"] == "authkey:" + sys.argv[1]}
sys.exit(0 if want <= got else 1)' "$(cut -d- -f3 <<<"$LAB_KEY")"
}
check "a, b and c joined in the audit log, by the auth key" registered_by_key
check "audit verify with the registrations" ctl audit verify
ip netns exec "$(ns_name c)" python3 "$PEER" serve "$LAB_TMP/c-served" 8080 5353 &
LAB_PIDS+=($!)
check "c listens" wait_listen c 8080
check "a reaches b (first handshake)" ping_until a "$B4" 15
start=$(date +%s%N)
since=$(date +%s)
check "a pings b 5 times" nsx a ping -n -q -c 5 -i 0.2 -W 2 "$B4"
check "a -> c UDP" nsx a python3 "$PEER" udp "$C4" 5353 10
check "b -> c TCP" nsx b python3 "$PEER" tcp "$C4" 8080 10

# pair_ok A B PROTO: a confirmed flow between nodes A and B (by name) of PROTO since $since.
pair_ok()
{
	ctl flows --since "$since" --json | python3 -c '
import json, sys
a, b, proto = sys.argv[1], sys.argv[2], int(sys.argv[3])
for line in sys.stdin:
    f = json.loads(line)
    ends = {f["a"]["name"], (f["b"] or {}).get("name")}
    if f["proto"] == proto and ends == {a, b} and f["verdict"] == "confirmed":
        sys.exit(0)
sys.exit(1)' "$1" "$2" "$3"
}
# The liveness bound is for a loaded machine; the issue's 15 s is logged.
check "a-b ICMP confirmed from both ends" wait_for 30 pair_ok a b 1
log "flows confirmed $(( ($(date +%s%N) - start) / 1000000 )) ms after the traffic began"
check "a-c UDP confirmed from both ends" wait_for 30 pair_ok a c 17
check "b-c TCP confirmed from both ends" wait_for 30 pair_ok b c 6
# ping_bytes: the last ICMP flow a-b (the 5 pings) as "NAME tx_p tx_b rx_p rx_b" for a, then b.
ping_bytes() { flows_last_icmp a b "$since"; }
ping_bytes_are() { [[ $(ping_bytes) == "$1" ]]; }
check "a's ping as a and b counted it: 5 x 84 bytes each way" \
	wait_for 30 ping_bytes_are "a 5 420 5 420 b 5 420 5 420"
log "ping flow: $(ping_bytes)"

# ---- IPv6: a ping is one flow both ends confirm. The kernel's own neighbour discovery on
# each TUN (a router solicitation to ff02::2 from fe80::, at link up and twice more) goes to
# no peer: the engine drops it, and as a flow it stood one-sided in every listing.
B6=$(node_ip b 6)
since6=$(date +%s)
check "a reaches b over IPv6" ping_until a "$B6" 15
check "a pings b 5 times over IPv6" nsx a ping -n -q -c 5 -i 0.2 -W 2 "$B6"
# ping6_flow: the a-b ICMPv6 echo flows since since6 as "VERDICT a_tx_p a_tx_b a_rx_p a_rx_b
# b_tx_p b_tx_b b_rx_p b_rx_b", one a line.
ping6_flow()
{
	ctl flows --since "$since6" --json | python3 -c '
import json, sys
for line in sys.stdin:
    f = json.loads(line)
    if f["proto"] != 58 or f["icmp_type"] != 128 or not f["b"]:
        continue
    e = {x["name"]: x for x in (f["a"], f["b"])}
    if set(e) == {"a", "b"}:
        print(f["verdict"], *(e[n][k] for n in "ab" for k in ("tx_packets", "tx_bytes",
              "rx_packets", "rx_bytes")))'
}
ping6_ok() { ping6_flow | grep -qx 'confirmed 5 520 5 520 5 520 5 520'; }
check "a-b IPv6 ping confirmed from both ends: 5 x 104 bytes each way" wait_for 30 ping6_ok
log "IPv6 ping flows: $(ping6_flow | tr '\n' ';')"
link_scope_counted() { (($(status_eval "$1" "j['flow_log']['link_scope_packets']") >= 1)); }
for n in a b c; do
	check "$n counted its router solicitations as link-scope packets, not flows" \
		wait_for 30 link_scope_counted "$n"
done
# The batches the nodes have made by now hold everything counted until then.
made=()
for n in a b c; do made+=("$(node_id "$n") $(status_eval "$n" "j['flow_log']['seq']")"); done
collector_has_made()
{
	local x
	for x in "${made[@]}"; do
		# shellcheck disable=SC2086 # "ID SEQ"
		(($(dbq 'SELECT count(*) FROM flow_batches WHERE node_id = ? AND seq >= ?' $x) > 0)) ||
			return 1
	done
}
check "the collector holds every batch a, b and c made" wait_for 60 collector_has_made
# flagged_icmp6: the flagged ICMPv6 flows, one a line.
flagged_icmp6()
{
	ctl flows --flagged --json | python3 -c '
import json, sys
for line in sys.stdin:
    f = json.loads(line)
    if f["proto"] == 58:
        print(f["verdict"], f["icmp_type"], *("%s %s -> %s" % (x["name"], x["src"], x["dst"])
              for x in (f["a"], f["b"]) if x))'
}
check_eq "no flagged ICMPv6 flow" "" "$(flagged_icmp6)"

# ---- A ping to a tailnet address no node holds: a has no peer for it, the engine drops it,
# and no other end could ever report it. a's record names no peer: listed as no-peer, not
# flagged like a flow whose other end kept quiet (before, it stood one-sided in --flagged).
NOWHERE=100.127.254.1
nsx a ping -n -q -c 3 -i 0.2 -W 1 "$NOWHERE" >/dev/null 2>&1
# nowhere_flows [--flagged]: the ICMP flows to $NOWHERE as "VERDICT NAME TX_P TX_B PEER_KEY B".
nowhere_flows()
{
	ctl flows "$@" --json | python3 -c '
import json, sys
for line in sys.stdin:
    f = json.loads(line)
    if f["proto"] == 1 and f["a"]["dst"] == sys.argv[1]:
        a = f["a"]
        print(f["verdict"], a["name"], a["tx_packets"], a["tx_bytes"], a["peer_key"], f["b"])' \
		"$NOWHERE"
}
nowhere_no_peer() { [[ $(nowhere_flows) == "no-peer a 3 252 $(printf 'A%.0s' {1..43})= None" ]]; }
check "a's pings to $NOWHERE, which no node holds: listed as no-peer, no peer key, no other end" \
	wait_for 30 nowhere_no_peer
log "flow to $NOWHERE: $(nowhere_flows)"
check_eq "... and not listed by flows --flagged" "" "$(nowhere_flows --flagged)"

# ---- iperf3 a -> c: what both ends counted against what iperf3 reports (within 1 %).
# The counters are IP bytes a packet, after TSO super-packets are cut into their segments
# on the sending side and before GRO joins them on the receiving side; iperf3 counts TCP
# payload. So each packet's headers come off: 52 bytes (IPv4 20, TCP 20 + timestamps 12)
# for the data segments and the pure ACKs alike; the SYN's 8 more option bytes are noise.
# iperf3's two figures bracket the bytes on the wire: the sender's is what it wrote into
# its socket (at the end up to ~2.7 MB of it may never leave: iperf3 closes the stream
# once the last byte is written), the receiver's what it read (up to ~2.1 MB may sit
# unread at the close). So each end's count must lie between them, 1 % either side;
# 200 MiB keeps those end effects near 1 % (measured: a's payload was iperf3's sent
# figure + 749 bytes in one run, 2.7 MB short of it and 68 kB over the received in another).
# A segment TCP sent again passed through the tunnel again and is counted again, so the
# upper bound takes iperf3's retransmitted segments at a full segment each (none on a
# quiet machine). On a loaded one iperf3 spanned more than two flow-log intervals and
# both ends counted 27 % over it: that was trellisd's flow table, a reused slot keeping
# the counts of two intervals before (test_flowtable test_slot_reused).
iperf_server c "$C4" 5201 || lab_finish
nsx_timeout 180 a iperf3 -c "$C4" -p 5201 -n 200M -J >"$LAB_TMP/iperf-flows.json" 2>/dev/null
check "a -> c iperf3, 200 MiB" test $? -eq 0
IPERF_PORT=$(json_get "$LAB_TMP/iperf-flows.json" "j['start']['connected'][0]['local_port']")
IPERF_SENT=$(json_get "$LAB_TMP/iperf-flows.json" "j['end']['sum_sent']['bytes']")
IPERF_RCVD=$(json_get "$LAB_TMP/iperf-flows.json" "j['end']['sum_received']['bytes']")
IPERF_RETR=$(json_get "$LAB_TMP/iperf-flows.json" "j['end']['sum_sent'].get('retransmits', 0)")
IPERF_HI=$((IPERF_SENT + IPERF_RETR * 1368)) # 1368: the tunnel's MSS (1420 - 52)
# iperf_counted: "VERDICT a_payload c_payload a_tx_bytes a_tx_packets" of iperf3's data flow.
iperf_counted()
{
	ctl flows --since "$since" --json | python3 -c '
import json, sys
port = int(sys.argv[1])
for line in sys.stdin:
    f = json.loads(line)
    if f["proto"] != 6 or not f["b"]:
        continue
    e = {x["name"]: x for x in (f["a"], f["b"])}
    if set(e) != {"a", "c"} or e["a"]["src_port"] != port or e["a"]["dst_port"] != 5201:
        continue
    a, c = e["a"], e["c"]
    print(f["verdict"], a["tx_bytes"] - 52 * a["tx_packets"], c["rx_bytes"] - 52 * c["rx_packets"],
          a["tx_bytes"], a["tx_packets"])' "$IPERF_PORT"
}
# between_1pct X LO HI: LO - 1 % <= X <= HI + 1 %.
between_1pct() { python3 -c 'import sys; x, lo, hi = map(int, sys.argv[1:]); sys.exit(not (lo * 0.99 <= x <= hi * 1.01))' "$1" "$2" "$3"; }
iperf_counted_ok()
{
	local v ap cp
	read -r v ap cp _ <<<"$(iperf_counted)"
	[[ $v == confirmed ]] && between_1pct "$ap" "$IPERF_RCVD" "$IPERF_HI" &&
		between_1pct "$cp" "$IPERF_RCVD" "$IPERF_HI"
}
check "iperf3's flow confirmed, a's and c's payload within 1 % of iperf3's received..sent (+ resent)" \
	wait_for 30 iperf_counted_ok
log "iperf3 sent $IPERF_SENT received $IPERF_RCVD retransmitted $IPERF_RETR segments; flow (verdict, a payload, c payload, a IP bytes, a packets): $(iperf_counted)"
check "audit verify: every chain holds" ctl audit verify

# ---- tampering, with the server stopped (the CLI works on the database offline)
lab_control_stop TERM
sq() { python3 -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()' "$DB" "$1"; }
# verify_fails WHAT PATTERN: audit verify (offline) exits non-zero, its message matching PATTERN.
verify_fails()
{
	local out rc
	out=$(ctl --offline audit verify 2>&1)
	rc=$?
	check "$1 fails verify" test "$rc" -ne 0
	check "... naming it" grep -q "$2" <<<"$out"
}
sq "CREATE TABLE saved AS SELECT * FROM flow_records WHERE rowid = (SELECT min(rowid) FROM flow_records);
    UPDATE flow_records SET rx_bytes = rx_bytes + 1 WHERE rowid = (SELECT min(rowid) FROM flow_records)"
verify_fails "an edited flow record" "record 0 does not match the signed batch (edited)"
sq "DELETE FROM flow_records WHERE rowid = (SELECT min(rowid) FROM flow_records)"
verify_fails "a deleted flow record" "record 0 is missing (deleted)"
sq "INSERT INTO flow_records SELECT * FROM saved; DROP TABLE saved"
check "put back, verify passes" ctl --offline audit verify

# ---- control down 30 s while traffic flows: nothing lost, no gap
nsx a ping -n -q -c 40 -i 1 "$B4" >/dev/null 2>&1 &
LAB_PIDS+=($!)
spooled() { ls "$LAB_TMP/node-$1/flows" | grep -c '^[0-9]\{20\}$'; }
spool_empty() { [[ $(spooled "$1") -eq 0 ]]; }
# Down for 30 s of a's flow log: six 5 s batches spooled (the node's flushes are the
# clock, so a slow machine stretches the outage rather than shortening it).
spool_holds() { (($(spooled "$1") >= $2)); }
wait_for 90 spool_holds a 6
check "a spooled batches while control was down" test "$(spooled a)" -ge 2
lab_control_start ctl 192.0.2.1 8080 || lab_finish
check "a's spool drains" wait_for 60 spool_empty a
check "b's spool drains" wait_for 60 spool_empty b
check_eq "no batch arrived after a gap" "0" \
	"$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(
	"SELECT count(*) FROM flow_batches WHERE flags & 1").fetchone()[0])' "$DB")"
check_eq "each node's sequence is contiguous" "ok" \
	"$(python3 -c 'import sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute("SELECT node_id, min(seq), max(seq), count(*) FROM flow_batches GROUP BY node_id").fetchall()
print("ok" if rows and all(lo == 1 and hi == n for _, lo, hi, n in rows) else rows)' "$DB")"
check "audit verify after the outage" ctl audit verify

# ---- the tailnet's flow-log setting, pushed to the nodes in their netmaps
# flow_log_is NAME "True 5000": the setting NAME's status shows (enabled, interval_ms).
flow_log_is()
{
	[[ $(status_eval "$1" "'%s %d' % (j['flow_log']['enabled'], j['flow_log']['interval_ms'])") == "$2" ]]
}
all_flow_log_are() { flow_log_is a "$1" && flow_log_is b "$1" && flow_log_is c "$1"; }
check "every node logs every 5 s until told otherwise" all_flow_log_are "True 5000"
check "tailnets list shows on/5s" sh -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' \
	tailnets list | grep -qw 'on/5s'"
check "flow logs off for the tailnet" ctl tailnets set default --flow-log off
check "... every node has it" wait_for 30 all_flow_log_are "False 5000"
off_ns=$(date +%s%N)
check "a -> c UDP while off" nsx a python3 "$PEER" udp "$C4" 5353 10
check "a pings b while off" nsx a ping -n -q -c 3 -i 0.2 -W 2 "$B4"
on_ns=$(date +%s%N)
check "flow logs on again" ctl tailnets set default --flow-log on
check "... every node has it" wait_for 30 all_flow_log_are "True 5000"
since=$(date +%s)
check "a -> c UDP after" nsx a python3 "$PEER" udp "$C4" 5353 10
check "a pings b after" nsx a ping -n -q -c 3 -i 0.2 -W 2 "$B4"
# Batches arrive in each node's order, so once the traffic after is in from both ends,
# anything counted while off would be too.
check "a-c UDP after: confirmed from both ends" wait_for 30 pair_ok a c 17
check "a-b ICMP after: confirmed from both ends" wait_for 30 pair_ok a b 1
check_eq "no record of a packet while off" 0 \
	"$(dbq 'SELECT count(*) FROM flow_records WHERE last_ns > ? AND first_ns < ?' "$off_ns" "$on_ns")"
check_eq "no batch counted while off" 0 \
	"$(dbq 'SELECT count(*) FROM flow_batches WHERE bend(batch) > ? AND bstart(batch) < ?' \
		"$off_ns" "$on_ns")"
check "... a query that counts the batches before it" \
	test "$(dbq 'SELECT count(*) FROM flow_batches WHERE bend(batch) <= ?' "$off_ns")" -gt 0
check "the log's audit entry names the change" sh -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' \
	audit log | grep 'tailnet.set' | grep -q 'flow_log: true -> false'"

# A 2 s interval shows in a's batch spacing (each batch covers one interval; the timer
# may fire late on a loaded machine, never early).
check "interval 2 s" ctl tailnets set default --flow-log-interval 2s
check "... every node has it" wait_for 30 all_flow_log_are "True 2000"
iv_ns=$(date +%s%N)
A_ID=$(node_id a)
nsx a ping -n -q -c 120 -i 0.5 "$B4" >/dev/null 2>&1 &
LAB_PIDS+=($!)
a_batches_since() { (($(dbq 'SELECT count(*) FROM flow_batches WHERE node_id = ? AND bstart(batch) >= ?' "$A_ID" "$iv_ns") >= $1)); }
check "a ships batches at the new interval" wait_for 60 a_batches_since 4
# spacing FROM TO: the median length in ms of a's batches that start and end within.
spacing()
{
	python3 -c 'import sqlite3, struct, sys
rows = sqlite3.connect(sys.argv[1]).execute("SELECT batch FROM flow_batches WHERE node_id = ?", (int(sys.argv[2]),))
d = sorted(e - s for s, e in (struct.unpack(">qq", b[52:68]) for (b,) in rows)
           if s >= int(sys.argv[3]) and e <= int(sys.argv[4]))
print(d[len(d) // 2] // 1000000 if d else -1, d[0] // 1000000 if d else -1)' "$DB" "$A_ID" "$1" "$2"
}
read -r before_med before_min <<<"$(spacing 0 "$off_ns")"
read -r after_med after_min <<<"$(spacing "$iv_ns" "$(date +%s%N)")"
log "a's batches: median ${before_med} ms at 5 s, ${after_med} ms (shortest ${after_min}) at 2 s"
check "at 5 s, a's batches span 5 s" test "$before_med" -ge 4990 -a "$before_med" -lt 7000
check "at 2 s, a's batches span 2 s" test "$after_min" -ge 1990 -a "$after_med" -lt 4000
# ---- a lying node: d reports half of what it counted (a test hook in trellisd)
lab_public_host d 14
TRELLIS_TEST_FLOWS_UNDERREPORT=1 lab_node_join d d "$LAB_KEY"
D4=$(node_ip d 4)
check "a reaches d (first handshake)" ping_until a "$D4" 15
check "a pings d 40 times" nsx a ping -n -q -c 40 -i 0.05 -W 2 "$D4"
# lied_ad: the a-d ICMP flow of the 40 pings as "VERDICT a_tx a_rx d_tx d_rx" (packets).
lied_ad()
{
	ctl flows --json | python3 -c '
import json, sys
for line in sys.stdin:
    f = json.loads(line)
    if f["proto"] != 1 or not f["b"] or {f["a"]["name"], f["b"]["name"]} != {"a", "d"}:
        continue
    e = {x["name"]: x for x in (f["a"], f["b"])}
    if e["a"]["tx_packets"] == 40:
        print(f["verdict"], e["a"]["tx_packets"], e["a"]["rx_packets"], e["d"]["tx_packets"],
              e["d"]["rx_packets"])'
}
# d halves each batch's counts, rounding down: a flow split across batches (2 s now) loses a
# packet or two more.
lied_ad_ok()
{
	local v at ar dt dr
	read -r v at ar dt dr <<<"$(lied_ad)"
	[[ $v == mismatch && $at == 40 && $ar == 40 ]] && ((dt >= 17 && dt <= 20 && dr >= 17 && dr <= 20))
}
check "d's under-report of a's 40 pings is flagged: a 40/40, d at most 20/20, mismatch" \
	wait_for 30 lied_ad_ok
log "a-d ping flow: $(lied_ad)"
# Every a-d ICMP flow as the collector pairs it, so a failure of the check above shows
# which end's report was missing or off.
ctl flows --json | D4="$D4" python3 -c '
import json, os, sys
for line in sys.stdin:
    f = json.loads(line)
    ends = [x for x in (f["a"], f["b"]) if x]
    if f["proto"] == 1 and any(x["name"] == "d" or os.environ["D4"] in (x["src"], x["dst"])
                               for x in ends):
        print("#  ", f["verdict"], *("%s tx %d rx %d" % (x["name"], x["tx_packets"],
              x["rx_packets"]) for x in ends))' >&2
check "... and listed by flows --flagged" sh -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' \
	flows --flagged --json | grep -q '\"name\": *\"d\"'"
lab_node_stop d

# ---- retention: batches older than the tailnet's setting go, the chains stay verifiable
nsx a ping -n -q -c 60 -i 0.5 "$B4" >/dev/null 2>&1 &
LAB_PIDS+=($!)
tailnet_sets() { ctl audit log --json | grep -c '"tailnet.set"'; }
sets=$(tailnet_sets)
check "flow logs on while on already" ctl tailnets set default --flow-log on
check_eq "... changes nothing, and the audit log says nothing" "$sets" "$(tailnet_sets)"
check "retention 20 s" ctl tailnets set default --flow-retention 20s
check "... in the audit log with the setting" sh -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' \
	audit log | grep 'tailnet.set' | grep -q 'flow_retention_sec: 0 -> 20'"
# The server prunes every half retention: nothing received 30 s ago or earlier stays.
old_gone() { [[ $(dbq 'SELECT count(*) FROM flow_batches WHERE received < ?' $(($(date +%s) - 30))) == 0 ]]; }
check "batches past the retention are pruned" wait_for 60 old_gone
check "... by the server, in the audit log with the anchors' digest" sh -c "'$TRELLIS_CONTROL' \
	--state '$LAB_TMP/control' audit log --json | grep '\"flows.prune\"' | grep -q anchors"
check "... each node's anchor kept" test "$(dbq 'SELECT count(*) FROM flow_anchors')" -ge 3
a_after_anchor() { (($(dbq 'SELECT count(*) FROM flow_batches b JOIN flow_anchors n USING (node_id) WHERE node_id = ? AND b.seq > n.seq' "$A_ID") >= 2)); }
check "a's batches go on after its anchor" wait_for 30 a_after_anchor
out=$(ctl audit verify 2>&1)
check "audit verify from the anchors" grep -q "chains from pruning anchors" <<<"$out"
log "$out"
check_eq "no batch flagged after a gap" "0" "$(dbq 'SELECT count(*) FROM flow_batches WHERE flags & 1')"
lab_control_stop TERM
sq "UPDATE flow_anchors SET seq = seq + 1 WHERE node_id = $A_ID"
verify_fails "an edited anchor" "anchors do not match the digest in audit entry"
sq "UPDATE flow_anchors SET seq = seq - 1 WHERE node_id = $A_ID"
check "put back, verify passes" ctl --offline audit verify
sq "CREATE TABLE saved AS SELECT * FROM flow_batches WHERE id = (SELECT min(id) FROM flow_batches
      WHERE node_id = $A_ID); DELETE FROM flow_batches WHERE id = (SELECT id FROM saved)"
verify_fails "a's first batch after its anchor deleted" "node $A_ID flow batch [0-9]* missing (deleted)"
sq "INSERT INTO flow_batches SELECT * FROM saved; DROP TABLE saved"
check "put back, verify passes" ctl --offline audit verify

for n in a b c; do
	check_eq "$n's log has no sanitizer report" "" \
		"$(grep -m1 -E 'AddressSanitizer|runtime error:' "$LAB_TMP/node-$n.log")"
done

lab_node_stop a
lab_node_stop b
lab_node_stop c
lab_finish
