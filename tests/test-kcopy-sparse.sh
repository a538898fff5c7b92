#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopy-sparse.sh: what the kcopy command does with sparse sources,
# zero ranges and copy offload, on tmpfs and on ext4, XFS and btrfs images
# the test makes (on its own tmpfs) and loop-mounts:
#
#  - a source with holes at its start, in its middle and at its end, data
#    extents of random bytes (some placed at random, the seed is printed)
#    and 1 MiB of zeros written as data, copied to a new file (sparse, and
#    no zero operation at all: kcopy knows a file it made reads as zeros),
#    to an existing file full of other bytes (zero ranges punched), past
#    the old end of a file it extends and across it, with
#    --destination-is-zero, with --allocated, and to a tmpfs-backed loop
#    device;
#  - the summary's "(N data, Z zero, O offloaded)" checked against the
#    source's layout every time, and every copy compared with cmp;
#  - offload: one file destination offloaded (a reflink on XFS and btrfs:
#    its extents are shared, filefrag says so) beside a loop device in one
#    job; --no-offload offloads nothing; EXDEV (XFS to btrfs) falls back;
#  - a full filesystem (an offloaded copy, an --allocated one) says ENOSPC,
#    never EIO.
#
# tests/test-sparse-devices.sh checks the library's modes directly; this is
# kcopy's own part: its options, the flag it works out, its summary.
#
# Run by `make check` (which exports KCOPY), or by hand:
#   sudo KCOPY=./kcopy tests/test-kcopy-sparse.sh
# Needs root, mkfs.ext4, mkfs.xfs, mkfs.btrfs, filefrag and strace (exit 77
# naming what is missing; contrib/deps.sh installs them all).  Prints PASS or
# FAIL per check with what it expected and got; the last line is
# "N passed, M failed".

set -u

KCOPY=${KCOPY:-$(dirname "$0")/../kcopy}
. "${TESTS_SRCDIR:-$(dirname "$0")}/report-lib.sh"

[ "$(id -u)" = 0 ] || skip_all "needs root (mounts, loop devices)"
for tool in losetup cmp mkfs.ext4 mkfs.xfs mkfs.btrfs filefrag strace; do
	command -v "$tool" >/dev/null || skip_all "needs $tool (contrib/deps.sh installs it)"
done
[ -x "$KCOPY" ] || skip_all "no kcopy at '$KCOPY' (set KCOPY)"

MiB=$((1024 * 1024))
SIZE=$((64 * MiB))
SECTORS=$((SIZE / 512))
SLACK=$((2 * MiB))	# metadata, and the rounding of a filesystem's blocks

work=$(mktemp -d "${TMPDIR:-/tmp}/test-kcopy-sparse.XXXXXX") || exit 1
mounts=()
loops=()
trace_dir=
cleanup() {
	local index

	for ((index = ${#mounts[@]} - 1; index >= 0; index--)); do
		umount "${mounts[index]}" 2>/dev/null || umount -l "${mounts[index]}" 2>/dev/null
	done
	for index in "${loops[@]}"; do losetup -d "$index" 2>/dev/null; done
	[ -n "$trace_dir" ] && [ -d "$trace_dir" ] && rmdir "$trace_dir"
	rmdir "$work" 2>/dev/null
}
trap cleanup EXIT
mount -t tmpfs -o size=2g tmpfs "$work" || skip_all "cannot mount a tmpfs on $work"
mounts+=("$work")

# new_loop FILE: set loop to a new loop device over FILE.
new_loop() {
	loop=$(losetup -f --show "$1") || return 1
	loops+=("$loop")
}

# mkfs_mount FS SIZE: make an FS image of SIZE on the tmpfs, mount it on $work/FS.
mkfs_mount() {
	local fs=$1 image=$work/$1.img
	truncate -s "$2" "$image"
	case $fs in
	ext4*) mkfs.ext4 -q -F "$image" ;;
	xfs) mkfs.xfs -q -f -m reflink=1 "$image" ;;
	btrfs) mkfs.btrfs -q -f "$image" ;;
	esac || return 1
	mkdir -p "$work/$fs"
	new_loop "$image" || return 1
	mount "$loop" "$work/$fs" || return 1
	mounts+=("$work/$fs")
}

