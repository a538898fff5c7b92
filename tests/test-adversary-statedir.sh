#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-adversary-statedir.sh: what a local user can do to a root kcopydfs
# through its --state-dir (issue 12, item 5).  The attacker is nobody:
#   setpriv --reuid=65534 --regid=65534 --clear-groups
#  - nobody makes the state directory (in a sticky, world-writable
#    directory, as /tmp) and plants links in it: as the lock, leading to a
#    file that does not exist, and as temporary record names, leading to a
#    root-only file.  The daemon refuses to start, saying the directory is
#    owned by uid 65534; the root-only file is byte for byte as it was and
#    nothing was created.
#  - A state directory writable by group or others (0770, 0777), and one
#    under a parent writable by others that is not sticky (0777), are
#    refused at start with the mode in the message; under a sticky parent
#    (1777, as /tmp) a directory of root's is accepted.
#  - In a directory of root's, links planted where the daemon writes (put
#    there by root, standing for anything that could): the lock leading to
#    a file that does not exist, the old fixed temporary names .tmp-N.job
#    of the next jobs and the next record names leading to the root-only
#    file.  The daemon starts, runs jobs and saves their records over the
#    links, and the root-only file is unchanged, nothing is created.
#  - Record names that are a FIFO, a link, or a file of another user are
#    skipped (and logged) at start: the daemon does not hang on the FIFO,
#    and shows no job for them; the real records come back.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-adversary-statedir.sh
# Needs root and setpriv; exits 77 (skipped) without them.  Each check
# prints PASS or FAIL with what it expected and what it got; the last line
# is "N passed, M failed".

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics setpriv timeout cmp stat mkfifo
setup_work 64M

NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
mnt=$(mktemp -d "${TMPDIR:-/tmp}/test-kcopydfs-mnt.XXXXXX")
daemon_mounts+=("$mnt")

# The root-only file the links lead to, its copy to compare with, and a
# name that must never be created.
mkdir -m 0700 "$work/secret"
printf 'root:only:this file must never change\n' >"$work/secret/shadow"
chmod 0600 "$work/secret/shadow"
cp -p "$work/secret/shadow" "$work/shadow.orig"
secret=$work/secret/shadow
created=$work/secret/created-by-the-daemon

# A sticky world-writable directory, as /tmp, and a job's files.
mkdir -m 1777 "$work/pub"
head -c 64K /dev/urandom >"$work/src.img"
truncate -s 64K "$work/d1.img" "$work/d2.img" "$work/d3.img" "$work/d4.img"

# secret_intact NAME: the root-only file is as it was, and nothing was created.
secret_intact() {
	if cmp -s "$secret" "$work/shadow.orig"; then
		pass "$1: the root-only file is byte for byte as it was"
	else
		fail "$1: the root-only file" "unchanged" "$(head -c 200 "$secret" | tr '\n' '|')"
	fi
	if [ -e "$created" ]; then
		fail "$1: nothing created through a link" "no $created" "it exists"
	else
		pass "$1: nothing was created through a link"
	fi
}

# expect_refused NAME DIR PATTERN: kcopydfs does not start on --state-dir
# DIR, and says PATTERN on standard error.
expect_refused() {
	: >"$work/kcopydfs.log"
	if start_daemon_on "$mnt" -o allow_other --state-dir "$2"; then
		fail "$1" "refused at start" "it started"
		stop_daemon "$daemon_pid" "$mnt"
		return
	fi
	wait "$daemon_pid" 2>/dev/null
	if grep -q -- "$3" "$work/kcopydfs.log"; then
		pass "$1: refused at start: $(head -n 1 "$work/kcopydfs.log")"
	else
		fail "$1: the message at start" "$3" "$(head -n 2 "$work/kcopydfs.log" | tr '\n' '|')"
	fi
}

# --- nobody's own state directory ----------------------------------------------------

"${NOBODY[@]}" mkdir "$work/pub/state"
"${NOBODY[@]}" ln -s "$created" "$work/pub/state/lock"
for id in 1 2 3 4 5; do
	"${NOBODY[@]}" ln -s "$secret" "$work/pub/state/.tmp-$id.job"
done
expect_refused "a state directory owned by nobody" "$work/pub/state" "owned by uid 65534, not by the daemon's user"
secret_intact "a state directory owned by nobody"

# --- modes ----------------------------------------------------------------------------

for mode in 0777 0770 0702; do
	mkdir -m "$mode" "$work/state-$mode"
	chmod "$mode" "$work/state-$mode"
	expect_refused "a state directory of mode $mode" "$work/state-$mode" "has mode $mode: writable by its group or others"
