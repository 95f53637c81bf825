#!/usr/bin/env bash
# OIDC sign-in against a real provider: oidc-provider (npm, pinned in idp/package-lock.json)
# over HTTPS with a lab CA, a person at its login form in Debian's headless Chromium
# (playwright-core), and src/oidc as the relying party (tests/lab/oidc_rp.c, which runs
# the login's end on a worker pool as the control server does).
#   - discovery and JWKS over TLS verified against the lab CA; refused without it
#   - the authorization-code flow with PKCE for three clients, whose ID tokens are signed
#     RS256 (client_secret_basic), ES256 (client_secret_post) and EdDSA
#   - a forged state is refused before the code is spent; a replayed code is refused
#   - an unverified email is refused, and accepted only when configured
#   - tokens signed with the provider's real keys but wrong: audience, expiry, nonce,
#     domain; and forged: unknown kid, alg none, a rogue key under a real kid
#   - allowed groups: the provider's groups claim (alice: eng, staff) passes
#     --allowed-groups ops,staff; a token without one of them is refused
#   - a JWKS endpoint that is down or silent, and oversized answers: bounded, clear errors
#   - trellis-control serve takes the OIDC settings from its config file and checks them
#     against the provider at start
#
#   lab internet 192.0.2.0/24: idp .30 (oidc-provider :8443)  rp .31 (browser, relying
#   party; its redirect URI https://192.0.2.31:9443/oidc/callback is answered by the
#   browser driver)  fake .32 (a misbehaving provider :8443)
# Each browser sign-in takes 5-25 s on a busy machine; seven of them.
LAB_TIMEOUT=${LAB_TIMEOUT:-540}
source "$(dirname "$0")/lib.sh"
lab_init
RP=$TRELLIS_BUILD/tests/lab/oidc-rp
[[ -x $RP ]] || lab_skip "oidc-rp not built at $RP"
source "$(dirname "$0")/oidc_idp.sh"
lab_public_host rp 31

# rp C [OPTION...] COMMAND...: the relying party for client C (rs, es, ed) in rp's namespace.
rp() {
	local c=$1
	shift
	nsx rp "$RP" --issuer "$ISS" --client-id "trellis-$c" --secret-file "$LAB_TMP/secret-$c" \
		--ca-file "$pki/ca.pem" --redirect-uri "$REDIRECT" --timeout-ms 5000 "$@"
}
# browser URL LOGIN [STATE]: prints the callback's query.
browser() {
	nsx rp node "$IDP_SRC/browser.mjs" "$1" "$REDIRECT" "$2" "$spki" ${3:+"$3"}
}
# login C LOGIN REQFILE [STATE]: begin, then the browser; prints the callback's query.
login() {
	local url
	url=$(rp "$1" begin "$3") || return 1
	browser "$url" "$2" "${4:-}"
}

out=$(rp rs discover 2>&1)
check_eq "discovery and JWKS over TLS verified by the lab CA" "discovered" "$out"
out=$(nsx rp "$RP" --issuer "$ISS" --client-id trellis-rs --secret-file "$LAB_TMP/secret-rs" \
	discover 2>&1)
log "without the lab CA: $out"
check "without the lab CA, discovery is refused (certificate)" grep -qi "certif" <<<"$out"

# The full flow, as a person: sign in at the form, come back, exchange, verify.
q=$(login rs alice "$LAB_TMP/req1" "$LAB_TMP/browser-alice.json")
log "callback: ${q:0:60}..."
check "the provider sends the browser back with a code and our state" \
	grep -q "code=.*state=$(head -n1 "$LAB_TMP/req1")" <<<"$q"
out=$(rp rs finish "$LAB_TMP/req1" "$q" 2>&1)
check_eq "RS256 / client_secret_basic: alice signs in" \
	"email=alice@example.com verified=1 sub=alice name=Alice Example" "$out"
out=$(rp rs finish "$LAB_TMP/req1" "$q" 2>&1)
log "replayed code: $out"
check "a replayed code is refused by the provider" grep -q "token endpoint refused: invalid_grant" <<<"$out"

# A forged state: refused before the exchange, so the code is still good afterwards.
q=$(login rs alice "$LAB_TMP/req2" "$LAB_TMP/browser-alice.json")
forged=$(sed -E 's/state=[^&]*/state=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/' <<<"$q")
out=$(rp rs finish "$LAB_TMP/req2" "$forged" 2>&1)
check_eq "a forged state is refused" "oidc-rp: OIDC callback state does not match this login" "$out"
out=$(rp rs --allowed-groups ops,staff finish "$LAB_TMP/req2" "$q" 2>&1)
check_eq "... before the code was spent (and alice's groups claim has staff: allowed)" \
	"email=alice@example.com verified=1 sub=alice name=Alice Example" "$out"

