#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-io-engine.sh: the I/O engine's faults, made for real, through kcopy
# and kcopydfs on loop devices (direct I/O) over a tmpfs of its own:
#   - a seccomp filter that refuses io_uring as Docker's default profile
#     does (tests/uring-deny): auto falls back to libaio and says why, a
#     daemon under it serves copies with libaio; io_uring named fails, with
#     the reason, writing nothing and mounting nothing;
#   - kernel.io_uring_disabled=2, and 1 for a user without CAP_SYS_ADMIN:
#     the same, the reason naming the sysctl;
#   - RLIMIT_MEMLOCK (prlimit) for a user without CAP_IPC_LOCK: too small
#     for a ring of 1024 entries (where the kernel counts rings), a smaller
#     ring; too small for the smallest, libaio (auto) or a clear failure
#     (io_uring named); big enough for the ring, not for the buffers,
#     io_uring with plain READ/WRITE and the reason; root's buffers
#     registered whatever the limit;
#   - KCOPYD_IO_ENGINE honoured by kcopy and kcopydfs, --io-engine winning
#     over it, an invalid value refused (exit 2), --io-engine refused with
#     --via, and the resume command after a cancel repeating --io-engine.
# Every copy is compared with cmp; every message is matched as printed.
#
# The sysctl is global: while it is set, any program that starts a ring
# falls back (or fails, with io_uring named).  So this test runs alone
# under make check (tests/run-test takes an exclusive lock for it), sets
# the sysctl for one command at a time, and restores it on any exit.
# run-test: exclusive
#
# Run by `make check`, or by hand from the build tree:
#   sudo BUILDDIR=$PWD KCOPY=$PWD/kcopy KCOPYDFS=$PWD/kcopydfs ../tests/test-io-engine.sh
# Needs root (tmpfs, loop devices, FUSE, sysctl), setpriv, prlimit, and
# tests/uring-deny (built when configure found libseccomp); exits 77 without them.

set -u

KCOPY=${KCOPY:-${BUILDDIR:-.}/kcopy}
URING_DENY=${URING_DENY:-${BUILDDIR:-.}/tests/uring-deny}
SIZE_MIB=16
bytes=$((SIZE_MIB * 1048576))
sysctl_file=/proc/sys/kernel/io_uring_disabled

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics losetup cmp dd setpriv prlimit flock nbdkit nbdfuse python3
[ -x "$KCOPY" ] || skip_all "no kcopy at '$KCOPY' (set KCOPY)"
[ -x "$URING_DENY" ] ||
	skip_all "no $URING_DENY: configure found no libseccomp (contrib/deps.sh installs libseccomp-dev)"
[ -w "$sysctl_file" ] || skip_all "no writable $sysctl_file (a kernel before 6.6)"

# The sysctl as found (0 unless somebody else has it set), put back on any exit.
sysctl_before=$(cat "$sysctl_file")
[ "$sysctl_before" = 0 ] || skip_all "kernel.io_uring_disabled is $sysctl_before here, not 0: io_uring cannot be compared with it"

setup_work 256M
trap 'echo "$sysctl_before" >"$sysctl_file"; cleanup' EXIT

# A user of its own, without capabilities: the kernel counts locked memory
# per user, so nobody's (shared with whatever else runs as nobody) could
# make the limits below mean something else.  Any unused number will do.
user_id=
for candidate in 64901 64902 64903 64904 64905 64906 64907 64908; do
	if ! getent passwd "$candidate" >/dev/null && ! pgrep -U "$candidate" >/dev/null; then
		user_id=$candidate
		break
	fi
done
[ -n "$user_id" ] || skip_all "no unused user number among 64901-64908"
as_user=(setpriv --reuid="$user_id" --regid="$user_id" --clear-groups)

# --- reporting ----------------------------------------------------------------

# fail NAME EXPECTED GOT, and what the program said.
fail() {
	failed=$((failed + 1))
	echo "FAIL: $1"
	echo "      expected: $2"
	echo "      got:      $3"
	if [ -s "$work/stderr" ]; then
		echo "      it said:"
		sed 's/^/        /' "$work/stderr"
	fi
}

# run COMMAND...: run it, its stdout and stderr kept, $status set.
run() {
	"$@" >"$work/stdout" 2>"$work/stderr"
	status=$?
}

