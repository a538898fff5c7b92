#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-adversary-regions.sh: a local user against a root daemon mounted
# with -o allow_other, reaching through the mount for what it could not
# open itself (kcopydfs(8), SECURITY).  "nobody" is uid 65534 with no
# groups (setpriv), as an attacker on a shared host would be.  Each check
# is one attack, and what must hold instead:
#   - magic links (/proc/self/fd/N, /dev/fd/N, /proc/PID/fd/N while a root
#     job holds a root-only file open; /proc/PID/root of a root process in
#     a private mount namespace) are refused, and nothing is copied;
#   - a capability-gated file (PCI config space: 64 bytes to nobody, 4096
#     to CAP_SYS_ADMIN) and any file of /proc or /sys are refused;
#   - a root writer keeps only its own capabilities: without
#     CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH it cannot copy another
#     user's 0600 file through the mount either;
#   - only a job's owner writes to its ctl: root writing to a job nobody
#     made under the name root meant (mkdir -p succeeds on it), a ctl
#     descriptor passed to another user, root cancelling nobody's job;
#   - the daemon's writes are the owner's: a setuid or setgid file loses
#     its bit as the owner's own write would clear it, and a filesystem's
#     blocks kept for root stay root's (the daemon has no CAP_FSETID and no
#     CAP_SYS_RESOURCE);
#   - a filesystem that never answers (tests/stall-fuse) holds a write
#     10 s at most (ETIMEDOUT); with 4 of a user's helpers stuck its next
#     write is refused at once (EAGAIN), and root is served all along; a
#     file on a FUSE filesystem is for root's jobs only;
#   - with --state-dir, a resume opens the regions as the job's recorded
#     owner in its recorded view: nobody repoints a symlink at a root-only
#     file after a crash, or bound its own file over a root-owned path in a
#     private mount namespace; root's resume is refused, nobody's own
#     resume is refused (EACCES, ESTALE), and no byte of root's moves.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-adversary-regions.sh
# Needs root, FUSE, setpriv, unshare, nbdkit and nbdfuse; exits 77 without them.
# The last line is "N passed, M failed"; the exit status is 1 on any failure.

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics setpriv unshare cmp dd truncate losetup sha256sum nbdkit nbdfuse
setup_work 512M

NOBODY=65534

# as_nobody CMD...: CMD as uid 65534, gid 65534, no supplementary groups.
as_nobody() {
	setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups "$@"
}


# refused NAME ERRNO-TEXT: PASS when the last write_ctl failed and echo said ERRNO-TEXT.
refused() {
	if [ "$write_status" != 0 ] && [[ "$write_said" == *"$2"* ]]; then
		pass "$1"
	else
		fail "$1" "the write refused: $2" "status $write_status, echo said: $write_said"
	fi
}

# unchanged NAME FILE SHA256: PASS when FILE still has that digest.
unchanged() {
	local now
	now=$(sha256sum <"$2" | cut -d' ' -f1)
	check "$1" "$3" "$now"
}

# wait_state DIR STATE [TRIES]: poll DIR/state (as root) until it says STATE; 1 if it never does.
wait_state() {
	for _ in $(seq "${3:-100}"); do
		[ "$(cat "$1/state" 2>/dev/null)" = "$2" ] && return 0
		sleep 0.1
	done
	return 1
}

sha() {
	sha256sum <"$1" | cut -d' ' -f1
}

# --- files: root's secrets, nobody's own files -------------------------------------------

mkdir -p "$work/nb" "$work/private"
chown $NOBODY:$NOBODY "$work/nb"
secret=$work/root-secret.img		# root's, 0600: nobody may not read it
dd if=/dev/urandom of="$secret" bs=1M count=64 status=none
chmod 0600 "$secret"
nb_dst=$work/nb/dst.img			# nobody's own destination
truncate -s 1M "$nb_dst"
nb_big=$work/nb/big.img
truncate -s 64M "$nb_big"
chown $NOBODY:$NOBODY "$nb_dst" "$nb_big"
zeros_1m=$(sha "$nb_dst")

if ! slow_source 64M 300ms; then
	skip_all "nbdfuse did not export a slow source: $(tail -n 3 "$work/nbdfuse.log" | tr '\n' '|')"
