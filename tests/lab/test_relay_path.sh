#!/usr/bin/env bash
# Relays (issue 9): every node reaches every peer, even with UDP blocked.
#   - control (with its embedded relay, the default relay map) on the lab internet;
#     A behind an easy NAT (masquerade), B behind a firewall that drops all UDP (only TCP
#     to the relay works), C on a public address
#   - every pair pings and moves a short iperf3 TCP stream (received bytes checked)
#   - A<->B and C<->B go through the relay and status --json says so; A<->C go direct
#   - a capture on the relay host shows the relayed packets but no inner plaintext (the
#     same capture pattern is found on B's TUN: the check can fail)
#   - the relay map is the admin's to set (relaymap set), and B reports its home region
#   - a node the admin deletes loses its relay connection and its peers cannot reach it
#
#   lab internet 192.0.2.0/24: ctl .1:8080, C .13, router ra .21, router rb .22
#   A 198.18.1.2 -- 198.18.1.1 ra (masquerade)
#   B 198.18.2.2 -- 198.18.2.1 rb (masquerade, UDP dropped both ways)
LAB_TIMEOUT=${LAB_TIMEOUT:-540} # the watchdog: 240 s seen under load
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/natlab.sh"
lab_init
lab_require_control_plane
lab_require nft iperf3 tcpdump
# Until the relay server (issue 9, item 1) is in this build, there is nothing to relay through.
"$TRELLIS_CONTROL" --help 2>&1 | grep -q -- --no-relay ||
	lab_skip "this trellis-control has no embedded relay"

lab_internet
lab_public_host ctl 1
lab_public_host c 13
lab_public_host ra 21
lab_public_host rb 22

# site SHORT ROUTER LAN: host SHORT behind ROUTER on 198.18.LAN.0/24, masqueraded.
site()
{
	natlab_lan "$1" "$2" eth1 "198.18.$3"
	lab_forwarding "$2"
	nsx "$2" nft -f - <<EOF
table ip nat {
	chain post {
		type nat hook postrouting priority srcnat;
		oifname "eth0" masquerade
	}
}
EOF
}
site a ra 1
site b rb 2
natlab_block_udp rb

lab_control_start ctl 192.0.2.1 8080 || lab_finish

# ---- the relay map: strict checking, and the default (the embedded relay) in force
printf '{"regions": [{"id": 1, "code": "default", "nodes": [{"name": "x", "ipv4": "1.2.3"}]}]}' \
	>"$LAB_TMP/bad-map.json"
check "relaymap set refuses a bad file, saying where" \
	bash -c "! '$TRELLIS_CONTROL' --state '$LAB_TMP/control' relaymap set '$LAB_TMP/bad-map.json' 2>'$LAB_TMP/bad-map.err' &&
		grep -q 'regions\[0\].nodes\[0\].ipv4: \"1.2.3\" is not an IPv4 address' '$LAB_TMP/bad-map.err'"
check "relaymap get: the default, the embedded relay" \
	bash -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' relaymap get | grep -q 'default (embedded)'"

KEY=$(lab_authkey --reusable)
lab_node_join a a "$KEY"
lab_node_join b b "$KEY"
lab_node_join c c "$KEY"
for n in a b c; do
	others=$(printf '%s\n' a b c | grep -vx "$n" | tr '\n' ' ' | sed 's/ $//')
	check "$n sees $others" wait_for 10 peers_are "$n" "$others"
done

# relay_state NAME: the state of NAME's home relay connection.
relay_state() { status_eval "$1" "[r['state'] for r in j['relay']['regions'] if r['home']][0]"; }
relay_is() { [[ $(relay_state "$1") == "$2" ]]; }
relay_not() { [[ $(relay_state "$1") != "$2" ]]; }
home_is() { [[ $(status_eval "$1" "j['relay']['home']") == "$2" ]]; }
# home_of NAME PEER: the home relay region NAME's netmap gives for PEER.
home_of() { status_eval "$1" "[p['home_relay'] for p in j['peers'] if p['hostname'] == '$2'][0]"; }
peer_home_is() { [[ $(home_of "$1" "$2") == "$3" ]]; }
endpoint_of() { status_eval "$1" "[p['endpoint'] for p in j['peers'] if p['hostname'] == '$2'][0]"; }

for n in a b c; do
	check "$n's home relay (region default) is connected" wait_for 15 relay_is "$n" connected
done
check "a learns b's home region from the netmap" wait_for 10 peer_home_is a b default
check "c learns b's home region from the netmap" wait_for 10 peer_home_is c b default

declare -A IP4
for n in a b c; do
	IP4[$n]=$(node_ip "$n" 4)
done

# ---- every pair pings
for pair in "a b" "b a" "c b" "b c" "a c" "c a"; do
	set -- $pair
	check "$1 -> $2: ping reaches" ping_until "$1" "${IP4[$2]}" 15
	check "$1 -> $2: 5 pings, none lost" ping_all "$1" "${IP4[$2]}" 5
done

