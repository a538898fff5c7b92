#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopydfs-log.sh: where kcopydfs's messages go, and what it tells a
# service manager.
#  - With -f: the start line (mountpoint, pages, version) and the shutdown
#    lines on standard error, and nothing to syslog; when $JOURNAL_STREAM
#    says that standard error is systemd's journal, each line starts with its
#    priority ("<6>"), which the journal keeps as the line's priority.
#  - Daemonized (no -f): the same lines in syslog, as "kcopydfs[PID]" with the
#    facility LOG_DAEMON (<30> is daemon.info, <29> daemon.notice), and a
#    failure after going into the background (the engine's buffers refused
#    under an address-space limit) as a daemon.err line <27>, the mount gone.
#  - $NOTIFY_SOCKET (a path, and an abstract @name): READY=1 once the mount
#    answers, STOPPING=1 on SIGTERM, as systemd's Type=notify expects.
# syslog is a stand-in: tests/dgram_listen.py on a datagram socket at /dev/log,
# which the test puts in place in a mount namespace of its own (unshare -m:
# a tmpfs /dev with the few nodes the daemon needs), so the machine's /dev
# and syslog, if any, are not touched.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-kcopydfs-log.sh
# Needs root, unshare, prlimit and python3; exits 77 (skipped) without them.
# Prints PASS or FAIL per check with what it expected and got; the last line
# is "N passed, M failed".

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics unshare prlimit python3 mknod
# The whole test runs in a private mount namespace: /dev is replaced there.
if [ -z "${KCOPYD_LOG_TEST_NS:-}" ]; then
	KCOPYD_LOG_TEST_NS=1 exec unshare -m --propagation private -- "$BASH" "$0" "$@"
	skip_all "unshare -m failed"
fi
setup_work 64M
LISTEN="python3 ${TESTS_SRCDIR:-$(dirname "$0")}/dgram_listen.py"

check() {
	if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "$2" "$3"; fi
}

# expect_line NAME FILE REGEX: FILE has a line matching REGEX (waits 5 s for it).
expect_line() {
	for _ in $(seq 100); do
		grep -Eq -- "$3" "$2" 2>/dev/null && { pass "$1"; return 0; }
		sleep 0.05
	done
	fail "$1" "a line matching /$3/ in $(basename "$2")" "$(tr '\n' '|' <"$2" 2>/dev/null | cut -c1-400)"
	return 1
}

# listen SOCKET OUTPUT: a listener in the background, once it is bound.
listen() {
	$LISTEN "$1" "$2" &
	background_pids+=("$!")
	for _ in $(seq 100); do
		grep -q '^listening$' "$2" 2>/dev/null && return 0
		sleep 0.05
	done
	skip_all "the datagram listener did not start on $1"
}

# pid_gone PID: wait up to 5 s for PID (not a child) to exit.
pid_gone() {
	for _ in $(seq 100); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.05
	done
	return 1
}

# --- a /dev of our own with a syslog socket in it ------------------------------------

newdev=$work/dev
mkdir "$newdev"
for node in "null c 1 3" "zero c 1 5" "random c 1 8" "urandom c 1 9" "fuse c 10 229"; do
	set -- $node
	mknod -m 666 "$newdev/$1" "$2" "$3" "$4" || skip_all "cannot mknod $newdev/$1"
done
listen "$newdev/log" "$work/syslog"
mount --bind "$newdev" /dev || skip_all "cannot bind a /dev of our own in the namespace"
dev_mounted=1
trap 'if [ "${dev_mounted:-0}" = 1 ]; then umount -l /dev; fi; cleanup' EXIT
MNT=$(mktemp -d "$work/mnt.XXXXXX")

# --- -f: standard error ---------------------------------------------------------------

if start_daemon_on "$MNT" --pages 256; then
	expect_line "-f: the start line on stderr" "$work/kcopydfs.log" \
		"^kcopydfs: serving $(re_quote "$MNT") \\(version [0-9.]+\\): 256 pages \\(1 MiB\\) of I/O buffers"
	stop_daemon "$daemon_pid" "$MNT"
	expect_line "-f: the shutdown line on stderr" "$work/kcopydfs.log" \
		"^kcopydfs: signal 15 \\(Terminated\\): cancelling jobs and unmounting $(re_quote "$MNT")\$"
	expect_line "-f: the last line on stderr" "$work/kcopydfs.log" "^kcopydfs: $(re_quote "$MNT"): unmounted, exiting\$"
	check "-f: nothing to syslog" "listening" "$(cat "$work/syslog")"
else
	fail "-f: a mount" "kcopydfs up on $MNT" "$(tail -n 3 "$work/kcopydfs.log")"
fi

