#!/usr/bin/env bash
# OIDC on the control server's login page (issue 11), against the real provider of
# oidc_idp.sh (oidc-provider over HTTPS with a lab CA) and Debian's headless Chromium
# (playwright-core, idp/page.mjs), the control server on TLS:
#   - `trellis up` prints the URL; the page offers "Sign in with <provider>"; the person
#     signs in at the provider's form and comes back; the node joins the tailnet of the
#     email's domain (example.com, created by its first user, alice) and pings a peer
#   - the session cookie is HttpOnly, SameSite=Lax and Secure over HTTPS (test_login: not
#     Secure over plain HTTP)
#   - while the provider's form is open: a callback with a forged state is refused (400),
#     the real state in another browser is refused (403); the sign-in then still completes
#   - a --require-2fa tailnet refuses an OIDC login whose ID token has no "mfa" in amr
#   - a server whose issuer's discovery points at another provider (a mix-up, through
#     idp/fake.mjs) refuses that provider's ID token on the page
#
#   lab internet 192.0.2.0/24: web1 .1 (trellis-control :8443), web2 .2 (the mix-up's),
#   a .11, b .12, c .13, d .14, idp .30 (oidc-provider :8443), fake .32
# Three browser sign-ins, 5-25 s each on a busy machine.
LAB_TIMEOUT=${LAB_TIMEOUT:-540}
source "$(dirname "$0")/lib.sh"
lab_init
lab_require_control_plane
source "$(dirname "$0")/oidc_idp.sh"

# web1 (192.0.2.1:8443, TLS) signs in with the provider; a, b, c are nodes.
websp=$spki
for h in web1 web2; do
	websp+=,$(openssl x509 -in "$LAB_TMP/$h/cert.pem" -pubkey -noout |
		openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64)
done
lab_public_host web1 1
lab_public_host web2 2
lab_public_host a 11
lab_public_host b 12
lab_public_host c 13
lab_public_host d 14
export SSL_CERT_FILE=$pki/ca.pem # the nodes trust the control servers' lab CA
oidc_args() { # CERT-DIR ISSUER PUBLIC-URL
	echo "--tls-cert $LAB_TMP/$1/cert.pem --tls-key $LAB_TMP/$1/key.pem" \
		"--public-url $3 --oidc-issuer $2 --oidc-client-id trellis-web" \
		"--oidc-client-secret-file $LAB_TMP/secret-web --oidc-ca-file $pki/ca.pem"
}
LAB_CONTROL_SCHEME=https LAB_CONTROL_SERVE_ARGS="$(oidc_args web1 "$ISS" "$WEB1")" \
	lab_control_start web1 192.0.2.1 8443 || lab_finish
CTL_LOG=$LAB_TMP/control.$LAB_CONTROL_RUN.log
check "the server fetched the provider's discovery and keys at start" \
	wait_for 30 grep -q "control: OIDC provider $ISS: discovery and keys fetched" "$CTL_LOG"

