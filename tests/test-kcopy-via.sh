#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopy-via.sh: kcopy --via MOUNT, the job run by a kcopydfs daemon of
# the test's own: copies to 1 and 3 destinations given with relative paths
# and iB suffixes (checked with cmp), a created destination file, --zero;
# regions the daemon refuses (exit 2 and its reason); a read error and a
# write error on destination 1 of 3 from nbdkit's error filter (exit 1, the
# same report as without --via); SIGINT cancelling (exit 130); SIGUSR1
# printing the progress, SIGHUP cancelling (exit 129) and the printed
# command copying the rest (with --via); a directory
# that is no mount and engine options with --via (exit 2, nothing created);
# and no job left on the mount afterwards.
#
# Run by `make check` (which exports KCOPY, KCOPYDFS and TESTS_SRCDIR), or:
#   sudo KCOPY=./kcopy KCOPYDFS=./kcopydfs tests/test-kcopy-via.sh
# Needs root, losetup, nbdkit and nbdfuse; exits 77 (skipped) without them.
#
# Every check prints PASS or FAIL with what it expected and what it got;
# the last line is "N passed, M failed"; the exit status is 1 on any failure.

set -u
TESTS_SRCDIR=${TESTS_SRCDIR:-$(dirname "$0")}
. "$TESTS_SRCDIR/kcopydfs-lib.sh"
KCOPY=${KCOPY:-${BUILDDIR:-.}/kcopy}

require_basics losetup cmp nbdkit nbdfuse
[ -x "$KCOPY" ] || skip_all "no kcopy at '$KCOPY' (set KCOPY)"
nbdkit --filter=error --filter=delay memory --dump-plugin >/dev/null 2>&1 ||
	skip_all "nbdkit lacks the error or delay filter"
setup_work 160M

SIZE=$((8 << 20))
MIB=$((1 << 20))

if ! start_daemon; then
	fail "kcopydfs mounts" "a kcopydfs mount at $daemon_mount" "$(tr '\n' '|' <"$work/kcopydfs.log")"
	finish
fi
mnt=$daemon_mount
head -c "$SIZE" /dev/urandom >"$work/src.img"
for name in d0 d1 loop512 loop4k; do
	truncate -s "$SIZE" "$work/$name.img"
done
new_loop "$work/loop512.img" || skip_all "losetup failed"
loop512=$loop_device
new_loop "$work/loop4k.img" --sector-size 4096 || skip_all "losetup --sector-size 4096 failed"
loop4k=$loop_device

# run_kcopy ARGS...: kcopy from $work with a 60 s limit; sets status.
run_kcopy() {
	(cd "$work" && timeout 60 "$KCOPY" "$@") >"$work/stdout" 2>"$work/stderr"
	status=$?
}

# report NAME EXPECTED GOT: fail, with what kcopy said.
report() {
	fail "$1" "$2" "$3"
	echo "      kcopy said: $(tr '\n' '|' <"$work/stderr")"
}

# expect_status NAME STATUS: 0 if the last run_kcopy exited STATUS.
expect_status() {
	[ "$status" = "$2" ] && return 0
	report "$1" "exit status $2" "exit status $status"
	return 1
}

# expect_stderr NAME REGEX: 0 if kcopy's stderr has a line matching REGEX.
expect_stderr() {
	grep -Eq -- "$2" "$work/stderr" && return 0
	report "$1" "a line matching /$2/ on stderr" "no such line"
	return 1
}

# same_bytes NAME FILE FILE_BYTE SRC_BYTE BYTES: cmp a range of FILE with one of src.img.
same_bytes() {
	local got
	if got=$(cmp -n "$5" "$work/src.img" "$2" "$4" "$3" 2>&1); then
		pass "$1"
	else
		fail "$1" "$(basename "$2") bytes $3+$5 equal to src.img's $4+$5" "$got"
	fi
}

# no_jobs_left NAME: the mount's jobs/ is empty (kcopy uses clone-autoremove).
no_jobs_left() {
	local left
	left=$(ls "$mnt/jobs")
	if [ -z "$left" ]; then pass "$1: no job left on the mount"; else fail "$1: no job left on the mount" "none" "$left"; fi
}

# --- copies ----------------------------------------------------------------------

run_kcopy --via "$mnt" src.img created.img
expect_status "one destination, relative paths, created: exit 0" 0 &&
	expect_stderr "one destination: the summary" "^kcopy: copied $SIZE bytes \($((SIZE / 512)) sectors\) to 1 destination in " &&
	pass "one destination, relative paths, created: exit 0 and the summary"
