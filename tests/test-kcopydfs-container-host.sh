#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopydfs-container-host.sh: the first pattern of doc/containers.md,
# with the kernel's own namespaces in place of a container engine.  The
# daemon runs on the host with -o allow_other on a mountpoint whose parent
# is a shared mount; a "container" is a mount namespace (unshare -m
# --propagation slave, held open by a sleep and entered with nsenter) into
# which that parent is bind-mounted rslave, as `docker run -v
# HOST:CTR:rslave` does.  In it a non-root user (setpriv, uid $CTR_UID)
# copies its own files through the mount and is refused other users' files
# (EACCES, with the error line readable by it) and other users' jobs
# (their ctl and status: EACCES; rmdir: EPERM, jobs/ is sticky).  Then the
# daemon is restarted on the host, by SIGTERM and by SIGKILL, and the
# container sees the new mount without binding anything again; a bind of
# the mountpoint itself, for contrast, is left on the dead mount.  Last, a
# daemon started without CAP_SETUID/CAP_SETGID (as with docker's
# --cap-drop) refuses other users' jobs with EPERM instead of opening their
# regions as root.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-kcopydfs-container-host.sh
# Needs root, FUSE, unshare, nsenter and setpriv; exits 77 without them.
# The last line is "N passed, M failed"; the exit status is 1 on any failure.

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics unshare nsenter setpriv cmp dd truncate awk sed timeout
setup_work 64M

CTR_UID=${CTR_UID:-1000}	# the container's user; numeric, so it needs no passwd entry
OTHER_UID=65534			# another user, with files and a job of its own

# --- the host: a shared parent, the files, the daemon -----------------------------------

host=$work/host			# the directory a runtime would be given: -v $host:/data:rslave
mkdir -p "$host/kcopyd" "$host/files" "$host/hidden" "$work/ctr/data" "$work/ctr/direct"
# A mount of its own, in a peer group of its own, shared: what a later mount under it propagates from.
if ! mount --bind "$host" "$host" || ! mount --make-private "$host" || ! mount --make-shared "$host"; then
	skip_all "cannot make $host a shared bind mount"
fi
files=$host/files
chmod 0755 "$files"
dd if=/dev/urandom of="$files/user-src.img" bs=1M count=2 status=none
truncate -s 4M "$files/user-dst.img"
dd if=/dev/urandom of="$files/other-secret.img" bs=64K count=1 status=none
cp "$files/other-secret.img" "$files/root-dst.img"
cp "$files/user-src.img" "$host/hidden/user-only.img"
chown "$CTR_UID:$CTR_UID" "$files/user-src.img" "$files/user-dst.img" "$host/hidden/user-only.img"
chown "$OTHER_UID:$OTHER_UID" "$files/other-secret.img"
chmod 0600 "$files/other-secret.img"
chmod 0644 "$files/root-dst.img"

if ! start_daemon_on "$host/kcopyd" -o allow_other; then
	fail "kcopydfs mounts on $host/kcopyd" "a kcopydfs mount" "$(tr '\n' '|' <"$work/kcopydfs.log")"
	finish
fi
host_mnt=$host/kcopyd

# --- the container: a mount namespace with the parent bound rslave ------------------------

unshare -m --propagation slave sleep 1000000 &
ns_pid=$!
background_pids+=("$ns_pid")
for _ in $(seq 50); do
	[ "$(readlink "/proc/$ns_pid/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ] && break
	sleep 0.05
done
[ "$(readlink "/proc/$ns_pid/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ] || skip_all "unshare -m made no mount namespace"

# in_ctr CMD...: CMD in the container's mount namespace, as root.
in_ctr() {
	nsenter -t "$ns_pid" -m -- "$@"
}

# as_user CMD... / as_other CMD...: CMD in the container as $CTR_UID / $OTHER_UID, no groups.
as_user() {
	in_ctr setpriv --reuid="$CTR_UID" --regid="$CTR_UID" --clear-groups "$@"
}
as_other() {
	in_ctr setpriv --reuid="$OTHER_UID" --regid="$OTHER_UID" --clear-groups "$@"
}

