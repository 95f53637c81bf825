#!/usr/bin/env bash
# What a policy change costs trellis-control's event loop (issue 12's control target), without
# sockets: bench/mapper_policy.c against this tree and against a reference revision, built
# alike with release flags and run in turns at each N, as CPU time of the process. Writes a
# "## Policy change in the mapper" section into docs/benchmarks.md (replacing an earlier one).
#
# Environment:
#   BENCH_NODES    node counts (default "1000 10000")
#   BENCH_REF      the reference revision (default main)
#   BENCH_ROUNDS   runs of each per N, taking turns (default 3); the table has the medians
#   BENCH_OUT      output file (default <repo>/docs/benchmarks.md; "-" = stdout only)
#   BENCH_CLASS    1: only the join under a per-class rule (mapper_policy -C), printed as a
#                  "###" sub-section to stdout (paste it under the section, dated)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
NODES=${BENCH_NODES:-1000 10000}
REF=${BENCH_REF:-main}
ROUNDS=${BENCH_ROUNDS:-3}
OUT=${BENCH_OUT:-$REPO/docs/benchmarks.md}
CLASS=${BENCH_CLASS:-0}
FLAGS=()
[[ $CLASS == 1 ]] && FLAGS=(-C)

die() { echo "mapper_policy.sh: $*" >&2; exit 1; }
TMP=$(mktemp -d /tmp/trellis-mapperbench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# The mapper and what it links, from each tree, with release flags (no second build system).
build()
{
	local src=$1 out=$2
	# shellcheck disable=SC2046 # pkg-config output is a word list
	gcc -O2 -DNDEBUG -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Wno-missing-field-initializers \
		-fno-strict-aliasing -I "$src/src" -o "$out" "$REPO/bench/mapper_policy.c" \
		"$src"/src/control/mapper.c "$src"/src/control/mapzc.c "$src"/src/control/model.c "$src"/src/policy/*.c \
		"$src"/src/base/*.c "$src"/src/crypto/*.c "$src"/src/proto/*.c \
		$(pkg-config --cflags --libs jansson libcrypto libzstd) -lpthread || die "build of $src failed"
}
mkdir -p "$TMP/ref"
git -C "$REPO" archive "$REF" src | tar -x -C "$TMP/ref" || die "cannot export $REF"
build "$REPO" "$TMP/ours"
build "$TMP/ref" "$TMP/before"

declare -A R=()
for n in $NODES; do
	for ((k = 0; k < ROUNDS; k++)); do
		for who in before ours; do
			echo "=== $who N=$n round $k" >&2
			"$TMP/$who" -n "$n" -c 3 "${FLAGS[@]}" >"$TMP/r" || die "$who N=$n failed"
			while read -r key v; do
				R[$who.$n.$key]="${R[$who.$n.$key]:-} $v"
			done <"$TMP/r"
		done
	done
done

med() { tr ' ' '\n' <<<"${R[$1]:-}" | grep . | sort -g | awk '{a[NR]=$1} END {print NR ? a[int((NR+1)/2)] : "-"}'; }
row()
{
	local label=$1 key=$2 n who
	printf '| %s |' "$label"
	for n in $NODES; do for who in before ours; do printf ' %s |' "$(med "$who.$n.$key")"; done; done
	printf '\n'
}
header()
{
	printf '| |'
	for n in $NODES; do printf ' N = %s, before | N = %s, ours |' "$n" "$n"; done
	printf '\n|---|'
	for n in $NODES; do printf -- '---:|---:|'; done
	printf '\n'
}
class_rows()
{
	row "class: a server joins (upsert + recompile + flush + its map), ms" class_join_ms
	row "class: deltas sent" class_join_deltas
	row "class: KiB of deltas sent" class_join_kib
	row "class: it leaves (remove + recompile + flush), ms" class_leave_ms
	row "class: KiB of deltas sent" class_leave_kib
}
if [[ $CLASS == 1 ]]; then
	echo "### Join under a per-class rule ($(date -u '+%Y-%m-%d %H:%M UTC'))"
	echo
	echo "\`BENCH_CLASS=1 bench/mapper_policy.sh\` ($(nproc) cores, load"
	echo "$(cut -d' ' -f1-3 /proc/loadavg) at the end; reference \`$REF\` = $(git -C "$REPO" rev-parse --short "$REF"),"
	echo "ours = $(git -C "$REPO" rev-parse --short HEAD)): N nodes, 80 % devices of group:eng, 10 %"
	echo "tag:server, 10 % tag:db, under group:eng -> tag:server:22 and group:eng -> tag:db:5432"
	echo "(tcp), every node with a map stream (ours: offering may_open patches). A server joins and"
	echo "gets its map, then leaves: every eng device is told (its may_open is a list by id, not"
	echo "\`*\`). CPU time of the process (median of $ROUNDS runs, each the median of 3 joins),"
	echo "reference and ours in turns; KiB: every delta encoded, summed."
	echo
	header
	class_rows
	exit 0
fi
{
	echo "## Policy change in the mapper"
	echo
	echo "\`bench/mapper_policy.sh\` ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load"
	echo "$(cut -d' ' -f1-3 /proc/loadavg) at the end; reference \`$REF\` = $(git -C "$REPO" rev-parse --short "$REF"),"
	echo "ours = $(git -C "$REPO" rev-parse --short HEAD)): the mapper alone, no sockets, N nodes of one"
	echo "tailnet all with a map stream, under the 1,000-rule policy \`make bench-policy-scale\`"
	echo "generates. *every*: rule 0 (every node's filter) moves to another port; *one*: one /28 ->"
	echo "/28 rule's ports move (16 nodes' filters); *join*: a node joins (no other filter"
	echo "names it) and gets its map; *star*, last, in a fresh mapper: the allow-all policy (\`*\` ->"
	echo "\`*:*\`) set over N nodes, then 100 nodes' full maps, where ours carries may_open (every"
	echo "peer, 4 protocols; computed once for the one class)."
	echo "*set* is \`mapper_policy_set\` (recompile and"
	echo "mark), *flush* takes and encodes every delta. CPU time of the process (median of $ROUNDS"
	echo "runs, each the median of 3 changes), reference and ours in turns."
	echo
	header
	row "first policy (compile, no streams), ms" first_set_ms
	row "every: set, ms" every_set_ms
	row "every: flush, ms" every_flush_ms
	row "every: deltas sent" every_deltas
	row "every: filters built" every_filters_built
	row "one: set, ms" one_set_ms
	row "one: flush, ms" one_flush_ms
	row "one: deltas sent" one_deltas
	row "one: filters built" one_filters_built
	row "join: upsert + recompile + flush + its map, ms" join_ms
	row "join: deltas sent" join_deltas
	row "join: filters built" join_filters_built
	row "star (allow-all policy, fresh mapper): set, ms" star_set_ms
	row "star: one full map (mean of 100), ms" star_map_ms
	row "star: KiB per full map" star_map_kib
	row "star: KiB of it may_open" star_may_open_kib
	class_rows
	echo
	echo "Filters built is 0 for a reference from before the counter."
} >"$TMP/section.md"
cat "$TMP/section.md"
[[ $OUT == - ]] || python3 "$REPO/bench/md_section.py" "$OUT" "$TMP/section.md" "Policy change in the mapper"
