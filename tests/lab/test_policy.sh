#!/usr/bin/env bash
# Access control (issue 12), the server's side: a policy that lets only engineering reach the
# server on port 22 narrows what every node may see.
#   - before any policy every node sees every other (the default: allow all)
#   - policy set: eng and server see each other; "other" sees nobody, nobody sees it; its
#     key and name are in neither the status nor the netmap the nodes cached on disk
#   - the server's cached netmap carries its packet filter: eng's addresses, port 22, TCP
#   - a malformed policy is refused with line and column and changes nothing
#   - the data plane: eng reaches the server's TCP 22, not TCP 80 and not UDP 22; the server
#     cannot start a connection to eng; replies to eng's flow pass; drops are counted
#   - the server's trellisd runs with --filter-reject: a refused TCP connection is refused
#     (RST) within 5 s, IPv4 and IPv6, and a refused UDP datagram gets ICMP unreachable,
#     where without it the client waits for its timeout
#   - status and whois say what each peer may open on the node (from its filter), and whois
#     says a peer's user and tags
#   - status says what the node may open on each peer (the server's may_open): eng on the
#     server TCP 22, the server nothing on eng (it may only be reached by it); "all" without
#     a policy; a policy change that lets other reach 443 shows on other
#   - a policy change reaches the nodes (the time from the server's log line to the node's
#     is logged: about 70 ms, and to the node's packet filter, bounded generously); other
#     flows go on: new connections, and one long-lived connection (eng -> server TCP 22, a
#     line every 100 ms, each echoed) that both policies allow carries on across the opening
#     and the closing change without a reset or a lost line
#   - a change of what the server may open on one peer (a list by id) reaches it as a
#     may_open_patch; status and the cached netmap say the server's list exactly
#   - a connection the server started (TCP 80 on eng, which it may then open) carries on
#     while the server's own filter changes: its table, not a rule, lets eng's replies in
#   - packets crafted from the hidden node (its own key, through wireguard-go) are dropped
#     by eng and counted (rx_handshake)
#   - back to the first policy: other's access closes while eng's goes on
#   - policy reset: back to everyone, with full maps
#
#   lab internet 192.0.2.0/24: ctl .1 (trellis-control), eng .11, server .12, other .13
source "$(dirname "$0")/lib.sh"
lab_init
lab_require_control_plane

lab_internet
lab_public_host ctl 1
lab_public_host eng 11
lab_public_host srv 12
lab_public_host oth 13
LAB_CONTROL_SERVE_ARGS="--metrics-listen 127.0.0.1:9090" lab_control_start ctl 192.0.2.1 8080 ||
	lab_finish
# metric NAME{LABELS}: the control server's value.
metric()
{
	nsx ctl curl -fsS --max-time 5 http://127.0.0.1:9090/metrics |
		awk -v k="$1" '$1 == k { print $2 }'
}

check "users create eng@example.com" ctl users create eng@example.com
check "users create other@example.com" ctl users create other@example.com
KEY_ENG=$(lab_authkey --user eng@example.com)
KEY_OTH=$(lab_authkey --user other@example.com)
KEY_SRV=$(lab_authkey --tags tag:server)
LAB_NODE_ARGS="--metrics-listen 127.0.0.1:9101" lab_node_join eng eng "$KEY_ENG"
LAB_NODE_ARGS="--filter-reject" lab_node_join server srv "$KEY_SRV"
lab_node_join other oth "$KEY_OTH"

