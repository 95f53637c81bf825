#!/usr/bin/env bash
# Auth keys, key expiry and tenancy:
#   - a one-off key registers one node; a second `trellis up` with it fails with a clear
#     error and a non-zero exit, and registers nothing
#   - a node in tailnet X never sees a node of tailnet Y: not in status, and its packets
#     to Y's addresses never arrive
#   - an expired node key (trellis-control nodes expire) drops the node from its peers,
#     and its traffic stops; the node logs in again through a waiting registration (a
#     random code in its URL, approved as `nodes approve reg:CODE`) and comes back as the
#     same node (id, addresses) with a new node key that its peers get
#   - an ephemeral node is removed a short while (the tailnet's ephemeral timeout, 5 s)
#     after it goes away, from the server and from its peers; the audit log names the
#     server as the one who deleted it
#
#   lab internet 192.0.2.0/24: ctl .1:8080; default tailnet a .11 b .12 c .13;
#   tailnet "iso": x .21 (one-off key), y .22 (tries the same key); tailnet "eph": e .31
#   (ephemeral key), f .32
LAB_TIMEOUT=${LAB_TIMEOUT:-540} # the watchdog: 240 s seen under load
source "$(dirname "$0")/lib.sh"
lab_init
lab_require_control_plane

lab_internet
lab_public_host ctl 1
lab_public_host a 11
lab_public_host b 12
lab_public_host c 13
lab_public_host x 21
lab_public_host y 22
lab_public_host e 31
lab_public_host f 32
lab_control_start ctl 192.0.2.1 8080 || lab_finish

KEY=$(lab_authkey --reusable)
# The one-off key's tailnet is made early: what is tested below is the key's single use.
check "tailnets create iso" ctl tailnets create iso
ONCE=$(lab_authkey --tailnet iso)
# The key from a file (a), from standard input (b) and as an argument (c): the first two keep
# it out of `ps`.
printf '%s\n' "$KEY" >"$LAB_TMP/authkey"
chmod 600 "$LAB_TMP/authkey"
lab_node_join a a "file:$LAB_TMP/authkey"
up_stdin() { lab_node_up "$1" - <<<"  $KEY  "; }
lab_node_start b b
check "node b joins with the auth key on standard input" up_stdin b
lab_node_start c c
: >"$LAB_TMP/empty"
for bad in "file:$LAB_TMP/nonexistent" "file:$LAB_TMP/empty" "file:$LAB_TMP"; do
	out=$(lab_node_up c "$bad" 2>&1)
	rc=$?
	check_num "up --auth-key $bad fails" "$rc" -eq 1
	check "... saying where (${out//$'\n'/ })" grep -q -- "--auth-key: .*$LAB_TMP" <<<"$out"
done
check "node c joins with the key as an argument" lab_node_up c "$KEY"
declare -A IP4=() IP6=()
for n in a b c; do
	IP4[$n]=$(node_ip "$n" 4)
	IP6[$n]=$(node_ip "$n" 6)
done
check "a sees b and c" wait_for 20 peers_are a "b c"
check "a -> c over IPv4" ping_until a "${IP4[c]}" 10

# ---- one-off key, in tailnet "iso"
lab_node_join x x "$ONCE"
lab_node_start y y
tr_node y up --login-server "$LAB_CONTROL_URL" --auth-key "$ONCE" --hostname y \
	>"$LAB_TMP/reuse.out" 2>&1
rc=$?
log "second use of the one-off key: exit $rc: $(tr '\n' ' ' <"$LAB_TMP/reuse.out")"
check_num "second trellis up with a used one-off key exits non-zero" "$rc" -ne 0
check "... and says why (the key)" grep -qiE 'key' "$LAB_TMP/reuse.out"
check "... in one clear line on stderr, not a crash" \
	test "$(grep -c . "$LAB_TMP/reuse.out")" -le 3 -a "$rc" -lt 128
check_not "y was not registered" node_listed y iso
check_not "y has no tailnet address" bash -c "[[ -n \$('$TRELLIS_CLI' --socket '$(lab_node_sock y)' ip -4 2>/dev/null) ]]"
check "the daemon of y still answers after the refusal" tr_node y status --json
# A key works the moment `authkey create` prints it, also in a tailnet made just before
# (scripts do `trellis up --auth-key "$(trellis-control authkey create)"`).
check "tailnets create fresh" ctl tailnets create fresh
FRESH=$(lab_authkey --tailnet fresh)
check "a key of a just-created tailnet is usable at once (y joins tailnet fresh)" lab_node_up y "$FRESH"
lab_node_stop y
check_eq "authkey list shows the one-off key used" used \
	"$(ctl authkey list --tailnet iso --json | python3 -c 'import json,sys; print(" ".join(k.get("status","?") for k in json.load(sys.stdin)))' 2>/dev/null)"

