#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopydfs-shutdown.sh: how kcopydfs ends.  SIGTERM while jobs run and
# readers wait: the daemon cancels, unmounts and exits 0 within a few
# seconds, the waiters get their answers, the destination device is let go,
# and a new kcopydfs mounts there again; SIGINT and SIGHUP the same; an
# unmount from outside ends the daemon; a SIGKILLed daemon leaves a dead
# mount ("Transport endpoint is not connected") that the next kcopydfs on
# that mountpoint clears before it mounts (as a daemon, the way people start it).
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-kcopydfs-shutdown.sh
# Needs root; exits 77 (skipped) without it.  Prints PASS or FAIL per
# check with what it expected and got; the last line is "N passed, M failed".

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics losetup timeout stat truncate
setup_work 300M

# exited_within PID SECONDS: wait for PID (a child) to exit; sets exit_status
# ("still running" if it did not) and exit_ms.
exited_within() {
	local pid=$1 start=${EPOCHREALTIME/./} deadline=$((SECONDS + $2))

	while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
		sleep 0.05
	done
	exit_ms=$(((${EPOCHREALTIME/./} - start) / 1000))
	if kill -0 "$pid" 2>/dev/null; then
		exit_status="still running after $2 s"
		return 1
	fi
	wait "$pid"
	exit_status=$?
}

