#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-adversary-limits.sh: what a local user can do to exhaust a root
# kcopydfs mounted with -o allow_other, and that root and other users keep
# their room (issue 12, item 6).  The attacker is nobody:
#   setpriv --reuid=65534 --regid=65534 --clear-groups
#  - With the defaults, nobody makes jobs with mkdir until refused: the
#    1025th fails with EDQUOT (--max-jobs-per-user, default 1024), and so
#    does opening clone; root can still mkdir, clone and run a copy, and
#    uid 65533 can still make its jobs.
#  - With --max-jobs-per-user past the table, nobody fills what users other
#    than root may take: 12288 less an eighth, 10752 jobs, then ENOSPC, for
#    uid 65533 too; root still makes jobs and runs a copy in the eighth kept
#    for it.
#  - With --max-jobs 8, nobody starts slow copies until refused: the 8th
#    description fails with EAGAIN (7 = 8 less an eighth), and root's copy
#    is still accepted.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-adversary-limits.sh
# Needs root, setpriv and python3 (nbdkit and nbdfuse for the last part,
# which is skipped without them); exits 77 (skipped) without the rest.
# Each check prints PASS or FAIL with what it expected and what it got;
# the last line is "N passed, M failed".

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics setpriv python3 timeout truncate mknod stat
setup_work 256M

NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
OTHER=(setpriv --reuid=65533 --regid=65533 --clear-groups)
# A python3 that nobody can run (not one under root's home, as pyenv's shims are).
PYTHON=
for candidate in /usr/bin/python3 /usr/local/bin/python3 "$(command -v python3)"; do
	[ -x "$candidate" ] && "${NOBODY[@]}" "$candidate" -c '' 2>/dev/null && PYTHON=$candidate && break
done
[ -n "$PYTHON" ] || skip_all "no python3 that uid 65534 can run"
PER_USER_DEFAULT=1024
TABLE=12288
OTHERS_TABLE=$((TABLE - TABLE / 8))

# fill AS... -- JOBS PREFIX MAX: as the user, mkdir JOBS/PREFIXn until
# refused or MAX made, then open ../clone once; prints "MADE ERRNO CLONE"
# (ERRNO "none" if all MAX were made; CLONE "opened" or its errno).
fill() {
	local as=()

	while [ "$1" != -- ]; do
		as+=("$1")
		shift
	done
	shift
	"${as[@]}" "$PYTHON" - "$@" <<'PY'
import errno, os, sys
jobs, prefix, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
made, error = 0, "none"
while made < limit:
    try:
        os.mkdir(os.path.join(jobs, "%s%d" % (prefix, made)))
    except OSError as e:
        error = errno.errorcode.get(e.errno, str(e.errno))
        break
    made += 1
try:
    os.close(os.open(os.path.join(os.path.dirname(jobs), "clone"), os.O_RDWR))
    clone = "opened"
except OSError as e:
    clone = errno.errorcode.get(e.errno, str(e.errno))
print(made, error, clone)
PY
}

# root_can_work MOUNT WHAT: (WHAT a job name) root makes a job with mkdir, one through clone,
# and runs a zero job to a file to done.
root_can_work() {
	local mount=$1 what=$2 id line

	if mkdir "$mount/jobs/root-$what" 2>"$work/err"; then
		pass "$what: root can still mkdir"
	else
		fail "$what: root's mkdir" "a job" "$(cat "$work/err")"
	fi
	if exec 3<>"$mount/clone"; then
		read -r id <&3
		echo "zero to=$work/root.img:0+64" >&3 2>"$work/err"
		exec 3<&-
		read -r line <"$mount/jobs/$id/wait"
		check "$what: root can still open clone and run a zero job through it" "state: done" "$line"
	else
		fail "$what: root opens clone" "a descriptor" "refused"
	fi
	if echo "copy from=$work/root-src.img to=$work/root.img" >"$mount/jobs/root-$what/ctl" 2>"$work/err"; then
		read -r line <"$mount/jobs/root-$what/wait"
		check "$what: root can still run a copy" "state: done" "$line"
	else
		fail "$what: root's copy" "accepted" "$(cat "$work/err")"
	fi
}

head -c 1M /dev/urandom >"$work/root-src.img"
truncate -s 1M "$work/root.img"
chmod 0600 "$work/root-src.img" "$work/root.img"

# --- the per-user limit, with the defaults -------------------------------------------------