ctr_data=$work/ctr/data		# the container's /data
ctr_mnt=$ctr_data/kcopyd
ctr_files=$ctr_data/files
jobs=$ctr_mnt/jobs
if ! in_ctr mount --rbind "$host" "$ctr_data" || ! in_ctr mount --make-rslave "$ctr_data"; then
	fail "bind $host into the container rslave" "mount --rbind and --make-rslave to succeed" "they failed"
	finish
fi
# What the container does not see: on the host, a file of the user's; in the container, an empty tmpfs over it.
if ! in_ctr mount -t tmpfs -o size=1M,mode=0755 tmpfs "$host/hidden"; then
	fail "hide $host/hidden in the container" "mount -t tmpfs to succeed" "it failed"
	finish
fi

# mount_field NAMESPACE-PID DIR FIELD: field FIELD of DIR's topmost line in that namespace's mountinfo.
mount_field() {
	awk -v dir="$2" -v field="$3" '$5 == dir { value = $field } END { print value }' "/proc/$1/mountinfo"
}

# ctr_propagation DIR: the optional fields (shared:N, master:N) of DIR in the container.
ctr_propagation() {
	awk -v dir="$1" '$5 == dir { tags = ""; for (i = 7; $i != "-"; i++) tags = tags " " $i } END { print tags }' \
		"/proc/$ns_pid/mountinfo"
}


# expect_equal CHECK WHAT EXPECTED GOT
expect_equal() {
	[ "$3" = "$4" ] && return 0
	fail "$1" "$2 '$3'" "$2 '$4'"
	return 1
}

# user_job_runs CHECK NAME: as the user, mkdir jobs/NAME, copy its source to
# its destination at 1 MiB, cat wait; 0 if done and the bytes are there.
user_job_runs() {
	local check=$1 name=$2

	if ! as_user mkdir "$jobs/$name" 2>"$work/mkdir.err"; then
		fail "$check" "mkdir $jobs/$name as uid $CTR_UID" "$(cat "$work/mkdir.err")"
		return 1
	fi
	write_ctl "$jobs/$name/ctl" "copy from=$ctr_files/user-src.img to=$ctr_files/user-dst.img:1M" as_user
	if [ "$write_status" != 0 ]; then
		fail "$check" "the description accepted" "$write_said; $(as_user cat "$jobs/$name/status" | tr '\n' '|')"
		return 1
	fi
	as_user timeout 10 cat "$jobs/$name/wait" >"$work/wait.out" 2>&1
	expect_equal "$check" "state:" done "$(sed -n 's/^state: //p' "$work/wait.out")" || return 1
	if ! cmp -n $((2 << 20)) -i 0:$((1 << 20)) "$files/user-src.img" "$files/user-dst.img" >"$work/cmp.out" 2>&1; then
		fail "$check" "the source at 1 MiB into the destination" "$(cat "$work/cmp.out")"
		return 1
	fi
	return 0
}

# expect_user_refused CHECK CTL ERRNO TEXT: the user's echo into CTL fails with ERRNO.
expect_user_refused() {
	local check=$1 ctl=$2 errno_name=$3
	write_ctl "$ctl" "$4" as_user
	if [ "$write_status" = 0 ]; then
		fail "$check" "echo to fail with $(errno_text "$errno_name")" "it was accepted"
		return 1
	fi
	case $write_said in
	*"write error: $(errno_text "$errno_name")"*) return 0 ;;
	esac
	fail "$check" "echo: write error: $(errno_text "$errno_name")" "$write_said"
	return 1
}

# --- the mount inside the container ----------------------------------------------------------

check="the container's bind of the parent is a slave of the host's shared parent"
host_tags=$(awk -v dir="$host" '$5 == dir { tags = ""; for (i = 7; $i != "-"; i++) tags = tags " " $i } END { print tags }' \
	/proc/self/mountinfo)
ctr_tags=$(ctr_propagation "$ctr_data")
peer=$(sed -n 's/.*shared:\([0-9]*\).*/\1/p' <<<"$host_tags")
if [ -z "$peer" ]; then
	fail "$check" "$host shared:N on the host" "'$host_tags'"
elif [[ " $ctr_tags " != *" master:$peer "* ]]; then
	fail "$check" "$ctr_data master:$peer in the container" "'$ctr_tags'"
else
	pass "$check"
fi

