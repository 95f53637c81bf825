#!/usr/bin/env bash
# Web login with a local account, by a real browser (issue 11): Debian's Chromium, headless,
# driven by playwright-core (tests/lab/browser, pinned in its package-lock.json; installed
# with `npm ci` when missing, never a browser download), with JavaScript off: the pages
# work without it.
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
#   - `users add bob@example.com --totp` prints a QR code that zbarimg decodes to the
#     otpauth URI it prints, and recovery codes; the factor is pending (users list) until a
#     code from it comes: `users confirm-2fa` refuses a wrong one, the page refuses one of
#     bob's recovery codes, and bob's first sign-in with a code of that secret confirms it;
#     carl's (`users add carl@example.com --totp`) is confirmed by `users confirm-2fa`;
#     on a terminal (tests/lab/totp_tty.py, a pty), `users add dora@example.com --totp` asks
#     for a code, refuses a wrong one and confirms with the right one
#   - re-login: a's key expires; its URL (a random code) is refused to bob, another user of
#     example.com, after his second factor (the page says so, the audit log has it, a stays
#     out); ann signs in at the same URL in her browser and a comes back as the same node
#     (id, address) with a new node key that b gets
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
lab_require zbarimg

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
RECOVERY2=$(jget "$OUT" "j['recovery'][1]")
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

# ---- re-login of a (expired) by its owner; another user of the tailnet is refused
PW2='another horse battery'
echo "$PW2" | timeout 60 "$TRELLIS_CONTROL" --state "$LAB_TMP/control" users add bob@example.com \
	--totp >"$LAB_TMP/bob.txt" 2>&1
check_eq "users add bob@example.com --totp" 0 "$?"
sed 's/^/  | /' "$LAB_TMP/bob.txt"
BOB_URI=$(grep -m1 '^otpauth://' "$LAB_TMP/bob.txt")
BOB_SECRET=$(sed -n 's/^secret: //p' "$LAB_TMP/bob.txt")
check "... prints an otpauth URI with the secret ($BOB_URI)" \
	grep -qE "^otpauth://totp/Trellis:bob%40example.com\?secret=$BOB_SECRET&issuer=Trellis\$" <<<"$BOB_URI"
python3 "$HERE/qr2pgm.py" "$LAB_TMP/bob.txt" >"$LAB_TMP/bob.pgm"
check_eq "... and a QR code that decodes to it" "$BOB_URI" "$(zbarimg -q --raw "$LAB_TMP/bob.pgm" 2>/dev/null)"
check_eq "... and 8 recovery codes" 8 "$(grep -cE '^  [a-z2-7]{5}-[a-z2-7]{5}$' "$LAB_TMP/bob.txt")"
check "... says the factor is pending until a code confirms it" \
	grep -q '^The second factor is pending: it counts once a code from the app confirms it' "$LAB_TMP/bob.txt"
BOB_RECOVERY=$(grep -m1 -oE '^  [a-z2-7]{5}-[a-z2-7]{5}$' "$LAB_TMP/bob.txt" | tr -d ' ')
check "users list: bob's 2FA is pending before a code from his app" bash -c "timeout 20 '$TRELLIS_CONTROL' --state '$LAB_TMP/control' users list | grep -qE '^[0-9]+ +bob@example.com +no +pending +8'"
# A code of that secret for ten minutes from now: outside the window, so wrong now.
check "users confirm-2fa bob refuses a wrong code" \
	bash -c "! oathtool --totp -b '$BOB_SECRET' -N 'now + 600 seconds' | timeout 20 '$TRELLIS_CONTROL' --state '$LAB_TMP/control' users confirm-2fa bob@example.com 2>'$LAB_TMP/confirm.err'"
check "... saying so" grep -q 'wrong code for the second factor of "bob@example.com"' "$LAB_TMP/confirm.err"
check "... and bob's 2FA stays pending" bash -c "timeout 20 '$TRELLIS_CONTROL' --state '$LAB_TMP/control' users list | grep -qE '^[0-9]+ +bob@example.com +no +pending +8'"
echo "$PW2" | timeout 60 "$TRELLIS_CONTROL" --state "$LAB_TMP/control" users add carl@example.com \
	--totp >"$LAB_TMP/carl.txt" 2>&1
check_eq "users add carl@example.com --totp" 0 "$?"
CARL_SECRET=$(sed -n 's/^secret: //p' "$LAB_TMP/carl.txt")
check "users confirm-2fa carl takes a code of the printed secret (stdin)" \
	bash -c "oathtool --totp -b '$CARL_SECRET' | timeout 20 '$TRELLIS_CONTROL' --state '$LAB_TMP/control' users confirm-2fa carl@example.com"
OUT=$(python3 "$HERE/totp_tty.py" "$PW2" -- "$TRELLIS_CONTROL" --state "$LAB_TMP/control" \
	users add dora@example.com --totp)
