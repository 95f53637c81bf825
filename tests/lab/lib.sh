# shellcheck shell=bash
# Shared helpers for the network-namespace lab tests. Source it, then call lab_init.
#
# Every name a test creates (namespaces, WireGuard interfaces, UAPI sockets) carries a
# per-run suffix, so two runs never collide, and the EXIT/INT/TERM trap removes only what
# this run made: the PIDs it started and the namespaces it created.
#
# Environment:
#   TRELLIS_BUILD     meson build dir holding src/node/trellisd (default /work/main/build-check)
#   TRELLISD          explicit path to trellisd (overrides TRELLIS_BUILD)
#   TRELLIS_LAB_IMPL  "wggo" substitutes wireguard-go wherever a test asks for trellisd:
#                     validates the harness itself before trellisd exists
#   LAB_TIMEOUT       watchdog for the whole test, seconds (default 300)
#   LAB_VERBOSE=1     trace every lab command

# Debian's programs first: a version manager's shim in front of python3 (pyenv here)
# costs 2.5 s a call on an idle machine and up to 30 s at load 30, and the lab reads
# every status through python3. All the lab runs comes from Debian's packages.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

TRELLIS_BUILD=${TRELLIS_BUILD:-/work/main/build-check}
TRELLISD=${TRELLISD:-$TRELLIS_BUILD/src/node/trellisd}
WG_SOCK_DIR=/var/run/wireguard

LAB_PASS=0
LAB_FAIL=0
LAB_PIDS=()
LAB_NAMESPACES=()
LAB_IFACES=()
LAB_FINISHED=0
declare -A LAB_WG_PID=() LAB_WG_LOG=() LAB_WG_IMPL=() LAB_WG_NS=()

log() { printf '# %s\n' "$*"; }

lab_skip()
{
	printf 'SKIP: %s\n' "$*"
	LAB_FINISHED=1
	exit 77
}

# Exit 77 (skip) unless every tool named is installed.
lab_require()
{
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 || lab_skip "required tool '$t' is not installed"
	done
}

# lab_require_pkgs "TOOL..." PKG...: the Debian packages PKG when a TOOL is missing (a test's
# own dependencies, as scripts/install-deps.sh lists them: a clean clone installs them
# there, this covers a test run by hand), then lab_require TOOL....
lab_require_pkgs()
{
	local t tools=$1
	shift
	for t in $tools; do
		command -v "$t" >/dev/null 2>&1 && continue
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			"$@" >/dev/null 2>&1 || true
		break
	done
	# shellcheck disable=SC2086 # a list of names
	lab_require $tools
}

# The implementation a test gets when it asks for trellisd.
lab_trellisd_impl()
{
	if [[ ${TRELLIS_LAB_IMPL:-} == wggo ]]; then
		echo wggo
	else
		echo trellisd
	fi
}

# Skip unless trellisd is runnable (or substituted by wireguard-go).
lab_require_trellisd()
{
	[[ $(lab_trellisd_impl) == wggo ]] && return 0
	[[ -x $TRELLISD ]] || lab_skip "trellisd not built at $TRELLISD (set TRELLIS_LAB_IMPL=wggo to test the harness)"
}

