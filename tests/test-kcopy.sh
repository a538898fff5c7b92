#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopy.sh: the kcopy command end to end, on loop devices (direct I/O,
# 512- and 4096-byte sectors) and plain files on a tmpfs of its own.
#
# Run by `make check` (which exports KCOPY, the built command), or by hand:
#   sudo KCOPY=./kcopy tests/test-kcopy.sh
# Needs root (tmpfs, losetup); exits 77 (skipped) without it.  The checks
# with nbdkit and nbdfuse (a failing read, cancelling) are skipped when
# those are not installed.
#
# Every check prints PASS or FAIL with what it expected and what it got;
# the last line is "N passed, M failed"; the exit status is 1 on any
# failure.

set -u

KCOPY=${KCOPY:-$(dirname "$0")/../kcopy}
SOURCE_MIB=64
SOURCE_SECTORS=$((SOURCE_MIB * 2048))

# pass, skip_all, check and wait_until; fail is this file's own (below): it shows what kcopy said.
. "${TESTS_SRCDIR:-$(dirname "$0")}/report-lib.sh"

[ "$(id -u)" = 0 ] || skip_all "needs root to mount a tmpfs and set up loop devices"
for tool in losetup mount umount cmp dd mktemp stat; do
	command -v "$tool" >/dev/null || skip_all "needs $tool"
done
[ -x "$KCOPY" ] || skip_all "no kcopy at '$KCOPY' (set KCOPY)"

work=$(mktemp -d "${TMPDIR:-/tmp}/test-kcopy.XXXXXX") || skip_all "mktemp -d failed"
work_mounted=0
loop_devices=()
fuse_mounts=()
small_mount=

background_pids=()

# umount_retry DIR: unmount, giving a process that is just ending time to let go.
umount_retry() {
	local attempt

	for attempt in 1 2 3 4 5 6 7 8 9 10; do
		umount "$1" 2>/dev/null && return 0
		sleep 0.5
	done
	umount "$1"
}

