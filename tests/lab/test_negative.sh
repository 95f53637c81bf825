#!/usr/bin/env bash
# Things that must NOT work, and input that must not hurt:
#   1. a wrong public key on either side: nothing is delivered, the receiver's rx stays 0;
#   2. a peer sending from an inner source outside its allowed IPs: not delivered;
#   3. junk UDP (random, empty, short, oversized, well-typed but bogus) at the daemon's port
#      and junk on its UAPI socket: the daemon still runs and still passes traffic;
#   4. `wg set IFACE peer <invalid key>` and raw invalid UAPI requests fail with an error
#      and the daemon keeps running.
# Packets that reach B's TUN are counted by an nftables rule in B (prerouting, before any
# routing decision), so "not delivered" is measured, not inferred from a missing reply.
#
#   A (ns a) 192.0.2.1 ==== veth ==== 192.0.2.2 B (ns b, the implementation under test)
source "$(dirname "$0")/lib.sh"
lab_init
lab_require nft
lab_require_trellisd

IMPL_A=${IMPL_A:-wggo}     # the well-behaved peer
IMPL_B=${IMPL_B:-trellisd} # under test

lab_two_hosts
lab_key x # a key nobody uses: the "wrong" one
PA=$(pub_of a) PB=$(pub_of b) PX=$(pub_of x)

IA=$(lab_iface a)
IB=$(lab_iface b)
lab_wg_start a "$IMPL_A" "$IA" || exit 1
lab_wg_start b "$IMPL_B" "$IB" || exit 1
IMPL_B=${LAB_WG_IMPL[$IB]}
lab_wg_up a "$IA" 100.64.0.1/24
lab_wg_up b "$IB" 100.64.0.2/24
nsx a wg set "$IA" private-key "$(key_file a)" listen-port 51820
nsx b wg set "$IB" private-key "$(key_file b)" listen-port 51821

# Count what B's kernel receives from its tunnel interface, per inner source.
nsx b nft -f - <<EOF
table inet count {
	counter from_a { }
	counter from_spoof { }
	chain pre {
		type filter hook prerouting priority -300;
		iifname "$IB" ip saddr 100.64.0.1 counter name from_a
		iifname "$IB" ip saddr 100.64.0.9 counter name from_spoof
	}
}
EOF
nft_packets() { nsx b nft list counter inet count "$1" | awk '/packets/ { print $2 }'; }

# peers_reset: both sides forget every peer (fresh handshake state for the next case).
peers_reset()
{
	local p
	for p in $(wg show "$IA" peers); do nsx a wg set "$IA" peer "$p" remove; done
	for p in $(wg show "$IB" peers); do nsx b wg set "$IB" peer "$p" remove; done
}

# ---- 1a. B has a wrong key for A: A's initiation decrypts to a static key B doesn't know.
log "=== wrong key: B configured with X instead of A"
nsx a wg set "$IA" peer "$PB" allowed-ips 100.64.0.2/32 endpoint 192.0.2.2:51821
nsx b wg set "$IB" peer "$PX" allowed-ips 100.64.0.1/32 endpoint 192.0.2.1:51820
before=$(nft_packets from_a)
check_not "wrong key at B: a->b ping fails" nsx a ping -n -c 3 -i 0.3 -W 1 100.64.0.2
check_eq "wrong key at B: no packet from a reached b's TUN" "$before" "$(nft_packets from_a)"
check_eq "wrong key at B: b's rx for the (wrong) peer stays 0" 0 "$(wg_rx "$IB" "$PX")"
check_eq "wrong key at B: no handshake at b" 0 "$(wg_get "$IB" latest-handshakes "$PX")"
check_eq "wrong key at B: no handshake at a" 0 "$(wg_get "$IA" latest-handshakes "$PB")"
peers_reset

# ---- 1b. A has a wrong key for B: its initiation carries a MAC1 B must reject.
log "=== wrong key: A configured with X instead of B"
nsx a wg set "$IA" peer "$PX" allowed-ips 100.64.0.2/32 endpoint 192.0.2.2:51821
nsx b wg set "$IB" peer "$PA" allowed-ips 100.64.0.1/32
before=$(nft_packets from_a)
check_not "wrong key at A: a->b ping fails" nsx a ping -n -c 3 -i 0.3 -W 1 100.64.0.2
check_eq "wrong key at A: no packet from a reached b's TUN" "$before" "$(nft_packets from_a)"
check_eq "wrong key at A: b's rx for a stays 0" 0 "$(wg_rx "$IB" "$PA")"
check_eq "wrong key at A: b has no endpoint for a" "(none)" "$(wg_get "$IB" endpoints "$PA")"
peers_reset