done
mkdir -m 0777 "$work/open"
chmod 0777 "$work/open"
mkdir -m 0700 "$work/open/state"
expect_refused "a state directory under a parent of mode 0777 (not sticky)" "$work/open/state" \
	"a parent of the state directory, has mode 0777"
mkdir -m 0700 "$work/pub/root-state"
if start_daemon_on "$mnt" -o allow_other --state-dir "$work/pub/root-state"; then
	pass "a state directory of root's under a sticky parent (1777, as /tmp) is accepted"
	stop_daemon "$daemon_pid" "$mnt"
else
	fail "a state directory of root's under a sticky parent" "accepted" "$(tail -n 2 "$work/kcopydfs.log")"
fi

# --- links where the daemon writes, in a directory of root's ----------------------------

state=$work/state
mkdir -m 0700 "$state"
ln -s "$created" "$state/lock"
: >"$work/kcopydfs.log"
if start_daemon_on "$mnt" -o allow_other --state-dir "$state"; then
	pass "the daemon starts with a link planted as its lock"
	[ -f "$state/lock" ] && [ ! -L "$state/lock" ] && pass "the lock is a regular file now" ||
		fail "the lock" "a regular file" "$(stat -c %F "$state/lock" 2>&1)"
	grep -q "lock is not a regular file" "$work/kcopydfs.log" && pass "the daemon says it removed the planted lock" ||
		fail "the message about the planted lock" "lock is not a regular file" "$(head -n 2 "$work/kcopydfs.log")"
	# The temporary names of the next jobs (fixed, before: .tmp-ID.job) and their records' names.
	for id in 1 2 3 4 5; do
		ln -s "$secret" "$state/.tmp-$id.job"
	done
	ln -s "$secret" "$state/2.job"
	done_jobs=0
	for index in 1 2 3; do
		mkdir "$mnt/jobs/j$index"
		if echo "copy from=$work/src.img to=$work/d$index.img" >"$mnt/jobs/j$index/ctl" 2>"$work/err"; then
			read -r line <"$mnt/jobs/j$index/wait"
			[ "$line" = "state: done" ] && done_jobs=$((done_jobs + 1))
		else
			echo "      j$index refused: $(cat "$work/err")"
		fi
	done
	check "the daemon still runs jobs (of 3, done)" 3 "$done_jobs"
	records=""
	for id in 1 2 3; do
		[ -f "$state/$id.job" ] && [ ! -L "$state/$id.job" ] && records+=" $id"
	done
	check "each job's record is a regular file (2.job saved over a link)" " 1 2 3" "$records"
	secret_intact "links as the lock, as temporary names and as a record name"
	stop_daemon "$daemon_pid" "$mnt"
else
	fail "the daemon starts with a link planted as its lock" "a mount" "$(tail -n 3 "$work/kcopydfs.log")"
fi

# --- what is not a record of the daemon's is skipped at start ---------------------------

mkfifo -m 0600 "$state/50.job"
ln -s "$secret" "$state/51.job"
cp "$state/1.job" "$state/52.job"
chown 65534:65534 "$state/52.job"
: >"$work/kcopydfs.log"
if start_daemon_on "$mnt" -o allow_other --state-dir "$state"; then
	pass "the daemon starts with a FIFO, a link and nobody's file as records"
	for id in 50 51 52; do
		if [ -e "$mnt/jobs/$id" ]; then
			fail "record name $id.job" "skipped, no job $id" "$(tr '\n' '|' <"$mnt/jobs/$id/status")"
		else
			pass "record name $id.job is skipped: no job $id"
		fi
	done
	skipped=$(grep -c "skipped, not read as a record" "$work/kcopydfs.log")
	check "each skipped name is logged" 3 "$skipped"
	check "the real records come back" "done done done" "$(for job in j1 j2 j3; do status_field "$mnt/jobs/$job" state; done | tr '\n' ' ' | sed 's/ $//')"
	mkdir "$mnt/jobs/after"
	echo "copy from=$work/src.img to=$work/d4.img" >"$mnt/jobs/after/ctl"
	read -r line <"$mnt/jobs/after/wait"
	check "a job after the restart" "state: done" "$line"
	secret_intact "records that are links, FIFOs or another user's"
	stop_daemon "$daemon_pid" "$mnt"
else
	fail "the daemon starts with a FIFO, a link and nobody's file as records" "a mount within 5 s" \
		"$(tail -n 3 "$work/kcopydfs.log")"
fi

finish
