#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopydfs-sparse.sh: sparse copies and copy offload through a real
# kcopydfs mount (kcopydfs(5): flags=dest_zero, allocated, no_offload; the
# status lines sectors_data, sectors_zero, sectors_offloaded and
# checkpoint; the sums in stats).  The source is a 64 MiB file with holes
# at its start, middle and end and two 8 MiB extents of random bytes.
#   a. copied to a new sparse file and over a file full of random bytes:
#      the same bytes (cmp), the destination sparse (stat blocks about the
#      data), sectors_data the data and sectors_zero the rest;
#   b. flags=dest_zero onto a fresh truncated file: sparse, the same bytes;
#      over a file of other bytes its zero ranges keep them (skipped);
#   c. flags=allocated: the destination fully allocated;
#   d. to a tmpfs-backed loop device: the same bytes, its backing file
#      punched where the source has zeros;
#   e. on an XFS image with reflink (made and loop-mounted here): offloaded
#      (sectors_offloaded the data), and not with flags=no_offload; from
#      tmpfs to XFS, copy_file_range's EXDEV falls back;
#   f. a slow source (nbdkit through nbdfuse, random bytes written into
#      parts of it) under a daemon with --state-dir: the status lines while
#      it runs (data + zero = progress, checkpoint <= progress), SIGTERM
#      leaves it interrupted with its flags in ctl, "resume" completes it
#      (cmp) with the resumed run's counts; a cancelled job keeps its counts;
#   g. stats grows by the jobs' sums, per destination: sectors_written,
#      sectors_zero, sectors_offloaded, zero_fallbacks, offload_fallbacks;
#   h. bad flag names refused with EINVAL, the reason on the error: line,
#      the job idle and the destination untouched;
#   and as nobody (setpriv) against this root daemon with -o allow_other: a
#   sparse copy into nobody's own file, and a setuid or setgid destination
#   losing its bit with each flag, as nobody's own write would clear it.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-kcopydfs-sparse.sh
# Needs root, FUSE, mkfs.xfs, setpriv, nbdkit and nbdfuse; exits 77
# (skipped) without them (contrib/deps.sh installs them).
#
# Every check prints PASS or FAIL with what it expected and what it got;
# the last line is "N passed, M failed"; the exit status is 1 on any failure.

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics losetup cmp dd truncate stat sha256sum setpriv timeout awk mkfs.xfs nbdkit nbdfuse
setup_work 1G

MiB=$((1024 * 1024))
SIZE=$((64 * MiB))
SECTORS=$((SIZE / 512))
DATA_SECTORS=$((16 * 2048))		# two extents of 8 MiB
ZERO_SECTORS=$((SECTORS - DATA_SECTORS))
SLACK_BLOCKS=4096			# 2 MiB of stat blocks: metadata and a filesystem's rounding
NOBODY=65534
KNOWN="ignore_error, write_seq, dest_zero, allocated, no_offload, verify"

# as_nobody CMD...: CMD as uid 65534, gid 65534, no supplementary groups.
as_nobody() {
	setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups "$@"
}

# make_sparse FILE: the 64 MiB source: holes at 0-8, 16-40 and 48-64 MiB, random bytes at 8-16 and 40-48 MiB.
make_sparse() {
	rm -f "$1"
	truncate -s "$SIZE" "$1"
	dd if=/dev/urandom of="$1" bs=1M seek=8 count=8 conv=notrunc status=none
	dd if=/dev/urandom of="$1" bs=1M seek=40 count=8 conv=notrunc status=none
}

# fresh FILE [SIZE]: a new file of holes only.
fresh() {
	rm -f "$1"
	truncate -s "${2:-$SIZE}" "$1"
}

blocks() {
	stat -c %b "$1"
}