# with_sysctl VALUE COMMAND...: run COMMAND with kernel.io_uring_disabled at VALUE, and 0 again at once.
with_sysctl() {
	local value=$1
	shift
	echo "$value" >"$sysctl_file"
	"$@"
	echo "$sysctl_before" >"$sysctl_file"
}

# first_line: the first line kcopy printed on stderr.
first_line() {
	head -n 1 "$work/stderr"
}

# --- the devices --------------------------------------------------------------------

head -c "${SIZE_MIB}M" /dev/urandom >"$work/src.img"
head -c "${SIZE_MIB}M" /dev/urandom >"$work/other.img"
truncate -s "${SIZE_MIB}M" "$work/dst.img"
new_loop "$work/src.img" || skip_all "losetup failed (no loop devices?)"
src=$loop_device
new_loop "$work/dst.img" || skip_all "losetup failed"
dst=$loop_device
# Files the user may read and write (the tmpfs itself is 0755).
mkdir -m 0777 "$work/shared"
cp "$work/src.img" "$work/shared/src.img"
truncate -s "${SIZE_MIB}M" "$work/shared/dst.img"
chmod 0666 "$work/shared/src.img" "$work/shared/dst.img"

# reset_dest DEST: fill DEST with other.img, so that a copy shows and a refused one is seen to write nothing.
reset_dest() {
	dd if="$work/other.img" of="$1" bs=1M conv=notrunc oflag=direct status=none 2>/dev/null ||
		dd if="$work/other.img" of="$1" bs=1M conv=notrunc status=none
}

# copy_check NAME STATUS LINE COMMAND...: reset DEST ($to), run COMMAND $from
# $to; expect exit STATUS and the first line of stderr LINE (an extended
# regular expression, whole line); then DEST the same bytes as the source
# (STATUS 0) or untouched (any other).
from=$src
to=$dst
copy_check() {
	local name=$1 want_status=$2 want_line=$3 expected out
	shift 3
	reset_dest "$to"
	run "$@" "$from" "$to"
	if [ "$status" != "$want_status" ]; then
		fail "$name" "exit status $want_status" "exit status $status"
		return 1
	fi
	if ! first_line | grep -Exq -- "$want_line"; then
		fail "$name: the message" "a first line matching /^$want_line\$/" "$(first_line)"
		return 1
	fi
	expected=$from
	[ "$want_status" = 0 ] || expected=$work/other.img
	if ! out=$(cmp -n "$bytes" "$expected" "$to" 2>&1); then
		fail "$name: the destination" "the bytes of $expected" "${out:-differ}"
		return 1
	fi
	pass "$name"
}

# kcopy itself must run io_uring here (root, no filter, the sysctl at 0): else the machine cannot show a fallback.
run "$KCOPY" -q --io-engine=io_uring "$src" "$dst"
[ "$status" = 0 ] || skip_all "this kernel refuses io_uring to root: $(tr '\n' ' ' <"$work/stderr")"

seccomp="a seccomp filter refuses it \(io_uring_setup: Operation not permitted\)"
used() {	# used ENGINE ASKED [WHY]: the -v line, as a regular expression
	echo "kcopy: I/O engine $1 \\(asked: $2\\)${3:+: $3}"
}
refused="kcopy: cannot start the engine: io_uring:"

# --- a seccomp filter (Docker's default profile) ------------------------------------

copy_check "seccomp, auto: libaio, and why" 0 "$(used libaio auto "io_uring: $seccomp")" \
	"$URING_DENY" "$KCOPY" -v --io-engine=auto
copy_check "seccomp, KCOPYD_IO_ENGINE=auto: libaio, and why" 0 "$(used libaio auto "io_uring: $seccomp")" \
	env KCOPYD_IO_ENGINE=auto "$URING_DENY" "$KCOPY" -v
copy_check "seccomp, --io-engine=io_uring: exit 1, the reason, nothing written" 1 "$refused $seccomp" \
	"$URING_DENY" "$KCOPY" -v --io-engine=io_uring
