#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopydfs-statedir.sh: resumable jobs with --state-dir.
#  - A 64 MiB copy from a slow source (nbdkit's delay filter through
#    nbdfuse) is started, then the daemon is killed with SIGKILL at random
#    points, 20 times or more, and started again on the same mountpoint
#    (which it cleans of the dead mount by itself) and state directory:
#    each time the job is back as interrupted with a progress that never
#    goes backwards, and `echo resume > ctl` carries on.  At the end the
#    copy is byte-identical to the source and the source was read little
#    more than once (nbdkit's stats filter counts what was read).
#  - Records damaged three ways (cut short, a byte changed, garbage under
#    a record's name): the daemon starts, shows each such job as failed
#    with a reason, and keeps the intact job, which resumes and completes.
#  - Power losses: a destination whose writes sit in a volatile cache
#    (nbdkit-cache-filter, writeback) is killed with the daemon, five times;
#    the resumed copy is still byte-identical, so no checkpoint was ever
#    recorded before its data was flushed.
#  - SIGTERM with --state-dir leaves a running job interrupted, not
#    cancelled.
#  - A job killed past half way and resumed: its final bytes_per_sec is
#    what the resumed run copied over its elapsed time, not all of its
#    progress (which includes the killed run's).
#  - Without --state-dir the daemon writes no file at all
#    (strace: no open for writing with O_CREAT, no mkdir, rename or unlink).
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-kcopydfs-statedir.sh
# Needs root, nbdkit, nbdfuse and strace; exits 77 (skipped) without them.
# KCOPYD_STATEDIR_KILLS sets the number of kills (default 20).
#
# Every check prints PASS or FAIL with what it expected and what it got;
# the last line is "N passed, M failed"; the exit status is 1 on any failure.

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics losetup cmp dd awk timeout nbdkit nbdfuse strace
nbdkit --filter=stats --filter=delay file --dump-plugin >/dev/null 2>&1 ||
	skip_all "nbdkit lacks the stats or delay filter, or the file plugin"
setup_work 400M

SIZE_MIB=64
SIZE=$((SIZE_MIB << 20))
SECTORS=$((SIZE / 512))
KILLS=${KCOPYD_STATEDIR_KILLS:-20}
OPTIONS=(--subjob-kb 64 --depth 4 --checkpoint-ms 20)

check() {
	if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "$2" "$3"; fi
}

# slow_statsource NAME: the source through nbdfuse with every read 20 ms slower,
# nbdkit counting what is read into $work/NAME.stats when it exits; sets src
# (a read-only loop device on it) and slow_pid.
slow_statsource() {
	nbd_export "$work/$1" -r --filter=stats --filter=delay file "file=$work/src.img" rdelay=20ms \
		"statsfile=$work/$1.stats" || skip_all "nbdfuse did not come up: $(tail -n 3 "$work/nbdfuse.log")"
	slow_pid=$nbd_fuse_pid
	new_loop "$work/$1/disk" -r || skip_all "losetup failed"
	src=$loop_device
}

# read_mib NAME: the MiB nbdkit says were read from slow source NAME, once it has exited.
read_mib() {
	awk '/^read:/ { for (i = 1; i <= NF; i++) if ($i ~ /^(KiB|MiB|GiB),?$/) {
		v = $(i - 1); u = $i; sub(/,/, "", u); print (u == "GiB" ? v * 1024 : u == "KiB" ? v / 1024 : v); exit } }' \
		"$work/$1.stats"
}

head -c "$SIZE" /dev/urandom >"$work/src.img"
slow_statsource slow
for name in dst d1 d2 d3 d4; do
	truncate -s "$SIZE" "$work/$name.img"
	new_loop "$work/$name.img" || skip_all "losetup failed"
	eval "$name=\$loop_device"
done
mnt=$(mktemp -d "${TMPDIR:-/tmp}/test-kcopydfs-mnt.XXXXXX")
daemon_mounts+=("$mnt")

# start STATE-DIR: kcopydfs -f with it on $mnt; 1 if it did not come up.
start() {
	start_daemon_on "$mnt" "${OPTIONS[@]}" --state-dir "$1"
}

# field JOB KEY: KEY's value in the job's status.
field() {
	sed -n "s/^$2: //p" "$mnt/jobs/$1/status" 2>/dev/null
}

# kill_daemon: SIGKILL, and wait for it.
kill_daemon() {
	kill -KILL "$daemon_pid" 2>/dev/null
	wait "$daemon_pid" 2>/dev/null
}

# --- killed at random points, resumed each time ------------------------------------

state=$work/state
if ! start "$state"; then
	fail "kcopydfs mounts with --state-dir" "a mount" "$(tail -n 3 "$work/kcopydfs.log")"
	finish
