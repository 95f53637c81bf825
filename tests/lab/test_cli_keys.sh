#!/bin/bash
# SPDX-License-Identifier: MIT
#
# trellis genkey / pubkey / genpsk against wg(8). Needs no namespaces or root.
# Run by meson with TRELLIS_BUILD=<build dir>; the CLI is $TRELLIS_BUILD/src/cli/trellis.
set -u

TRELLIS="${TRELLIS_BUILD:?set TRELLIS_BUILD to the build directory}/src/cli/trellis"
KEY_RE='^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$'
pass=0
fail=0
skip=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

source "$(dirname "$0")/standalone.sh"
skipped() { skip=$((skip + 1)); echo "skip - $1"; }

# A key line: exactly 44 base64 characters and a newline, nothing else.
is_key_file() {
	[ "$(wc -c <"$1")" -eq 45 ] && [ "$(wc -l <"$1")" -eq 1 ] && grep -Eq "$KEY_RE" "$1"
}

if [ ! -x "$TRELLIS" ]; then
	echo "FAIL - $TRELLIS is not built"
	echo "0 passed, 1 failed"
	exit 1
fi
have_wg=0
command -v wg >/dev/null 2>&1 && have_wg=1

# 1. genkey output format, and keys differ.
t_genkey_format() {
	"$TRELLIS" genkey >"$tmp/k1" 2>"$tmp/err" && "$TRELLIS" genkey >"$tmp/k2" 2>>"$tmp/err" &&
		is_key_file "$tmp/k1" && is_key_file "$tmp/k2" && ! cmp -s "$tmp/k1" "$tmp/k2"
}
check "genkey prints 44 base64 characters and a newline" t_genkey_format

# 2. genpsk output format.
t_genpsk_format() {
	"$TRELLIS" genpsk >"$tmp/p1" 2>/dev/null && "$TRELLIS" genpsk >"$tmp/p2" 2>/dev/null &&
		is_key_file "$tmp/p1" && is_key_file "$tmp/p2" && ! cmp -s "$tmp/p1" "$tmp/p2"
}
check "genpsk prints 44 base64 characters and a newline" t_genpsk_format

# 3. A published key pair (RFC 7748 section 6.1, Alice), base64.
t_known_pair() {
	local out
	out=$(echo dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo= | "$TRELLIS" pubkey) &&
		[ "$out" = hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo= ]
}
check "pubkey of the RFC 7748 section 6.1 key" t_known_pair

# 4. trellis genkey | trellis pubkey == wg pubkey, for several keys.
t_pubkey_vs_wg() {
	local i key mine theirs
	for i in 1 2 3 4 5 6 7 8; do
		key=$("$TRELLIS" genkey) || return 1
		mine=$(printf '%s\n' "$key" | "$TRELLIS" pubkey) || return 1
		theirs=$(printf '%s\n' "$key" | wg pubkey) || return 1
		[ "$mine" = "$theirs" ] || { echo "  key $key: trellis $mine, wg $theirs"; return 1; }
	done
}
# 5. wg genkey | trellis pubkey == wg pubkey.
t_wg_genkey() {
	local i key mine theirs
	for i in 1 2 3 4 5 6 7 8; do
		key=$(wg genkey) || return 1
		mine=$(printf '%s\n' "$key" | "$TRELLIS" pubkey) || return 1
		theirs=$(printf '%s\n' "$key" | wg pubkey) || return 1
		[ "$mine" = "$theirs" ] || { echo "  key $key: trellis $mine, wg $theirs"; return 1; }
	done
}
if [ $have_wg = 1 ]; then
	check "trellis genkey | trellis pubkey equals wg pubkey" t_pubkey_vs_wg
	check "wg genkey | trellis pubkey equals wg pubkey" t_wg_genkey
else
	skipped "trellis pubkey vs wg pubkey (wg not installed)"
	skipped "wg genkey | trellis pubkey (wg not installed)"
fi

# 6. Input without a trailing newline, and with surrounding whitespace.
t_whitespace() {
	local a b
	a=$(printf 'dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=' | "$TRELLIS" pubkey) &&
		b=$(printf '  dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\r\n\n' | "$TRELLIS" pubkey) &&
		[ "$a" = hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo= ] && [ "$a" = "$b" ]
}
check "pubkey accepts input with or without whitespace around it" t_whitespace

