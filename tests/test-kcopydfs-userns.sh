#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopydfs-userns.sh: the second pattern of doc/containers.md, with
# the kernel's own namespaces in place of rootless podman.  An ordinary
# user ($USERNS_UID, 65534 unless set) makes a user and mount namespace
# with `unshare -Urm` (root inside, that user outside) and runs kcopydfs
# there on a mountpoint of its own: it mounts with no help from root
# (Linux 4.18 or later lets a user namespace mount FUSE), copies between
# files that user owns, is refused root's files (EACCES: root is not mapped
# in the namespace, so its CAP_DAC_OVERRIDE does not reach them) and a
# region on the mount itself (EDEADLK), mounts with -o allow_other (which
# the host's root and the user outside the namespace are still refused), detaches
# the dead mount a SIGKILL leaves, and unmounts on SIGTERM.
#
# /dev/fuse must be open to the user.  Debian's fuse3 makes it 0666; where
# it is not (a machine with it 0600, or a container given it so), the test
# says so, checks that kcopydfs then fails with the reason, and carries on
# with a 0666 node of the same device bind-mounted over /dev/fuse in a
# private mount namespace, which is what --device /dev/fuse does for a
# container; the host's /dev/fuse is not touched.
#
# The same script runs the part inside the namespaces (--inside); its
# results come back in a file and are counted with the outside ones.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-kcopydfs-userns.sh
# Needs root (to become the user), FUSE, unshare and setpriv, user
# namespaces that an ordinary user may make, and a kcopydfs that user can
# run; exits 77, saying which is missing, without them.
# The last line is "N passed, M failed"; the exit status is 1 on any failure.

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

# --- inside: root of a user namespace, the user outside ---------------------------------------

