#!/usr/bin/env bash
# UAPI conformance: the same wg(8) operations (setconf, addconf, syncconf, set: remove peer,
# listen port, fwmark, allowed IPs, keepalive, preshared key, private key) applied to
# trellisd and to wireguard-go must leave the same `wg showconf` and `wg show dump`
# (peer order and allowed-IP order normalized; handshake and transfer columns ignored).
source "$(dirname "$0")/lib.sh"
lab_init
lab_require_trellisd

lab_ns t
lab_ns r
IT=$(lab_iface t) # implementation under test
IR=$(lab_iface r) # reference: wireguard-go
lab_wg_start t trellisd "$IT" || exit 1
lab_wg_start r wggo "$IR" || exit 1
IMPL_T=${LAB_WG_IMPL[$IT]}

for k in dev dev2 p1 p2 p3 p4 psk1 psk2; do lab_key "$k"; done
P1=$(pub_of p1) P2=$(pub_of p2) P3=$(pub_of p3) P4=$(pub_of p4)
PSK1=$(cat "$(key_file psk1)") PSK2=$(cat "$(key_file psk2)")
DEV=$(cat "$(key_file dev)")

cat >"$LAB_TMP/normalize.py" <<'EOF'
# Canonical form of `wg showconf` (mode conf) or `wg show IFACE dump` (mode dump).
import sys
mode, text = sys.argv[1], sys.stdin.read()
if mode == 'conf':
    iface, peers, cur = [], [], None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line == '[Interface]':
            cur = iface
            continue
        if line == '[Peer]':
            cur = []
            peers.append(cur)
            continue
        k, _, v = line.partition('=')
        k, v = k.strip(), v.strip()
        if k == 'AllowedIPs':
            v = ', '.join(sorted(x.strip() for x in v.split(',')))
        cur.append(f'{k} = {v}')
    out = ['[Interface]'] + sorted(iface)
    for p in sorted(peers, key=lambda p: [l for l in p if l.startswith('PublicKey')]):
        out += ['', '[Peer]'] + sorted(p)
    print('\n'.join(out))
else:
    lines = text.splitlines()
    out = [lines[0]] if lines else []
    peers = []
    for l in lines[1:]:
        f = l.split('\t')
        # pub psk endpoint allowed-ips latest-handshake rx tx keepalive
        f[3] = ','.join(sorted(f[3].split(',')))
        f[4] = f[5] = f[6] = '-'
        peers.append('\t'.join(f))
    print('\n'.join(out + sorted(peers)))
EOF

# both CMD-WITH-@IFACE@...: run a wg command against both daemons; asserts both agree on
# success or failure.
both()
{
	local desc=$1 rc_t rc_r
	shift
	local args_t=("${@//@IFACE@/$IT}") args_r=("${@//@IFACE@/$IR}")
	nsx t "${args_t[@]}" >"$LAB_TMP/out.t" 2>&1
	rc_t=$?
	nsx r "${args_r[@]}" >"$LAB_TMP/out.r" 2>&1
	rc_r=$?
	if [[ $rc_t == "$rc_r" ]]; then
		pass "$desc: same exit status ($rc_t)"
	else
		fail "$desc: exit status $IMPL_T=$rc_t wireguard-go=$rc_r"
		sed 's/^/  | t: /' "$LAB_TMP/out.t"
		sed 's/^/  | r: /' "$LAB_TMP/out.r"
	fi
}

# compare STEP: showconf and dump of both, normalized, must match.
compare()
{
	local step=$1 m
	for m in conf dump; do
		if [[ $m == conf ]]; then
			wg showconf "$IT" 2>&1 | python3 "$LAB_TMP/normalize.py" conf >"$LAB_TMP/t.$m"
			wg showconf "$IR" 2>&1 | python3 "$LAB_TMP/normalize.py" conf >"$LAB_TMP/r.$m"
		else
			wg show "$IT" dump 2>&1 | python3 "$LAB_TMP/normalize.py" dump >"$LAB_TMP/t.$m"
			wg show "$IR" dump 2>&1 | python3 "$LAB_TMP/normalize.py" dump >"$LAB_TMP/r.$m"
		fi
		if cmp -s "$LAB_TMP/t.$m" "$LAB_TMP/r.$m"; then
			pass "$step: $m identical"
		else
			fail "$step: $m differs ($IMPL_T vs wireguard-go)"
			diff -u "$LAB_TMP/r.$m" "$LAB_TMP/t.$m" | sed 's/^/  | /' | head -40
		fi
	done
	# The test must be able to fail: the state must not be trivially empty.
	[[ -s $LAB_TMP/r.conf ]] || fail "$step: reference showconf is empty"
}

log "=== setconf"
cat >"$LAB_TMP/c1.conf" <<EOF
[Interface]
PrivateKey = $DEV
ListenPort = 51820
FwMark = 0x1234

[Peer]
PublicKey = $P1
PresharedKey = $PSK1
AllowedIPs = 100.64.1.0/24, fd7a:115c:a1e0:1::/64, 100.64.11.7/32
Endpoint = 192.0.2.10:51820
PersistentKeepalive = 25

[Peer]
PublicKey = $P2
AllowedIPs = 100.64.2.1/32
Endpoint = [2001:db8::10]:51821