check="uid $CTR_UID in the container reads the mount (allow_other)"
version=$(as_user cat "$ctr_mnt/version" 2>&1)
[[ $version == kcopydfs* ]] && pass "$check" || fail "$check" "kcopydfs VERSION" "$version"

check="uid $CTR_UID copies its own files through the mount"
user_job_runs "$check" own && pass "$check"

check="uid $CTR_UID's job is its own: owner and status line"
expect_equal "$check" "owner:" "$CTR_UID:$CTR_UID" "$(in_ctr stat -c %u:%g "$jobs/own")" &&
	expect_equal "$check" "status owner line:" "$CTR_UID:$CTR_UID" \
		"$(as_user sed -n 's/^owner: //p' "$jobs/own/status")" && pass "$check"

check="uid $CTR_UID's clone job works"
as_user bash -c 'exec 3<>"$1/clone"; read -r id <&3; echo "copy from=$2:0+8 to=$3:8" >&3 && echo "$id"; exec 3>&-' \
	_ "$ctr_mnt" "$ctr_files/user-src.img" "$ctr_files/user-dst.img" >"$work/clone.out" 2>&1
id=$(cat "$work/clone.out")
if [[ $id =~ ^[0-9]+$ ]]; then
	expect_equal "$check" "state:" done \
		"$(as_user timeout 10 cat "$jobs/$id/wait" | sed -n 's/^state: //p')" && pass "$check"
else
	fail "$check" "a job id from clone" "$(tr '\n' ' ' <"$work/clone.out")"
fi

check="EACCES: uid $CTR_UID copies from uid $OTHER_UID's 0600 file; its error line says so"
as_user mkdir "$jobs/refused"
if expect_user_refused "$check" "$jobs/refused/ctl" EACCES \
	"copy from=$ctr_files/other-secret.img to=$ctr_files/user-dst.img:0"; then
	expect_equal "$check" "error:" "from=$ctr_files/other-secret.img: Permission denied (EACCES)" \
		"$(as_user sed -n 's/^error: //p' "$jobs/refused/status")" &&
		expect_equal "$check" "state:" idle "$(as_user cat "$jobs/refused/state")" && pass "$check"
fi

check="EACCES: uid $CTR_UID copies onto root's 0644 file; its error line says so"
if expect_user_refused "$check" "$jobs/refused/ctl" EACCES \
	"copy from=$ctr_files/user-src.img:0+128 to=$ctr_files/root-dst.img:0"; then
	if ! cmp -s "$files/other-secret.img" "$files/root-dst.img"; then
		fail "$check" "root-dst.img unchanged" "it changed"
	else
		expect_equal "$check" "error:" "to=$ctr_files/root-dst.img: Permission denied (EACCES)" \
			"$(as_user sed -n 's/^error: //p' "$jobs/refused/status")" && pass "$check"
	fi
fi

check="ENOENT: a file of uid $CTR_UID's that the host has and the container does not see"
if as_user bash -c 'echo "copy from=$1 to=$2:0" > "$3"' _ "$host/hidden/user-only.img" "$ctr_files/user-dst.img" \
	"$jobs/refused/ctl" 2>"$work/write.err"; then
	fail "$check" "echo: write error: $(errno_text ENOENT)" "accepted: the daemon opened the host's file"
else
	expect_equal "$check" "error:" "from=$host/hidden/user-only.img: $(errno_text ENOENT) (ENOENT)" \
		"$(as_user sed -n 's/^error: //p' "$jobs/refused/status")" && pass "$check"
fi

as_other mkdir "$jobs/others" 2>"$work/mkdir.err" ||
	fail "uid $OTHER_UID makes a job" "mkdir to succeed" "$(cat "$work/mkdir.err")"

check="EACCES: uid $CTR_UID cannot open uid $OTHER_UID's ctl to write; the job stays idle"
write_ctl "$jobs/others/ctl" "copy from=$ctr_files/user-src.img to=$ctr_files/user-dst.img:0" as_user
if [ "$write_status" = 0 ] || [[ $write_said != *"$jobs/others/ctl: $(errno_text EACCES)"* ]]; then
	fail "$check" "bash: $jobs/others/ctl: $(errno_text EACCES)" "status $write_status: $write_said"