same_bytes "the created destination equals the source" "$work/created.img" 0 0 "$SIZE"
no_jobs_left "one destination"

run_kcopy --via "$mnt" --progress src.img:1MiB+2MiB d0.img d1.img:4KiB "$loop512:2048"
expect_status "three destinations with iB suffixes: exit 0" 0 &&
	expect_stderr "three destinations: the progress bar" "^\[#+ *\] +[0-9.]+%" &&
	expect_stderr "three destinations: the summary" "^kcopy: copied $((2 * MIB)) bytes .* to 3 destinations in " &&
	pass "three destinations with iB suffixes: exit 0, a progress bar and the summary"
same_bytes "three destinations: d0.img at 0" "$work/d0.img" 0 "$MIB" $((2 * MIB))
same_bytes "three destinations: d1.img at 4 KiB" "$work/d1.img" 4096 "$MIB" $((2 * MIB))
same_bytes "three destinations: $loop512 at sector 2048" "$loop512" "$MIB" "$MIB" $((2 * MIB))
no_jobs_left "three destinations"

run_kcopy --via "$mnt" --zero d0.img:0+1M "$loop512:2048"
expect_status "--zero on two destinations: exit 0" 0 && pass "--zero on two destinations: exit 0"
if cmp -s -n "$MIB" "$work/d0.img" /dev/zero && cmp -s -n "$MIB" "$loop512" /dev/zero "$MIB" 0; then
	pass "--zero: both ranges are zeros"
else
	fail "--zero: both ranges are zeros" "zeros" "$(cmp -n "$MIB" "$work/d0.img" /dev/zero 2>&1; cmp -n "$MIB" "$loop512" /dev/zero "$MIB" 0 2>&1)"
fi

# --- sparse copies: the flags reach the daemon, the counts come back -------------------

# sparse.img: 8 MiB, random bytes at 1 MiB+1 MiB and 5 MiB+1 MiB, holes elsewhere
# (the work directory is a tmpfs, which tells holes by SEEK_HOLE).
truncate -s 8M "$work/sparse.img"
head -c "$MIB" /dev/urandom | dd of="$work/sparse.img" bs=1M seek=1 conv=notrunc status=none
head -c "$MIB" /dev/urandom | dd of="$work/sparse.img" bs=1M seek=5 conv=notrunc status=none
# via_counts: the summary's "(D data, Z zero, O offloaded)" as "D Z O", or nothing.
via_counts() {
	sed -nE 's/^kcopy: copied .*\(([0-9]+) data, ([0-9]+) zero, ([0-9]+) offloaded\)$/\1 \2 \3/p' "$work/stderr"
}
# allocated FILE: the bytes FILE has allocated.
allocated() {
	echo $(($(stat -c '%b * %B' "$1")))
}
for mode in default --no-offload --allocated --destination-is-zero; do
	name=sparse${mode#--}.img
	args=()
	[ "$mode" = default ] || args=("$mode")
	[ "$mode" = --destination-is-zero ] && truncate -s 8M "$work/$name"
	run_kcopy --via "$mnt" "${args[@]}" sparse.img "$name"
	expect_status "sparse copy, $mode: exit 0" 0 && pass "sparse copy, $mode: exit 0"
	if cmp -s "$work/sparse.img" "$work/$name"; then
		pass "sparse copy, $mode: the destination equals the source"
	else
		fail "sparse copy, $mode: the destination equals the source" "no difference" "$(cmp "$work/sparse.img" "$work/$name" 2>&1)"
	fi
	read -r data zero offloaded <<<"$(via_counts)"
	check "sparse copy, $mode: the summary counts 2 MiB of data and 6 MiB of zeros" "4096 12288" "${data:-} ${zero:-}"
	case $mode in
	default) [ "${offloaded:-0}" -gt 0 ]; check "sparse copy: tmpfs to tmpfs is offloaded (copy_file_range)" 0 $? ;;
	--no-offload) check "sparse copy, --no-offload (flags=no_offload): nothing offloaded" 0 "${offloaded:-}" ;;
	esac
	bytes=$(allocated "$work/$name")
	if [ "$mode" = --allocated ]; then
		[ "$bytes" -ge $((8 * MIB)) ]
		check "sparse copy, --allocated (flags=allocated): the destination is allocated throughout ($bytes bytes)" 0 $?
	else
		[ "$bytes" -le $((2 * MIB + 256 * 1024)) ]
		check "sparse copy, $mode: the destination stays sparse ($bytes bytes allocated)" 0 $?
	fi
	rm -f "$work/$name"
