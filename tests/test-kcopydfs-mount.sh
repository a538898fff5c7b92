#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopydfs-mount.sh: what a new user hits when mounting and unmounting.
#  - kcopydfs on a mountpoint that is already a kcopydfs mount (with -f and
#    as a daemon) exits 1 with "is already a kcopydfs mount (pid N); unmount
#    it first: fusermount3 -u MNT" and mounts nothing: the first mount stays
#    alone and serves its jobs; on one whose daemon is stopped (SIGSTOP) it
#    gives up within a few seconds, saying it does not answer; a mountpoint
#    inside a kcopydfs mount is refused too.
#  - on a non-empty directory it mounts, with a warning that names the
#    directory and how many entries it hides; the files are there again
#    after the unmount.  On an empty one it says nothing.
#  - an unmount from outside (fusermount3 -u) and SIGTERM while jobs run:
#    each job is logged by name with what became of it: "cancelled"
#    without --state-dir; with it "interrupted ... resumable", and a
#    daemon started again on that directory resumes it to a correct copy.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-kcopydfs-mount.sh
# Needs root, nbdkit and nbdfuse (a slow source); exits 77 (skipped) without
# them.  Prints PASS or FAIL per check with what it expected and got; the
# last line is "N passed, M failed".

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics timeout truncate cmp nbdkit nbdfuse
setup_work 400M

# log_lines: the daemons' standard error since the last `: >"$work/kcopydfs.log"`, on one line.
log_lines() {
	tr '\n' '|' <"$work/kcopydfs.log" | cut -c1-600
}

# mounts_at DIR: how many mounts are stacked on DIR.
mounts_at() {
	awk -v dir="$1" '$2 == dir' /proc/mounts | wc -l
}

# exits_within PID SECONDS: wait for PID (a child) to end; sets exit_status.
exits_within() {
	local deadline=$((SECONDS + $2))

	while kill -0 "$1" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
		sleep 0.05
	done
	if kill -0 "$1" 2>/dev/null; then
		exit_status="still running after $2 s"
		return 1
	fi
	wait "$1"
	exit_status=$?
}

# --- a second kcopydfs on a kcopydfs mount ----------------------------------------------

if ! start_daemon; then
	fail "kcopydfs mounts" "a mount at $daemon_mount" "$(log_lines)"
	finish
fi
mnt=$daemon_mount
first_pid=$daemon_pid
mkdir "$mnt/jobs/first-jobs-job"
expected="^kcopydfs: $(re_quote "$mnt") is already a kcopydfs mount \\(pid $first_pid\\); unmount it first: fusermount3 -u $(re_quote "$mnt")\$"

for mode in -f daemon; do
	check="kcopydfs ($mode) on a kcopydfs mount: exit 1, says so, mounts nothing"
	args=()
	[ "$mode" = -f ] && args=(-f)
	timeout 10 "$KCOPYDFS" "${args[@]}" "$mnt" >"$work/second.out" 2>"$work/second.err"
	second_status=$?
	stacked=$(mounts_at "$mnt")
	while [ "$(mounts_at "$mnt")" -gt 1 ]; do
		umount -l "$mnt"	# a stacked mount of a failed check: the top one goes
	done
	if [ "$second_status" != 1 ]; then
		fail "$check" "exit status 1" "$second_status: $(tr '\n' '|' <"$work/second.err")"
	elif ! grep -Eq "$expected" "$work/second.err"; then
		fail "$check" "a line matching /$expected/" "$(tr '\n' '|' <"$work/second.err")"
	elif [ "$stacked" != 1 ]; then
		fail "$check" "one mount at $mnt" "$stacked"
	elif [ -s "$work/second.out" ]; then
		fail "$check" "nothing on standard output" "$(tr '\n' '|' <"$work/second.out")"
	elif [ ! -d "$mnt/jobs/first-jobs-job" ]; then
		fail "$check" "the first mount's job still seen" "$(ls "$mnt/jobs" 2>&1)"
	else
		pass "$check"
	fi
done

check="a mountpoint inside a kcopydfs mount: exit 1, says so"
timeout 10 "$KCOPYDFS" -f "$mnt/jobs/first-jobs-job" >/dev/null 2>"$work/inside.err"
inside_status=$?
expected="is inside the kcopydfs mount at $(re_quote "$mnt"): mount on a directory outside it\$"
if [ "$inside_status" != 1 ] || ! grep -Eq "$expected" "$work/inside.err"; then
	fail "$check" "exit 1 and a line matching /$expected/" "$inside_status: $(tr '\n' '|' <"$work/inside.err")"
