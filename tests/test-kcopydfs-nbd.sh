#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopydfs-nbd.sh: NBD regions through a real kcopydfs mount, against
# real servers (nbdkit, qemu-nbd), as kcopydfs(5) and kcopydfs(8) say:
#   a. mixed jobs, each compared byte for byte: an NBD source (nbdkit's file
#      plugin over a sparse file) to a loop device; a loop device to an NBD
#      destination; NBD to NBD; one NBD source to a loop device and an NBD
#      destination at once; into a qcow2 file served by qemu-nbd (checked
#      with qemu-img compare); from nbdkit's sparse-random (its holes
#      skipped: sectors_zero); to a multi-conn export (four connections);
#      two regions of one export (overlapping: refused); over TCP on 127.0.0.1;
#   b. refusals, each with its errno and its reason on the error: line, the
#      job idle: a socket that is not there, a closed port, a host that does
#      not resolve, an export that does not exist, a read-only export as a
#      destination, a region past the export's end, a TLS server without TLS;
#      the URI grammar's port and sector;
#   c. TLS with a pre-shared key (nbdkit --tls=require --tls-psk): the right
#      key copies, the wrong one is refused; X.509 is refused (EPERM without a
#      key, EOPNOTSUPP for tls-certificates beside one);
#   d. as nobody through -o allow_other: a root-only socket and a root-only
#      key file refused with EACCES, its own server copied to and from;
#   e. --nbd=unix refuses TCP with EPERM, --nbd=none every URI;
#   f. faults: a read error and a write error at a chosen offset (nbdkit's
#      eval plugin and protect filter), the server killed mid-copy (its rate
#      filter keeps the copy going), a server
#      that stops answering (SIGSTOP; --nbd-timeout-ms=5000) and a cancel while
#      it hangs: each job fails (or is cancelled) with the range on its
#      error: line, and a later job works;
#   g. --state-dir: a daemon killed mid-copy from a slow NBD source comes
#      back with the job interrupted, and resume finishes it (cmp);
#   h. two hosts: network namespaces joined by a veth pair with addresses
#      private to the test (10.213.7.1 and .2); nbdkit in the server's; a
#      writer in the client's copies from it to a loop device and back, a
#      writer in the daemon's own network cannot reach it (the connection
#      is made from the writer's namespace); the link deleted mid-copy ends
#      the job with ETIMEDOUT and the daemon serves on.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-kcopydfs-nbd.sh
# Needs root, FUSE, nbdkit, qemu-nbd, qemu-img, nbdcopy, ip, nsenter and
# setpriv; exits 77 (skipped) without them (contrib/deps.sh installs them).
#
# Every check prints PASS or FAIL with what it expected and what it got;
# the last line is "N passed, M failed"; the exit status is 1 on any failure.

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics losetup cmp truncate setpriv timeout nbdkit nbdcopy qemu-nbd qemu-img ip nsenter od
setup_work 1G

MiB=$((1024 * 1024))
SIZE=$((64 * MiB))
NOBODY=65534
servers=()
netns_made=()

# as_nobody CMD...: CMD as uid 65534, gid 65534, no supplementary groups.
as_nobody() {
	setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups "$@"
}
# The same as a command prefix of serve (a function there would leave $! a subshell's, not nbdkit's).
nobody_exec=(setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups)

nbd_cleanup() {
	local pid ns

	for pid in "${servers[@]}"; do
		kill -CONT "$pid" 2>/dev/null
		kill -KILL "$pid" 2>/dev/null
	done
	for ns in "${netns_made[@]}"; do
		ip netns del "$ns" 2>/dev/null
	done
	cleanup
}
trap nbd_cleanup EXIT