q=$(login es alice "$LAB_TMP/req3" "$LAB_TMP/browser-alice.json")
out=$(rp es --token-auth client_secret_post finish "$LAB_TMP/req3" "$q" 2>&1)
check_eq "ES256 / client_secret_post: alice signs in" \
	"email=alice@example.com verified=1 sub=alice name=Alice Example" "$out"
q=$(login ed alice "$LAB_TMP/req4" "$LAB_TMP/browser-alice.json")
out=$(rp ed finish "$LAB_TMP/req4" "$q" 2>&1)
check_eq "EdDSA: alice signs in" \
	"email=alice@example.com verified=1 sub=alice name=Alice Example" "$out"

q=$(login rs mallory "$LAB_TMP/req6")
out=$(rp rs finish "$LAB_TMP/req6" "$q" 2>&1)
check_eq "an unverified email is refused" \
	"oidc-rp: the provider has not verified mallory@example.com" "$out"
q=$(login rs mallory "$LAB_TMP/req7")
out=$(rp rs --allow-unverified-email finish "$LAB_TMP/req7" "$q" 2>&1)
check_eq "... and accepted when configured (reported unverified)" \
	"email=mallory@example.com verified=0 sub=mallory name=Mallory" "$out"

# Tokens minted here with the provider's own keys (or not), checked against its JWKS.
mint() { # KEYS KID CLAIMS [ALG]
	node "$IDP_SRC/tools.mjs" mint "$@"
}
claims() { # AUD EXP
	printf '{"iss":"%s","aud":"%s","sub":"alice","nonce":"N1","exp":"%s","iat":"-10","email":"alice@example.com","email_verified":true}' \
		"$ISS" "$1" "$2"
}
keys=$LAB_TMP/idp/jwks.json
out=$(rp rs verify N1 "$(mint "$keys" rsa1 "$(claims trellis-rs +300)")" 2>&1)
check_eq "a token minted with the provider's key verifies (the negatives below fail for their reason)" \
	"email=alice@example.com verified=1 sub=alice name=" "$out"
out=$(rp rs verify N2 "$(mint "$keys" ec1 "$(claims trellis-rs +300)")" 2>&1)
check_eq "wrong nonce" "oidc-rp: ID token nonce does not match this login" "$out"
out=$(rp rs --allowed-domains example.org,example.net verify N1 \
	"$(mint "$keys" rsa1 "$(claims trellis-rs +300)")" 2>&1)
check_eq "an address outside the allowed domains" \
	"oidc-rp: alice@example.com is not in an allowed domain" "$out"
out=$(rp rs --allowed-groups ops verify N1 "$(mint "$keys" rsa1 "$(claims trellis-rs +300)")" 2>&1)
check_eq "a token without one of the allowed groups" \
	"oidc-rp: alice@example.com is in none of the allowed groups (groups claim)" "$out"
out=$(rp rs verify N1 "$(mint "$keys" ed1 "$(claims trellis-es +300)")" 2>&1)
check_eq "wrong aud" 'oidc-rp: ID token is not for us (aud lacks client id "trellis-rs")' "$out"
out=$(rp rs verify N1 "$(mint "$keys" rsa1 "$(claims trellis-rs -3600)")" 2>&1)
check "expired token" grep -q "^oidc-rp: ID token expired 3[56][0-9][0-9] s ago$" <<<"$out"
out=$(rp rs verify N1 "$(mint "$LAB_TMP/idp/rogue.json" rogue1 "$(claims trellis-rs +300)")" 2>&1)
check_eq "a token signed by a key the provider never published (JWKS just fetched: no refetch)" \
	'oidc-rp: no key with kid "rogue1" in the JWKS' "$out"
out=$(rp rs --jwks-refetch-ns 1 verify N1 \
	"$(mint "$LAB_TMP/idp/rogue.json" rogue1 "$(claims trellis-rs +300)")" 2>&1)
check_eq "... nor after refetching the JWKS" \
	'oidc-rp: no key with kid "rogue1" in the JWKS (after refetching it)' "$out"