if [ "${1:-}" = --inside ]; then
	work=$USERNS_DIR		# the user's directory: kcopydfs.log, mountpoints (via TMPDIR)
	export TMPDIR=$USERNS_DIR
	trap 'cleanup; echo "$passed $failed" >"$USERNS_DIR/counts"' EXIT
	user=$USERNS_DIR/files

	check="kcopydfs mounts in a user namespace of uid $USERNS_UID, as its root"
	map=$(awk '{ print $1, $2, $3 }' /proc/self/uid_map)
	if [ "$map" != "0 $USERNS_UID 1" ] || [ "$(id -u)" != 0 ]; then
		fail "$check" "uid 0 inside, mapped to $USERNS_UID (uid_map '0 $USERNS_UID 1')" "uid $(id -u), uid_map '$map'"
		exit 1
	fi
	if ! start_daemon; then
		fail "$check" "a kcopydfs mount" "$(tr '\n' '|' <"$work/kcopydfs.log")"
		exit 1
	fi
	mnt=$daemon_mount
	fstype=$(awk -v dir="$mnt" '$5 == dir { for (i = 7; $i != "-"; i++) ; print $(i + 1) }' /proc/self/mountinfo)
	[ "$fstype" = fuse.kcopydfs ] && pass "$check" || fail "$check" "type fuse.kcopydfs in mountinfo" "'$fstype'"

	check="it copies between files uid $USERNS_UID owns"
	mkdir "$mnt/jobs/own" && echo "copy from=$user/src.img to=$user/dst.img:1M" >"$mnt/jobs/own/ctl" 2>"$work/write.err"
	state=$(timeout 10 cat "$mnt/jobs/own/wait" 2>&1 | sed -n 's/^state: //p')
	if [ "$state" != done ]; then
		fail "$check" "state: done" "state '$state'; $(tr '\n' ' ' <"$work/write.err") $(tr '\n' '|' <"$mnt/jobs/own/status")"
	elif ! cmp -n $((2 << 20)) -i 0:$((1 << 20)) "$user/src.img" "$user/dst.img" >"$work/cmp.out" 2>&1; then
		fail "$check" "the source at 1 MiB into the destination" "$(cat "$work/cmp.out")"
	else
		pass "$check"
	fi

	check="a clone-autoremove job copies and goes with its descriptor"
	id=$(bash -c 'exec 3<>"$1/clone-autoremove"; read -r id <&3; echo "copy from=$2:0+8 to=$3:8" >&3 &&
		cat "$1/jobs/$id/wait" >/dev/null && echo "$id"; exec 3>&-' _ "$mnt" "$user/src.img" "$user/dst.img" 2>&1)
	if ! [[ $id =~ ^[0-9]+$ ]]; then
		fail "$check" "a job id" "$id"
	elif [ -e "$mnt/jobs/$id" ]; then
		fail "$check" "jobs/$id gone after the close" "it is there"
	else
		pass "$check"
	fi

	# expect_refused CHECK ERRNO ERROR-LINE TEXT: echo TEXT into jobs/refused/ctl fails with ERRNO.
	expect_refused() {
		local said
		echo "$4" 2>"$work/write.err" >"$mnt/jobs/refused/ctl" && {
			fail "$1" "echo: write error: $(errno_text "$2")" "accepted"
			return
		}
		said=$(tr '\n' ' ' <"$work/write.err")
		if [[ $said != *"write error: $(errno_text "$2")"* ]]; then
			fail "$1" "echo: write error: $(errno_text "$2")" "$said"
		else
			[ "$(sed -n 's/^error: //p' "$mnt/jobs/refused/status")" = "$3" ] && pass "$1" ||
				fail "$1" "error: $3" "error: $(sed -n 's/^error: //p' "$mnt/jobs/refused/status")"
		fi
	}
	mkdir "$mnt/jobs/refused"
	expect_refused "EACCES: root's 0600 file, which the namespace's root does not own" EACCES \
		"from=$USERNS_DIR/root-only.img: $(errno_text EACCES) (EACCES)" \
		"copy from=$USERNS_DIR/root-only.img to=$user/dst.img:0"
	expect_refused "EACCES: root's 0644 file as a destination" EACCES \
		"to=$USERNS_DIR/root-dst.img: $(errno_text EACCES) (EACCES)" \
		"copy from=$user/src.img:0+8 to=$USERNS_DIR/root-dst.img:0"
	expect_refused "EDEADLK: a region on the mount itself" EDEADLK \
		"from=$mnt/version: is on the kcopydfs mount itself (EDEADLK)" \
		"copy from=$mnt/version to=$user/dst.img:0"

	check="-o allow_other mounts in the namespace (no user_allow_other needed)"
	if start_daemon -o allow_other; then
		grep -q "allow_other" <<<"$(awk -v dir="$daemon_mount" '$5 == dir' /proc/self/mountinfo)" &&
			[[ $(cat "$daemon_mount/version" 2>&1) == kcopydfs* ]] && pass "$check" ||
			fail "$check" "allow_other in mountinfo and version readable" \
				"$(awk -v dir="$daemon_mount" '$5 == dir' /proc/self/mountinfo)"
		# The outside part tries it as the host's root and as the user outside, then says it is done.
		echo "$daemon_pid $daemon_mount" >"$USERNS_DIR/probe.tmp" && mv "$USERNS_DIR/probe.tmp" "$USERNS_DIR/probe"
		for _ in $(seq 100); do
			[ -e "$USERNS_DIR/probe.done" ] && break
			sleep 0.1
		done
		stop_daemon "$daemon_pid" "$daemon_mount"
	else
		fail "$check" "a kcopydfs mount" "$(tail -2 "$work/kcopydfs.log" | tr '\n' '|')"
	fi

	check="SIGKILL leaves a dead mount; a new daemon in the namespace detaches it and mounts"
	kill -KILL "$daemon_pids"	# the first daemon, on $mnt
	wait "$daemon_pids" 2>/dev/null
	said=$(cat "$mnt/version" 2>&1)
	if [[ $said != *"Transport endpoint is not connected"* ]]; then
		fail "$check" "cat: Transport endpoint is not connected" "$said"
	elif ! start_daemon_on "$mnt"; then
		fail "$check" "kcopydfs to mount again" "$(tail -2 "$work/kcopydfs.log" | tr '\n' '|')"
	elif ! grep -q "dead mount" "$work/kcopydfs.log"; then
		fail "$check" "a word about the dead mount" "$(tail -2 "$work/kcopydfs.log" | tr '\n' '|')"
	else
		count=$(awk -v dir="$mnt" '$5 == dir' /proc/self/mountinfo | wc -l)
		[ "$count" = 1 ] && pass "$check" || fail "$check" "one mount at $mnt" "$count"
	fi

	check="SIGTERM: the daemon unmounts and exits 0"
	kill -TERM "$daemon_pid"
	for _ in $(seq 50); do
		kill -0 "$daemon_pid" 2>/dev/null || break
		sleep 0.1
	done
	wait "$daemon_pid"
	status=$?
	if [ "$status" != 0 ]; then
		fail "$check" "exit status 0" "$status; $(tail -2 "$work/kcopydfs.log" | tr '\n' '|')"
	elif is_mounted "$mnt"; then
		fail "$check" "$mnt unmounted" "still mounted"
	else
		pass "$check"
	fi
	exit 0
fi

# --- outside: root, preparing the user's files and /dev/fuse ----------------------------------

require_basics unshare nsenter setpriv mknod stat cmp dd truncate awk sed timeout pgrep
USERNS_UID=${USERNS_UID:-65534}
AS_USER=(setpriv --reuid="$USERNS_UID" --regid="$USERNS_UID" --clear-groups)

IFS=. read -r kernel_major kernel_minor _ <<<"$(uname -r)"
[ "$kernel_major" -gt 4 ] || { [ "$kernel_major" = 4 ] && [ "${kernel_minor%%[!0-9]*}" -ge 18 ]; } ||
	skip_all "Linux $(uname -r): FUSE mounts in a user namespace need 4.18 or later"
max_userns=$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo "(unreadable)")
[ "$max_userns" != 0 ] || skip_all "user namespaces are switched off: user.max_user_namespaces = 0"
if ! said=$("${AS_USER[@]}" unshare -Ur true 2>&1); then
	reason="uid $USERNS_UID cannot make a user namespace: unshare -Ur: $said"
	[ -r /proc/sys/kernel/unprivileged_userns_clone ] &&
		reason+="; kernel.unprivileged_userns_clone = $(cat /proc/sys/kernel/unprivileged_userns_clone)"
	[ -r /proc/sys/kernel/apparmor_restrict_unprivileged_userns ] &&
		reason+="; kernel.apparmor_restrict_unprivileged_userns = $(cat /proc/sys/kernel/apparmor_restrict_unprivileged_userns)"
	skip_all "$reason"
