#!/usr/bin/env bash
# A node that was connected when trellis-control restarted, and missed changes while it was
# away, resumes the netmap it holds (docs/control-protocol.md, "Resuming a map stream"):
#   - the server stops (SIGTERM) and starts again on the same state while a holds its map
#     (a's daemon is frozen with SIGSTOP, so it cannot reconnect before the changes)
#   - meanwhile b is renamed and a new node c joins
#   - a reconnects with `have`: the server answers with one delta holding exactly b and c,
#     no full netmap (asserted on the server's counters and a's log line), and a's status
#     shows the renamed b and c, which it reaches over the tunnel
#
#   lab internet 192.0.2.0/24, 2001:db8:1::/64: ctl .1:8080, a .11, b .12, c .13
source "$(dirname "$0")/lib.sh"
lab_init
lab_require_control_plane

LAB_CONTROL_SERVE_ARGS="--metrics-listen 127.0.0.1:9090"
lab_tailnet_up a b
lab_public_host c 13
check "a sees b online" wait_for 20 peers_online_are a "b"
check "b sees a online" wait_for 20 peers_online_are b "a"

# metric NAME: its value on the running server's metrics endpoint.
metric()
{
	nsx ctl curl -fsS --max-time 5 http://127.0.0.1:9090/metrics |
		awk -v k="$1" '$1 == k { print $2 }'
}
a_log="$LAB_TMP/node-a.log"
resumed() { grep -q "resumed the held netmap" "$a_log"; }
not_resumed() { ! resumed; }
check "before the restart: a has not resumed anything" not_resumed

# a keeps the map it holds, frozen, while the server restarts and the tailnet changes.
kill -STOP "${LAB_NODE_PID[a]}"
lab_control_stop TERM
lab_control_start ctl 192.0.2.1 8080 || { kill -CONT "${LAB_NODE_PID[a]}"; lab_finish; }
check "the restarted server presumes a and b online" \
	grep -q "2 nodes online at the last stop" "$LAB_TMP/control.$LAB_CONTROL_RUN.log"
# b's first retry may have found the server still down: its backoff then grows (up to 24 s
# with jitter by the third try), as in test_tailnet_outage.
resumes_are() { [[ $(metric 'trellis_control_resumes_total{result="delta"}') == "$1" ]]; }
check "b reconnects and resumes its netmap" wait_for 60 resumes_are 1
check "b renamed to bee" ctl nodes rename b bee
lab_node_join c c "$LAB_KEY"
check "bee sees a (presumed online) and c" wait_for 20 peers_are b "a c"
check_eq "the server sent one full netmap since the restart (c's first)" 1 \
	"$(metric 'trellis_control_messages_sent_total{type="netmap"}')"

kill -CONT "${LAB_NODE_PID[a]}"
check "a reconnects with the netmap it holds and resumes it" wait_for 60 resumed
check "a's resume was one delta of exactly the two peers it missed (bee renamed, c new)" \
	grep -qE "resumed the held netmap \(version [0-9]+\): a delta of 2 added, 0 changed, 0 removed peers" "$a_log"
check_eq "the server answered a with a delta: two resumes in all" 2 \
	"$(metric 'trellis_control_resumes_total{result="delta"}')"
check_eq "and with no full netmap: still only c's" 1 \
	"$(metric 'trellis_control_messages_sent_total{type="netmap"}')"
check_eq "no resume was refused" 0 "$(metric 'trellis_control_resumes_total{result="full"}')"
check "a lists bee and c" wait_for 10 peers_are a "bee c"
check "a reaches c (learned from the delta) over IPv4" ping_until a "$(node_ip c 4)" 20
check "a reaches bee over IPv6" ping_until a "$(node_ip b 6)" 20
check "c reaches a" ping_until c "$(node_ip a 4)" 20

for n in a b c; do
	lab_node_stop "$n"
done
lab_control_stop TERM
lab_finish