fi
slow_root=$slow_file			# root-only (nbdfuse without allow_other)
# The same slow bytes through a loop device nobody may read, for nobody's own slow jobs: a
# node of nobody's own in $work (a chmod of /dev/loopN would outlive the test on the device).
new_loop "$slow_root" || skip_all "cannot attach a loop device to $slow_root"
slow_loop=$work/nb/slow-loop
read -r major minor < <(stat -c '%t %T' "$loop_device")
mknod -m 0400 "$slow_loop" b $((16#$major)) $((16#$minor)) || skip_all "cannot make a device node in $work"
chown $NOBODY:$NOBODY "$slow_loop"

if ! start_daemon -o allow_other; then
	fail "kcopydfs mounts with -o allow_other" "a kcopydfs mount" "$(tr '\n' '|' <"$work/kcopydfs.log")"
	finish
fi
jobs=$daemon_mount/jobs

# --- 1. magic links ---------------------------------------------------------------------

# A root job that keeps a root-only file open in the daemon for a few seconds.
mkdir "$jobs/rootjob"
truncate -s 64M "$work/root-dst.img"
write_ctl "$jobs/rootjob/ctl" "copy from=$slow_root to=$work/root-dst.img"
check "a root job copies from a root-only slow source" 0 "$write_status"
wait_state "$jobs/rootjob" running 50
held_fd=
for link in /proc/"$daemon_pid"/fd/*; do
	[ "$(readlink "$link")" = "$slow_root" ] && held_fd=${link##*/} && break
done
if [ -z "$held_fd" ]; then
	fail "the daemon holds the root job's source open" "a descriptor of $slow_root in /proc/$daemon_pid/fd" "none"
else
	index=0
	for path in "/proc/self/fd/$held_fd" "/dev/fd/$held_fd" "/proc/$daemon_pid/fd/$held_fd" \
		"/proc/thread-self/fd/$held_fd"; do
		index=$((index + 1))
		as_nobody mkdir "$jobs/magic$index"
		write_ctl "$jobs/magic$index/ctl" "copy from=$path:0+8 to=$nb_dst:0+8" as_nobody
		if [ "$write_status" != 0 ]; then
			pass "nobody's copy from $path (a root job's open file) is refused: $write_said"
		else
			fail "nobody's copy from $path is refused" "a refused write" "it was accepted"
		fi
	done
	unchanged "nobody's destination got no byte through a magic link" "$nb_dst" "$zeros_1m"
fi
echo cancel >"$jobs/rootjob/ctl"

# /proc/PID/root of a root process in a private mount namespace: nobody cannot follow it itself.
unshare -m --propagation private sh -c "mount -t tmpfs -o size=1M tmpfs '$work/private' &&
	head -c 65536 /dev/urandom > '$work/private/ns-secret' && chmod 0644 '$work/private/ns-secret' &&
	exec sleep 1000000" &
ns_pid=$!
background_pids+=("$ns_pid")
for _ in $(seq 50); do
	[ -f "/proc/$ns_pid/root$work/private/ns-secret" ] && break
	sleep 0.05
done
if as_nobody cat "/proc/$ns_pid/root$work/private/ns-secret" >/dev/null 2>&1; then
	fail "nobody cannot read /proc/PID/root of a root process itself" "EACCES" "it could"
else
	pass "nobody cannot read /proc/PID/root of a root process itself"
fi
as_nobody mkdir "$jobs/nsroot"
write_ctl "$jobs/nsroot/ctl" "copy from=/proc/$ns_pid/root$work/private/ns-secret to=$nb_dst:0+128" as_nobody
if [ "$write_status" != 0 ]; then
	pass "nobody's copy through /proc/PID/root of a private namespace is refused: $write_said"
else
	fail "nobody's copy through /proc/PID/root is refused" "a refused write" "it was accepted"
fi
# Root itself is refused the magic link too (the rule is for every writer), though it could read it.
mkdir "$jobs/rootns"
write_ctl "$jobs/rootns/ctl" "copy from=/proc/$ns_pid/root$work/private/ns-secret to=$work/root-dst.img:0+128"
refused "root's copy through a magic link is refused as well" "Too many levels of symbolic links"
unchanged "nobody's destination is still all zeros" "$nb_dst" "$zeros_1m"

# --- 2. capability-gated and pseudo files -----------------------------------------------

config=/sys/bus/pci/devices/0000:00:00.0/config
if [ -r "$config" ]; then
	got=$(as_nobody cat "$config" | wc -c)
	truncate -s 4K "$work/nb/config.img"
	chown $NOBODY:$NOBODY "$work/nb/config.img"
	as_nobody mkdir "$jobs/pci"
	write_ctl "$jobs/pci/ctl" "copy from=$config to=$work/nb/config.img" as_nobody
	refused "nobody (who reads $got bytes of PCI config space itself) is refused a copy of it" \
		"Invalid argument"
	check "nothing of the config space reached nobody's file" \
		"$(head -c 4096 /dev/zero | sha256sum | cut -d' ' -f1)" "$(sha "$work/nb/config.img")"
	grep -q "pseudo filesystem" "$jobs/pci/status" && pass "the error line says it is a pseudo filesystem" ||
		fail "the error line says why" "pseudo filesystem" "$(grep ^error: "$jobs/pci/status")"
else
	echo "note: no $config on this machine: the PCI config check is left out; /proc is checked below"
fi
mkdir "$jobs/procfile"
write_ctl "$jobs/procfile/ctl" "copy from=/proc/version:0+1 to=$work/root-dst.img:0+1"
refused "root's copy from /proc/version is refused (not storage)" "Invalid argument"

# --- 3. a root writer keeps only its own capabilities ------------------------------------

other_secret=$work/other-secret.img
head -c 65536 /dev/urandom >"$other_secret"
chown 1000:1000 "$other_secret"
chmod 0600 "$other_secret"
truncate -s 64K "$work/root-small.img"
mkdir "$jobs/nodac"
write_ctl "$jobs/nodac/ctl" "copy from=$other_secret to=$work/root-small.img" \
	setpriv --bounding-set=-dac_override,-dac_read_search --inh-caps=-all
refused "root without CAP_DAC_OVERRIDE/READ_SEARCH is refused another user's 0600 file" "Permission denied"
mkdir "$jobs/fullroot"
write_ctl "$jobs/fullroot/ctl" "copy from=$other_secret to=$work/root-small.img"
check "root with every capability copies it" 0 "$write_status"

# --- 4. jobs of others ------------------------------------------------------------------

as_nobody mkdir "$jobs/backup"
mkdir -p "$jobs/backup"
check "root's mkdir -p on nobody's job succeeds (it exists)" 0 "$?"
write_ctl "$jobs/backup/ctl" "copy from=$secret to=$nb_big"
refused "root's description in nobody's job is refused" "Operation not permitted"
check "nobody's job is still idle" idle "$(as_nobody cat "$jobs/backup/state")"
check "nobody's job shows no description" "" "$(as_nobody cat "$jobs/backup/ctl")"
# A line without its newline is not held for anyone but the owner either.
bash -c 'printf "%s" "copy from=$1" > "$2"' partial "$secret" "$jobs/backup/ctl" 2>"$work/write.err"
write_status=$?
write_said=$(tr '\n' ' ' <"$work/write.err")
refused "root's partial line in nobody's job is refused at the write" "Operation not permitted"
check "nobody's job shows no refusal of root's writes" none "$(as_nobody sed -n 's/^rejected: //p' "$jobs/backup/status")"

# A ctl descriptor passed on: root's clone descriptor, written by nobody.
exec 7<>"$daemon_mount/clone"
read -r clone_id <&7
as_nobody bash -c 'echo "copy from=$1 to=$2" >&7' passed "$secret" "$nb_big" 2>"$work/write.err"
write_status=$?
write_said=$(tr '\n' ' ' <"$work/write.err")
refused "nobody's write to root's clone descriptor is refused" "Operation not permitted"
check "root's clone job is still idle" idle "$(cat "$jobs/$clone_id/state")"
exec 7>&-

# Root cannot cancel nobody's running job through ctl either.
as_nobody mkdir "$jobs/nbslow"
write_ctl "$jobs/nbslow/ctl" "copy from=$slow_loop to=$nb_big" as_nobody
check "nobody copies from a slow device it may read" 0 "$write_status"
write_ctl "$jobs/nbslow/ctl" cancel
refused "root's cancel of nobody's job is refused" "Operation not permitted"
state=$(cat "$jobs/nbslow/state")
case $state in queued | running | done) pass "nobody's job goes on ($state)" ;;
*) fail "nobody's job goes on" "queued, running or done" "$state" ;; esac
write_ctl "$jobs/nbslow/ctl" cancel as_nobody
check "nobody cancels its own job" 0 "$write_status"
wait_state "$jobs/nbslow" cancelled 100

