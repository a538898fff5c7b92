#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-bindings-node.sh: contrib/node/kcopyd-example.js (fs only) against a
# daemon of its own: a copy to one and to three destinations (cmp, and the
# job removed afterwards), a refused description (exit 2, the reason),
# SIGTERM and SIGINT cancelling a slow job (exit 1, state cancelled), a
# directory that is no mount and a bad command line (exit 2).
#
# Run by `make check` (which exports KCOPYDFS and TESTS_SRCDIR), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-bindings-node.sh
# Needs root, node (Debian's nodejs; contrib/deps.sh installs it), nbdkit
# and nbdfuse; exits 77 (skipped) without them.
#
# Every check prints PASS or FAIL with what it expected and what it got;
# the last line is "N passed, M failed"; the exit status is 1 on any failure.

set -u
TESTS_SRCDIR=${TESTS_SRCDIR:-$(dirname "$0")}
. "$TESTS_SRCDIR/kcopydfs-lib.sh"
EXAMPLE=$TESTS_SRCDIR/../contrib/node/kcopyd-example.js

require_basics node cmp timeout nbdkit nbdfuse
setup_work 96M

SIZE=$((4 << 20))
SECTORS=$((SIZE / 512))

binding_fixture "$SIZE" "$SIZE"

# run_example ARGS...: the example with a 30 s limit; sets status, out, err.
run_example() {
	timeout 30 node "$EXAMPLE" "$@" >"$work/out" 2>"$work/err"
	status=$?
}

# check NAME EXPECTED GOT: on failure, also what the example printed.
check() {
	if [ "$2" = "$3" ]; then
		pass "$1"
	else
		fail "$1" "$2" "$3"
		echo "      stdout: $(tr '\n' '|' <"$work/out")"
		echo "      stderr: $(tr '\n' '|' <"$work/err")"
	fi
}

# same_file NAME FILE: cmp FILE with src.img.
same_file() {
	local got
	if got=$(cmp "$work/src.img" "$1" 2>&1); then pass "$(basename "$1") equals src.img"; else fail "$(basename "$1") equals src.img" "no difference" "$got"; fi
}

run_example "$mnt" "copy from=$work/src.img to=$work/d0.img"
check "one destination: exit status" 0 "$status"
check "one destination: the final status on stdout" "state: done|progress: $SECTORS/$SECTORS" \
	"$(head -n 2 "$work/out" | paste -sd '|')"
check "one destination: the final status's counts (random bytes: all data)" \
	"sectors_data: $SECTORS|sectors_zero: 0|checkpoint: $SECTORS" \
	"$(grep -E '^(sectors_data|sectors_zero|checkpoint):' "$work/out" | paste -sd '|')"
same_file "$work/d0.img"
check "the job is removed after the end" "" "$(ls "$mnt/jobs")"

: >"$work/d0.img"
truncate -s "$SIZE" "$work/d0.img"	# zeros again: the copy below must write it
run_example "$mnt" "copy from=$work/src.img to=$work/d0.img to=$work/d1.img to=$work/d2.img"
check "three destinations: exit status" 0 "$status"
for name in d0 d1 d2; do
	same_file "$work/$name.img"
done

run_example "$mnt" "copy from=$work/src.img to=$work/missing.img"
check "a refused description: exit status" 2 "$status"
check "a refused description: the reason" \
	"kcopyd-example: refused (ENOENT): to=$work/missing.img: $(errno_text ENOENT) (ENOENT)" "$(cat "$work/err")"
check "the refused job is removed" "" "$(ls "$mnt/jobs")"

# An NBD URI region goes to the daemon as it was written (connecting is not tested here).
uri="nbd+unix:///disk?socket=$work/no-such.sock"
run_example "$mnt" "copy from=$uri:8+8 to=$work/d0.img"
check "a URI region to a socket nobody serves: exit status" 2 "$status"
case $(cat "$work/err") in
*"from=$uri"* | *"from=\"$uri\""*) pass "a URI region: the reason names the URI as written" ;;
*) fail "a URI region: the reason names the URI as written" "from=$uri" "$(cat "$work/err")" ;;
esac
check "the refused URI job is removed" "" "$(ls "$mnt/jobs")"

for signal_name in TERM INT; do
	# Emptied first: the wait for "progress" below must not see the last run's
	# output and signal a child that is still this shell, traps and all.
	: >"$work/err"
	# env: background jobs of a script ignore SIGINT; node would keep it ignored.
	# timeout --foreground: else it sends the signal to node twice (to it,
	# then to its process group).
	env --default-signal="$signal_name" timeout --foreground 30 node "$EXAMPLE" "$mnt" "copy from=$slow_file to=$work/big.img" \
		>"$work/out" 2>"$work/err" &
	pid=$!
	background_pids+=("$pid")
	for _ in $(seq 100); do
		grep -q "progress" "$work/err" && break
		sleep 0.1
	done
	kill -"$signal_name" "$pid"
	wait "$pid"
	status=$?
	check "SIG$signal_name cancels: exit status" 1 "$status"
	check "SIG$signal_name cancels: the state" "cancelled" "$(sed -n 's/^state: //p' "$work/out")"
	check "SIG$signal_name cancels: the job is removed" "" "$(ls "$mnt/jobs")"
	# The slow source is an nbdkit memory disk, all zeros: the progress line says how many.
	got=$(grep -m1 "progress" "$work/err")
	if [[ $got =~ ^kcopyd-example:\ progress\ [0-9]+/[0-9]+\ \([0-9]+\ sectors\ of\ zeros\)$ ]]; then
		pass "SIG$signal_name: the progress line on stderr counts the zeros"
	else
		fail "SIG$signal_name: the progress line on stderr counts the zeros" \
			"kcopyd-example: progress D/T (Z sectors of zeros)" "$got"
	fi
done

run_example "$work" "copy from=$work/src.img to=$work/d0.img"
check "a directory that is no mount: exit status" 2 "$status"
check "a directory that is no mount: the message" \
	"kcopyd-example: $work: not a kcopydfs mount (no $work/clone)" "$(cat "$work/err")"

run_example "$mnt"
check "no description: exit status" 2 "$status"
check "no description: the usage" "usage: kcopyd-example.js MOUNT DESCRIPTION" "$(cat "$work/err")"

finish