# run_kcopy ARGS...: run kcopy; $status, $out (its stderr).
run_kcopy() {
	out=$("$KCOPY" "$@" 2>&1 >/dev/null)
	status=$?
}

# counts: the summary's "(D data, Z zero, O offloaded)" as "D Z O", or "none".
counts() {
	local parsed
	parsed=$(sed -nE 's/^kcopy: copied .*\(([0-9]+) data, ([0-9]+) zero, ([0-9]+) offloaded\)$/\1 \2 \3/p' <<<"$out")
	echo "${parsed:-none}"
}

allocated() { echo $(($(stat -c %b "$1") * 512)); }

# holds NAME CONDITION EXPECTED GOT: pass if the shell CONDITION holds.
holds() {
	local name=$1 condition=$2
	if eval "$condition"; then pass "$name"; else fail "$name" "$3" "$4"; fi
}

# copied NAME SRC DST [OFFSET]: kcopy exited 0 and DST (from byte OFFSET) holds SRC's bytes.
copied() {
	local name=$1 from=$2 to=$3 offset=${4:-0} diff
	if [ "$status" != 0 ]; then
		fail "$name: kcopy exits 0" "status 0" "status $status: $(tr '\n' '|' <<<"$out")"
		return 1
	fi
	if diff=$(cmp -n "$SIZE" -i "0:$offset" "$from" "$to" 2>&1); then
		pass "$name: the same bytes (cmp)"
	else
		fail "$name: the same bytes (cmp)" "$to bytes $offset+$SIZE equal to $from" "$diff"
		return 1
	fi
}

# expect_counts NAME DATA OFFLOADED: the summary's counts, DATA sectors of data.
expect_counts() {
	local want="$2 $((SECTORS - $2)) $3"
	holds "$1: the summary says ($want)" '[ "$(counts)" = "$want" ]' "($want)" "$(counts) in: $out"
}

# at_most NAME FILE BYTES / at_least NAME FILE BYTES: FILE's allocation.
at_most() {
	local got limit=$3
	got=$(allocated "$2")
	holds "$1: $got bytes allocated, at most $limit" '[ "$got" -le "$limit" ]' "at most $limit" "$got"
}
at_least() {
	local got limit=$3
	got=$(allocated "$2")
	holds "$1: $got bytes allocated, at least $limit" '[ "$got" -ge "$limit" ]' "at least $limit" "$got"
}

# The I/O engine kcopy runs with here (the suite's KCOPYD_IO_ENGINE, or auto):
# with libaio the zeroing is fallocate(2) calls, with io_uring it is
# IORING_OP_FALLOCATE requests, which no system call shows.
truncate -s 1M "$work/probe"
engine=$("$KCOPY" -v -q "$work/probe" "$work/probe.copy" 2>&1 | sed -n 's/^kcopy: I\/O engine \([a-z_]*\) .*/\1/p')
rm -f "$work/probe" "$work/probe.copy"
[ -n "$engine" ] || { fail "kcopy -v names its I/O engine" "a name" "nothing"; exit 1; }
echo "kcopy runs with the $engine engine here"
trace_dir=
if [ "$engine" = io_uring ]; then
	tracefs=/sys/kernel/tracing
	# Mounted where it belongs, if it was not, and left so.
	[ -d "$tracefs/instances" ] || mount -t tracefs nodev "$tracefs" ||
		skip_all "io_uring's zeroing is counted with tracefs, which cannot be mounted here"
	[ -d "$tracefs/events/io_uring/io_uring_submit_req" ] ||
		skip_all "this kernel has no io_uring:io_uring_submit_req tracepoint to count zeroing with"
	trace_dir=$tracefs/instances/test-kcopy-sparse-$$
fi