# 7. Bad input: non-zero exit, a message on stderr, nothing on stdout.
t_bad_input() {
	local input rc
	local -a inputs=(
		''
		'hello'
		'dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo'
		'dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCp='
		'dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=x'
		'dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LC=='
		'dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo= dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo='
		'dwdt-nMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo='
		"$(head -c 100000 /dev/zero | tr '\0' 'A')"
	)
	for input in "${inputs[@]}"; do
		printf '%s\n' "$input" | "$TRELLIS" pubkey >"$tmp/out" 2>"$tmp/err"
		rc=$?
		if [ $rc -ne 1 ] || [ -s "$tmp/out" ] || ! grep -q 'trellis: pubkey: ' "$tmp/err"; then
			echo "  input '${input:0:60}': exit $rc, stdout '$(cat "$tmp/out")'"
			return 1
		fi
	done
}
check "pubkey rejects bad keys with a message and exit 1" t_bad_input

# 8. Usage: help succeeds, no command or an unknown one fails; --socket is accepted.
t_usage() {
	"$TRELLIS" --help | grep -q '^Usage: trellis' &&
		"$TRELLIS" help | grep -q 'genkey' &&
		! "$TRELLIS" >/dev/null 2>&1 &&
		! "$TRELLIS" no-such-command >/dev/null 2>"$tmp/err" &&
		grep -q "unknown command" "$tmp/err" &&
		! "$TRELLIS" --no-such-option genkey >/dev/null 2>&1 &&
		! "$TRELLIS" genkey extra >/dev/null 2>&1 &&
		"$TRELLIS" --socket "$tmp/trellisd.sock" genkey | grep -Eq "$KEY_RE" &&
		"$TRELLIS" --socket="$tmp/trellisd.sock" genpsk | grep -Eq "$KEY_RE"
}
check "usage, help and global options" t_usage

# 8b. Every command's --help (and `help COMMAND`) gives its usage, flags and an example;
# a bad flag is named in the error, with exit 1.
t_command_help() {
	local cmds c
	cmds=$("$TRELLIS" --help | awk '/^Commands:/ { on = 1; next } on && $1 != "help" { print $1 }')
	[ -n "$cmds" ] || return 1
	for c in $cmds; do
		"$TRELLIS" "$c" --help >"$tmp/h" 2>&1 || { echo "  $c --help: exit $?"; return 1; }
		head -n 1 "$tmp/h" | grep -q "^Usage: trellis $c" || { echo "  $c --help: no usage line"; return 1; }
		grep -q '^Example: ' "$tmp/h" || { echo "  $c --help: no example"; return 1; }
		"$TRELLIS" help "$c" | cmp -s - "$tmp/h" || { echo "  help $c differs from $c --help"; return 1; }
		"$TRELLIS" "$c" --no-such-flag >/dev/null 2>"$tmp/e" </dev/null
		[ $? -eq 1 ] || { echo "  $c --no-such-flag: not exit 1"; return 1; }
		grep -q -- "'--no-such-flag'" "$tmp/e" || { echo "  $c: the bad flag is not named"; return 1; }
	done
	"$TRELLIS" up --login-server 2>&1 | grep -q -- '--login-server needs a value'
}
check "every command's --help has usage and an example; bad flags are named" t_command_help

# 9. Like wg, a warning when the key goes to a file others can read.
t_world_warning() {
	(umask 022 && "$TRELLIS" genkey >"$tmp/open.key" 2>"$tmp/err1") &&
		grep -q 'world-accessible' "$tmp/err1" &&
		(umask 077 && "$TRELLIS" genkey >"$tmp/closed.key" 2>"$tmp/err2") &&
		[ ! -s "$tmp/err2" ] && is_key_file "$tmp/open.key" && is_key_file "$tmp/closed.key"
}
check "genkey warns about world-accessible output files" t_world_warning

if [ $skip -gt 0 ]; then
	echo "$pass passed, $fail failed, $skip skipped"
else
	echo "$pass passed, $fail failed"
fi
[ $fail -eq 0 ]
