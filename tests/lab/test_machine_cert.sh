#!/usr/bin/env bash
# Machine certificates (issue 11) with real trellis-control and trellisd:
#   - the default tailnet gets a CA and --require-machine-cert on;
#   - a node without a certificate is refused, even with a valid auth key, and says why;
#   - a and b request certificates (trellis cert request), the admin signs them (ca sign),
#     they install them (trellis cert install): both join and a pings b;
#   - a certificate for another machine is not installed;
#   - ca revoke of a's certificate expires a's node at once (b loses a as a peer, pings
#     stop), and a's next registration is refused as revoked;
#   - ca crl: a CRL that openssl verifies against the CA, and with which openssl's own chain
#     check refuses a's certificate and passes b's; ca list --revoked lists a's only;
#   - ca rotate: a new CA signs (a joins with a certificate of it) while the old one stays
#     trusted (b registers again with its old certificate); ca retire of the old CA is
#     refused while b has only its certificate; ca renew gives b the same certificate from
#     the new CA (no CSR), b joins with it; then ca retire succeeds, b's old certificate
#     is refused saying its CA was retired, and the renewed one joins again;
#   - renewal fetched by the node: after ca renew while b is down, b's next registration installs the newer
#     certificate (status and the file show it, no cert install); a registration refused
#     because b's certificate ended carries the newer one and b joins with it at once;
#   - /metrics counts the CRLs served, unknown and made, and the renewed certificates sent;
#   - CRL over HTTP: the server (started with --public-url) serves each CA's CRL at
#     /crl/KEYID.crl without authentication (DER, application/pkix-crl); the certificates it
#     signs name that URL as their CRL distribution point; curl from a node fetches it before
#     and after the revocation: openssl reads it, verifies it with the CA, and finds a's serial
#     only after; an unknown CA is a 404;
#   - every admin step is in the audit log.
#
#   lab internet 192.0.2.0/24: ctl .1:8080, a .11, b .12
source "$(dirname "$0")/lib.sh"
LAB_TIMEOUT=${LAB_TIMEOUT:-480}
lab_init
lab_require_control_plane

lab_internet
lab_public_host ctl 1
lab_public_host a 11
lab_public_host b 12
LAB_CONTROL_SERVE_ARGS="--public-url http://192.0.2.1:8080/ --metrics-listen 127.0.0.1:9090" \
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

# The CRL over HTTP, at the URL the certificates name (fetched from a, as any relying party).
KID=$(openssl x509 -in "$LAB_TMP/ca.pem" -noout -ext subjectKeyIdentifier | sed -n '2s/[ :]//gp' | tr A-F a-f)
CRL_URL="http://192.0.2.1:8080/crl/$KID.crl"
check_eq "a's certificate names the CA's CRL URL (CRL distribution point)" "$CRL_URL" \
	"$(openssl x509 -in "$LAB_TMP/a.crt" -noout -ext crlDistributionPoints | sed -n 's/^ *URI://p')"
crl_fetch() { # crl_fetch FILE: GET CRL_URL from a; the body in FILE, the headers in FILE.h
	nsx a curl -sS -m 10 -D "$1.h" -o "$1" "$CRL_URL"
}
crl_lists() { # crl_lists FILE SERIAL: openssl finds SERIAL in the DER CRL FILE
	openssl crl -inform DER -in "$1" -noout -text | tr -d ' :' | grep -qi "serialnumber0*$2\$"
}
check "curl fetches the CRL without credentials" crl_fetch "$LAB_TMP/crl0.der"
check "... 200, application/pkix-crl" sh -c "head -1 '$LAB_TMP/crl0.der.h' | grep -q ' 200' &&
	grep -qi '^content-type: application/pkix-crl' '$LAB_TMP/crl0.der.h'"
check "... DER that openssl verifies with the CA" sh -c "openssl crl -inform DER -in \
	'$LAB_TMP/crl0.der' -CAfile '$LAB_TMP/ca.pem' -noout 2>&1 | grep -q 'verify OK'"