# zero_calls ARGS...: run kcopy and set $zero_calls to how many zeroing
# calls it made: fallocate(2) under strace with libaio; with io_uring the
# IORING_OP_FALLOCATE (17) requests its threads submitted, from a tracefs
# instance of our own that follows kcopy's threads (set_event_pid with
# event-fork), so that other programs' rings do not count.
# (LeakSanitizer cannot run under ptrace: in a sanitized build it is off for
# these runs only; the same paths run without strace elsewhere.)
zero_calls() {
	if [ "$engine" = io_uring ]; then
		mkdir "$trace_dir" || { fail "a tracefs instance" "made" "mkdir $trace_dir failed"; exit 1; }
		echo 1 >"$trace_dir/options/event-fork"
		echo 1 >"$trace_dir/options/record-tgid"
		echo 'opcode == 17' >"$trace_dir/events/io_uring/io_uring_submit_req/filter"
		echo 1 >"$trace_dir/events/io_uring/io_uring_submit_req/enable"
		sh -c 'echo $$ >"$0/set_event_pid" && exec "$@"' "$trace_dir" "$KCOPY" "$@" 2>"$work/stderr" >/dev/null &
		kcopy_pid=$!
		wait "$kcopy_pid"
		status=$?
		# The event lines of kcopy's own threads (the filter kept opcode 17 only;
		# kernels before 6.0 print it as a number, not as FALLOCATE), by their
		# thread group: set_event_pid keeps the ids of kcopy's threads once they
		# are gone, and another test's process that gets one of them counts too.
		zero_calls=$(grep -v '^#' "$trace_dir/trace" | grep -c "([[:space:]]*$kcopy_pid)")
		echo 0 >"$trace_dir/events/io_uring/io_uring_submit_req/enable"
		rmdir "$trace_dir"
	else
		ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
			strace -f -qq -e trace=fallocate -o "$work/strace" "$KCOPY" "$@" 2>"$work/stderr" >/dev/null
		status=$?
		zero_calls=$(grep -c 'fallocate(' "$work/strace")
	fi
	out=$(<"$work/stderr")
}

# --- the source ---------------------------------------------------------------
#
# 64 MiB: a hole at 0-2 MiB; random data at 2-5 MiB, 9-10 MiB, 20-24 MiB (of
# which 21-22 MiB are zeros written as data: a zero range that is no hole),
# one extent of 64 KiB to 1 MiB at the start of each MiB of 28-40 MiB, its
# length drawn at random; a hole in the middle; 44-45 MiB; a hole at 45-64 MiB
# (the end).  Every extent is aligned to 64 KiB, the grain of zero detection,
# so the sectors of data are known exactly.
seed=${KCOPY_SPARSE_SEED:-$((RANDOM * 32768 + RANDOM))}
RANDOM=$seed
echo "the source's random extents come from seed $seed (KCOPY_SPARSE_SEED=$seed repeats them)"
extents=("2 48" "9 16" "20 64" "44 16")	# MiB and 64 KiB units
for mib in $(seq 28 39); do extents+=("$mib $((RANDOM % 16 + 1))"); done
make_source() {
	local path=$1 extent mib units
	rm -f "$path"
	truncate -s "$SIZE" "$path"
	for extent in "${extents[@]}"; do
		read -r mib units <<<"$extent"
		dd if=/dev/urandom of="$path" bs=64K seek=$((mib * 16)) count="$units" conv=notrunc status=none
	done
	dd if=/dev/zero of="$path" bs=1M seek=21 count=1 conv=notrunc status=none
	sync "$path"
}
# What a copy that reads the source counts as data: its extents but the MiB
# of zeros; what one that only offloads counts (it reads nothing, so the
# zeros in an extent are data to it) and leaves allocated: every extent.
extent_sectors=0
for extent in "${extents[@]}"; do
	read -r mib units <<<"$extent"
	extent_sectors=$((extent_sectors + units * 128))
done
data_sectors=$((extent_sectors - 2048))
data_bytes=$((data_sectors * 512))
extent_bytes=$((extent_sectors * 512))

# A tmpfs-backed loop device: an ordinary (not offloaded) destination.
truncate -s "$SIZE" "$work/device.img"
new_loop "$work/device.img" || skip_all "losetup failed (no loop devices?)"
device=$loop

mkdir -p "$work/tmpfs"
for fs in ext4 xfs btrfs; do
	mkfs_mount "$fs" 512M || { fail "$fs: made and mounted" "a mounted $fs" "mkfs or mount failed"; exit 1; }
done