# --- 5. writes as the owner would make them: setuid bits, root's reserved blocks ----------

# A setuid (and a setgid) file anyone may write: nobody's own write clears the bits; so must the daemon's.
head -c 4096 /dev/urandom >"$work/nb/four.img"
chown $NOBODY:$NOBODY "$work/nb/four.img"
for mode in 4777 2777; do
	head -c 4096 /dev/zero >"$work/setid-$mode"
	chmod "$mode" "$work/setid-$mode"
	as_nobody mkdir "$jobs/setid$mode"
	write_ctl "$jobs/setid$mode/ctl" "copy from=$work/nb/four.img to=$work/setid-$mode" as_nobody
	as_nobody timeout 20 cat "$jobs/setid$mode/wait" >/dev/null
	check "nobody's copy into a $mode file clears its setuid/setgid bit, as its own write would" 		"777" "$(stat -c %a "$work/setid-$mode")"
done

# A filesystem that keeps half its blocks for root: nobody cannot fill them through the daemon.
if command -v mkfs.ext4 >/dev/null; then
	truncate -s 64M "$work/reserved.fs"
	mkfs.ext4 -q -m 50 "$work/reserved.fs"
	mkdir "$work/reserved"
	if mount -o loop "$work/reserved.fs" "$work/reserved"; then
		chmod 1777 "$work/reserved"
		# A source on the same filesystem, written before it fills: a copy from it is offloaded
		# (copy_file_range) and a zero with flags=allocated is FALLOC_FL_ZERO_RANGE, both made
		# by the engine's workers, which must be as bound by the reserve as its writes.
		head -c 8M /dev/urandom | as_nobody dd of="$work/reserved/src" bs=1M status=none 2>/dev/null
		as_nobody dd if=/dev/zero of="$work/reserved/fill" bs=1M count=64 status=none 2>/dev/null
		as_nobody truncate -s 16M "$work/reserved/sparse"
		as_nobody truncate -s 8M "$work/reserved/sparse-offload" "$work/reserved/sparse-zero"
		head -c 16M /dev/urandom >"$work/nb/sixteen.img"
		chown $NOBODY:$NOBODY "$work/nb/sixteen.img"
		used_before=$(df --output=used "$work/reserved" | tail -n 1)
		as_nobody mkdir "$jobs/reserve"
		write_ctl "$jobs/reserve/ctl" "copy from=$work/nb/sixteen.img to=$work/reserved/sparse" as_nobody
		as_nobody timeout 30 cat "$jobs/reserve/wait" >"$work/reserve.out"
		check "nobody's copy into its sparse file on a full filesystem fails" failed 			"$(sed -n 's/^state: //p' "$work/reserve.out")"
		grep -q "ENOSPC" "$work/reserve.out" && pass "... with ENOSPC: root's reserved blocks stay root's" ||
			fail "the error line says ENOSPC" ENOSPC "$(grep ^error: "$work/reserve.out")"
		used_after=$(df --output=used "$work/reserved" | tail -n 1)
		[ $((used_after - used_before)) -lt 2048 ] &&
			pass "the filesystem's used blocks grew by $((used_after - used_before)) KiB, not 16 MiB" ||
			fail "root's reserve is not taken" "under 2048 KiB more used" "$((used_after - used_before)) KiB"
		for job in "offload:copy from=$work/reserved/src to=$work/reserved/sparse-offload" \
			"zero:zero to=$work/reserved/sparse-zero flags=allocated"; do
			name=${job%%:*}
			used_before=$(df --output=used "$work/reserved" | tail -n 1)
			as_nobody mkdir "$jobs/reserve-$name"
			write_ctl "$jobs/reserve-$name/ctl" "${job#*:}" as_nobody
			as_nobody timeout 30 cat "$jobs/reserve-$name/wait" >"$work/reserve-$name.out"
			used_after=$(df --output=used "$work/reserved" | tail -n 1)
			if grep -q "^state: failed" "$work/reserve-$name.out" && grep -q "ENOSPC" "$work/reserve-$name.out" &&
				[ $((used_after - used_before)) -lt 2048 ]; then
				pass "nobody's $name job on the full filesystem fails with ENOSPC: the engine's workers respect root's reserve"
			else
				fail "nobody's $name job on the full filesystem" "failed, ENOSPC, under 2048 KiB more used" \
					"$(tr '\n' '|' <"$work/reserve-$name.out") $((used_after - used_before)) KiB more used"
			fi
		done
		umount "$work/reserved"
	else
		echo "note: cannot loop-mount an ext4 image here: the reserved-blocks check is left out"
	fi
