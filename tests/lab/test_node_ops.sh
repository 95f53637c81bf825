#!/usr/bin/env bash
# A node for an operator (issue 8): the silent failures seen, each shown fixed, and what the
# node offers a service manager and a monitoring system.
#   - `trellis up` naming an unreachable server (a typo) on a working node changes nothing:
#     it fails saying so, the node keeps its tailnet and traffic, and nothing retries the
#     typo; a reachable other server needs --force-reauth, which is a new login (approval)
#     on the same server too
#   - `trellis up` alone reconnects with the remembered settings (also after a restart);
#     after a crash (SIGKILL) the node reports its disco key of before and keeps its home
#     relay region (path.json)
#     `trellis set --hostname` renames a running node without a new login
#   - plain `trellis status` says the state in words and exits 0 only when running
#   - `nodes expire`: the node goes to needs_login with "node key expired" and a login URL
#     (a random code, never its guessable node id), with at most a couple of refused
#     registrations at the server (no retry storm); approving it (`nodes approve ID`, the
#     waiting re-login) brings it back with its id, name and address and a new node key
#     that its peers get; its record is untouched while it waits
#   - `nodes delete`: the node stays out (no new registration), says it was deleted, and
#     a later `trellis up` with a key joins again
#   - sd_notify: READY=1, STATUS= lines and WATCHDOG=1 on $NOTIFY_SOCKET
#   - `trellisd --metrics-listen`: Prometheus text with peers, handshakes, bytes, drops
#   - log lines: logged in, peers joining/leaving, first handshakes, the control server lost
#     and back; none per packet
#
#   lab internet 192.0.2.0/24, 2001:db8:1::/64: ctl .1:8080 (metrics .1:9090); a .11 b .12
#   c .13 d .14
# Many steps in one topology (about 4 minutes on a loaded 2-core machine): more than the
# default watchdog, well within meson's 600 s.
LAB_TIMEOUT=${LAB_TIMEOUT:-540}
source "$(dirname "$0")/lib.sh"
lab_init
lab_require_control_plane

LAB_CONTROL_SERVE_ARGS="--metrics-listen 192.0.2.1:9090" lab_tailnet_up a b c
lab_public_host d 14
KEY=$LAB_KEY

# ctl_metric NAME: a value from trellis-control's /metrics (0 when absent).
ctl_metric()
{
	nsx ctl curl -sf http://192.0.2.1:9090/metrics |
		awk -v n="$1" '$1 == n { print $2; f = 1 } END { if (!f) print 0 }'
}
regs() { ctl_metric "trellis_control_registrations_total{result=\"$1\"}"; }
regs_all() { echo $(($(regs ok) + $(regs needs_auth) + $(regs error))); }
state_is() { [[ $(status_eval "$1" "j.get('backend_state')") == "$2" ]]; }
log_of() { echo "$LAB_TMP/node-$1.log"; }

check "a sees b and c" wait_for 20 peers_are a "b c"
IP4_B=$(node_ip b 4)
check "a -> b over the tailnet" ping_until a "$IP4_B" 10