check "seccomp, --io-engine=io_uring: one line said" 1 "$(wc -l <"$work/stderr")"
rm -f "$work/new.img"
run "$URING_DENY" "$KCOPY" --io-engine=io_uring "$src" "$work/new.img"
check "seccomp, --io-engine=io_uring: exit 1, a new destination not made" "1 absent" \
	"$status $([ -e "$work/new.img" ] && echo present || echo absent)"
copy_check "seccomp, --io-engine=libaio: libaio, nothing to say" 0 "$(used libaio libaio)" \
	"$URING_DENY" "$KCOPY" -v --io-engine=libaio

# A daemon under the filter: libaio, said in its log and its stats, and it copies.
: >"$work/kcopydfs.log"
daemon_prefix=("$URING_DENY")
if start_daemon --io-engine=auto; then
	mnt=$daemon_mount
	check "seccomp: a daemon's stats say io_engine: libaio" libaio "$(sed -n 's/^io_engine: //p' "$mnt/stats")"
	if grep -Fxq "kcopydfs: $mnt: I/O engine libaio: io_uring: a seccomp filter refuses it (io_uring_setup: Operation not permitted)" \
		"$work/kcopydfs.log"; then
		pass "seccomp: the daemon's log says why libaio"
	else
		fail "seccomp: the daemon's log says why libaio" "kcopydfs: $mnt: I/O engine libaio: io_uring: a seccomp filter ..." \
			"$(tr '\n' '|' <"$work/kcopydfs.log")"
	fi
	reset_dest "$dst"
	if run_job "$mnt/jobs" under-seccomp "copy from=$src to=$dst"; then
		check "seccomp: the daemon's job is done" done "$(final under-seccomp state)"
		if out=$(cmp -n "$bytes" "$src" "$dst" 2>&1); then
			pass "seccomp: the daemon's copy is byte-identical"
		else
			fail "seccomp: the daemon's copy" "the source's bytes" "$out"
		fi
	fi
	stop_daemon "$daemon_pid" "$mnt"
else
	fail "seccomp: kcopydfs --io-engine=auto mounts under the filter" "a mount" "$(tr '\n' '|' <"$work/kcopydfs.log")"
fi
daemon_prefix=()

# kcopydfs_refused NAME STATUS MESSAGE PREFIX... -- OPTIONS...: kcopydfs -f OPTIONS on a new
# mountpoint exits STATUS at once with MESSAGE (the whole of stderr) and mounts nothing.
kcopydfs_refused() {
	local name=$1 want_status=$2 want_message=$3 prefix=() mount_point
	shift 3
	while [ "$1" != -- ]; do
		prefix+=("$1")
		shift
	done
	shift
	mount_point=$(mktemp -d "$work/refused.XXXXXX")
	# timeout: a daemon that did mount stays in the foreground; it is a FAIL, not a hang.
	run "${prefix[@]}" timeout 20 "$KCOPYDFS" -f "$@" "$mount_point"
	if is_mounted "$mount_point"; then
		fusermount3 -u -z "$mount_point"
		fail "$name" "no mount" "a mount at $mount_point (exit $status)"
	elif [ "$status" != "$want_status" ]; then
		fail "$name" "exit status $want_status" "exit status $status"
	elif [ "$(cat "$work/stderr")" != "$want_message" ]; then
		fail "$name: the message" "$want_message" "$(tr '\n' '|' <"$work/stderr")"
	else
		pass "$name"
	fi
	rmdir "$mount_point"
}

kcopydfs_refused "seccomp: kcopydfs --io-engine=io_uring exits 1 before mounting, with the reason" 1 \
	"kcopydfs: the io_uring engine cannot run here: a seccomp filter refuses it (io_uring_setup: Operation not permitted)" \
	"$URING_DENY" -- --io-engine=io_uring

# --- kernel.io_uring_disabled ----------------------------------------------------------

disabled2="io_uring: kernel.io_uring_disabled is 2 \(io_uring_setup: Operation not permitted\)"
with_sysctl 2 copy_check "io_uring_disabled=2, auto: libaio, and why" 0 "$(used libaio auto "$disabled2")" \
	"$KCOPY" -v --io-engine=auto
with_sysctl 2 copy_check "io_uring_disabled=2, --io-engine=io_uring: exit 1, the reason, nothing written" 1 \
	"$refused ${disabled2#io_uring: }" "$KCOPY" -v --io-engine=io_uring