# expect_done NAME DATA ZERO: job NAME ended done, with all of its sectors done
# and below the checkpoint, DATA of them data and ZERO zeros.
expect_done() {
	local name=$1
	check "$name: state, progress, sectors_data, sectors_zero, checkpoint" \
		"done $SECTORS/$SECTORS $2 $3 $SECTORS" \
		"$(final "$name" state) $(final "$name" progress) $(final "$name" sectors_data) $(final "$name" sectors_zero) $(final "$name" checkpoint)"
}

# same NAME SOURCE DEST: the first 64 MiB of DEST are those of SOURCE.
same() {
	local got
	if got=$(cmp -n "$SIZE" "$2" "$3" 2>&1); then pass "$1: the same bytes (cmp)"; else fail "$1: the same bytes" "no difference" "$got"; fi
}

# blocks_between NAME FILE LOW HIGH: FILE's stat blocks are in [LOW, HIGH].
blocks_between() {
	local got
	got=$(blocks "$2")
	if [ "$got" -ge "$3" ] && [ "$got" -le "$4" ]; then
		pass "$1: $got blocks allocated ($3 to $4)"
	else
		fail "$1: blocks allocated" "$3 to $4" "$got"
	fi
}

# stats_value MOUNT KEY
stats_value() {
	sed -n "s/^$2: //p" "$1/stats"
}

# stats_keep MOUNT: remember the stats; stats_grew KEY: how much KEY grew since.
stats_keep() {
	stats_mount=$1
	cat "$1/stats" >"$work/stats.before"
}
stats_grew() {
	echo $(($(stats_value "$stats_mount" "$1") - $(sed -n "s/^$1: //p" "$work/stats.before")))
}

# ---- the daemon, the source ------------------------------------------------------------

if ! start_daemon -o allow_other; then
	fail "kcopydfs mounts with -o allow_other" "a kcopydfs mount" "$(tr '\n' '|' <"$work/kcopydfs.log")"
	finish
fi
mnt=$daemon_mount
jobs=$mnt/jobs
src=$work/src.img
make_sparse "$src"
blocks_between "the source is sparse" "$src" "$DATA_SECTORS" $((DATA_SECTORS + SLACK_BLOCKS))

# ---- a. the default: zero ranges punched, or left holes ------------------------------------

fresh "$work/a.img"
stats_keep "$mnt"
if run_job "$jobs" sparse "copy from=$src to=$work/a.img"; then
	expect_done sparse "$DATA_SECTORS" "$ZERO_SECTORS"
	same "sparse, to a new file" "$src" "$work/a.img"
	blocks_between "sparse, to a new file: allocated about the data" "$work/a.img" "$DATA_SECTORS" $((DATA_SECTORS + SLACK_BLOCKS))
	offloaded=$(final sparse sectors_offloaded)
	if [ "$offloaded" -ge 0 ] && [ "$offloaded" -le "$DATA_SECTORS" ]; then
		pass "sparse: sectors_offloaded $offloaded is of sectors_data (tmpfs: an in-kernel copy)"
	else
		fail "sparse: sectors_offloaded" "0 to $DATA_SECTORS" "$offloaded"
	fi
	# g. stats sums what the job did, on its one destination.
	check "stats: sectors_written, sectors_zero and sectors_offloaded grew by the job's" \
		"$SECTORS $ZERO_SECTORS $offloaded" \
		"$(stats_grew sectors_written) $(stats_grew sectors_zero) $(stats_grew sectors_offloaded)"
fi

dd if=/dev/urandom of="$work/full.img" bs=1M count=64 status=none
if run_job "$jobs" over-data "copy from=$src to=$work/full.img flags=no_offload"; then
	expect_done over-data "$DATA_SECTORS" "$ZERO_SECTORS"
	check "over-data: flags=no_offload: sectors_offloaded" 0 "$(final over-data sectors_offloaded)"
	same "sparse, over a file of random bytes" "$src" "$work/full.img"
	blocks_between "sparse, over random bytes: its zero ranges punched" "$work/full.img" "$DATA_SECTORS" $((DATA_SECTORS + SLACK_BLOCKS))
fi