else
	pass "$check"
fi

# A stopped daemon: the check must not hang on its mount.
check="kcopydfs on a kcopydfs mount whose daemon is stopped: exit 1 within 10 s, says it does not answer"
kill -STOP "$first_pid"
start=$SECONDS
timeout 20 "$KCOPYDFS" "$mnt" >/dev/null 2>"$work/stopped.err"
stopped_status=$?
took=$((SECONDS - start))
kill -CONT "$first_pid"
expected="is a kcopydfs mount \\(pid $first_pid\\) that does not answer .*fusermount3 -u -z $(re_quote "$mnt")\$"
if [ "$stopped_status" != 1 ] || [ "$took" -gt 10 ]; then
	fail "$check" "exit 1 within 10 s" "exit $stopped_status after $took s: $(tr '\n' '|' <"$work/stopped.err")"
elif ! grep -Eq "$expected" "$work/stopped.err"; then
	fail "$check" "a line matching /$expected/" "$(tr '\n' '|' <"$work/stopped.err")"
else
	pass "$check"
fi
check="the first daemon serves on after SIGCONT"
version=$(timeout 10 cat "$mnt/version" 2>&1)
if [[ $version == "kcopydfs "* ]] && [ -d "$mnt/jobs/first-jobs-job" ]; then
	pass "$check"
else
	fail "$check" "its version file and its job" "$version; $(ls "$mnt/jobs" 2>&1)"
fi
stop_daemon "$first_pid" "$mnt"

# --- a non-empty mountpoint --------------------------------------------------------------

populated=$work/populated
mkdir "$populated"
touch "$populated/one" "$populated/two" "$populated/.hidden"
: >"$work/kcopydfs.log"
check="kcopydfs on a directory with 3 entries: mounts, and warns that they are hidden"
if start_daemon_on "$populated"; then
	expected="^kcopydfs: $(re_quote "$populated") is not empty: its 3 entries are hidden while kcopydfs is mounted there\$"
	if grep -Eq "$expected" "$work/kcopydfs.log"; then
		pass "$check"
	else
		fail "$check" "a line matching /$expected/" "$(log_lines)"
	fi
	stop_daemon "$daemon_pid" "$populated"
	check "the entries are there again after the unmount" ".hidden one two" "$(ls -A "$populated" | sort | tr '\n' ' ' | sed 's/ $//')"
else
	fail "$check" "a mount at $populated" "$(log_lines)"
fi

: >"$work/kcopydfs.log"
check="kcopydfs on an empty directory: no warning"
if start_daemon; then
	stop_daemon "$daemon_pid" "$daemon_mount"
	if grep -q "not empty" "$work/kcopydfs.log"; then
		fail "$check" "no 'not empty' line" "$(log_lines)"
	else
		pass "$check"
	fi
else
	fail "$check" "a mount" "$(log_lines)"
fi

# --- stopping while jobs run: what each job became ----------------------------------------

slow_source 64M 100ms || skip_all "nbdfuse did not export a slow source: $(tail -n 3 "$work/nbdfuse.log" | tr '\n' '|')"
# Random bytes, so that a resumed copy is told from a zeroed one.
head -c 64M /dev/urandom >"$work/source.bin"
dd if="$work/source.bin" of="$slow_file" bs=1M conv=notrunc status=none
truncate -s 64M "$work/dest-a.img" "$work/dest-b.img"
state_dir=$work/state
mkdir -m 0700 "$state_dir"

# start_slow_jobs: jobs slow-a and slow-b copying the slow source on $mnt; 1 if either is not running.
start_slow_jobs() {
	local name

	for name in a b; do
		mkdir "$mnt/jobs/slow-$name" &&
			echo "copy from=$slow_file to=$work/dest-$name.img" >"$mnt/jobs/slow-$name/ctl" || return 1
	done
	sleep 0.3
	[ "$(cat "$mnt/jobs/slow-a/state")" = running ] && [ "$(cat "$mnt/jobs/slow-b/state")" = running ]
}

