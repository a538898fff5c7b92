# SPDX-License-Identifier: LGPL-2.1-or-later
#
# kcopydfs-lib.sh: what the kcopydfs shell tests share.  Sourced, not run:
#   . "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"
#
# It gives: PASS/FAIL reporting and the closing "N passed, M failed" line
# (report-lib.sh); skipping (exit 77) when the machine lacks root or a tool; a tmpfs of the
# test's own at $work (mode 0755, so nobody can reach files made for it);
# kcopydfs daemons started in the foreground in the background, each on a
# mktemp -d mountpoint; loop devices; nbdfuse exports; and one EXIT trap
# that undoes all of it in reverse order.
#
# Environment: KCOPYDFS (the kcopydfs binary; make check exports it), else
# $BUILDDIR/kcopydfs, else /tmp/h5build/kcopydfs.

KCOPYDFS=${KCOPYDFS:-${BUILDDIR:-/tmp/h5build}/kcopydfs}

# shellcheck source=report-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/report-lib.sh"

work=
work_mounted=0
daemon_pids=()
daemon_mounts=()
loop_devices=()
nbd_mounts=()
nbd_pids=()
background_pids=()
# Run before "$KCOPYDFS" by start_daemon (e.g. env VAR=..., or a wrapper that execs it); none by default.
daemon_prefix=()

# require_basics TOOL...: root, FUSE, the kcopydfs binary and the tools named.
require_basics() {
	local tool

	[ "$(id -u)" = 0 ] || skip_all "needs root (tmpfs, loop devices, FUSE with allow_other)"
	[ -c /dev/fuse ] || skip_all "no /dev/fuse"
	[ -x "$KCOPYDFS" ] || skip_all "no kcopydfs at '$KCOPYDFS' (set KCOPYDFS)"
	for tool in mount umount mktemp fusermount3 "$@"; do
		command -v "$tool" >/dev/null || skip_all "needs $tool"
	done
}

# umount_retry DIR: unmount, giving a process that is just ending time to let go.
umount_retry() {

	for _ in 1 2 3 4 5 6 7 8 9 10; do
		umount "$1" 2>/dev/null && return 0
		sleep 0.3
	done
	umount -l "$1"
}

# is_mounted DIR: is DIR a mount point now (by /proc/mounts, which never asks the filesystem)?
is_mounted() {
	awk -v dir="$1" '$2 == dir { found = 1 } END { exit !found }' /proc/mounts
}

# stop_daemon PID MOUNTPOINT: SIGTERM, then SIGKILL after 3 s; unmount what is left.
stop_daemon() {
	local pid=$1 mount_point=$2

	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null
		for _ in $(seq 30); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null
	is_mounted "$mount_point" && fusermount3 -u -z "$mount_point" 2>/dev/null
	return 0
}

