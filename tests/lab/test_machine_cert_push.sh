#!/usr/bin/env bash
# Renewed machine certificates pushed on the map stream (issue 11, docs/identity.md, "Renewed
# certificates"), with real trellis-control and trellisd:
#   - ca renew while a runs: the new certificate reaches a on its map stream; its serial is in
#     a's status (from_server true) and the file is the one ca renew printed, with no
#     registration in between (the server's registration count does not move, a's log has no
#     second "registered");
#   - a renewal written by another process while the server runs (a second trellis-control on
#     the same database, as another replica would be): the server reads it from the change
#     feed and pushes it to a the same way, with no registration;
#   - serve --machine-cert-auto-renew 240s: b's certificate of 300 s is renewed by the server
#     before it ends (the renewal's start is before the old one's end), pushed to b with no
#     registration, and in the audit log as cert.renew by "server";
#   - /metrics counts the pushes and the automatic renewal; no pushed certificate was refused.
# (A pushed certificate of another machine is refused and counted: unit test
# node/test_control_client test_mcert_foreign, as this server never sends one.)
#
#   lab internet 192.0.2.0/24: ctl .1:8080, a .11, b .12
source "$(dirname "$0")/lib.sh"
LAB_TIMEOUT=${LAB_TIMEOUT:-420}
lab_init
lab_require_control_plane

lab_internet
lab_public_host ctl 1
lab_public_host a 11
lab_public_host b 12
LAB_CONTROL_SERVE_ARGS="--metrics-listen 127.0.0.1:9090 --machine-cert-auto-renew 240s" \
	lab_control_start ctl 192.0.2.1 8080 || lab_finish

check "ca init" sh -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' ca init > '$LAB_TMP/ca.pem'"
check "tailnets set default --require-machine-cert=true (the issue's form)" ctl tailnets set default --require-machine-cert=true
KEY=$(lab_authkey --reusable)
lab_node_start a a || lab_finish
lab_node_start b b || lab_finish

# sign_for NAME VALIDITY: a CSR from NAME's trellisd, signed, installed; its serial in NAME.serial.
sign_for() {
	timeout 30 "$TRELLIS_CLI" --socket "$(lab_node_sock "$1")" cert request > "$LAB_TMP/$1.csr" &&
		"$TRELLIS_CONTROL" --state "$LAB_TMP/control" ca sign "$LAB_TMP/$1.csr" \
			--validity "$2" > "$LAB_TMP/$1.crt" 2> "$LAB_TMP/$1.sign" &&
		tr_node "$1" cert install "$LAB_TMP/$1.crt" &&
		sed -n 's/^serial \([0-9a-f]*\),.*/\1/p' "$LAB_TMP/$1.sign" > "$LAB_TMP/$1.serial"
}
metric() {
	nsx ctl curl -fsS --max-time 5 http://127.0.0.1:9090/metrics | awk -v k="$1" '$1 == k { print $2 }'
}
regs() { metric 'trellis_control_registrations_total{result="ok"}'; }
cert_get() { status_eval "$1" "(j.get('machine_cert') or {}).get('$2')"; }
serial_is() { [[ $(cert_get "$1" serial) == "$2" ]]; }
serial_not() { local s; s=$(cert_get "$1" serial) && [[ -n $s && $s != "$2" ]]; }
cert_der() { openssl x509 -in "$1" -outform DER | od -An -tx1 | tr -d ' \n'; }
registered_lines() { grep -c "registered with" "$LAB_TMP/node-$1.log" || true; }

check "a: certificate for a day, installed" sign_for a 1d
check "b: certificate for 300 s, installed" sign_for b 300s
check "a joins" lab_node_up a "$KEY"
check "b joins" lab_node_up b "$KEY"
check "a and b see each other online" wait_for 60 peers_online_are a "b"
A1=$(cat "$LAB_TMP/a.serial")
B1=$(cat "$LAB_TMP/b.serial")
check_eq "a's status: the certificate signed, not one the server sent" "$A1 False" \
	"$(cert_get a serial) $(cert_get a from_server)"

# 1. ca renew while a runs: pushed, no registration.
REGS0=$(regs)
ALOG0=$(registered_lines a)
check "ca renew a's certificate" sh -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' ca renew \
	'$A1' > '$LAB_TMP/a2.crt' 2> '$LAB_TMP/a2.sign'"