else
	expect_equal "$check" "state:" idle "$(in_ctr cat "$jobs/others/state")" && pass "$check"
fi

check="EACCES: uid $CTR_UID reads uid $OTHER_UID's job status"
said=$(as_user cat "$jobs/others/status" 2>&1 >/dev/null)
[[ $said == *"$(errno_text EACCES)"* ]] && pass "$check" || fail "$check" "cat: $(errno_text EACCES)" "$said"

check="EPERM: uid $CTR_UID cannot rmdir uid $OTHER_UID's job (jobs/ is sticky)"
said=$(as_user rmdir "$jobs/others" 2>&1)
if [[ $said != *"$(errno_text EPERM)"* ]]; then
	fail "$check" "rmdir: $(errno_text EPERM)" "${said:-it succeeded}"
elif ! in_ctr test -d "$jobs/others"; then
	fail "$check" "the job still there" "it is gone"
else
	pass "$check"
fi

check="uid $CTR_UID removes its own job"
said=$(as_user rmdir "$jobs/refused" 2>&1)
! in_ctr test -e "$jobs/refused" && pass "$check" || fail "$check" "rmdir to succeed" "$said"

# A bind of the mountpoint itself, the pattern this one replaces: kept to show what it does on a restart.
in_ctr mount --bind "$host_mnt" "$work/ctr/direct" ||
	fail "bind the mountpoint itself in the container" "mount --bind to succeed" "it failed"

# --- a restart on the host reaches the container ----------------------------------------------

# restart_reaches CHECK HOW: stop the daemon (SIGTERM or SIGKILL), start
# another on the same mountpoint, and expect the container to see it at once.
restart_reaches() {
	local check=$1 how=$2 new_dev said

	if [ "$how" = KILL ]; then
		kill -KILL "$daemon_pid"
		wait "$daemon_pid" 2>/dev/null
		said=$(as_user cat "$ctr_mnt/version" 2>&1)
		if [[ $said != *"Transport endpoint is not connected"* ]]; then
			fail "$check" "the container sees the dead mount: Transport endpoint is not connected" "$said"
			return 1
		fi
	else
		stop_daemon "$daemon_pid" "$host_mnt"
	fi
	if ! start_daemon_on "$host_mnt" -o allow_other; then
		fail "$check" "kcopydfs to mount again" "$(tail -2 "$work/kcopydfs.log" | tr '\n' '|')"
		return 1
	fi
	# The new mount is told by its answering, not by its device number: the kernel may give
	# the new FUSE mount the anonymous device the dead one freed (0:51 both, seen in CI).
	for _ in $(seq 20); do
		said=$(as_user cat "$ctr_mnt/version" 2>&1)
		[[ $said == kcopydfs* ]] && break
		sleep 0.05
	done
	[[ $said == kcopydfs* ]] || { fail "$check" "version readable in the container" "$said"; return 1; }
	new_dev=$(mount_field "$ns_pid" "$ctr_mnt" 3)
	expect_equal "$check" "the container's mount's device (the host's):" "$(mount_field self "$host_mnt" 3)" \
		"$new_dev" || return 1
	user_job_runs "$check" "after-$how" || return 1
	return 0
}

check="SIGTERM and a new daemon on the host: the container sees the new mount, no new bind"
restart_reaches "$check" TERM && pass "$check"

check="a bind of the mountpoint itself is left on the old mount: Transport endpoint is not connected"
said=$(as_user ls "$work/ctr/direct" 2>&1)
[[ $said == *"Transport endpoint is not connected"* ]] && pass "$check" ||
	fail "$check" "ls: Transport endpoint is not connected" "$said"
in_ctr umount -l "$work/ctr/direct"

check="SIGKILL and a new daemon on the host: it detaches the dead mount, the container sees the new one"
restart_reaches "$check" KILL && pass "$check"

check="one kcopydfs mount at the container's mountpoint after both restarts"
count=$(awk -v dir="$ctr_mnt" '$5 == dir' "/proc/$ns_pid/mountinfo" | wc -l)
expect_equal "$check" "mounts:" 1 "$count" && pass "$check"

# --- a daemon without CAP_SETUID / CAP_SETGID ---------------------------------------------------