# g. Two destinations: stats counts each.
fresh "$work/two-a.img"
fresh "$work/two-b.img"
stats_keep "$mnt"
if run_job "$jobs" two "copy from=$src to=$work/two-a.img to=$work/two-b.img flags=no_offload"; then
	expect_done two "$DATA_SECTORS" "$ZERO_SECTORS"
	same "two destinations, the first" "$src" "$work/two-a.img"
	same "two destinations, the second" "$src" "$work/two-b.img"
	check "stats after a job of two destinations: sectors_written and sectors_zero grew twice the job's" \
		"$((2 * SECTORS)) $((2 * ZERO_SECTORS)) 0" \
		"$(stats_grew sectors_written) $(stats_grew sectors_zero) $(stats_grew sectors_offloaded)"
fi

# ---- b. dest_zero: zero ranges skipped ------------------------------------------------------

fresh "$work/b.img"
if run_job "$jobs" dest-zero "copy from=$src to=$work/b.img flags=dest_zero"; then
	expect_done dest-zero "$DATA_SECTORS" "$ZERO_SECTORS"
	check "dest-zero: its description keeps the flag" "copy from=$src:0+$SECTORS to=$work/b.img:0+$SECTORS flags=dest_zero" \
		"$(cat "$jobs/dest-zero/ctl")"
	same "dest_zero, onto a fresh truncated file" "$src" "$work/b.img"
	blocks_between "dest_zero, onto a fresh file: allocated about the data" "$work/b.img" "$DATA_SECTORS" $((DATA_SECTORS + SLACK_BLOCKS))
fi
# What it promises is the caller's: over other bytes, the zero ranges keep them.
head -c "$SIZE" /dev/urandom >"$work/b-other.img"
old_head=$(head -c $((8 * MiB)) "$work/b-other.img" | sha256sum)
if run_job "$jobs" dest-zero-over "copy from=$src to=$work/b-other.img flags=dest_zero,no_offload"; then
	check "dest_zero over other bytes: the hole at 0-8 MiB is skipped, its old bytes kept" "$old_head" \
		"$(head -c $((8 * MiB)) "$work/b-other.img" | sha256sum)"
	if cmp -s -i $((8 * MiB)) -n $((8 * MiB)) "$src" "$work/b-other.img"; then
		pass "dest_zero over other bytes: the data at 8-16 MiB is written"
	else
		fail "dest_zero over other bytes: the data at 8-16 MiB" "the source's" "$(cmp -i $((8 * MiB)) -n $((8 * MiB)) "$src" "$work/b-other.img" 2>&1)"
	fi
fi

# ---- c. allocated: every range allocated ----------------------------------------------------

fresh "$work/c.img"
stats_keep "$mnt"
if run_job "$jobs" allocated "copy from=$src to=$work/c.img flags=allocated"; then
	expect_done allocated "$DATA_SECTORS" "$ZERO_SECTORS"
	same "allocated" "$src" "$work/c.img"
	blocks_between "allocated: the whole destination allocated" "$work/c.img" "$SECTORS" $((SECTORS + SLACK_BLOCKS))
	# tmpfs has no FALLOC_FL_ZERO_RANGE: the zero ranges are written from the zero page.
	grew=$(stats_grew zero_fallbacks)
	if [ "$grew" -gt 0 ]; then
		pass "stats: zero_fallbacks grew by $grew (tmpfs cannot zero-range)"
	else
		fail "stats: zero_fallbacks after flags=allocated on tmpfs" "more than before" "grew by $grew"
	fi