with_sysctl 2 kcopydfs_refused "io_uring_disabled=2: kcopydfs --io-engine=io_uring exits 1 before mounting" 1 \
	"kcopydfs: the io_uring engine cannot run here: kernel.io_uring_disabled is 2 (io_uring_setup: Operation not permitted)" \
	-- --io-engine=io_uring
check "io_uring_disabled is back to $sysctl_before" "$sysctl_before" "$(cat "$sysctl_file")"

# 1: only CAP_SYS_ADMIN or kernel.io_uring_group may make rings; the user has neither, root has.
from=$work/shared/src.img
to=$work/shared/dst.img
disabled1="io_uring: kernel.io_uring_disabled is 1 and this process is not in kernel.io_uring_group \(io_uring_setup: Operation not permitted\)"
with_sysctl 1 copy_check "io_uring_disabled=1, a user, auto: libaio, and why" 0 "$(used libaio auto "$disabled1")" \
	"${as_user[@]}" "$KCOPY" -v --no-offload --io-engine=auto
with_sysctl 1 copy_check "io_uring_disabled=1, a user, --io-engine=io_uring: exit 1, the reason, nothing written" 1 \
	"$refused ${disabled1#io_uring: }" "${as_user[@]}" "$KCOPY" -v --no-offload --io-engine=io_uring
from=$src
to=$dst
with_sysctl 1 copy_check "io_uring_disabled=1, root (CAP_SYS_ADMIN), auto: io_uring" 0 "$(used io_uring auto)" \
	"$KCOPY" -v --io-engine=auto
check "io_uring_disabled is back to $sysctl_before" "$sysctl_before" "$(cat "$sysctl_file")"

# --- RLIMIT_MEMLOCK -------------------------------------------------------------------------

# The user, 64 KiB: some kernels (before 5.12, and recent ones again: 6.18
# does) count the ring itself (1024 entries: about 100 KiB) against the
# limit, so a smaller ring (the queue halves it while the kernel says
# ENOMEM, down to 32 entries); others count only registered buffers.  Which
# this one does is asked of the kernel directly: io_uring_setup(2) of 1024
# entries under the same limit, ENOMEM or a ring.  --no-offload: the bytes
# go through the buffers, not copy_file_range.
from=$work/shared/src.img
to=$work/shared/dst.img
"${as_user[@]}" prlimit --memlock=65536 python3 -c '
import ctypes, errno, sys
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
fd = libc.syscall(425, 1024, params)  # io_uring_setup: 425 on every architecture
if fd >= 0:
    sys.exit(1)
sys.exit(0 if ctypes.get_errno() == errno.ENOMEM else 2)'
ring_counted=$?
[ "$ring_counted" -le 1 ] || fail "io_uring_setup(1024) as a user under 64 KiB of RLIMIT_MEMLOCK" "a ring or ENOMEM" "exit $ring_counted"
unregistered="buffers not registered: RLIMIT_MEMLOCK \(64 KiB\) is below the [0-9]+ KiB of buffers"
if [ "$ring_counted" = 0 ]; then
	smaller="a ring of [0-9]+ entries, not 1024: the kernel had no room for a larger one \(RLIMIT_MEMLOCK\); "
	for engine in auto io_uring; do
		copy_check "RLIMIT_MEMLOCK 64 KiB, a user, --io-engine=$engine: io_uring, a smaller ring, buffers not registered" 0 \
			"$(used io_uring $engine "$smaller$unregistered")" \
			"${as_user[@]}" prlimit --memlock=65536 "$KCOPY" -v --no-offload --io-engine=$engine
	done
	# 4 KiB: not even a ring of 32 entries.
	ring_memlock="RLIMIT_MEMLOCK \(4 KiB\) is too small for a ring of 32 entries \(io_uring_setup: Cannot allocate memory\)"
	copy_check "RLIMIT_MEMLOCK 4 KiB, a user, auto: no ring, libaio, and why" 0 \
		"$(used libaio auto "io_uring: $ring_memlock")" \
		"${as_user[@]}" prlimit --memlock=4096 "$KCOPY" -v --no-offload --io-engine=auto
	copy_check "RLIMIT_MEMLOCK 4 KiB, a user, --io-engine=io_uring: exit 1, the reason, nothing written" 1 \
		"$refused $ring_memlock" \
		"${as_user[@]}" prlimit --memlock=4096 "$KCOPY" -v --no-offload --io-engine=io_uring
