# SPDX-License-Identifier: LGPL-2.1-or-later
#
# report-lib.sh: how the shell tests report.  Sourced, not run:
#   . "${TESTS_SRCDIR:-$(dirname "$0")}/report-lib.sh"
#
# Each check prints PASS or FAIL (with what it expected and what it got);
# finish prints the closing "N passed, M failed" line and exits 1 on any
# failure; skip_all exits 77 with the reason (the machine lacks something).
# tests/kcopydfs-lib.sh sources it for the tests that run a daemon.

passed=0
failed=0

skip_all() {
	echo "SKIP: $*"
	exit 77
}

pass() {
	passed=$((passed + 1))
	echo "PASS: $1"
}

# fail NAME EXPECTED GOT
fail() {
	failed=$((failed + 1))
	echo "FAIL: $1"
	echo "      expected: $2"
	echo "      got:      $3"
}

# check NAME EXPECTED GOT: PASS when GOT is EXPECTED.
check() {
	if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "$2" "$3"; fi
}

# wait_until TENTHS COMMAND...: run COMMAND every 0.1 s until it succeeds,
# TENTHS times at most; 1 if it never did.
wait_until() {
	local tries=$1 try
	shift
	for ((try = 0; try < tries; try++)); do
		"$@" && return 0
		sleep 0.1
	done
	return 1
}

# finish: the closing line and the exit status.
finish() {
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ] && exit 0
	exit 1
}