# lab_binaries_pin: this run's own trellisd, trellis, trellis-control and trellis-relay.
# A build in the same directory relinks them (a new file each time) and a run lasts
# minutes: lab-full on 2 Dec read six tailnet addresses while the CLI was being relinked,
# got none, and failed seven pairs for it; a daemon started after a relink would also run
# another version than its peers. A hard link keeps the file as it was (a copy when the
# build is on another file system).
lab_binaries_pin()
{
	local var src dst

	TRELLIS_RELAY=${TRELLIS_RELAY:-$TRELLIS_BUILD/src/relay/trellis-relay}
	mkdir -p "$LAB_TMP/bin"
	for var in TRELLISD TRELLIS_CLI TRELLIS_CONTROL TRELLIS_RELAY; do
		src=${!var}
		[[ -f $src ]] || continue
		dst=$LAB_TMP/bin/${src##*/}
		[[ -e $dst ]] && continue
		ln "$src" "$dst" 2>/dev/null || cp -p "$src" "$dst" || continue
		printf -v "$var" '%s' "$dst"
	done
}

lab_init()
{
	[[ $(id -u) == 0 ]] || lab_skip "lab tests need root (network namespaces)"
	lab_require ip wg wireguard-go python3 ping timeout
	[[ ${LAB_VERBOSE:-0} == 1 ]] && set -x
	# Short hex id: namespaces and interface names stay unique per run and <= 15 chars.
	LAB_ID=$(printf '%x' $$)
	LAB_TMP=$(mktemp -d "/tmp/trellis-lab-$LAB_ID.XXXXXX")
	lab_binaries_pin
	# The test's own stdout/stderr: a trap may fire inside a redirected check.
	exec 7>&1 8>&2
	trap lab_cleanup EXIT
	trap 'echo "# interrupted" >&8; exit 130' INT
	trap 'echo "# terminated (watchdog timeout?)" >&8; exit 143' TERM
	trap 'exit 129' HUP
	trap 'exit 141' PIPE # caught, not ignored: children keep the default
	mkdir -p "$WG_SOCK_DIR"
	# Watchdog: a hung test still ends and cleans up, well before meson's own timeout.
	# Its sleep is killed with it (trap), so nothing of ours outlives the test.
	(
		trap 'kill "$sp" 2>/dev/null; exit 0' TERM
		sleep "${LAB_TIMEOUT:-300}" &
		sp=$!
		wait "$sp" && kill -TERM $$
	) </dev/null >/dev/null 2>&1 &
	LAB_WATCHDOG=$!
	log "lab run $LAB_ID, scratch $LAB_TMP, trellisd impl: $(lab_trellisd_impl)"
}

# shellcheck disable=SC2120 # arguments are optional
# lab_dump_logs [IFACE...]: a daemon's log tail, the first thing one needs when an
# assertion fails. Default: the daemons still running.
lab_dump_logs()
{
	local i list=("$@")
	if ((${#list[@]} == 0)); then
		for i in "${LAB_IFACES[@]}"; do
			kill -0 "${LAB_WG_PID[$i]}" 2>/dev/null && list+=("$i")
		done
	fi
	for i in "${list[@]}"; do
		[[ -s ${LAB_WG_LOG[$i]:-} ]] || continue
		echo "----- last lines of ${LAB_WG_IMPL[$i]} $i log (${LAB_WG_LOG[$i]}) -----"
		tail -n 25 "${LAB_WG_LOG[$i]}" | cut -c1-200 | sed 's/^/  | /'
	done
	# Other processes' logs (the control server), only when no daemon was named.
	(($#)) && return 0
	for i in "${LAB_EXTRA_LOGS[@]}"; do
		[[ -s ${i#*=} ]] || continue
		echo "----- last lines of ${i%%=*} log (${i#*=}) -----"
		tail -n 25 "${i#*=}" | cut -c1-200 | sed 's/^/  | /'
	done
}

# lab_pid_wait_exit PID SECS [SIGNAL]: wait up to SECS (whole seconds, polled every 0.1 s)
# for PID to exit; if it still runs then, send it SIGNAL (default KILL) and return 1. It
# does not reap PID: the caller's `wait` does, for the exit status it may want.
lab_pid_wait_exit()
{
	local pid=$1 n
	for ((n = 0; n < $2 * 10; n++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null || return 0
	kill "-${3:-KILL}" "$pid" 2>/dev/null
	return 1
}

lab_cleanup()
{
	local rc=$? pid ns i
	set +x
	exec 1>&7 2>&8
	trap - EXIT INT TERM HUP
	trap '' PIPE # a closed stdout must not stop the cleanup half-way
	[[ -n ${LAB_WATCHDOG:-} ]] && kill "$LAB_WATCHDOG" 2>/dev/null
	if ((LAB_FAIL > 0 || (rc != 0 && rc != 77))); then
		lab_dump_logs
	fi
	for pid in "${LAB_PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	for pid in "${LAB_PIDS[@]}"; do
		lab_pid_wait_exit "$pid" 3
	done
	wait 2>/dev/null
	for ns in "${LAB_NAMESPACES[@]}"; do
		ip netns del "$ns" 2>/dev/null
		# lab_resolver's resolv.conf (the names are ours alone: per-run suffix).
		[[ -d /etc/netns/$ns ]] && rm -rf "/etc/netns/$ns"
	done
	# A daemon killed hard leaves its socket; the names are ours alone (per-run suffix).
	for i in "${LAB_IFACES[@]}"; do
		rm -f "$WG_SOCK_DIR/$i.sock"
	done
	if [[ -n ${LAB_TMP:-} && -d $LAB_TMP ]]; then
		if ((LAB_FAIL > 0)) && [[ ${LAB_KEEP_LOGS:-0} == 1 ]]; then
			log "logs kept in $LAB_TMP"
		else
			rm -rf "$LAB_TMP"
		fi
	fi
	if ((!LAB_FINISHED && rc != 77)); then
		echo "test aborted (exit $rc)"
		echo "$LAB_PASS passed, $((LAB_FAIL + 1)) failed"
		exit 1
	fi
	exit "$rc"
}

# ---------------------------------------------------------------- assertions

pass() { LAB_PASS=$((LAB_PASS + 1)); printf 'ok %d - %s\n' $((LAB_PASS + LAB_FAIL)) "$1"; }
fail() { LAB_FAIL=$((LAB_FAIL + 1)); printf 'not ok %d - %s\n' $((LAB_PASS + LAB_FAIL)) "$1"; }

# check DESC CMD...: passes when CMD succeeds. Its output is appended to check.out, so a
# command that opens /dev/stderr itself cannot truncate what came before it.
check()
{
	local desc=$1
	shift
	: >"$LAB_TMP/check.out"
	if "$@" >>"$LAB_TMP/check.out" 2>&1; then
		pass "$desc"
	else
		fail "$desc"
		tail -n 15 "$LAB_TMP/check.out" | cut -c1-300 | sed 's/^/  | /'
	fi
}

# check_not DESC CMD...: passes when CMD fails.
check_not()
{
	local desc=$1
	shift
	: >"$LAB_TMP/check.out"
	if "$@" >>"$LAB_TMP/check.out" 2>&1; then
		fail "$desc"
		tail -n 15 "$LAB_TMP/check.out" | cut -c1-300 | sed 's/^/  | /'
	else
		pass "$desc"
	fi
}

# check_eq DESC EXPECTED ACTUAL
check_eq()
{
	if [[ $2 == "$3" ]]; then
		pass "$1"
	else
		fail "$1"
		printf '  | expected: %s\n  | actual:   %s\n' "$2" "$3"
	fi
}

# check_num DESC A OP B: numeric test "A OP B" with OP in -gt -ge -lt -le -eq.
check_num()
{
	local desc=$1 a=$2 op=$3 b=$4
	if [[ $a =~ ^[0-9]+$ && $b =~ ^[0-9]+$ ]] && test "$a" "$op" "$b"; then
		pass "$desc"
	else
		fail "$desc"
		printf '  | %s %s %s is false\n' "$a" "$op" "$b"
	fi
}

lab_finish()
{
	LAB_FINISHED=1
	echo "$LAB_PASS passed, $LAB_FAIL failed"
	((LAB_FAIL == 0)) || exit 1
	exit 0
}

# ---------------------------------------------------------------- topology

# lab_ns SHORT: create namespace "tl<id>SHORT", loopback up. Use nsx SHORT to run in it.
lab_ns()
{
	local ns="tl$LAB_ID$1"
	ip netns add "$ns" || { fail "create namespace $ns"; exit 1; }
	LAB_NAMESPACES+=("$ns")
	ip -n "$ns" link set lo up
	# No DAD: lab v6 addresses are usable at once and nothing waits on timers.
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
}

ns_name() { echo "tl$LAB_ID$1"; }
nsx() { local ns="tl$LAB_ID$1"; shift; ip netns exec "$ns" "$@"; }

# lab_veth NS1 IF1 NS2 IF2: a veth pair between two namespaces, both ends up.
lab_veth()
{
	local n1 n2
	n1=$(ns_name "$1")
	n2=$(ns_name "$3")
	ip -n "$n1" link add "$2" type veth peer name "$4" netns "$n2" || return 1
	ip -n "$n1" link set "$2" up
	ip -n "$n2" link set "$4" up
}

# lab_two_hosts: the common start: namespaces a and b joined by a veth (eth0 each side),
# a 192.0.2.1/24 and b 192.0.2.2/24, and a WireGuard key pair for each.
lab_two_hosts()
{
	lab_ns a
	lab_ns b
	lab_veth a eth0 b eth0
	lab_addr a eth0 192.0.2.1/24
	lab_addr b eth0 192.0.2.2/24
	lab_key a
	lab_key b
}

# lab_addr NS IFACE ADDR/PLEN...: add addresses (v6 without DAD).
lab_addr()
{
	local ns=$1 dev=$2 a
	shift 2
	for a in "$@"; do
		if [[ $a == *:* ]]; then
			ip -n "$(ns_name "$ns")" addr add "$a" dev "$dev" nodad
		else
			ip -n "$(ns_name "$ns")" addr add "$a" dev "$dev"
		fi
	done
}

# lab_resolver SHORT ADDR: the namespace's resolv.conf names only ADDR. `ip netns exec`
# mounts /etc/netns/NS/resolv.conf over /etc/resolv.conf for what it starts, so it holds
# for processes started after this; lab_cleanup removes it with the namespace.
lab_resolver()
{
	mkdir -p "/etc/netns/$(ns_name "$1")"
	echo "nameserver $2" >"/etc/netns/$(ns_name "$1")/resolv.conf"
}

lab_forwarding()
{
	nsx "$1" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
}

# ---------------------------------------------------------------- port mapping gateways

# lab_miniupnpd_ruleset NS [OPTION...]: the nftables ruleset of a lab gateway in namespace
# NS, WAN eth0 and LAN eth1, made for miniupnpd's nft backend: table inet filter with the
# chains it adds its rules to (miniupnpd, prerouting_miniupnpd, postrouting_miniupnpd).
# forward's policy is drop, so the WAN reaches the LAN only as an answer or through
# miniupnpd's chain; the LAN reaches the WAN, its IPv4 (198.18.0.0/15) masqueraded.
# OPTIONs, each a change to that:
#   drop-lan-udp   a UDP flow the LAN starts is dropped, and counted: only answers and
#                  mapped flows pass, so a datagram that gets in came through a mapping
#   drop-lan-udp6  the same for IPv6 alone, counted on its own (before drop-lan-udp's rule)
#   udp-random     UDP goes out from a random port per flow (a hard NAT)
#   stun-from=A,B  the router takes nothing unsolicited for itself but the answers of the
#                  STUN servers A and B (from ports 3478, 3479) to miniupnpd's probes
lab_miniupnpd_ruleset()
{
	local ns=$1 opt stun drop="" drop6="" random="" input=""
	shift
	for opt in "$@"; do
		case $opt in
		drop-lan-udp) drop='iifname "eth1" oifname "eth0" meta l4proto udp counter drop' ;;
		drop-lan-udp6)
			drop6='iifname "eth1" oifname "eth0" meta nfproto ipv6 meta l4proto udp counter drop'
			;;
		udp-random)
			random='oifname "eth0" ip saddr 198.18.0.0/15 meta l4proto udp masquerade fully-random'
			;;
		stun-from=*)
			stun=${opt#stun-from=}
			input="chain input {
		type filter hook input priority filter;
		iifname \"eth0\" ip saddr { ${stun//,/, } } udp sport { 3478, 3479 } accept
		iifname \"eth0\" ct state new drop
	}"
			;;
		*)
			log "lab_miniupnpd_ruleset: unknown option $opt" >&2
			return 2
			;;
		esac
	done
	nsx "$ns" nft -f - <<EOF
table inet filter {
	chain forward {
		type filter hook forward priority 0; policy drop;
		ct state established,related accept
		$drop6
		$drop
		iifname "eth1" oifname "eth0" accept
		iifname "eth0" oifname "eth1" jump miniupnpd
	}
	chain miniupnpd {}
	chain prerouting {
		type nat hook prerouting priority -100; policy accept;
		jump prerouting_miniupnpd
	}
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		jump postrouting_miniupnpd
		$random
		oifname "eth0" ip saddr 198.18.0.0/15 masquerade
	}
	chain prerouting_miniupnpd {}
	chain postrouting_miniupnpd {}
	$input
}
EOF
}

# lab_miniupnpd_start NS LINE...: Debian's miniupnpd in namespace NS, in the foreground,
# with the config LINEs and what every lab gateway shares: its own lease file and pid file
# (the defaults are shared across namespaces) and the table and chains of the nft backend
# that lab_miniupnpd_ruleset made. Its files are $LAB_TMP/miniupnpd-NS.*, so that gateways
# do not share them either; its log is MINIUPNPD_LOG, its PID MINIUPNPD_PID.
lab_miniupnpd_start()
{
	local ns=$1 f=$LAB_TMP/miniupnpd-$1
	shift
	MINIUPNPD_LOG=$f.log
	{
		printf '%s\n' "$@"
		printf '%s\n' "lease_file=$f.leases" upnp_table_name=filter \
			upnp_nat_table_name=filter upnp_forward_chain=miniupnpd \
			upnp_nat_chain=prerouting_miniupnpd \
			upnp_nat_postrouting_chain=postrouting_miniupnpd
	} >"$f.conf"
	ip netns exec "$(ns_name "$ns")" miniupnpd -f "$f.conf" -P "$f.pid" -d \
		>"$MINIUPNPD_LOG" 2>&1 &
	MINIUPNPD_PID=$!
	LAB_PIDS+=("$MINIUPNPD_PID")
	LAB_EXTRA_LOGS+=("miniupnpd-$ns=$MINIUPNPD_LOG")
}

# lab_miniupnpd_stun NS STUN MIN_LIFETIME UUID_BYTE: lab_miniupnpd_start for an IPv4 NAT
# gateway (IPv6 off) granting NAT-PMP, PCP and UPnP-IGD mappings of ports 1024 and up to
# its LAN (198.18.0.0/15), to the host that asks for itself only (secure_mode), for
# MIN_LIFETIME s at the least. Its external address is the one the STUN server at STUN
# (port 3478; lab_stun5780) reports; UUID_BYTE (two hex digits) tells gateways apart.
lab_miniupnpd_stun()
{
	lab_miniupnpd_start "$1" ext_ifname=eth0 listening_ip=eth1 ext_perform_stun=yes \
		"ext_stun_host=$2" ext_stun_port=3478 enable_natpmp=yes enable_upnp=yes \
		ipv6_disable=yes secure_mode=yes system_uptime=yes "min_lifetime=$3" \
		max_lifetime=86400 "uuid=6a1e2f7c-0d3b-4c55-9a7e-5b0c1d2e3f$4" \
		"allow 1024-65535 198.18.0.0/15 1024-65535" "deny 0-65535 0.0.0.0/0 0-65535"
}

# lab_stun5780 SHORT N M: coturn on the public host SHORT (made here) at 192.0.2.N and .M,
# ports 3478 and 3479 on each: STUN that answers RFC 5780's change requests (another
# address, another port). miniupnpd takes a documentation address as its external one
# only from STUN, and only when all four of its probes are answered
# (/work/shared/lab/README.md), which the relays' STUN does not. Start it before
# miniupnpd: miniupnpd exits if STUN fails. Asserts that it listens.
lab_stun5780()
{
	local short=$1
	lab_public_host "$short" "$2"
	lab_addr "$short" eth0 "192.0.2.$3/24"
	ip netns exec "$(ns_name "$short")" turnserver -S -z -n --no-cli --no-tls --no-dtls \
		-L "192.0.2.$2" -L "192.0.2.$3" --listening-port 3478 \
		--log-file "$LAB_TMP/turnserver.log" --simple-log --pidfile "$LAB_TMP/turnserver.pid" \
		--userdb "$LAB_TMP/turndb.sqlite" >"$LAB_TMP/turnserver.out" 2>&1 &
	LAB_PIDS+=($!)
	LAB_EXTRA_LOGS+=("turnserver=$LAB_TMP/turnserver.out")
	check "coturn answers STUN on 192.0.2.$2 and .$3, ports 3478 and 3479" \
		wait_for 10 lab_stun5780_ready "$short" "192.0.2.$3"
}
# lab_stun5780_ready SHORT ADDR: coturn listens on ADDR:3479 (the alternate port of the
# other address).
lab_stun5780_ready() { nsx "$1" ss -Hlun | grep -q "$2:3479"; }

# lab_udp_arrives TO BIND FROM DST PORT: a datagram sent from namespace FROM to DST:PORT
# reaches a receiver bound to BIND:PORT in namespace TO (IPv6 when BIND has a colon). The
# receiver is bound before the sender starts and listens until 10 s after the sender's
# five datagrams are out (a python start can take seconds on a busy machine): what has not
# arrived by then is not coming.
lab_udp_arrives()
{
	local ready=$LAB_TMP/udp-ready out=$LAB_TMP/udp-recv pid rc=0 fam=AF_INET
	[[ $2 == *:* ]] && fam=AF_INET6
	rm -f "$ready" "$out"
	ip netns exec "$(ns_name "$1")" python3 -c '
import socket, sys
s = socket.socket(getattr(socket, sys.argv[4]), socket.SOCK_DGRAM)
s.bind((sys.argv[3], int(sys.argv[1]))); s.settimeout(120)
open(sys.argv[2], "w").close()
print(s.recvfrom(100)[0].decode(), flush=True)' "$5" "$ready" "$2" "$fam" >"$out" 2>&1 &
	pid=$!
	LAB_PIDS+=("$pid")
	if wait_for 30 test -e "$ready"; then
		nsx "$3" python3 -c '
import socket, sys, time
s = socket.socket(getattr(socket, sys.argv[3]), socket.SOCK_DGRAM)
for _ in range(5):
    s.sendto(b"knock", (sys.argv[1], int(sys.argv[2]))); time.sleep(0.2)' "$4" "$5" "$fam"
		wait_for 10 grep -q knock "$out" || rc=1
	else
		rc=1
	fi
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	lab_forget "$pid"
	return $rc
}

# ---------------------------------------------------------------- WireGuard

# lab_iface TAG: a WireGuard interface name unique to this run (also the UAPI socket name).
lab_iface() { echo "tw$LAB_ID$1"; }

# lab_key NAME: writes $LAB_TMP/NAME.key and NAME.pub; prints nothing.
lab_key()
{
	(umask 077 && wg genkey >"$LAB_TMP/$1.key")
	wg pubkey <"$LAB_TMP/$1.key" >"$LAB_TMP/$1.pub"
}
key_file() { echo "$LAB_TMP/$1.key"; }
pub_of() { cat "$LAB_TMP/$1.pub"; }

# lab_wg_start NS IMPL IFACE [ARGS...]: start a userspace WireGuard (IMPL = trellisd | wggo)
# in the foreground inside NS and wait (bounded) for its UAPI socket and TUN device. ARGS go
# to trellisd only (wireguard-go has no options for them).
# Must run in the test's main shell (not in $(...)) so the PID is tracked for cleanup.
lab_wg_start()
{
	local short=$1 impl=$2 iface=$3 ns pid n log
	shift 3
	ns=$(ns_name "$short")
	[[ $impl == trellisd ]] && impl=$(lab_trellisd_impl)
	log="$LAB_TMP/$iface.$impl.log"
	rm -f "$WG_SOCK_DIR/$iface.sock"
	case $impl in
	wggo)
		WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 LOG_LEVEL=${WGGO_LOG_LEVEL:-verbose} \
			ip netns exec "$ns" wireguard-go -f "$iface" >"$log" 2>&1 &
		;;
	trellisd)
		ip netns exec "$ns" "$TRELLISD" --wg "$iface" "$@" >"$log" 2>&1 &
		;;
	*)
		fail "unknown WireGuard implementation '$impl'"
		return 1
		;;
	esac
	pid=$!
	LAB_PIDS+=("$pid")
	LAB_IFACES+=("$iface")
	LAB_WG_PID[$iface]=$pid
	LAB_WG_LOG[$iface]=$log
	LAB_WG_IMPL[$iface]=$impl
	LAB_WG_NS[$iface]=$short
	for ((n = 0; n < 100; n++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			fail "$impl $iface exited during startup"
			tail -n 20 "$log" | sed 's/^/  | /'
			return 1
		fi
		if [[ -S $WG_SOCK_DIR/$iface.sock ]] && ip -n "$ns" link show "$iface" >/dev/null 2>&1 &&
			wg show "$iface" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
	done
	fail "$impl $iface: no UAPI socket/interface after 10 s"
	tail -n 20 "$log" | sed 's/^/  | /'
	return 1
}

# lab_forget PID: drop a reaped PID from the cleanup list (its number may be reused).
lab_forget()
{
	local p keep=()
	for p in "${LAB_PIDS[@]}"; do
		[[ $p == "$1" ]] || keep+=("$p")
	done
	LAB_PIDS=("${keep[@]}")
}

# iperf_server_wait: reap the one-shot iperf3 server (bounded: killed after 5 s).
iperf_server_wait()
{
	local pid=$LAST_IPERF_SERVER
	lab_pid_wait_exit "$pid" 5 TERM
	wait "$pid" 2>/dev/null
	lab_forget "$pid"
}

lab_wg_alive() { kill -0 "${LAB_WG_PID[$1]}" 2>/dev/null; }

# lab_wg_stop IFACE: SIGTERM, bounded wait; asserts a clean exit (status 0 or 143 for
# wireguard-go, 0 for trellisd: ASan/UBSan reports make it non-zero), and that the daemon
# removed its socket and interface.
lab_wg_stop()
{
	local iface=$1 pid=${LAB_WG_PID[$1]} impl=${LAB_WG_IMPL[$1]} rc ns
	ns=$(ns_name "${LAB_WG_NS[$1]}")
	if ! kill -0 "$pid" 2>/dev/null; then
		fail "$impl $iface still running before stop"
		return 1
	fi
	kill -TERM "$pid"
	if ! lab_pid_wait_exit "$pid" 5; then
		fail "$impl $iface exits within 5 s of SIGTERM"
		wait "$pid" 2>/dev/null
		lab_forget "$pid"
		return 1
	fi
	wait "$pid" 2>/dev/null
	rc=$?
	lab_forget "$pid"
	if [[ $impl == trellisd ]]; then
		check_eq "$impl $iface exit status 0 on SIGTERM (no sanitizer report)" 0 "$rc"
		if grep -qE 'AddressSanitizer|runtime error:|LeakSanitizer' "${LAB_WG_LOG[$iface]}"; then
			fail "$impl $iface log has a sanitizer report"
			grep -m5 -E 'AddressSanitizer|runtime error:|LeakSanitizer' "${LAB_WG_LOG[$iface]}" | sed 's/^/  | /'
		fi
		check_not "$impl $iface removed its UAPI socket" test -e "$WG_SOCK_DIR/$iface.sock"
		check_not "$impl $iface removed its TUN device" ip -n "$ns" link show "$iface"
	fi
	return 0
}

# lab_wg_up NS IFACE ADDR/PLEN...: MTU 1420 (as wg-quick), addresses, link up.
lab_wg_up()
{
	local short=$1 iface=$2
	shift 2
	ip -n "$(ns_name "$short")" link set "$iface" mtu 1420
	lab_addr "$short" "$iface" "$@"
	ip -n "$(ns_name "$short")" link set "$iface" up
}

# wg_get IFACE FIELD PEERPUB: one field from `wg show IFACE FIELD` for one peer.
wg_get()
{
	wg show "$1" "$2" | awk -v k="$3" '$1 == k { $1 = ""; sub(/^ /, ""); print }'
}

# rx/tx bytes of a peer as seen by IFACE.
wg_rx() { wg show "$1" transfer | awk -v k="$2" '$1 == k { print $2 }'; }
wg_tx() { wg show "$1" transfer | awk -v k="$2" '$1 == k { print $3 }'; }

# ---------------------------------------------------------------- traffic

# ping_until NS DST [SECONDS]: one ping a time until one answers (handshake time included).
ping_until()
{
	local ns=$1 dst=$2 secs=${3:-10} end
	end=$((SECONDS + secs))
	while ((SECONDS < end)); do
		nsx "$ns" ping -n -q -c 1 -W 1 "$dst" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

# ping_all NS DST [COUNT] [ARGS...]: COUNT pings, all must answer.
# Not `ping -c COUNT` alone: after its last request ping waits only the longer of twice the
# largest RTT so far and the interval (200 ms here), so on a loaded machine an answer that is
# merely late counts as lost. With a deadline (-w) ping waits until COUNT answers came
# (sending more meanwhile if one is missing); each of requests 1..COUNT must be answered.
ping_all()
{
	local ns=$1 dst=$2 count=${3:-5}
	shift 3 2>/dev/null || shift $#
	local out
	out=$(nsx "$ns" ping -n -c "$count" -i 0.2 -w $((count / 5 + 10)) "$@" "$dst" 2>&1)
	if ping_answered "$count" <<<"$out"; then
		printf '%s: %s\n' "$ns" "$(grep -E 'transmitted|^rtt' <<<"$out")" >&2
		return 0
	fi
	printf '%s: %s\n' "$ns" "$out" >&2
	lab_drops_dump >&2
	return 1
}

# ping_answered COUNT: whether the ping output on stdin holds an answer to each of the echo
# requests 1..COUNT (duplicates aside).
ping_answered()
{
	awk -v n="$1" '/ bytes from .*icmp_seq=/ && !/DUP!/ && match($0, /icmp_seq=[0-9]+/) {
		seen[substr($0, RSTART + 9, RLENGTH - 9) + 0] = 1
	}
	END {
		for (i = 1; i <= n; i++)
			if (!(i in seen))
				exit 1
	}'
}

# lab_drops_dump: where the kernels of this lab's namespaces dropped packets (links' rx/tx
# drops and errors, and the nonzero drop, error and discard counters of nstat), so a lost
# packet that no daemon counted can be placed. Full dump in $LAB_TMP/drops.N.
lab_drops_dump()
{
	local ns f
	LAB_DROPS_N=$((${LAB_DROPS_N:-0} + 1))
	f="$LAB_TMP/drops.$LAB_DROPS_N"
	for ns in "${LAB_NAMESPACES[@]}"; do
		{
			echo "== $ns"
			ip -n "$ns" -s -s link show
			ip netns exec "$ns" nstat -asz 2>/dev/null |
				awk '$2 != 0 && $1 ~ /Drop|Err|Discard|Fail|Overflow|TooBig|Prune|Timeout/'
		} >>"$f" 2>&1
		ip netns exec "$ns" nstat -asz 2>/dev/null | awk -v ns="$ns" '
			$2 != 0 && $1 ~ /Drop|Err|Discard|Overflow|TooBig/ { s = s " " $1 "=" $2 }
			END { if (s != "") print ns " drops:" s }'
	done
	echo "kernel drop counters of the lab's namespaces: $f"
}

# wait_listen NS PORT: bounded wait for a TCP listener (30 s: a liveness bound for a loaded
# machine, where starting a sanitizer build or a python takes seconds).
wait_listen()
{
	local n
	for ((n = 0; n < 300; n++)); do
		nsx "$1" ss -Hltn "sport = :$2" 2>/dev/null | grep -q . && return 0
		sleep 0.1
	done
	return 1
}

# nsx_timeout SECS NS CMD...: nsx with a time bound.
nsx_timeout() { local t=$1 ns="tl$LAB_ID$2"; shift 2; timeout "$t" ip netns exec "$ns" "$@"; }

# iperf_server NS BIND PORT: a one-shot iperf3 server in NS, tracked for cleanup.
iperf_server()
{
	# ip netns exec directly, not the nsx function: $! must be iperf3 itself (a function
	# would run in a subshell whose death leaves iperf3 behind).
	ip netns exec "$(ns_name "$1")" iperf3 -s -1 -J -B "$2" -p "$3" \
		>"$LAB_TMP/iperf-server-$3.json" 2>&1 &
	LAB_PIDS+=($!)
	LAST_IPERF_SERVER=$!
	wait_listen "$1" "$3"
}

# json_get FILE EXPR: evaluate a python expression on the parsed JSON `j`.
json_get()
{
	python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# flowdb DB SQL INTS...: the first value of SQL on the control server's database DB, with the
# INTS as its parameters. A flow batch's signed bytes (docs/audit.md) are read with
# bstart(batch) and bend(batch) (start_ns and end_ns, at offsets 52 and 60) and
# bdropped(batch) (flows_dropped, at 68).
flowdb()
{
	python3 -c 'import sqlite3, struct, sys
c = sqlite3.connect(sys.argv[1])
c.create_function("bstart", 1, lambda b: struct.unpack(">q", b[52:60])[0])
c.create_function("bend", 1, lambda b: struct.unpack(">q", b[60:68])[0])
c.create_function("bdropped", 1, lambda b: struct.unpack(">I", b[68:72])[0])
print(c.execute(sys.argv[2], [int(a) for a in sys.argv[3:]]).fetchone()[0])' "$@"
}

# ---------------------------------------------------------------- control plane
#
# A tailnet in the lab: trellis-control on a "public" address, nodes (trellisd in
# control mode, driven by the trellis CLI) on the same lab internet. Names per node:
# state $LAB_TMP/node-NAME, socket $LAB_TMP/node-NAME.sock, TUN "tn<id>NAME".
#
#   TRELLIS_CONTROL   path to trellis-control (default $TRELLIS_BUILD/src/control/trellis-control)
#   TRELLIS_CLI       path to trellis (default $TRELLIS_BUILD/src/cli/trellis)

TRELLIS_CONTROL=${TRELLIS_CONTROL:-$TRELLIS_BUILD/src/control/trellis-control}
TRELLIS_CLI=${TRELLIS_CLI:-$TRELLIS_BUILD/src/cli/trellis}
LAB_CONTROL_PID=
LAB_CONTROL_NS=
LAB_CONTROL_LISTEN=
LAB_CONTROL_URL=
LAB_CONTROL_STATE=
LAB_CONTROL_RUN=0
declare -A LAB_NODE_PID=() LAB_NODE_NS=() LAB_NODE_PORT=()
# Extra logs dumped on failure, "label=path".
LAB_EXTRA_LOGS=()

# Skip unless trellis-control, trellisd and trellis are all built (no stand-ins here).
lab_require_control_plane()
{
	local b
	for b in "$TRELLIS_CONTROL" "$TRELLISD" "$TRELLIS_CLI"; do
		[[ -x $b ]] || lab_skip "$(basename "$b") not built at $b"
	done
	lab_require ss
}

# lab_internet: namespace "inet" with a bridge; lab_public_host attaches hosts to it.
# One L2 segment: 192.0.2.0/24 and 2001:db8:1::/64, no route out of the lab.
lab_internet()
{
	lab_ns inet
	ip -n "$(ns_name inet)" link add br0 type bridge || return 1
	ip -n "$(ns_name inet)" link set br0 up
}

# lab_public_host SHORT N: namespace SHORT with eth0 = 192.0.2.N/24, 2001:db8:1::N/64.
lab_public_host()
{
	local short=$1 n=$2 inet
	inet=$(ns_name inet)
	lab_ns "$short"
	ip -n "$inet" link add "pt$short" type veth peer name eth0 netns "$(ns_name "$short")" ||
		return 1
	ip -n "$inet" link set "pt$short" master br0 up
	ip -n "$(ns_name "$short")" link set eth0 up
	lab_addr "$short" eth0 "192.0.2.$n/24" "2001:db8:1::$(printf '%x' "$n")/64"
}

# lab_control_start SHORT ADDR PORT: trellis-control serve in namespace SHORT, state in
# $LAB_TMP/control (kept across restarts), bounded wait for its listener.
lab_control_start()
{
	local short=$1 addr=$2 port=$3 n log
	LAB_CONTROL_NS=$short
	LAB_CONTROL_LISTEN="$addr:$port"
	# LAB_CONTROL_SCHEME=https with LAB_CONTROL_SERVE_ARGS="--tls-cert F --tls-key F" serves TLS.
	local scheme=${LAB_CONTROL_SCHEME:-http}
	LAB_CONTROL_URL="$scheme://$addr:$port"
	[[ $addr == *:* ]] && LAB_CONTROL_LISTEN="[$addr]:$port" LAB_CONTROL_URL="$scheme://[$addr]:$port"
	LAB_CONTROL_STATE=$LAB_TMP/control
	LAB_CONTROL_RUN=$((LAB_CONTROL_RUN + 1))
	log="$LAB_TMP/control.$LAB_CONTROL_RUN.log"
	LAB_EXTRA_LOGS+=("trellis-control (run $LAB_CONTROL_RUN)=$log")
	ip netns exec "$(ns_name "$short")" "$TRELLIS_CONTROL" --state "$LAB_CONTROL_STATE" \
		serve --listen "$LAB_CONTROL_LISTEN" ${LAB_CONTROL_SERVE_ARGS:-} >"$log" 2>&1 &
	LAB_CONTROL_PID=$!
	LAB_PIDS+=("$LAB_CONTROL_PID")
	for ((n = 0; n < 100; n++)); do
		if ! kill -0 "$LAB_CONTROL_PID" 2>/dev/null; then
			fail "trellis-control exited during startup"
			tail -n 20 "$log" | sed 's/^/  | /'
			return 1
		fi
		nsx "$short" ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && return 0
		sleep 0.1
	done
	fail "trellis-control: no listener on $LAB_CONTROL_LISTEN after 10 s"
	return 1
}

# lab_control_stop [SIGNAL]: stop the server (default TERM; KILL for a crash), bounded.
lab_control_stop()
{
	local sig=${1:-TERM} pid=$LAB_CONTROL_PID
	[[ -n $pid ]] || return 0
	kill "-$sig" "$pid" 2>/dev/null
	lab_pid_wait_exit "$pid" 5
	wait "$pid" 2>/dev/null
	lab_forget "$pid"
	LAB_CONTROL_PID=
}

# ctl ARGS...: the admin CLI on the lab server's state (bounded).
ctl() { timeout 20 "$TRELLIS_CONTROL" --state "$LAB_TMP/control" "$@"; }

# node_id NAME [TAILNET]: the server's id of the node with hostname NAME.
node_id()
{
	ctl nodes list ${2:+--tailnet "$2"} --json |
		python3 -c 'import json,sys; print([n["id"] for n in json.load(sys.stdin) if n["name"]==sys.argv[1]][0])' "$1"
}
# node_listed NAME [TAILNET]: the server lists a node with hostname NAME.
node_listed() { node_id "$@" >/dev/null 2>&1; }

# lab_authkey [ARGS...]: prints a new auth key (authkey create ARGS).
lab_authkey() { ctl authkey create "$@"; }

lab_node_sock() { echo "$LAB_TMP/node-$1.sock"; }
lab_node_tun() { echo "tn$LAB_ID$1"; }

# lab_node_start NAME SHORT [PORT]: trellisd in control mode in namespace SHORT, bounded
# wait for its local API socket. State persists across restarts of the same NAME.
# LAB_NODE_ARGS: more trellisd options (word-split), e.g. "--metrics-listen 127.0.0.1:9101".
# Must run in the test's main shell (PID tracking).
lab_node_start()
{
	local name=$1 short=$2 port=${3:-${LAB_NODE_PORT[$1]:-41641}} sock tun log pid n
	sock=$(lab_node_sock "$name")
	tun=$(lab_node_tun "$name")
	log="$LAB_TMP/node-$name.log"
	echo "----- start $(date +%T.%N)" >>"$log"
	# shellcheck disable=SC2086 # LAB_NODE_ARGS is a list of words
	ip netns exec "$(ns_name "$short")" "$TRELLISD" --state "$LAB_TMP/node-$name" \
		--socket "$sock" --tun "$tun" --port "$port" ${LAB_NODE_ARGS:-} >>"$log" 2>&1 &
	pid=$!
	LAB_PIDS+=("$pid")
	LAB_NODE_PID[$name]=$pid
	LAB_NODE_NS[$name]=$short
	LAB_NODE_PORT[$name]=$port
	# lab_dump_logs knows the daemons by interface name.
	[[ -n ${LAB_WG_LOG[$tun]:-} ]] || LAB_IFACES+=("$tun")
	LAB_WG_PID[$tun]=$pid
	LAB_WG_LOG[$tun]=$log
	LAB_WG_IMPL[$tun]=trellisd
	LAB_WG_NS[$tun]=$short
	for ((n = 0; n < 100; n++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			fail "trellisd $name exited during startup"
			tail -n 20 "$log" | sed 's/^/  | /'
			return 1
		fi
		[[ -S $sock ]] && return 0
		sleep 0.1
	done
	fail "trellisd $name: no local API socket after 10 s"
	return 1
}

# tr_node NAME ARGS...: the trellis CLI against node NAME's daemon (bounded).
tr_node() { local name=$1; shift; timeout 30 "$TRELLIS_CLI" --socket "$(lab_node_sock "$name")" "$@"; }

# lab_node_up NAME KEY: trellis up with hostname NAME against the lab server.
lab_node_up()
{
	tr_node "$1" up --login-server "$LAB_CONTROL_URL" --auth-key "$2" --hostname "$1"
}

# lab_node_join NAME SHORT KEY: start the daemon and bring it up; asserts both.
lab_node_join()
{
	lab_node_start "$1" "$2" || return 1
	check "node $1 joins (trellis up)" lab_node_up "$1" "$3"
}

# lab_tailnet_up NAME...: the usual small tailnet: the lab internet, the control server on
# host "ctl" at 192.0.2.1:8080 (LAB_CONTROL_SERVE_ARGS apply), a public host per NAME at
# 192.0.2.11 and up, each joined with one reusable auth key, left in LAB_KEY for later
# joins. Ends the test if the control server does not start.
lab_tailnet_up()
{
	local n i=11
	lab_internet
	lab_public_host ctl 1
	for n; do
		lab_public_host "$n" $((i++))
	done
	lab_control_start ctl 192.0.2.1 8080 || lab_finish
	LAB_KEY=$(lab_authkey --reusable)
	for n; do
		lab_node_join "$n" "$n" "$LAB_KEY"
	done
}

# lab_node_stop NAME [SIGNAL]: stop a node daemon (default TERM), bounded. With TERM it
# asserts a clean exit: status 0, no sanitizer report, socket and interface removed.
lab_node_stop()
{
	local name=$1 sig=${2:-TERM} pid=${LAB_NODE_PID[$1]} rc tun
	tun=$(lab_node_tun "$name")
	kill "-$sig" "$pid" 2>/dev/null
	lab_pid_wait_exit "$pid" 5 || fail "trellisd $name exits within 5 s of SIG$sig"
	wait "$pid" 2>/dev/null
	rc=$?
	lab_forget "$pid"
	[[ $sig == TERM ]] || return 0
	check_eq "trellisd $name exit status 0 on SIGTERM" 0 "$rc"
	if grep -qE 'AddressSanitizer|runtime error:|LeakSanitizer' "$LAB_TMP/node-$name.log"; then
		fail "trellisd $name log has a sanitizer report"
		grep -m5 -E 'AddressSanitizer|runtime error:|LeakSanitizer' "$LAB_TMP/node-$name.log" |
			sed 's/^/  | /'
	fi
	check_not "trellisd $name removed its socket" test -e "$(lab_node_sock "$name")"
	check_not "trellisd $name removed its TUN device" \
		ip -n "$(ns_name "${LAB_NODE_NS[$name]}")" link show "$tun"
}

# node_ip NAME 4|6: the node's tailnet address (`trellis ip -4/-6`).
node_ip() { tr_node "$1" ip "-$2" 2>/dev/null | head -n 1; }

# node_status NAME: `trellis status --json` into $LAB_TMP/status-NAME.json (and its name).
node_status()
{
	local f="$LAB_TMP/status-$1.json"
	tr_node "$1" status --json >"$f" 2>"$f.err" || return 1
	echo "$f"
}

# flows_last_icmp A B [SINCE]: the collector's last ICMP flow between nodes A and B (by
# name; seen since SINCE, `flows --since`) as "NAME tx_p tx_b rx_p rx_b" for each end, by name.
flows_last_icmp()
{
	ctl flows ${3:+--since "$3"} --json | python3 -c '
import json, sys
last = None
for line in sys.stdin:
    f = json.loads(line)
    if f["proto"] == 1 and f["b"] and {f["a"]["name"], f["b"]["name"]} == set(sys.argv[1:3]):
        if last is None or f["a"]["first_ns"] > last["a"]["first_ns"]:
            last = f
if last:
    print(" ".join("%s %d %d %d %d" % (e["name"], e["tx_packets"], e["tx_bytes"], e["rx_packets"],
                   e["rx_bytes"]) for e in sorted((last["a"], last["b"]), key=lambda e: e["name"])))' "$1" "$2"
}

# status_eval NAME EXPR: a python expression on node NAME's status (j); empty on error.
status_eval()
{
	local f
	f=$(node_status "$1") || return 1
	json_get "$f" "$2" 2>/dev/null
}

# peer_names NAME: the hostnames of NAME's peers, sorted, space-separated.
peer_names() { status_eval "$1" "' '.join(sorted(p['hostname'] for p in (j.get('peers') or [])))"; }
# peers_online NAME: hostnames of the peers shown online.
peers_online()
{
	status_eval "$1" "' '.join(sorted(p['hostname'] for p in (j.get('peers') or []) if p.get('online')))"
}

# wait_for SECS CMD...: poll CMD every 0.2 s until it succeeds (bounded).
wait_for()
{
	local secs=$1 end
	shift
	end=$((SECONDS + secs))
	while :; do
		"$@" >/dev/null 2>&1 && return 0
		((SECONDS >= end)) && return 1
		sleep 0.2
	done
}

# peers_are NAME "h1 h2 ...": NAME's peer hostnames are exactly those (sorted words).
peers_are() { [[ $(peer_names "$1") == "$2" ]]; }
# peers_online_are NAME "h1 h2": exactly those peers are online.
peers_online_are() { [[ $(peers_online "$1") == "$2" ]]; }
# node_connected NAME: the node has a control session with a netmap (backend_state running).
# While it has none, its peers' online flags are those of its last netmap, however old.
node_connected() { [[ $(status_eval "$1" "j.get('backend_state')") == running ]]; }

# tun_rx NAME: packets the daemon delivered to node NAME's TUN (kernel RX counter).
tun_rx()
{
	ip -n "$(ns_name "${LAB_NODE_NS[$1]}")" -s -j link show "$(lab_node_tun "$1")" 2>/dev/null |
		python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])'
}

# ping_none SHORT DST [COUNT]: COUNT pings, none may answer.
ping_none()
{
	local count=${3:-3}
	local out
	out=$(nsx "$1" ping -n -q -c "$count" -i 0.2 -W 1 "$2" 2>&1)
	printf '%s: %s\n' "$1" "$out" >&2
	! grep -qE ' [1-9][0-9]* received' <<<"$out"
}
