#!/bin/bash
# SPDX-License-Identifier: MIT
#
# trellis-control admin CLI on a --state directory: sections 1-7 with no server
# (--offline, on the database), then a running server's admin socket and its HTTP
# admin API with API keys, and the refusals of a mistyped --state. Needs no
# namespaces or root.
# Run by meson with TRELLIS_BUILD=<build dir>.
set -u

CTL="${TRELLIS_BUILD:?set TRELLIS_BUILD to the build directory}/src/control/trellis-control"
pass=0
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
st="$tmp/state"

source "$(dirname "$0")/standalone.sh"
ctl() { "$CTL" --state "$st" --offline "$@"; }
is_json() { python3 -c 'import json,sys; json.load(sys.stdin)' <"$1"; }
# mistake NAME ARGS...: exit 1, nothing on stdout, exactly one line on stderr.
mistake() {
	local name=$1
	shift
	ctl "$@" >"$tmp/out" 2>"$tmp/err"
	local rc=$?
	if [ "$rc" -eq 1 ] && [ ! -s "$tmp/out" ] && [ "$(wc -l <"$tmp/err")" -eq 1 ]; then
		ok "$name ($(cat "$tmp/err"))"
	else
		not_ok "$name: rc=$rc stdout=$(cat "$tmp/out") stderr=$(cat "$tmp/err")"
	fi
}

if [ ! -x "$CTL" ]; then
	echo "FAIL - $CTL is not built"
	echo "0 passed, 1 failed"
	exit 1
fi

# 1. authkey create prints only the key; the state dir and db get private modes.
ctl authkey create >"$tmp/key" 2>"$tmp/err"
check "authkey create exits 0" test $? -eq 0
check "authkey create prints one key line" \
	grep -Eqx 'trellis-auth-[0-9a-f]{12}-[0-9a-f]{32}' "$tmp/key"
check "authkey create prints nothing else" test "$(wc -l <"$tmp/key")" -eq 1
check "authkey create is quiet on stderr" test ! -s "$tmp/err"
check "state dir is 0700" test "$(stat -c %a "$st")" = 700
check "control.db is 0600" test "$(stat -c %a "$st/control.db")" = 600
check "default tailnet created on first use" \
	sh -c "'$CTL' --state '$st' --offline tailnets list | grep -qw default"
ctl authkey create --reusable --ephemeral --preauthorized --tags tag:web,tag:db \
	--expiry 7d >"$tmp/key2"
check "authkey create with every option" \
	grep -Eqx 'trellis-auth-[0-9a-f]{12}-[0-9a-f]{32}' "$tmp/key2"

# 2. listings: the secret never shows, --json parses.
ctl authkey list >"$tmp/list"
secret=$(cut -d- -f4 "$tmp/key")
check "authkey list shows the id" grep -q "$(cut -d- -f1-3 "$tmp/key")" "$tmp/list"
check "authkey list never shows the secret" sh -c "! grep -q '$secret' '$tmp/list'"
ctl authkey list --json >"$tmp/list.json"
check "authkey list --json is valid JSON" is_json "$tmp/list.json"
check "authkey list --json has both keys" \
	python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); assert len(a) == 2 and a[1]["tags"] == ["tag:web","tag:db"] and a[1]["reusable"]' "$tmp/list.json"

# 3. revoke.
check "authkey revoke by id" ctl authkey revoke "$(cut -d- -f1-3 "$tmp/key")"
check "revoked key listed as revoked" \
	python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); assert a[0]["status"] == "revoked"' \
	<(ctl authkey list --json)

# 4. tailnets and users.
check "tailnets create" ctl tailnets create corp --key-expiry 30d --ephemeral-timeout 90s
check "authkey create --tailnet corp" sh -c "'$CTL' --state '$st' --offline authkey create --tailnet corp >/dev/null"
check "users create" ctl users create alice --tailnet corp
ctl tailnets list --json >"$tmp/tn.json"
check "tailnets list --json is valid JSON" is_json "$tmp/tn.json"
check "tailnet settings stored" \
	python3 -c 'import json,sys; t={x["name"]:x for x in json.load(open(sys.argv[1]))}; assert t["corp"]["key_expiry_sec"] == 2592000 and t["corp"]["ephemeral_timeout_sec"] == 90' "$tmp/tn.json"
