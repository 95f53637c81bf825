#!/usr/bin/env bash
# The packet filter's own cost per packet (bench/filter_cost.c), this tree's src/filter and,
# in the same run, another revision's (FILTER_COST_BASE), in rounds with the order
# alternating. Prints a markdown table: per case and build, the lowest over the rounds of
# the median batch (ns/packet: the cost undisturbed; on a loaded machine with SMT siblings a
# neighbour on the other hyperthread slows a whole round by up to half), and the median over
# the rounds of the mean (which counts preemption too; see filter_cost.c). bench/filter.sh
# runs it too.
#
# Environment:
#   FILTER_COST_BASE    a git revision to compare with ("" = this tree only; default "")
#   FILTER_COST_ROUNDS  rounds (default 3)
#   CC                  compiler (default cc); flags: -O2, as a release build's hot path
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BASE=${FILTER_COST_BASE:-}
ROUNDS=${FILTER_COST_ROUNDS:-3}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# build OUT SRC: the bench of this tree against the filter (and its few dependencies) in SRC.
build()
{
	local extra=()
	# base/pages.c since c8da2e7 (the filter's and the pools' tables).
	[[ -f $2/base/pages.c ]] && extra+=("$2/base/pages.c")
	"${CC:-cc}" -O2 -std=gnu11 -D_GNU_SOURCE -fno-strict-aliasing -I "$2" -o "$1" \
		"$REPO/bench/filter_cost.c" "$2/filter/filter.c" "$2/filter/reject.c" \
		"$2/filter/rules.c" "$2/proto/netmap.c" "$2/base/pkt.c" "${extra[@]}" -lpthread
}

build "$TMP/after" "$REPO/src"
builds=(after)
if [[ -n $BASE ]]; then
	mkdir "$TMP/base"
	git -C "$REPO" archive "$BASE" src | tar -x -C "$TMP/base"
	build "$TMP/before" "$TMP/base/src"
	builds=(before after)
fi
for ((i = 0; i < ROUNDS; i++)); do
	if ((i % 2)); then
		order=("${builds[@]}")
	else
		order=()
		for ((j = ${#builds[@]} - 1; j >= 0; j--)); do order+=("${builds[j]}"); done
	fi
	for b in "${order[@]}"; do
		"$TMP/$b" | sed "s/^/$b /" >>"$TMP/out"
	done
done
python3 - "$TMP/out" "$BASE" <<'PY'
import statistics, sys
rows, cases = {}, []
for line in open(sys.argv[1]):
    build, name, med, mean = line.split()
    if name not in cases:
        cases.append(name)
    rows.setdefault((build, name), []).append((float(med), float(mean)))
builds = ["before", "after"] if sys.argv[2] else ["after"]
label = {"before": sys.argv[2], "after": "this tree"}
head = "| case | " + " | ".join("%s median | %s mean" % (label[b], label[b]) for b in builds) + " |"
print(head)
print("|---|" + "---:|" * (2 * len(builds)))
for c in cases:
    cells = []
    for b in builds:
        v = rows.get((b, c), [])
        cells.append("%.1f" % min(x[0] for x in v))
        cells.append("%.1f" % statistics.median(x[1] for x in v))
    print("| %s | %s |" % (c, " | ".join(cells)))
PY