# daemon_of MOUNTPOINT: the pid of the kcopydfs whose command line ends in
# MOUNTPOINT (a daemon is no child of ours; the mountpoint is unique).
daemon_of() {
	local cmdline_file pid

	for cmdline_file in /proc/[0-9]*/cmdline; do
		pid=${cmdline_file#/proc/}
		pid=${pid%/cmdline}
		if tr '\0' '\n' <"$cmdline_file" 2>/dev/null | tail -1 | grep -qxF "$1" &&
			tr '\0' '\n' <"$cmdline_file" 2>/dev/null | head -1 | grep -qxF "$KCOPYDFS"; then
			echo "$pid"
			return 0
		fi
	done
	return 1
}

# The slow job: 128 MiB read at 50 ms a request, or copied 4 KiB at a time.
truncate -s 128M "$work/big.img" "$work/dest.img"
new_loop "$work/dest.img" || skip_all "cannot set up loop devices with losetup --direct-io=on"
dest_loop=$loop_device
if slow_source 128M; then
	slow_from=$slow_file
	slow_options=()
else
	new_loop "$work/big.img" || skip_all "cannot set up loop devices"
	slow_from=$loop_device
	slow_options=(--depth 1 --subjob-kb 4)
fi

# --- SIGTERM while jobs run --------------------------------------------------------

check="SIGTERM while a job runs: exit 0 within 5 s, unmounted, waiters answered"
if start_daemon "${slow_options[@]}"; then
	mnt=$daemon_mount
	pid=$daemon_pid
	mkdir "$mnt/jobs/running" "$mnt/jobs/idle"
	echo "copy from=$slow_from to=$dest_loop" >"$mnt/jobs/running/ctl"
	timeout 20 cat "$mnt/jobs/running/wait" >"$work/running.out" 2>"$work/running.err" &
	running_reader=$!
	timeout 20 cat "$mnt/jobs/idle/wait" >"$work/idle.out" 2>"$work/idle.err" &
	idle_reader=$!
	background_pids+=("$running_reader" "$idle_reader")
	sleep 0.3
	state_before=$(cat "$mnt/jobs/running/state")
	kill -TERM "$pid"
	exited_within "$pid" 5
	wait "$running_reader" "$idle_reader" 2>/dev/null
	if [ "$state_before" != running ]; then
		fail "$check" "the job running before the signal" "state $state_before"
	elif [ "$exit_status" != 0 ]; then
		fail "$check" "exit status 0" "$exit_status ($(tail -2 "$work/kcopydfs.log" | tr '\n' '|'))"
	elif is_mounted "$mnt"; then
		fail "$check" "$mnt gone from /proc/mounts" "$(grep -F " $mnt " /proc/mounts)"
	elif ! grep -qx "state: cancelled" "$work/running.out" || ! grep -qx "state: cancelled" "$work/idle.out"; then
		fail "$check" "both readers of wait told 'state: cancelled'" \
			"running: $(head -2 "$work/running.out" | tr '\n' '|') $(cat "$work/running.err"); idle: $(head -2 "$work/idle.out" | tr '\n' '|') $(cat "$work/idle.err")"
	else
		pass "$check"
		echo "      (exited in $exit_ms ms)"
	fi

	check="after SIGTERM a new kcopydfs mounts on the same mountpoint"
	if start_daemon_on "$mnt"; then
		pid=$daemon_pid
		pass "$check"

		check="the cancelled job let its destination device go"
		mkdir "$mnt/jobs/again"
		if echo "zero to=$dest_loop:0+1M" >"$mnt/jobs/again/ctl" 2>"$work/write.err" &&
			[ "$(timeout 10 cat "$mnt/jobs/again/wait" | sed -n 's/^state: //p')" = "done" ]; then
			pass "$check"
		else
			fail "$check" "a new job on $dest_loop accepted and done" \
				"$(cat "$work/write.err") $(sed -n 's/^error: //p' "$mnt/jobs/again/status")"
		fi
		stop_daemon "$pid" "$mnt"
	else
		fail "$check" "a mount at $mnt" "$(tail -2 "$work/kcopydfs.log" | tr '\n' '|')"
	fi
else
	fail "$check" "kcopydfs to mount" "$(tail -2 "$work/kcopydfs.log" | tr '\n' '|')"
fi

# --- SIGINT and SIGHUP ------------------------------------------------------------------

for signal_name in INT HUP; do
	check="SIG$signal_name: exit 0 and unmounted"
	if start_daemon; then
		mnt=$daemon_mount
		pid=$daemon_pid
		mkdir "$mnt/jobs/idle"
		kill "-$signal_name" "$pid"
		exited_within "$pid" 5
		if [ "$exit_status" != 0 ]; then
			fail "$check" "exit status 0" "$exit_status"
		elif is_mounted "$mnt"; then
			fail "$check" "$mnt gone from /proc/mounts" "still mounted"
		else
			pass "$check"
		fi
	else
		fail "$check" "kcopydfs to mount" "$(tail -2 "$work/kcopydfs.log" | tr '\n' '|')"
	fi
done

# --- an unmount from outside ---------------------------------------------------------------

check="fusermount3 -u from outside: the daemon exits 0"
if start_daemon; then
	mnt=$daemon_mount
	pid=$daemon_pid
	mkdir "$mnt/jobs/idle"
	fusermount3 -u "$mnt" 2>"$work/fusermount.err"
	exited_within "$pid" 5
	if [ "$exit_status" != 0 ]; then
		fail "$check" "exit status 0" "$exit_status $(cat "$work/fusermount.err")"
	elif is_mounted "$mnt"; then
		fail "$check" "$mnt gone from /proc/mounts" "still mounted"
	else
		pass "$check"
	fi
else
	fail "$check" "kcopydfs to mount" "$(tail -2 "$work/kcopydfs.log" | tr '\n' '|')"
fi

# --- SIGKILL leaves a dead mount; the next start clears it ------------------------------------

check="SIGKILL leaves a dead mount: stat says Transport endpoint is not connected"
if start_daemon; then
	mnt=$daemon_mount
	pid=$daemon_pid
	kill -KILL "$pid"
	wait "$pid" 2>/dev/null
	said=$(stat "$mnt" 2>&1 >/dev/null)
	if ! is_mounted "$mnt"; then
		fail "$check" "$mnt still in /proc/mounts" "not mounted"
	elif [[ $said != *"Transport endpoint is not connected"* ]]; then
		fail "$check" "stat: Transport endpoint is not connected" "$said"
	else
		pass "$check"
	fi

	check="kcopydfs started again (as a daemon) clears the dead mount and mounts"
	"$KCOPYDFS" "$mnt" >"$work/restart.out" 2>&1
	restart_status=$?
	new_pid=$(daemon_of "$mnt")
	[ -n "$new_pid" ] && daemon_pids+=("$new_pid") daemon_mounts+=("$mnt")
	mounts=$(awk -v dir="$mnt" '$2 == dir' /proc/mounts | wc -l)
	version=$(timeout 5 cat "$mnt/version" 2>&1)
	if [ "$restart_status" != 0 ]; then
		fail "$check" "kcopydfs exits 0 once mounted" "exit $restart_status: $(tr '\n' '|' <"$work/restart.out")"
	elif [ "$mounts" != 1 ]; then
		fail "$check" "one mount at $mnt in /proc/mounts" "$mounts"
	elif [[ $version != kcopydfs* ]]; then
		fail "$check" "version readable" "$version"
	elif ! grep -q "dead mount" "$work/restart.out"; then
		fail "$check" "a word on stderr about the dead mount" "$(tr '\n' '|' <"$work/restart.out")"
	else
		pass "$check"
	fi

	check="the daemon (not our child) ends on SIGTERM and unmounts"
	if [ -z "$new_pid" ]; then
		fail "$check" "a kcopydfs process serving $mnt" "none found"
	else
		kill -TERM "$new_pid"
		for _ in $(seq 100); do
			kill -0 "$new_pid" 2>/dev/null || break
			sleep 0.05
		done
		if kill -0 "$new_pid" 2>/dev/null; then
			fail "$check" "process $new_pid gone within 5 s" "still running"
		elif is_mounted "$mnt"; then
			fail "$check" "$mnt gone from /proc/mounts" "still mounted"
		else
			pass "$check"
		fi
	fi
else
	fail "$check" "kcopydfs to mount" "$(tail -2 "$work/kcopydfs.log" | tr '\n' '|')"
fi

finish