check_not "... not listing a's serial before the revocation" crl_lists "$LAB_TMP/crl0.der" "$SERIAL"
check_eq "an unknown CA's CRL is a 404" 404 "$(nsx a curl -s -m 10 -o /dev/null -w '%{http_code}' \
	http://192.0.2.1:8080/crl/0123456789abcdef0123456789abcdef01234567.crl)"

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
	bash -c "'$TRELLIS_CLI' --socket '$(lab_node_sock a)' status | grep -q '^machine cert: .*serial $SERIAL, valid from .* UTC until .* UTC, issuer .* (key id $(cert_get issuer_key_id))'"
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
crl_fetch_lists() { crl_fetch "$1" && crl_lists "$1" "$2"; }
check "after the revocation, the CRL served lists a's serial" crl_fetch_lists \
	"$LAB_TMP/crl1.der" "$SERIAL"
check_not "... and not b's" crl_lists "$LAB_TMP/crl1.der" \
	"$(sed -n 's/^serial \([0-9a-f]*\),.*/\1/p' "$LAB_TMP/b.sign")"
check "... still verified by the CA" sh -c "openssl crl -inform DER -in '$LAB_TMP/crl1.der' \
	-CAfile '$LAB_TMP/ca.pem' -noout 2>&1 | grep -q 'verify OK'"
check "... and openssl verify -crl_check refuses a's certificate with it" sh -c "openssl crl \
	-inform DER -in '$LAB_TMP/crl1.der' -out '$LAB_TMP/crl1.pem' && ! openssl verify -crl_check \
	-CRLfile '$LAB_TMP/crl1.pem' -CAfile '$LAB_TMP/ca.pem' '$LAB_TMP/a.crt'"
# metric NAME: its value on the running server's metrics endpoint.
metric() {
	nsx ctl curl -fsS --max-time 5 http://127.0.0.1:9090/metrics | awk -v k="$1" '$1 == k { print $2 }'
}
crl_metrics() {
	local r
	for r in 'requests_total{result="served"}' 'requests_total{result="unknown"}' \
		'makes_total{result="ok"}' 'makes_total{result="failed"}'; do
		metric "trellis_control_crl_$r"
	done | tr '\n' ' '
}
check_eq "/metrics: 2 CRLs served, 1 unknown; made twice (first asked, after the revocation)" \
	"2 1 2 0 " "$(crl_metrics)"

# The revocation list, for others: openssl checks it and refuses a's certificate with it.
check "ca crl prints a CRL signed by the CA (openssl crl -CAfile)" sh -c "'$TRELLIS_CONTROL' \
	--state '$LAB_TMP/control' ca crl > '$LAB_TMP/crl.pem' &&
	openssl crl -in '$LAB_TMP/crl.pem' -CAfile '$LAB_TMP/ca.pem' -noout 2>&1 | grep -q 'verify OK'"
check "... listing a's serial" sh -c "openssl crl -in '$LAB_TMP/crl.pem' -noout -text |
	tr -d ' :' | grep -qi 'serialnumber0*$SERIAL'"
check_not "openssl verify -crl_check refuses a's certificate with it" \
	openssl verify -crl_check -CRLfile "$LAB_TMP/crl.pem" -CAfile "$LAB_TMP/ca.pem" "$LAB_TMP/a.crt"
check "... saying revoked" sh -c "openssl verify -crl_check -CRLfile '$LAB_TMP/crl.pem' \
	-CAfile '$LAB_TMP/ca.pem' '$LAB_TMP/a.crt' 2>&1 | grep -q 'certificate revoked'"
check "... and passes b's" \
	openssl verify -crl_check -CRLfile "$LAB_TMP/crl.pem" -CAfile "$LAB_TMP/ca.pem" "$LAB_TMP/b.crt"
BSERIAL=$(sed -n 's/^serial \([0-9a-f]*\),.*/\1/p' "$LAB_TMP/b.sign")
check "ca list --revoked lists a's certificate and not b's" sh -c "'$TRELLIS_CONTROL' \
	--state '$LAB_TMP/control' ca list --revoked > '$LAB_TMP/revoked.txt' &&
	grep -q '$SERIAL' '$LAB_TMP/revoked.txt' && ! grep -q '$BSERIAL' '$LAB_TMP/revoked.txt'"