else
	for engine in auto io_uring; do
		copy_check "RLIMIT_MEMLOCK 64 KiB, a user, --io-engine=$engine: io_uring, buffers not registered" 0 \
			"$(used io_uring $engine "$unregistered")" \
			"${as_user[@]}" prlimit --memlock=65536 "$KCOPY" -v --no-offload --io-engine=$engine
	done
fi
# 1 MiB: room for the ring, not for the buffers (65 MiB by default): io_uring with plain READ and WRITE.
for engine in auto io_uring; do
	copy_check "RLIMIT_MEMLOCK 1 MiB, a user, --io-engine=$engine: io_uring, buffers not registered" 0 \
		"$(used io_uring $engine "${unregistered/64 KiB/1024 KiB}")" \
		"${as_user[@]}" prlimit --memlock=1048576 "$KCOPY" -v --no-offload --io-engine=$engine
done
# Root has CAP_IPC_LOCK: the limit does not apply, the buffers are registered, nothing to say.
for engine in auto io_uring; do
	copy_check "RLIMIT_MEMLOCK 64 KiB, root, --io-engine=$engine: io_uring, buffers registered" 0 \
		"$(used io_uring $engine)" prlimit --memlock=65536 "$KCOPY" -v --no-offload --io-engine=$engine
done
from=$src
to=$dst

# --- KCOPYD_IO_ENGINE and --io-engine ----------------------------------------------------

for engine in libaio io_uring auto; do
	want=$engine
	[ "$engine" = auto ] && want=io_uring
	copy_check "KCOPYD_IO_ENGINE=$engine: kcopy runs $want" 0 "$(used $want $engine)" \
		env KCOPYD_IO_ENGINE=$engine "$KCOPY" -v
	daemon_prefix=(env KCOPYD_IO_ENGINE=$engine)
	if start_daemon; then
		check "KCOPYD_IO_ENGINE=$engine: kcopydfs's stats say $want" "$want" \
			"$(sed -n 's/^io_engine: //p' "$daemon_mount/stats")"
		stop_daemon "$daemon_pid" "$daemon_mount"
	else
		fail "KCOPYD_IO_ENGINE=$engine: kcopydfs mounts" "a mount" "$(tr '\n' '|' <"$work/kcopydfs.log")"
	fi
done
copy_check "KCOPYD_IO_ENGINE= (empty): auto" 0 "$(used io_uring auto)" env KCOPYD_IO_ENGINE= "$KCOPY" -v
copy_check "--io-engine=io_uring wins over KCOPYD_IO_ENGINE=libaio" 0 "$(used io_uring io_uring)" \
	env KCOPYD_IO_ENGINE=libaio "$KCOPY" -v --io-engine=io_uring
copy_check "--io-engine=libaio wins over KCOPYD_IO_ENGINE=io_uring" 0 "$(used libaio libaio)" \
	env KCOPYD_IO_ENGINE=io_uring "$KCOPY" -v --io-engine=libaio
daemon_prefix=(env KCOPYD_IO_ENGINE=libaio)
if start_daemon --io-engine=io_uring; then
	check "kcopydfs --io-engine=io_uring wins over KCOPYD_IO_ENGINE=libaio (stats)" io_uring \
		"$(sed -n 's/^io_engine: //p' "$daemon_mount/stats")"
	stop_daemon "$daemon_pid" "$daemon_mount"
else
	fail "kcopydfs --io-engine=io_uring with KCOPYD_IO_ENGINE=libaio mounts" "a mount" "$(tr '\n' '|' <"$work/kcopydfs.log")"
fi
daemon_prefix=()

copy_check "KCOPYD_IO_ENGINE=uring: kcopy exits 2 with the message, writes nothing" 2 \
	"kcopy: KCOPYD_IO_ENGINE='uring' is not auto, io_uring or libaio" env KCOPYD_IO_ENGINE=uring "$KCOPY" -v
