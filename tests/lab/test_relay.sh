#!/usr/bin/env bash
# The relay servers, with relay_probe clients speaking the relay protocol:
#   - STUN: a Binding request from a plain socket (Python) to trellis-relay gets the
#     client's own address back in XOR-MAPPED-ADDRESS, over IPv4 and over IPv6
#   - mesh: two standalone relays of one region share a mesh key; a client homed on
#     relay 1 reaches a client homed on relay 2 (one hop through the mesh); relay 1 is
#     killed, its client reconnects to relay 2 and the traffic continues
#   - TLS: a relay with --tls-cert/--tls-key relays between two clients that verify it
#   - admission: the relay embedded in trellis-control, and a standalone relay with
#     --verify-clients, admit a registered node's key and refuse any other; a node
#     deleted by the admin is disconnected from both within a second or so
#
#   lab internet 192.0.2.0/24, 2001:db8:1::/64: r1 .1, r2 .2, r3 .3 (verifying), r4 .4
#   (TLS), ctl .20;
#   clients a .11, b .12; node n .31 (a real trellisd, for a registered key)
source "$(dirname "$0")/lib.sh"
lab_init
lab_require_control_plane
lab_require curl openssl

RELAY=${TRELLIS_RELAY:-$TRELLIS_BUILD/src/relay/trellis-relay}
PROBE=$TRELLIS_BUILD/tests/tools/relay_probe
[[ -x $RELAY && -x $PROBE ]] || lab_skip "trellis-relay or relay_probe not built"

lab_internet
for h in r1:1 r2:2 r3:3 r4:4 ctl:20 a:11 b:12 n:31; do
	lab_public_host "${h%%:*}" "${h#*:}"
done

declare -A RELAY_PID=()
# relay_start SHORT ARGS...: trellis-relay in namespace SHORT on :8080, bounded wait.
relay_start()
{
	local short=$1 log="$LAB_TMP/relay-$1.log"
	shift
	LAB_EXTRA_LOGS+=("trellis-relay $short=$log")
	ip netns exec "$(ns_name "$short")" "$RELAY" --listen 0.0.0.0:8080 "$@" >"$log" 2>&1 &
	RELAY_PID[$short]=$!
	LAB_PIDS+=($!)
	wait_listen "$short" 8080
}
# metric NS URL NAME: a metric's value (a whole series name with labels), 0 if absent.
metric()
{
	nsx "$1" curl -sf "$2/metrics" | awk -v n="$3" '$1 == n { print $2; f = 1 } END { if (!f) print 0 }'
}
metric_is() { [[ $(metric "$1" "$2" "$3") == "$4" ]]; }
metric_ge() { (($(metric "$1" "$2" "$3") >= $4)); }
# probe SHORT NAME ARGS...: relay_probe in the background, output in $LAB_TMP/probe-NAME.out.
declare -A PROBE_PID=()
probe()
{
	local short=$1 name=$2
	shift 2
	ip netns exec "$(ns_name "$short")" "$PROBE" "$@" >"$LAB_TMP/probe-$name.out" 2>&1 &
	PROBE_PID[$name]=$!
	LAB_PIDS+=($!)
}
probe_has() { grep -q -- "$2" "$LAB_TMP/probe-$1.out"; }
probe_count() { grep -c -- "$2" "$LAB_TMP/probe-$1.out"; }

# ---- STUN
(umask 077 && "$TRELLIS_CLI" genkey >"$LAB_TMP/mesh.key")
relay_start r1 --mesh-key "$LAB_TMP/mesh.key" --mesh-peer http://192.0.2.2:8080
relay_start r2 --mesh-key "$LAB_TMP/mesh.key" --mesh-peer http://192.0.2.1:8080

cat >"$LAB_TMP/stun.py" <<'EOF'
# A STUN Binding request (RFC 8489) from a plain UDP socket; prints the
# XOR-MAPPED-ADDRESS of the answer as "ADDR PORT" and the socket's own "ADDR PORT".
import os, socket, struct, sys
server, family = sys.argv[1], socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.connect((server, 3478))
txid = os.urandom(12)
req = struct.pack("!HHI", 1, 0, 0x2112A442) + txid
# Retransmitted as RFC 8489 6.2.1 says (RTO 500 ms, doubling), the same transaction each
# time, for up to 15.5 s: UDP may lose a datagram, and a busy machine may answer late.
data, rto = None, 0.5
for _ in range(6):
	s.send(req)
	s.settimeout(rto)
	try:
		data = s.recv(1500)
		break
	except socket.timeout:
		rto *= 2