# ---- 2. Allowed IPs: A (correct keys) sends from 100.64.0.9, which B does not allow for A.
log "=== inner source outside the peer's allowed IPs"
nsx a wg set "$IA" peer "$PB" allowed-ips 100.64.0.2/32 endpoint 192.0.2.2:51821
nsx b wg set "$IB" peer "$PA" allowed-ips 100.64.0.1/32
nsx a ip addr add 100.64.0.9/32 dev "$IA"
check "allowed IPs: control, a->b from 100.64.0.1 works" ping_until a 100.64.0.2 10
before_a=$(nft_packets from_a)
before_s=$(nft_packets from_spoof)
rx_before=$(wg_rx "$IB" "$PA")
check_not "allowed IPs: a->b from 100.64.0.9 gets no answer" \
	nsx a ping -n -c 5 -i 0.2 -W 1 -I 100.64.0.9 100.64.0.2
check_eq "allowed IPs: nothing from 100.64.0.9 reached b's TUN" "$before_s" "$(nft_packets from_spoof)"
check_num "allowed IPs: ... though b received (and authenticated) a's packets" \
	"$(wg_rx "$IB" "$PA")" -gt "$rx_before"
check "allowed IPs: control again, from 100.64.0.1 works" ping_all a 100.64.0.2 3
check_num "allowed IPs: control packets reached b's TUN" "$(nft_packets from_a)" -ge $((before_a + 3))
nsx a ip addr del 100.64.0.9/32 dev "$IA"