done
no_jobs_left "sparse copies"

# --- refused regions: exit 2 and the daemon's reason ---------------------------------

run_kcopy --via "$mnt" src.img:0+8 "$loop4k:1"
expect_status "a misaligned destination: exit 2" 2 &&
	expect_stderr "a misaligned destination: the reason" \
		"^kcopy: refused by kcopydfs: destination 0 sectors 1\+8 are not aligned .*\(EINVAL\)$" &&
	expect_stderr "a misaligned destination: which argument" "^kcopy: destination 0 is $(re_quote "$loop4k")$" &&
	pass "a misaligned destination: exit 2, the reason and the argument"

run_kcopy --via "$mnt" src.img "$loop512:8"
expect_status "a destination too short: exit 2" 2 &&
	expect_stderr "a destination too short: the reason" "^kcopy: refused by kcopydfs: destination 0 .*\(ERANGE\)$" &&
	pass "a destination too short: exit 2 and the reason"

run_kcopy --via "$mnt" src.img:0+16 d0.img src.img:8
expect_status "an overlap with the source: exit 2" 2 &&
	expect_stderr "an overlap with the source: the reason" "^kcopy: refused by kcopydfs: destination 1 overlaps the source \(EINVAL\)$" &&
	expect_stderr "an overlap with the source: which argument" "^kcopy: destination 1 is src\.img$" &&
	pass "an overlap with the source: exit 2, the reason and the argument"
no_jobs_left "refused regions"

# --- I/O errors: exit 1 and the same report as without --via ---------------------------

if nbd_export "$work/rbad" --filter=error file "file=$work/src.img" error-pread-rate=100% error=EIO; then
	run_kcopy --via "$mnt" rbad/disk:0+1M from-rbad.img
	expect_status "a read error: exit 1" 1 &&
		expect_stderr "a read error: the source, range and errno" \
			"^kcopy: read error on rbad/disk sectors 0\+[0-9]+: EIO \(Input/output error\)$" &&
		expect_stderr "a read error: the error bits" "^kcopy: read_err=1 write_err=0x0$" &&
		expect_stderr "a read error: how much was done" "^kcopy: copied 0 of $MIB bytes" &&
		pass "a read error: exit 1, the range, the bits"
else
	fail "a read error" "nbdfuse to export a failing source" "$(tail -n 3 "$work/nbdfuse.log" | tr '\n' '|')"
fi

if nbd_export "$work/wbad" --filter=error memory "$SIZE" error=EIO error-pwrite-rate=100% &&
	new_loop "$work/wbad/disk"; then
	wbad=$loop_device
	run_kcopy --via "$mnt" src.img:0+1M d0.img "$wbad" d1.img
	expect_status "a write error on destination 1 of 3: exit 1" 1 &&
		expect_stderr "a write error: the destination, range and errno" \
			"^kcopy: write error on $(re_quote "$wbad") \(destination 1\) sectors [0-9]+\+[0-9]+: EIO \(Input/output error\)$" &&
		expect_stderr "a write error: the error bits" "^kcopy: read_err=0 write_err=0x2$" &&
		pass "a write error on destination 1 of 3: exit 1, the range, the bits"
else
	fail "a write error" "nbdfuse and a loop device on a failing disk" "$(tail -n 3 "$work/nbdfuse.log" | tr '\n' '|')"
fi
no_jobs_left "I/O errors"

# --- SIGINT cancels the job through ctl --------------------------------------------------

