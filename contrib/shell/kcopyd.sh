# SPDX-License-Identifier: LGPL-2.1-or-later
#
# kcopyd.sh: shell functions for a kcopydfs mount (kcopydfs(5)), written
# with plain redirections and nothing beyond coreutils (cat, rmdir, timeout).
# POSIX sh: works in bash, dash, busybox ash.  Source it:
#
#   . contrib/shell/kcopyd.sh
#   job=$(kc_submit /mnt/kcopyd "copy from=/dev/loop0 to=/dev/loop1") || exit
#   kc_wait "$job"                 # the final status; 0 if done, 1 if failed or cancelled
#   kc_status "$job" progress      # one line of the status: 16384/16384
#   kc_pause "$job"; kc_rate "$job" 16M; kc_resume "$job"
#   kc_remove "$job"
#
# A job is named by its directory, MOUNT/jobs/N, which kc_submit prints.
# Every function prints its errors on stderr, prefixed with its name, and
# returns 2 for a wrong number of arguments.  The variables they use are
# their own: each runs in a subshell ( ... ), so nothing leaks into the
# caller, not even the descriptor kc_submit opens.
#
# Tested by tests/test-bindings-shell.sh (make check), in bash and in dash.

# kc_submit MOUNT DESCRIPTION: start a job; print its directory.
# The job is made by opening MOUNT/clone (a new job, numbered by the daemon,
# tied to the descriptor: it goes away if the shell dies before the write)
# and the description is written to that descriptor with one printf, as one
# line ending in its newline (ctl takes lines; printf may cut a long one into
# several writes, which ctl joins again).  Returns 0 once the job is queued.  If the
# daemon refuses the description, prints "kc_submit: refused: REASON" (the
# job's error line, ending with the errno name) on stderr, removes the job
# and returns 1.
kc_submit() (
	if [ $# -ne 2 ]; then
		echo "usage: kc_submit MOUNT DESCRIPTION" >&2
		exit 2
	fi
	# Checked first: a failed exec redirection ends a POSIX shell with its own message.
	if [ ! -e "$1/clone" ]; then
		echo "kc_submit: $1: not a kcopydfs mount (no $1/clone)" >&2
		exit 1
	fi
	exec 3<>"$1/clone" || exit 1
	if ! IFS= read -r id <&3 || [ -z "$id" ]; then
		echo "kc_submit: $1/clone: no job number" >&2
		exit 1
	fi
	if printf '%s\n' "$2" >&3 2>/dev/null; then
		printf '%s\n' "$1/jobs/$id"
		exit 0
	fi
	reason=$(kc_status "$1/jobs/$id" error 2>/dev/null) || reason="(no reason: $1/jobs/$id/status unreadable)"
	rmdir "$1/jobs/$id" 2>/dev/null
	echo "kc_submit: refused: $reason" >&2
	exit 1
)

# kc_status JOB [KEY]: print the job's status, or the value of its KEY line
# (state, progress, read_err, write_err, error, bytes_per_sec, elapsed,
# owner, rejected, sectors_data, sectors_zero, sectors_offloaded,
# checkpoint, rate, verify; hash may be there several times, one line per
# algorithm, all printed).  Returns 1 if the job is gone or has no such line.
kc_status() (
	if [ $# -lt 1 ] || [ $# -gt 2 ]; then
		echo "usage: kc_status JOB [KEY]" >&2
		exit 2
	fi
	# One read: the daemon renders a snapshot at offset 0 and cat reads it to the end.
	text=$(cat "$1/status") || exit 1
	if [ $# -eq 1 ]; then
		printf '%s\n' "$text"
		exit 0
	fi
	found=0
	while IFS= read -r line; do
		case $line in
		"$2: "*)
			printf '%s\n' "${line#"$2: "}"
			found=1
			;;
		esac
	done <<EOF
$text
EOF
	[ "$found" = 1 ] && exit 0
	echo "kc_status: $1/status has no '$2' line" >&2
	exit 1
)

# kc_wait JOB [SECONDS]: wait until the job has ended and print its final
# status.  A read of the job's wait file blocks until then (it holds no
# thread of the daemon).  Returns 0 if the job ended done, 1 if it ended
# failed or cancelled (or is gone), 124 if it is still going after SECONDS
# (the job is not touched), 2 if SECONDS is no number (timeout(1)'s
# syntax: 10, 0.5, 2m).
kc_wait() (
	if [ $# -lt 1 ] || [ $# -gt 2 ]; then
		echo "usage: kc_wait JOB [SECONDS]" >&2
		exit 2
	fi
	if [ $# -eq 2 ]; then
		# timeout(1) judges SECONDS; asked first, so that its own complaint stays quiet.
		if ! timeout "$2" true 2>/dev/null; then
			echo "kc_wait: '$2' is not a number of seconds" >&2
			exit 2
		fi
		text=$(timeout "$2" cat "$1/wait")
		status=$?
		if [ "$status" = 124 ]; then
			echo "kc_wait: $1: still $(kc_status "$1" state) after $2 s" >&2
			exit 124
		fi
	else
		text=$(cat "$1/wait")
		status=$?
	fi
	[ "$status" = 0 ] || exit 1
	printf '%s\n' "$text"
	case $text in
	"state: done"*) exit 0 ;;
	*) exit 1 ;;
	esac
)

# kc_cancel JOB: cancel the job (an ended one is not changed).  kc_wait
# then gives its final status: cancelled, with the progress it reached.
kc_cancel() {
	if [ $# -ne 1 ]; then
		echo "usage: kc_cancel JOB" >&2
		return 2
	fi
	echo cancel >"$1/ctl"
}

# kc_word JOB NAME WORD: write one ctl word; when refused, print "NAME:
# refused: REASON" (the job's rejected line, ending with the errno name).
kc_word() (
	if ! printf '%s\n' "$3" >"$1/ctl" 2>/dev/null; then
		reason=$(sed -n 's/^rejected: //p' "$1/status" 2>/dev/null)
		echo "$2: refused: ${reason:-the write to $1/ctl failed}" >&2
		exit 1
	fi
)

# kc_pause JOB: pause a queued or running job (state paused, no new
# sub-job; kc_wait goes on waiting).  1 with the reason when refused: an
# idle, interrupted or ended job (EINVAL), one paused already (EALREADY).
kc_pause() {
	if [ $# -ne 1 ]; then
		echo "usage: kc_pause JOB" >&2
		return 2
	fi
	kc_word "$1" kc_pause pause
}

# kc_resume JOB: resume a paused job, or finish an interrupted one from its
# checkpoint.  1 with the reason for any other job (EINVAL).
kc_resume() {
	if [ $# -ne 1 ]; then
		echo "usage: kc_resume JOB" >&2
		return 2
	fi
	kc_word "$1" kc_resume resume
}

# kc_rate JOB BYTES: limit the job to BYTES read per second (K, M, G, T:
# powers of 1024; at least 4K) from its next sub-job on.  1 with the
# reason for a bad rate or an idle or ended job (EINVAL).
kc_rate() {
	if [ $# -ne 2 ]; then
		echo "usage: kc_rate JOB BYTES" >&2
		return 2
	fi
	kc_word "$1" kc_rate "rate=$2"
}

# kc_remove JOB: remove the job from the mount.  Fails (EBUSY) while it is
# queued or running: kc_cancel and kc_wait first.
kc_remove() {
	if [ $# -ne 1 ]; then
		echo "usage: kc_remove JOB" >&2
		return 2
	fi
	rmdir "$1"
}