check "no policy: eng sees other and server" wait_for 10 peers_are eng "other server"
check "no policy: other sees eng and server" wait_for 10 peers_are other "eng server"
IP4_ENG=$(node_ip eng 4)
IP4_SRV=$(node_ip server 4)
# allowed_in NODE PEER: the peer's allowed_in in NODE's status, as compact JSON.
allowed_in()
{
	status_eval "$1" "json.dumps([p.get('allowed_in', 'absent') for p in j['peers']
		if p['hostname'] == '$2'][0], separators=(',', ':'))"
}
# may_open NODE PEER: what NODE may open on the peer, from NODE's status, as compact JSON.
may_open()
{
	status_eval "$1" "json.dumps([p.get('may_open', 'absent') for p in j['peers']
		if p['hostname'] == '$2'][0], separators=(',', ':'))"
}
# may_open_is NODE PEER JSON: for wait_for (a delta may still be on its way).
may_open_is() { test "$(may_open "$1" "$2")" = "$3"; }
# status_row NODE PEER: the peer's row in NODE's `trellis status`.
status_row() { tr_node "$1" status | awk -v h="$2" '$1 == h'; }
check_eq "no policy: status --json says eng may open anything on the server" "null" \
	"$(allowed_in server eng)"
check_eq "no policy: status says so in words" "all" "$(status_row server eng | awk '{print $NF}')"
check_eq "no policy: status --json says eng may open anything on the server" "null" \
	"$(may_open eng server)"
check_eq "no policy: status says so in words (MAY OPEN THERE)" "all" \
	"$(status_row eng server | awk '{print $(NF-1)}')"
out=$(tr_node eng whois "$IP4_SRV")
check "whois on eng: the server's tags" grep -q '^  Tags:     tag:server$' <<<"$out"
out=$(tr_node server whois "$IP4_ENG")
check "whois on the server: eng's user" grep -q '^  Name:     eng@example.com$' <<<"$out"
check "whois on the server: eng may open anything (no policy)" grep -qx '  all' <<<"$out"
check_eq "whois on the server: what each may open, here and there (no policy)" \
	"May open here: all May open there: all" \
	"$(grep -A1 '^May open' <<<"$out" | tr -s ' \n' ' ' | sed 's/ $//')"
check "policy get says there is none" bash -c \
	"'$TRELLIS_CONTROL' --state '$LAB_TMP/control' policy get 2>&1 | grep -q 'no policy'"

OTHER_KEY=$(ctl nodes list --json |
	python3 -c 'import json,sys; print([n["node_key"] for n in json.load(sys.stdin) if n["name"]=="other"][0])')
check "other's node key known" test -n "$OTHER_KEY"

cat >"$LAB_TMP/bad.hujson" <<'POL'
{
  "acls": [
    {"action": "accept", "src": ["group:eng"], "dst": ["tag:server:22"]},
  ],
}
POL
out=$(ctl policy set "$LAB_TMP/bad.hujson" 2>&1)
check "a policy naming an unknown group is refused" test $? -ne 0
check "the refusal says file, line and column" grep -q 'bad.hujson: 3:34: unknown group "group:eng"' <<<"$out"
check "still no policy after the refusal" bash -c \
	"'$TRELLIS_CONTROL' --state '$LAB_TMP/control' policy get 2>&1 | grep -q 'no policy'"

cat >"$LAB_TMP/eng.hujson" <<'POL'
// Engineering reaches the server's ssh; nothing else.
{
  "groups": {"group:eng": ["eng@example.com"]},
  "tagOwners": {"tag:server": ["group:eng"]},
  "acls": [
    {"action": "accept", "src": ["group:eng"], "dst": ["tag:server:22"], "proto": "tcp"},
  ],
  "tests": [
    {"src": "eng@example.com", "accept": ["tag:server:22"], "deny": ["tag:server:80"]},
    {"src": "tag:server", "deny": ["eng@example.com:22"]},
  ],
}
POL
check "policy check" ctl policy check "$LAB_TMP/eng.hujson"
check "policy set" ctl policy set "$LAB_TMP/eng.hujson"
check "eng sees only the server" wait_for 20 peers_are eng "server"
check "the server sees only eng" wait_for 20 peers_are server "eng"
check "other sees nobody" wait_for 20 peers_are other ""
f=$(node_status eng)
check_not "other's key is not in eng's status" grep -q "$OTHER_KEY" "$f"
check "eng's cached netmap has the server" grep -q '"name":"server"' "$LAB_TMP/node-eng/netmap.json"
check_not "other's key is not in eng's cached netmap" grep -qF "$OTHER_KEY" "$LAB_TMP/node-eng/netmap.json"
check_not "other's name is not in eng's cached netmap" grep -q '"name":"other"' "$LAB_TMP/node-eng/netmap.json"
check_not "other's key is not in the server's cached netmap" grep -qF "$OTHER_KEY" "$LAB_TMP/node-server/netmap.json"