if start_daemon -o allow_other; then
	mnt=$daemon_mount
	result=$(fill "${NOBODY[@]}" -- "$mnt/jobs" n $((PER_USER_DEFAULT + 100)))
	check "nobody makes jobs until refused: the count, the errno of mkdir and of clone" \
		"$PER_USER_DEFAULT EDQUOT EDQUOT" "$result"
	if "${NOBODY[@]}" mkdir "$mnt/jobs/one-more" 2>"$work/err"; then
		fail "nobody's mkdir over the limit" "$(errno_text EDQUOT)" "made"
	else
		grep -q "$(errno_text EDQUOT)" "$work/err" && pass "nobody's mkdir over the limit says: $(cat "$work/err")" ||
			fail "nobody's mkdir over the limit" "$(errno_text EDQUOT)" "$(cat "$work/err")"
	fi
	check "the jobs nobody has" "$PER_USER_DEFAULT" "$(sed -n 's/^jobs: //p' "$mnt/stats")"
	root_can_work "$mnt" at-limit
	check "uid 65533 still makes its jobs" "10 none opened" "$(fill "${OTHER[@]}" -- "$mnt/jobs" o 10)"
	# A job removed gives its place back.
	"${NOBODY[@]}" rmdir "$mnt/jobs/n0"
	check "after an rmdir nobody makes one more, and no other" "1 EDQUOT EDQUOT" \
		"$(fill "${NOBODY[@]}" -- "$mnt/jobs" again 5)"
	stop_daemon "$daemon_pid" "$mnt"
else
	fail "kcopydfs mounts" "a mount" "$(tail -n 3 "$work/kcopydfs.log")"
fi

# --- the table: an eighth of it kept for root ------------------------------------------------

if start_daemon -o allow_other --max-jobs-per-user 100000; then
	mnt=$daemon_mount
	result=$(fill "${NOBODY[@]}" -- "$mnt/jobs" n $((TABLE + 10)))
	check "with --max-jobs-per-user 100000 nobody fills what users other than root may take" \
		"$OTHERS_TABLE ENOSPC ENOSPC" "$result"
	check "then uid 65533 is refused too (the table is full for users other than root)" "0 ENOSPC ENOSPC" \
		"$(fill "${OTHER[@]}" -- "$mnt/jobs" o 10)"
	root_can_work "$mnt" table-full
	stop_daemon "$daemon_pid" "$mnt"
else
	fail "kcopydfs mounts with --max-jobs-per-user" "a mount" "$(tail -n 3 "$work/kcopydfs.log")"
fi

# --- queued and running jobs: an eighth of --max-jobs kept for root -------------------------

# Each job has one read of 64 KiB in flight, 100 ms each: a 64 MiB copy
# takes minutes, and a shutdown waits for at most 8 reads.
if ! slow_source 64M 100ms; then
	echo "      (no nbdkit or nbdfuse: the --max-jobs share is not checked)"
	finish
fi
new_loop "$slow_file" -r || skip_all "losetup failed"
# nobody may read the slow device through a node of this test's own, on
# its tmpfs: /dev/loopN is shared with every other test (and keeps its mode
# after losetup -d), so its mode is never changed.
slow_loop=$work/slow.dev
mknod -m 0644 "$slow_loop" b "$((0x$(stat -c %t "$loop_device")))" "$((0x$(stat -c %T "$loop_device")))" ||
	skip_all "cannot make a device node on the tmpfs"
truncate -s 64M "$work/nobody.img"
chown 65534:65534 "$work/nobody.img"
if start_daemon -o allow_other --max-jobs 8 --depth 1 --subjob-kb 64; then
	mnt=$daemon_mount
	started=0
	for index in 1 2 3 4 5 6 7 8; do
		"${NOBODY[@]}" mkdir "$mnt/jobs/slow$index"
		"${NOBODY[@]}" bash -c "echo 'copy from=$slow_loop to=$work/nobody.img' >'$mnt/jobs/slow$index/ctl'" \
			2>"$work/err" || break
		started=$index
	done
	check "with --max-jobs 8 nobody starts 7 slow copies, and its 8th description is refused" 7 "$started"
	grep -q "$(errno_text EAGAIN)" "$work/err" && pass "nobody's 8th description fails with EAGAIN" ||
		fail "nobody's 8th description" "$(errno_text EAGAIN)" "$(cat "$work/err")"
	rejected=$(status_field "$mnt/jobs/slow8" rejected)
	[[ "$rejected" == *"kept for root"*EAGAIN* ]] && pass "its rejected line says why: $rejected" ||
		fail "the rejected line of nobody's 8th" "...kept for root (EAGAIN)" "$rejected"
	mkdir "$mnt/jobs/root-slow"
	if echo "copy from=$slow_loop:0+2048 to=$work/root.img:0+2048" >"$mnt/jobs/root-slow/ctl" 2>"$work/err"; then
		pass "root's copy is accepted while nobody holds all it may"
	else
		fail "root's copy while nobody holds all it may" "accepted" "$(cat "$work/err")"
	fi
	for job in slow1 slow2 slow3 slow4 slow5 slow6 slow7 root-slow; do
		echo cancel >"$mnt/jobs/$job/ctl" 2>/dev/null
	done
	# Let the reads in flight end before the daemon is stopped.
	for _ in $(seq 100); do
		[ "$(sed -n 's/^jobs_active: //p' "$mnt/stats")" = 0 ] && break
		sleep 0.1
	done
	stop_daemon "$daemon_pid" "$mnt"
else
	fail "kcopydfs mounts with --max-jobs 8" "a mount" "$(tail -n 3 "$work/kcopydfs.log")"
fi

finish
