#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopydfs-idle.sh: an idle daemon uses no CPU.  Two daemons, one
# without and one with --state-dir, each given 1,000 small zero jobs (to a
# file on a tmpfs) that all end; then, with nothing running, each may use
# under 1% of a CPU over 5 s: the utime + stime of the process (all its
# threads) from /proc/PID/stat, in clock ticks (getconf CLK_TCK), before
# and after.  A checkpointer whose timed wait returns at once (a condition
# variable on one clock, a deadline on another) takes a whole core here.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-kcopydfs-idle.sh
# Needs root (tmpfs, FUSE); exits 77 (skipped) without it.
# KCOPYD_IDLE_JOBS sets the number of jobs (default 1000).
#
# Each check prints PASS or FAIL with the ticks it measured; the last line
# is "N passed, M failed".

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics getconf truncate awk
setup_work 64M

JOBS=${KCOPYD_IDLE_JOBS:-1000}
SECONDS_IDLE=5
TICKS=$(getconf CLK_TCK)
# 1% of one CPU over the interval, in ticks (5 at the usual 100 Hz).
LIMIT_TICKS=$((TICKS * SECONDS_IDLE / 100))

# cpu_ticks PID: utime + stime of the whole process, in clock ticks.
# Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the
# command name (which may hold blanks).
cpu_ticks() {
	sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# run_jobs MOUNT: JOBS zero jobs of 8 sectors through clone, each waited for.
# Only shell builtins: no process is started per job.
run_jobs() {
	local mount=$1 index id line failed=0

	for ((index = 0; index < JOBS; index++)); do
		exec 3<>"$mount/clone" || return 1
		read -r id <&3
		echo "zero to=$work/dest.img:$(((index % 64) * 8))+8" >&3 || failed=$((failed + 1))
		exec 3<&-
		read -r line <"$mount/jobs/$id/wait" || failed=$((failed + 1))
		[ "$line" = "state: done" ] || failed=$((failed + 1))
	done
	return $((failed > 0))
}

# idle_check NAME [OPTIONS...]: a daemon with OPTIONS, JOBS jobs, then 5 s idle.
idle_check() {
	local name=$1 before after used
	shift

	if ! start_daemon "$@"; then
		fail "$name: kcopydfs mounts" "a mount" "$(tail -n 3 "$work/kcopydfs.log")"
		return
	fi
	if run_jobs "$daemon_mount"; then
		pass "$name: $JOBS zero jobs all done"
	else
		fail "$name: $JOBS zero jobs" "all done" "some refused or not done"
	fi
	check "$name: jobs active after the last one ended" 0 "$(sed -n 's/^jobs_active: //p' "$daemon_mount/stats")"
	# Let the last completions and FUSE's idle workers settle.
	sleep 1
	before=$(cpu_ticks "$daemon_pid")
	sleep "$SECONDS_IDLE"
	after=$(cpu_ticks "$daemon_pid")
	used=$((after - before))
	if [ "$used" -lt "$LIMIT_TICKS" ]; then
		pass "$name: idle for ${SECONDS_IDLE} s it used $used of $((TICKS * SECONDS_IDLE)) ticks (under 1%: < $LIMIT_TICKS)"
	else
		fail "$name: CPU used in ${SECONDS_IDLE} s idle, in ticks of 1/$TICKS s" "< $LIMIT_TICKS (1% of a CPU)" \
			"$used ($((used * 100 / (TICKS * SECONDS_IDLE)))% of a CPU)"
	fi
	stop_daemon "$daemon_pid" "$daemon_mount"
}

truncate -s 1M "$work/dest.img"
idle_check "without --state-dir"
idle_check "with --state-dir" --state-dir "$work/state"

finish