[Peer]
PublicKey = $P3
AllowedIPs = 100.64.3.0/24, fd7a:115c:a1e0:3::/64, 198.18.3.0/24
EOF
both "setconf" wg setconf @IFACE@ "$LAB_TMP/c1.conf"
compare "after setconf"
check_eq "after setconf: 3 peers" 3 "$(wg show "$IT" peers | wc -l)"
check_eq "after setconf: fwmark" 0x1234 "$(wg show "$IT" fwmark)"
check_eq "after setconf: v6 endpoint" "[2001:db8::10]:51821" "$(wg_get "$IT" endpoints "$P2")"

log "=== addconf"
cat >"$LAB_TMP/c2.conf" <<EOF
[Peer]
PublicKey = $P4
PresharedKey = $PSK2
AllowedIPs = 100.64.4.0/24
Endpoint = 198.51.100.4:4444

[Peer]
PublicKey = $P1
AllowedIPs = 100.64.9.0/24

[Peer]
PublicKey = $P2
Endpoint = 203.0.113.2:2222
EOF
both "addconf" wg addconf @IFACE@ "$LAB_TMP/c2.conf"
compare "after addconf"
# wg(8) sends replace_allowed_ips for a peer section that names AllowedIPs, addconf too.
check_eq "after addconf: p1's allowed IPs replaced as wg(8) asks" "100.64.9.0/24" \
	"$(wg_get "$IT" allowed-ips "$P1")"
check_eq "after addconf: p2's endpoint updated" "203.0.113.2:2222" "$(wg_get "$IT" endpoints "$P2")"
check_eq "after addconf: 4 peers" 4 "$(wg show "$IT" peers | wc -l)"

log "=== syncconf"
cat >"$LAB_TMP/c3.conf" <<EOF
[Interface]
PrivateKey = $DEV
ListenPort = 51830

[Peer]
PublicKey = $P1
AllowedIPs = 100.64.1.0/24
Endpoint = 192.0.2.11:51820

[Peer]
PublicKey = $P2
PresharedKey = $PSK1
AllowedIPs = 100.64.2.0/24, fd7a:115c:a1e0:2::/64
PersistentKeepalive = 10

[Peer]
PublicKey = $P4
AllowedIPs = 100.64.4.0/24
EOF
both "syncconf" wg syncconf @IFACE@ "$LAB_TMP/c3.conf"
compare "after syncconf"
check_eq "after syncconf: p3 removed" "" "$(wg show "$IT" peers | grep -xF "$P3")"

log "=== set"
both "set: remove peer" wg set @IFACE@ peer "$P4" remove
compare "after removing a peer"
both "set: listen-port" wg set @IFACE@ listen-port 51999
both "set: fwmark" wg set @IFACE@ fwmark 0x42
compare "after listen-port and fwmark"
check_eq "after set: listen port" 51999 "$(wg show "$IT" listen-port)"
both "set: fwmark off" wg set @IFACE@ fwmark 0
both "set: replace allowed IPs" wg set @IFACE@ peer "$P1" allowed-ips 100.64.1.0/25,fd7a:115c:a1e0:1::/64
both "set: steal an allowed IP from another peer" wg set @IFACE@ peer "$P2" allowed-ips 100.64.2.0/24,100.64.1.0/25
both "set: keepalive off" wg set @IFACE@ peer "$P2" persistent-keepalive off
both "set: remove preshared key" wg set @IFACE@ peer "$P2" preshared-key /dev/null
both "set: new peer with endpoint and keepalive" \
	wg set @IFACE@ peer "$P3" endpoint 192.0.2.33:3333 persistent-keepalive 5 allowed-ips ""
both "set: new private key" wg set @IFACE@ private-key "$(key_file dev2)"
compare "after set"
check_eq "after set: fwmark off" off "$(wg show "$IT" fwmark)"
check_eq "after set: stolen allowed IP moved" "100.64.1.0/25 100.64.2.0/24" \
	"$(wg_get "$IT" allowed-ips "$P2" | tr ' ' '\n' | sort | xargs)"
check_eq "after set: public key follows private key" "$(pub_of dev2)" "$(wg show "$IT" public-key)"
both "set: remove a peer that does not exist" wg set @IFACE@ peer "$(pub_of dev)" remove
both "set: listen-port 0 (random) keeps a port" wg set @IFACE@ listen-port 0
check "after listen-port 0: $IMPL_T has a non-zero port" test "$(wg show "$IT" listen-port)" -gt 0
both "set: listen-port back" wg set @IFACE@ listen-port 51999
compare "after listen-port 0 and back"

log "=== setconf replaces everything"
printf '[Interface]\nPrivateKey = %s\nListenPort = 51821\n' "$DEV" >"$LAB_TMP/c4.conf"
both "setconf (no peers)" wg setconf @IFACE@ "$LAB_TMP/c4.conf"
compare "after setconf without peers"
check_eq "after setconf without peers: no peer left" "" "$(wg show "$IT" peers)"

((LAB_FAIL > 0)) && lab_dump_logs "$IT" "$IR"
check "$IMPL_T still running" lab_wg_alive "$IT"
lab_wg_stop "$IT"
lab_wg_stop "$IR"
lab_finish