out=$(rp rs verify N1 "$(mint "$keys" rsa1 "$(claims trellis-rs +300)" none)" 2>&1)
check_eq "alg none" 'oidc-rp: token alg "none" refused (RS256, ES256, EdDSA only)' "$out"
# The rogue key under the provider's kid.
jq_rogue=$(sed 's/"rogue1"/"rsa1"/' "$LAB_TMP/idp/rogue.json")
printf '%s\n' "$jq_rogue" >"$LAB_TMP/rogue-as-rsa1.json"
out=$(rp rs verify N1 "$(mint "$LAB_TMP/rogue-as-rsa1.json" rsa1 "$(claims trellis-rs +300)")" 2>&1)
check_eq "a rogue key under the provider's kid" \
	'oidc-rp: token signature does not verify (RS256, kid "rsa1")' "$out"

# A misbehaving provider: bounded waits and sizes, clear errors.
fake() { # PREFIX [OPTION...] [COMMAND...] (default: discover)
	local prefix=$1
	shift
	nsx rp "$RP" --issuer "https://192.0.2.32:8443$prefix" --client-id x --secret-file \
		"$LAB_TMP/secret-rs" --ca-file "$pki/ca.pem" --timeout-ms 2000 "${@:-discover}"
}
start=$SECONDS
out=$(fake /slow 2>&1)
took=$((SECONDS - start))
check_eq "a silent JWKS endpoint" \
	"oidc-rp: OIDC JWKS: https://192.0.2.32:8443/slow/jwks did not answer within 2000 ms" "$out"
check "... is given up on in time (${took} s)" test "$took" -le 5
out=$(fake /down 2>&1)
log "JWKS down: $out"
check "a JWKS endpoint that is down" \
	grep -q "^oidc-rp: OIDC JWKS: https://192.0.2.32:8444/jwks: .*onnect" <<<"$out"
out=$(fake /big 2>&1)
check_eq "an oversized JWKS" \
	"oidc-rp: OIDC JWKS: https://192.0.2.32:8443/big/jwks answered with more than 262144 bytes" \
	"$out"
# Key rotation: the first fetch has old1, the next new1; a token from new1 verifies
# after one refetch, and a fetch from the odd turn, without refetch, does not.
rot=$(printf '{"iss":"https://192.0.2.32:8443/rotate","aud":"x","sub":"bob","nonce":"N1","exp":"+300","iat":"-10","email":"bob@example.com","email_verified":true}')
out=$(fake /rotate --jwks-refetch-ns 1 verify N1 "$(mint "$LAB_TMP/fake/rotate.json" new1 "$rot")" 2>&1)
check_eq "a rotated key is found by refetching the JWKS" "email=bob@example.com verified=1 sub=bob name=" "$out"
out=$(fake /rotate verify N1 "$(mint "$LAB_TMP/fake/rotate.json" new1 "$rot")" 2>&1)
check_eq "... at most once per interval" 'oidc-rp: no key with kid "new1" in the JWKS' "$out"
out=$(fake /bigdisco 2>&1)
check_eq "an oversized discovery document" \
	"oidc-rp: OIDC discovery: https://192.0.2.32:8443/bigdisco/.well-known/openid-configuration answered with more than 65536 bytes" \
	"$out"

# trellis-control serve with the OIDC settings in its file: discovery and keys at start.
CTL=$TRELLIS_BUILD/src/control/trellis-control
cat >"$LAB_TMP/control.conf" <<CONF
listen = 192.0.2.31:8080
public-url = https://192.0.2.31:8080
no-relay = true
stun-port = 0
oidc-issuer = $ISS
oidc-client-id = trellis-rs
oidc-client-secret-file = $LAB_TMP/secret-rs
oidc-ca-file = $pki/ca.pem
oidc-allowed-domains = example.com
CONF
ip netns exec "$(ns_name rp)" "$CTL" --state "$LAB_TMP/ctl" serve --config "$LAB_TMP/control.conf" \
	>"$LAB_TMP/ctl.log" 2>&1 &
ctl_pid=$!
LAB_PIDS+=("$ctl_pid")
LAB_EXTRA_LOGS+=("control=$LAB_TMP/ctl.log")
check "serve --config checks the OIDC provider at start" \
	wait_for 30 grep -q "control: OIDC provider $ISS: discovery and keys fetched" "$LAB_TMP/ctl.log"
kill "$ctl_pid"
wait "$ctl_pid"
sed -i "s|^oidc-issuer = .*|oidc-issuer = http://192.0.2.30:8443|" "$LAB_TMP/control.conf"
out=$(ip netns exec "$(ns_name rp)" "$CTL" --state "$LAB_TMP/ctl" serve --config "$LAB_TMP/control.conf" 2>&1)
check_eq "serve refuses an issuer that is not https" \
	"trellis-control: serve: OIDC issuer must be an https URL" "$out"

lab_finish