# serve SOCKET|PORT [PREFIX...] -- NBDKIT-ARGS...: nbdkit -f on a Unix socket
# (a path) or a TCP port on 127.0.0.1 (a number), through PREFIX (setpriv,
# nsenter, or nothing); sets server_pid.  1 if it did not come up.
serve() {
	local where=$1 prefix=() listen
	shift
	while [ "$1" != -- ]; do
		prefix+=("$1")
		shift
	done
	shift
	if [[ $where == /* ]]; then
		listen=(-U "$where")
	else
		listen=(-p "$where" -i "${SERVE_ADDRESS:-127.0.0.1}")
	fi
	"${prefix[@]}" nbdkit -f "${listen[@]}" "$@" 2>>"$work/nbdkit.log" &
	server_pid=$!
	servers+=("$server_pid")
	if [[ $where == /* ]]; then
		wait_until 100 test -S "$where" && return 0
	else
		wait_until 100 "${prefix[@]}" bash -c "exec 3<>/dev/tcp/${SERVE_ADDRESS:-127.0.0.1}/$where" \
			2>/dev/null && return 0
	fi
	return 1
}

# stop_server PID: kill it and wait.
stop_server() {
	kill -CONT "$1" 2>/dev/null
	kill -TERM "$1" 2>/dev/null
	wait "$1" 2>/dev/null
	return 0
}

# free_port: a TCP port nothing listens on now.
free_port() {
	local port

	while :; do
		port=$((20000 + RANDOM % 20000))
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
	done
	echo "$port"
}

# refused DIR NAME DESCRIPTION ERRNO PATTERN [PREFIX...]: the write fails with ERRNO, the
# error: line matches PATTERN (an extended regular expression), the job stays idle.
refused() {
	local dir=$1 name=$2 description=$3 errno=$4 pattern=$5 error
	shift 5

	"$@" mkdir "$dir/$name"
	write_ctl "$dir/$name/ctl" "$description" "$@"
	error=$(status_field "$dir/$name" error)
	if [[ $write_said == *"$(errno_text "$errno")"* && $error =~ $pattern && $error == *"($errno)"* &&
		$(cat "$dir/$name/state") == idle ]]; then
		pass "$name: refused with $errno: $error"
	else
		fail "$name: refused with $errno, the reason on the error: line, the job idle" \
			"$(errno_text "$errno"); /$pattern/ ($errno); idle" \
			"$write_said; $error; $(cat "$dir/$name/state")"
	fi
}

# sparse_image FILE: 64 MiB, random bytes at 8-16 and 40-48 MiB, holes elsewhere.
sparse_image() {
	rm -f "$1"
	truncate -s "$SIZE" "$1"
	dd if=/dev/urandom of="$1" bs=1M seek=8 count=8 conv=notrunc status=none
	dd if=/dev/urandom of="$1" bs=1M seek=40 count=8 conv=notrunc status=none
}

if ! start_daemon -o allow_other --nbd-timeout-ms=5000; then
	fail "kcopydfs mounts" "a kcopydfs mount at $daemon_mount" "$(tr '\n' '|' <"$work/kcopydfs.log")"
	finish
fi
mnt=$daemon_mount
jobs=$mnt/jobs
daemon=$daemon_pid

# ---------------------------------------------------------------------------
# a. mixed jobs
# ---------------------------------------------------------------------------
mkdir -m 0700 "$work/s"
sparse_image "$work/remote.img"
cp --sparse=always "$work/remote.img" "$work/remote.orig"
serve "$work/s/a.sock" -- file "$work/remote.img" || fail "nbdkit serves remote.img" "a socket" "none"
A="nbd+unix:///?socket=$work/s/a.sock"
truncate -s "$SIZE" "$work/loop0.img" "$work/loop1.img" "$work/empty.img"
head -c "$SIZE" /dev/urandom >"$work/dense.img"
new_loop "$work/loop0.img" && loop0=$loop_device
new_loop "$work/loop1.img" && loop1=$loop_device

run_job "$jobs" nbd-to-loop "copy from=$A to=$loop0" &&
	check "NBD source to a loop device: done, the same bytes, holes not read" \
		"done same zero>0" \
		"$(final nbd-to-loop state) $(cmp -s "$work/remote.orig" "$loop0" && echo same || echo differ) zero$([ "$(final nbd-to-loop sectors_zero)" -gt 0 ] && echo '>0' || echo =0)"

serve "$work/s/b.sock" -- file "$work/empty.img" || fail "nbdkit serves empty.img" "a socket" "none"
B="nbd+unix:///?socket=$work/s/b.sock"
run_job "$jobs" loop-to-nbd "copy from=$loop0 to=$B" &&
	check "a loop device to an NBD destination: done, the same bytes" "done same" \
		"$(final loop-to-nbd state) $(cmp -s "$work/remote.orig" "$work/empty.img" && echo same || echo differ)"

truncate -s 0 "$work/empty.img"
truncate -s "$SIZE" "$work/empty.img"
run_job "$jobs" nbd-to-nbd "copy from=$A to=$B" &&
	check "NBD to NBD: done, the same bytes" "done same" \
		"$(final nbd-to-nbd state) $(cmp -s "$work/remote.orig" "$work/empty.img" && echo same || echo differ)"

truncate -s 0 "$work/empty.img" "$work/loop1.img"
truncate -s "$SIZE" "$work/empty.img" "$work/loop1.img"
run_job "$jobs" mixed "copy from=$A to=$loop1 to=$B" &&
	check "one NBD source to a loop device and an NBD destination: both the same bytes" "done same same" \
		"$(final mixed state) $(cmp -s "$work/remote.orig" "$loop1" && echo same || echo differ) $(cmp -s "$work/remote.orig" "$work/empty.img" && echo same || echo differ)"

qemu-img create -q -f qcow2 "$work/q.qcow2" "$SIZE"
qemu-nbd -k "$work/s/q.sock" -f qcow2 --persistent --shared=8 "$work/q.qcow2" 2>>"$work/nbdkit.log" &
servers+=("$!")
qemu_pid=$!
wait_until 100 test -S "$work/s/q.sock"
run_job "$jobs" to-qcow2 "copy from=$loop0 to=nbd+unix:///?socket=$work/s/q.sock" &&
	check "into a qcow2 file through qemu-nbd: done" "done" "$(final to-qcow2 state)"
stop_server "$qemu_pid"
check "qemu-img compare: the qcow2 holds the source's bytes" "0" \
	"$(qemu-img compare -q -f raw -F qcow2 "$work/remote.orig" "$work/q.qcow2"; echo $?)"

serve "$work/s/r.sock" -- sparse-random 64M seed=4 percent=5 || fail "nbdkit sparse-random" "a socket" "none"
nbdcopy "nbd+unix:///?socket=$work/s/r.sock" "$work/random.ref"
truncate -s 0 "$work/loop1.img"
truncate -s "$SIZE" "$work/loop1.img"
run_job "$jobs" sparse-random "copy from=nbd+unix:///?socket=$work/s/r.sock to=$loop1" &&
	check "from sparse-random: done, nbdcopy's bytes, its holes not read" "done same zero>0" \
		"$(final sparse-random state) $(cmp -s "$work/random.ref" "$loop1" && echo same || echo differ) zero$([ "$(final sparse-random sectors_zero)" -gt 0 ] && echo '>0' || echo =0)"

# Multi-conn: nbdkit's memory plugin advertises it; the other connections are made after the handshake.
serve "$work/s/mc.sock" -- --filter=log memory 64M logfile="$work/mc.log" || fail "nbdkit memory" "a socket" "none"
run_job "$jobs" multi-conn "copy from=$loop0 to=nbd+unix:///?socket=$work/s/mc.sock" &&
	check "a multi-conn export: done over 4 connections (nbdkit's log)" "done 4" \
		"$(final multi-conn state) $(grep -c 'Connect ' "$work/mc.log")"
# Without --state-dir too: the owner of an export cannot sync(1) it as a local file's can.
check "the NBD destination was flushed when the job ended (nbdkit's log)" "flushed" \
	"$(grep -q 'Flush' "$work/mc.log" && echo flushed || echo 'no flush')"
nbdcopy "nbd+unix:///?socket=$work/s/mc.sock" "$work/mc.out"
check "what reached the multi-conn export is the source's bytes" "same" \
	"$(cmp -s "$work/remote.orig" "$work/mc.out" && echo same || echo differ)"
# Two regions of one export that overlap; and that do not.
refused "$jobs" overlap "copy from=$B:0+4096 to=$B:2048+4096" EINVAL "overlap"
run_job "$jobs" same-export "copy from=$B:0+2048 to=$B:4096+2048" &&
	check "two regions of one export that do not overlap" "done" "$(final same-export state)"

port=$(free_port)
serve "$port" -- file "$work/remote.img" || fail "nbdkit on TCP" "port $port" "none"
tcp_pid=$server_pid
truncate -s 0 "$work/loop1.img"
truncate -s "$SIZE" "$work/loop1.img"
run_job "$jobs" tcp "copy from=nbd://127.0.0.1:$port/ to=$loop1" &&
	check "over TCP (nbd://127.0.0.1:PORT/): done, the same bytes" "done same" \
		"$(final tcp state) $(cmp -s "$work/remote.orig" "$loop1" && echo same || echo differ)"
# The port is the port, and :SECTOR after the path is a sector.
truncate -s 0 "$work/loop1.img"
truncate -s "$SIZE" "$work/loop1.img"
run_job "$jobs" tcp-sector "copy from=nbd://127.0.0.1:$port/:16384+2048 to=$loop1:0+2048" &&
	check "nbd://HOST:PORT/:SECTOR+COUNT: 1 MiB from 8 MiB" "done same" \
		"$(final tcp-sector state) $(cmp -s -n $MiB -i $((8 * MiB)):0 "$work/remote.orig" "$loop1" && echo same || echo differ)"
stop_server "$tcp_pid"

# ---------------------------------------------------------------------------
# b. refusals
# ---------------------------------------------------------------------------
refused "$jobs" no-socket "copy from=nbd+unix:///?socket=$work/s/none.sock to=$loop1" ENOENT "none\.sock.*No such file"
refused "$jobs" refused-port "copy from=nbd://127.0.0.1:$port/ to=$loop1" ECONNREFUSED "refused"
refused "$jobs" no-host "copy from=nbd://no-such-host.invalid/ to=$loop1" ENOENT "no such host"
serve "$work/s/named.sock" -- --filter=exportname memory 64M exportname=disk1 exportname-strict=true ||
	fail "nbdkit with one export" "a socket" "none"
refused "$jobs" no-export "copy from=nbd+unix:///disk2?socket=$work/s/named.sock to=$loop1" ENOENT "disk2|export"
run_job "$jobs" named-export "copy from=nbd+unix:///disk1?socket=$work/s/named.sock to=$loop1" &&
	check "the export named disk1 of the same server" "done" "$(final named-export state)"
serve "$work/s/ro.sock" -- -r memory 64M || fail "a read-only nbdkit" "a socket" "none"
refused "$jobs" read-only "copy from=$loop0 to=nbd+unix:///?socket=$work/s/ro.sock" EROFS "read-only"
refused "$jobs" past-end "copy from=$A:131000+2048 to=$loop1:0+2048" ERANGE "."
echo "alice:$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$work/s/keys.psk"
echo "alice:$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$work/s/wrong.psk"
serve "$work/s/tls.sock" -- --tls=require --tls-psk="$work/s/keys.psk" file "$work/remote.img" ||
	fail "nbdkit with TLS" "a socket" "none"
refused "$jobs" tls-not-given "copy from=nbd+unix:///?socket=$work/s/tls.sock to=$loop1" EACCES "TLS|tls"

# ---------------------------------------------------------------------------
# c. TLS with a pre-shared key
# ---------------------------------------------------------------------------
truncate -s 0 "$work/loop1.img"
truncate -s "$SIZE" "$work/loop1.img"
run_job "$jobs" tls "copy from=nbds+unix:///?socket=$work/s/tls.sock&tls-psk-file=$work/s/keys.psk&tls-username=alice to=$loop1" &&
	check "nbds+unix:// with the right key: done, the same bytes" "done same" \
		"$(final tls state) $(cmp -s "$work/remote.orig" "$loop1" && echo same || echo differ)"
refused "$jobs" tls-certificates "copy from=nbds+unix:///?socket=$work/s/tls.sock&tls-certificates=$work/s to=$loop1" \
	EPERM "needs tls-psk-file"
refused "$jobs" tls-certificates-and-key \
	"copy from=nbds+unix:///?socket=$work/s/tls.sock&tls-psk-file=$work/s/keys.psk&tls-username=alice&tls-certificates=$work/s to=$loop1" \
	EOPNOTSUPP "certificates"
refused "$jobs" tls-wrong "copy from=nbds+unix:///?socket=$work/s/tls.sock&tls-psk-file=$work/s/wrong.psk&tls-username=alice to=$loop1" \
	EACCES "TLS|tls|handshake|key"

# ---------------------------------------------------------------------------
# d. as nobody
# ---------------------------------------------------------------------------
mkdir -m 0755 "$work/nb"
chown $NOBODY:$NOBODY "$work/nb"
chmod 0755 "$work"
as_nobody truncate -s "$SIZE" "$work/nb/out.img" "$work/nb/served.img"
refused "$jobs" nobody-root-socket "copy from=$A to=$work/nb/out.img" EACCES "Permission denied" as_nobody
serve "$work/nb/own.sock" "${nobody_exec[@]}" -- file "$work/nb/served.img" || fail "nobody's nbdkit" "a socket" "none"
as_nobody dd if=/dev/urandom of="$work/nb/served.img" bs=1M count=4 conv=notrunc status=none
run_job "$jobs" nobody-own "copy from=nbd+unix:///?socket=$work/nb/own.sock to=$work/nb/out.img" as_nobody &&
	check "nobody from its own server into its own file: done, the same bytes" "done same" \
		"$(final nobody-own state) $(cmp -s "$work/nb/served.img" "$work/nb/out.img" && echo same || echo differ)"
# The TLS server's socket open to all, its key file root's only: the key is opened as nobody.
chmod 0755 "$work/s"
chmod 0666 "$work/s/tls.sock"
chmod 0600 "$work/s/keys.psk"
refused "$jobs" nobody-root-key "copy from=nbds+unix:///?socket=$work/s/tls.sock&tls-psk-file=$work/s/keys.psk&tls-username=alice to=$work/nb/out.img" \
	EACCES "keys\.psk.*Permission denied" as_nobody
chmod 0700 "$work/s"

# ---------------------------------------------------------------------------
# e. --nbd=unix and --nbd=none
# ---------------------------------------------------------------------------
if start_daemon --nbd=unix; then
	refused "$daemon_mount/jobs" unix-only-tcp "copy from=nbd://127.0.0.1:$port/ to=$loop1" EPERM "--nbd=unix"
	run_job "$daemon_mount/jobs" unix-only-unix "copy from=$A to=$loop1" &&
		check "--nbd=unix: a Unix socket is taken" "done" "$(final unix-only-unix state)"
else
	fail "kcopydfs --nbd=unix mounts" "a mount" "$(tail -1 "$work/kcopydfs.log")"
fi
if start_daemon --nbd=none; then
	refused "$daemon_mount/jobs" none-unix "copy from=$A to=$loop1" EPERM "--nbd=none"
else
	fail "kcopydfs --nbd=none mounts" "a mount" "$(tail -1 "$work/kcopydfs.log")"
fi

# ---------------------------------------------------------------------------
# f. faults
# ---------------------------------------------------------------------------
# Reads fail from 32 MiB on (sector 65536): the eval plugin's pread says EIO there.
serve "$work/s/rerr.sock" -- eval get_size="echo $SIZE" \
	pread='if [ "$4" -ge 33554432 ]; then echo "EIO injected" >&2; exit 1; fi; head -c "$3" /dev/zero' ||
	fail "nbdkit eval" "a socket" "none"
run_job "$jobs" read-error "copy from=nbd+unix:///?socket=$work/s/rerr.sock to=$loop1" &&
	{
		error=$(final read-error error)
		if [ "$(final read-error state)" = failed ] && [[ $error =~ read\ error\ on\ .*rerr\.sock.*\ sectors\ 65536\+[0-9]+:\ EIO ]]; then
			pass "a read error at 32 MiB: failed, the range on the error: line: $error"
		else
			fail "a read error at 32 MiB" "failed, read error on ... sectors 65536+N: EIO" "$(final read-error state): $error"
		fi
	}
# Writes that would change 16-17 MiB fail (nbdkit's protect filter: EPERM).
truncate -s 0 "$work/empty.img"
truncate -s "$SIZE" "$work/empty.img"
serve "$work/s/werr.sock" -- --filter=protect file "$work/empty.img" protect=16777216-17825791 ||
	fail "nbdkit protect" "a socket" "none"
new_loop "$work/dense.img" && dense=$loop_device
run_job "$jobs" write-error "copy from=$dense to=nbd+unix:///?socket=$work/s/werr.sock" &&
	{
		error=$(final write-error error)
		if [ "$(final write-error state)" = failed ] && [ "$(final write-error write_err)" = 0x1 ] &&
			[[ $error =~ write\ error\ on\ .*werr\.sock.*\(to\ #0\)\ sectors\ 32768\+ ]]; then
			pass "a write error at 16 MiB: failed, write_err 0x1, the range: $error"
		else
			fail "a write error at 16 MiB" "failed, write_err 0x1, write error on ... (to #0) sectors 32768+N" \
				"$(final write-error state) $(final write-error write_err): $error"
		fi
	}

# The server killed mid-copy.
# (nbdkit's rate filter: 8 MB/s, so the 16 MiB of data take 2 s.)
serve "$work/s/slow.sock" -- --filter=rate file "$work/remote.img" rate=8M || fail "a slow nbdkit" "a socket" "none"
slow_pid=$server_pid
mkdir "$jobs/killed"
write_ctl "$jobs/killed/ctl" "copy from=nbd+unix:///?socket=$work/s/slow.sock to=$loop1"
wait_until 100 grep -qx running "$jobs/killed/state"
sleep 0.5
kill -KILL "$slow_pid"
timeout 20 cat "$jobs/killed/wait" >"$work/killed.status"
check "the server killed mid-copy: the job failed with a read error" "failed 1" \
	"$(final killed state) $(final killed read_err)"
kill -0 "$daemon" 2>/dev/null && pass "the daemon is up after the server died" ||
	fail "the daemon is up after the server died" "running" "gone"

# A server that stops answering: ETIMEDOUT after --nbd-timeout-ms (5 s).
serve "$work/s/hang.sock" -- --filter=delay file "$work/remote.img" rdelay=100ms || fail "nbdkit" "a socket" "none"
hang_pid=$server_pid
mkdir "$jobs/hung"
write_ctl "$jobs/hung/ctl" "copy from=nbd+unix:///?socket=$work/s/hang.sock to=$loop1"
wait_until 100 grep -qx running "$jobs/hung/state"
kill -STOP "$hang_pid"
start=$(date +%s%N)
timeout 30 cat "$jobs/hung/wait" >"$work/hung.status"
took=$((($(date +%s%N) - start) / 1000000))
if [ "$(final hung state)" = failed ] && [[ $(final hung error) == *ETIMEDOUT* ]] && [ "$took" -lt 15000 ]; then
	pass "a hung server: failed with ETIMEDOUT after $took ms"
else
	fail "a hung server: failed with ETIMEDOUT within 15 s" "failed ...ETIMEDOUT..." "$(final hung state) $(final hung error) ($took ms)"
fi
# A cancel while it hangs ends the job at once (a new connection to the stopped server hangs too).
kill -CONT "$hang_pid"
mkdir "$jobs/hung-cancel"
write_ctl "$jobs/hung-cancel/ctl" "copy from=nbd+unix:///?socket=$work/s/hang.sock to=$loop1"
wait_until 100 grep -qx running "$jobs/hung-cancel/state"
kill -STOP "$hang_pid"
sleep 0.3
start=$(date +%s%N)
echo cancel >"$jobs/hung-cancel/ctl"
timeout 30 cat "$jobs/hung-cancel/wait" >"$work/hung-cancel.status"
took=$((($(date +%s%N) - start) / 1000000))
if [ "$(final hung-cancel state)" = cancelled ] && [ "$took" -lt 1500 ]; then
	pass "cancel while the server hangs: cancelled after $took ms"
else
	fail "cancel while the server hangs: cancelled within 1.5 s" "cancelled" "$(final hung-cancel state) ($took ms)"
fi
kill -CONT "$hang_pid"
# The same with the destination's server hung: the flush at the end (every NBD destination
# is flushed) finds its connections shut by the cancel, which must not make the job failed.
truncate -s "$SIZE" "$work/hangw.img"
serve "$work/s/hangw.sock" -- --filter=delay file "$work/hangw.img" wdelay=100ms || fail "nbdkit" "a socket" "none"
hangw_pid=$server_pid
mkdir "$jobs/hung-dest-cancel"
write_ctl "$jobs/hung-dest-cancel/ctl" "copy from=$loop0 to=nbd+unix:///?socket=$work/s/hangw.sock"
wait_until 100 grep -qx running "$jobs/hung-dest-cancel/state"
kill -STOP "$hangw_pid"
sleep 0.3
start=$(date +%s%N)
echo cancel >"$jobs/hung-dest-cancel/ctl"
timeout 30 cat "$jobs/hung-dest-cancel/wait" >"$work/hung-dest-cancel.status"
took=$((($(date +%s%N) - start) / 1000000))
if [ "$(final hung-dest-cancel state)" = cancelled ] && [ "$took" -lt 1500 ]; then
	pass "cancel while the destination's server hangs: cancelled after $took ms"
else
	fail "cancel while the destination's server hangs: cancelled within 1.5 s" "cancelled" \
		"$(final hung-dest-cancel state): $(final hung-dest-cancel error) ($took ms)"
fi
kill -CONT "$hangw_pid"
# A user's servers that never answer the handshake hold at most 4 of the daemon's threads:
# nobody's fifth start is refused with EAGAIN at once, and root is served meanwhile.
serve "$work/nb/mute.sock" "${nobody_exec[@]}" -- memory 64M || fail "nobody's nbdkit" "a socket" "none"
mute_pid=$server_pid
kill -STOP "$mute_pid"
mute_writers=()
for n in 1 2 3 4; do
	as_nobody mkdir "$jobs/mute$n"
	as_nobody bash -c "echo 'copy from=nbd+unix:///?socket=$work/nb/mute.sock to=$work/nb/out.img' >$jobs/mute$n/ctl" \
		2>/dev/null &
	mute_writers+=("$!")
done
sleep 0.5
start=$(date +%s%N)
refused "$jobs" mute5 "copy from=nbd+unix:///?socket=$work/nb/mute.sock to=$work/nb/out.img" EAGAIN "already has 4" as_nobody
truncate -s 0 "$work/loop1.img"
truncate -s "$SIZE" "$work/loop1.img"
run_job "$jobs" root-meanwhile "copy from=$A to=$loop1" &&
	check "root is served while nobody's 4 handshakes hang" "done" "$(final root-meanwhile state)"
took=$((($(date +%s%N) - start) / 1000000))
[ "$took" -lt 2500 ] && pass "the refusal and root's job took $took ms, not the handshake timeout" ||
	fail "the refusal and root's job without waiting for the hung handshakes" "< 2500 ms" "$took ms"
wait "${mute_writers[@]}"
kill -CONT "$mute_pid"
stop_server "$mute_pid"
truncate -s 0 "$work/loop1.img"
truncate -s "$SIZE" "$work/loop1.img"
run_job "$jobs" after-faults "copy from=$A to=$loop1" &&
	check "after the faults a new job works: the same bytes" "done same" \
		"$(final after-faults state) $(cmp -s "$work/remote.orig" "$loop1" && echo same || echo differ)"

# ---------------------------------------------------------------------------
# g. resume after a crash
# ---------------------------------------------------------------------------
mkdir "$work/state"
serve "$work/s/slow2.sock" -- --filter=delay file "$work/dense.img" rdelay=500ms || fail "a slow nbdkit" "a socket" "none"
slow2_pid=$server_pid
if start_daemon --state-dir="$work/state" --checkpoint-ms=200; then
	sd_pid=$daemon_pid
	sd_mount=$daemon_mount
	truncate -s 0 "$work/loop1.img"
	truncate -s "$SIZE" "$work/loop1.img"
	mkdir "$sd_mount/jobs/resumable"
	write_ctl "$sd_mount/jobs/resumable/ctl" "copy from=nbd+unix:///?socket=$work/s/slow2.sock to=$loop1"
	wait_until 100 grep -qx running "$sd_mount/jobs/resumable/state"
	sleep 1
	kill -KILL "$sd_pid"
	wait "$sd_pid" 2>/dev/null
	fusermount3 -u -z "$sd_mount" 2>/dev/null
	# nbdkit 1.32 may abort when a client vanishes with delayed reads in
	# flight (raw_send_socket: Assertion `sock >= 0' failed): the server is
	# started again on its socket, as an administrator would.
	stop_server "$slow2_pid"
	rm -f "$work/s/slow2.sock"
	serve "$work/s/slow2.sock" -- file "$work/dense.img" || fail "nbdkit again" "a socket" "none"
	if start_daemon_on "$sd_mount" --state-dir="$work/state"; then
		check "after SIGKILL and a restart the NBD job is interrupted" "interrupted" \
			"$(cat "$sd_mount/jobs/resumable/state")"
		write_ctl "$sd_mount/jobs/resumable/ctl" resume
		timeout 60 cat "$sd_mount/jobs/resumable/wait" >"$work/resumable.status"
		check "resume reconnects and finishes it: the same bytes" "0 done same" \
			"$write_status$write_said $(final resumable state) $(cmp -s "$work/dense.img" "$loop1" && echo same || echo differ)$(final resumable error | grep -v "^none$" | sed "s/^/ /")"
	else
		fail "the daemon comes back with --state-dir" "a mount" "$(tail -1 "$work/kcopydfs.log")"
	fi
else
	fail "kcopydfs --state-dir mounts" "a mount" "$(tail -1 "$work/kcopydfs.log")"
fi

# ---------------------------------------------------------------------------
# h. two hosts
# ---------------------------------------------------------------------------
srv=kcopyd-srv-$$
cli=kcopyd-cli-$$
if ip netns add "$srv" && netns_made+=("$srv") && ip netns add "$cli" && netns_made+=("$cli") &&
	ip link add "ks$$" type veth peer name "kc$$" &&
	ip link set "ks$$" netns "$srv" && ip link set "kc$$" netns "$cli" &&
	ip -n "$srv" addr add 10.213.7.1/30 dev "ks$$" && ip -n "$cli" addr add 10.213.7.2/30 dev "kc$$" &&
	ip -n "$srv" link set "ks$$" up && ip -n "$cli" link set "kc$$" up &&
	ip -n "$srv" link set lo up && ip -n "$cli" link set lo up; then
	pass "two hosts: namespaces $srv and $cli joined by a veth pair (10.213.7.0/30)"
	cp --sparse=always "$work/remote.orig" "$work/host.img"
	SERVE_ADDRESS=10.213.7.1 serve 10809 nsenter --net="/run/netns/$srv" -- file "$work/host.img" ||
		fail "nbdkit in the server's namespace" "listening on 10.213.7.1:10809" "no"
	H="nbd://10.213.7.1:10809/"
	in_cli=(nsenter --net="/run/netns/$cli")
	truncate -s 0 "$work/loop1.img"
	truncate -s "$SIZE" "$work/loop1.img"
	run_job "$jobs" from-host "copy from=$H to=$loop1" "${in_cli[@]}" &&
		check "a writer on the client host copies from the server host: the same bytes" "done same" \
			"$(final from-host state) $(cmp -s "$work/remote.orig" "$loop1" && echo same || echo differ)"
	head -c "$SIZE" /dev/urandom >"$work/back.img"
	new_loop "$work/back.img" && back=$loop_device
	run_job "$jobs" to-host "copy from=$back to=$H" "${in_cli[@]}" &&
		check "and back to it: the same bytes" "done same" \
			"$(final to-host state) $(cmp -s "$work/back.img" "$work/host.img" && echo same || echo differ)"
	# The daemon's own network has no route to 10.213.7.1: a writer there cannot reach it.
	mkdir "$jobs/from-daemon-net"
	write_ctl "$jobs/from-daemon-net/ctl" "copy from=$H to=$loop1"
	error=$(status_field "$jobs/from-daemon-net" error)
	# (A network that takes every connection, as some sandboxes' do, then never answers the handshake.)
	if [ "$write_status" != 0 ] && [[ $error == *10.213.7.1* ]] &&
		[ "$(cat "$jobs/from-daemon-net/state")" = idle ]; then
		pass "a writer in the daemon's network does not reach the server host: $error"
	else
		fail "a writer in the daemon's network does not reach the server host" "refused, naming 10.213.7.1" \
			"$write_status: $error"
	fi
	# The link deleted mid-copy (a slow server: 100 ms a read): nothing answers, the job times out.
	SERVE_ADDRESS=10.213.7.1 serve 10810 nsenter --net="/run/netns/$srv" -- --filter=delay file "$work/host.img" \
		rdelay=100ms || fail "a slow nbdkit in the server's namespace" "listening" "no"
	mkdir "$jobs/link-down"
	write_ctl "$jobs/link-down/ctl" "copy from=nbd://10.213.7.1:10810/ to=$loop1" "${in_cli[@]}"
	wait_until 100 grep -qx running "$jobs/link-down/state"
	sleep 0.3
	ip -n "$cli" link del "kc$$"
	start=$(date +%s%N)
	timeout 30 cat "$jobs/link-down/wait" >"$work/link-down.status"
	took=$((($(date +%s%N) - start) / 1000000))
	if [ "$(final link-down state)" = failed ] && [[ $(final link-down error) == *ETIMEDOUT* ]]; then
		pass "the link deleted mid-copy: failed with ETIMEDOUT after $took ms: $(final link-down error)"
	else
		fail "the link deleted mid-copy: failed with ETIMEDOUT" "failed ...ETIMEDOUT..." \
			"$(final link-down state): $(final link-down error)"
	fi
	run_job "$jobs" after-link "copy from=$A to=$loop1" &&
		check "the daemon serves on after the link went" "done" "$(final after-link state)"
else
	fail "two hosts: network namespaces and a veth pair" "made" "not made"
fi

finish