ctl users list --json >"$tmp/u.json"
check "users list --json is valid JSON" is_json "$tmp/u.json"

# 5. nodes list on an empty tailnet.
ctl nodes list --json >"$tmp/nodes.json"
check "nodes list --json is valid JSON" is_json "$tmp/nodes.json"
check "nodes list --json is an empty array" test "$(tr -d ' \n' <"$tmp/nodes.json")" = "[]"
check "nodes list (table)" sh -c "'$CTL' --state '$st' --offline nodes list | grep -q ^ID"

# 5b. node commands on a node registered behind our back (as the server would).
python3 - "$st/control.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
tid = c.execute("SELECT id FROM tailnets WHERE name = 'corp'").fetchone()[0]
c.execute("INSERT INTO nodes (tailnet_id, name, hostname, os, machine_key, node_key, ipv4,"
          " created) VALUES (?, 'web', 'web', 'linux', x'01', x'02', 1681915905, 1)", (tid,))
c.commit()
PY
node() { ctl nodes list --json | python3 -c "import json,sys; print(json.load(sys.stdin)[0][sys.argv[1]])" "$1"; }
check "new node is pending" test "$(node approved)" = False
check "nodes approve NAME" ctl nodes approve web
check "node approved" test "$(node approved)" = True
check "node visible" test "$(node visible)" = True
check "node addresses" test "$(node ipv4) $(node ipv6)" = "100.64.0.1 fd7e:11e5:7a11::6440:1"
check "nodes rename" ctl nodes rename 1 web-1
check "node renamed" test "$(node name)" = web-1
check "nodes set-expiry off" ctl nodes set-expiry 1 off
check "expiry disabled" test "$(node expiry_disabled)" = True
check "nodes expire" ctl nodes expire 1
check "expired node invisible" test "$(node visible)" = False
check "nodes delete" ctl nodes delete 1
check "node gone" test "$(ctl nodes list --json | tr -d ' \n')" = "[]"

# 5c. ca list --revoked / --expiring: --json lists exactly the certificates the table lists.
# Three CSRs made with openssl (an Ed25519 key, the machine URI), signed for 10, 20 and 100
# days; the 10-day one revoked.
csr() {
	openssl genpkey -algorithm ed25519 -out "$tmp/$1.key" 2>/dev/null &&
		openssl req -new -key "$tmp/$1.key" -subj "/CN=$1" -addext \
			"subjectAltName=URI:urn:trellis:machine:$(openssl rand -hex 32)" \
			-out "$tmp/$1.csr" 2>/dev/null
}
serial_of() { sed -n 's/^serial \([0-9a-f]*\),.*/\1/p' "$tmp/$1.sign"; }
check "ca init (corp)" sh -c "'$CTL' --state '$st' --offline ca init --tailnet corp > /dev/null"
for m in m10 m20 m100; do
	check "openssl makes a CSR ($m)" csr $m
	check "ca sign $m" sh -c "'$CTL' --state '$st' --offline ca sign '$tmp/$m.csr' --tailnet corp \
		--validity ${m#m}d > /dev/null 2> '$tmp/$m.sign'"
