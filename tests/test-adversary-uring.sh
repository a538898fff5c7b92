#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-adversary-uring.sh: the io_uring engine where the system takes part
# of io_uring away, and each result beside libaio's in the same place.
# tests/uring-deny runs a command under a seccomp filter that fails some
# of the io_uring system calls with an errno, as a container profile does:
#   - io_uring_enter refused (EPERM, ENOSYS) while io_uring_setup and
#     io_uring_register work: under auto kcopy and kcopydfs copy anyway
#     (libaio, as `--io-engine=libaio` does under the same filter), and a
#     forced io_uring fails with an error: neither may wait for ever on
#     I/Os the kernel never took (each run is under `timeout`, a guard
#     against that hang, not a measure of time);
#   - io_uring_setup refused with ENOSYS (crun's and podman's default
#     profiles) or io_uring_register refused: the reason given for libaio
#     names the seccomp filter, not a kernel without io_uring or before 5.6;
#   - a bad $KCOPYD_IO_ENGINE beside an explicit --io-engine: the option
#     is the choice, in kcopy as in kcopydfs.
#
# Run by `make check` (which exports KCOPY, KCOPYDFS and BUILDDIR), or by hand:
#   sudo KCOPY=./kcopy KCOPYDFS=./kcopydfs BUILDDIR=. tests/test-adversary-uring.sh
# Needs root (tmpfs, FUSE), a kernel with io_uring enabled and tests/uring-deny
# (libseccomp); exits 77 without them.
# The last line is "N passed, M failed"; the exit status is 1 on any failure.

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

KCOPY=${KCOPY:-${BUILDDIR:-.}/kcopy}
DENY=${URING_DENY:-$(dirname "$KCOPYDFS")/tests/uring-deny}
# Long enough for a 16 MiB copy on any machine (it takes well under a second); a run that reaches it hung.
GUARD=20

require_basics timeout cmp head
[ -x "$KCOPY" ] || skip_all "no kcopy at '$KCOPY' (set KCOPY)"
[ -x "$DENY" ] ||
	skip_all "no $DENY: configure found no libseccomp (contrib/deps.sh installs libseccomp-dev)"
[ "$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo 0)" = 0 ] ||
	skip_all "kernel.io_uring_disabled is not 0: no io_uring engine to attack"
grep -q '^Seccomp:[[:space:]]*0' /proc/self/status || skip_all "already under a seccomp filter"
# The suite's engine must not override what each run asks for.
unset KCOPYD_IO_ENGINE
setup_work 512M	# sixteen 16 MiB copies and more

head -c 16M /dev/urandom >"$work/src"

# copy_under ERRNO CALLS NAME [KCOPY OPTIONS...]: kcopy -v --no-offload src -> NAME under the
# filter (CALLS failing with ERRNO), at most $GUARD s; sets copy_status and copy_said.
copy_under() {
	local err=$1 calls=$2 name=$3
	shift 3

	rm -f "$work/$name"
	timeout -k 5 "$GUARD" "$DENY" -e "$err" -c "$calls" "$KCOPY" -v -q --no-offload "$@" "$work/src" "$work/$name" \
		>"$work/$name.out" 2>&1
	copy_status=$?
	copy_said=$(tr '\n' '|' <"$work/$name.out")
}

# hung STATUS: what timeout's STATUS says ("" when it did not have to stop the run).
hung() {
	case $1 in
	124) echo " (hung: stopped by timeout's SIGTERM)" ;;
	137) echo " (hung: a SIGTERM did not stop it, timeout's SIGKILL did)" ;;
	esac
}

# same_bytes NAME: 0 when $work/NAME is a copy of the source.
same_bytes() {
	cmp -s "$work/src" "$work/$1"
}

# --- 1. io_uring_enter refused, io_uring_setup and io_uring_register allowed -----------