fi
# A zero job with flags=allocated zeroes without punching; without, it punches.
dd if=/dev/urandom of="$work/z-alloc.img" bs=1M count=8 status=none
cp "$work/z-alloc.img" "$work/z-punch.img"
if run_job "$jobs" zero-allocated "zero to=$work/z-alloc.img flags=allocated" &&
	run_job "$jobs" zero-punch "zero to=$work/z-punch.img"; then
	check "zero jobs: state, sectors_zero, sectors_data of each" "done 16384 0 done 16384 0" \
		"$(final zero-allocated state) $(final zero-allocated sectors_zero) $(final zero-allocated sectors_data) $(final zero-punch state) $(final zero-punch sectors_zero) $(final zero-punch sectors_data)"
	check "zero jobs: both read as zeros" "equal equal" \
		"$(cmp -s -n $((8 * MiB)) /dev/zero "$work/z-alloc.img" && echo equal || echo different) $(cmp -s -n $((8 * MiB)) /dev/zero "$work/z-punch.img" && echo equal || echo different)"
	blocks_between "zero job, flags=allocated: still allocated" "$work/z-alloc.img" 16384 $((16384 + SLACK_BLOCKS))
	blocks_between "zero job without flags: punched" "$work/z-punch.img" 0 "$SLACK_BLOCKS"
fi

# ---- d. a tmpfs-backed loop device -----------------------------------------------------------

dd if=/dev/urandom of="$work/loop-backing.img" bs=1M count=64 status=none
if new_loop "$work/loop-backing.img"; then
	loop=$loop_device
	if run_job "$jobs" to-loop "copy from=$src to=$loop"; then
		expect_done to-loop "$DATA_SECTORS" "$ZERO_SECTORS"
		check "to-loop: nothing offloaded to a block device" 0 "$(final to-loop sectors_offloaded)"
		same "to a tmpfs-backed loop device" "$src" "$loop"
		blocks_between "to a loop device: its backing file punched where the source has zeros" \
			"$work/loop-backing.img" "$DATA_SECTORS" $((DATA_SECTORS + SLACK_BLOCKS))
	fi
else
	fail "losetup of a tmpfs file" "a loop device" "$(losetup -f 2>&1)"
fi

# ---- e. offload on XFS with reflink ------------------------------------------------------------

truncate -s 512M "$work/xfs.fs"
if mkfs.xfs -q -f -m reflink=1 "$work/xfs.fs" 2>"$work/mkfs.err" && mkdir -p "$work/xfs" &&
	mount -o loop "$work/xfs.fs" "$work/xfs" 2>>"$work/mkfs.err"; then
	xfs=$work/xfs
	cp --sparse=always "$src" "$xfs/src.img"
	fresh "$xfs/dst.img"
	stats_keep "$mnt"
	if run_job "$jobs" offload "copy from=$xfs/src.img to=$xfs/dst.img"; then
		expect_done offload "$DATA_SECTORS" "$ZERO_SECTORS"
		check "offload on XFS: sectors_offloaded is all the data" "$DATA_SECTORS" "$(final offload sectors_offloaded)"
		same "offload on XFS" "$src" "$xfs/dst.img"
		check "stats: sectors_offloaded grew by the job's" "$DATA_SECTORS" "$(stats_grew sectors_offloaded)"
	fi
	fresh "$xfs/dst2.img"
	if run_job "$jobs" no-offload "copy from=$xfs/src.img to=$xfs/dst2.img flags=no_offload"; then
		expect_done no-offload "$DATA_SECTORS" "$ZERO_SECTORS"
		check "flags=no_offload on XFS: sectors_offloaded" 0 "$(final no-offload sectors_offloaded)"
		same "flags=no_offload on XFS" "$src" "$xfs/dst2.img"
	fi
	# From tmpfs to XFS copy_file_range says EXDEV: the destination falls back to reads and writes.
	fresh "$xfs/dst3.img"
	stats_keep "$mnt"
	if run_job "$jobs" cross "copy from=$src to=$xfs/dst3.img"; then
		expect_done cross "$DATA_SECTORS" "$ZERO_SECTORS"
		check "tmpfs to XFS: nothing offloaded" 0 "$(final cross sectors_offloaded)"
		same "tmpfs to XFS" "$src" "$xfs/dst3.img"
		grew=$(stats_grew offload_fallbacks)
		if [ "$grew" -gt 0 ]; then
			pass "stats: offload_fallbacks grew by $grew (EXDEV)"
		else
			fail "stats: offload_fallbacks after a copy from tmpfs to XFS" "more than before" "grew by $grew"
		fi
	fi