fi
"${AS_USER[@]}" test -x "$KCOPYDFS" -a -r "$0" ||
	skip_all "uid $USERNS_UID cannot run $KCOPYDFS or read $0 (a directory on the way is closed to it)"

setup_work 64M
udir=$work/user
# The inside part stops its daemons itself; should it be killed first, they are stopped here.
kill_leftovers() {
	local pid
	for pid in $(pgrep -u "$USERNS_UID" -f "^$KCOPYDFS .*$udir" 2>/dev/null); do
		kill -KILL "$pid" 2>/dev/null
	done
}
trap 'kill_leftovers; cleanup' EXIT
mkdir -p "$udir/files"
dd if=/dev/urandom of="$udir/files/src.img" bs=1M count=2 status=none
truncate -s 4M "$udir/files/dst.img"
dd if=/dev/urandom of="$udir/root-only.img" bs=64K count=1 status=none
cp "$udir/root-only.img" "$udir/root-dst.img"
chmod 0600 "$udir/root-only.img"
chmod 0644 "$udir/root-dst.img"
chown "$USERNS_UID:$USERNS_UID" "$udir" "$udir/files" "$udir/files/src.img" "$udir/files/dst.img"

# The /dev/fuse the user gets: the host's if it is open to the user, else a 0666 node of the same device.
fuse_node=/dev/fuse
if ! "${AS_USER[@]}" test -r /dev/fuse -a -w /dev/fuse; then
	echo "NOTE: /dev/fuse is $(stat -c '%A %U:%G' /dev/fuse) here, closed to uid $USERNS_UID;" \
		"the namespaces below get a 0666 node of it, as a container given --device /dev/fuse would"

	check="without access to /dev/fuse, kcopydfs in the namespace fails and says why"
	mkdir "$udir/closed"
	chown "$USERNS_UID" "$udir/closed"
	"${AS_USER[@]}" unshare -Urm -- timeout 10 "$KCOPYDFS" -f "$udir/closed" >"$work/closed.out" 2>&1
	status=$?
	if [ "$status" != 1 ] || ! grep -q "/dev/fuse: $(errno_text EACCES)" "$work/closed.out"; then
		fail "$check" "exit 1 and fuse: failed to open /dev/fuse: $(errno_text EACCES)" \
			"exit $status: $(tr '\n' '|' <"$work/closed.out")"
	else
		pass "$check"
	fi

	fuse_node=$work/fuse
	mknod -m 0666 "$fuse_node" c "$((0x$(stat -c %t /dev/fuse)))" "$((0x$(stat -c %T /dev/fuse)))" ||
		skip_all "cannot make a device node for /dev/fuse on $work"