# Tear down everything we set up, on any exit.
cleanup() {
	local mount_point loop pid

	for mount_point in "${fuse_mounts[@]}"; do
		umount "$mount_point" 2>/dev/null || umount -l "$mount_point" 2>/dev/null
	done
	for pid in "${background_pids[@]}"; do
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	for loop in "${loop_devices[@]}"; do
		losetup -d "$loop"
	done
	[ -n "$small_mount" ] && umount_retry "$small_mount"
	[ "$work_mounted" = 1 ] && umount_retry "$work"
	rmdir "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mount -t tmpfs -o size=768M tmpfs "$work" || skip_all "cannot mount a tmpfs on $work"
work_mounted=1

# new_loop FILE [LOSETUP OPTIONS...]: attach FILE with direct I/O and set
# loop_device to the device.  (Not a $(...) function: the list of devices
# to detach must be this shell's.)
new_loop() {
	local file=$1
	shift
	loop_device=$(losetup -f --show --direct-io=on "$@" "$file") || return 1
	loop_devices+=("$loop_device")
}

# --- reporting ------------------------------------------------------------

# fail NAME EXPECTED GOT, and what kcopy said.
fail() {
	failed=$((failed + 1))
	echo "FAIL: $1"
	echo "      expected: $2"
	echo "      got:      $3"
	if [ -s "$work/stderr" ]; then
		echo "      kcopy said:"
		sed 's/^/        /' "$work/stderr"
	fi
}

# run_kcopy ARGS...: run kcopy, keep its stdout and stderr, set $status.
run_kcopy() {
	"$KCOPY" "$@" >"$work/stdout" 2>"$work/stderr"
	status=$?
}

# expect_status NAME EXPECTED: check the status of the last run_kcopy; 0 if it matched.
expect_status() {
	if [ "$status" = "$2" ]; then
		return 0
	fi
	fail "$1" "exit status $2" "exit status $status"
	return 1
}

# expect_stderr NAME PATTERN: check that kcopy's stderr matches an extended regex.
expect_stderr() {
	if grep -Eq -- "$2" "$work/stderr"; then
		return 0
	fi
	fail "$1" "a message matching /$2/ on stderr" "$(tr '\n' '|' <"$work/stderr")"
	return 1
}

# expect_stdout NAME PATTERN: check that kcopy's stdout matches an extended regex.
expect_stdout() {
	if grep -Eq -- "$2" "$work/stdout"; then
		return 0
	fi
	fail "$1" "a line matching /$2/ on stdout" "$(head -3 "$work/stdout" | tr '\n' '|')"
	return 1
}

# expect_equal NAME WHAT EXPECTED GOT: compare two values, e.g. sizes.
expect_equal() {
	if [ "$3" = "$4" ]; then
		return 0
	fi
	fail "$1" "$2 $3" "$2 $4"
	return 1
}

# same_bytes NAME FILE1 OFFSET1 FILE2 OFFSET2 LENGTH: compare two byte ranges.
same_bytes() {
	local out

	if out=$(cmp -n "$6" -i "$3:$5" "$2" "$4" 2>&1); then
		return 0
	fi
	fail "$1" "$2 bytes $3+$6 equal to $4 bytes $5+$6" "${out:-differ}"
	return 1
}

# all_zero NAME FILE OFFSET LENGTH: check that a byte range reads as zeros.
all_zero() {
	local out

	if out=$(cmp -n "$4" -i "$3:0" "$2" /dev/zero 2>&1); then
		return 0
	fi
	fail "$1" "$2 bytes $3+$4 all zero" "$out"
	return 1
}

# clear_device DEVICE: fill a loop device with zeros, so a copy must be seen.
clear_device() {
	dd if=/dev/zero of="$1" bs=1M oflag=direct status=none 2>/dev/null
	return 0
}

file_size() {
	stat -c %s "$1"
}

# --- setup ----------------------------------------------------------------

src="$work/source.img"
head -c "${SOURCE_MIB}M" /dev/urandom >"$src" || skip_all "cannot write the source image"
for name in disk1 disk2 disk3; do
	truncate -s "${SOURCE_MIB}M" "$work/$name.img"
done
truncate -s "${SOURCE_MIB}M" "$work/disk4k.img"
new_loop "$work/disk1.img" || skip_all "losetup failed (no loop devices?)"
loop1=$loop_device
new_loop "$work/disk2.img" || skip_all "losetup failed"
loop2=$loop_device
new_loop "$work/disk3.img" || skip_all "losetup failed"
loop3=$loop_device
new_loop "$work/disk4k.img" --sector-size 4096 || skip_all "losetup --sector-size 4096 failed"
loop4k=$loop_device
bytes=$((SOURCE_MIB * 1048576))

# --- the command line -----------------------------------------------------

# --- the I/O engine: the one the suite runs with ---------------------------

# KCOPYD_IO_ENGINE is the suite's parameter (contrib/test.sh --io-engine=E):
# every program here runs with it.  Named, it must be the one that runs;
# auto must be io_uring where the kernel allows it (no seccomp filter, the
# sysctl at 0), else libaio.
asked=${KCOPYD_IO_ENGINE:-auto}
want=$asked
if [ "$asked" = auto ]; then
	want=io_uring
	if [ "$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo 0)" != 0 ] ||
		grep -q '^Seccomp:[[:space:]]*2' /proc/self/status; then
		want=libaio
	fi
fi
clear_device "$loop1"
run_kcopy -v "$src" "$loop1"
expect_status "-v copy exits 0" 0 &&
	expect_stderr "-v names the engine" "^kcopy: I/O engine $want \\(asked: $asked\\)" &&
	same_bytes "-v copy is byte-identical" "$src" 0 "$loop1" 0 "$bytes" &&
	pass "the I/O engine is $want (asked: $asked), and says so"
for engine in io_uring libaio; do
	clear_device "$loop2"
	run_kcopy --verbose --io-engine=$engine "$src" "$loop2"
	expect_status "--io-engine=$engine exits 0" 0 &&
		expect_stderr "--io-engine=$engine runs it" "^kcopy: I/O engine $engine \\(asked: $engine\\)" &&
		same_bytes "--io-engine=$engine copy" "$src" 0 "$loop2" 0 "$bytes" &&
		pass "--io-engine=$engine copies with $engine"
done
run_kcopy --io-engine=uring "$src" "$loop2"
expect_status "--io-engine=uring is a usage error" 2 &&
	expect_stderr "--io-engine=uring: the message" "--io-engine: 'uring' is not auto, io_uring or libaio" &&
	pass "--io-engine=uring refused (exit 2)"

run_kcopy --help
expect_status "--help exits 0" 0 && expect_stdout "--help prints the usage" '^Usage: kcopy' && pass "--help"

run_kcopy --version
expect_status "--version exits 0" 0 && expect_stdout "--version prints it" '^kcopy \(kcopyd\) [0-9]+\.[0-9]+\.[0-9]+$' &&
	pass "--version"

run_kcopy --no-such-option "$src" "$work/never.img"
expect_status "a bad option exits 2" 2 && expect_stderr "a bad option is named" "no-such-option" &&
	pass "a bad option exits 2"

run_kcopy --pages 0 "$src" "$work/never.img"
expect_status "--pages 0 exits 2" 2 && pass "--pages 0 exits 2"

run_kcopy --subjob-kb 6 "$src" "$work/never.img"
expect_status "--subjob-kb 6 exits 2" 2 && expect_stderr "--subjob-kb 6 says why" "multiple of 4" &&
	pass "--subjob-kb 6 exits 2"

run_kcopy "$src"
expect_status "a source alone exits 2" 2 && pass "a source alone exits 2"

run_kcopy --progress=9 "$src" "$work/never.img" 9>&-
expect_status "--progress=FD on a closed descriptor exits 2" 2 &&
	expect_stderr "--progress=FD on a closed descriptor says why" "descriptor 9 is not open" &&
	pass "--progress=FD on a closed descriptor exits 2"

run_kcopy --progress=x "$src" "$work/never.img"
expect_status "--progress=x exits 2" 2 && pass "--progress=x exits 2"

run_kcopy "$src:1000B" "$work/never.img"
expect_status "a byte offset that is not a multiple of 512 exits 2" 2 &&
	expect_stderr "the bad byte offset is explained" "not a multiple of 512" &&
	pass "a byte offset that is not a multiple of 512 exits 2"

# The number grammar is kcopydfs's (src/proto): 1000-based units are refused with a reason.
run_kcopy "$src:1MB" "$work/never.img"
expect_status "SRC:1MB (a 1000-based unit) exits 2" 2 &&
	expect_stderr "SRC:1MB: the reason" "sector 1MB has a 1000-based unit" &&
	pass "SRC:1MB (a 1000-based unit) exits 2 with the reason"

if [ -e "$work/never.img" ]; then
	fail "refused command lines create nothing" "no $work/never.img" "it exists"
else
	pass "refused command lines create nothing"
fi

# --- whole copies ---------------------------------------------------------

clear_device "$loop1"
run_kcopy "$src" "$loop1"
expect_status "1 destination (loop device)" 0 && same_bytes "1 destination (loop device)" "$src" 0 "$loop1" 0 "$bytes" &&
	expect_stderr "the summary line" "^kcopy: copied $bytes bytes \($SOURCE_SECTORS sectors\) to 1 destination in .* MB/s" &&
	pass "1 destination (loop device)"

run_kcopy "$loop1" "$work/from-loop.img"
expect_status "1 destination (a loop device as the source, a new file)" 0 &&
	same_bytes "1 destination (a loop device as the source, a new file)" "$src" 0 "$work/from-loop.img" 0 "$bytes" &&
	pass "1 destination (a loop device as the source, a new file)"

clear_device "$loop2"
clear_device "$loop3"
truncate -s "${SOURCE_MIB}M" "$work/plain.img"
run_kcopy --quiet "$src" "$loop2" "$work/plain.img" "$loop3"
if expect_status "3 destinations (2 loop devices, 1 file)" 0; then
	ok=1
	for dest in "$loop2" "$work/plain.img" "$loop3"; do
		same_bytes "3 destinations: $dest" "$src" 0 "$dest" 0 "$bytes" || ok=0
	done
	[ "$ok" = 1 ] && pass "3 destinations (2 loop devices, 1 file)"
fi
if [ -s "$work/stderr" ]; then
	fail "--quiet prints nothing on success" "an empty stderr" "$(tr '\n' '|' <"$work/stderr")"
else
	pass "--quiet prints nothing on success"
fi

run_kcopy --depth 2 --subjob-kb 64 --pages 32 --write-seq "$src" "$work/small-buffers.img"
expect_status "--depth/--subjob-kb/--pages/--write-seq" 0 &&
	same_bytes "--depth/--subjob-kb/--pages/--write-seq" "$src" 0 "$work/small-buffers.img" 0 "$bytes" &&
	pass "--depth/--subjob-kb/--pages/--write-seq"

run_kcopy --progress "$src:0+8M" "$work/progress.img"
expect_status "--progress" 0 && expect_stderr "--progress draws a bar" '100\.0%.*MB/s.*ETA' &&
	pass "--progress"
if [ "$(head -n 1 "$work/stderr" | wc -L)" -lt 80 ]; then
	pass "--progress into a file: lines of at most 79 columns"
else
	fail "--progress into a file: lines of at most 79 columns" "< 80" "$(head -n 1 "$work/stderr" | wc -L)"
fi

fd_lines=$("$KCOPY" --quiet --progress=3 "$src:0+8M" "$work/progress-fd.img" 3>&1 >/dev/null 2>"$work/stderr" | cat)
expect_equal "--quiet --progress=3 into a pipe: the last line" line "100/100 $((8 * 1048576)) $((8 * 1048576)) done" \
	"$(tail -n 1 <<<"$fd_lines")" && pass "--quiet --progress=3 into a pipe: the last line is 100/100 ... done"
rm -f "$work/progress-fd.img"

# --- created and extended files ---------------------------------------------

rm -f "$work/created.img"
run_kcopy "$src" "$work/created.img"
if expect_status "a created destination file" 0 &&
   same_bytes "a created destination file" "$src" 0 "$work/created.img" 0 "$bytes"; then
	expect_equal "a created destination file" size "$bytes" "$(file_size "$work/created.img")" &&
		expect_equal "a created destination file (0666 & ~umask)" mode \
			"$(printf '%o' $((0666 & ~$(umask))))" "$(stat -c %a "$work/created.img")" &&
		pass "a created destination file"
fi

head -c 1M /dev/urandom >"$work/short.img"
cp "$work/short.img" "$work/short.orig"
run_kcopy "$src:2048+2048" "$work/short.img:4096"
if expect_status "a short destination file is extended" 0 &&
   same_bytes "the extended file has the copy" "$src" $((2048 * 512)) "$work/short.img" $((4096 * 512)) $((2048 * 512)) &&
   same_bytes "the extended file keeps its old data" "$work/short.orig" 0 "$work/short.img" 0 1048576 &&
   all_zero "the extended file's gap is zero" "$work/short.img" 1048576 $((4096 * 512 - 1048576)); then
	expect_equal "a short destination file is extended" size $(((4096 + 2048) * 512)) "$(file_size "$work/short.img")" &&
		pass "a short destination file is extended"
fi

# --- offsets ----------------------------------------------------------------

clear_device "$loop1"
run_kcopy "$src:2048+4096" "$loop1:8192"
expect_status "SRC:2048+4096 to DST:8192" 0 &&
	same_bytes "SRC:2048+4096 to DST:8192" "$src" $((2048 * 512)) "$loop1" $((8192 * 512)) $((4096 * 512)) &&
	all_zero "SRC:2048+4096 to DST:8192 leaves what is before alone" "$loop1" 0 $((8192 * 512)) &&
	all_zero "SRC:2048+4096 to DST:8192 leaves what is after alone" "$loop1" $(((8192 + 4096) * 512)) $((1048576 * 4)) &&
	expect_stderr "SRC:2048+4096 counts 4096 sectors" "copied $((4096 * 512)) bytes \(4096 sectors\)" &&
	pass "SRC:2048+4096 to DST:8192"

clear_device "$loop2"
run_kcopy "$src:1M+2M" "$loop2:4MiB"
expect_status "SRC:1M+2M to DST:4MiB (byte units)" 0 &&
	same_bytes "SRC:1M+2M to DST:4MiB (byte units)" "$src" 1048576 "$loop2" $((4 * 1048576)) $((2 * 1048576)) &&
	all_zero "SRC:1M+2M to DST:4MiB leaves what is before alone" "$loop2" 0 $((4 * 1048576)) &&
	pass "SRC:1M+2M to DST:4MiB (byte units)"

run_kcopy "$src:$((SOURCE_SECTORS - 1024))" "$work/tail.img"
expect_status "SRC:SECTOR without COUNT copies to the end" 0 &&
	same_bytes "SRC:SECTOR without COUNT copies to the end" "$src" $((bytes - 1024 * 512)) "$work/tail.img" 0 $((1024 * 512)) &&
	expect_equal "SRC:SECTOR without COUNT copies to the end" size $((1024 * 512)) "$(file_size "$work/tail.img")" &&
	pass "SRC:SECTOR without COUNT copies to the end"

# A path with colons in it (like /dev/disk/by-path names) is a path.
colon_path="$work/pci-0000:00:1f.2-ata-1"
ln -s "$src" "$colon_path"
run_kcopy "$colon_path" "$work/colon-copy.img"
expect_status "a path with colons" 0 && same_bytes "a path with colons" "$src" 0 "$work/colon-copy.img" 0 "$bytes" &&
	pass "a path with colons"
run_kcopy "$colon_path:2048+8" "$work/colon-slice.img"
expect_status "a path with colons and a range" 0 &&
	same_bytes "a path with colons and a range" "$src" $((2048 * 512)) "$work/colon-slice.img" 0 4096 &&
	pass "a path with colons and a range"

# --- zeroing --------------------------------------------------------------

run_kcopy --quiet "$src" "$loop1"
run_kcopy --zero "$loop1:1024+2048"
expect_status "--zero DST:1024+2048" 0 &&
	all_zero "--zero DST:1024+2048 zeroes its range" "$loop1" $((1024 * 512)) $((2048 * 512)) &&
	same_bytes "--zero leaves what is before alone" "$src" 0 "$loop1" 0 $((1024 * 512)) &&
	same_bytes "--zero leaves what is after alone" "$src" $((3072 * 512)) "$loop1" $((3072 * 512)) $((bytes - 3072 * 512)) &&
	expect_stderr "--zero says what it did" "zeroed $((2048 * 512)) bytes" &&
	pass "--zero DST:1024+2048"

run_kcopy --quiet "$src" "$loop2"
run_kcopy --zero "$loop1" "$loop2"
expect_status "--zero of 2 whole devices" 0 &&
	all_zero "--zero of 2 whole devices: the first" "$loop1" 0 "$bytes" &&
	all_zero "--zero of 2 whole devices: the second" "$loop2" 0 "$bytes" &&
	pass "--zero of 2 whole devices"

rm -f "$work/zeros.img"
run_kcopy --zero "$work/zeros.img:0+3M"
expect_status "--zero creates a file" 0 && all_zero "--zero creates a file" "$work/zeros.img" 0 $((3 * 1048576)) &&
	expect_equal "--zero creates a file" size $((3 * 1048576)) "$(file_size "$work/zeros.img")" &&
	pass "--zero creates a file"

run_kcopy --zero "$work/no-such.img"
expect_status "--zero of a missing file without COUNT" 1 &&
	expect_stderr "--zero of a missing file without COUNT says why" "does not exist" &&
	pass "--zero of a missing file without COUNT"

# --- NBD URIs as regions --------------------------------------------------------
# A URI is taken as it is: never a file to stat, create or extend.  A socket
# nobody serves is refused in one line naming the URI, and nothing is made
# (connecting for real is tests with servers' business).  A local file whose
# name starts like a URI is written ./nbd:...
uri="nbd+unix:///disk?socket=$work/no-such.sock"
(cd "$work" && "$KCOPY" "$src" "$uri:8" >"$work/stdout" 2>"$work/stderr")
status=$?
expect_status "a URI destination nobody serves exits 1" 1 &&
	check "a URI destination nobody serves: one line naming it" \
		"kcopy: $uri: cannot open for writing: " "$(head -c $((${#uri} + 34)) "$work/stderr")"
check "a URI destination nobody serves: one line" 1 "$(wc -l <"$work/stderr")"
check "a URI destination: no file made of it" "" "$(ls -d "$work"/nbd* 2>/dev/null)"
(cd "$work" && "$KCOPY" "nbd://[::1]:1/x:8+8" "$work/never.img" >"$work/stdout" 2>"$work/stderr")
status=$?
expect_status "a URI source (IPv6 literal, port 1) exits 1" 1 &&
	expect_stderr "a URI source: the URI without its suffix" "^kcopy: nbd://\[::1\]:1/x: cannot open: " &&
	pass "a URI source (IPv6 literal, port 1): refused in one line naming it"
check "a URI source: nothing made" "no" "$([ -e "$work/never.img" ] && echo yes || echo no)"
mkdir -p "$work/nbd:"
dd if=/dev/urandom of="$work/nbd:/local" bs=4096 count=4 status=none
(cd "$work" && "$KCOPY" -q ./nbd://local:0+16 "$work/from-nbd-named.img" >"$work/stdout" 2>"$work/stderr")
status=$?
expect_status "./nbd://local is a local file: exit 0" 0 &&
	same_bytes "./nbd://local is a local file: copied" "$work/nbd:/local" 0 "$work/from-nbd-named.img" 0 8192 &&
	pass "a local file named like a URI, written ./nbd://..."
rm -rf "$work/nbd:" "$work/from-nbd-named.img"

# --- refused regions --------------------------------------------------------

run_kcopy "$src:1" "$loop4k"
expect_status "misaligned on a 4096-byte-sector device" 2 &&
	expect_stderr "misaligned on a 4096-byte-sector device is explained" "$loop4k: .*not aligned.*4096" &&
	pass "misaligned on a 4096-byte-sector device"

run_kcopy "$src:0+8" "$loop4k:4"
expect_status "a misaligned DST:SECTOR on a 4096-byte-sector device" 2 &&
	expect_stderr "a misaligned DST:SECTOR is explained" "not aligned" &&
	pass "a misaligned DST:SECTOR on a 4096-byte-sector device"

run_kcopy "$src:8+8" "$work/plain.img" "$loop4k:4"
expect_status "the refused destination is named (destination 1)" 2 &&
	expect_stderr "the refused destination is named" "^kcopy: $loop4k: destination 1 " &&
	pass "the refused destination is named (destination 1)"

run_kcopy "$src:0+8M" "$loop4k:8M"
expect_status "an aligned copy to a 4096-byte-sector device" 0 &&
	same_bytes "an aligned copy to a 4096-byte-sector device" "$src" 0 "$loop4k" $((8 * 1048576)) $((8 * 1048576)) &&
	pass "an aligned copy to a 4096-byte-sector device"

run_kcopy "$src" "$loop1:8"
expect_status "a destination region past the end" 2 &&
	expect_stderr "a destination region past the end is explained" "past the end" &&
	pass "a destination region past the end"

run_kcopy "$src:$((SOURCE_SECTORS - 8))+16" "$work/never.img"
expect_status "a source region past the end" 2 &&
	expect_stderr "a source region past the end is explained" "past its end" &&
	pass "a source region past the end"

run_kcopy "$src:0+2048" "$src:1024"
expect_status "a destination overlapping the source" 2 &&
	expect_stderr "the overlap is explained" "overlaps" &&
	pass "a destination overlapping the source"

run_kcopy "$src:0+2048" "$loop1" "$loop1:1024"
expect_status "overlapping destinations" 2 && expect_stderr "the overlap of destinations is explained" "overlaps" &&
	pass "overlapping destinations"

run_kcopy "$src:0+2048" "$loop1:0+1024"
expect_status "a DST COUNT that differs from the source's" 2 && pass "a DST COUNT that differs from the source's"

# --- write errors -----------------------------------------------------------

small_mount="$work/small"
mkdir "$small_mount"
if mount -t tmpfs -o size=4M tmpfs "$small_mount"; then
	run_kcopy "$src:0+8M" "$work/ok.img" "$small_mount/full.img"
	expect_status "a write error (ENOSPC) exits 1" 1 &&
		expect_stderr "the write error names the destination and errno" \
			"write error on $small_mount/full.img \(destination 1\) sectors [0-9]+\+[0-9]+: ENOSPC" &&
		expect_stderr "the write error bits" "write_err=0x2" &&
		pass "a write error (ENOSPC) exits 1"
	umount "$small_mount"
else
	fail "a write error (ENOSPC)" "a 4 MiB tmpfs mounted" "mount failed"
fi
small_mount=

# --- read errors and cancelling, through nbdkit and nbdfuse -------------------

# fuse_source NAME NBDKIT-ARGS...: export the source through nbdkit with
# filters as the file $work/NAME/nbd, and set fuse_file to its path.
fuse_source() {
	local mount_dir="$work/$1" attempt
	shift
	fuse_file="$mount_dir/nbd"
	mkdir "$mount_dir"
	nbdfuse "$fuse_file" --command nbdkit -s "$@" >/dev/null 2>&1 &
	background_pids+=("$!")
	fuse_mounts+=("$mount_dir")
	for attempt in $(seq 50); do
		[ -f "$fuse_file" ] && return 0
		[ "$attempt" = 50 ] && break
		sleep 0.1
	done
	return 1
}

if command -v nbdkit >/dev/null && command -v nbdfuse >/dev/null; then
	if fuse_source failing --filter=error file "$src" error-pread-rate=100% error=EIO; then
		failing=$fuse_file
		run_kcopy "$failing:0+1M" "$work/from-failing.img"
		expect_status "a read error exits 1" 1 &&
			expect_stderr "the read error names the source, range and errno" \
				"read error on $failing sectors 0\+[0-9]+: EIO \(Input/output error\)" &&
			expect_stderr "the read error bit" "read_err=1 write_err=0x0" &&
			pass "a read error exits 1"
	else
		fail "a read error" "nbdfuse to export a failing source" "no $work/failing/nbd"
	fi

	if fuse_source slow --filter=delay file "$src" rdelay=1; then
		slow=$fuse_file
		for signal_name in INT TERM; do
			want=$((128 + $(kill -l "$signal_name")))
			# Emptied here, not by the job's redirection: the wait for ETA below
			# must not see the last run's bar and signal the job before it has
			# exec'd, while it is still a copy of this shell with its traps
			# (whose EXIT trap would tear down $work under the test).
			: >"$work/stderr"
			# env: background jobs of a script ignore SIGINT, and kcopy keeps it ignored.
			env --default-signal="$signal_name" "$KCOPY" --progress --depth 1 --subjob-kb 64 \
				"$slow" "$work/cancelled.img" >"$work/stdout" 2>"$work/stderr" &
			pid=$!
			background_pids+=("$pid")
			# The first progress line comes from the wait loop, where signals are handled.
			for attempt in $(seq 300); do
				grep -q 'ETA' "$work/stderr" && break
				sleep 0.1
			done
			kill -"$signal_name" "$pid"
			wait "$pid"
			status=$?
			expect_status "SIG$signal_name cancels" "$want" &&
				expect_stderr "SIG$signal_name is reported" "cancelled by SIG$signal_name after [0-9]+ of $bytes bytes" &&
				pass "SIG$signal_name cancels (exit $want)"
		done
	else
		fail "cancelling" "nbdfuse to export a slow source" "no $work/slow/nbd"
	fi

	# A source of about 3 s (32 MiB in 64 reads of 512 KiB, 2 at a time, 100 ms
	# each) whose reads fail while $work/inject-read-error exists.
	if fuse_source resumable --filter=error --filter=delay file "$src" rdelay=100ms \
		error-pread-rate=100% "error-file=$work/inject-read-error"; then
		resumable=$fuse_file
		part=$((32 * 1048576))

		# progress_reader FIFO: read --progress=FD lines as a script would; the verdict
		# "ok LINES FINAL_PERCENT FINAL_DONE FINAL_STATE" goes to FIFO.verdict, and
		# FIFO.started appears with the first line.
		progress_reader() {
			local ok=1 lines=0 last=-1 percent done_bytes total_bytes state final=
			while read -r percent done_bytes total_bytes state; do
				lines=$((lines + 1))
				[ "$lines" = 1 ] && : >"$1.started"
				if ! [[ $percent =~ ^[0-9]+/100$ && $done_bytes =~ ^[0-9]+$ && $total_bytes == "$part" &&
					$state =~ ^(running|done|cancelled|failed)$ ]] || ((done_bytes < last)); then
					ok=0
					echo "bad line $lines: $percent $done_bytes $total_bytes $state" >>"$1.bad"
				fi
				last=$done_bytes
				final="${percent%/100} $done_bytes $state"
			done <"$1"
			echo "$ok $lines $final" >"$1.verdict"
		}

		# resume_command: the command kcopy printed after "..., run:", run with $KCOPY; sets status.
		run_resume_command() {
			resume=$(sed -n '/, run:$/{n;p}' "$work/stderr")
			if [[ $resume != "kcopy "* ]]; then
				status=none
				return
			fi
			eval "\"\$KCOPY\" ${resume#kcopy }" >"$work/stdout" 2>"$work/resume.stderr"
			status=$?
		}

		# SIGHUP cancels as SIGTERM does (129), --progress=3 read by a while-read loop,
		# and the printed command copies the rest.
		fifo=$work/progress.fifo
		rm -f "$fifo" "$fifo".* "$work/resumed.img"
		mkfifo "$fifo"
		progress_reader "$fifo" &
		reader=$!
		"$KCOPY" --progress=3 --subjob-kb 512 --depth 2 "$resumable:0+32M" "$work/resumed.img" \
			3>"$fifo" >"$work/stdout" 2>"$work/stderr" &
		pid=$!
		background_pids+=("$pid")
		wait_until 100 test -e "$fifo.started"
		sleep 0.5
		kill -HUP "$pid"
		wait "$pid"
		status=$?
		wait "$reader"
		read -r fd_ok fd_lines fd_percent fd_done fd_state <"$fifo.verdict"
		expect_status "SIGHUP cancels (exit 129)" 129 &&
			expect_stderr "SIGHUP is reported" "cancelled by SIGHUP after [0-9]+ of $part bytes" &&
			expect_stderr "the resume command is announced" "^kcopy: to copy the rest, from sector [0-9]+ of 65536 on, run:$" &&
			pass "SIGHUP cancels (exit 129) and announces the resume command"
		if [ "$fd_ok" = 1 ] && [ "$fd_lines" -ge 2 ] && [ "$fd_state" = cancelled ] && [ "$fd_done" -lt "$part" ] &&
		   [ "$fd_percent" -lt 100 ]; then
			pass "--progress=3: $fd_lines lines a while-read loop parses, never decreasing, the last 'cancelled' at $fd_percent%"
		else
			fail "--progress=3 parsed by a while-read loop" "well-formed lines, the last cancelled below 100%" \
				"ok=$fd_ok lines=$fd_lines last: $fd_percent $fd_done $fd_state $(cat "$fifo.bad" 2>/dev/null)"
		fi
		if tr -d '\n' <"$work/stderr" | grep -q $'\r\|\033'; then
			fail "stderr into a file has no terminal control characters" "no \\r or ESC" "$(cat -A "$work/stderr")"
		fi
		run_resume_command
		if [[ $resume =~ ^kcopy\ --subjob-kb\ 512\ --depth\ 2\ [^\ ]+:([0-9]+)\+([0-9]+)\ [^\ ]+:([0-9]+)$ ]]; then
			pass "the resume command keeps the options, not --progress=3: $resume"
		else
			fail "the resume command" "kcopy --subjob-kb 512 --depth 2 SRC:C+REST DST:C" "$resume"
		fi
		expect_status "the resume command copies the rest" 0 &&
			same_bytes "cancelled, then resumed: the destination equals the source" "$src" 0 "$work/resumed.img" 0 "$part" &&
			pass "cancelled by SIGHUP, then the printed command: the destination equals the source"
		rm -f "$work/resumed.img"	# the tmpfs is sized for what the later checks make

		# SIGUSR1 prints one line, without a bar and into a file, and the copy goes on.
		rm -f "$work/usr1.img" "$work/usr1.progress"
		"$KCOPY" --progress=3 --subjob-kb 512 --depth 2 "$resumable:0+16M" "$work/usr1.img" \
			3>"$work/usr1.progress" >"$work/stdout" 2>"$work/stderr" &
		pid=$!
		background_pids+=("$pid")
		wait_until 100 test -s "$work/usr1.progress"
		kill -USR1 "$pid"
		wait "$pid"
		status=$?
		expect_status "SIGUSR1: the copy goes on (exit 0)" 0 &&
			expect_stderr "SIGUSR1 prints a progress line" \
				"^kcopy: [0-9]+ of $((16 * 1048576)) bytes \([0-9.]+%\) done in [0-9.]+ s, [0-9.]+ MB/s, ETA [0-9]+:[0-9]{2}:[0-9]{2}$" &&
			same_bytes "SIGUSR1: the destination equals the source" "$src" 0 "$work/usr1.img" 0 $((16 * 1048576)) &&
			expect_equal "SIGUSR1: the last --progress=3 line" line "100/100 $((16 * 1048576)) $((16 * 1048576)) done" \
				"$(tail -n 1 "$work/usr1.progress")" &&
			pass "SIGUSR1 prints a line, the copy finishes, and --progress=3 ends in 100/100 ... done"
		rm -f "$work/usr1.img"

		# A read error half-way: the printed command, once the source reads again, finishes the copy.
		rm -f "$work/failed.img" "$work/failed.progress" "$work/inject-read-error"
		"$KCOPY" --progress=3 --subjob-kb 512 --depth 2 "$resumable:0+32M" "$work/failed.img" \
			3>"$work/failed.progress" >"$work/stdout" 2>"$work/stderr" &
		pid=$!
		background_pids+=("$pid")
		wait_until 100 test -s "$work/failed.progress"
		: >"$work/inject-read-error"
		wait "$pid"
		status=$?
		rm -f "$work/inject-read-error"
		expect_status "a read error half-way exits 1" 1 &&
			expect_stderr "the read error is reported" "read error on $resumable sectors [0-9]+\+[0-9]+: EIO" &&
			expect_stderr "the resume command is announced after a failure" "^kcopy: to copy the rest, from sector [1-9][0-9]* of 65536 on, run:$" &&
			expect_equal "the last --progress=3 line says failed" state failed "$(tail -n 1 "$work/failed.progress" | cut -d' ' -f4)" &&
			pass "a read error half-way: exit 1, the error, the resume command, 'failed' on --progress=3"
		run_resume_command
		expect_status "after the read error, the resume command copies the rest" 0 &&
			same_bytes "failed, then resumed: the destination equals the source" "$src" 0 "$work/failed.img" 0 "$part" &&
			pass "failed on a read error, then the printed command: the destination equals the source"
		rm -f "$work/failed.img"
	else
		fail "resuming" "nbdfuse to export a slow, failing source" "no $work/resumable/nbd"
	fi
else
	echo "SKIP: read errors and cancelling (needs nbdkit and nbdfuse)"
fi

# --- issue 12, items 9-12: refusals that must change nothing -------------------

# file_state FILE: size, modification time (ns) and change time, or "absent".
file_state() {
	stat -c '%s %y' "$1" 2>/dev/null || echo absent
}

# expect_unchanged NAME FILE BEFORE: FILE's file_state is still BEFORE.
expect_unchanged() {
	local now

	now=$(file_state "$2")
	[ "$now" = "$3" ] && return 0
	fail "$1" "$2 left as it was ($3)" "$now"
	return 1
}

# item 9: a block device with a mounted filesystem is refused (O_EXCL claim).
if command -v mkfs.ext4 >/dev/null && command -v e2fsck >/dev/null; then
	truncate -s 64M "$work/ext4.img"
	mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$work/ext4.img" >/dev/null 2>&1
	ext4_dir="$work/ext4-mounted"
	mkdir "$ext4_dir"
	if new_loop "$work/ext4.img" && ext4_loop=$loop_device && mount -t ext4 "$ext4_loop" "$ext4_dir"; then
		fuse_mounts+=("$ext4_dir")	# unmounted first by cleanup, before the loop devices go
		echo "a file on the mounted filesystem" >"$ext4_dir/file"
		sync
		ext4_before=$(sha256sum <"$ext4_loop")
		run_kcopy "$src:0+1M" "$ext4_loop"
		expect_status "a mounted filesystem is refused: exit 2" 2 &&
			expect_stderr "a mounted filesystem is refused: the reason" \
				"^kcopy: $ext4_loop: in use \(mounted, or held exclusively by another program\)" &&
			pass "a mounted filesystem is refused: exit 2 and the reason"
		run_kcopy "$src:0+1M" "$work/ok-first.img" "$ext4_loop:4M"
		expect_status "a mounted filesystem as the second destination is refused" 2 &&
			expect_equal "a refusal of the second destination creates nothing" state absent \
				"$(file_state "$work/ok-first.img")" &&
			pass "a mounted filesystem as the second destination is refused, nothing created"
		run_kcopy --zero "$ext4_loop:0+1M"
		expect_status "--zero on a mounted filesystem is refused" 2 && pass "--zero on a mounted filesystem is refused"
		sync
		ext4_after=$(sha256sum <"$ext4_loop")
		expect_equal "the mounted filesystem's bytes are unchanged" sha256 "$ext4_before" "$ext4_after" &&
			pass "the mounted filesystem's bytes are unchanged"

		# item 11: a range past the largest file of ext4 (16 TiB with 4 KiB blocks) creates nothing.
		run_kcopy "$src:0+8" "$ext4_dir/huge.img:17T"
		expect_status "past ext4's largest file: exit 2" 2 &&
			expect_stderr "past ext4's largest file: the reason" "largest file its filesystem allows" &&
			expect_equal "past ext4's largest file: no file left" state absent "$(file_state "$ext4_dir/huge.img")" &&
			pass "past ext4's largest file: refused, nothing created"

		umount_retry "$ext4_dir"
		if out=$(e2fsck -fn "$work/ext4.img" 2>&1); then
			pass "the filesystem is clean after the refusals (e2fsck -fn)"
		else
			fail "the filesystem is clean after the refusals" "e2fsck -fn exit 0" "$(echo "$out" | tail -3 | tr '\n' '|')"
		fi
		# Not mounted any more: the same device is accepted, and claimed once when given twice.
		run_kcopy "$src:0+1M" "$ext4_loop" "$ext4_loop:4M"
		expect_status "an unmounted device given twice is one claim" 0 &&
			same_bytes "an unmounted device given twice: the second copy" "$src" 0 "$ext4_loop" $((4 * 1048576)) 1048576 &&
			pass "an unmounted device given twice is one claim"
	else
		fail "a mounted filesystem is refused" "an ext4 mounted on a loop device" "losetup or mount failed"
	fi
else
	echo "SKIP: a mounted filesystem is refused (needs mkfs.ext4 and e2fsck)"
fi

# item 10: a loop device and its backing file are one storage.
head -c 64M /dev/urandom >"$work/alias.img"
cp "$work/alias.img" "$work/alias.orig"
if new_loop "$work/alias.img"; then
	alias_loop=$loop_device
	run_kcopy "$work/alias.img:0+16M" "$alias_loop:1M"
	expect_status "FILE:0+16M to a loop over FILE at 1M: exit 2" 2 &&
		expect_stderr "FILE:0+16M to a loop over FILE at 1M: the reason" "^kcopy: $alias_loop: .*overlaps the source" &&
		same_bytes "FILE:0+16M to a loop over FILE at 1M: nothing written" "$work/alias.orig" 0 "$work/alias.img" 0 $((64 * 1048576)) &&
		pass "FILE:0+16M to a loop over FILE at 1M is refused"
	run_kcopy "$alias_loop:0+16M" "$work/alias.img:8M"
	expect_status "a loop over FILE to FILE, overlapping: exit 2" 2 &&
		expect_stderr "a loop over FILE to FILE: the reason" "overlaps the source" &&
		pass "a loop over FILE:0+16M to FILE at 8M is refused"
	run_kcopy "$src:0+1M" "$work/alias.img:8M" "$alias_loop:8M"
	expect_status "two destinations, FILE and a loop over it, the same range: exit 2" 2 &&
		expect_stderr "two destinations through a loop: the reason" "overlaps destination 0" &&
		pass "FILE and a loop over it as two destinations of one range are refused"
	run_kcopy "$work/alias.img:0+1M" "$alias_loop:32M"
	expect_status "FILE:0+1M to a loop over FILE at 32M (apart)" 0 &&
		same_bytes "FILE:0+1M to a loop over FILE at 32M" "$work/alias.orig" 0 "$work/alias.img" $((32 * 1048576)) 1048576 &&
		pass "FILE:0+1M to a loop over FILE at 32M (apart) copies"
else
	fail "loop aliases" "a loop device over alias.img" "losetup failed"
fi
if new_loop "$work/alias.img" -o 8M && alias_at_8m=$loop_device &&
   new_loop "$work/alias.img" -o 16M && alias_at_16m=$loop_device; then
	cp "$work/alias.img" "$work/alias.orig"
	run_kcopy "$alias_at_8m:0+16M" "$alias_at_16m:0"
	expect_status "two loops over one file (-o 8M, -o 16M), overlapping: exit 2" 2 &&
		expect_stderr "two loops over one file: the reason" "overlaps the source" &&
		same_bytes "two loops over one file: nothing written" "$work/alias.orig" 0 "$work/alias.img" 0 $((64 * 1048576)) &&
		pass "two loops over one file at 8M and 16M, overlapping, are refused"
	run_kcopy "$alias_at_8m:0+4M" "$alias_at_16m:8M"
	expect_status "two loops over one file, apart" 0 &&
		same_bytes "two loops over one file, apart" "$work/alias.orig" $((8 * 1048576)) "$work/alias.img" $((24 * 1048576)) $((4 * 1048576)) &&
		pass "two loops over one file at 8M and 16M, apart, copy"
else
	fail "two loops over one file" "loop devices at offsets 8M and 16M" "losetup -o failed"
fi

# A partition and its disk (an MBR written by hand: partition 1 at sector 2048, 20480 sectors).
truncate -s 64M "$work/parted.img"
printf '\x00\x00\x02\x00\x83\x00\x00\x00\x00\x08\x00\x00\x00\x50\x00\x00' |
	dd of="$work/parted.img" bs=1 seek=446 conv=notrunc status=none
printf '\x55\xaa' | dd of="$work/parted.img" bs=1 seek=510 conv=notrunc status=none
if new_loop "$work/parted.img" -P && parted_loop=$loop_device; then
	for attempt in 1 2 3 4 5 6 7 8 9 10; do
		[ -b "${parted_loop}p1" ] && break
		# A kernel without MBR support still takes a partition by hand (BLKPG).
		[ "$attempt" = 3 ] && command -v addpart >/dev/null && addpart "$parted_loop" 1 2048 20480 2>/dev/null
		sleep 0.2
	done
	if [ -b "${parted_loop}p1" ]; then
		run_kcopy "$parted_loop:0+2M" "${parted_loop}p1:0"
		expect_status "a disk's first 2M to its partition at 1M: exit 2" 2 &&
			expect_stderr "a disk to its partition: the reason" "overlaps the source" &&
			pass "a disk's sectors 0+2M to its partition (at 1M) are refused"
		run_kcopy "$parted_loop:0+1M" "${parted_loop}p1:0"
		expect_status "a disk's first 1M to its partition at 1M (adjacent)" 0 &&
			pass "a disk's sectors 0+1M to its partition (at 1M) copy"
	else
		echo "SKIP: a partition and its disk (no ${parted_loop}p1: no partition support)"
	fi
else
	fail "a partition and its disk" "a loop device with partitions" "losetup -P failed"
fi

# item 11: an overlapping range that would grow the file leaves it as it was.
head -c 8M /dev/urandom >"$work/grow.img"
touch -d '2020-01-02 03:04:05' "$work/grow.img"
grow_before=$(file_state "$work/grow.img")
run_kcopy "$work/grow.img:4M+4M" "$work/grow.img:6M"
expect_status "an overlap that would extend the file: exit 2" 2 &&
	expect_stderr "an overlap that would extend the file: the reason" "overlaps the source" &&
	expect_unchanged "an overlap that would extend the file" "$work/grow.img" "$grow_before" &&
	pass "an overlap that would extend the file: refused, size and mtime unchanged"

run_kcopy "$src:0+1M" "$work/twice.img" "$work/./twice.img:512K"
expect_status "one new file twice, overlapping: exit 2" 2 &&
	expect_stderr "one new file twice: the reason" "overlaps destination 0" &&
	expect_equal "one new file twice, overlapping: not created" state absent "$(file_state "$work/twice.img")" &&
	pass "one new file named twice, overlapping: refused, not created"

# run_kcopy_limited KIB ARGS...: run_kcopy under ulimit -f KIB.
run_kcopy_limited() {
	local kib=$1
	shift
	(ulimit -f "$kib" && exec "$KCOPY" "$@") >"$work/stdout" 2>"$work/stderr"
	status=$?
}

run_kcopy_limited 1024 "$src:0+2M" "$work/limited.img"
expect_status "past ulimit -f: exit 2" 2 &&
	expect_stderr "past ulimit -f: the reason" "beyond the file size limit of 1048576 bytes \(ulimit -f\)" &&
	expect_equal "past ulimit -f: no file left" state absent "$(file_state "$work/limited.img")" &&
	pass "past ulimit -f (new file): refused, nothing created"

head -c 512K /dev/urandom >"$work/limited-short.img"
touch -d '2020-01-02 03:04:05' "$work/limited-short.img"
limited_before=$(file_state "$work/limited-short.img")
run_kcopy_limited 1024 "$src:0+1M" "$work/limited-short.img:512K"
expect_status "past ulimit -f (a short file): exit 2" 2 &&
	expect_unchanged "past ulimit -f (a short file)" "$work/limited-short.img" "$limited_before" &&
	pass "past ulimit -f (a short file): refused, size and mtime unchanged"

# item 12: a full disk is ENOSPC when the last write is short (4 MiB to a 3584 KiB tmpfs).
small_mount="$work/small"
mkdir -p "$small_mount"
if mount -t tmpfs -o size=3584k tmpfs "$small_mount"; then
	run_kcopy "$src:0+4M" "$small_mount/full.img"
	expect_status "4 MiB to a 3584 KiB tmpfs exits 1" 1 &&
		expect_stderr "4 MiB to a 3584 KiB tmpfs: ENOSPC" \
			"write error on $small_mount/full.img \(destination 0\) sectors [0-9]+\+[0-9]+: ENOSPC \(No space left on device\)" &&
		pass "4 MiB to a 3584 KiB tmpfs (a short last write) is ENOSPC"
	if grep -q EIO "$work/stderr"; then
		fail "a full tmpfs is not EIO" "no EIO on stderr" "$(tr '\n' '|' <"$work/stderr")"
	fi
	umount "$small_mount"
else
	fail "a full disk is ENOSPC" "a 3584 KiB tmpfs mounted" "mount failed"
fi
small_mount=

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
