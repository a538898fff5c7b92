#!/usr/bin/env bash
# Install the dependencies, build out of tree and run the whole test suite.
#   contrib/test.sh                 plain build in build/
#   contrib/test.sh --asan --ubsan  sanitized build in build-asan-ubsan/
#   contrib/test.sh --tsan          ThreadSanitizer build in build-tsan/
#   contrib/test.sh --distcheck     make distcheck (tarball, VPATH build, check)
#   contrib/test.sh --io-engine=E   with any of the above: every program the tests
#                                   run uses I/O engine E (auto, io_uring or libaio;
#                                   KCOPYD_IO_ENGINE), the one that must run: a test
#                                   fails if it cannot.  Default: auto (io_uring where
#                                   the kernel allows it, else libaio)
# The tests need root (loop devices, FUSE, nbdkit); as another user they skip.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

configure_args=()
build=build
target=check
for arg in "$@"; do
	case "$arg" in
	--asan | --ubsan | --tsan)
		configure_args+=("--enable-${arg#--}")
		build="$build-${arg#--}"
		;;
	--distcheck) target=distcheck ;;
	--io-engine=auto | --io-engine=io_uring | --io-engine=libaio)
		export KCOPYD_IO_ENGINE=${arg#--io-engine=}
		;;
	*)
		echo "usage: $0 [--asan] [--ubsan] [--tsan] [--distcheck] [--io-engine=auto|io_uring|libaio]" >&2
		exit 2
		;;
	esac
done

contrib/deps.sh
[ -x configure ] || autoreconf -fi
mkdir -p "$build"
cd "$build"
[ -f Makefile ] || ../configure "${configure_args[@]}"
make -j"$(nproc)"

# Sanitizer reports go to files, so that one from a daemon (whose stderr is
# /dev/null) or from a Criterion child (whose exit code is not the test's)
# still fails the run.
reports=$PWD/sanitizer-reports
rm -rf "$reports" "$reports.startup"
mkdir -p "$reports"
export ASAN_OPTIONS="log_path=$reports/asan:detect_leaks=1"
export UBSAN_OPTIONS="log_path=$reports/ubsan:print_stacktrace=1"
export TSAN_OPTIONS="log_path=$reports/tsan"
sanitizer_reports() {
	local found=1 report
	for report in "$reports"/*; do
		[ -f "$report" ] || continue
		echo "=== sanitizer report $report"
		head -n 80 "$report"
		found=0
	done
	return $found
}

# only_startup_failures: true when every sanitizer report is a runtime that
# could not reserve its shadow memory as the process started (seen once in
# many thousands of starts here, before any of our code ran), not a finding.
only_startup_failures() {
	local report found=1
	for report in "$reports"/*; do
		[ -f "$report" ] || continue
		grep -q 'ReserveShadowMemoryRange failed' "$report" || return 1
		found=0
	done
	return $found
}

echo "test.sh: I/O engine ${KCOPYD_IO_ENGINE:-auto} ($target in $build)"
status=0
make -j"$(nproc)" "$target" || status=$?
if [ "$status" -ne 0 ] && [ "$target" = check ] && only_startup_failures; then
	# Say so, keep the reports aside, and run the failed tests once more.
	echo "test.sh: a sanitizer runtime could not start (shadow memory); the failed tests run once more:"
	sanitizer_reports || true
	mkdir -p "$reports.startup"
	mv "$reports"/* "$reports.startup"/
	status=0
	make -j"$(nproc)" recheck || status=$?
fi
if [ "$status" -ne 0 ]; then
	# Show why: the logs of every test that did not pass.
	for log in tests/*.log; do
		[ -f "$log" ] || continue
		grep -qE '^:test-result: (FAIL|ERROR|XPASS)' "${log%.log}.trs" 2>/dev/null &&
			{ echo "=== $log"; tail -n 60 "$log"; }
	done
	sanitizer_reports || true
	exit 1
fi
if sanitizer_reports; then
	echo "test.sh: the tests passed, but a sanitizer reported the problems above" >&2
	exit 1
fi