# Packets crafted from the hidden node: other still knows eng's key and address from before
# the policy and talks to eng with its own node key anyway (wireguard-go in its namespace, a
# route to eng through it). eng no longer has other as a peer: it drops the handshakes and
# counts them (rx_handshake), and nothing gets through.
ENG_PUB=$(ctl nodes list --json |
	python3 -c 'import json,sys; print([n["node_key"] for n in json.load(sys.stdin) if n["name"]=="eng"][0])')
eng_drops() {
	nsx eng curl -s http://127.0.0.1:9101/metrics |
		awk -v m="trellis_node_drops_total{reason=\"$1\"}" '$1 == m {print $2}'
}
hs_before=$(eng_drops rx_handshake)
check "eng's metrics count handshake drops" test -n "$hs_before"
hs_more() { test "$(eng_drops rx_handshake)" -gt "$hs_before"; }
WGX=$(lab_iface x)
lab_wg_start oth wggo "$WGX" || fail "wireguard-go in other's namespace did not start"
nsx oth wg set "$WGX" private-key "$LAB_TMP/node-other/node.key" peer "$ENG_PUB" \
	allowed-ips "$IP4_ENG/32" endpoint 192.0.2.11:41641
ip -n "$(ns_name oth)" link set "$WGX" up
ip -n "$(ns_name oth)" route add "$IP4_ENG/32" dev "$WGX"
check_not "other (hidden) cannot ping eng with its own key" nsx oth ping -c 2 -W 1 -q "$IP4_ENG"
check "eng dropped other's handshakes and counted them (rx_handshake from $hs_before)" \
	wait_for 10 hs_more
ip -n "$(ns_name oth)" route del "$IP4_ENG/32" dev "$WGX"
ip -n "$(ns_name oth)" link set "$WGX" down
check_eq "the server's cached filter: eng's addresses, port 22, TCP" \
	"$IP4_ENG/32 22-22 [6]" \
	"$(json_get "$LAB_TMP/node-server/netmap.json" \
		"' '.join([j['packet_filter']['rules'][0]['src'][0], '%d-%d' % tuple(j['packet_filter']['rules'][0]['dst'][0]['ports']), str(j['packet_filter']['rules'][0]['proto'])])")"
check_eq "eng's cached filter has no rules (nobody may start a flow to it)" "0" \
	"$(json_get "$LAB_TMP/node-eng/netmap.json" "len(j['packet_filter']['rules'])")"
check_eq "status --json on the server: eng may open TCP 22" '[{"proto":6,"ports":[[22,22]]}]' \
	"$(allowed_in server eng)"
check_eq "status --json on eng: the server may open nothing" '[]' "$(allowed_in eng server)"
check_eq "status on the server: eng's row ends in tcp:22" "tcp:22" \
	"$(status_row server eng | awk '{print $NF}')"
check_eq "status on eng: the server's row ends in none" "none" \
	"$(status_row eng server | awk '{print $NF}')"
check "status --json on eng: eng may open TCP 22 on the server" \
	wait_for 10 may_open_is eng server '[{"proto":6,"ports":[[22,22]]}]'
check_eq "status --json on the server: it may open nothing on eng (only reached by it)" '[]' \
	"$(may_open server eng)"
check_eq "status on eng: MAY OPEN THERE on the server's row is tcp:22" "tcp:22" \
	"$(status_row eng server | awk '{print $(NF-1)}')"
