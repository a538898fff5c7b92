#!/usr/bin/env bash
# test-sparse-devices.sh: sparse copies, zero operations and copy offload of
# libkcopyd on real filesystems, through tests/sparse-copy (a small program on
# the library).  Makes a tmpfs, and ext4, XFS and btrfs images on it, each
# loop-mounted, plus tmpfs-backed loop devices; every copy is compared byte
# for byte and every destination's allocation (stat blocks) checked against
# what the mode promises: sparse (the default), dest_zero, allocated.  Then
# offload: one offloaded and one ordinary destination in one job on each
# filesystem, and EXDEV across filesystems falling back.  Root; exit 77 only
# when the machine lacks a tool (contrib/deps.sh installs them).
set -euo pipefail

PROG=${BUILDDIR:-.}/tests/sparse-copy
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root (mounts, loop devices)"; exit 77; }
for tool in mkfs.ext4 mkfs.xfs mkfs.btrfs losetup cmp; do
	command -v "$tool" >/dev/null || { echo "SKIP: $tool is missing (contrib/deps.sh installs it)"; exit 77; }
done

MiB=$((1024 * 1024))
work=$(mktemp -d /tmp/kcopyd-test.sparse.XXXXXX)
loops=()
mounts=()
cleanup() {
	local m l
	for m in "${mounts[@]}"; do umount -l "$m" 2>/dev/null || true; done
	for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
	umount -l "$work" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
mount -t tmpfs -o size=3g tmpfs "$work"
mounts+=("$work")

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

allocated() { echo $(( $(stat -c %b "$1") * 512 )); }

# The source: 64 MiB with data at 0-4 MiB, 20-24 MiB (of which 21-22 MiB are
# zeros written as data) and 60-64 MiB, holes elsewhere: 12 MiB of data, 11 MiB
# of it non-zero.
make_source() {
	local path=$1
	rm -f "$path"
	truncate -s $((64 * MiB)) "$path"
	dd if=/dev/urandom of="$path" bs=1M count=4 conv=notrunc status=none
	dd if=/dev/urandom of="$path" bs=1M seek=20 count=4 conv=notrunc status=none
	dd if=/dev/zero of="$path" bs=1M seek=21 count=1 conv=notrunc status=none
	dd if=/dev/urandom of="$path" bs=1M seek=60 count=4 conv=notrunc status=none
	sync "$path"
}

# run WHAT ARGS...: sparse-copy, its output in $out; a failure is reported.
run() {
	local what=$1
	shift
	if ! out=$("$PROG" "$@" 2>&1); then
		fail "$what: sparse-copy $*: $out"
		return 1
	fi
}

field() { echo "$out" | awk -v k="$1" '{ for (i = 1; i < NF; i++) if ($i == k) print $(i + 1) }'; }

same() {
	if cmp -s -n $((64 * MiB)) "$2" "$3"; then ok "$1: same bytes"; else fail "$1: $3 differs from $2"; fi
}

# at_most WHAT FILE BYTES / at_least WHAT FILE BYTES: its allocation.
at_most() {
	local got
	got=$(allocated "$2")
	if [ "$got" -le "$3" ]; then ok "$1: $got bytes allocated (at most $3)"
	else fail "$1: $got bytes allocated, expected at most $3"; fi
}
at_least() {
	local got
	got=$(allocated "$2")
	if [ "$got" -ge "$3" ]; then ok "$1: $got bytes allocated (at least $3)"
	else fail "$1: $got bytes allocated, expected at least $3"; fi
}

mkfs_mount() {
	local fs=$1 image=$work/$1.img dir=$work/$1 loop
	truncate -s 512M "$image"
	case $fs in
	ext4) mkfs.ext4 -q -F "$image" ;;
	xfs) mkfs.xfs -q -f -m reflink=1 "$image" ;;
	btrfs) mkfs.btrfs -q -f "$image" ;;
	esac
	mkdir -p "$dir"
	loop=$(losetup -f --show "$image")
	loops+=("$loop")
	mount "$loop" "$dir"
	mounts+=("$dir")
}