done
check "ca revoke the 10-day one" ctl ca revoke "$(serial_of m10)" --tailnet corp
# listed JSON|TABLE ARGS...: the serials the listing shows, sorted, one line.
listed() {
	local how=$1
	shift
	if [ "$how" = json ]; then
		ctl ca list "$@" --json | python3 -c 'import json,sys; print(" ".join(sorted(c["serial"] for c in json.load(sys.stdin))))'
	else
		ctl ca list "$@" | tail -n +2 | awk '{print $1}' | sort | tr '\n' ' ' | sed 's/ $//'
	fi
}
S10=$(serial_of m10) S20=$(serial_of m20) S100=$(serial_of m100)
want_revoked="$S10"
want_expiring=$(printf '%s\n' "$S20" | sort | tr '\n' ' ' | sed 's/ $//')
want_200d=$(printf '%s\n' "$S20" "$S100" | sort | tr '\n' ' ' | sed 's/ $//')
for how in table json; do
	check "ca list --revoked ($how): the revoked one only" \
		test "$(listed $how --revoked)" = "$want_revoked"
	check "ca list --expiring 30d ($how): the valid 20-day one only" \
		test "$(listed $how --expiring 30d)" = "$want_expiring"
	check "ca list --expiring 200d --tailnet corp ($how): both valid ones" \
		test "$(listed $how --expiring 200d --tailnet corp)" = "$want_200d"
	check "ca list --revoked --expiring 200d ($how): none" \
		test -z "$(listed $how --revoked --expiring 200d)"
	check "ca list ($how): all three" test "$(listed $how | wc -w)" = 3
done

# 6. mistakes: one line, exit 1.
mistake "unknown node" nodes approve 4242
mistake "unknown node by name" nodes delete no-such-node
mistake "bad duration" authkey create --expiry 5x
mistake "bad duration (no unit)" tailnets create t2 --key-expiry 12
mistake "unknown tailnet" authkey create --tailnet nope
mistake "duplicate tailnet" tailnets create corp
mistake "duplicate user" users create alice --tailnet corp
mistake "bad tag" authkey create --tags web
mistake "unknown option" nodes list --frobnicate
mistake "unknown command" frobnicate
mistake "unknown subcommand" nodes frobnicate
mistake "revoke unknown key" authkey revoke 0123456789ab
mistake "set-expiry needs on|off" nodes set-expiry 1 maybe
mistake "missing argument" nodes rename 1

# 7. a newer database is refused with one clear line.
cp -r "$st" "$tmp/newer"
if command -v sqlite3 >/dev/null 2>&1; then
	sqlite3 "$tmp/newer/control.db" "UPDATE schema_version SET version = 999"
	"$CTL" --state "$tmp/newer" --offline nodes list >/dev/null 2>"$tmp/err"
	rc=$?
	check "newer schema refused" test $rc -eq 1
	check "newer schema message" grep -q "newer" "$tmp/err"
else
	python3 - "$tmp/newer/control.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1]); c.execute("UPDATE schema_version SET version = 999"); c.commit()
PY
	"$CTL" --state "$tmp/newer" --offline nodes list >/dev/null 2>"$tmp/err"
	check "newer schema refused" test $? -eq 1
	check "newer schema message" grep -q "newer" "$tmp/err"
fi

# 8. one server per state directory: a second `serve` on the same state is refused at
# once (whatever its port), and the lock goes with the first server, even on kill -9.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$CTL" --state "$st" serve --listen "127.0.0.1:$port" >"$tmp/serve1.log" 2>&1 &
srv=$!
wait_listening "$tmp/serve1.log" $srv
check "first server up" grep -q "listening on" "$tmp/serve1.log"
timeout 10 "$CTL" --state "$st" serve --listen "127.0.0.1:$((port + 1))" >"$tmp/serve2.log" 2>&1
check "a second server on the same state exits 1" test $? -eq 1
check "and says another one serves it" grep -q "another trellis-control serves $st" "$tmp/serve2.log"
kill -KILL $srv
wait $srv 2>/dev/null
timeout 10 "$CTL" --state "$st" serve --listen "127.0.0.1:$((port + 1))" >"$tmp/serve3.log" 2>&1 &
srv=$!
wait_listening "$tmp/serve3.log" $srv
check "after kill -9 of the first, a new server takes the state" grep -q "listening on" "$tmp/serve3.log"
kill -TERM $srv
wait $srv 2>/dev/null