check_eq "status on the server: MAY OPEN THERE on eng's row is none" "none" \
	"$(status_row server eng | awk '{print $(NF-1)}')"
out=$(tr_node server whois "$IP4_ENG")
check "whois on the server: eng may open tcp:22" grep -qx '  tcp:22' <<<"$out"
check_eq "whois on the server: eng may open tcp:22 here, the server nothing there" \
	"May open here: tcp:22 May open there: none" \
	"$(grep -A1 '^May open' <<<"$out" | tr -s ' \n' ' ' | sed 's/ $//')"
out=$(tr_node eng whois "$IP4_SRV")
check_eq "whois on eng: the server may open nothing here, eng tcp:22 there" \
	"May open here: none May open there: tcp:22" \
	"$(grep -A1 '^May open' <<<"$out" | tr -s ' \n' ' ' | sed 's/ $//')"
check "explain: eng -> server 22/tcp allowed" ctl policy explain eng server 22 --proto tcp
check_not "explain: eng -> server 80/tcp denied" ctl policy explain eng server 80 --proto tcp
check_not "explain: server -> eng 22/tcp denied" ctl policy explain server eng 22 --proto tcp
check_eq "matrix: only eng -> server, on 22/tcp" "eng server 22/tcp" \
	"$(ctl policy matrix --json | python3 -c 'import json,sys; print(" ".join(" ".join([e["src"], e["dst"], e["allow"]]) for e in json.load(sys.stdin)))')"

# ---- the data plane: the server's trellisd enforces the filter the policy compiled for it
PEER="$(dirname "$0")/filter_peer.py"
# ip netns exec itself (not the nsx function, which would run in a subshell): $! is then the
# server's PID, which the cleanup ends.
ip netns exec "$(ns_name srv)" python3 "$PEER" serve "$LAB_TMP/served-srv.log" 22,80,443 22 \
	>/dev/null 2>&1 &
LAB_PIDS+=($!)
ip netns exec "$(ns_name eng)" python3 "$PEER" serve "$LAB_TMP/served-eng.log" 8080,80 "" \
	>/dev/null 2>&1 &
LAB_PIDS+=($!)
check "the server's test service listens" wait_listen srv 22
check "eng's test service listens" wait_listen eng 8080
tcp_ok() { nsx "$1" python3 "$PEER" tcp "$2" "$3" "${4:-10}"; }
drops() { status_eval server "j['filter']['drops']['$1']"; }
# The first connection may wait for the tunnel's first handshake: it retries.
check "eng -> server TCP 22 is allowed (the replies of eng's flow pass)" \
	wait_for 30 tcp_ok eng "$IP4_SRV" 22
no_rule_before=$(drops no_rule)
check_not "eng -> server TCP 80 is refused" tcp_ok eng "$IP4_SRV" 80 2
check_not "eng -> server UDP 22 is refused" nsx eng python3 "$PEER" udp "$IP4_SRV" 22 2
check_not "the server cannot start a TCP connection to eng" tcp_ok srv "$IP4_ENG" 8080 2
check_eq "the server's service saw only TCP 22 from eng" "tcp 22 $IP4_ENG" \
	"$(sort -u "$LAB_TMP/served-srv.log" 2>/dev/null | tr '\n' ' ' | sed 's/ $//')"
check_eq "eng's service saw nothing from the server" "" "$(cat "$LAB_TMP/served-eng.log" 2>/dev/null)"
no_rule_after=$(drops no_rule)
check "the server counted what it refused (no_rule $no_rule_before -> $no_rule_after)" \
	test "$((no_rule_after - no_rule_before))" -ge 2