# ---- isolation: x (tailnet iso) and a, b, c (default tailnet)
IP4[x]=$(node_ip x 4)
IP6[x]=$(node_ip x 6)
xkey=$(status_eval x "j['self']['node_key']")
check_eq "x has no peers (alone in tailnet iso)" "" "$(peer_names x)"
for n in a b c; do
	check "$n does not list x" bash -c "! grep -q '\"$xkey\"' '$(node_status "$n")'"
	check_eq "$n: peers are exactly its tailnet's" "$(echo a b c | tr ' ' '\n' | grep -vx "$n" | tr '\n' ' ' | sed 's/ $//')" "$(peer_names "$n")"
done
# Addresses are allocated per tailnet, so x may share an address with a default-tailnet
# node; test every address of the other tailnet that x does not itself hold.
tested=0
for d in a b c; do
	[[ ${IP4[$d]} == "${IP4[x]}" ]] && continue
	rx=$(tun_rx "$d")
	check "x (iso) -> $d (default) ${IP4[$d]} gets no answer" ping_none x "${IP4[$d]}" 3
	check "x (iso) -> $d (default) ${IP6[$d]} gets no answer" ping_none x "${IP6[$d]}" 2
	check_eq "no packet from x arrived at $d's TUN" "$rx" "$(tun_rx "$d")"
	tested=$((tested + 1))
done
check_num "isolation was tested against at least one address" "$tested" -ge 1
rx=$(tun_rx x)
for s in a b c; do
	[[ ${IP4[$s]} == "${IP4[x]}" ]] && continue
	# The default tailnet has no node at x's address unless it is s itself (skipped).
	owner=$(for d in a b c; do [[ ${IP4[$d]} == "${IP4[x]}" ]] && echo "$d"; done)
	[[ -n $owner ]] && continue
	check "$s (default) -> x (iso) gets no answer" ping_none "$s" "${IP4[x]}" 2
done
check_eq "no packet from the default tailnet arrived at x's TUN" "$rx" "$(tun_rx x)"

# ---- expiry: c's key expires at the server
cid=$(node_id c "")
ckey0=$(status_eval c "j['self']['node_key']")
check "nodes expire c (id $cid)" ctl nodes expire "$cid"
check "c vanishes from a's status" wait_for 20 peers_are a "b"
check "c vanishes from b's status" wait_for 20 peers_are b "a"
sleep 0.5
rx_a=$(tun_rx a) rx_c=$(tun_rx c)
check "a -> c (expired) gets no answer" ping_none a "${IP4[c]}" 3
check "c (expired) -> a gets no answer" ping_none c "${IP4[a]}" 3
check "c (expired) -> b over IPv6 gets no answer" ping_none c "${IP6[b]}" 2
check_eq "no packet from c arrived at a's TUN" "$rx_a" "$(tun_rx a)"
check_eq "no packet from a arrived at c's TUN" "$rx_c" "$(tun_rx c)"
check "a <-> b unaffected" ping_all a "${IP4[b]}" 3
check "expired c is still listed by the server (expired, not deleted)" node_listed c

# ---- re-login: c waits under a random code (its record unchanged), then comes back as itself
c_url() { status_eval c "j.get('auth_url', '')"; }
check "c shows a login URL" wait_for 20 bash -c "[[ \$('$TRELLIS_CLI' --socket '$(lab_node_sock c)' status --json | python3 -c 'import json,sys; print(json.load(sys.stdin).get(\"auth_url\", \"\"))') == http* ]]"
C_URL=$(c_url)
check "... under a random code ($C_URL)" grep -qE '/register/[0-9a-f]{16}$' <<<"$C_URL"
check_eq "while it waits, the server still holds c's old key" "$ckey0" \
	"$(ctl nodes list --json | python3 -c 'import json,sys; print([n["node_key"] for n in json.load(sys.stdin) if n["id"]==int(sys.argv[1])][0])' "$cid")"
