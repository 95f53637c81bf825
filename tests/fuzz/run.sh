#!/usr/bin/env bash
# Runs every libFuzzer target of a -Dfuzz=true build for SECONDS each, starting
# from a temporary copy of its seed corpus (tests/fuzz/corpus/<target>/, if any)
# so the repository is never modified, with its dictionary tests/fuzz/<target>.dict
# if there is one. Crash inputs are kept in BUILD_DIR/fuzz-artifacts/<target>/.
# Fails if any target crashes, leaks, trips a sanitizer or times out. Ends with a
# table (Markdown) of executions per target. Targets run FUZZ_JOBS (default: the
# number of cores) at a time.
#
#   tests/fuzz/run.sh BUILD_DIR SECONDS
set -uo pipefail

if (($# != 2)); then
	echo "usage: $0 BUILD_DIR SECONDS" >&2
	exit 2
fi
build=$(cd "$1" && pwd) || exit 2
seconds=$2
here=$(cd "$(dirname "$0")" && pwd)

shopt -s nullglob
targets=()
for exe in "$build"/tests/fuzz/fuzz_*; do
	[[ -f $exe && -x $exe ]] && targets+=("$exe")
done
if ((${#targets[@]} == 0)); then
	echo "fuzz: no targets in $build/tests/fuzz (configure with -Dfuzz=true and build)" >&2
	exit 2
fi

tmp=$(mktemp -d /tmp/trellis-fuzz.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# Any sanitizer report is a failure, including UBSan's (which recovers by default).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# One target per core at a time: each target still runs for SECONDS, so the whole run
# takes about targets × SECONDS / jobs instead of targets × SECONDS.
jobs=${FUZZ_JOBS:-$(nproc)}
((jobs >= 1)) || jobs=1

# Runs one target; its report goes to $tmp/NAME/out and its result to $tmp/NAME/result,
# so parallel targets never interleave their lines.
fuzz_one() {
	local exe=$1 name corpus artifacts log args
	name=$(basename "$exe")
	corpus="$tmp/$name/corpus"
	artifacts="$build/fuzz-artifacts/$name"
	log="$tmp/$name/log"
	mkdir -p "$corpus" "$artifacts"
	{
		if [[ -d $here/corpus/$name ]]; then
			cp -R "$here/corpus/$name/." "$corpus/"
		else
			echo "fuzz: $name: no seed corpus in tests/fuzz/corpus/$name, starting empty"
		fi
		args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048
		      -print_final_stats=1 -artifact_prefix="$artifacts/")
		[[ -f $here/$name.dict ]] && args+=(-dict="$here/$name.dict")

		echo "fuzz: $name for ${seconds}s ($(ls "$corpus" | wc -l) seeds)"
		if "$exe" "${args[@]}" "$corpus" >"$log" 2>&1; then
			echo ok >"$tmp/$name/result"
			grep -E '^(stat::number_of_executed_units|#[0-9]+.*DONE)' "$log" | tail -2 |
				sed "s/^/fuzz: $name: /"
		else
			echo FAILED >"$tmp/$name/result"
			echo "fuzz: $name FAILED; last output:"
			tail -n 60 "$log"
			echo "fuzz: $name: reproducer(s) in $artifacts/"
		fi
	} >"$tmp/$name/out" 2>&1
}

running=0
for exe in "${targets[@]}"; do
	mkdir -p "$tmp/$(basename "$exe")"
	if ((running >= jobs)); then
		wait -n
		running=$((running - 1))
	fi
	fuzz_one "$exe" &
	running=$((running + 1))
done
wait

passed=0
failed=0
failed_names=()
summary=()
for exe in "${targets[@]}"; do
	name=$(basename "$exe")
	log="$tmp/$name/log"
	result=$(cat "$tmp/$name/result" 2>/dev/null || echo FAILED)
	if [[ $result == ok ]]; then
		passed=$((passed + 1))
		cat "$tmp/$name/out"
	else
		failed=$((failed + 1))
		failed_names+=("$name")
		cat "$tmp/$name/out" >&2
	fi
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
	cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
	units=$(grep -oE 'corp: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
	summary+=("| $name | $seconds | ${execs:-?} | ${rate:-?} | ${cov:-?} | ${units:-?} | $result |")
done

echo "fuzz: summary"
echo "| target | seconds | execs | execs/s | edges | corpus | result |"
echo "|---|---:|---:|---:|---:|---:|---|"
printf '%s\n' "${summary[@]}"

echo "fuzz: $passed passed, $failed failed${failed_names:+ (${failed_names[*]})}"
((failed == 0))