# --filter-reject on the server: refusals are answered, so the client hears at once. The
# bound (5 s) is far below a TCP connect's timeout and is what a silent drop would hit.
IP6_SRV=$(node_ip server 6)
refused()
{
	local out rc
	out=$(nsx eng python3 "$PEER" refused "$@" 5)
	rc=$?
	log "$out"
	return $rc
}
check "eng -> server TCP 80: connection refused (a RST), not a timeout" refused tcp "$IP4_SRV" 80
check "... over IPv6 too" refused tcp "$IP6_SRV" 80
check "eng -> server UDP 22: ICMP unreachable, not a timeout" refused udp "$IP4_SRV" 22
check "... over IPv6 too (ICMPv6)" refused udp "$IP6_SRV" 22
check "the server counted the replies it sent" \
	test "$(status_eval server "j['filter']['rejects']['sent']")" -ge 4
check "eng -> server TCP 22 still works" tcp_ok eng "$IP4_SRV" 22

# Long-lived connections across policy changes (filter_peer.py stream): a line every 100 ms,
# each echoed by the other end. A change that closed or reset flows it still allows would
# end one (the server's --filter-reject answers a refused segment with a RST), where the
# new connections the checks below open would still pass.
# stream_start NAME NODE HOST PORT: a connection from NODE's namespace to HOST:PORT.
stream_start()
{
	ip netns exec "$(ns_name "$2")" python3 "$PEER" stream "$3" "$4" "$LAB_TMP/stream-$1.json" \
		"$LAB_TMP/stream-$1.stop" >"$LAB_TMP/stream-$1.out" 2>&1 &
	LAB_PIDS+=("$!")
	eval "STREAM_PID_$1=$!"
}
# stream_get NAME KEY: the stream's sent, echoed, max_gap_ms or error so far.
stream_get() { json_get "$LAB_TMP/stream-$1.json" "j['$2']" 2>/dev/null; }
# stream_beyond NAME N: more than N lines echoed, and nothing went wrong.
stream_beyond() { [[ $(stream_get "$1" error) == None && $(stream_get "$1" echoed) -gt $2 ]]; }
# stream_stop NAME: ends it; STREAM_RC is 0 if every line came back in order on the one
# connection (no reset, no new connection). The longest wait between two echoes is logged,
# not asserted: on a loaded machine a retransmission or a descheduled process can stall a
# healthy stream for a second or more.
stream_stop()
{
	local pid=STREAM_PID_$1
	touch "$LAB_TMP/stream-$1.stop"
	wait "${!pid}"
	STREAM_RC=$?
	log "long-lived connection $1: $(cat "$LAB_TMP/stream-$1.json")"
}
# Eng's TCP 22 on the server, which every policy below allows: the server admits it by a
# rule, judged again at each change.
stream_start eng eng "$IP4_SRV" 22
check "a long-lived connection eng -> server TCP 22 carries lines" wait_for 30 stream_beyond eng 10
# filter_applied: how many filters the server node has put in force (its log's lines).
filter_applied() { grep -cE 'packet filter: [0-9]+ rules' "$LAB_TMP/node-server.log"; }
applied_more() { (($(filter_applied) > applied)); }
# The node's own notion of the delay: from the control server's log line that a policy is in
# force to the server node's line that its packet filter changed (one clock stamps both, so
# the CLI and the test's polls do not count). The issue asks for a second; measured 52-93 ms
# at load 13, once 474 ms while the load rose. Asserted below 5 s only: a lab on a machine at
# load 30 can keep a process from the CPU for longer than a second, and a test must not fail
# for that; 5 s still fails a change that waits for a timer or a poll rather than being pushed.
within_5s() { [[ $1 =~ ^[0-9]+$ ]] && (($1 < 5000)); }
# filter_change WHAT FILE DESC: sets the policy in FILE (check "policy set (DESC)"), waits for
# the server node's packet filter to change, logs the delay and holds it under 5 s.
filter_change()
{
	local ms
	applied=$(filter_applied)
	check "policy set ($3)" ctl policy set "$2"
	check "the server node put the new filter in force" wait_for 10 applied_more
	ms=$(reached_ms "policy of [0-9]+ rules? in force" 'packet filter: [0-9]+ rules')
	log "$1: the server node's packet filter changed $ms ms after the server put the policy in force"
	check "... within 5 s of the server's change ($ms ms; the issue asks for 1 s)" within_5s "$ms"
}