fi
mkdir "$mnt/jobs/big"
echo "copy from=$src to=$dst" >"$mnt/jobs/big/ctl"
kills=0
copies=1
last_progress=0
backwards=""
bad_states=""
final=""
while :; do
	sleep "0.$((RANDOM % 25 + 5))"
	kill_daemon
	kills=$((kills + 1))
	if ! start "$state"; then
		fail "restart $kills" "a mount" "$(tail -n 3 "$work/kcopydfs.log")"
		break
	fi
	state_now=$(field big state)
	progress=$(field big progress)
	progress=${progress%%/*}
	if [ "${progress:-0}" -lt "$last_progress" ]; then
		backwards+=" $last_progress->$progress"
	fi
	last_progress=${progress:-0}
	if [ "$state_now" = done ]; then
		final=done
		[ "$kills" -ge "$KILLS" ] && break
		# Done too soon: start the copy again, so that there are more kills to survive.
		rmdir "$mnt/jobs/big"
		dd if=/dev/zero of="$dst" bs=1M count=1 oflag=direct status=none
		copies=$((copies + 1))
		mkdir "$mnt/jobs/big"
		echo "copy from=$src to=$dst" >"$mnt/jobs/big/ctl"
		last_progress=0
		continue
	fi
	[ "$state_now" = interrupted ] || bad_states+=" '$state_now' ($(tr '\n' '|' <"$mnt/jobs/big/status" 2>&1))"
	if [ "$kills" = 1 ]; then
		# What an interrupted job refuses: another description (EBUSY) and a resume of nothing.
		if echo "copy from=$src to=$d1" >"$mnt/jobs/big/ctl" 2>"$work/write.err"; then
			fail "a description written to an interrupted job" "EBUSY" "accepted"
		else
			grep -q "$(errno_text EBUSY)" "$work/write.err" && pass "a description written to an interrupted job: EBUSY" ||
				fail "a description written to an interrupted job" "EBUSY" "$(cat "$work/write.err")"
		fi
		mkdir "$mnt/jobs/idle"
		if echo resume >"$mnt/jobs/idle/ctl" 2>"$work/write.err"; then
			fail "resume written to an idle job" "EINVAL" "accepted"
		else
			grep -q "$(errno_text EINVAL)" "$work/write.err" && pass "resume written to an idle job: EINVAL" ||
				fail "resume written to an idle job" "EINVAL" "$(cat "$work/write.err")"
		fi
		rmdir "$mnt/jobs/idle"
	fi
	echo resume >"$mnt/jobs/big/ctl" 2>>"$work/resume.err" || bad_states+=" (resume refused)"
	[ "$kills" -ge "$KILLS" ] && break
done
timeout 60 cat "$mnt/jobs/big/wait" >"$work/wait.out" 2>&1
check "after $kills kills the job ends" done "$(sed -n 's/^state: //p' "$work/wait.out")"
check "after every kill the job came back interrupted and took resume" "" "$bad_states"
check "progress never went backwards across restarts" "" "$backwards"
check "the final progress" "$SECTORS/$SECTORS" "$(sed -n 's/^progress: //p' "$work/wait.out")"
# Compared with the file under the slow source, so that nbdkit counts only the copy's reads.
if cmp -s "$work/src.img" "$dst"; then
	pass "the copy is byte-identical to the source after $kills kills"
else
	fail "the copy after $kills kills" "identical to the source" "$(cmp "$work/src.img" "$dst" 2>&1 | head -n 1)"
fi
rmdir "$mnt/jobs/big"
stop_daemon "$daemon_pid" "$mnt"
# nbdkit writes its counts when it exits: let the slow source go.
detach_loop "$src"
fusermount3 -u "$work/slow"
wait "$slow_pid"
read_total=$(read_mib slow)
if awk -v got="${read_total:-0}" -v size=$((SIZE_MIB * copies)) 'BEGIN { exit !(got >= size && got <= 1.5 * size) }'; then
	pass "the source was read $read_total MiB for $copies copies of $SIZE_MIB MiB and $kills kills (at most 1.5x)"
else
	fail "MiB read from the source for $copies copies of $SIZE_MIB MiB and $kills kills" \
		"$((SIZE_MIB * copies)) to $((SIZE_MIB * copies * 3 / 2))" "${read_total:-?}"
fi
slow_statsource slow2

# --- damaged records ----------------------------------------------------------------

damaged=$work/damaged
if start "$damaged"; then
	for job in cut flip intact; do
		mkdir "$mnt/jobs/$job"
	done
	echo "copy from=$src to=$d1" >"$mnt/jobs/cut/ctl"
	echo "copy from=$src to=$d2" >"$mnt/jobs/flip/ctl"
	echo "copy from=$src to=$d3" >"$mnt/jobs/intact/ctl"
	sleep 0.3
	kill_daemon
	cut_id=$(grep -l '^name: cut$' "$damaged"/*.job)
	flip_id=$(grep -l '^name: flip$' "$damaged"/*.job)
	size=$(stat -c %s "$cut_id")
	truncate -s $((size / 2)) "$cut_id"
	sed -i 's/^owner: 0:0$/owner: 0:1/' "$flip_id"
	head -c 300 /dev/urandom >"$damaged/999.job"
	if start "$damaged"; then
		pass "the daemon starts on damaged records"
		for job in "$(basename "$cut_id" .job)" "$(basename "$flip_id" .job)" 999; do
			check "damaged record $job.job: the job is failed" failed "$(field "$job" state)"
			error=$(field "$job" error)
			if [[ "$error" == *"$job.job"*damaged* ]]; then
				pass "damaged record $job.job: the error line says why ($error)"
			else
				fail "damaged record $job.job: the error line" "it names the record and says damaged" "$error"
			fi
		done
		check "the intact job is back interrupted" interrupted "$(field intact state)"
		echo resume >"$mnt/jobs/intact/ctl"
		timeout 60 cat "$mnt/jobs/intact/wait" >"$work/wait.out" 2>&1
		check "the intact job resumes to done" done "$(sed -n 's/^state: //p' "$work/wait.out")"
		cmp -s "$work/src.img" "$d3" && pass "the intact job's copy is byte-identical" ||
			fail "the intact job's copy" "identical" "$(cmp "$work/src.img" "$d3" 2>&1 | head -n 1)"
		rmdir "$mnt/jobs/999" && [ ! -e "$damaged/999.job" ] && pass "rmdir of a damaged job removes its record" ||
			fail "rmdir of a damaged job" "the record gone" "$(ls "$damaged")"
	else
		fail "the daemon starts on damaged records" "a mount" "$(tail -n 3 "$work/kcopydfs.log")"
	fi
	stop_daemon "$daemon_pid" "$mnt"
else
	fail "kcopydfs mounts for the damaged records" "a mount" "$(tail -n 3 "$work/kcopydfs.log")"
fi

# --- a power loss: the destination's write cache is lost with the daemon ---------------

# A destination whose writes stay in a volatile cache (nbdkit-cache-filter,
# cache=writeback) until a flush: killing nbdkit with the daemon loses what
# was written and not flushed, as a power loss does.  A checkpoint recorded
# before its data was flushed would then leave a gap that resume skips, and
# the final copy would differ from the source.
# volatile_dest: (re)start the volatile destination on a loop device that
# losetup --find picks and attaches in one step, and point $volatile_link
# at it.  Other tests take loop devices at the same time, so after a power
# loss the device is not always the same one; the job names the link,
# which follows it, as a udev by-id link follows a disk.
volatile=
volatile_link=$work/volatile.dev
volatile_dest() {
	nbd_export "$work/volatile" --filter=cache file "file=$work/volatile.img" cache=writeback || return 1
	volatile_pid=$nbd_fuse_pid
	new_loop "$work/volatile/disk" || return 1
	volatile=$loop_device
	ln -sfn "$volatile" "$volatile_link"
}
power=$work/power
truncate -s "$SIZE" "$work/volatile.img"
losses=0
if volatile_dest && start "$power"; then
	mkdir "$mnt/jobs/p"
	echo "copy from=$src to=$volatile_link" >"$mnt/jobs/p/ctl"
	lost=""
	for loss in 1 2 3 4 5; do
		sleep "0.$((RANDOM % 30 + 20))"
		# The power goes: the daemon and the disk's cache at once.
		kill -KILL "$daemon_pid" "$(ps -o pid= --ppid "$volatile_pid" | head -n 1)" 2>/dev/null
		wait "$daemon_pid" 2>/dev/null
		losses=$((losses + 1))
		detach_loop "$volatile"
		fusermount3 -u -z "$work/volatile"
		wait "$volatile_pid" 2>/dev/null
		if ! volatile_dest || ! start "$power"; then
			lost+=" (restart $loss failed)"
			break
		fi
		state_now=$(field p state)
		[ "$state_now" = done ] && break
		[ "$state_now" = interrupted ] || lost+=" $state_now"
		echo resume >"$mnt/jobs/p/ctl" || lost+=" (resume $loss refused)"
	done
	timeout 60 cat "$mnt/jobs/p/wait" >"$work/wait.out" 2>&1
	check "after $losses power losses the job ends" done "$(sed -n 's/^state: //p' "$work/wait.out")"
	check "after each power loss the job came back interrupted" "" "$lost"
	# Flushed by the job's end: what the file under the cache holds now is what survives.
	if cmp -s "$work/src.img" "$work/volatile.img"; then
		pass "after $losses power losses the destination's own file is byte-identical to the source"
	else
		fail "the destination after $losses power losses" "identical to the source" \
			"$(cmp "$work/src.img" "$work/volatile.img" 2>&1 | head -n 1)"
	fi
	stop_daemon "$daemon_pid" "$mnt"
else
	fail "the volatile destination and the daemon come up" "both" "$(tail -n 3 "$work/nbdfuse.log")"
fi

# --- SIGTERM leaves a running job interrupted ----------------------------------------

term=$work/term
if start "$term"; then
	mkdir "$mnt/jobs/t"
	echo "copy from=$src to=$d4" >"$mnt/jobs/t/ctl"
	sleep 0.3
	stop_daemon "$daemon_pid" "$mnt"
	if start "$term"; then
		check "after SIGTERM a running job comes back" interrupted "$(field t state)"
		stop_daemon "$daemon_pid" "$mnt"
	else
		fail "restart after SIGTERM" "a mount" "$(tail -n 3 "$work/kcopydfs.log")"
	fi
fi

# --- a resumed job's bytes_per_sec counts only what this run copied ------------------

# The copy is killed once past half way; after the resume, its final status
# must give bytes_per_sec = (progress - checkpoint) x 512 / elapsed, where
# checkpoint is the progress it came back with: not all of progress, which
# holds what the killed run copied too.  Within 2% (the status rounds
# elapsed to a millisecond and the rate to a byte).
rate=$work/rate
if start "$rate"; then
	mkdir "$mnt/jobs/r"
	echo "copy from=$src to=$d1" >"$mnt/jobs/r/ctl"
	for _ in $(seq 300); do
		progress=$(field r progress)
		[ "${progress%%/*}" -ge $((SECTORS / 2)) ] 2>/dev/null && break
		sleep 0.05
	done
	kill_daemon
	if start "$rate"; then
		checkpoint=$(field r progress)
		checkpoint=${checkpoint%%/*}
		check "the job killed past half way comes back" interrupted "$(field r state)"
		echo resume >"$mnt/jobs/r/ctl"
		timeout 60 cat "$mnt/jobs/r/wait" >"$work/wait.out" 2>&1
		progress=$(sed -n 's/^progress: //p' "$work/wait.out")
		progress=${progress%%/*}
		elapsed=$(sed -n 's/^elapsed: //p' "$work/wait.out")
		got=$(sed -n 's/^bytes_per_sec: //p' "$work/wait.out")
		expected=$(awk -v p="$progress" -v c="$checkpoint" -v e="$elapsed" 'BEGIN { if (e > 0) printf "%.0f", (p - c) * 512 / e; else print 0 }')
		if [ "${checkpoint:-0}" -gt 0 ] && awk -v got="${got:-0}" -v want="$expected" \
			'BEGIN { d = got - want; if (d < 0) d = -d; exit !(want > 0 && d <= want * 0.02 + 1) }'; then
			pass "after a resume from $checkpoint sectors: bytes_per_sec $got = ($progress - $checkpoint) x 512 / $elapsed ($expected) within 2%"
		else
			fail "bytes_per_sec after a resume from ${checkpoint:-?} of $progress sectors in $elapsed s" \
				"($progress - $checkpoint) x 512 / $elapsed = $expected (within 2%)" "${got:-?}"
		fi
		stop_daemon "$daemon_pid" "$mnt"
	else
		fail "restart after the kill past half way" "a mount" "$(tail -n 3 "$work/kcopydfs.log")"
	fi
else
	fail "kcopydfs mounts for the rate check" "a mount" "$(tail -n 3 "$work/kcopydfs.log")"
fi

# --- without --state-dir nothing is written -------------------------------------------

"$KCOPYDFS" --version >/dev/null
if [ "${KCOPYD_SANITIZED:-0}" = 1 ]; then
	# A sanitizer writes its own logs, and LeakSanitizer cannot run under ptrace.
	echo "      (not checked in a sanitized build: its runtime writes files of its own)"
	finish
fi
strace -f -qq -e trace=open,openat,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat \
	-o "$work/strace.log" "$KCOPYDFS" -f "$mnt" 2>>"$work/kcopydfs.log" &
strace_pid=$!
for _ in $(seq 100); do
	is_mounted "$mnt" && cat "$mnt/version" >/dev/null 2>&1 && break
	sleep 0.05
done
mkdir "$mnt/jobs/plain"
echo "copy from=$work/src.img to=$work/d1.img" >"$mnt/jobs/plain/ctl"
cat "$mnt/jobs/plain/wait" >/dev/null
rmdir "$mnt/jobs/plain"
fusermount3 -u "$mnt"
wait "$strace_pid"
writes=$(grep -E 'O_CREAT|O_WRONLY|O_TRUNC|mkdir|rename|unlink' "$work/strace.log" | grep -v -E '"/dev/(fuse|null)"' |
	grep -v "$work/d1.img" | head -n 3)
check "without --state-dir the daemon creates, renames and removes no file" "" "$writes"

finish