# 9. with no server running, admin commands refuse unless --offline; a --state that is
# not a state directory is named (and not created), whether or not it exists.
ctl_live() { timeout 20 "$CTL" --state "$st" "$@"; }
# refused NAME PATTERN ARGS...: exit 1, nothing on stdout, one line on stderr matching PATTERN.
refused() {
	local name=$1 pat=$2
	shift 2
	timeout 20 "$CTL" "$@" >"$tmp/out" 2>"$tmp/err"
	local rc=$?
	if [ "$rc" -eq 1 ] && [ ! -s "$tmp/out" ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] &&
		grep -q -- "$pat" "$tmp/err"; then
		ok "$name ($(cat "$tmp/err"))"
	else
		not_ok "$name: rc=$rc stdout=$(cat "$tmp/out") stderr=$(cat "$tmp/err")"
	fi
}
refused "no server: refused without --offline" "no trellis-control serves" --state "$st" nodes list
refused "mistyped --state (missing) refused" "mistyped --state" --state "$tmp/stat" nodes list
check "... and not created" test ! -e "$tmp/stat"
mkdir "$tmp/empty"
refused "a directory without control.db refused" "not a trellis-control state directory" \
	--state "$tmp/empty" authkey create
check "... and no database created in it" test ! -e "$tmp/empty/control.db"
refused "argument mistakes are named before the server is looked for" "unknown option --frob" \
	--state "$tmp/stat" nodes list --frob
refused "serve --offline refused" "not serve" --state "$st" --offline serve

# 10. a running server: the admin commands go through its admin socket (root only, 0600),
# changes apply at once, and --offline is refused while it serves.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$CTL" --state "$st" serve --listen "127.0.0.1:$port" --stun-port 0 >"$tmp/serve4.log" 2>&1 &
srv=$!
wait_listening "$tmp/serve4.log" $srv
check "server up" grep -q "listening on" "$tmp/serve4.log"
check "admin socket is a socket of mode 0600" \
	test "$(stat -c %F:%a "$st/admin.sock")" = "socket:600"
ctl_live nodes list >"$tmp/live.txt"
check "nodes list through the socket" grep -q "^ID .*ONLINE" "$tmp/live.txt"
check "users create through the socket" ctl_live users create bob@example.com
ctl_live authkey create --user bob@example.com --reusable --preauthorized >"$tmp/lkey"
check "authkey create --user through the socket prints one key" \
	grep -qE '^trellis-auth-[0-9a-f]{12}-[0-9a-f]{32}$' "$tmp/lkey"
ctl_live authkey list --json >"$tmp/lkeys.json"
check "the key is listed with its owner, flags, default expiry (90 days) and uses" \
	python3 -c 'import json,sys,time
k=[k for k in json.load(open(sys.argv[1])) if sys.argv[2].startswith(k["id"]+"-")][0]
assert k["user"]=="bob@example.com" and k["reusable"] and k["preauthorized"] and k["uses"]==0
assert abs(k["expires"]-k["created"]-90*86400) < 5, k' "$tmp/lkeys.json" "$(cat "$tmp/lkey")"
check "the server logged the admin's act with its actor" \
	grep -q "admin socket:uid$(id -u): auth key trellis-auth-" "$tmp/serve4.log"
refused "--offline while a server runs refused" "drop --offline" --state "$st" --offline nodes list
# The socket's mode keeps others out; behind it the server checks the peer's uid itself:
# opened up by hand, the socket still refuses a user who is not root.
if command -v setpriv >/dev/null && [ "$(id -u)" -eq 0 ]; then
	chmod 0711 "$tmp"
	chmod 0755 "$st"
	chmod 0666 "$st/admin.sock"
	check "a peer that is not root: 403" test "$(setpriv --reuid 65534 --regid 65534 \
		--clear-groups curl -s -o /dev/null -w '%{http_code}' --unix-socket "$st/admin.sock" \
		http://localhost/admin/v1/nodes)" = 403
	chmod 0600 "$st/admin.sock"
	chmod 0700 "$st" "$tmp"
	check "root through the socket: 200" test "$(curl -s -o /dev/null -w '%{http_code}' \
		--unix-socket "$st/admin.sock" http://localhost/admin/v1/nodes)" = 200