# With systemd's $JOURNAL_STREAM naming its stderr, each line carries its
# syslog priority as "<N>" (the journal's SyslogLevelPrefix) and no name.
: >"$work/journal.log"
JOURNAL_STREAM=$(stat -c '%d:%i' "$work/journal.log") "$KCOPYDFS" -f --pages 256 "$MNT" 2>>"$work/journal.log" &
pid=$!
daemon_pids+=("$pid")
daemon_mounts+=("$MNT")
expect_line "-f under the journal: the start line is <6> (info)" "$work/journal.log" \
	"^<6>serving $(re_quote "$MNT") \\(version [0-9.]+\\): 256 pages"
kill -TERM "$pid"
wait "$pid"
expect_line "-f under the journal: the shutdown line is <5> (notice)" "$work/journal.log" "^<5>signal 15 "
JOURNAL_STREAM=1:1 "$KCOPYDFS" -f --pages 256 --no-such-option "$MNT" 2>"$work/not-journal.log"
expect_line "-f, \$JOURNAL_STREAM naming another stream: plain lines" "$work/not-journal.log" \
	"^kcopydfs: unrecognized option '--no-such-option'\$"

# --- daemonized: syslog ---------------------------------------------------------------

: >"$work/daemon.stderr"
"$KCOPYDFS" --pages 256 "$MNT" 2>"$work/daemon.stderr"
check "daemonized: the command exits 0 once mounted" 0 "$?"
if expect_line "daemonized: the start line in syslog, daemon.info, with the pid" "$work/syslog" \
	"^<30>.* kcopydfs\\[[0-9]+\\]: serving $(re_quote "$MNT") \\(version [0-9.]+\\): 256 pages"; then
	pid=$(sed -n 's/^<30>.* kcopydfs\[\([0-9]*\)\]: serving .*/\1/p' "$work/syslog" | head -n 1)
	check "daemonized: the pid in syslog is the daemon's" "kcopydfs" "$(cat "/proc/$pid/comm" 2>&1)"
	kill -TERM "$pid"
	pid_gone "$pid" || fail "daemonized: SIGTERM ends it" "gone in 5 s" "still running"
	expect_line "daemonized: the shutdown line in syslog, daemon.notice" "$work/syslog" \
		"^<29>.* kcopydfs\\[$pid\\]: signal 15 \\(Terminated\\): cancelling jobs and unmounting"
	expect_line "daemonized: the last line in syslog" "$work/syslog" \
		"^<30>.* kcopydfs\\[$pid\\]: $(re_quote "$MNT"): unmounted, exiting\$"
fi
check "daemonized: nothing on stderr" "" "$(cat "$work/daemon.stderr")"
is_mounted "$MNT" && umount -l "$MNT"

# A failure after going into the background: 1000000 pages (3.8 GiB) of
# buffers under a 1 GiB address-space limit.  A sanitizer's runtime reserves
# terabytes of address space for its shadow, so there the limit would stop
# the daemon before main(): not checked in a sanitized build.
if [ "${KCOPYD_SANITIZED:-0}" = 1 ]; then
	echo "      (the failure under an address-space limit is not checked in a sanitized build)"
else
	prlimit --as=$((1 << 30)) "$KCOPYDFS" --pages 1000000 "$MNT" 2>"$work/daemon.stderr"
	check "daemonized failure: the command has already exited 0" 0 "$?"
	expect_line "daemonized failure: in syslog as daemon.err" "$work/syslog" \
		"^<27>.* kcopydfs\\[[0-9]+\\]: $(re_quote "$MNT"): cannot start the copy engine: Cannot allocate memory\$"
	for _ in $(seq 100); do is_mounted "$MNT" || break; sleep 0.05; done
	check "daemonized failure: the mount is gone" "not mounted" \
		"$(is_mounted "$MNT" && echo mounted || echo "not mounted")"
fi

# --- $NOTIFY_SOCKET ---------------------------------------------------------------

round=0
for socket in "$work/notify" "@kcopydfs-test-notify-$$"; do
	out=$work/notify.$((++round)).log
	listen "$socket" "$out"
	NOTIFY_SOCKET=$socket "$KCOPYDFS" -f --pages 256 "$MNT" 2>>"$work/kcopydfs.log" &
	pid=$!
	daemon_pids+=("$pid")
	daemon_mounts+=("$MNT")
	if expect_line "$socket: READY=1" "$out" '^READY=1$'; then
		check "$socket: the mount answers when READY=1 is sent" "kcopydfs $("$KCOPYDFS" -V | sed -n '1s/.* //p')" \
			"$(cat "$MNT/version" 2>&1)"
	fi
	kill -TERM "$pid"
	expect_line "$socket: STOPPING=1 on SIGTERM" "$out" '^STOPPING=1$'
	wait "$pid"
	check "$socket: exit status after SIGTERM" 0 "$?"
done

finish