# ---- 3. Junk at the UDP port and the UAPI socket.
log "=== junk UDP at $IMPL_B's port and junk on its UAPI socket"
cat >"$LAB_TMP/junk_udp.py" <<'EOF'
import os, random, socket, struct, sys
dst = (sys.argv[1], int(sys.argv[2]))
random.seed(int(sys.argv[3]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
def send(b):
    try:
        s.sendto(b, dst)
    except OSError:
        pass
sent = 0
# empty, short, every size up to a bit past the largest WireGuard header
for n in list(range(0, 200)) + [1419, 1420, 1500, 4096, 65507]:
    send(os.urandom(n)); sent += 1
# well-typed messages (type 1..4, reserved zero) with the right and wrong lengths
for t, n in ((1, 148), (2, 92), (3, 64), (4, 32), (4, 48), (4, 1452), (1, 147), (2, 93), (3, 63),
             (4, 31), (5, 148), (0, 32)):
    for _ in range(20):
        send(struct.pack('<I', t) + os.urandom(n - 4)); sent += 1
# data messages for receiver index 0.. with random counters: must find no keypair
for i in range(200):
    send(struct.pack('<IIQ', 4, i, random.getrandbits(64)) + os.urandom(random.randint(16, 200)))
    sent += 1
# a burst of random datagrams
for _ in range(3000):
    send(os.urandom(random.randint(0, 1600))); sent += 1
print(sent)
EOF
cat >"$LAB_TMP/junk_uapi.py" <<'EOF'
import os, socket, sys, time
path = sys.argv[1]
def talk(payload, read=True):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect(path)
    try:
        if payload:
            s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = b''
        if read:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
        return out
    except OSError:
        return b''
    finally:
        s.close()
cases = [
    b'', b'\n', b'\n\n', b'\x00' * 64, os.urandom(4096),
    b'get=1\n', b'get=2\n\n', b'set=1\n', b'set=0\n\n', b'set=1\nbogus_key=1\n\n',
    b'set=1\nprivate_key=zz\n\n', b'set=1\nprivate_key=' + b'0' * 63 + b'\n\n',
    b'set=1\nlisten_port=99999999\n\n', b'set=1\nfwmark=-1\n\n',
    b'set=1\npublic_key=' + b'1' * 64 + b'\nallowed_ip=300.1.1.1/33\n\n',
    b'set=1\npublic_key=' + b'1' * 64 + b'\nendpoint=[::1\n\n',
    b'set=1\npublic_key=' + b'1' * 64 + b'\npersistent_keepalive_interval=70000\n\n',
    b'set=1\nreplace_peers=maybe\n\n', b'set=1\n' + b'x' * 100000 + b'\n\n',
    b'get=1\n' + b'=' * 5000 + b'\n\n', b'set=1\nprotocol_version=2\n\n',
]
for c in cases:
    talk(c)
# a line that never ends: the daemon must cap it, not buffer forever (we stop at 4 MiB)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(2)
s.connect(path)
try:
    for _ in range(64):
        s.sendall(b'a' * 65536)
except OSError:
    pass
s.close()
# many connections left open briefly
socks = []
for _ in range(64):
    try:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(path)
        socks.append(c)
    except OSError:
        break
time.sleep(0.5)
for c in socks:
    c.close()
print(len(cases))
EOF
rx_before=$(wg_rx "$IB" "$PA")
sent=$(nsx a python3 "$LAB_TMP/junk_udp.py" 192.0.2.2 51821 7)
log "sent $sent junk datagrams to $IMPL_B"
# Junk from the peer's own address and port too: the source must not make it trusted.
nsx a python3 - <<EOF
import os, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(('192.0.2.2', 51821))
for n in range(0, 200):
    try:
        s.send(b'\x04\x00\x00\x00' + os.urandom(n))
    except OSError:
        pass
EOF
check "junk: $IMPL_B still running after junk UDP" lab_wg_alive "$IB"
check_eq "junk: $IMPL_B's endpoint for a unchanged by junk" "192.0.2.1:51820" "$(wg_get "$IB" endpoints "$PA")"
check_num "junk: b's rx for a not inflated by junk (< 64 KB more)" \
	"$(wg_rx "$IB" "$PA")" -lt $((rx_before + 65536))
timeout 60 python3 "$LAB_TMP/junk_uapi.py" "$WG_SOCK_DIR/$IB.sock" >/dev/null 2>&1
check "junk: $IMPL_B still running after UAPI junk" lab_wg_alive "$IB"
check "junk: wg show still works" wg show "$IB"
check_eq "junk: configuration intact (private key)" "$PB" "$(wg show "$IB" public-key)"
# (UAPI "set" is applied line by line, as in wireguard-go: a request that fails half-way may
# have created its peer, so only a's own configuration is asserted.)
check "junk: configuration intact (peer a)" bash -c "wg show $IB peers | grep -qxF '$PA'"
check_eq "junk: configuration intact (a's allowed IPs)" "100.64.0.1/32" "$(wg_get "$IB" allowed-ips "$PA")"
check_eq "junk: configuration intact (listen port)" 51821 "$(wg show "$IB" listen-port)"
check "junk: traffic still passes a->b" ping_all a 100.64.0.2 3
check "junk: traffic still passes b->a" ping_all b 100.64.0.1 3

# ---- 4. Invalid configuration requests fail cleanly.
log "=== invalid configuration requests"
check_not "wg set peer <invalid key> fails" nsx b wg set "$IB" peer not-a-valid-key allowed-ips 100.64.0.5/32
check_not "wg set peer <key of wrong length> fails" nsx b wg set "$IB" peer "${PA:0:40}" remove
# wg(8) checks keys itself; speak UAPI directly to test the daemon's own validation.
uapi_errno()
{
	python3 - "$WG_SOCK_DIR/$IB.sock" "$1" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(3)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode().decode('unicode_escape').encode())
out = b''
while not out.endswith(b'\n\n'):
    b = s.recv(4096)
    if not b:
        break
    out += b
for line in out.decode(errors='replace').splitlines():
    if line.startswith('errno='):
        print(line[6:])
        break
else:
    print('none')
EOF
}
for req in 'set=1\npublic_key=zz\n\n' \
	'set=1\npublic_key=0123456789\n\n' \
	"set=1\npublic_key=$(printf 'g%.0s' {1..64})\n\n" \
	'set=1\nlisten_port=notaport\n\n' \
	"set=1\npublic_key=$(printf '1%.0s' {1..64})\nallowed_ip=100.64.0.5/40\n\n" \
	"set=1\npublic_key=$(printf '1%.0s' {1..64})\nendpoint=nonsense\n\n" \
	'set=1\nno_such_key=1\n\n'; do
	e=$(uapi_errno "$req")
	check "UAPI '${req//\\n/ }' answers a non-zero errno ($e)" test "$e" != 0 -a "$e" != none
done
check_eq "UAPI get after errors answers errno=0" 0 "$(uapi_errno 'get=1\n\n')"
check "invalid requests: $IMPL_B still running" lab_wg_alive "$IB"
check "invalid requests: peer a still configured" bash -c "wg show $IB peers | grep -qxF '$PA'"
check "invalid requests: traffic still passes" ping_all a 100.64.0.2 3

((LAB_FAIL > 0)) && lab_dump_logs "$IA" "$IB"
lab_wg_stop "$IB"
lab_wg_stop "$IA"
lab_finish