if slow_source 64M 300ms; then
	# Emptied first: the wait for ETA below must not see an earlier run's bar
	# and signal a child that is still this shell, traps and all.
	: >"$work/stderr"
	# env: background jobs of a script ignore SIGINT, and kcopy keeps it ignored.
	# timeout --foreground: without it, timeout passes the SIGINT on to kcopy
	# and then to its whole process group, kcopy included: a second SIGINT.
	(cd "$work" && exec env --default-signal=INT timeout --foreground 60 "$KCOPY" --via "$mnt" --progress "$slow_file" big.img) \
		>"$work/stdout" 2>"$work/stderr" &
	pid=$!
	background_pids+=("$pid")
	wait_until 100 grep -q 'ETA' "$work/stderr"
	kill -INT "$pid"
	wait "$pid"
	status=$?
	expect_status "SIGINT: exit 130" 130 &&
		expect_stderr "SIGINT: the cancel is reported" "^kcopy: cancelled by SIGINT after [0-9]+ of $((64 * MIB)) bytes$" &&
		pass "SIGINT cancels the job: exit 130 and the report"
	no_jobs_left "SIGINT"

	# SIGUSR1 prints the job's progress and SIGHUP cancels, as without --via; then
	# the printed command (with --via) copies the rest.  Random bytes in the
	# source, kept in via-ref.img, so that the comparison means something.
	rm -f "$work/big.img"	# room on the 160M tmpfs
	head -c $((64 * MIB)) /dev/urandom >"$work/via-ref.img"
	dd if="$work/via-ref.img" of="$slow_file" bs=1M conv=notrunc,fsync status=none
	: >"$work/stderr"
	(cd "$work" && exec timeout --foreground 60 "$KCOPY" --via "$mnt" --progress "$slow_file" hup.img) \
		>"$work/stdout" 2>"$work/stderr" &
	pid=$!
	background_pids+=("$pid")
	wait_until 100 grep -q 'ETA' "$work/stderr"
	# To kcopy itself: timeout would die of SIGUSR1, which it does not pass on.
	kcopy_pid=$(pgrep -P "$pid")
	kill -USR1 "$kcopy_pid"
	sleep 0.3
	kill -HUP "$kcopy_pid"
	wait "$pid"
	status=$?
	expect_status "SIGHUP: exit 129" 129 &&
		expect_stderr "SIGUSR1: a progress line" "^kcopy: [0-9]+ of $((64 * MIB)) bytes \([0-9.]+%\) done in " &&
		expect_stderr "SIGHUP: the cancel is reported" "^kcopy: cancelled by SIGHUP after [0-9]+ of $((64 * MIB)) bytes$" &&
		pass "--via: SIGUSR1 prints the progress, SIGHUP cancels the job (exit 129)"
	no_jobs_left "SIGHUP"
	resume=$(sed -n '/, run:$/{n;p}' "$work/stderr")
	if [[ $resume == "kcopy --via $mnt --progress $slow_file:"* ]]; then
		(cd "$work" && eval "timeout 60 \"\$KCOPY\" ${resume#kcopy }") >"$work/stdout" 2>"$work/stderr"
		status=$?
		expect_status "--via: the resume command: exit 0" 0 && pass "--via: the printed command runs: $resume"
		if cmp "$work/via-ref.img" "$work/hup.img" >/dev/null 2>&1; then
			pass "--via: cancelled, then resumed: the destination equals the source"
		else
			fail "--via: cancelled, then resumed" "hup.img equal to the source" "$(cmp "$work/via-ref.img" "$work/hup.img" 2>&1)"
		fi
		rm -f "$work/via-ref.img" "$work/hup.img"
		no_jobs_left "the resume command"
	else
		report "--via: the resume command" "kcopy --via $mnt --progress $slow_file:C+REST hup.img:C" "$resume"
	fi
else
	fail "SIGINT cancels the job" "nbdfuse to export a slow source" "$(tail -n 3 "$work/nbdfuse.log" | tr '\n' '|')"
fi

# --- bad input: nothing created ------------------------------------------------------

run_kcopy --via "$work/nosuch" src.img never.img
expect_status "a mountpoint that does not exist: exit 2" 2 &&
	expect_stderr "a mountpoint that does not exist: the message" \
		"^kcopy: --via $(re_quote "$work/nosuch"): not a kcopydfs mount \($(re_quote "$work/nosuch")/version: ENOENT" &&
	pass "a mountpoint that does not exist: exit 2 and the message"
run_kcopy --via "$work" src.img never.img
expect_status "a directory that is no kcopydfs mount: exit 2" 2 &&
	expect_stderr "a directory that is no kcopydfs mount: the message" "^kcopy: --via $(re_quote "$work"): not a kcopydfs mount" &&
	pass "a directory that is no kcopydfs mount: exit 2 and the message"
run_kcopy --via "$mnt" --depth 2 src.img never.img
expect_status "--depth with --via: exit 2" 2 &&
	expect_stderr "--depth with --via: the message" "cannot go with --via" &&
	pass "--depth with --via: exit 2 and the message"
if [ -e "$work/never.img" ]; then
	fail "refused command lines create no destination" "no never.img" "$(ls -l "$work/never.img")"
else
	pass "refused command lines create no destination"
fi
if "$KCOPY" --help | grep -q -- "--via MOUNT"; then
	pass "kcopy --help documents --via"
else
	fail "kcopy --help documents --via" "a --via MOUNT line" "$("$KCOPY" --help | tr '\n' '|')"
fi

finish