# ---- paths: whatever involves b is relayed, a<->c direct
check "a -> b relayed (status --json)" wait_for 10 path_is a b relay:default
check "b -> a relayed" wait_for 10 path_is b a relay:default
check "c -> b relayed" wait_for 10 path_is c b relay:default
check "b -> c relayed" wait_for 10 path_is b c relay:default
check "a -> c direct" wait_for 10 path_is a c direct
check "c -> a direct" wait_for 10 path_is c a direct
ep=$(endpoint_of c a)
check "c reaches a at its NAT's address ($ep)" test "${ep%:*}" = 192.0.2.21
tr_node a status >"$LAB_TMP/status-a.txt" 2>&1
tr_node b status >"$LAB_TMP/status-b.txt" 2>&1
check "trellis status (table) shows the relay for b" grep -qE '^b .* relay default' "$LAB_TMP/status-a.txt"
check "trellis status (table) shows the home region" grep -q '^relay: home default' "$LAB_TMP/status-b.txt"

# ---- a short iperf3 per pair, bytes received checked at the server
port=5201
for pair in "a b" "c b" "b a" "a c"; do
	set -- $pair
	port=$((port + 1))
	if ! iperf_server "$2" "${IP4[$2]}" "$port"; then
		fail "$1 -> $2: iperf3 server listening"
		continue
	fi
	nsx_timeout 20 "$1" iperf3 -c "${IP4[$2]}" -p "$port" -t 2 -J >"$LAB_TMP/iperf-$1-$2.json" 2>&1
	wait "$LAST_IPERF_SERVER" 2>/dev/null
	lab_forget "$LAST_IPERF_SERVER"
	got=$(json_get "$LAB_TMP/iperf-server-$port.json" "j['end']['sum_received']['bytes']" 2>/dev/null)
	log "$1 -> $2: iperf3 received ${got:-?} bytes"
	check "$1 -> $2: iperf3 moved at least 1 MB" test "${got:-0}" -ge 1000000
done
check "a -> c stayed direct under load" path_is a c direct
check "a -> b stayed relayed under load" path_is a b relay:default

# ---- the relay sees only ciphertext
PATTERN=5472656c6c6973506c61696e74657874 # "TrellisPlaintext"
# capture NS IFACE FILTER FILE COUNT: tcpdump in the background until it has COUNT
# packets (it exits by itself, having written them all); waits until it listens.
capture()
{
	ip netns exec "$(ns_name "$1")" tcpdump -i "$2" -U -n -c "$5" -w "$4" $3 2>"$4.err" &
	LAB_PIDS+=($!)
	LAST_CAPTURE=$!
	wait_for 10 grep -q "listening on" "$4.err"
}
# capture_done PID: bounded wait for a capture to exit by itself.
capture_done()
{
	local pid=$1
	lab_pid_wait_exit "$pid" 10 TERM
	wait "$pid" 2>/dev/null
	local rc=$?
	lab_forget "$pid"
	return $rc
}
# 5 relayed pings: at least 20 data segments on the relay host, 10 ICMP on b's TUN.
check "capture on the relay host" capture ctl eth0 "tcp port 8080" "$LAB_TMP/relay.pcap" 20
cap_relay=$LAST_CAPTURE
check "capture on b's TUN" capture b "$(lab_node_tun b)" icmp "$LAB_TMP/tun-b.pcap" 10
cap_tun=$LAST_CAPTURE
check "a -> b: pings with a known payload" ping_all a "${IP4[b]}" 5 -p "$PATTERN" -s 64
check "the relay host saw 20 packets of relayed traffic" capture_done "$cap_relay"
check "b's TUN saw the 10 pings and replies" capture_done "$cap_tun"
check "b's TUN capture holds the payload pattern (the check can fail)" \
	bash -c "[[ \$(od -An -v -tx1 '$LAB_TMP/tun-b.pcap' | tr -d ' \n') == *$PATTERN* ]]"
check_not "the relay host's capture never holds the payload pattern" \
	bash -c "[[ \$(od -An -v -tx1 '$LAB_TMP/relay.pcap' | tr -d ' \n') == *$PATTERN* ]]"

# ---- the admin's relay map reaches the nodes as a delta
cat >"$LAB_TMP/map.json" <<'EOF'
{"regions": [{"id": 7, "code": "lab", "name": "Lab relay",
  "nodes": [{"name": "ctl", "ipv4": "192.0.2.1", "relay_port": 8080, "stun_port": 3478}]}]}
EOF
check "relaymap set FILE" ctl relaymap set "$LAB_TMP/map.json"
check "relaymap get shows it" bash -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' relaymap get --json | grep -q '\"code\": \"lab\"'"
for n in a b c; do
	check "$n moves to the new map's region" wait_for 15 home_is "$n" lab
done
check "b connected to region lab" wait_for 15 relay_is b connected
check "a learns b's new home" wait_for 10 peer_home_is a b lab
check "a -> b through the new region" ping_until a "${IP4[b]}" 15
check "a -> b relayed via lab" wait_for 10 path_is a b relay:lab

# ---- a node the admin deletes is cut off from the relay
check "nodes delete b" ctl nodes delete b
check "b's relay connection is closed (not connected within 5 s)" \
	wait_for 20 relay_not b connected
check "b vanishes from a's peers" wait_for 20 peers_are a "c"
check "a -> b no longer answers" ping_none a "${IP4[b]}" 3

for n in a b c; do
	lab_node_stop "$n"
done
lab_control_stop TERM
lab_finish