fi
refused "an unknown node, from the server" "unknown node 4242" --state "$st" nodes approve 4242
refused "authkey create for an unknown user" 'unknown user "eve"' --state "$st" authkey create \
	--user eve

# 11. the HTTP admin API on the server's port, with an admin API key.
api() { curl -s -o "$tmp/api.out" -w '%{http_code}' "$@"; }
ctl_live apikey create --name ci >"$tmp/apikey"
check "apikey create prints one key" grep -qE '^trellis-api-[0-9a-f]{12}-[0-9a-f]{32}$' "$tmp/apikey"
AK=$(cat "$tmp/apikey")
url="http://127.0.0.1:$port/admin/v1"
check "no key: 401" test "$(api "$url/nodes")" = 401
# The key with its last digit changed (to 0, or to 1 when it is 0: never the key itself).
[[ ${AK: -1} == 0 ]] && WRONG=${AK%?}1 || WRONG=${AK%?}0
check "a wrong key: 401" test "$(api -H "Authorization: Bearer $WRONG" "$url/nodes")" = 401
check "GET nodes with the key: 200" test "$(api -H "Authorization: Bearer $AK" "$url/nodes")" = 200
check "... a JSON array" python3 -c 'import json,sys; assert isinstance(json.load(open(sys.argv[1])), list)' "$tmp/api.out"
check "POST authkeys with the key: 201" test "$(api -H "Authorization: Bearer $AK" \
	-d '{"user":"bob@example.com","expiration":"1h"}' "$url/authkeys")" = 201
check "... the answer holds the new key" grep -q '"key":"trellis-auth-' "$tmp/api.out"
check "a bad field is named: 400" test "$(api -H "Authorization: Bearer $AK" -d '{"colour":1}' \
	"$url/authkeys")" = 400
check "... with its name" grep -q 'unknown field \\"colour\\"' "$tmp/api.out"
check "API keys are not managed over HTTP: 403" \
	test "$(api -H "Authorization: Bearer $AK" "$url/apikeys")" = 403
ctl_live apikey list --json >"$tmp/apikeys.json"
check "apikey list shows the key, not its secret" \
	sh -c "grep -q '$(cut -d- -f1-3 "$tmp/apikey")' '$tmp/apikeys.json' && ! grep -q '$(cut -d- -f4 "$tmp/apikey")' '$tmp/apikeys.json'"
check "apikey revoke" ctl_live apikey revoke "$(cut -d- -f1-3 "$tmp/apikey")"
check "a revoked key: 401" test "$(api -H "Authorization: Bearer $AK" "$url/nodes")" = 401
kill -TERM $srv
wait $srv 2>/dev/null
check "the admin socket is gone with the server" test ! -e "$st/admin.sock"

# 12. sd_notify: under a Type=notify unit, READY=1 reaches $NOTIFY_SOCKET once the server
# listens (its port answers when the datagram arrives), STOPPING=1 when it stops.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
check "sd_notify READY=1 once listening, STOPPING=1 on SIGTERM" timeout 30 python3 - "$CTL" "$st" "$port" "$tmp/notify" <<'PY'
import os, signal, socket, subprocess, sys
ctl, st, port, path = sys.argv[1:]
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
n.bind(path)
n.settimeout(20)
env = dict(os.environ, NOTIFY_SOCKET=path)
p = subprocess.Popen([ctl, "--state", st, "serve", "--listen", "127.0.0.1:" + port,
                      "--stun-port", "0"], env=env, stderr=subprocess.DEVNULL)
