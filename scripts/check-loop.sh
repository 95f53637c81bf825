#!/usr/bin/env bash
# make check, over and over, to find tests that are not green every time (issue 6).
#
#   scripts/check-loop.sh [RUNS]        (default 10; 0: until the stop file exists)
#
# Each run clones the repository's HEAD afresh into $CHECK_LOOP_DIR/run-N and runs
# `bash .ci/run` there, exactly as CI does; one line per run (commit, exit status,
# seconds, load, meson's totals) goes to $CHECK_LOOP_DIR/summary.txt, and the run's
# output and meson test log stay beside it; a lab test that fails keeps its scratch
# directory (LAB_KEEP_LOGS=1). The loop stops at the first failure unless
# CHECK_LOOP_KEEP_GOING=1, and before the next run once $CHECK_LOOP_DIR/STOP exists.
# Run a CPU-heavy job beside it (another check-loop in a second directory, or a
# parallel build) to see the suite on a busy machine (docs/testing.md).
#
# Environment:
#   CHECK_LOOP_DIR         where runs go (default /tmp/trellis-check-loop)
#   CHECK_LOOP_KEEP_GOING  1: go on after a failed run
#   CHECK_LOOP_KEEP        1: keep each run's clone (default: only the failed ones)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-10}
DIR=${CHECK_LOOP_DIR:-/tmp/trellis-check-loop}
mkdir -p "$DIR"
# A lab test that fails keeps its scratch directory (daemon logs, state) under /tmp.
export LAB_KEEP_LOGS=1
i=0
while ((RUNS == 0 || i < RUNS)) && [[ ! -e $DIR/STOP ]]; do
	i=$((i + 1))
	run=$DIR/run-$i
	rm -rf "$run"
	git clone -q "$REPO" "$run" || exit 1
	t0=$(date +%s)
	(cd "$run" && bash .ci/run) >"$DIR/run-$i.log" 2>&1
	rc=$?
	t1=$(date +%s)
	cp "$run/build-check/meson-logs/testlog.txt" "$DIR/testlog-$i.txt" 2>/dev/null
	echo "run $i commit $(git -C "$run" rev-parse --short HEAD) rc=$rc secs=$((t1 - t0))" \
		"end=$(date -u +%H:%M) load=$(cut -d' ' -f1-3 /proc/loadavg)" \
		"$(grep -E '^(Ok|Fail|Timeout):' "$DIR/run-$i.log" | tr -s ' ' | tr '\n' ' ')" \
		>>"$DIR/summary.txt"
	if ((rc != 0)); then
		[[ ${CHECK_LOOP_KEEP_GOING:-0} == 1 ]] || exit 1
	elif [[ ${CHECK_LOOP_KEEP:-0} != 1 ]]; then
		rm -rf "$run"
	fi
done
