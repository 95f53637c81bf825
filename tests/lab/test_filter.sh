#!/usr/bin/env bash
# The node's packet filter (issue 12) with real trellisd, driven through the node's own
# input path: the netmap cache that a daemon restarted while control is down loads.
#   a (client) and b (server) join; control stops; b's cached netmap gets a packet_filter
#   "a -> b TCP 22" and b restarts from it. Then:
#   - a reaches b's TCP 22 (IPv4 and IPv6), not TCP 80, not UDP 22, not ping;
#   - b's own flows to a pass both ways (TCP, UDP, ping): replies to our flows;
#   - b counts the drops per reason (status --json, metrics) and shows its rules.
#
#   lab internet 192.0.2.0/24, 2001:db8:1::/64: ctl .1:8080, a .11, b .12
source "$(dirname "$0")/lib.sh"
LAB_TIMEOUT=${LAB_TIMEOUT:-300}
lab_init
lab_require_control_plane

PEER="$(dirname "$0")/filter_peer.py"
lab_tailnet_up a b
A4=$(node_ip a 4) A6=$(node_ip a 6) B4=$(node_ip b 4) B6=$(node_ip b 6)
check "a and b see each other online" wait_for 30 peers_online_are a "b"
check "no policy: a pings b" ping_until a "$B4" 30
check "no policy: status says so" \
	test "$(status_eval b "j['filter']['policy']")" = False

# ---- b gets its filter from the cache, control down
lab_control_stop TERM
lab_node_stop b TERM
python3 - "$LAB_TMP/node-b/netmap.json" "$A4" "$A6" "$B4" "$B6" <<'PY'
import json, sys
path, a4, a6, b4, b6 = sys.argv[1:]
j = json.load(open(path))
nm = j if "peers" in j else next(v for v in j.values() if isinstance(v, dict) and "peers" in v)
nm["packet_filter"] = {"rules": [{"src": [a4 + "/32", a6 + "/128"],
                                  "dst": [{"ip": b4 + "/32", "ports": [22, 22]},
                                          {"ip": b6 + "/128", "ports": [22, 22]}],
                                  "proto": [6]}]}
json.dump(j, open(path, "w"))
PY
LAB_NODE_ARGS="--metrics-listen 127.0.0.1:9101" lab_node_start b b
check "b (from the cache) has its policy" wait_for 30 \
	test "$(status_eval b "j['filter']['policy'] and len(j['filter']['rules'])")" = 1
check "b's rules are a -> b TCP 22" test "$(status_eval b \
	"j['filter']['rules'][0]['dst'][0]['ports'] == [22, 22] and j['filter']['rules'][0]['proto'] == [6]")" = True

# Servers: b on TCP 22 and 80, UDP 22; a on TCP 8080, UDP 5353.
ip netns exec "$(ns_name b)" python3 "$PEER" serve "$LAB_TMP/b-served" 22,80 22 &
LAB_PIDS+=($!)
ip netns exec "$(ns_name a)" python3 "$PEER" serve "$LAB_TMP/a-served" 8080 5353 &
LAB_PIDS+=($!)
check "b listens" wait_listen b 80
check "a listens" wait_listen a 8080

drops() { status_eval b "j['filter']['drops']['$1']"; }
# What must pass gets 10 s (a loaded machine); what must not, 2 s to show up. The first
# packets may wait for a handshake with the restarted b: the first check retries.
tcp_ok() { nsx "$1" python3 "$PEER" tcp "$2" "$3" "${4:-10}"; }
check "a -> b TCP 22 (IPv4) is allowed" wait_for 45 tcp_ok a "$B4" 22
check "a -> b TCP 22 (IPv6) is allowed" tcp_ok a "$B6" 22
no_rule_before=$(drops no_rule)
check_not "a -> b TCP 80 is refused" tcp_ok a "$B4" 80 2
check_not "a -> b TCP 80 (IPv6) is refused" tcp_ok a "$B6" 80 2
check_not "a -> b UDP 22 is refused" nsx a python3 "$PEER" udp "$B4" 22 2
check "a -> b ping is refused" ping_none a "$B4" 2
check_eq "b's server saw only the TCP 22 connections" "tcp 22 tcp 22" \
	"$(cut -d' ' -f1,2 "$LAB_TMP/b-served" | paste -sd' ')"
no_rule_after=$(drops no_rule)
check "b counted the refused packets (no_rule $no_rule_before -> $no_rule_after)" \
	test "$((no_rule_after - no_rule_before))" -ge 4

# ---- b's own flows: the replies pass
check "b -> a TCP 8080: the reply passes" tcp_ok b "$A4" 8080
check "b -> a TCP 8080 (IPv6): the reply passes" tcp_ok b "$A6" 8080
check "b -> a UDP 5353: the reply passes" nsx b python3 "$PEER" udp "$A4" 5353 10
check "b pings a: echo replies pass" ping_all b "$A4" 3
check "b pings a over IPv6: echo replies pass" ping_all b "$A6" 3
check "b has flows in its table" test "$(status_eval b "j['filter']['conntrack']['entries'] > 0")" = True
check "b's metrics export the drops" sh -c "ip netns exec $(ns_name b) curl -s http://127.0.0.1:9101/metrics |
	grep -qE '^trellis_node_filter_drops_total\\{reason=\"no_rule\"\\} [1-9]'"
check_eq "a's log has no sanitizer report" "" \
	"$(grep -m1 -E 'AddressSanitizer|runtime error:' "$LAB_TMP/node-a.log")"

lab_node_stop a
lab_node_stop b
lab_finish