check "a -> c (waiting) still gets no answer" ping_none a "${IP4[c]}" 2
check "nodes approve reg:${C_URL##*/}" ctl nodes approve "reg:${C_URL##*/}"
check "c runs again" wait_for 20 node_connected c
check_eq "c kept its node id" "$cid" "$(node_id c "")"
check_eq "c kept its IPv4 address" "${IP4[c]}" "$(node_ip c 4)"
check_eq "c kept its IPv6 address" "${IP6[c]}" "$(node_ip c 6)"
ckey1=$(status_eval c "j['self']['node_key']")
check "c has a new node key" test -n "$ckey1" -a "$ckey1" != "$ckey0"
check "a has c's new node key" wait_for 10 bash -c "[[ \$('$TRELLIS_CLI' --socket '$(lab_node_sock a)' status --json | python3 -c 'import json,sys; print([p[\"node_key\"] for p in json.load(sys.stdin)[\"peers\"] if p[\"hostname\"] == \"c\"][0])' 2>/dev/null) == '$ckey1' ]]"
check "a -> c after the re-login" ping_until a "${IP4[c]}" 15
check "c -> b over IPv6 after the re-login" ping_until c "${IP6[b]}" 15

# ---- ephemeral nodes, tailnet "eph" with a 5 s ephemeral timeout
check "tailnets create eph --ephemeral-timeout 5s" ctl tailnets create eph --ephemeral-timeout 5s
EKEY=$(lab_authkey --tailnet eph --ephemeral)
FKEY=$(lab_authkey --tailnet eph)
lab_node_join e e "$EKEY"
lab_node_join f f "$FKEY"
check "f sees e" wait_for 20 peers_are f "e"
check "f -> e over IPv4" ping_until f "$(node_ip e 4)" 10
check "e is listed, ephemeral" bash -c "'$TRELLIS_CONTROL' --state '$LAB_TMP/control' nodes list --tailnet eph --json | python3 -c 'import json,sys; assert [n for n in json.load(sys.stdin) if n[\"name\"]==\"e\" and n[\"ephemeral\"]]'"
sleep 6 # longer than the ephemeral timeout: an online node must stay
check "e still listed after 6 s online" node_listed e eph
check "f still sees e" peers_are f "e"
t0=$SECONDS
lab_node_stop e KILL
check "e (ephemeral, gone) is removed from the server within 20 s" \
	wait_for 20 bash -c "! '$TRELLIS_CONTROL' --state '$LAB_TMP/control' nodes list --tailnet eph --json | grep -q '\"name\": *\"e\"'"
log "ephemeral node removed after ~$((SECONDS - t0)) s"
check "the server's delete of e is in the audit log (actor server, e's record before)" \
	bash -c "ctl_json() { '$TRELLIS_CONTROL' --state '$LAB_TMP/control' \"\$@\"; }; ctl_json audit log --json | python3 -c '
import json, sys
es = [json.loads(l) for l in sys.stdin if l.strip()]
m = [e for e in es if e[\"action\"] == \"node.expire-ephemeral\"]
assert len(m) == 1 and m[0][\"actor\"] == \"server\" and m[0][\"target\"].endswith(\" e\"), m
assert m[0][\"before\"][\"name\"] == \"e\", m'"
check "audit verify after the server's own write" ctl audit verify
check "e vanishes from f's status" wait_for 20 peers_are f ""
check "f's tailnet and the default tailnet unaffected: a -> b" ping_all a "${IP4[b]}" 2

# ---- rotation: tailnet "short" with 8 s node keys; its nodes rotate and keep working
lab_public_host r1 41
lab_public_host r2 42
check "tailnets create short --key-expiry 8s" ctl tailnets create short --key-expiry 8s
RKEY=$(lab_authkey --tailnet short --reusable)
lab_node_join r1 r1 "$RKEY"
lab_node_join r2 r2 "$RKEY"
check "r2 sees r1" wait_for 20 peers_are r2 "r1"
r1id=$(node_id r1 short)
r1key=$(status_eval r1 "j['self']['node_key']")
check "r1 -> r2 over IPv4" ping_until r1 "$(node_ip r2 4)" 10
sleep 12 # past the 8 s lifetime of the first key
check "r1's node key was rotated" test "$(status_eval r1 "j['self']['node_key']")" != "$r1key"
check_eq "r1 kept its node id" "$r1id" "$(node_id r1 short)"
check "r2 still sees r1 past the first key's expiry" peers_are r2 "r1"
# Keys rotate every ~6 s here: a ping may meet a rotation whose new key the peer has not
# learned yet, which costs one WireGuard handshake retry (REKEY_TIMEOUT, 5 s).
check "r1 -> r2 over IPv4 past the expiry" ping_until r1 "$(node_ip r2 4)" 12
check "r2 -> r1 over IPv6 past the expiry" ping_until r2 "$(node_ip r1 6)" 12
lab_node_stop r1
lab_node_stop r2

for n in a b c x f; do
	lab_node_stop "$n"
done
lab_control_stop TERM
lab_finish