try:
    msg = n.recv(4096).decode()
    assert msg.startswith("READY=1\n") and "STATUS=listening on 127.0.0.1:" + port in msg, msg
    socket.create_connection(("127.0.0.1", int(port)), timeout=5).close()
    p.send_signal(signal.SIGTERM)
    msg = n.recv(4096).decode()
    assert msg == "STOPPING=1", msg
    assert p.wait(20) == 0
finally:
    if p.poll() is None:
        p.kill()
        p.wait()
PY

# 13. serve --config FILE: the file's settings, flags over them, mistakes named by file:line.
p1=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
p2=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf '# trellis-control settings\nstate = %s\nlisten = 127.0.0.1:%s   # the public port\nstun-port = 0\nno-relay = yes\n' \
	"$st" "$p1" >"$tmp/control.conf"
# serve_until_listening LOG ARGS...: starts serve, waits for its "listening on" line, stops it.
serve_until_listening() {
	local log=$1 pid
	shift
	"$CTL" "$@" >"$log" 2>&1 &
	pid=$!
	wait_listening "$log" $pid
	kill -TERM $pid 2>/dev/null
	wait $pid 2>/dev/null
}
serve_until_listening "$tmp/serve5.log" serve --config "$tmp/control.conf"
check "serve --config: state, listen and no-relay from the file" \
	sh -c "grep -q 'listening on 127.0.0.1:$p1' '$tmp/serve5.log' && grep -q 'admin API on $st/' '$tmp/serve5.log' && ! grep -q 'relay at GET /relay' '$tmp/serve5.log'"
serve_until_listening "$tmp/serve6.log" --state "$st" serve --config "$tmp/control.conf" \
	--listen "127.0.0.1:$p2"
check "a flag overrides the file" grep -q "listening on 127.0.0.1:$p2" "$tmp/serve6.log"
printf 'listen = 127.0.0.1:1\nlisen = 127.0.0.1:2\n' >"$tmp/bad.conf"
refused "a config with an unknown key: file:line" "bad.conf:2: unknown key \"lisen\"" \
	--state "$st" serve --config "$tmp/bad.conf"
printf 'stun-port = 70000\n' >"$tmp/bad2.conf"
refused "a config with a bad value: file:line" "bad2.conf:1: stun-port: \"70000\" is not 0-65535" \
	--state "$st" serve --config "$tmp/bad2.conf"
refused "a config that does not exist" "cannot open $tmp/none.conf" --state "$st" serve \
	--config "$tmp/none.conf"
printf 'consumer-domains = gmail.com, ann@example.com\n' >"$tmp/bad3.conf"
refused "a config with a consumer domain that is an address" \
	'--consumer-domains: "ann@example.com" is not a domain name' --state "$st" serve \
	--config "$tmp/bad3.conf"
refused "serve --consumer-domains with an empty entry" '--consumer-domains: "" is not a domain' \
	--state "$st" serve --consumer-domains 'gmail.com,,outlook.com'

# 14. help: every noun answers --help (and help NOUN) on stdout with exit 0, whatever
# follows it; a bad argument is named.
for noun in authkey apikey tailnets users nodes relaymap; do
	check "$noun --help" sh -c "'$CTL' $noun --help | grep -q 'usage: trellis-control .*$noun'"
	check "help $noun" sh -c "'$CTL' help $noun | grep -q 'usage: trellis-control .*$noun'"
done
check "nodes delete 1 --help (nothing deleted, no server needed)" \
	sh -c "'$CTL' --state '$tmp/stat' nodes delete 1 --help | grep -q 'nodes approve|expire|delete'"
check "serve --help names --config" sh -c "'$CTL' serve --help | grep -q -- --config"
refused "unknown serve flag named" 'unknown argument "--lissen"' --state "$st" serve --lissen x
refused "missing value named" "option --tailnet needs a value" --state "$st" nodes list --tailnet
refused "a noun without its verb" "missing subcommand" --state "$st" apikey

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