for how in fusermount3 SIGTERM; do
	for records in none state-dir; do
		variant=" ($how, $([ "$records" = none ] && echo "no --state-dir" || echo "--state-dir"))"
		options=()
		[ "$records" = state-dir ] && options=(--state-dir "$state_dir")
		rm -f "$state_dir"/*
		: >"$work/kcopydfs.log"
		check="two running jobs$variant"
		if ! start_daemon "${options[@]}"; then
			fail "$check" "a mount" "$(log_lines)"
			continue
		fi
		mnt=$daemon_mount
		pid=$daemon_pid
		if ! start_slow_jobs; then
			fail "$check" "slow-a and slow-b running" "$(cat "$mnt/jobs/slow-a/state" "$mnt/jobs/slow-b/state" 2>&1 | tr '\n' ' ')"
			stop_daemon "$pid" "$mnt"
			continue
		fi
		pass "$check"
		# With --state-dir, a third job from clone-autoremove whose descriptor is closed:
		# removed when it ends, record and all, so it is not "resumable" (found in review).
		auto_id=
		if [ "$records" = state-dir ]; then
			truncate -s 64M "$work/dest-auto.img"
			exec 7<>"$mnt/clone-autoremove" && read -r auto_id <&7 &&
				echo "copy from=$slow_file to=$work/dest-auto.img" >&7
			exec 7>&-
			# The kernel sends the close (RELEASE) to the daemon on its own
			# time; nothing shows it was taken, so give it a moment before
			# the stop, which would otherwise come first now and then.
			sleep 0.3
		fi
		if [ "$how" = fusermount3 ]; then
			fusermount3 -u "$mnt" 2>"$work/fusermount.err"
		else
			kill -TERM "$pid"
		fi
		check="the daemon exits 0$variant"
		if exits_within "$pid" 10 && [ "$exit_status" = 0 ]; then
			pass "$check"
		else
			fail "$check" "exit status 0" "$exit_status $(cat "$work/fusermount.err" 2>/dev/null) $(log_lines)"
		fi
		for name in slow-a slow-b; do
			check="the log names $name and what became of it$variant"
			if [ "$records" = none ]; then
				expected="^kcopydfs: job $name: cancelled at [0-9]+ of 131072 sectors, its destinations partly written\$"
			else
				expected="^kcopydfs: job $name: interrupted at [0-9]+ of 131072 sectors \\([0-9]+ durable\\), resumable: start kcopydfs again with --state-dir $(re_quote "$state_dir") and write \"resume\" to jobs/$name/ctl\$"
			fi
			if grep -Eq "$expected" "$work/kcopydfs.log"; then
				pass "$check"
			else
				fail "$check" "a line matching /$expected/" "$(log_lines)"
			fi
		done
		if [ -n "$auto_id" ]; then
			check="a job removed when it ends is logged as cancelled, not resumable$variant"
			if grep -Eq "^kcopydfs: job $auto_id: cancelled at [0-9]+ of 131072 sectors" "$work/kcopydfs.log"; then
				pass "$check"
			else
				fail "$check" "job $auto_id: cancelled at ..." "$(log_lines)"
			fi
		fi
		check="the shutdown line says what is done to the jobs$variant"
		if [ "$records" = none ]; then words="cancelling jobs"; else words="interrupting jobs"; fi
		if grep -q "$words" "$work/kcopydfs.log"; then
			pass "$check"
		else
			fail "$check" "a line with '$words'" "$(log_lines)"
		fi
		[ "$records" = state-dir ] || continue

		check="started again with --state-dir, the jobs resume to correct copies$variant"
		if ! start_daemon --state-dir "$state_dir"; then
			fail "$check" "a mount" "$(log_lines)"
			continue
		fi
		mnt=$daemon_mount
		pid=$daemon_pid
		states="$(cat "$mnt/jobs/slow-a/state" "$mnt/jobs/slow-b/state" 2>&1 | tr '\n' ' ')"
		if [ "$states" != "interrupted interrupted " ]; then
			fail "$check" "both jobs interrupted" "$states"
		else
			for name in a b; do
				echo resume >"$mnt/jobs/slow-$name/ctl"
			done
			finals=
			for name in a b; do
				finals+="$(timeout 60 cat "$mnt/jobs/slow-$name/wait" | sed -n 's/^state: //p') "
			done
			if [ "$finals" != "done done " ]; then
				fail "$check" "both done" "$finals"
			elif ! cmp -s "$work/source.bin" "$work/dest-a.img" || ! cmp -s "$work/source.bin" "$work/dest-b.img"; then
				fail "$check" "both destinations equal to the source" "$(cmp "$work/source.bin" "$work/dest-a.img" 2>&1) $(cmp "$work/source.bin" "$work/dest-b.img" 2>&1)"
			else
				pass "$check"
			fi
		fi
		stop_daemon "$pid" "$mnt"
		truncate -s 0 "$work/dest-a.img" "$work/dest-b.img"
		truncate -s 64M "$work/dest-a.img" "$work/dest-b.img"
	done
done

finish
