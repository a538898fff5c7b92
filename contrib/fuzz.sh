#!/usr/bin/env bash
# Fuzz the text protocol's parsers (src/proto) with libFuzzer: job
# descriptions, regions with paths and NBD URIs, the status text.
#   contrib/fuzz.sh [SECONDS=60] [TARGET...]     TARGET: jobspec, region, status (default all)
# Builds build-fuzz/ with clang (-fsanitize=fuzzer,address,undefined), then
# runs each target for SECONDS on a working copy of its seed corpus
# (tests/fuzz/corpus/TARGET).  A crash, a leak, a sanitizer report or a
# failed check (the targets assert the parsers' promises) stops the run:
# the input is left as build-fuzz/crash-TARGET-* and the script exits 1.
# New inputs libFuzzer finds stay in build-fuzz/corpus-TARGET/; to keep the
# interesting ones, minimise them into the seed corpus with
#   build-fuzz/tests/fuzz/fuzz-TARGET -merge=1 tests/fuzz/corpus/TARGET build-fuzz/corpus-TARGET
# For a longer hunt, give more seconds (an hour: contrib/fuzz.sh 3600), or
# run the binary by hand with -jobs=N -workers=N on more cores.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(jobspec region status)
case "$seconds" in
'' | *[!0-9]*) echo "usage: $0 [SECONDS] [jobspec|region|status]..." >&2; exit 2 ;;
esac

contrib/deps.sh
[ -x configure ] || autoreconf -fi
mkdir -p build-fuzz
cd build-fuzz
[ -f Makefile ] || ../configure -q CC=clang --enable-fuzz
make -s -j"$(nproc)" "${targets[@]/#/tests/fuzz/fuzz-}"

status=0
for target in "${targets[@]}"; do
	work=corpus-$target
	mkdir -p "$work"
	log=fuzz-$target.log
	echo "== fuzz-$target: $seconds s, seeds from tests/fuzz/corpus/$target"
	# -max_len: a description is at most 4096 bytes and a newline; a bit more tests the limit.
	if ./tests/fuzz/fuzz-"$target" -max_total_time="$seconds" -max_len=4200 -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="crash-$target-" \
		"$work" "$top/tests/fuzz/corpus/$target" >"$log" 2>&1; then
		runs=$(awk '/^stat::number_of_executed_units:/ {print $2}' "$log")
		echo "fuzz-$target: no finding in ${runs:-?} executions ($(ls "$work" | wc -l) inputs in $work)"
	else
		echo "fuzz-$target: FINDING; the log's end:" >&2
		tail -n 40 "$log" >&2
		status=1
	fi
done
exit $status