fi

# --- 6. a filesystem that never answers ------------------------------------------------------

stall_fuse=${STALL_FUSE:-$(dirname "$KCOPYDFS")/tests/stall-fuse}
if [ -x "$stall_fuse" ]; then
	mkdir "$work/stall"
	# A fixture, not the product: libfuse 3.14 leaves 128 bytes of its own at the lazy unmount below.
	ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" "$stall_fuse" "$work/stall" 2>>"$work/stall.log" &
	stall_pid=$!
	background_pids+=("$stall_pid")
	for _ in $(seq 50); do
		is_mounted "$work/stall" && break
		sleep 0.1
	done
	# Four writes whose helpers hang in a lookup that is never answered, not even to SIGKILL.
	start=$SECONDS
	for index in 1 2 3 4; do
		as_nobody mkdir "$jobs/stall$index"
		as_nobody bash -c 'echo "copy from=$1 to=$2:0+8" > "$3"' stall "$work/stall/x$index" "$nb_dst" 			"$jobs/stall$index/ctl" 2>"$work/stall$index.err" &
	done
	wait_ok=1
	for index in 1 2 3 4; do
		for _ in $(seq 150); do
			grep -q "write error" "$work/stall$index.err" && break
			sleep 0.1
		done
		grep -q "Connection timed out" "$work/stall$index.err" || wait_ok=0
	done
	[ "$wait_ok" = 1 ] && pass "each write into a stalled filesystem returns ETIMEDOUT ($((SECONDS - start)) s for four)" ||
		fail "writes into a stalled filesystem time out" "echo: write error: Connection timed out" 			"$(cat "$work"/stall?.err | tr '\n' ' ')"
	# Their helpers are still stuck: a fifth of nobody's is refused at once, root is served.
	as_nobody mkdir "$jobs/stall5"
	write_ctl "$jobs/stall5/ctl" "copy from=$work/nb/four.img to=$nb_dst:0+8" as_nobody
	refused "with four helpers stuck, nobody's next job is refused at once" "Resource temporarily unavailable"
	check "root reads the mount meanwhile" "kcopydfs" "$(timeout 5 cut -d' ' -f1 "$daemon_mount/version")"
	mkdir "$jobs/rootduringstall"
	write_ctl "$jobs/rootduringstall/ctl" "copy from=$secret:0+8 to=$work/root-small.img:0+8"
	check "root's job starts meanwhile" 0 "$write_status"
	# The filesystem goes: its waiters end, and nobody is served again.
	fusermount3 -u -z "$work/stall"
	kill "$stall_pid" 2>/dev/null
	sleep 1
	write_ctl "$jobs/stall5/ctl" "copy from=$work/nb/four.img to=$nb_dst:0+8" as_nobody
	check "once the filesystem has gone, nobody's job starts" 0 "$write_status"