else
	fail "an XFS image with reflink, loop-mounted" "mkfs.xfs and mount succeed" "$(tr '\n' '|' <"$work/mkfs.err")"
fi

# ---- h. bad flag names ---------------------------------------------------------------------------

fresh "$work/h.img" 8M
dd if=/dev/urandom of="$work/h.img" bs=1M count=8 conv=notrunc status=none
h_sum=$(sha256sum <"$work/h.img")
mkdir "$jobs/badflags"
for case in "sparse|copy from=$src:0+8M to=$work/h.img flags=sparse" \
	"DEST_ZERO|copy from=$src:0+8M to=$work/h.img flags=dest_zero,DEST_ZERO" \
	"dest-zero|copy from=$src:0+8M to=$work/h.img flags=dest-zero" \
	"offload|zero to=$work/h.img flags=allocated,offload"; do
	name=${case%%|*}
	line=${case#*|}
	stats_keep "$mnt"
	write_ctl "$jobs/badflags/ctl" "$line"
	if [ "$write_status" != 0 ] && [[ $write_said == *"$(errno_text EINVAL)"* ]]; then
		pass "flag '$name' refused: EINVAL"
	else
		fail "flag '$name' refused" "EINVAL" "status $write_status: $write_said"
	fi
	check "flag '$name': the error line" "unknown flag '$name' (known: $KNOWN) (EINVAL)" "$(status_field "$jobs/badflags" error)"
	check "flag '$name': nothing changed (state, ctl, destination, jobs started, sectors written)" \
		"idle  $h_sum 0 0" \
		"$(cat "$jobs/badflags/state") $(cat "$jobs/badflags/ctl") $(sha256sum <"$work/h.img") $(stats_grew jobs_total) $(stats_grew sectors_written)"
done
write_ctl "$jobs/badflags/ctl" "copy from=$src:0+8M to=$work/h.img flags=allocated,,no_offload"
check "an empty flag name: refused with its reason" "1 flags=allocated,,no_offload: empty flag name (EINVAL)" \
	"$write_status $(status_field "$jobs/badflags" error)"

# ---- as nobody, against this root daemon with -o allow_other -------------------------------------

mkdir "$work/nb"
chown $NOBODY:$NOBODY "$work/nb"
cp --sparse=always "$src" "$work/nb/src.img"
fresh "$work/nb/dst.img"
chown $NOBODY:$NOBODY "$work/nb/src.img" "$work/nb/dst.img"
if run_job "$jobs" nobody-sparse "copy from=$work/nb/src.img to=$work/nb/dst.img" as_nobody; then
	expect_done nobody-sparse "$DATA_SECTORS" "$ZERO_SECTORS"
	check "nobody's job is nobody's" "$NOBODY:$NOBODY" "$(final nobody-sparse owner)"
	same "nobody's sparse copy into its own file" "$src" "$work/nb/dst.img"
	blocks_between "nobody's sparse copy: allocated about the data" "$work/nb/dst.img" "$DATA_SECTORS" $((DATA_SECTORS + SLACK_BLOCKS))
fi
# A setuid or setgid file anyone may write: whatever the flags, the daemon writes it as nobody's
# own write(2) would, which clears the bit (never fallocate or copy_file_range, which need not).
for flags in "" dest_zero allocated; do
	for mode in 4777 2777; do
		name=setid-$mode${flags:+-$flags}
		fresh "$work/$name"
		chmod "$mode" "$work/$name"
		if run_job "$jobs" "$name" "copy from=$work/nb/src.img to=$work/$name${flags:+ flags=$flags}" as_nobody; then
			check "$name: done, nothing offloaded" "done 0" "$(final "$name" state) $(final "$name" sectors_offloaded)"
			check "$name: nobody's copy clears the setuid/setgid bit, as its own write would" 777 "$(stat -c %a "$work/$name")"
			same "$name" "$src" "$work/$name"
		fi
	done
done

# ---- f. a slow source, --state-dir: status while running, SIGTERM, resume; cancel --------------

SLOW_SECTORS=$((32 * 2048))
# The reference: zeros at 0-4 MiB, random at 4-8 and 20-24 MiB, zeros elsewhere.
truncate -s 32M "$work/slow-ref.img"
dd if=/dev/urandom of="$work/slow-ref.img" bs=1M seek=4 count=4 conv=notrunc status=none
dd if=/dev/urandom of="$work/slow-ref.img" bs=1M seek=20 count=4 conv=notrunc status=none
slow_source 32M 20ms || skip_all "needs nbdkit and nbdfuse (a slow source): $(tail -n 3 "$work/nbdfuse.log" | tr '\n' '|')"
slow=$slow_file
# nbdkit's memory disk is all zeros: write the random parts into it (writes are not delayed).
dd if="$work/slow-ref.img" of="$slow" bs=1M skip=4 seek=4 count=4 conv=notrunc status=none &&
	dd if="$work/slow-ref.img" of="$slow" bs=1M skip=20 seek=20 count=4 conv=notrunc status=none ||
	fail "random bytes written into the slow source" "dd succeeds" "$?"

mnt2=$(mktemp -d "${TMPDIR:-/tmp}/test-kcopydfs-mnt.XXXXXX")
daemon_mounts+=("$mnt2")
OPTIONS=(--subjob-kb 64 --depth 4 --checkpoint-ms 20 --state-dir "$work/state")
if ! start_daemon_on "$mnt2" "${OPTIONS[@]}"; then
	fail "kcopydfs mounts with --state-dir" "a mount" "$(tail -n 3 "$work/kcopydfs.log")"
	finish
fi
jobs2=$mnt2/jobs
fresh "$work/f.img" 32M
mkdir "$jobs2/slow"
write_ctl "$jobs2/slow/ctl" "copy from=$slow to=$work/f.img flags=dest_zero,no_offload"
check "the slow job is taken" 0 "$write_status"
# Sample the status while it runs: each one self-consistent.
samples=0
bad_samples=
for _ in $(seq 400); do
	status=$(cat "$jobs2/slow/status")
	state=$(sed -n 's/^state: //p' <<<"$status")
	[ "$state" = running ] || { sleep 0.02; continue; }
	done_sectors=$(sed -n 's/^progress: //p' <<<"$status")
	done_sectors=${done_sectors%%/*}
	data=$(sed -n 's/^sectors_data: //p' <<<"$status")
	zero=$(sed -n 's/^sectors_zero: //p' <<<"$status")
	offloaded=$(sed -n 's/^sectors_offloaded: //p' <<<"$status")
	point=$(sed -n 's/^checkpoint: //p' <<<"$status")
	samples=$((samples + 1))
	if [ $((data + zero)) != "$done_sectors" ] || [ "$point" -gt "$done_sectors" ] || [ "$offloaded" != 0 ]; then
		bad_samples+=" [progress $done_sectors data $data zero $zero offloaded $offloaded checkpoint $point]"
	fi
	# Past the first data extent and short of the end: stop here.
	[ "$data" -gt 0 ] && [ "$zero" -gt 0 ] && [ "$done_sectors" -ge $((10 * 2048)) ] && break
	sleep 0.02
done
if [ "$samples" -gt 0 ] && [ -z "$bad_samples" ]; then
	pass "while running ($samples samples): sectors_data + sectors_zero = progress, checkpoint <= progress, nothing offloaded"
else
	fail "the status while running" "samples with data + zero = progress, checkpoint <= progress, offloaded 0" \
		"$samples samples;$bad_samples"
fi
running_data=${data:-0}
running_zero=${zero:-0}
if [ "$running_data" -gt 0 ] && [ "$running_zero" -gt 0 ]; then
	pass "while running: both data ($running_data) and zeros ($running_zero) counted"
else
	fail "while running: data and zeros counted" "both above 0" "data $running_data, zero $running_zero (state $state)"
fi

# SIGTERM with --state-dir: the job comes back interrupted, its flags in its description.
stop_daemon "$daemon_pid" "$mnt2"
if start_daemon_on "$mnt2" "${OPTIONS[@]}"; then
	durable=$(status_field "$jobs2/slow" checkpoint)
	check "after SIGTERM and a restart: state, progress = checkpoint, this run's counts 0" \
		"interrupted $durable/$SLOW_SECTORS 0 0 0" \
		"$(cat "$jobs2/slow/state") $(status_field "$jobs2/slow" progress) $(status_field "$jobs2/slow" sectors_data) $(status_field "$jobs2/slow" sectors_zero) $(status_field "$jobs2/slow" sectors_offloaded)"
	check "after the restart its description keeps its flags" \
		"copy from=$slow:0+$SLOW_SECTORS to=$work/f.img:0+$SLOW_SECTORS flags=dest_zero,no_offload" \
		"$(cat "$jobs2/slow/ctl")"
	if [ "${durable:-0}" -gt 0 ] && [ "$durable" -lt "$SLOW_SECTORS" ]; then
		pass "the checkpoint it came back with is part way: $durable of $SLOW_SECTORS"
	else
		fail "the checkpoint after SIGTERM" "between 0 and $SLOW_SECTORS" "${durable:-none}"
	fi
	write_ctl "$jobs2/slow/ctl" resume
	check "resume is taken" 0 "$write_status"
	timeout 60 cat "$jobs2/slow/wait" >"$work/slow.status"
	check "the resumed job: state, progress, checkpoint" "done $SLOW_SECTORS/$SLOW_SECTORS $SLOW_SECTORS" \
		"$(final slow state) $(final slow progress) $(final slow checkpoint)"
	check "the resumed run's counts: data + zero = what it did (total - the checkpoint it resumed from)" \
		"$((SLOW_SECTORS - durable)) 0" \
		"$(($(final slow sectors_data) + $(final slow sectors_zero))) $(final slow sectors_offloaded)"
	if cmp -s "$work/slow-ref.img" "$work/f.img"; then
		pass "the resumed copy with flags=dest_zero is the source's bytes"
	else
		fail "the resumed copy" "equal to the source" "$(cmp "$work/slow-ref.img" "$work/f.img" 2>&1)"
	fi
	# A cancelled job keeps what it counted: data + zero = its progress.
	fresh "$work/g.img" 32M
	mkdir "$jobs2/cancelme"
	write_ctl "$jobs2/cancelme/ctl" "copy from=$slow to=$work/g.img flags=allocated"
	for _ in $(seq 200); do
		progress=$(status_field "$jobs2/cancelme" progress)
		[ "${progress%%/*}" -ge 4096 ] 2>/dev/null && break
		sleep 0.02
	done
	echo cancel >"$jobs2/cancelme/ctl"
	timeout 30 cat "$jobs2/cancelme/wait" >"$work/cancelme.status"
	progress=$(final cancelme progress)
	progress=${progress%%/*}
	check "a cancelled job: state, sectors_data + sectors_zero = progress" "cancelled $progress" \
		"$(final cancelme state) $(($(final cancelme sectors_data) + $(final cancelme sectors_zero)))"
	if [ "$(final cancelme checkpoint)" -le "$progress" ] && [ "$progress" -lt "$SLOW_SECTORS" ]; then
		pass "a cancelled job: checkpoint $(final cancelme checkpoint) <= progress $progress < total"
	else
		fail "a cancelled job's checkpoint and progress" "checkpoint <= progress < $SLOW_SECTORS" \
			"checkpoint $(final cancelme checkpoint), progress $progress"
	fi
else
	fail "restart with --state-dir" "a mount" "$(tail -n 3 "$work/kcopydfs.log")"
fi

finish