slack=$((2 * MiB))	# metadata and the rounding of a filesystem's blocks
data=$((12 * MiB))
for fs in tmpfs ext4 xfs btrfs; do
	if [ "$fs" = tmpfs ]; then dir=$work/tmpfs; mkdir -p "$dir"; else mkfs_mount "$fs"; dir=$work/$fs; fi
	src=$dir/source
	make_source "$src"

	# Sparse, the default: a new file, and one full of other data.
	truncate -s $((64 * MiB)) "$dir/new"
	run "$fs sparse (no offload)" -f no_offload "$src" "$dir/new" && {
		same "$fs sparse" "$src" "$dir/new"
		at_most "$fs sparse" "$dir/new" $((data - MiB + slack))
		[ "$(field zero)" -ge $((51 * 2048)) ] && ok "$fs sparse: $(field zero) zero sectors" ||
			fail "$fs sparse: $(field zero) zero sectors counted, expected 53 MiB's"
	}
	dd if=/dev/urandom of="$dir/full" bs=1M count=64 status=none
	run "$fs over data" -f no_offload "$src" "$dir/full" && {
		same "$fs over data" "$src" "$dir/full"
		at_most "$fs over data" "$dir/full" $((data - MiB + slack))
	}
	# dest_zero: a new file, zero ranges skipped.
	rm -f "$dir/dz"; truncate -s $((64 * MiB)) "$dir/dz"
	run "$fs dest_zero" -f dest_zero,no_offload "$src" "$dir/dz" && {
		same "$fs dest_zero" "$src" "$dir/dz"
		at_most "$fs dest_zero" "$dir/dz" $((data - MiB + slack))
	}
	# allocated: every range allocated, zeros included.
	rm -f "$dir/al"; truncate -s $((64 * MiB)) "$dir/al"
	run "$fs allocated" -f allocated,no_offload "$src" "$dir/al" && {
		same "$fs allocated" "$src" "$dir/al"
		at_least "$fs allocated" "$dir/al" $((64 * MiB))
	}
	# Offload: one offloaded file and one ordinary destination (a tmpfs loop device) in one job.
	rm -f "$dir/off" "$work/dev-$fs"; truncate -s $((64 * MiB)) "$dir/off" "$work/dev-$fs"
	loop=$(losetup -f --show "$work/dev-$fs"); loops+=("$loop")
	run "$fs offload" "$src" "$dir/off" "$loop" && {
		same "$fs offload (file)" "$src" "$dir/off"
		same "$fs offload (loop device)" "$src" "$loop"
		if [ "$fs" = tmpfs ] || [ "$(field offloaded)" -gt 0 ]; then ok "$fs offload: $(field offloaded) sectors offloaded"
		else fail "$fs offload: nothing offloaded ($out)"; fi
		at_most "$fs offload (file)" "$dir/off" $((data + slack))
		at_most "$fs offload (loop's backing file)" "$work/dev-$fs" $((data - MiB + slack))
	}
done

# EXDEV: from XFS to btrfs copy_file_range refuses; the copy falls back.
rm -f "$work/btrfs/x"; truncate -s $((64 * MiB)) "$work/btrfs/x"
run "xfs to btrfs" "$work/xfs/source" "$work/btrfs/x" && {
	same "xfs to btrfs (EXDEV)" "$work/xfs/source" "$work/btrfs/x"
	if [ "$(field offload_fallbacks)" -ge 1 ] && [ "$(field offloaded)" -eq 0 ]; then ok "EXDEV fell back"
	else fail "EXDEV: $out"; fi
}

# Block devices: a tmpfs-backed loop device as the source (all data, zeros found
# by reading) and as a destination (a copy's zero ranges punched through the
# loop device: its backing file stays sparse), and a zero job on one (zeroed as
# blkdiscard -z zeroes, BLKZEROOUT, which keeps the blocks: tmpfs has no
# FALLOC_FL_ZERO_RANGE, so the kernel writes zero pages and the backing file
# ends up allocated).
cp --sparse=always "$work/tmpfs/source" "$work/src-dev"
srcloop=$(losetup -f --show "$work/src-dev"); loops+=("$srcloop")
rm -f "$work/tmpfs/from-dev"; truncate -s $((64 * MiB)) "$work/tmpfs/from-dev"
run "loop to file" "$srcloop" "$work/tmpfs/from-dev" && {
	same "loop device to file" "$srcloop" "$work/tmpfs/from-dev"
	at_most "loop device to file" "$work/tmpfs/from-dev" $((data - MiB + slack))
	[ "$(field read)" -eq $((64 * 2048)) ] && ok "a block device is all data: every sector read" ||
		fail "loop source: $(field read) sectors read, expected all"
}
dd if=/dev/urandom of="$work/dst-dev" bs=1M count=64 status=none
dstloop=$(losetup -f --show "$work/dst-dev"); loops+=("$dstloop")
run "file to loop" "$work/tmpfs/source" "$dstloop" && {
	same "file to loop device" "$work/tmpfs/source" "$dstloop"
	at_most "file to loop device (backing file)" "$work/dst-dev" $((data - MiB + slack))
}
run "zero a loop device" -z "$dstloop" && {
	cmp -s -n $((64 * MiB)) "$dstloop" /dev/zero && ok "zero job: the loop device reads zeros" ||
		fail "zero job: the loop device is not zero"
	at_least "zero job, as blkdiscard -z (backing file)" "$work/dst-dev" $((64 * MiB))
}
run "zero a loop device, allocated" -z -f allocated "$dstloop" && {
	cmp -s -n $((64 * MiB)) "$dstloop" /dev/zero && ok "allocated zero job: zeros" || fail "allocated zero job: not zero"
	at_least "allocated zero job (backing file)" "$work/dst-dev" $((64 * MiB))
}

echo "$failures failed"
[ "$failures" -eq 0 ]
