#!/bin/bash
# SPDX-License-Identifier: MIT
#
# The configuration audit log of a running trellis-control (docs/audit.md): admin
# actions from the server itself, root on the admin socket and an admin API key on
# the HTTP port show up in `audit log` with the right actor and what changed;
# `audit verify` passes, then fails naming the entry once a row is edited or deleted
# in control.db behind the server's back. Needs no namespaces.
# Run by meson with TRELLIS_BUILD=<build dir>.
set -u

CTL="${TRELLIS_BUILD:?set TRELLIS_BUILD to the build directory}/src/control/trellis-control"
pass=0
fail=0
tmp=$(mktemp -d)
srv=
cleanup() {
	[ -n "$srv" ] && kill -TERM "$srv" 2>/dev/null && wait "$srv" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
st="$tmp/state"
db="$st/control.db"

source "$(dirname "$0")/standalone.sh"
ctl() { timeout 20 "$CTL" --state "$st" "$@"; }
# entry ACTION TARGET: the seq of that entry in audit log --json, or nothing.
entry() {
	python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e=json.loads(l)
    if e["action"]==sys.argv[2] and e["target"]==sys.argv[3]:
        print(e["seq"], e["actor"])' "$tmp/log.json" "$1" "$2"
}

for bin in "$CTL" sqlite3 curl; do
	if ! command -v "$bin" >/dev/null; then
		echo "FAIL - $bin is missing"
		echo "0 passed, 1 failed"
		exit 1
	fi
done

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -m 0700 "$st"
"$CTL" --state "$st" serve --listen "127.0.0.1:$port" --stun-port 0 >"$tmp/serve.log" 2>&1 &
srv=$!
wait_listening "$tmp/serve.log" "$srv"
check "server up" grep -q "listening on" "$tmp/serve.log"

# 1. actions from the socket and from an API key over HTTP.
check "tailnets create corp (socket)" ctl tailnets create corp
check "tailnets set corp --device-approval on (socket)" ctl tailnets set corp --device-approval on
ctl authkey create --tailnet corp >"$tmp/authkey"
check "authkey create (socket)" grep -qE '^trellis-auth-' "$tmp/authkey"
ctl apikey create --name ci >"$tmp/apikey"
AK=$(cat "$tmp/apikey")
AKID=$(cut -d- -f3 "$tmp/apikey")
url="http://127.0.0.1:$port/admin/v1"
api() { curl -s -o "$tmp/api.out" -w '%{http_code}' -H "Authorization: Bearer $AK" "$@"; }
check "POST tailnets with the API key: 201" test "$(api -d '{"name":"lab"}' "$url/tailnets")" = 201
check "revoke the auth key with the API key: 200" \
	test "$(api -X POST "$url/authkeys/$(cut -d- -f3 "$tmp/authkey")/revoke")" = 200
check "pruning the log over HTTP: 403" test "$(api -d '{"keep":"1d"}' "$url/audit/prune")" = 403

# 2. the log: who did what.
ctl audit log --json >"$tmp/log.json"
check "audit log --json: one JSON object a line" \
	python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$tmp/log.json"
check "the server created the default tailnet" test "$(entry tailnet.create tailnet:default | cut -d' ' -f2)" = server
check "root on the socket created corp" \
	test "$(entry tailnet.create tailnet:corp | cut -d' ' -f2)" = "socket:uid$(id -u)"
check "root on the socket created the API key" \
	test "$(entry apikey.create "apikey:$AKID" | cut -d' ' -f2)" = "socket:uid$(id -u)"
check "the API key created lab" test "$(entry tailnet.create tailnet:lab | cut -d' ' -f2)" = "apikey:$AKID"
check "the API key revoked the auth key" \
	test "$(entry authkey.revoke "authkey:$(cut -d- -f3 "$tmp/authkey")" | cut -d' ' -f2)" = "apikey:$AKID"
ctl audit log >"$tmp/log.txt"
check "audit log shows what changed" grep -q "tailnet.set .*device_approval: false -> true" "$tmp/log.txt"
check "the log never holds a secret" sh -c "! grep -q '$(cut -d- -f4 "$tmp/apikey")' '$tmp/log.json' && ! grep -q '$(cut -d- -f4 "$tmp/authkey")' '$tmp/log.json'"
ctl audit log --since 1h --json >"$tmp/recent.json"
check "--since 1h: the same entries" cmp -s "$tmp/log.json" "$tmp/recent.json"
ctl audit log --since 2099-01-01 --json >"$tmp/none.json"
check "--since in the future: none" test ! -s "$tmp/none.json"
check "audit verify passes" ctl audit verify

# 3. tampering with control.db behind the server: edited, then deleted.
lab=$(entry tailnet.create tailnet:lab | cut -d' ' -f1)
sqlite3 "$db" "UPDATE audit SET actor = 'socket:uid0' WHERE seq = $lab"
ctl audit verify >"$tmp/out" 2>"$tmp/err"
check "an edited entry: verify exits 1" test $? -eq 1
check "... naming it" grep -q "entry $lab does not match its hash (edited)" "$tmp/err"
sqlite3 "$db" "UPDATE audit SET actor = 'apikey:$AKID' WHERE seq = $lab"
check "put back: verify passes" ctl audit verify
sqlite3 "$db" "DELETE FROM audit WHERE seq = $lab"
ctl audit verify >"$tmp/out" 2>"$tmp/err"
check "a deleted entry: verify exits 1" test $? -eq 1
check "... naming it" grep -q "entry $lab is missing (deleted)" "$tmp/err"

kill -TERM $srv
wait $srv 2>/dev/null
srv=
check "offline: verify still fails" sh -c "! '$CTL' --state '$st' --offline audit verify 2>/dev/null"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