for fs in tmpfs ext4 xfs btrfs; do
	dir=$work/$fs
	src=$dir/source
	make_source "$src"

	# A new file: sparse, every zero range skipped (no fallocate at all), the data offloaded.
	zero_calls "$src" "$dir/new"
	copied "$fs: to a new file" "$src" "$dir/new" &&
		expect_counts "$fs: to a new file (offloaded)" "$extent_sectors" "$extent_sectors" &&
		at_most "$fs: a new file is sparse" "$dir/new" $((extent_bytes + SLACK)) &&
		holds "$fs: a new file: zero ranges skipped, not zeroed" '[ "$zero_calls" = 0 ]' \
			"no fallocate" "$zero_calls fallocate calls"

	# An existing file of other bytes: its zero ranges are punched.
	dd if=/dev/urandom of="$dir/full" bs=1M count=64 status=none
	zero_calls --no-offload "$src" "$dir/full"
	copied "$fs: over an existing file" "$src" "$dir/full" &&
		expect_counts "$fs: over an existing file (--no-offload)" "$data_sectors" 0 &&
		at_most "$fs: over an existing file: zero ranges freed" "$dir/full" $((data_bytes + SLACK)) &&
		holds "$fs: over an existing file: zero ranges zeroed" '[ "$zero_calls" -gt 0 ]' \
			"fallocate calls" "none"

	# --destination-is-zero: told, kcopy zeroes nothing in an existing file ...
	rm -f "$dir/told"
	truncate -s "$SIZE" "$dir/told"
	zero_calls --destination-is-zero "$src" "$dir/told"
	copied "$fs: --destination-is-zero" "$src" "$dir/told" &&
		expect_counts "$fs: --destination-is-zero (offloaded)" "$extent_sectors" "$extent_sectors" &&
		at_most "$fs: --destination-is-zero" "$dir/told" $((extent_bytes + SLACK)) &&
		holds "$fs: --destination-is-zero: nothing zeroed" '[ "$zero_calls" = 0 ]' "no fallocate" \
			"$zero_calls fallocate calls"
	# ... and believes it: the old bytes of a file that was not zero stay in its zero ranges.
	dd if=/dev/urandom of="$dir/lied" bs=1M count=64 status=none
	run_kcopy --destination-is-zero --no-offload "$src" "$dir/lied"
	holds "$fs: --destination-is-zero over data keeps the data in the zero ranges" \
		'[ "$status" = 0 ] && ! cmp -s -n $MiB "$src" "$dir/lied"' "status 0, the first MiB (a hole) not zeros" \
		"status $status"

	# --allocated: every range allocated, zeros included.
	rm -f "$dir/allocated"
	run_kcopy --allocated --no-offload "$src" "$dir/allocated"
	copied "$fs: --allocated" "$src" "$dir/allocated" &&
		expect_counts "$fs: --allocated" "$data_sectors" 0 &&
		at_least "$fs: --allocated: fully allocated" "$dir/allocated" "$SIZE"

	# Extended: past the old end of a 16 MiB file, zero ranges are skipped; across it, zeroed.
	head -c $((16 * MiB)) /dev/urandom >"$dir/grown"
	cp "$dir/grown" "$dir/grown.before"
	zero_calls "$src" "$dir/grown:16M"
	copied "$fs: past the old end of a file" "$src" "$dir/grown" $((16 * MiB)) &&
		holds "$fs: past the old end: zero ranges skipped" '[ "$zero_calls" = 0 ]' "no fallocate" \
			"$zero_calls fallocate calls" &&
		holds "$fs: past the old end: the old bytes stay" 'cmp -s -n $((16 * MiB)) "$dir/grown" "$dir/grown.before"' \
			"the first 16 MiB unchanged" "changed"
	head -c $((16 * MiB)) /dev/urandom >"$dir/across"
	zero_calls "$src" "$dir/across:8M"
	copied "$fs: across the old end of a file" "$src" "$dir/across" $((8 * MiB)) &&
		holds "$fs: across the old end: zero ranges zeroed" '[ "$zero_calls" -gt 0 ]' "fallocate calls" "none"

	# A tmpfs-backed loop device: zeroed through it, its backing file punched.
	dd if=/dev/urandom of="$device" bs=1M count=64 oflag=direct status=none
	run_kcopy "$src" "$device"
	copied "$fs: to a loop device" "$src" "$device" &&
		expect_counts "$fs: to a loop device" "$data_sectors" 0 &&
		at_most "$fs: to a loop device: its backing file" "$work/device.img" $((data_bytes + SLACK))

	# Offload beside an ordinary destination, in one job.
	rm -f "$dir/offloaded"
	run_kcopy "$src" "$dir/offloaded" "$device"
	copied "$fs: offloaded beside a loop device (the file)" "$src" "$dir/offloaded" &&
		copied "$fs: offloaded beside a loop device (the device)" "$src" "$device" &&
		expect_counts "$fs: offloaded beside a loop device (the source is read)" "$data_sectors" "$data_sectors"
	if [ "$fs" = xfs ] || [ "$fs" = btrfs ]; then
		shared=$(filefrag -v "$dir/offloaded" | grep -c shared)
		holds "$fs: the offloaded copy is a reflink ($shared extents shared)" '[ "$shared" -gt 0 ]' \
			"shared extents in filefrag -v" "$(filefrag -v "$dir/offloaded" | tr '\n' '|')"
	fi
	rm -f "$dir/plain"
	run_kcopy --no-offload "$src" "$dir/plain"
	copied "$fs: --no-offload" "$src" "$dir/plain" && expect_counts "$fs: --no-offload offloads nothing" "$data_sectors" 0
	if [ "$fs" = xfs ] || [ "$fs" = btrfs ]; then
		shared=$(filefrag -v "$dir/plain" | grep -c shared)
		holds "$fs: --no-offload: no extent shared" '[ "$shared" = 0 ]' "no shared extent" "$shared"
	fi
	rm -f "$dir"/{new,full,told,lied,allocated,grown,grown.before,across,offloaded,plain}