# Rotation: a new CA signs, the old one stays trusted until retired.
check "ca rotate prints a new CA certificate" sh -c "'$TRELLIS_CONTROL' --state \
	'$LAB_TMP/control' ca rotate > '$LAB_TMP/ca2.pem' && openssl x509 -in '$LAB_TMP/ca2.pem' -noout &&
	! cmp -s '$LAB_TMP/ca.pem' '$LAB_TMP/ca2.pem'"
check "ca show prints the new one" \
	sh -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' ca show | cmp -s - '$LAB_TMP/ca2.pem'"
CA1=$(ctl ca show --all --json | python3 -c 'import json,sys; c=json.load(sys.stdin); assert len(c) == 2 and not c[0]["retired_at"] and not c[1]["retired_at"]; print(c[0]["id"])')
check "ca show --all: two CAs, both trusted" test -n "$CA1"
check "a: a new CSR, signed by the new CA" sh -c "timeout 30 '$TRELLIS_CLI' --socket \
	'$(lab_node_sock a)' cert request > '$LAB_TMP/a2.csr' && '$TRELLIS_CONTROL' --state \
	'$LAB_TMP/control' ca sign '$LAB_TMP/a2.csr' > '$LAB_TMP/a2.crt' &&
	openssl verify -CAfile '$LAB_TMP/ca2.pem' '$LAB_TMP/a2.crt'"
check "a installs it" tr_node a cert install "$LAB_TMP/a2.crt"
check "a joins with the new CA's certificate" tr_node a up --login-server "$LAB_CONTROL_URL" \
	--auth-key "$KEY" --hostname a --force-reauth
check "b registers again with the old CA's certificate" tr_node b up --login-server \
	"$LAB_CONTROL_URL" --auth-key "$KEY" --hostname b --force-reauth
check "a and b see each other again" wait_for 30 peers_online_are a "b"
out=$(ctl ca retire "$CA1" 2>&1)
check_not "ca retire of the old CA is refused while b has only its certificate" test $? = 0
check "... saying so" grep -q "1 machine(s) have a valid certificate of CA $CA1" <<<"$out"

# Renewal: b's certificate again from the new CA, without a CSR.
check "ca renew b's certificate" sh -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' ca renew \
	'$BSERIAL' > '$LAB_TMP/b2.crt' 2> '$LAB_TMP/b2.sign'"
check "... the new CA signed it (openssl)" openssl verify -CAfile "$LAB_TMP/ca2.pem" "$LAB_TMP/b2.crt"
check_eq "... for the same key" \
	"$(openssl x509 -in "$LAB_TMP/b.crt" -noout -pubkey)" "$(openssl x509 -in "$LAB_TMP/b2.crt" -noout -pubkey)"
check "b installs the renewed certificate" tr_node b cert install "$LAB_TMP/b2.crt"
check "b joins with it" tr_node b up --login-server "$LAB_CONTROL_URL" --auth-key "$KEY" \
	--hostname b --force-reauth
B2SERIAL=$(sed -n 's/^serial \([0-9a-f]*\),.*/\1/p' "$LAB_TMP/b2.sign")
check_eq "b's status shows the renewed certificate" "$B2SERIAL" \
	"$(status_eval b "(j.get('machine_cert') or {}).get('serial')")"
check "ca retire of the old CA now" sh -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' \
	ca retire '$CA1' | grep -q '0 node(s) expired'"
check "b's old certificate installed again" tr_node b cert install "$LAB_TMP/b.crt"
out=$(tr_node b up --login-server "$LAB_CONTROL_URL" --auth-key "$KEY" --hostname b \
	--force-reauth 2>&1)
check_not "b cannot register with the retired CA's certificate" test $? = 0
check "the refusal says its CA was retired" \
	grep -q "machine certificate refused: its CA was retired" <<<"$out"