assert data, "no answer"
typ, length, cookie = struct.unpack("!HHI", data[:8])
assert typ == 0x0101 and cookie == 0x2112A442 and data[8:20] == txid, "not our success response"
off, mapped = 20, None
while off < 20 + length:
	atype, alen = struct.unpack("!HH", data[off:off + 4])
	v = data[off + 4:off + 4 + alen]
	if atype == 0x0020:
		port = struct.unpack("!H", v[2:4])[0] ^ 0x2112
		key = struct.pack("!I", 0x2112A442) + txid
		raw = bytes(a ^ b for a, b in zip(v[4:], key))
		mapped = (socket.inet_ntop(socket.AF_INET if v[1] == 1 else socket.AF_INET6, raw), port)
	off += 4 + (alen + 3) // 4 * 4
own = s.getsockname()
print(mapped[0], mapped[1])
print(own[0], own[1])
EOF
stun_ok()
{
	local out
	out=$(nsx a timeout 20 python3 "$LAB_TMP/stun.py" "$1" 2>&1)
	# To the test's own output (fd 7): check hides what its command prints.
	echo "# STUN via $1 (exit $?): $(tr '\n' ' ' <<<"$out")" >&7
	[[ $(sed -n 1p <<<"$out") == "$(sed -n 2p <<<"$out")" && $out == "$2 "* ]]
}
check "STUN over IPv4: XOR-MAPPED-ADDRESS is the client's address and port" \
	stun_ok 192.0.2.1 192.0.2.11
check "STUN over IPv6: the same" stun_ok 2001:db8:1::1 2001:db8:1::b
# A STUN client that is not ours (coturn's), when installed.
stunclient_ok()
{
	local out
	out=$(nsx a timeout 5 turnutils_stunclient "$1" 2>&1) || return 1
	log "turnutils_stunclient $1: $(head -n 1 <<<"$out")"
	grep -q "reflexive addr: $2:[0-9]" <<<"$out"
}
if command -v turnutils_stunclient >/dev/null; then
	check "coturn's STUN client gets its IPv4 address" stunclient_ok 192.0.2.1 192.0.2.11
	check "... and its IPv6 address" stunclient_ok 2001:db8:1::1 2001:db8:1::b
	STUN_REQS=4
else
	log "turnutils_stunclient (coturn) not installed: only the Python client"
	STUN_REQS=2
fi
check "STUN requests counted" bash -c "[[ \$(ip netns exec $(ns_name a) curl -sf \
http://192.0.2.1:8080/metrics | awk '\$1 == \"trellis_relay_stun_total{what=\\\"request\\\"}\" {print \$2}') -ge $STUN_REQS ]]"

# ---- mesh: b homed on r2, a on r1; a reaches b through the mesh
R1=http://192.0.2.1:8080
R2=http://192.0.2.2:8080
meshed() { metric r1 "$R1" 'trellis_relay_mesh_peers{dir="out"}' | grep -qx 1 &&
	metric r2 "$R2" 'trellis_relay_mesh_peers{dir="out"}' | grep -qx 1; }
check "relays 1 and 2 meshed" wait_for 20 meshed
probe b echo echo --url "$R2" --url "$R1" --key "$LAB_TMP/b.key"
check "b connected to relay 2" wait_for 20 probe_has echo "connected $R2"
B_PUB=$(awk '/^key/ { print $2 }' "$LAB_TMP/probe-echo.out")
check "relay 1 learned b from relay 2 (watch-conns)" \
	wait_for 20 metric_is r1 "$R1" trellis_relay_mesh_clients 1
probe a ping ping --url "$R1" --url "$R2" --key "$LAB_TMP/a.key" --peer "$B_PUB" --timeout 60
check "a (on relay 1) gets echoes from b (on relay 2)" wait_for 10 probe_has ping "via $R1"
check "... forwarded one hop by relay 1" \
	bash -c "(( \$(ip netns exec $(ns_name r1) curl -sf $R1/metrics | \
awk '\$1 == \"trellis_relay_packets_total{dir=\\\"mesh\\\"}\" {print \$2}') > 0 ))"

# ---- relay 1 dies: a moves to relay 2, traffic continues
kill -KILL "${RELAY_PID[r1]}"
log "relay 1 killed after $(probe_count ping reply) replies"
check "a reconnects to relay 2" wait_for 10 probe_has ping "connected $R2"
check "a gets echoes from b again, now through relay 2" wait_for 10 probe_has ping "via $R2"
check "b stayed on relay 2" test "$(probe_count echo connected)" -eq 1

# ---- TLS: the clients verify the relay's certificate (its own CA here)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
	-subj "/CN=192.0.2.4" -addext "subjectAltName=IP:192.0.2.4" \
	-keyout "$LAB_TMP/r4.key" -out "$LAB_TMP/r4.pem" 2>/dev/null
