# shellcheck shell=bash
# Shared by the lab tests that need no namespaces (test_cli_keys, test_control_admin,
# test_audit): counting checks, and waiting for a server to say it listens. Source it after
# setting pass=0 fail=0.

# Debian's programs first: a version manager's shim in front of python3 (pyenv here)
# costs 2.5 s a call on an idle machine and up to 30 s at load 30, and the lab reads
# every status through python3. All the lab runs comes from Debian's packages.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

ok() { pass=$((pass + 1)); echo "ok - $1"; }
not_ok() { fail=$((fail + 1)); echo "FAIL - $1"; }

# check NAME COMMAND...: passes when COMMAND succeeds.
check()
{
	local name=$1
	shift
	if "$@"; then ok "$name"; else not_ok "$name"; fi
}

# wait_listening LOG PID: until the server logs that it listens, or exits. 30 s is a liveness
# bound for a busy machine (a start takes well under a second on a quiet one).
wait_listening()
{
	local n
	for ((n = 0; n < 300; n++)); do
		grep -q "listening on" "$1" && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}
