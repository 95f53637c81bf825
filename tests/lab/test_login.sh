#!/usr/bin/env bash
# Web login with a local account, by a real browser (issue 11): Debian's Chromium, headless,
# driven by playwright-core (tests/lab/browser, pinned in its package-lock.json; installed
# with `npm ci` when missing, never a browser download).
#   - `users add` makes ann@example.com (password from stdin)
#   - a runs `trellis up` without a key: it prints a URL; the browser opens it, the page
#     names the machine; a form posted without its CSRF token is refused (403); a wrong
#     password and an unknown address get the same message; the right one leads to TOTP
#     enrolment (secret from the page, code from oathtool), recovery codes are shown;
#     a joins tailnet example.com (created by ann, its first user) as ann
#   - the used URL is refused in another browser; a URL opened once is refused to the next
#   - b and c sign in as ann side by side: b takes a TOTP code, the same code is refused
#     to c (replay), c signs in with a recovery code; a, b and c see each other, each
#     owned by ann; an auth-key node of the default tailnet sees none of them
#
#   lab internet 192.0.2.0/24: ctl .1 (trellis-control :8080), a .11, b .12, c .13, d .14,
#   e .15
LAB_TIMEOUT=${LAB_TIMEOUT:-540} # about 155 s under a loaded build (ASan Argon2id, Chromium)
source "$(dirname "$0")/lib.sh"
lab_init
lab_require_control_plane
lab_require chromium
lab_require oathtool
lab_require node
lab_require curl