copy_check "KCOPYD_IO_ENGINE=IO_URING (names are lower case): exit 2" 2 \
	"kcopy: KCOPYD_IO_ENGINE='IO_URING' is not auto, io_uring or libaio" env KCOPYD_IO_ENGINE=IO_URING "$KCOPY"
kcopydfs_refused "KCOPYD_IO_ENGINE=uring: kcopydfs exits 2 before mounting, with the message" 2 \
	"kcopydfs: KCOPYD_IO_ENGINE='uring' is not auto, io_uring or libaio" env KCOPYD_IO_ENGINE=uring --

# --via: the engine is the daemon's.
if start_daemon; then
	rm -f "$work/via.img"
	run "$KCOPY" --via "$daemon_mount" --io-engine=libaio "$src" "$work/via.img"
	check "kcopy --via MOUNT --io-engine=libaio: exit 2, the message, nothing made" \
		"2|kcopy: --pages, --subjob-kb, --depth and --io-engine cannot go with --via: the daemon's engine is set up by kcopydfs|absent" \
		"$status|$(first_line)|$([ -e "$work/via.img" ] && echo present || echo absent)"
	stop_daemon "$daemon_pid" "$daemon_mount"
else
	fail "kcopydfs mounts (for --via)" "a mount" "$(tr '\n' '|' <"$work/kcopydfs.log")"
fi

# --- the resume command after a cancel ----------------------------------------------------

# A source of about 4 s (16 MiB in reads of 512 KiB, 2 at a time, 100 ms each) through nbdkit.
mkdir "$work/slow"
if nbd_export "$work/slow" -r --filter=delay file "$work/src.img" rdelay=100ms; then
	slow=$work/slow/disk
	# cancelled_resume NAME OPTIONS...: kcopy OPTIONS from the slow source to $dst, SIGTERM
	# once it has copied something; sets $resume to the command it printed, run to the end.
	cancelled_resume() {
		local name=$1 pid
		shift
		reset_dest "$dst"
		: >"$work/progress"
		"$KCOPY" --progress=3 --subjob-kb 512 --depth 2 "$@" "$slow" "$dst" \
			3>"$work/progress" >"$work/stdout" 2>"$work/stderr" &
		pid=$!
		background_pids+=("$pid")
		wait_until 100 test -s "$work/progress"
		kill -TERM "$pid"
		wait "$pid"
		status=$?
		resume=$(sed -n '/, run:$/{n;p}' "$work/stderr")
		if [ "$status" != 143 ] || [[ $resume != "kcopy "* ]]; then
			fail "$name: SIGTERM cancels and prints a resume command" "exit 143 and 'kcopy ...'" \
				"exit $status, '$resume'"
			return 1
		fi
		eval "\"\$KCOPY\" ${resume#kcopy }" >"$work/stdout" 2>"$work/stderr"
		status=$?
		if [ "$status" != 0 ] || ! out=$(cmp -n "$bytes" "$work/src.img" "$dst" 2>&1); then
			fail "$name: the resume command copies the rest" "exit 0, the source's bytes" "exit $status, ${out:-}"
			return 1
		fi
		return 0
	}
	for engine in io_uring libaio; do
		if cancelled_resume "--io-engine=$engine" --io-engine=$engine; then
			if [[ " $resume " == *" --io-engine=$engine "* ]]; then
				pass "--io-engine=$engine: the resume command repeats it and copies the rest: $resume"
			else
				fail "--io-engine=$engine: the resume command repeats it" "--io-engine=$engine in it" "$resume"
			fi
		fi
	done
	if KCOPYD_IO_ENGINE=libaio cancelled_resume "KCOPYD_IO_ENGINE=libaio"; then
		if [[ $resume != *--io-engine* ]]; then
			pass "KCOPYD_IO_ENGINE alone: the resume command has no --io-engine (the variable stays the caller's)"
		else
			fail "KCOPYD_IO_ENGINE alone: the resume command" "no --io-engine" "$resume"
		fi
	fi
else
	fail "nbdkit's delay filter through nbdfuse" "an export at $work/slow/disk" "$(tail -n 3 "$work/nbdfuse.log" | tr '\n' '|')"
fi

check "io_uring_disabled is still $sysctl_before at the end" "$sysctl_before" "$(cat "$sysctl_file")"
finish