else
	fail "tests/stall-fuse is built" "an executable at $stall_fuse" "none"
fi

# A regular file on a FUSE filesystem (here another kcopydfs's, which nobody may read) is for
# root's jobs only: the process serving it could hold the engine's threads at a read or a close.
main_pid=$daemon_pid main_mount=$daemon_mount
if start_daemon -o allow_other; then
	other_mount=$daemon_mount
	daemon_pid=$main_pid daemon_mount=$main_mount
	as_nobody mkdir "$jobs/onfuse"
	write_ctl "$jobs/onfuse/ctl" "copy from=$other_mount/version to=$nb_dst" as_nobody
	refused "nobody's copy from a file on a FUSE filesystem is refused" "Operation not permitted"
	grep -q "FUSE filesystem" "$jobs/onfuse/status" && pass "the error line says it is on a FUSE filesystem" ||
		fail "the error line says why" "FUSE filesystem" "$(grep ^error: "$jobs/onfuse/status")"
else
	daemon_pid=$main_pid daemon_mount=$main_mount
	fail "a second kcopydfs mounts" "a kcopydfs mount" "$(tail -n 2 "$work/kcopydfs.log")"
fi

# --- 7. resume as somebody else (--state-dir) ---------------------------------------------

stop_daemon "$daemon_pid" "$daemon_mount"
state_dir=$work/state
mkdir -m 0700 "$state_dir"
if ! start_daemon -o allow_other --state-dir "$state_dir"; then
	fail "kcopydfs mounts with --state-dir" "a kcopydfs mount" "$(tr '\n' '|' <"$work/kcopydfs.log")"
	finish