# up_start NAME [URL]: `trellis up` without a key, in the background (its PID is ours).
declare -A UP_PID=()
up_start() {
	timeout 150 "$TRELLIS_CLI" --socket "$(lab_node_sock "$1")" up \
		--login-server "${2:-$LAB_CONTROL_URL}" --hostname "$1" >"$LAB_TMP/up-$1.txt" 2>&1 &
	UP_PID[$1]=$!
	LAB_PIDS+=("${UP_PID[$1]}")
}
url_of() { # NAME: the login URL up printed
	wait_for 20 grep -q '/register/' "$LAB_TMP/up-$1.txt" || return 1
	grep -oE 'https://[^ ]+/register/[0-9a-f]+' "$LAB_TMP/up-$1.txt" | head -n 1
}
page() { nsx "$1" node "$IDP_SRC/page.mjs" "$2" "$3" "$websp" ${4:+"$4"}; }
jget() { python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"; }

lab_node_start a a || lab_finish
up_start a
URL=$(url_of a)
check "a: trellis up prints a login URL on the TLS server ($URL)" test -n "$URL"
OUT=$(page a "$URL" alice forge)
log "browser: $OUT"
check_eq "a: browser without error" "None" "$(jget "$OUT" "j.get('error')")"
check_eq "the login page answers 200 over HTTPS" 200 "$(jget "$OUT" "j['status']")"
check_eq "session cookie over HTTPS: HttpOnly, SameSite=Lax, Secure, path /register/" \
	"trellis_session True Lax True /register/" \
	"$(jget "$OUT" "' '.join(str(x) for x in [j['cookie'][0]['name'], j['cookie'][0]['httpOnly'], j['cookie'][0]['sameSite'], j['cookie'][0]['secure'], j['cookie'][0]['path']])")"
check_eq "the page offers the provider" "Sign in with 192.0.2.30:8443" "$(jget "$OUT" "j['button']")"
check_eq "the browser went to the provider with the server's state" True "$(jget "$OUT" "j['state_seen']")"
check_eq "a callback with a forged state is refused (400)" 400 "$(jget "$OUT" "j['forged_status']")"
check "... saying it is no sign-in of this server" \
	grep -q "does not belong to a sign-in this server is waiting for" <<<"$(jget "$OUT" "j['forged_msg']")"
check_eq "the real state in another browser (no session) is refused (403)" 403 \
	"$(jget "$OUT" "j['other_browser_status']")"
check_eq "alice signs in at the provider and a joins as alice, admin of example.com" \
	"a joins the network as alice@example.com (tailnet example.com, where you are an admin). You can close this page." \
	"$(jget "$OUT" "j.get('done')")"
check "server log: signed in with oidc" \
	grep -q "signed in by alice@example.com with oidc: a joins tailnet example.com" "$CTL_LOG"
check "server log: the forged state was refused" grep -q "OIDC callback with an unknown state refused" "$CTL_LOG"
check "a: trellis up returns 0 once signed in" wait "${UP_PID[a]}"
check "a is running" wait_for 20 node_connected a
check_eq "a is alice's" alice@example.com "$(status_eval a "j['self']['user']")"
KEY=$(ctl authkey create --tailnet example.com)
lab_node_join b b "$KEY"
check "a sees b" wait_for 20 peers_are a "b"
check "a -> b over the tailnet" ping_until a "$(node_ip b 4)" 20

# A tailnet that requires a second factor: the provider's token does not say "mfa" (amr).
check "tailnets set example.com --require-2fa on" ctl tailnets set example.com --require-2fa on
lab_node_start c c || lab_finish
up_start c
URL=$(url_of c)
OUT=$(page c "$URL" alice)
log "browser: $OUT"
check_eq "require-2fa: an OIDC login without mfa in amr is refused" \
	"This network requires a second factor at sign-in, and yours did not use one." \
	"$(jget "$OUT" "j.get('msg')")"
check "nodes list shows a in example.com" node_listed a example.com
check_not "... and not c" node_listed c example.com
kill "${UP_PID[c]}" 2>/dev/null

# web2 (192.0.2.2:8443) is configured with the fake provider's /mixup issuer, whose discovery
# points at the real provider: the ID token names the real issuer and is refused.
ip netns exec "$(ns_name web2)" "$TRELLIS_CONTROL" --state "$LAB_TMP/control2" serve \
	--listen 192.0.2.2:8443 --no-relay --stun-port 0 \
	$(oidc_args web2 "https://192.0.2.32:8443/mixup" "$WEB2") >"$LAB_TMP/control2.log" 2>&1 &
LAB_PIDS+=($!)
LAB_EXTRA_LOGS+=("control2=$LAB_TMP/control2.log")
check "web2 listens" wait_for 30 bash -c "ip netns exec $(ns_name web2) ss -Hltn 'sport = :8443' | grep -q ."
lab_node_start d d || lab_finish
up_start d "$WEB2"
URL=$(url_of d)
OUT=$(page d "$URL" alice)
log "browser: $OUT"
check_eq "an ID token from another issuer is refused on the page" \
	"Your identity provider's sign-in failed: ID token issuer \"$ISS\" is not the configured issuer" \
	"$(jget "$OUT" "j.get('msg')")"
kill "${UP_PID[d]}" 2>/dev/null

lab_finish
