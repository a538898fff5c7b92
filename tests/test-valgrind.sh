#!/usr/bin/env bash
# The engine's tests, and the pure parts of kcopydfs (the job grammar, its
# fuzz corpora, the state records), once more under valgrind (memcheck):
# errors or leaks fail the test.  Not run in sanitizer builds (Makefile.am),
# where valgrind cannot run the instrumented binaries.
set -u
builddir=${BUILDDIR:-.}
if ! command -v valgrind >/dev/null; then
	echo "SKIP: valgrind is not installed"
	exit 77
fi
passed=0 failed=0
run() {
	local name=$1
	shift
	# Criterion runs each test in a child whose exit code does not reach us:
	# any report valgrind prints (-q prints nothing else) is a failure.
	if valgrind --trace-children=yes --error-exitcode=99 --leak-check=full \
		--errors-for-leak-kinds=definite,indirect -q "$@" >"valgrind-$name.out" 2>&1 &&
		! grep -qE '^==[0-9]+==' "valgrind-$name.out"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		echo "FAIL: $name under valgrind:"
		tail -n 40 "valgrind-$name.out"
	fi
	rm -f "valgrind-$name.out"
}
run race-engine "$builddir/tests/race-engine"
[ -x "$builddir/tests/test-engine" ] && run test-engine "$builddir/tests/test-engine" -j1
[ -x "$builddir/tests/test-jobspec" ] && run test-jobspec "$builddir/tests/test-jobspec" -j1
[ -x "$builddir/tests/test-state" ] && run test-state "$builddir/tests/test-state" -j1
run replay-jobspec "$builddir/tests/fuzz/replay-jobspec"
run replay-region "$builddir/tests/fuzz/replay-region"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