HERE=$(cd "$(dirname "$0")" && pwd)
BROWSER_DIR=$HERE/browser
if [[ ! -d $BROWSER_DIR/node_modules/playwright-core ]]; then
	(cd "$BROWSER_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund \
		>/dev/null 2>&1) || lab_skip "npm ci in tests/lab/browser failed"
fi

lab_internet
lab_public_host ctl 1
lab_public_host a 11
lab_public_host b 12
lab_public_host c 13
lab_public_host d 14
lab_public_host e 15
lab_control_start ctl 192.0.2.1 8080 || lab_finish

PW='correct horse battery'
check "users add ann@example.com --admin (password on stdin)" \
	bash -c "echo '$PW' | timeout 60 '$TRELLIS_CONTROL' --state '$LAB_TMP/control' users add ann@example.com --admin"
check "users list shows the account" bash -c "ctl() { timeout 20 '$TRELLIS_CONTROL' --state '$LAB_TMP/control' \"\$@\"; }; ctl users list | grep -qE '^[0-9]+ +ann@example.com +yes +no'"

# up_start NAME: `trellis up` without a key, in the background (main shell: its PID is ours).
declare -A UP_PID=()
up_start()
{
	timeout 150 "$TRELLIS_CLI" --socket "$(lab_node_sock "$1")" up \
		--login-server "$LAB_CONTROL_URL" --hostname "$1" >"$LAB_TMP/up-$1.txt" 2>&1 &
	UP_PID[$1]=$!
	LAB_PIDS+=("${UP_PID[$1]}")
}
# url_of NAME: waits for the login URL that up printed.
url_of()
{
	wait_for 20 grep -q '/register/' "$LAB_TMP/up-$1.txt" || return 1
	grep -oE 'http://[^ ]+/register/[0-9a-f]+' "$LAB_TMP/up-$1.txt" | head -n 1
}

browser() { nsx "$1" node "$BROWSER_DIR/login.mjs" "${@:2}"; }
jget() { python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"; }

lab_node_start a a || lab_finish
up_start a
URL=$(url_of a)
check "a: trellis up prints a login URL ($URL)" test -n "$URL"
OUT=$(browser a enrol "$URL" ann@example.com "$PW")
log "browser: $OUT"
SECRET=$(jget "$OUT" "j['secret']")
RECOVERY=$(jget "$OUT" "j['recovery'][0]")
check_eq "browser: no error" "None" "$(jget "$OUT" "j.get('error')")"
check_eq "login page answers 200" 200 "$(jget "$OUT" "j['status']")"
check "the page names the machine (hostname a, os linux)" \
	bash -c "[[ \$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])[\"machine\"])' '$OUT') == *'hostname:    a'*'os:          linux'* ]]"
check_eq "session cookie: HttpOnly, SameSite=Lax, not Secure on plain HTTP" \
	"trellis_session True Lax False" \
	"$(jget "$OUT" "' '.join(str(x) for x in [j['cookie'][0]['name'], j['cookie'][0]['httpOnly'], j['cookie'][0]['sameSite'], j['cookie'][0]['secure']])")"
check_eq "a form without its CSRF token is refused" 403 "$(jget "$OUT" "j['csrf_less_status']")"
check_eq "wrong password: the message" "Wrong email address or password." \
	"$(jget "$OUT" "j['wrong_password']")"
check_eq "unknown address: the same message" "$(jget "$OUT" "j['wrong_password']")" \
	"$(jget "$OUT" "j['unknown_user']")"
check_eq "the enrolment page shows a QR code" True "$(jget "$OUT" "j['qr']")"
check_eq "8 recovery codes shown" 8 "$(jget "$OUT" "len(j['recovery'])")"
check_eq "the page says a joined as ann, admin of the new tailnet" \
	"a joins the network as ann@example.com (tailnet example.com, where you are an admin). You can close this page." \
	"$(jget "$OUT" "j['done']")"
check_eq "the used login URL is refused in another browser (404)" 404 "$(jget "$OUT" "j['reuse_status']")"
check "a: trellis up returns 0 once signed in" wait "${UP_PID[a]}"
check "a is running" wait_for 10 node_connected a
IP_A=$(node_ip a 4)
check "a has a tailnet address ($IP_A)" \
	python3 -c 'import ipaddress,sys; assert ipaddress.ip_address(sys.argv[1]) in ipaddress.ip_network("100.64.0.0/10")' "$IP_A"
check_eq "a is ann's" ann@example.com "$(status_eval a "j['self']['user']")"
check "server log: tailnet example.com created by ann" \
	grep -q 'ann@example.com created tailnet example.com and is its admin' "$LAB_TMP/control.$LAB_CONTROL_RUN.log"
check "users list: ann has 2FA and 8 recovery codes" bash -c "timeout 20 '$TRELLIS_CONTROL' --state '$LAB_TMP/control' users list | grep -qE '^[0-9]+ +ann@example.com +yes +yes +8'"

# A login URL opened once is refused to the next browser.
lab_node_start e e || lab_finish
up_start e
URL_E=$(url_of e)
check_eq "e: the first browser gets the page" 200 \
	"$(nsx e curl -s -o /dev/null -w '%{http_code}' "$URL_E")"
check_eq "e: a second browser is refused" 403 \
	"$(nsx e curl -s -o /dev/null -w '%{http_code}' "$URL_E")"
check "... saying the link was used" \
	bash -c "ip netns exec '$(ns_name e)' curl -s '$URL_E' | grep -q 'already opened in another browser'"

# b and c: the same account on two more machines, signed in side by side up to the second
# factor; b takes a code, c is offered the same one at once (a replay), then a recovery code.
lab_node_start b b || lab_finish
lab_node_start c c || lab_finish
up_start b
up_start c
URL_B=$(url_of b)
URL_C=$(url_of c)
OUT=$(browser b pair "$URL_B" "$URL_C" ann@example.com "$PW" "$SECRET" "$RECOVERY")
log "browser: $OUT"
check_eq "b, c: browser without error" "None" "$(jget "$OUT" "j.get('error')")"
check_eq "b: the next code signs in" \
	"b joins the network as ann@example.com (tailnet example.com, where you are an admin). You can close this page." \
	"$(jget "$OUT" "j['done']")"
check_eq "c: the same code again is refused (replay)" \
	"That code was used already. Wait for the next one." "$(jget "$OUT" "j['replay']")"
check_eq "c: a recovery code signs in" \
	"c joins the network as ann@example.com (tailnet example.com, where you are an admin). You can close this page." \
	"$(jget "$OUT" "j['done2']")"
check "b: trellis up returns 0" wait "${UP_PID[b]}"
check "c: trellis up returns 0" wait "${UP_PID[c]}"
check "users list: one recovery code spent" bash -c "timeout 20 '$TRELLIS_CONTROL' --state '$LAB_TMP/control' users list | grep -qE '^[0-9]+ +ann@example.com +yes +yes +7'"
check "a sees b and c" wait_for 10 peers_are a "b c"
check "b sees a and c" wait_for 10 peers_are b "a c"
check_eq "a: peer b is ann's" ann@example.com \
	"$(status_eval a "[p['user'] for p in j['peers'] if p['hostname']=='b'][0]")"
check "trellis status shows the owner column" \
	bash -c "'$TRELLIS_CLI' --socket '$(lab_node_sock a)' status | grep -qE '^b +.* ann@example\.com( |\$)'"
check "a -> b over the tailnet" ping_until a "$(node_ip b 4)" 10

# d joins the default tailnet with an auth key: it sees neither of ann's machines.
lab_node_join d d "$(lab_authkey)"
check "d sees no peers" wait_for 20 peers_are d ""
check "a still sees only b and c" peers_are a "b c"

lab_finish