cleanup() {
	local index pid loop mount_point

	for pid in "${background_pids[@]}"; do
		kill -- "$pid" 2>/dev/null
	done
	for ((index = ${#daemon_pids[@]} - 1; index >= 0; index--)); do
		stop_daemon "${daemon_pids[index]}" "${daemon_mounts[index]}"
	done
	for pid in "${background_pids[@]}"; do
		wait "$pid" 2>/dev/null
	done
	for mount_point in "${daemon_mounts[@]}"; do
		is_mounted "$mount_point" && fusermount3 -u -z "$mount_point" 2>/dev/null
		rmdir "$mount_point" 2>/dev/null
	done
	for loop in "${loop_devices[@]}"; do
		losetup -d "$loop" 2>/dev/null
	done
	for mount_point in "${nbd_mounts[@]}"; do
		is_mounted "$mount_point" && fusermount3 -u -z "$mount_point" 2>/dev/null
	done
	for pid in "${nbd_pids[@]}"; do
		kill -- "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	if [ -n "$work" ]; then
		for mount_point in $(awk -v dir="$work/" 'index($2, dir) == 1 { print $2 }' /proc/mounts | sort -r); do
			umount_retry "$mount_point"
		done
		[ "$work_mounted" = 1 ] && umount_retry "$work"
		rmdir "$work" 2>/dev/null
	fi
}

# setup_work SIZE: a tmpfs of SIZE (e.g. 256M) on a new directory $work.
setup_work() {
	work=$(mktemp -d "${TMPDIR:-/tmp}/test-kcopydfs.XXXXXX") || skip_all "mktemp -d failed"
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	mount -t tmpfs -o "size=$1,mode=0755" tmpfs "$work" || skip_all "cannot mount a tmpfs on $work"
	work_mounted=1
}

# start_daemon [OPTIONS...]: kcopydfs -f OPTIONS on a new mountpoint, in the
# background.  Sets daemon_pid and daemon_mount; 1 if it did not come up.
start_daemon() {
	daemon_mount=$(mktemp -d "${TMPDIR:-/tmp}/test-kcopydfs-mnt.XXXXXX") || return 1
	start_daemon_on "$daemon_mount" "$@"
}

# start_daemon_on MOUNTPOINT [OPTIONS...]: the same on a given mountpoint.
# (Through ${daemon_prefix[@]}, which must exec kcopydfs: daemon_pid is its pid.)
start_daemon_on() {
	local mount_point=$1
	shift

	"${daemon_prefix[@]}" "$KCOPYDFS" -f "$@" "$mount_point" 2>>"$work/kcopydfs.log" &
	daemon_pid=$!
	daemon_mount=$mount_point
	daemon_pids+=("$daemon_pid")
	daemon_mounts+=("$mount_point")
	for _ in $(seq 100); do
		# A read, not a test of access: a dead mount left by a killed daemon
		# answers access(2) from the kernel's cached attributes until the new
		# daemon has replaced it, but a read needs a live daemon.
		is_mounted "$mount_point" && cat "$mount_point/version" >/dev/null 2>&1 && return 0
		kill -0 "$daemon_pid" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

# new_loop FILE [LOSETUP OPTIONS...]: attach FILE with direct I/O; sets loop_device.
# (Not a $(...) function: the list of devices to detach is this shell's.)
new_loop() {
	local file=$1
	shift
	loop_device=$(losetup -f --show --direct-io=on "$@" "$file") || return 1
	loop_devices+=("$loop_device")
}

# detach_loop DEV: losetup -d DEV now, and leave it off the exit's list:
# once detached, the number may be another test's device.
detach_loop() {
	local kept=() loop

	losetup -d "$1"
	for loop in "${loop_devices[@]}"; do
		[ "$loop" = "$1" ] || kept+=("$loop")
	done
	loop_devices=("${kept[@]}")
}

# nbd_export DIR [-r] NBDKIT-ARGS...: `nbdfuse [-r] DIR/disk --command nbdkit
# -s --exit-with-parent [-r] NBDKIT-ARGS...` in the background, its stderr in
# $work/nbdfuse.log, undone by the EXIT trap; waits (10 s at most) until
# DIR/disk is there.  Sets nbd_fuse_pid; 1 if the export did not come up.
nbd_export() {
	local dir=$1 readonly=()
	shift
	if [ "${1:-}" = -r ]; then
		readonly=(-r)
		shift
	fi
	mkdir -p "$dir"
	nbdfuse "${readonly[@]}" "$dir/disk" --command nbdkit -s --exit-with-parent "${readonly[@]}" "$@" \
		>>"$work/nbdfuse.log" 2>&1 &
	nbd_fuse_pid=$!
	nbd_pids+=("$nbd_fuse_pid")
	nbd_mounts+=("$dir")
	for _ in $(seq 200); do
		[ -f "$dir/disk" ] && return 0
		sleep 0.05
	done
	return 1
}

# slow_source SIZE [DELAY]: a RAM disk file whose reads each take DELAY
# (default 100ms; nbdkit's delay filter through nbdfuse); sets slow_file.
# 1 without nbdkit and nbdfuse.  The default keeps a 64 MiB copy running
# for about 2 s with the engine's default 1 MiB sub-jobs, 8 in flight: long
# enough for a test to signal or cancel it while it runs.
slow_source() {
	local mount_dir

	command -v nbdkit >/dev/null && command -v nbdfuse >/dev/null || return 1
	mount_dir=$(mktemp -d "$work/slow.XXXXXX") || return 1
	slow_file=$mount_dir/disk
	nbd_export "$mount_dir" --filter=delay memory "$1" "rdelay=${2:-100ms}"
}

# errno_text NAME: what strerror() says for the errno NAME (as echo and cat print it).
errno_text() {
	case $1 in
	EINVAL) echo "Invalid argument" ;;
	ERANGE) echo "Numerical result out of range" ;;
	ENOENT) echo "No such file or directory" ;;
	EACCES) echo "Permission denied" ;;
	EPERM) echo "Operation not permitted" ;;
	EBUSY) echo "Device or resource busy" ;;
	E2BIG) echo "Argument list too long" ;;
	EAGAIN) echo "Resource temporarily unavailable" ;;
	EDEADLK) echo "Resource deadlock avoided" ;;
	EEXIST) echo "File exists" ;;
	ENAMETOOLONG) echo "File name too long" ;;
	ENOSPC) echo "No space left on device" ;;
	EDQUOT) echo "Disk quota exceeded" ;;
	EROFS) echo "Read-only file system" ;;
	ECONNREFUSED) echo "Connection refused" ;;
	ETIMEDOUT) echo "Connection timed out" ;;
	EPROTONOSUPPORT) echo "Protocol not supported" ;;
	EOPNOTSUPP) echo "Operation not supported" ;;
	*) echo "($1)" ;;
	esac
}