# ---- silent failure 1: a typo in the login server
out=$(tr_node a up --login-server http://192.0.2.1:9999 2>&1)
rc=$?
log "up with a typo: exit $rc: $out"
check_num "up --login-server http://192.0.2.1:9999 exits non-zero" "$rc" -ne 0
out_has() { grep -q -- "$1" <<<"$out"; }
check "... naming the server it cannot reach" out_has '192.0.2.1:9999'
check "... and saying that nothing changed" out_has 'nothing changed'
check "a is still running" state_is a running
check_eq "a still remembers its server" "$LAB_CONTROL_URL" "$(status_eval a "j['prefs']['login_server']")"
check_eq "a still has its peers" "b c" "$(peer_names a)"
check "a -> b still answers" ping_all a "$IP4_B" 3
check "the same server with a trailing slash is no other server" \
	tr_node a up --login-server "$LAB_CONTROL_URL/"
n_typo=$(grep -c '9999' "$(log_of a)")
# Past the first retry of the old behaviour (1 s backoff, up to 1.5 s with jitter).
sleep 3
check_eq "nothing retries the typo (no new log line naming it)" "$n_typo" "$(grep -c '9999' "$(log_of a)")"
check "b still sees a online" peers_online_are b "a c"
# Another server that answers: moving a logged-in node there needs --force-reauth.
ip netns exec "$(ns_name ctl)" "$TRELLIS_CONTROL" --state "$LAB_TMP/control2" serve \
	--listen 192.0.2.1:8081 --no-relay >"$LAB_TMP/control2.log" 2>&1 &
LAB_PIDS+=($!)
check "a second trellis-control listens on :8081" wait_listen ctl 8081
out=$(tr_node a up --login-server http://192.0.2.1:8081 2>&1)
rc=$?
log "up to another server: exit $rc: $out"
check_num "up to another (reachable) server without --force-reauth exits non-zero" "$rc" -ne 0
check "... naming --force-reauth" out_has '--force-reauth'
check "a is still running with its old server" state_is a running
check_eq "... and its old server" "$LAB_CONTROL_URL" "$(status_eval a "j['prefs']['login_server']")"
# --force-reauth on the same server is a new login too: without a key, c waits for approval.
cid=$(node_id c)
IP4_C=$(node_ip c 4)
out=$(tr_node c up --force-reauth --timeout 2 2>&1)
log "up --force-reauth on the same server: $out"
check "up --force-reauth without a key prints a login URL" out_has '/register/'
check "... a random code, not c's node id" grep -qE '/register/[0-9a-f]{16}$' <<<"$(grep -o 'http://[^ ]*' <<<"$out")"
check "c waits in needs_login" wait_for 10 state_is c needs_login
check "a no longer lists c (its new key is not approved)" wait_for 10 peers_are a "b"
check "nodes pending lists c's re-login, naming its node" \
	bash -c "timeout 20 '$TRELLIS_CONTROL' --state '$LAB_TMP/control' nodes pending --json | python3 -c 'import json,sys; assert [p for p in json.load(sys.stdin) if p[\"hostname\"] == \"c\" and p.get(\"node_id\") == $cid]'"
check "nodes approve c (its id: the waiting re-login)" ctl nodes approve "$cid"
check "c runs again after the approval" wait_for 15 node_connected c
check "a sees c again" wait_for 10 peers_are a "b c"
check_eq "c kept its node id" "$cid" "$(node_id c)"
check_eq "c kept its address" "$IP4_C" "$(node_ip c 4)"

# ---- remembered settings: up alone, set, a restart
check "trellis up alone (remembered server) returns at once on a running node" \
	timeout 5 "$TRELLIS_CLI" --socket "$(lab_node_sock a)" up
check_eq "prefs.json remembers the server" "$LAB_CONTROL_URL" \
	"$(json_get "$LAB_TMP/node-a/prefs.json" "j['login_server']")"
check "trellis set --hostname a2" tr_node a set --hostname a2
check "the server renames a to a2" wait_for 10 node_listed a2
check "b sees a2" wait_for 10 peers_are b "a2 c"
check_eq "a's self name is a2" a2 "$(status_eval a "j['self']['hostname']")"
check "a2 -> b answers after the rename" ping_until a "$IP4_B" 10
lab_node_stop a
lab_node_start a a
check "a restarted comes back by itself (remembered prefs)" wait_for 15 node_connected a
check_eq "... as a2" a2 "$(status_eval a "j['self']['hostname']")"
check "a -> b after the restart" ping_until a "$IP4_B" 10

# ---- a crash keeps what path discovery learned (path.json): the same disco key, so peers
# keep their path state for a, and the same home relay region without a new choice
disco_pub() { json_get "$LAB_TMP/node-$1/path.json" "j['disco_key']" | "$TRELLIS_CLI" pubkey; }
home_saved() { json_get "$LAB_TMP/node-$1/path.json" "j['home_region']"; }
home_now() { status_eval "$1" "j['relay']['home_region']"; }
home_kept() { [[ $(home_now a) != 0 && $(home_now a) == "$(home_saved a)" ]]; }
stun_measured() { tr_node "$1" netcheck --json | python3 -c 'import json,sys; assert json.load(sys.stdin)["measured"]'; }
check "a has a home region, kept in path.json" wait_for 20 home_kept
DK_A=$(disco_pub a)
HOME_A=$(home_saved a)
check "b's netmap has a's disco key" grep -qF "$DK_A" "$LAB_TMP/node-b/netmap.json"
lab_node_stop a KILL
# The server's next netmap to a says which disco key a reported after the crash.
rm -f "$LAB_TMP/node-a/netmap.json"
lab_node_start a a
check "a (crashed) comes back by itself" wait_for 15 node_connected a
check "a reports its disco key of before the crash" \
	wait_for 15 grep -qF "$DK_A" "$LAB_TMP/node-a/netmap.json"
check "a's STUN round ran after the crash" wait_for 20 stun_measured a
check_eq "a's home region is the one of before the crash" "$HOME_A" "$(home_now a)"
check_not "a chose no home region anew (it had one from path.json)" \
	bash -c "sed -n '/^----- start/h; /^----- start/!H; \${x;p}' '$(log_of a)' | grep -q 'home region .* (was 0)'"
check "a -> b after the crash" ping_until a "$IP4_B" 10

# ---- silent failure 4: plain status says the state and exits non-zero unless running
tr_node a status >"$LAB_TMP/st.txt" 2>&1
check_eq "status exits 0 when running" 0 "$?"
check "tr_node a down" tr_node a down
tr_node a status >"$LAB_TMP/st.txt" 2>&1
rc=$?
check_eq "status exits 2 when down" 2 "$rc"
check "... and says Stopped" grep -q '^Stopped' "$LAB_TMP/st.txt"
check "status --json exits 0 when down (trellisd answered)" tr_node a status --json
check "a up again with 'trellis up' alone" tr_node a up
check "a running again" wait_for 10 node_connected a
"$TRELLIS_CLI" --socket "$LAB_TMP/nonexistent.sock" status >/dev/null 2>&1
check_eq "status exits 1 when trellisd cannot be reached" 1 "$?"

# ---- silent failure 2: the admin expires b's key
bid=$(node_id b)
bkey0=$(status_eval b "j['self']['node_key']")
IP4_B=$(node_ip b 4)
err0=$(regs error)
all0=$(regs_all)
check "nodes expire b" ctl nodes expire "$bid"
check "b goes to needs_login" wait_for 10 state_is b needs_login
check "b's error says the key expired" \
	wait_for 20 bash -c "[[ \$('$TRELLIS_CLI' --socket '$(lab_node_sock b)' status --json | python3 -c 'import json,sys; print(json.load(sys.stdin).get(\"error\",\"\"))') == *'node key expired'* ]]"
check "b shows a login URL" \
	wait_for 10 bash -c "'$TRELLIS_CLI' --socket '$(lab_node_sock b)' status --json | grep -q '\"auth_url\": \"http://.*/register/'"
B_URL=$(status_eval b "j['auth_url']")
check "... under a random code, not b's node id ($B_URL)" grep -qE '/register/[0-9a-f]{16}$' <<<"$B_URL"
check "... whose page is the sign-in page for a re-login" \
	grep -q 'the person it belongs to signs in to renew it' <<<"$(nsx b curl -s "$B_URL")"
check_not "no page answers under b's node id" \
	nsx b curl -sf -o /dev/null "$LAB_CONTROL_URL/register/$bid"
tr_node b status >"$LAB_TMP/st-b.txt" 2>&1
rc=$?
check_eq "plain status of b exits 2" 2 "$rc"
check "... and says the node key expired" grep -q 'node key expired' "$LAB_TMP/st-b.txt"
check "... and shows where to log in" grep -qE '^Log in at:' "$LAB_TMP/st-b.txt"
sed 's/^/  | /' "$LAB_TMP/st-b.txt"
# The old node retried the refused rotation about once a second (16 refusals seen).
sleep 4
err1=$(regs error)
all1=$(regs_all)
log "server registrations after the expiry: $((all1 - all0)) (errors $((err1 - err0)))"
check_num "at most one refused registration at the server" "$((err1 - err0))" -le 1
check_num "at most three registrations in all (no retry storm)" "$((all1 - all0))" -le 3
check "a no longer lists b" wait_for 20 peers_are a "c"
check "nodes approve b" ctl nodes approve "$bid"
check "b is running again after the approval" wait_for 15 node_connected b
check "a sees b again" wait_for 10 peers_are a "b c"
check "a -> b after the re-login" ping_until a "$(node_ip b 4)" 15
check_eq "b kept its node id" "$bid" "$(node_id b)"
check_eq "b kept its address" "$IP4_B" "$(node_ip b 4)"
bkey1=$(status_eval b "j['self']['node_key']")
check "b logged in again with a new node key" test -n "$bkey1" -a "$bkey1" != "$bkey0"
check_eq "a has b's new node key" "$bkey1" \
	"$(status_eval a "[p['node_key'] for p in j['peers'] if p['hostname']=='b'][0]")"

# ---- silent failure 5: the admin deletes c
cid=$(node_id c)
all0=$(regs_all)
check "nodes delete c" ctl nodes delete "$cid"
check "c goes to needs_login" wait_for 10 state_is c needs_login
check "c's error says it was deleted" \
	bash -c "'$TRELLIS_CLI' --socket '$(lab_node_sock c)' status --json | grep -q '\"error\": \".*deleted'"
sleep 3
check_eq "c did not register again (no registration at the server)" "$all0" "$(regs_all)"
check_not "c is not listed by the server" node_listed c
lab_node_stop c
lab_node_start c c
sleep 2
check_eq "c restarted stays out too" "$all0" "$(regs_all)"
check "... in needs_login" state_is c needs_login
# Without a key: the URL, and --timeout ends the wait (the registration waits on).
out=$(tr_node c up --timeout 2 2>&1)
rc=$?
check_num "up --timeout 2 without a key gives up waiting (exit 1)" "$rc" -eq 1
check "... after printing the login URL" out_has '/register/'
check "... saying it timed out" out_has 'timed out'
check "c joins again with an auth key (trellis up)" lab_node_up c "$KEY"
check "a sees the new c" wait_for 10 peers_are a "b c"

# ---- log lines: state changes, none per packet
check "a logged its login" grep -q 'logged in to http' "$(log_of a)"
check "a logged b leaving and joining" \
	bash -c "grep -q 'left the netmap' '$(log_of a)' && grep -q 'peer b (id [0-9]*) joined' '$(log_of a)'"
check "b logged its expired key" grep -q 'node key expired' "$(log_of b)"
check "c logged its deletion" grep -q 'deleted by an admin' "$(log_of c)"
# Either family: both have IPv6 on the lab internet, and disco prefers an IPv6 path.
check "a logged its first handshake with b, by name and endpoint" \
	grep -qE 'handshake with b: first since start, via ([0-9.]+|\[[0-9a-f:]+\]):[0-9]+' "$(log_of a)"
lines=$(wc -l <"$(log_of a)")
nsx a ping -n -q -c 50 -i 0.01 -W 1 "$(node_ip b 4)" >/dev/null 2>&1
check_eq "50 pings add no log line" "$lines" "$(wc -l <"$(log_of a)")"
lab_control_stop TERM
check "a logs the lost control server" wait_for 100 grep -q 'lost the control server' "$(log_of a)"
lab_control_start ctl 192.0.2.1 8080 || lab_finish
check "a logs the control server back" wait_for 40 grep -q 'reachable again' "$(log_of a)"

# ---- sd_notify and metrics: node d under a fake systemd
NOTIFY=$LAB_TMP/notify.sock
python3 -u -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    print(s.recv(4096).decode().replace("\n", " | "), flush=True)
' "$NOTIFY" >"$LAB_TMP/notify.txt" 2>&1 &
LAB_PIDS+=($!)
check "the notify socket listens" wait_for 30 test -S "$NOTIFY"
export NOTIFY_SOCKET=$NOTIFY WATCHDOG_USEC=400000
LAB_NODE_ARGS="--metrics-listen 127.0.0.1:9101" lab_node_start d d
unset NOTIFY_SOCKET WATCHDOG_USEC
check "READY=1 once the local API serves" wait_for 20 grep -q 'READY=1' "$LAB_TMP/notify.txt"
check "STATUS= says it needs a login" wait_for 20 grep -q '^STATUS=Needs login' "$LAB_TMP/notify.txt"
check "d joins" lab_node_up d "$KEY"
check "STATUS= says running" wait_for 20 grep -q '^STATUS=Running: tailnet' "$LAB_TMP/notify.txt"
check "WATCHDOG=1 keeps coming (every 200 ms)" \
	wait_for 20 bash -c "(( \$(grep -c WATCHDOG=1 '$LAB_TMP/notify.txt') >= 5 ))"
check "d -> a" ping_until d "$(node_ip a 4)" 10
metric() { nsx d curl -sf http://127.0.0.1:9101/metrics | awk -v n="$1" '$1 == n { print $2 }'; }
nsx d curl -sf http://127.0.0.1:9101/metrics >"$LAB_TMP/metrics-d.txt"
check "GET /metrics answers Prometheus text" grep -q '^# TYPE trellis_node_peers gauge' "$LAB_TMP/metrics-d.txt"
check_eq "trellis_node_peers is 3 (a, b, c)" 3 "$(metric trellis_node_peers)"
check_num "a handshake completed" "$(metric trellis_node_handshakes_total)" -ge 1
check_num "bytes were received" "$(metric trellis_node_rx_bytes_total)" -ge 84
check_eq "running" 1 "$(metric 'trellis_node_backend_state{state="running"}')"
check "drops carry a reason" grep -q '^trellis_node_drops_total{reason="rx_replay"} [0-9]' "$LAB_TMP/metrics-d.txt"
check "the version is there" grep -q '^trellis_node_build_info{version="' "$LAB_TMP/metrics-d.txt"
check_not "metrics are not on the tailnet address" \
	nsx a curl -sf -m 2 "http://$(node_ip d 4):9101/metrics"

for n in a b c d; do
	lab_node_stop "$n"
done
lab_control_stop TERM
lab_finish