# setpriv --bounding-set drops them before the exec, as `docker run --cap-drop SETUID` does.
for dropped in -setuid -setuid,-setgid; do
	case $dropped in
	-setuid) caps=CAP_SETUID ;;
	*) caps="CAP_SETUID and CAP_SETGID" ;;
	esac
	printf '#!/bin/sh\nexec setpriv --bounding-set=%s "%s" "$@"\n' "$dropped" "$KCOPYDFS" >"$work/kcopydfs-capdrop"
	chmod 0755 "$work/kcopydfs-capdrop"
	check="without $caps: uid $CTR_UID's job is refused with EPERM"
	if ! KCOPYDFS=$work/kcopydfs-capdrop start_daemon -o allow_other; then
		fail "$check" "kcopydfs to mount" "$(tail -2 "$work/kcopydfs.log" | tr '\n' '|')"
		continue
	fi
	capdrop_mnt=$daemon_mount
	setpriv --reuid="$CTR_UID" --regid="$CTR_UID" --clear-groups mkdir "$capdrop_mnt/jobs/user"
	write_ctl "$capdrop_mnt/jobs/user/ctl" "copy from=$files/other-secret.img to=$files/user-dst.img:0" \
		setpriv --reuid="$CTR_UID" --regid="$CTR_UID" --clear-groups
	error_line=$(sed -n 's/^error: //p' "$capdrop_mnt/jobs/user/status")
	if [ "$write_status" = 0 ]; then
		fail "$check" "echo: write error: $(errno_text EPERM)" "accepted; error: $error_line"
	elif [[ $write_said != *"write error: $(errno_text EPERM)"* ]]; then
		fail "$check" "echo: write error: $(errno_text EPERM)" "$write_said"
	else
		expect_equal "$check" "error:" \
			"cannot open the regions as uid $CTR_UID gid $CTR_UID: $(errno_text EPERM) (EPERM)" "$error_line" &&
			! cmp -s -n $((64 << 10)) "$files/other-secret.img" "$files/user-dst.img" && pass "$check"
	fi

	check="without $caps: root's own job still runs"
	mkdir "$capdrop_mnt/jobs/root"
	write_ctl "$capdrop_mnt/jobs/root/ctl" "copy from=$files/user-src.img:0+8 to=$files/user-dst.img:3M" env
	expect_equal "$check" "echo:" "0 " "$write_status $write_said" &&
		expect_equal "$check" "state:" done \
			"$(timeout 10 cat "$capdrop_mnt/jobs/root/wait" | sed -n 's/^state: //p')" && pass "$check"
	stop_daemon "$daemon_pid" "$capdrop_mnt"
done

# The capabilities podman gives a container (and SYS_ADMIN to mount): the daemon and a root writer in
# it have the same, CAP_FSETID among them.  The daemon keeps it permitted (not effective), or reading
# the writer's /proc/PID/root, a ptrace access, would be refused: that broke the podman exec copy.
podman_caps=--bounding-set=-all,+chown,+dac_override,+fowner,+fsetid,+kill,+net_bind_service,+setfcap,+setgid,+setpcap,+setuid,+sys_chroot,+sys_admin
check="with podman's capabilities, root's job in the daemon's own container runs"
printf '#!/bin/sh\nexec setpriv %s %s "$@"\n' "$podman_caps" "$KCOPYDFS" >"$work/kcopydfs-podman"
chmod +x "$work/kcopydfs-podman"
if KCOPYDFS=$work/kcopydfs-podman start_daemon; then
	podman_mnt=$daemon_mount
	mkdir "$podman_mnt/jobs/root"
	write_ctl "$podman_mnt/jobs/root/ctl" "copy from=$files/user-src.img:0+8 to=$files/user-dst.img:3M" \
		setpriv "$podman_caps"
	expect_equal "$check" "echo:" "0 " "$write_status $write_said" &&
		expect_equal "$check" "state:" done \
			"$(timeout 10 cat "$podman_mnt/jobs/root/wait" | sed -n 's/^state: //p')" && pass "$check"
	stop_daemon "$daemon_pid" "$podman_mnt"
else
	fail "$check" "kcopydfs to mount" "$(tail -2 "$work/kcopydfs.log" | tr '\n' '|')"
fi

finish
