#!/usr/bin/env bash
# Policy compile benchmark (issue 12's control target): bench/policy_compile.c generates a
# tailnet and a policy, and times parsing, compiling (who sees whom) and building every
# node's packet filter, as CPU time of the process. Writes a "## Policy compile" section
# into docs/benchmarks.md (replacing an earlier one, leaving the rest of the file alone).
#
# Environment:
#   BENCH_CASES  "NODES:RULES ..." (default "1000:100 10000:1000 10000:10000")
#   BENCH_OUT    output file (default <repo>/docs/benchmarks.md; "-" = stdout only)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
CASES=${BENCH_CASES:-1000:100 10000:1000 10000:10000}
OUT=${BENCH_OUT:-$REPO/docs/benchmarks.md}

die() { echo "policy.sh: $*" >&2; exit 1; }
TMP=$(mktemp -d /tmp/trellis-policybench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# The project's own policy code, built here with release flags (no second build system).
gcc -O2 -DNDEBUG -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Wno-missing-field-initializers \
	-I "$REPO/src" -o "$TMP/policy_compile" "$REPO/bench/policy_compile.c" \
	"$REPO"/src/policy/*.c "$REPO/src/proto/netmap.c" || die "build failed"

{
	echo "## Policy compile"
	echo
	echo "\`bench/policy.sh\` ($(date -u +%Y-%m-%d), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)):"
	echo "a tailnet of NODES nodes (three quarters users' devices in 100 groups of 2,000"
	echo "users, a quarter tagged with one of 200 tags) and a policy of RULES rules (group ->"
	echo "tag on three ports, every fifth tag -> tag, one autogroup:self rule). CPU time of"
	echo "the process, so other work on the machine does not count."
	echo
	echo "| nodes | rules | policy | parse | compile | all filters | peers/node | filter srcs/node | max RSS |"
	echo "|---|---|---|---|---|---|---|---|---|"
	for c in $CASES; do
		"$TMP/policy_compile" -n "${c%%:*}" -r "${c##*:}" >"$TMP/r" || die "run $c failed"
		awk '{v[$1]=$2} END {printf "| %d | %d | %.0f KiB | %.1f ms | %.1f ms | %.1f ms | %.1f | %.1f | %.1f MiB |\n",
			v["nodes"], v["rules"], v["policy_bytes"]/1024, v["parse_ms"], v["compile_ms"],
			v["filters_ms"], v["peers_avg"], v["filter_srcs_avg"], v["maxrss_mib"]}' "$TMP/r"
	done
} >"$TMP/section.md"
cat "$TMP/section.md"
[[ $OUT == - ]] || python3 "$REPO/bench/md_section.py" "$OUT" "$TMP/section.md" "Policy compile"