done

# EXDEV: XFS to btrfs (and tmpfs to ext4) copy_file_range refuses; kcopy
# falls back.  The sub-jobs started before the first refusal came back read
# late, without zero detection: the MiB of zeros may count as data.
exdev() {
	local name=$1 from=$2 to=$3 data zero offloaded
	run_kcopy "$from" "$to"
	copied "$name" "$from" "$to" || return
	read -r data zero offloaded <<<"$(counts)"
	holds "$name: nothing offloaded, $data data sectors" \
		'[ "$offloaded" = 0 ] && [ $((data + zero)) = $SECTORS ] && [ "$data" -ge $data_sectors ] && [ "$data" -le $extent_sectors ]' \
		"(D data, $SECTORS - D zero, 0 offloaded), $data_sectors <= D <= $extent_sectors" "$(counts)"
	at_most "$name: sparse" "$to" $((extent_bytes + SLACK))
}
exdev "XFS to btrfs (EXDEV)" "$work/xfs/source" "$work/btrfs/from-xfs"
exdev "tmpfs to ext4 (EXDEV)" "$work/tmpfs/source" "$work/ext4/from-tmpfs"

# A full filesystem says ENOSPC, never EIO: an offloaded (in-kernel) copy on a
# 64 MiB ext4, and an --allocated copy of a sparse source whose zero ranges
# need room.
if mkfs_mount ext4-small 64M; then
	small=$work/ext4-small
	head -c $((32 * MiB)) /dev/urandom >"$small/dense"
	run_kcopy "$small/dense" "$small/copy"
	holds "a full ext4, offloaded: exit 1, ENOSPC" \
		'[ "$status" = 1 ] && grep -q "ENOSPC" <<<"$out" && ! grep -q "EIO" <<<"$out"' \
		"status 1 and ENOSPC, no EIO" "status $status: $(tr '\n' '|' <<<"$out")"
	holds "a full ext4, offloaded: the summary still counts" '[ "$(counts)" != none ]' \
		"(D data, Z zero, O offloaded)" "$(tr '\n' '|' <<<"$out")"
	rm -f "$small/copy" "$small/dense"
	make_source "$small/source"
	rm -f "$small/filler"
	fallocate -l $((40 * MiB)) "$small/filler" 2>/dev/null || head -c $((40 * MiB)) /dev/zero >"$small/filler" 2>/dev/null
	run_kcopy --allocated "$small/source" "$small/copy"
	holds "a full ext4, --allocated: exit 1, ENOSPC" \
		'[ "$status" = 1 ] && grep -q "ENOSPC" <<<"$out" && ! grep -q "EIO" <<<"$out"' \
		"status 1 and ENOSPC, no EIO" "status $status: $(tr '\n' '|' <<<"$out")"
else
	fail "a 64 MiB ext4" "made and mounted" "mkfs or mount failed"
fi

finish
