#!/usr/bin/env bash
# Machine certificates (issue 11) with real trellis-control and trellisd:
#   - the default tailnet gets a CA and --require-machine-cert on;
#   - a node without a certificate is refused, even with a valid auth key, and says why;
#   - a and b request certificates (trellis cert request), the admin signs them (ca sign),
#     they install them (trellis cert install): both join and a pings b;
#   - a certificate for another machine is not installed;
#   - ca revoke of a's certificate expires a's node at once (b loses a as a peer, pings
#     stop), and a's next registration is refused as revoked;
#   - every admin step is in the audit log.
#
#   lab internet 192.0.2.0/24: ctl .1:8080, a .11, b .12
source "$(dirname "$0")/lib.sh"
LAB_TIMEOUT=${LAB_TIMEOUT:-240}
lab_init
lab_require_control_plane

lab_internet
lab_public_host ctl 1
lab_public_host a 11
lab_public_host b 12
lab_control_start ctl 192.0.2.1 8080 || lab_finish

check "ca init prints the CA certificate" sh -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' \
	ca init > '$LAB_TMP/ca.pem' && openssl x509 -in '$LAB_TMP/ca.pem' -noout"
check_not "a second ca init is refused" ctl ca init
check "ca show prints the same certificate" \
	sh -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' ca show | cmp -s - '$LAB_TMP/ca.pem'"
check "the CA's key is mode 0600" test "$(stat -c %a "$LAB_TMP/control/ca/1.key")" = 600
check "tailnets set --require-machine-cert on" ctl tailnets set default --require-machine-cert on
check "tailnets list shows it" sh -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' \
	tailnets list --json | grep -q '\"require_machine_cert\": true'"
KEY=$(lab_authkey --reusable)

lab_node_start a a || lab_finish
lab_node_start b b || lab_finish
out=$(lab_node_up a "$KEY" 2>&1)
check_not "a without a certificate is refused despite a valid auth key" test $? = 0
check "the refusal says a machine certificate is required" \
	grep -q "requires a machine certificate" <<<"$out"
check_not "the server has no node a" node_listed a

# Each node: CSR from trellisd, signed by the admin, installed.
for n in a b; do
	check "$n: cert request prints a CSR" sh -c "timeout 30 '$TRELLIS_CLI' --socket \
		'$(lab_node_sock $n)' cert request > '$LAB_TMP/$n.csr' &&
		openssl req -in '$LAB_TMP/$n.csr' -noout -verify"
	check "$n: ca sign" sh -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' ca sign \
		'$LAB_TMP/$n.csr' --validity 30d > '$LAB_TMP/$n.crt' 2> '$LAB_TMP/$n.sign'"
	check "$n: the certificate verifies against the CA (openssl)" \
		openssl verify -CAfile "$LAB_TMP/ca.pem" "$LAB_TMP/$n.crt"
	check "the private key stays on $n (mode 0600)" \
		test "$(stat -c %a "$LAB_TMP/node-$n/machine-cert.key")" = 600
done
check_not "a refuses b's certificate" tr_node a cert install "$LAB_TMP/b.crt"
check_not "a refuses the CA's certificate" tr_node a cert install "$LAB_TMP/ca.pem"
check "a installs its certificate" tr_node a cert install "$LAB_TMP/a.crt"
check "b installs its certificate" tr_node b cert install "$LAB_TMP/b.crt"

check "a joins with its certificate" lab_node_up a "$KEY"
check "b joins with its certificate" lab_node_up b "$KEY"
check "a and b see each other online" wait_for 30 peers_online_are a "b"
B4=$(node_ip b 4)
check "a pings b" ping_until a "$B4" 30
check "a's key expiry is no later than its certificate" sh -c "test \
	\$('$TRELLIS_CONTROL' --state '$LAB_TMP/control' nodes show a --json |
	python3 -c 'import json,sys; print(json.load(sys.stdin)[\"key_expiry\"])') -le \
	\$(( \$(date +%s) + 30 * 86400 + 60 ))"

# Revocation: in force at once, a's node expires.
SERIAL=$(sed -n 's/^serial \([0-9a-f]*\),.*/\1/p' "$LAB_TMP/a.sign")
check "a's serial was printed" test -n "$SERIAL"

# Status shows the installed certificate: what ca sign issued, and by which CA (openssl's
# reading of both files, compared field by field).
cert_get() { status_eval a "(j.get('machine_cert') or {}).get('$1')"; }
check_eq "status --json: machine_cert.serial is the signed one" "$SERIAL" "$(cert_get serial)"
check_eq "... its subject (a's host name)" \
	"$(openssl x509 -in "$LAB_TMP/a.crt" -noout -subject -nameopt multiline | sed -n 's/^ *commonName *= //p')" \
	"$(cert_get subject)"
check_eq "... its end" "$(date -u -d "$(openssl x509 -in "$LAB_TMP/a.crt" -noout -enddate | cut -d= -f2)" +%s)" \
	"$(cert_get not_after)"
check_eq "... its issuer's key id is the CA's (and ca show --json's)" \
	"$(openssl x509 -in "$LAB_TMP/ca.pem" -noout -ext subjectKeyIdentifier | sed -n '2s/[ :]//gp' | tr A-F a-f)" \
	"$(cert_get issuer_key_id)"
check_eq "... as ca show --json gives it" "$(cert_get issuer_key_id)" \
	"$(ctl ca show --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key_id"])')"
check_eq "... its own SHA-256 fingerprint" \
	"$(openssl x509 -in "$LAB_TMP/a.crt" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d : | tr A-F a-f)" \
	"$(cert_get sha256)"
check "trellis status says it in a line" \
	bash -c "'$TRELLIS_CLI' --socket '$(lab_node_sock a)' status | grep -q '^machine cert: .*serial $SERIAL, valid until .* UTC, issuer .* (key id $(cert_get issuer_key_id))'"
check "ca revoke expires a's node" sh -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' \
	ca revoke '$SERIAL' | grep -q '1 node(s) expired'"
check "ca list shows a's certificate revoked" sh -c "'$TRELLIS_CONTROL' --state \
	'$LAB_TMP/control' ca list | grep '$SERIAL' | grep -q revoked"
check "the server shows a expired" test "$(ctl nodes show a --json |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')" = expired
check "b loses a as a peer" wait_for 10 peers_are b ""
check "a's pings to b stop" wait_for 10 ping_none a "$B4" 2
out=$(tr_node a up --login-server "$LAB_CONTROL_URL" --auth-key "$KEY" --hostname a \
	--force-reauth 2>&1)
check_not "a cannot register again with the revoked certificate" test $? = 0
check "the refusal says revoked" grep -q "machine certificate refused: revoked" <<<"$out"
check "b is still in" node_connected b

check "the audit log has ca.init, tailnet.set, cert.sign, cert.revoke, node.expire" sh -c \
	"'$TRELLIS_CONTROL' --state '$LAB_TMP/control' audit log --json > '$LAB_TMP/audit.json' &&
	for a in ca.init tailnet.set cert.sign cert.revoke node.expire; do
		grep -q \"\\\"action\\\": *\\\"\$a\\\"\" '$LAB_TMP/audit.json' || exit 1; done"
check "audit verify" ctl audit verify

lab_node_stop a
lab_node_stop b
lab_finish