log "users add on a terminal: $OUT"
check "users add dora@example.com --totp on a terminal: asks for a code, refuses a wrong one" \
	grep -q 'wrong code for the second factor of \\"dora@example.com\\"' <<<"$OUT"
check_eq "... and confirms with the right one" "The second factor of dora@example.com is confirmed." \
	"$(jget "$OUT" "j.get('right')")"
check_eq "... exit status 0" 0 "$(jget "$OUT" "j.get('exit')")"
check "users list: dora has 2FA" bash -c "timeout 20 '$TRELLIS_CONTROL' --state '$LAB_TMP/control' users list | grep -qE '^[0-9]+ +dora@example.com +no +yes +8'"
check "users list: carl has 2FA now" bash -c "timeout 20 '$TRELLIS_CONTROL' --state '$LAB_TMP/control' users list | grep -qE '^[0-9]+ +carl@example.com +no +yes +8'"
check "... and confirm-2fa refuses to confirm it again" \
	bash -c "! oathtool --totp -b '$CARL_SECRET' | timeout 20 '$TRELLIS_CONTROL' --state '$LAB_TMP/control' users confirm-2fa carl@example.com 2>/dev/null"
check "users create bob@example.com --tailnet example.com (a user there)" \
	ctl users create bob@example.com --tailnet example.com
AID=$(node_id a example.com)
AKEY0=$(status_eval a "j['self']['node_key']")
check "nodes expire a" ctl nodes expire "$AID"
check "b no longer lists a" wait_for 20 peers_are b "c"
check "a shows a login URL" wait_for 20 bash -c "'$TRELLIS_CLI' --socket '$(lab_node_sock a)' status --json | grep -q '\"auth_url\": \"http'"
URL_A=$(status_eval a "j['auth_url']")
check "... a random code ($URL_A)" grep -qE '/register/[0-9a-f]{16}$' <<<"$URL_A"
OUT=$(browser a signin "$URL_A" bob@example.com "$PW2" "totp:$BOB_SECRET" "$BOB_RECOVERY")
log "browser (bob): $OUT"
check_eq "bob: browser without error" "None" "$(jget "$OUT" "j.get('error')")"
check_eq "bob's pending factor asks for a code of the app only" \
	"The 6-digit code from your authenticator app" "$(jget "$OUT" "j.get('code_label')")"
check_eq "... a recovery code is refused while it is pending" "Wrong code." \
	"$(jget "$OUT" "j.get('first_message')")"
check "users list: bob's code from his app confirmed his 2FA" bash -c "timeout 20 '$TRELLIS_CONTROL' --state '$LAB_TMP/control' users list | grep -qE '^[0-9]+ +bob@example.com +no +yes +8'"
check_eq "bob passes his second factor (the printed secret) and is refused (403)" 403 \
	"$(jget "$OUT" "j['answer_status']")"
check_eq "... the page says why" \
	"This machine belongs to another person: only they can sign in to renew it. Nothing was changed." \
	"$(jget "$OUT" "j.get('message')")"
check "the refusal is in the audit log (bob, node a)" \
	bash -c "timeout 20 '$TRELLIS_CONTROL' --state '$LAB_TMP/control' audit log --json | python3 -c '
import json, sys
es = [json.loads(l) for l in sys.stdin if l.strip()]
m = [e for e in es if e[\"action\"] == \"node.relogin_refused\"]
assert len(m) == 1 and m[0][\"actor\"] == \"web:bob@example.com\" and m[0][\"target\"] == \"node:$AID a\", m'"
check "a still waits for its login" bash -c "[[ \$('$TRELLIS_CLI' --socket '$(lab_node_sock a)' status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"backend_state\"])') == needs_login ]]"
check "b still does not list a" peers_are b "c"
OUT=$(browser a signin "$URL_A" ann@example.com "$PW" "$RECOVERY2")
log "browser (ann): $OUT"
check_eq "ann: browser without error" "None" "$(jget "$OUT" "j.get('error')")"
check_eq "ann renews a at the same URL" \
	"a is signed in again as ann@example.com (tailnet example.com): it keeps its name and addresses. You can close this page." \
	"$(jget "$OUT" "j.get('done')")"
check "a is running again" wait_for 20 node_connected a
check_eq "a kept its node id" "$AID" "$(node_id a example.com)"
check_eq "a kept its address" "$IP_A" "$(node_ip a 4)"
check_eq "a is still ann's" ann@example.com "$(status_eval a "j['self']['user']")"
AKEY1=$(status_eval a "j['self']['node_key']")
check "a has a new node key" test -n "$AKEY1" -a "$AKEY1" != "$AKEY0"
check "b sees a again with its new key" wait_for 20 bash -c "[[ \$('$TRELLIS_CLI' --socket '$(lab_node_sock b)' status --json | python3 -c 'import json,sys; print([p[\"node_key\"] for p in json.load(sys.stdin)[\"peers\"] if p[\"hostname\"] == \"a\"][0])' 2>/dev/null) == '$AKEY1' ]]"
check "b -> a after the re-login" ping_until b "$IP_A" 15

lab_finish