fi

# Root, in a private mount namespace: /dev/fuse there is $fuse_node; then the user's own namespaces.
USERNS_DIR=$udir USERNS_UID=$USERNS_UID KCOPYDFS=$KCOPYDFS TESTS_SRCDIR=${TESTS_SRCDIR:-$(dirname "$0")} \
	unshare -m --propagation private -- bash -c '
	[ "$1" = /dev/fuse ] || mount --bind "$1" /dev/fuse || exit 1
	shift
	exec "$@"' _ "$fuse_node" "${AS_USER[@]}" unshare -Urm -- bash "$0" --inside &
inside_pid=$!
background_pids+=("$inside_pid")

# While the inside part holds an allow_other mount: who outside the user namespace may use it?
for _ in $(seq 200); do
	[ -e "$udir/probe" ] && break
	kill -0 "$inside_pid" 2>/dev/null || break
	sleep 0.05
done
if read -r probe_pid probe_mount <"$udir/probe" 2>/dev/null; then
	check="the host's root, in the namespace's mount namespace, is refused the allow_other mount (EACCES)"
	said=$(nsenter -t "$probe_pid" -m -- cat "$probe_mount/version" 2>&1)
	[[ $said == *"$(errno_text EACCES)"* ]] && pass "$check" || fail "$check" "cat: $(errno_text EACCES)" "$said"
	check="uid $USERNS_UID outside the user namespace is refused it too (EACCES)"
	said=$(nsenter -t "$probe_pid" -m -- "${AS_USER[@]}" cat "$probe_mount/version" 2>&1)
	[[ $said == *"$(errno_text EACCES)"* ]] && pass "$check" || fail "$check" "cat: $(errno_text EACCES)" "$said"
else
	fail "the inside part mounts with -o allow_other for the outside checks" "$udir/probe" "none"
fi
touch "$udir/probe.done"
wait "$inside_pid"
inside_status=$?
if [ -r "$udir/counts" ]; then
	read -r inside_passed inside_failed <"$udir/counts"
	passed=$((passed + inside_passed))
	failed=$((failed + inside_failed))
else
	fail "the part inside the namespaces ran to its end" "a count of its checks" "exit $inside_status and no count"
fi

check="nothing of the namespaces is left: no kcopydfs of uid $USERNS_UID under $work"
left=$(pgrep -u "$USERNS_UID" -f "^$KCOPYDFS .*$udir" 2>/dev/null | tr '\n' ' ')
[ -z "$left" ] && pass "$check" || fail "$check" "no such process" "pids $left"

finish