check "b with the renewed one joins again" sh -c "timeout 30 '$TRELLIS_CLI' --socket \
	'$(lab_node_sock b)' cert install '$LAB_TMP/b2.crt' && timeout 30 '$TRELLIS_CLI' --socket \
	'$(lab_node_sock b)' up --login-server '$LAB_CONTROL_URL' --auth-key '$KEY' --hostname b \
	--force-reauth"
check "a and b see each other" wait_for 30 peers_online_are a "b"

# Renewal the node fetches itself (docs/identity.md, "Renewed certificates"): after ca renew,
# b's next registration brings the new certificate, with no cert install. b is down meanwhile:
# with a map stream open it would get it pushed (lab/test_machine_cert_push.sh).
check "b down" tr_node b down
cert_der() { openssl x509 -in "$1" -outform DER | od -An -tx1 | tr -d ' \n'; }
check "ca renew b's certificate once more" sh -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' \
	ca renew '$B2SERIAL' > '$LAB_TMP/b3.crt' 2> '$LAB_TMP/b3.sign'"
B3SERIAL=$(sed -n 's/^serial \([0-9a-f]*\),.*/\1/p' "$LAB_TMP/b3.sign")
check "b registers again, presenting the one it has" tr_node b up --login-server \
	"$LAB_CONTROL_URL" --auth-key "$KEY" --hostname b --force-reauth
check_eq "b's status shows the renewed certificate, fetched at registration" "$B3SERIAL" \
	"$(status_eval b "(j.get('machine_cert') or {}).get('serial')")"
check_eq "b's certificate file is the one ca renew printed" "$(cert_der "$LAB_TMP/b3.crt")" \
	"$(cert_der "$LAB_TMP/node-b/machine-cert.crt")"

# A registration refused because b's certificate ended still brings the newer one, and b
# registers again with it at once. b's installed certificate lasts 30 s; once openssl says
# it has ended, a renewal for a year exists and b registers.
check "ca renew for 30 s, installed on b" sh -c "'$TRELLIS_CONTROL' --state \
	'$LAB_TMP/control' ca renew '$B3SERIAL' --validity 30s > '$LAB_TMP/b4.crt' &&
	timeout 30 '$TRELLIS_CLI' --socket '$(lab_node_sock b)' cert install '$LAB_TMP/b4.crt'"
check "b's short certificate has ended" wait_for 90 \
	sh -c "! openssl x509 -in '$LAB_TMP/b4.crt' -noout -checkend 0"
check "b down (no push of the renewal)" tr_node b down
check "ca renew for a year" sh -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' \
	ca renew '$B3SERIAL' > '$LAB_TMP/b5.crt' 2> '$LAB_TMP/b5.sign'"
B5SERIAL=$(sed -n 's/^serial \([0-9a-f]*\),.*/\1/p' "$LAB_TMP/b5.sign")
check "b, refused for its ended certificate, joins with the one the refusal carried" \
	tr_node b up --login-server "$LAB_CONTROL_URL" --auth-key "$KEY" --hostname b --force-reauth
check_eq "b's status shows it" "$B5SERIAL" \
	"$(status_eval b "(j.get('machine_cert') or {}).get('serial')")"
check_eq "/metrics: the server sent 2 renewed certificates" 2 \
	"$(metric trellis_control_machine_certs_sent_total)"
check "a and b see each other at the end" wait_for 30 peers_online_are a "b"

check "the audit log has ca.init, tailnet.set, cert.sign, cert.revoke, node.expire, ca.rotate, cert.renew, ca.retire" sh -c \
	"'$TRELLIS_CONTROL' --state '$LAB_TMP/control' audit log --json > '$LAB_TMP/audit.json' &&
	for a in ca.init tailnet.set cert.sign cert.revoke node.expire ca.rotate cert.renew ca.retire; do
		grep -q \"\\\"action\\\": *\\\"\$a\\\"\" '$LAB_TMP/audit.json' || exit 1; done"
check "audit verify" ctl audit verify

lab_node_stop a
lab_node_stop b
lab_finish
