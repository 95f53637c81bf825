#!/bin/bash
# SPDX-License-Identifier: MIT
#
# The attacks of issue 7 against the real trellis-control binary, in a namespace
# of its own (loopback only: every attacker source is a 127.0.N.x address there).
# control-attack (tests/lab/control_attack.c) talks the real protocol; each
# scenario exits 0 when the server held. Run with TRELLIS_CONTROL=<an older
# binary> to see the attacks work against it.
#
#   1. TLS: POST /control + Noise message 1 in one record, then a reset (x20):
#      the server must still run (it died of SIGPIPE).
#   2. 40 interactive registrations from one /24: refused past the cap, and not
#      one row or address in the store.
#   3. A second machine registers a first one's node key: refused.
#   4. 65 handshaked, unregistered connections from one address: the 65th refused.
#   5. A 64 KiB frame header before the handshake: closed at once.
#   6. 128 upgrades from one address: the bucket answers 429.
#   7. /metrics is not on the public port.
#   8. A handshaked connection that says nothing: closed within 15 s.
set -u
. "$(dirname "$0")/lib.sh"

ATTACK=${CONTROL_ATTACK:-$TRELLIS_BUILD/tests/lab/control-attack}
lab_init
lab_require openssl python3 ss
[[ -x $TRELLIS_CONTROL ]] || lab_skip "trellis-control not built at $TRELLIS_CONTROL"
[[ -x $ATTACK ]] || lab_skip "control-attack not built at $ATTACK"
lab_ns ctl
attack() { nsx ctl timeout 60 "$ATTACK" "$@"; }
# The server answers GET /key (every scenario starts with it; 2 = it did not).
answers() {
	attack metrics "$@"
	(($? <= 1))
}
rows() {
	python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM nodes").fetchone()[0])' \
		"$LAB_TMP/control/control.db"
}

# 1. TLS and SIGPIPE.
pki=$LAB_TMP/pki
mkdir -p "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
	-subj "/CN=127.0.0.1" -keyout "$pki/key.pem" -out "$pki/cert.pem" 2>/dev/null
LAB_CONTROL_SCHEME=https LAB_CONTROL_SERVE_ARGS="--tls-cert $pki/cert.pem --tls-key $pki/key.pem" \
	lab_control_start ctl 127.0.0.1 8443 || lab_finish
check "sigpipe: the attack ran" attack sigpipe 127.0.0.1 8443 --tls
check "sigpipe: the TLS server still runs" kill -0 "$LAB_CONTROL_PID"
check "sigpipe: and still answers" answers 127.0.0.1 8443 --tls
lab_control_stop

# 2-8 over plain HTTP.
lab_control_start ctl 127.0.0.1 8080 || lab_finish
KEY=$(lab_authkey --reusable)
rows0=$(rows)
check "flood: refused past the per-source cap" attack flood 127.0.0.1 8080
check_eq "flood: no node in the store" "$rows0" "$(rows)"
export AUTHKEY=$KEY
check "takeover: another machine's node key refused" attack takeover 127.0.0.1 8080
check "unregistered: the 65th connection from one address refused" \
	attack unregistered 127.0.0.1 8080
check "preauth: a 64 KiB frame header closes at once" attack preauth 127.0.0.1 8080
check "bucket: upgrades per source limited" attack bucket 127.0.0.1 8080
check "metrics: not on the public port" attack metrics 127.0.0.1 8080
check "idle: a silent authenticated connection is closed" attack idle 127.0.0.1 8080
check "the server survived all of it" kill -0 "$LAB_CONTROL_PID"
lab_finish