# write_ctl CTL TEXT [PREFIX...]: `echo TEXT > CTL`, run through PREFIX (setpriv ..., nsenter ...,
# or nothing); sets write_status and write_said (what bash printed, on one line).
write_ctl() {
	local ctl=$1 text=$2
	shift 2
	"$@" bash -c 'echo "$1" > "$2"' write_ctl "$text" "$ctl" 2>"$work/write.err"
	write_status=$?
	write_said=$(tr '\n' ' ' <"$work/write.err")
}

# re_quote TEXT: TEXT as an extended regular expression that matches only itself.
re_quote() {
	printf '%s' "$1" | sed 's/[][\.*^$+?(){}|/]/\\&/g'
}

# status_field DIR KEY: the value of "KEY: value" in DIR/status (one read).
status_field() {
	sed -n "s/^$2: //p" "$1/status"
}

# run_job DIR NAME DESCRIPTION [PREFIX...]: mkdir DIR/NAME, write DESCRIPTION to its ctl and
# wait for the end (60 s at most), all through PREFIX (as_nobody, nsenter ..., or nothing);
# the final status in $work/NAME.status.  1 (a FAIL) if the description was refused.
run_job() {
	local dir=$1 name=$2 description=$3
	shift 3

	"$@" mkdir "$dir/$name"
	write_ctl "$dir/$name/ctl" "$description" "$@"
	if [ "$write_status" != 0 ]; then
		fail "job $name is taken: $description" "write status 0" "$write_status: $write_said $(status_field "$dir/$name" error)"
		return 1
	fi
	"$@" timeout 60 cat "$dir/$name/wait" >"$work/$name.status"
}

# final NAME KEY: KEY of job NAME's final status (as run_job kept it).
final() {
	sed -n "s/^$2: //p" "$work/$1.status"
}

# binding_fixture SIZE DEST_SIZE: what the tests of the bindings share: a
# daemon on $mnt, $work/src.img of SIZE random bytes, $work/d0.img to d2.img
# of DEST_SIZE bytes, a 64 MiB $work/big.img, and a 64 MiB slow source at
# $slow_file.  Fails the test, or skips it, when one of them cannot be had.
binding_fixture() {
	local name

	if ! start_daemon; then
		fail "kcopydfs mounts" "a kcopydfs mount at $daemon_mount" "$(tr '\n' '|' <"$work/kcopydfs.log")"
		finish
	fi
	mnt=$daemon_mount
	head -c "$1" /dev/urandom >"$work/src.img"
	for name in d0 d1 d2; do
		truncate -s "$2" "$work/$name.img"
	done
	truncate -s 64M "$work/big.img"
	slow_source 64M 250ms || skip_all "nbdfuse did not export a slow source: $(tail -n 3 "$work/nbdfuse.log" | tr '\n' '|')"
}
