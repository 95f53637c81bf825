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
#   - device approval (`tailnets set example.com --device-approval=true`, the issue's form):
#     e's sign-in registers it, the page says it waits for an administrator, e stays out
#     (pending) until `nodes approve e`, then joins and a sees it
#   - erin@example.org signs in for f: a new tailnet example.org, erin its admin; f sees
#     none of example.com's nodes and they do not see f
#   - pat@example.net (a consumer domain by --consumer-domains) signs in for g: a
#     personal tailnet pat-at-example.net, not one of the domain
#   - a server whose issuer's discovery points at another provider (a mix-up, through
#     idp/fake.mjs) refuses that provider's ID token on the page
#
#   lab internet 192.0.2.0/24: web1 .1 (trellis-control :8443), web2 .2 (the mix-up's),
#   a .11, b .12, c .13, d .14, e .15, f .16, g .17, idp .30 (oidc-provider :8443), fake .32
# Six browser sign-ins, 5-25 s each on a busy machine.
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
lab_public_host e 15
lab_public_host f 16
lab_public_host g 17
export SSL_CERT_FILE=$pki/ca.pem # the nodes trust the control servers' lab CA
oidc_args() { # CERT-DIR ISSUER PUBLIC-URL
	echo "--tls-cert $LAB_TMP/$1/cert.pem --tls-key $LAB_TMP/$1/key.pem" \
		"--public-url $3 --oidc-issuer $2 --oidc-client-id trellis-web" \
		"--oidc-client-secret-file $LAB_TMP/secret-web --oidc-ca-file $pki/ca.pem"
}
LAB_CONTROL_SCHEME=https \
	LAB_CONTROL_SERVE_ARGS="$(oidc_args web1 "$ISS" "$WEB1") --consumer-domains gmail.com,example.net" \
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
# sign_in NODE LOGIN [SERVER]: NODE's trellisd and `trellis up`, and LOGIN at the page of the
# URL it printed; what the browser saw in OUT.
sign_in() {
	lab_node_start "$1" "$1" || lab_finish
	up_start "$1" ${3:+"$3"}
	URL=$(url_of "$1")
	OUT=$(page "$1" "$URL" "$2")
	log "browser: $OUT"
}

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
sign_in c alice
check_eq "require-2fa: an OIDC login without mfa in amr is refused" \
	"This network requires a second factor at sign-in, and yours did not use one." \
	"$(jget "$OUT" "j.get('msg')")"
check "nodes list shows a in example.com" node_listed a example.com
check_not "... and not c" node_listed c example.com
kill "${UP_PID[c]}" 2>/dev/null

# Device approval: a successful sign-in registers e, which waits for an admin's approval.
check "tailnets set example.com --require-2fa=false --device-approval=true" \
	ctl tailnets set example.com --require-2fa=false --device-approval=true
sign_in e alice
check_eq "device approval: the page says e waits for an administrator" \
	"e is registered to alice@example.com (tailnet example.com, where you are an admin). An administrator approves new devices in this network: it connects once they do." \
	"$(jget "$OUT" "j.get('done')")"
check "server log: e signed in and waits for device approval" \
	grep -q "(e) signed in, waits for device approval" "$CTL_LOG"
node_pending() { # NAME: the server lists the node in example.com, waiting for approval
	[[ $(ctl nodes show "$1" --tailnet example.com --json |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])') == pending ]]
}
check "e is listed in example.com as pending" wait_for 20 node_pending e
check "a does not see e meanwhile" peers_are a "b"
check "nodes approve e" ctl nodes approve e --tailnet example.com
check "e is running once approved" wait_for 30 node_connected e
check_eq "e is alice's" alice@example.com "$(status_eval e "j['self']['user']")"
check "a sees e" wait_for 20 peers_are a "b e"
check "tailnets set example.com --device-approval=false" \
	ctl tailnets set example.com --device-approval=false

# A user of another company's domain: a tailnet of its own, which sees nothing of example.com.
sign_in f erin
check_eq "erin@example.org signs in: f joins the new tailnet example.org, erin its admin" \
	"f joins the network as erin@example.org (tailnet example.org, where you are an admin). You can close this page." \
	"$(jget "$OUT" "j.get('done')")"
check "server log: example.org created by erin" \
	grep -q 'erin@example.org created tailnet example.org and is its admin' "$CTL_LOG"
check "f is running" wait_for 20 node_connected f
check_eq "f is erin's" erin@example.org "$(status_eval f "j['self']['user']")"
check "nodes list shows f in example.org" node_listed f example.org
check_not "... and not in example.com" node_listed f example.com
check "f sees no peers" wait_for 10 peers_are f ""
check "a still sees only b and e" peers_are a "b e"
check "... and b too" peers_are b "a e"

# --consumer-domains example.net: pat@example.net gets a tailnet of his own, not the domain's.
sign_in g pat
check_eq "pat@example.net (a consumer domain here) signs in to a personal tailnet" \
	"g joins the network as pat@example.net (tailnet pat-at-example.net, where you are an admin). You can close this page." \
	"$(jget "$OUT" "j.get('done')")"
check "nodes list shows g in pat-at-example.net" node_listed g pat-at-example.net
tailnet_listed() { ctl tailnets list --json | python3 -c 'import json,sys; sys.exit(sys.argv[1] not in [t["name"] for t in json.load(sys.stdin)])' "$1"; }
check "tailnets list has pat-at-example.net" tailnet_listed pat-at-example.net
check_not "... and no tailnet example.net" tailnet_listed example.net

# web2 (192.0.2.2:8443) is configured with the fake provider's /mixup issuer, whose discovery
# points at the real provider: the ID token names the real issuer and is refused.
ip netns exec "$(ns_name web2)" "$TRELLIS_CONTROL" --state "$LAB_TMP/control2" serve \
	--listen 192.0.2.2:8443 --no-relay --stun-port 0 \
	$(oidc_args web2 "https://192.0.2.32:8443/mixup" "$WEB2") >"$LAB_TMP/control2.log" 2>&1 &
LAB_PIDS+=($!)
LAB_EXTRA_LOGS+=("control2=$LAB_TMP/control2.log")
check "web2 listens" wait_for 30 bash -c "ip netns exec $(ns_name web2) ss -Hltn 'sport = :8443' | grep -q ."
sign_in d alice "$WEB2"
check_eq "an ID token from another issuer is refused on the page" \
	"Your identity provider's sign-in failed: ID token issuer \"$ISS\" is not the configured issuer" \
	"$(jget "$OUT" "j.get('msg')")"
kill "${UP_PID[d]}" 2>/dev/null

lab_finish