relay_start r4 --tls-cert "$LAB_TMP/r4.pem" --tls-key "$LAB_TMP/r4.key"
R4=https://192.0.2.4:8080
check "/healthz over TLS" nsx a curl -sf --max-time 5 --cacert "$LAB_TMP/r4.pem" "$R4/healthz"
SSL_CERT_FILE=$LAB_TMP/r4.pem probe b tlsecho echo --url "$R4" --key "$LAB_TMP/b4.key"
check "b connected over TLS" wait_for 20 probe_has tlsecho "connected $R4"
B4_PUB=$(awk '/^key/ { print $2 }' "$LAB_TMP/probe-tlsecho.out")
check "a reaches b through the TLS relay" env SSL_CERT_FILE="$LAB_TMP/r4.pem" \
	timeout 20 ip netns exec "$(ns_name a)" "$PROBE" ping --url "$R4" \
	--key "$LAB_TMP/a4.key" --peer "$B4_PUB" --count 3 --timeout 15
check_not "a client that does not trust the certificate is not connected" \
	nsx_timeout 10 a "$PROBE" ping --url "$R4" --key "$LAB_TMP/a4.key" --peer "$B4_PUB" \
	--count 1 --timeout 2

# ---- admission: the embedded relay and a verifying standalone relay
# Metrics live on their own listener (loopback in ctl's namespace), never the public port.
LAB_CONTROL_SERVE_ARGS="--metrics-listen 127.0.0.1:9090" lab_control_start ctl 192.0.2.20 8080 ||
	lab_finish
CTL=$LAB_CONTROL_URL
CTL_METRICS=http://127.0.0.1:9090
relay_start r3 --verify-clients "$CTL" --verify-secret "$LAB_TMP/control/relay-verify.secret"
R3=http://192.0.2.3:8080
lab_node_join n n "$(lab_authkey)"
NODE_KEY=$LAB_TMP/node-n/node.key
check "the node has a node key" test -s "$NODE_KEY"
# The probes below hold the relay connections of n's key: the daemon itself, which would
# connect to its home relay with the same key (the newest connection of a key wins), stops.
# The node stays registered and approved.
lab_node_stop n
probe a emb echo --url "$CTL" --key "$NODE_KEY"
probe a sa echo --url "$R3" --key "$NODE_KEY"
check "the embedded relay admits the registered node key" wait_for 20 probe_has emb "connected $CTL"
check "the verifying relay admits it too" wait_for 20 probe_has sa "connected $R3"
check_not "the embedded relay refuses an unknown key" \
	nsx_timeout 10 a "$PROBE" ping --url "$CTL" --key "$LAB_TMP/x.key" --peer "$B_PUB" --timeout 2
check "... counted as refused" metric_ge ctl "$CTL_METRICS" 'trellis_relay_closes_total{reason="refused"}' 1
check_not "the verifying relay refuses it" \
	nsx_timeout 10 a "$PROBE" ping --url "$R3" --key "$LAB_TMP/x.key" --peer "$B_PUB" --timeout 2
check "... counted as refused" metric_ge r3 "$R3" 'trellis_relay_closes_total{reason="refused"}' 1
check "GET /relay/verify without the secret: 401" \
	bash -c "[[ \$(ip netns exec $(ns_name a) curl -s -o /dev/null -w '%{http_code}' '$CTL/relay/verify/?gen=0') == 401 ]]"

# The disconnects follow the delete as events (the embedded relay at once, the verifying one
# on its long-poll), not on a periodic recheck of every connection (minutes): each check
# waits at most 10 s, a liveness bound for a busy machine; the times are logged (57 ms and
# 367 ms on a quiet machine, 0.5 s and 0.9 s under load).
check "nodes delete n" ctl nodes delete n
t0=$(date +%s%N)
check "the embedded relay disconnects the deleted node" \
	wait_for 10 metric_is ctl "$CTL_METRICS" 'trellis_relay_closes_total{reason="revoked"}' 1
ms=$((($(date +%s%N) - t0) / 1000000))
log "embedded relay: disconnected $ms ms after the delete"
check "the verifying relay disconnects it" \
	wait_for 10 metric_is r3 "$R3" 'trellis_relay_closes_total{reason="revoked"}' 1
ms=$((($(date +%s%N) - t0) / 1000000))
log "verifying relay: disconnected $ms ms after the delete"
check "neither admits it again" \
	bash -c "[[ \$(grep -c connected '$LAB_TMP/probe-emb.out') == 1 && \$(grep -c connected '$LAB_TMP/probe-sa.out') == 1 ]]"

lab_finish
