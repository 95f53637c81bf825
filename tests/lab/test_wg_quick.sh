#!/usr/bin/env bash
# wg-quick with trellisd as its userspace implementation, as with wireguard-go:
# WG_QUICK_USERSPACE_IMPLEMENTATION=trellisd wg-quick up CONF runs `trellisd IFACE`, which
# must return only once the interface and its UAPI socket are up (wg-quick configures them
# at once) and go on in the background; `wg-quick down` deletes the interface and the
# daemon must go with it. Also: -f / WG_PROCESS_FOREGROUND=1 stay in the foreground, and a
# daemon that cannot start makes `trellisd IFACE` fail instead of returning 0.
#
#   A (ns a) 192.0.2.1  ==== veth ====  B (ns b) 192.0.2.2
#   A: trellisd by wg-quick, 100.64.0.1   B: wireguard-go, 100.64.0.2
source "$(dirname "$0")/lib.sh"
lab_init
lab_require wg-quick
lab_require_trellisd
[[ $(lab_trellisd_impl) == trellisd ]] || lab_skip "tests trellisd's own daemonizing"

lab_two_hosts
IA=$(lab_iface qa)
IB=$(lab_iface qb)
lab_wg_start b wggo "$IB" || exit 1
nsx b wg set "$IB" private-key "$(key_file b)" listen-port 51821
lab_wg_up b "$IB" 100.64.0.2/32
ip -n "$(ns_name b)" route add 100.64.0.1/32 dev "$IB"
nsx b wg set "$IB" peer "$(pub_of a)" allowed-ips 100.64.0.1/32

CONF=$LAB_TMP/$IA.conf
cat >"$CONF" <<CONF
[Interface]
PrivateKey = $(cat "$(key_file a)")
ListenPort = 51820
Address = 100.64.0.1/32
MTU = 1420

[Peer]
PublicKey = $(pub_of b)
AllowedIPs = 100.64.0.2/32
Endpoint = 192.0.2.2:51821
CONF
chmod 600 "$CONF"
LAB_IFACES+=("$IA") # its socket is removed at cleanup if the daemon is killed hard

# wg_quick ACTION: wg-quick in ns a with trellisd as the userspace implementation. Output
# (the daemon's log too: it keeps wg-quick's stderr) goes to a file, so nothing waits on it.
wg_quick()
{
	WG_QUICK_USERSPACE_IMPLEMENTATION=$TRELLISD nsx a wg-quick "$1" "$CONF" \
		>>"$LAB_TMP/wg-quick.log" 2>&1
}

# daemon_pid IFACE: the process listening on IFACE's UAPI socket (unix sockets are listed
# per network namespace: the daemon's is a's).
daemon_pid()
{
	nsx a ss -xlpn 2>/dev/null | awk -v s="$WG_SOCK_DIR/$1.sock" \
		'$5 == s { if (match($0, /pid=[0-9]+/)) print substr($0, RSTART + 4, RLENGTH - 4) }' |
		head -n 1
}

# ---- up: returns with the interface configured (no waiting: that is the contract)
check "wg-quick up with trellisd" wg_quick up
PID=$(daemon_pid "$IA")
[[ -n $PID ]] && LAB_PIDS+=("$PID")
check "a daemon serves the UAPI socket" test -n "$PID"
check_eq "the daemon is trellisd" "$(readlink -f "$TRELLISD")" "$(readlink -f "/proc/$PID/exe" 2>/dev/null)"
check "the daemon runs in its own session (detached from wg-quick)" \
	test "$(ps -o sid= -p "$PID" | tr -d ' ')" = "$PID"
check_eq "wg shows the configured peer" "$(pub_of b)" "$(wg show "$IA" peers)"
check_eq "listen port from the config" 51820 "$(wg show "$IA" listen-port)"
check_eq "MTU from the config" 1420 "$(ip -n "$(ns_name a)" -o link show "$IA" | sed -n 's/.* mtu \([0-9]*\) .*/\1/p')"
check "address from the config" ip -n "$(ns_name a)" addr show dev "$IA" to 100.64.0.1/32
check "a -> b over the tunnel" ping_until a 100.64.0.2 10
check "b -> a over the tunnel, 5/5" ping_all b 100.64.0.1 5

# ---- down: the interface goes, and the daemon with it
check "wg-quick down" wg_quick down
check_not "interface removed" ip -n "$(ns_name a)" link show "$IA"
gone() { ! kill -0 "$PID" 2>/dev/null; }
check "the daemon exits when its interface is deleted" wait_for 20 gone
check_not "its UAPI socket removed" test -e "$WG_SOCK_DIR/$IA.sock"
if grep -qE 'AddressSanitizer|runtime error:|LeakSanitizer' "$LAB_TMP/wg-quick.log"; then
	fail "daemon log has a sanitizer report"
	grep -m5 -E 'AddressSanitizer|runtime error:|LeakSanitizer' "$LAB_TMP/wg-quick.log" | sed 's/^/  | /'
fi

# ---- foreground: -f and WG_PROCESS_FOREGROUND=1 keep the process we started
IF=$(lab_iface qf)
LAB_IFACES+=("$IF")
ip netns exec "$(ns_name a)" "$TRELLISD" -f "$IF" >"$LAB_TMP/fg.log" 2>&1 &
FG=$!
LAB_PIDS+=("$FG")
up() { [[ -S $WG_SOCK_DIR/$IF.sock ]] && wg show "$IF" >/dev/null 2>&1; }
check "trellisd -f IFACE comes up" wait_for 10 up
check_eq "trellisd -f IFACE stays in the foreground (the socket is ours)" "$FG" "$(daemon_pid "$IF")"
kill -TERM "$FG"
wait "$FG"
check_eq "trellisd -f exits 0 on SIGTERM" 0 "$?"
lab_forget "$FG"

WG_PROCESS_FOREGROUND=1 ip netns exec "$(ns_name a)" "$TRELLISD" "$IF" >"$LAB_TMP/fg2.log" 2>&1 &
FG=$!
LAB_PIDS+=("$FG")
check "WG_PROCESS_FOREGROUND=1 trellisd IFACE comes up" wait_for 10 up
check_eq "WG_PROCESS_FOREGROUND=1 stays in the foreground" "$FG" "$(daemon_pid "$IF")"
kill -TERM "$FG"
wait "$FG"
check_eq "exits 0 on SIGTERM" 0 "$?"
lab_forget "$FG"

# ---- a daemon that cannot start: the parent says so (eth0 exists and is no TUN device)
timeout 10 ip netns exec "$(ns_name a)" "$TRELLISD" eth0 >"$LAB_TMP/bad.log" 2>&1
rc=$?
check_eq "trellisd IFACE exits 1 when the daemon cannot start" 1 "$rc"
check "and the reason is on stderr" grep -q . "$LAB_TMP/bad.log"
check_not "nothing serves a socket for it" test -S "$WG_SOCK_DIR/eth0.sock"

lab_wg_stop "$IB"
lab_finish