fi
jobs=$daemon_mount/jobs
# A link nobody controls, to what nobody may read now.
as_nobody ln -s "$slow_loop" "$work/nb/link"
as_nobody mkdir "$jobs/viaLink"
write_ctl "$jobs/viaLink/ctl" "copy from=$work/nb/link to=$nb_big" as_nobody
check "nobody's job reads through its own symlink" 0 "$write_status"
# A job written from a private mount namespace of nobody's own, where its file is bound over root's.
root_target=$work/root-target.img
dd if=/dev/urandom of="$root_target" bs=1M count=64 status=none
chmod 0644 "$root_target"
root_target_sum=$(sha "$root_target")
as_nobody truncate -s 64M "$work/nb/own.img"
as_nobody unshare -Urm bash -c 'mount --bind "$1" "$2" && mkdir "$3" && echo "copy from=$4 to=$2" > "$3/ctl"' \
	private-ns "$work/nb/own.img" "$root_target" "$jobs/bound" "$slow_loop" 2>"$work/write.err"
write_status=$?
write_said=$(tr '\n' ' ' <"$work/write.err")
if [ "$write_status" != 0 ]; then
	echo "note: nobody could not start a job from a user namespace ($write_said): the bind-mount variant is left out"
	bound=0
else
	pass "nobody starts a job from a private mount namespace, onto its own file bound over root's"
	bound=1
fi
wait_state "$jobs/viaLink" running 50
sleep 1.5	# a checkpoint or two
kill -KILL "$daemon_pid"
wait "$daemon_pid" 2>/dev/null
fusermount3 -u -z "$daemon_mount" 2>/dev/null
# After the crash: the link now leads to root's secret.
as_nobody ln -sfn "$secret" "$work/nb/link"
big_sum=$(sha "$nb_big")
if ! start_daemon_on "$daemon_mount" -o allow_other --state-dir "$state_dir"; then
	fail "kcopydfs comes back on the same state directory" "a kcopydfs mount" "$(tail -n 3 "$work/kcopydfs.log")"
	finish
fi
check "nobody's job came back interrupted" interrupted "$(cat "$jobs/viaLink/state")"
write_ctl "$jobs/viaLink/ctl" resume
refused "root's resume of nobody's job is refused" "Operation not permitted"
write_ctl "$jobs/viaLink/ctl" resume as_nobody
refused "nobody's resume opens the link as nobody: root's secret is refused" "Permission denied"
check "the job is still interrupted" interrupted "$(cat "$jobs/viaLink/state")"
unchanged "no byte of root's secret reached nobody's file" "$nb_big" "$big_sum"
if [ "$bound" = 1 ]; then
	check "the bound job came back interrupted" interrupted "$(cat "$jobs/bound/state")"
	write_ctl "$jobs/bound/ctl" resume
	refused "root's resume of the bound job is refused" "Operation not permitted"
	write_ctl "$jobs/bound/ctl" resume as_nobody
	refused "nobody's resume from the host, not its namespace, is refused" "Stale file handle"
	grep -q "mount namespace" "$jobs/bound/status" && pass "the error line names the mount namespace" ||
		fail "the error line says why" "mount namespace" "$(grep ^error: "$jobs/bound/status")"
	unchanged "root's file at the bound path is untouched" "$root_target" "$root_target_sum"
fi

finish