# reached_ms CONTROL_RE NODE_RE: milliseconds from the control server's last log line
# matching CONTROL_RE to the server node's last line matching NODE_RE ("never").
reached_ms()
{
	python3 - "$LAB_TMP/control.$LAB_CONTROL_RUN.log" "$LAB_TMP/node-server.log" "$1" "$2" <<'PY'
import datetime, re, sys
def stamp(path, pattern):
    t = None
    for line in open(path, errors="replace"):
        if re.search(pattern, line):
            t = datetime.datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
    return t
a = stamp(sys.argv[1], sys.argv[3])
b = stamp(sys.argv[2], sys.argv[4])
print(int((b - a).total_seconds() * 1000) if a and b else "never")
PY
}

# A change reaches the nodes, and flows the policy still allows go on. The time from the
# server's log line that the policy is in force to the server node's log line that the peer
# joined is logged (both stamped by the same clock, so the CLI's polls do not count).
sed 's|"proto": "tcp"},|"proto": "tcp"},\n    {"action": "accept", "src": ["other@example.com"], "dst": ["tag:server:443"]},|' \
	"$LAB_TMP/eng.hujson" >"$LAB_TMP/other.hujson"
echoed=$(stream_get eng echoed)
filter_change "opening change" "$LAB_TMP/other.hujson" "other may reach the server on 443"
check "the server sees other" wait_for 10 peers_are server "eng other"
ms=$(reached_ms "policy of 2 rules in force" "peer other \(id [0-9]+\) joined")
# How fast is a figure (59-74 ms on a loaded machine), not a check: benchmarks time, tests
# see that it happens.
log "the policy change reached the server node $ms ms after the server put it in force"
check "other sees the server" wait_for 10 peers_are other "server"
check "eng still sees only the server" peers_are eng "server"
check "other -> server TCP 443 is allowed now" wait_for 30 tcp_ok oth "$IP4_SRV" 443
check "status --json on the server: other may open TCP 443" \
	grep -qF '{"proto":6,"ports":[[443,443]]}' <<<"$(allowed_in server other)"
check_eq "... and eng still TCP 22" '[{"proto":6,"ports":[[22,22]]}]' "$(allowed_in server eng)"
# The rule names no protocol: TCP, UDP, ICMP and ICMPv6 (the default).
check "status --json on other: it may open 443 on the server" wait_for 10 may_open_is other \
	server '[{"proto":1},{"proto":6,"ports":[[443,443]]},{"proto":17,"ports":[[443,443]]},{"proto":58}]'
check_eq "status --json on eng: still TCP 22 on the server" '[{"proto":6,"ports":[[22,22]]}]' \
	"$(may_open eng server)"
check_not "other -> server TCP 22 is not" tcp_ok oth "$IP4_SRV" 22 2
check "eng -> server TCP 22 is still allowed" tcp_ok eng "$IP4_SRV" 22
check "the long-lived connection goes on after the opening change (from $echoed lines)" \
	wait_for 10 stream_beyond eng $((echoed + 10))

# Closing is as quick: back to eng's policy, other loses the server (its key and its
# access) while eng's access goes on.
echoed=$(stream_get eng echoed)
filter_change "closing change" "$LAB_TMP/eng.hujson" \
	"back to eng's: other may no longer reach the server"
check "the server no longer sees other" wait_for 10 peers_are server "eng"
check "other sees nobody again" wait_for 10 peers_are other ""
ms=$(reached_ms "policy of 1 rule in force" "peer id [0-9]+ left the netmap")
log "the closing policy reached the server node $ms ms after the server put it in force"
check_not "other -> server TCP 443 is refused now" tcp_ok oth "$IP4_SRV" 443 2
check "eng -> server TCP 22 goes on" tcp_ok eng "$IP4_SRV" 22
check "the long-lived connection goes on after the closing change (from $echoed lines)" \
	wait_for 10 stream_beyond eng $((echoed + 10))
