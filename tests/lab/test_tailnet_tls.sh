#!/usr/bin/env bash
# The control channel over HTTPS: trellis-control serves TLS with a certificate for its
# lab address, signed by a lab CA made here.
#   - nodes that trust the CA (SSL_CERT_FILE) join over https:// and reach each other
#   - a node that does not trust it is refused with a certificate error, and never joins
#   - GET /key answers over TLS
#   - a certificate from the trusted CA but for another address is refused (name check)
#
#   lab internet 192.0.2.0/24: ctl 192.0.2.1:8443 (trellis-control, TLS)   a .11  b .12  u .13
source "$(dirname "$0")/lib.sh"
lab_init
lab_require_control_plane
lab_require openssl curl

# A CA and a server certificate for the address the nodes dial.
pki=$LAB_TMP/pki
mkdir -p "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
	-subj "/CN=trellis lab CA" -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-subj "/CN=192.0.2.1" -keyout "$pki/server.key" -out "$pki/server.csr" 2>/dev/null
printf 'subjectAltName=IP:192.0.2.1\n' >"$pki/ext"
openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
	-CAcreateserial -days 2 -extfile "$pki/ext" -out "$pki/server.pem" 2>/dev/null
check "lab CA and server certificate made" test -s "$pki/server.pem"
# The same CA, but for an address the nodes do not dial.
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-subj "/CN=192.0.2.99" -keyout "$pki/other.key" -out "$pki/other.csr" 2>/dev/null
printf 'subjectAltName=IP:192.0.2.99\n' >"$pki/ext99"
openssl x509 -req -in "$pki/other.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
	-CAcreateserial -days 2 -extfile "$pki/ext99" -out "$pki/other.pem" 2>/dev/null

lab_internet
lab_public_host ctl 1
lab_public_host a 11
lab_public_host b 12
lab_public_host u 13
LAB_CONTROL_SCHEME=https
LAB_CONTROL_SERVE_ARGS="--tls-cert $pki/server.pem --tls-key $pki/server.key"
lab_control_start ctl 192.0.2.1 8443 || lab_finish
check_eq "control URL is https" "https://192.0.2.1:8443" "$LAB_CONTROL_URL"

check "GET /key over TLS, verified against the lab CA" \
	nsx a curl -sf --max-time 5 --cacert "$pki/ca.pem" "https://192.0.2.1:8443/key"
check "plain HTTP to the TLS port gets no /key" \
	bash -c "! ip netns exec $(ns_name a) curl -sf --max-time 5 http://192.0.2.1:8443/key"

KEY=$(lab_authkey --reusable)

# The node without the CA first: OpenSSL's default store does not know the lab CA.
export SSL_CERT_FILE=/nonexistent
lab_node_start u u
out=$(tr_node u up --login-server "$LAB_CONTROL_URL" --auth-key "$KEY" --hostname u 2>&1)
rc=$?
log "untrusting node: rc=$rc: $out"
check "a node that does not trust the certificate is refused" test "$rc" -ne 0
check "... with a certificate error" grep -qi "certif" <<<"$out"

export SSL_CERT_FILE=$pki/ca.pem
lab_node_join a a "$KEY"
lab_node_join b b "$KEY"
check "a sees b" wait_for 20 peers_are a "b"
check "b sees a" wait_for 20 peers_are b "a"
check "a -> b over tailnet IPv4" ping_until a "$(node_ip b 4)" 10
check "b -> a over tailnet IPv6" ping_until b "$(node_ip a 6)" 10
check "the untrusting node never joined" \
	bash -c "! $TRELLIS_CONTROL --state $LAB_TMP/control nodes list --json | grep -q '\"name\": *\"u\"'"

# Control restarted with a certificate for another address: a node that trusts the CA
# must still refuse it.
lab_control_stop TERM
LAB_CONTROL_SERVE_ARGS="--tls-cert $pki/other.pem --tls-key $pki/other.key"
lab_control_start ctl 192.0.2.1 8443 || lab_finish
lab_public_host w 14
lab_node_start w w
out=$(tr_node w up --login-server "$LAB_CONTROL_URL" --auth-key "$KEY" --hostname w 2>&1)
rc=$?
log "node facing a certificate for another address: rc=$rc: $out"
check "a certificate for another address is refused" test "$rc" -ne 0
check "... with a certificate error" grep -qi "certif\|mismatch\|host" <<<"$out"

lab_node_stop a
lab_node_stop b
lab_node_stop u
lab_node_stop w
lab_control_stop TERM
lab_finish