for err in 1:EPERM 38:ENOSYS; do
	number=${err%%:*}
	name=${err#*:}

	copy_under "$number" enter "aio-$name" --io-engine=libaio
	if [ "$copy_status" = 0 ] && same_bytes "aio-$name"; then
		pass "libaio under a filter that refuses io_uring_enter with $name copies"
	else
		fail "libaio under a filter that refuses io_uring_enter with $name copies" \
			"status 0 and the source's bytes" "status $copy_status: $copy_said"
	fi

	copy_under "$number" enter "auto-$name"
	if [ "$copy_status" = 0 ] && same_bytes "auto-$name"; then
		pass "auto under a filter that refuses io_uring_enter with $name copies, as libaio does"
	else
		fail "auto under a filter that refuses io_uring_enter with $name copies, as libaio does" \
			"status 0 and the source's bytes (libaio: status 0)" \
			"status $copy_status$(hung "$copy_status"): $copy_said"
	fi
	if [[ "$copy_said" == *"I/O engine libaio (asked: auto)"*seccomp* ]]; then
		pass "... and -v says libaio because of the seccomp filter"
	else
		fail "... and -v says libaio because of the seccomp filter" \
			"kcopy: I/O engine libaio (asked: auto): io_uring: a seccomp filter ..." "$copy_said"
	fi

	copy_under "$number" enter "uring-$name" --io-engine=io_uring
	if [ "$copy_status" != 0 ] && [ "$copy_status" != 124 ] && [ "$copy_status" != 137 ]; then
		pass "--io-engine=io_uring under a filter that refuses io_uring_enter with $name fails, not hangs"
	else
		fail "--io-engine=io_uring under a filter that refuses io_uring_enter with $name fails, not hangs" \
			"an error and a status other than 0 before the $GUARD s guard" \
			"status $copy_status$(hung "$copy_status"): $copy_said"
	fi
done

# --- 2. the daemon under the same filter ----------------------------------------------------

printf '#!/bin/sh\nexec "%s" -e 1 -c enter "%s" "$@"\n' "$DENY" "$KCOPYDFS" >"$work/kcopydfs-filtered"
chmod 755 "$work/kcopydfs-filtered"
KCOPYDFS_PLAIN=$KCOPYDFS
KCOPYDFS=$work/kcopydfs-filtered
if start_daemon; then
	truncate -s 16M "$work/daemon-dst"
	mkdir "$daemon_mount/jobs/filtered"
	write_ctl "$daemon_mount/jobs/filtered/ctl" "copy from=$work/src to=$work/daemon-dst flags=no_offload"
	timeout -k 5 "$GUARD" cat "$daemon_mount/jobs/filtered/wait" >"$work/filtered.status" 2>&1
	wait_status=$?
	if [ "$write_status" = 0 ] && [ "$wait_status" = 0 ] && grep -qx "state: done" "$work/filtered.status" &&
		same_bytes daemon-dst; then
		pass "kcopydfs (auto) under a filter that refuses io_uring_enter copies, as with libaio"
	else
		fail "kcopydfs (auto) under a filter that refuses io_uring_enter copies, as with libaio" \
			"state: done and the source's bytes (stats io_engine: libaio)" \
			"write $write_status, wait $wait_status$(hung "$wait_status"), $(tr '\n' '|' <"$work/filtered.status") stats $(sed -n 's/^io_engine: //p' "$daemon_mount/stats")"
		# A job the engine never finishes keeps the daemon from stopping; its I/Os are lost.
		echo cancel >"$daemon_mount/jobs/filtered/ctl" 2>/dev/null
		kill -KILL "$daemon_pid" 2>/dev/null
	fi
	stop_daemon "$daemon_pid" "$daemon_mount"
else
	fail "kcopydfs mounts under a filter that refuses io_uring_enter" "a mount" "$(tail -n 3 "$work/kcopydfs.log" | tr '\n' '|')"
fi
KCOPYDFS=$KCOPYDFS_PLAIN

# --- 3. the reason given for libaio ------------------------------------------------------

copy_under 38 setup "setup-enosys"
if [ "$copy_status" = 0 ] && [[ "$copy_said" == *"I/O engine libaio (asked: auto): io_uring: a seccomp filter"* ]]; then
	pass "io_uring_setup refused with ENOSYS by a seccomp filter (crun, podman): -v names the filter"
else
	fail "io_uring_setup refused with ENOSYS by a seccomp filter (crun, podman): -v names the filter" \
		"status 0, kcopy: I/O engine libaio (asked: auto): io_uring: a seccomp filter refuses it (...)" \
		"status $copy_status: $copy_said"
fi
copy_under 1 register "register-eperm"
if [ "$copy_status" = 0 ] && [[ "$copy_said" == *"I/O engine libaio (asked: auto)"*seccomp* ]] &&
	[[ "$copy_said" != *"before 5.6"* ]]; then
	pass "io_uring_register refused by a seccomp filter: -v names the filter, not a kernel before 5.6"
else
	fail "io_uring_register refused by a seccomp filter: -v names the filter, not a kernel before 5.6" \
		"status 0, libaio because of the seccomp filter" "status $copy_status: $copy_said (kernel $(uname -r))"
fi

# --- 4. $KCOPYD_IO_ENGINE beside --io-engine ------------------------------------------------

rm -f "$work/env-bad"
KCOPYD_IO_ENGINE=bogus timeout -k 5 "$GUARD" "$KCOPY" -q --io-engine=libaio "$work/src" "$work/env-bad" \
	>"$work/env-bad.out" 2>&1
env_status=$?
if [ "$env_status" = 0 ] && same_bytes env-bad; then
	pass "kcopy --io-engine=libaio with KCOPYD_IO_ENGINE=bogus copies: the option is the choice"
else
	fail "kcopy --io-engine=libaio with KCOPYD_IO_ENGINE=bogus copies: the option is the choice" \
		"status 0 (kcopydfs --io-engine=libaio starts with the same variable)" \
		"status $env_status: $(tr '\n' '|' <"$work/env-bad.out")"
fi
if KCOPYD_IO_ENGINE=bogus start_daemon --io-engine=libaio; then
	check "kcopydfs --io-engine=libaio with KCOPYD_IO_ENGINE=bogus starts and runs libaio" libaio \
		"$(sed -n 's/^io_engine: //p' "$daemon_mount/stats")"
	stop_daemon "$daemon_pid" "$daemon_mount"
else
	fail "kcopydfs --io-engine=libaio with KCOPYD_IO_ENGINE=bogus starts" "a mount" \
		"$(tail -n 3 "$work/kcopydfs.log" | tr '\n' '|')"
fi

finish