stream_stop eng
check "the long-lived connection ended cleanly: every line echoed, no reset" test "$STREAM_RC" = 0

# What the server may open is a list by id (TCP 80 on eng, 81 on other: not one set for
# every peer). Moving other to 82 changes one peer's items: the server node is told by a
# may_open_patch (docs/control-protocol.md, "Patching may_open"), and what it holds, shows
# and caches is the server's list exactly, in the server's order.
sed 's|"proto": "tcp"},|"proto": "tcp"},\n    {"action": "accept", "src": ["tag:server"], "dst": ["eng@example.com:80"], "proto": "tcp"},\n    {"action": "accept", "src": ["tag:server"], "dst": ["other@example.com:81"], "proto": "tcp"},|' \
	"$LAB_TMP/other.hujson" >"$LAB_TMP/srv81.hujson"
sed 's|other@example.com:81|other@example.com:82|' "$LAB_TMP/srv81.hujson" >"$LAB_TMP/srv82.hujson"
check "policy set (the server may open 80 on eng, 81 on other)" ctl policy set "$LAB_TMP/srv81.hujson"
check "status --json on the server: it may open TCP 81 on other" \
	wait_for 10 may_open_is server other '[{"proto":6,"ports":[[81,81]]}]'
patches_before=$(metric 'trellis_control_delta_may_open_total{form="patch"}')
check "policy set (... 82 on other)" ctl policy set "$LAB_TMP/srv82.hujson"
check "status --json on the server: it may open TCP 82 on other" \
	wait_for 10 may_open_is server other '[{"proto":6,"ports":[[82,82]]}]'
check_eq "... and still TCP 80 on eng" '[{"proto":6,"ports":[[80,80]]}]' "$(may_open server eng)"
# cached_may_open_is: the server node's cached may_open, sets by items, one peer each.
cached_may_open_is()
{
	test "$(json_get "$LAB_TMP/node-server/netmap.json" \
		"[(len(s['peers']), s['ports']) for s in j['may_open']]")" = \
		"[(1, [[6, 80, 80]]), (1, [[6, 82, 82]])]"
}
check "the server's cached netmap: may_open as the server orders it" wait_for 10 cached_may_open_is
check "... told by a patch (trellis_control_delta_may_open_total{form=\"patch\"} from $patches_before)" \
	test "$(metric 'trellis_control_delta_may_open_total{form="patch"}')" -gt "${patches_before:-0}"

# A flow the server started (it may open TCP 80 on eng since srv81) across a change of the
# server's own filter (other may reach it on 444 too): no rule lets eng's replies in, only
# the server's connection table does, so a change that flushed or reset the table would end
# the connection.
sed 's|"dst": \["tag:server:22"\], "proto": "tcp"},|&\n    {"action": "accept", "src": ["other@example.com"], "dst": ["tag:server:444"], "proto": "tcp"},|' \
	"$LAB_TMP/srv82.hujson" >"$LAB_TMP/srv444.hujson"
stream_start srv srv "$IP4_ENG" 80
check "a long-lived connection server -> eng TCP 80 carries lines" wait_for 30 stream_beyond srv 10
echoed=$(stream_get srv echoed)
filter_change "the server's filter" "$LAB_TMP/srv444.hujson" \
	"... and other may reach the server on 444"
check "the server's own connection goes on after its filter changed (from $echoed lines)" \
	wait_for 10 stream_beyond srv $((echoed + 10))
stream_stop srv
check "... and ended cleanly: every line echoed, no reset" test "$STREAM_RC" = 0

check "policy reset" ctl policy reset
check "no policy again: eng sees other and server" wait_for 20 peers_are eng "other server"
check "no policy again: other sees eng and server" wait_for 20 peers_are other "eng server"
check "no policy again: eng may open anything on the server" \
	wait_for 10 may_open_is eng server null

for n in eng server other; do
	lab_node_stop "$n"
done
lab_control_stop TERM
lab_finish