A2=$(sed -n 's/^serial \([0-9a-f]*\),.*/\1/p' "$LAB_TMP/a2.sign")
check "a's status shows the renewed serial, pushed" wait_for 60 serial_is a "$A2"
check_eq "... sent by the server" True "$(cert_get a from_server)"
check_eq "... its file is the one ca renew printed" "$(cert_der "$LAB_TMP/a2.crt")" \
	"$(cert_der "$LAB_TMP/node-a/machine-cert.crt")"
check_eq "no registration meanwhile (server count)" "$REGS0" "$(regs)"
check_eq "no registration meanwhile (a's log)" "$ALOG0" "$(registered_lines a)"
check "trellis status says it in a line" bash -c "'$TRELLIS_CLI' --socket '$(lab_node_sock a)' \
	status | grep -q '^machine cert: .*serial $A2, valid from .* until .*, from the server'"
check "a and b still see each other" wait_for 30 peers_online_are a "b"

# 1b. Another process writes a renewal while the server runs, as another replica on the
# database would: a second trellis-control whose state directory links to the server's
# database and CA keys (serve.lock is per directory), --offline. The server learns it from the
# change feed, not from its own admin API, and pushes it all the same.
mkdir -m 0700 "$LAB_TMP/replica"
ln -s "$LAB_TMP/control/control.db" "$LAB_TMP/replica/control.db"
ln -s "$LAB_TMP/control/ca" "$LAB_TMP/replica/ca"
PUSHED0=$(metric trellis_control_machine_certs_pushed_total)
check "ca renew --offline by a second trellis-control on the database" sh -c "'$TRELLIS_CONTROL' \
	--state '$LAB_TMP/replica' --offline ca renew '$A2' --validity 400d > '$LAB_TMP/a3.crt' \
	2> '$LAB_TMP/a3.sign'"
A3=$(sed -n 's/^serial \([0-9a-f]*\),.*/\1/p' "$LAB_TMP/a3.sign")
check "a's status shows the other process's renewal, pushed" wait_for 30 serial_is a "$A3"
check_eq "... its file is the one the other process printed" "$(cert_der "$LAB_TMP/a3.crt")" \
	"$(cert_der "$LAB_TMP/node-a/machine-cert.crt")"
pushed_since() { (($(metric trellis_control_machine_certs_pushed_total) > PUSHED0)); }
check "... counted as pushed" pushed_since
check_eq "no registration meanwhile (server count)" "$REGS0" "$(regs)"
check_eq "no registration meanwhile (a's log)" "$ALOG0" "$(registered_lines a)"

# 2. The server renews b's short certificate before it ends (less than 240 s of its 300 s
# left, scanned every 5 s) and pushes it.
B1END=$(date -u -d "$(openssl x509 -in "$LAB_TMP/b.crt" -noout -enddate | cut -d= -f2)" +%s)
REGS1=$(regs)
check "b's status shows a certificate the server renewed and pushed" wait_for 150 serial_not b "$B1"
check_eq "... with no registration meanwhile" "$REGS1" "$(regs)"
check_eq "... sent by the server" True "$(cert_get b from_server)"
B2END=$(cert_get b not_after)
B2START=$(( $(cert_get b not_before) + 300 )) # the renewal's time (certificates start 300 s early)
check "... renewed before the old one ended" test "$B2START" -lt "$B1END"
check "... and ends later" test "$B2END" -gt "$B1END"
check "the renewal verifies against the CA (openssl)" sh -c "openssl verify -CAfile \
	'$LAB_TMP/ca.pem' '$LAB_TMP/node-b/machine-cert.crt'"
renewed_by_server() { # audit log --json: one entry a line
	ctl audit log --json | python3 -c 'import json, sys
e = [json.loads(l) for l in sys.stdin if l.strip()]
sys.exit(0 if any(x["action"] == "cert.renew" and x["actor"] == "server" for x in e) else 1)'
}
check "the audit log has cert.renew by the server" renewed_by_server
check "audit verify" ctl audit verify
pushes_renewals() { # at least 2 pushes (a, b) and 1 automatic renewal
	local p r
	p=$(metric trellis_control_machine_certs_pushed_total)
	r=$(metric 'trellis_control_machine_certs_auto_renewed_total{result="ok"}')
	[[ -n $p && -n $r ]] && ((p >= 2 && r >= 1))
}
check "/metrics: pushes (a, b) and an automatic renewal" pushes_renewals
check_eq "no pushed certificate was refused" "0 0" \
	"$(cert_get a server_refused) $(cert_get b server_refused)"
check "a and b see each other at the end" wait_for 30 peers_online_are a "b"

lab_node_stop a
lab_node_stop b
lab_finish
