#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-adversary-nbd.sh: a local user against the NBD regions of a root
# daemon mounted with -o allow_other (kcopydfs(8), SECURITY).  "nobody" is
# uid 65534 with no groups (setpriv); its servers are
# tests/nbd_fake_server.py, which does what nbdkit will not.  Each check is
# one attack, and what must hold instead:
#   a. a socket swapped for a symbolic link once the helper has connected
#      it: the daemon never looks the path up as root, so the overlap check
#      tells nobody nothing of a file it cannot see (a root-only file there
#      or not there: the same answer); two regions of one socket still
#      overlap;
#   b. the status text stays one line a field: an export name or a key
#      path decoded from %0A, quoted by libnbd or by kcopydfs, forges no
#      "state:" or "owner:" line;
#   c. TLS without a pre-shared key (X.509) is refused with EPERM before
#      anything connects: libnbd would read the daemon's own certificates
#      (/etc/pki/libnbd) and present root's client certificate for nobody;
#   d. a tls-psk-file on /proc or /sys is refused with EINVAL (the daemon
#      reads it, and such a file shows root more than nobody);
#   e. a writer in a network namespace of its own (unshare -rn) does not
#      reach the host's 127.0.0.1 through the daemon;
#   f. host names are resolved within the owner's 4 places for jobs that
#      connect: with 4 handshakes hung, a fifth job naming a host is refused
#      with EAGAIN before its name is looked up (a name whose DNS servers
#      never answer holds a daemon thread as a mute server does);
#   g. a server that answers block status just inside the timeout, a small
#      extent at a time, does not hold the engine's I/O thread (every
#      user's jobs): root's local copy meanwhile ends within 10 s.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-adversary-nbd.sh
# Needs root, FUSE, setpriv, unshare, python3 and nbdkit; exits 77 without them.
# The last line is "N passed, M failed"; the exit status is 1 on any failure.

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics setpriv unshare truncate nbdkit python3 ip
setup_work 256M

NOBODY=65534
FAKE=${TESTS_SRCDIR:-$(dirname "$0")}/nbd_fake_server.py
PY=$(command -v python3)
# A python3 nobody can run (a shim under root's home would not be).
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
fakes=()

as_nobody() {
	setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups "$@"
}

# fake ARGS...: nobody's fake server, in the background; waits until it says ready.
fake() {
	# Emptied here, not by the background job's redirection: the last server's "ready" must not count.
	: >"$work/fake.out"
	# setpriv itself, not as_nobody: a function in the background is a
	# subshell, whose pid is not the server's, and killing it left the
	# server running after the test.  setpriv execs python3: one pid.
	setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups "$PY" "$FAKE" "$@" >"$work/fake.out" 2>&1 &
	fake_pid=$!
	fakes+=("$fake_pid")
	background_pids+=("$fake_pid")	# the EXIT trap's too, should the test end early
	wait_until 100 grep -q ready "$work/fake.out"
}

stop_fakes() {
	local pid

	for pid in "${fakes[@]}"; do
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	fakes=()
}

# nobody_job NAME DESCRIPTION: nobody makes job NAME and writes DESCRIPTION (write_status, write_said).
nobody_job() {
	as_nobody mkdir "$jobs/$1"
	write_ctl "$jobs/$1/ctl" "$2" as_nobody
}

if ! start_daemon -o allow_other --nbd-timeout-ms=5000; then
	fail "kcopydfs mounts" "a kcopydfs mount at $daemon_mount" "$(tr '\n' '|' <"$work/kcopydfs.log")"
	finish
fi
jobs=$daemon_mount/jobs
nb=$work/nb
mkdir -m 0755 "$nb"
chown $NOBODY:$NOBODY "$nb"
mkdir -m 0700 "$work/secret"
echo secret >"$work/secret/there"
as_nobody truncate -s 1M "$nb/out.img"

# ---------------------------------------------------------------------------
# a. the socket path swapped for a symbolic link after the connect
oracle() {
	rm -f "$nb"/a.sock* "$nb"/b.sock*
	fake --unix "$nb/a.sock" --unix "$nb/b.sock" --size 1048576 --swap "$1" ||
		fail "nobody's fake server starts" "ready" "$(cat "$work/fake.out")"
	nobody_job "$2" "copy from=nbd+unix:///?socket=$nb/a.sock to=nbd+unix:///?socket=$nb/b.sock"
	echo "$write_status $(status_field "$jobs/$2" rejected)"
	stop_fakes
}
there=$(oracle "$work/secret/there" swap-there)
not_there=$(oracle "$work/secret/not-there" swap-not-there)
check "a root-only file swapped in for both sockets, there or not: the same answer" "$not_there" "$there"
if [[ $there == *"same NBD export"* ]]; then
	fail "the daemon did not stat the swapped path as root" "no overlap refusal" "$there"
else
	pass "the daemon did not stat the swapped path as root: $there"
fi
# The overlap check still knows one socket named twice.
rm -f "$nb"/a.sock*
fake --unix "$nb/a.sock" --size 1048576
nobody_job same-socket "copy from=nbd+unix:///?socket=$nb/a.sock to=nbd+unix:///?socket=$nb/a.sock"
error=$(status_field "$jobs/same-socket" error)
if [ "$write_status" != 0 ] && [[ $error == *overlaps* ]]; then
	pass "one socket named twice still overlaps: $error"
else
	fail "one socket named twice still overlaps" "refused, overlaps" "$write_status: $error"
fi

# ---------------------------------------------------------------------------
# b. one line a field, whatever a URI decodes to
# one_line NAME JOB: the status of JOB has one state:, one owner:, and the owner is nobody.
one_line() {
	local status
	status=$(cat "$jobs/$2/status")
	if [ "$(grep -c '^state: ' <<<"$status")" = 1 ] && [ "$(grep -c '^owner: ' <<<"$status")" = 1 ] &&
		[ "$(sed -n 's/^owner: //p' <<<"$status")" = "$NOBODY:$NOBODY" ] &&
		[[ $(sed -n 's/^error: //p' <<<"$status") == *"?state: done?owner: 0:0"* ]]; then
		pass "$1: no line forged, the newline shown as ?"
	else
		fail "$1: no line forged, the newline shown as ?" "one state:, one owner: $NOBODY:$NOBODY" \
			"$(tr '\n' '|' <<<"$status")"
	fi
}
# A server that has no such export: libnbd's error quotes the name.
rm -f "$nb"/e.sock*
fake --unix "$nb/e.sock" --errmsg 'no such export'
nobody_job forged-export \
	"copy from=nbd+unix:///a%0Astate:%20done%0Aowner:%200:0%0A?socket=$nb/e.sock to=$nb/out.img"
one_line "an export name with %0A (libnbd quotes it)" forged-export
nobody_job forged-key \
	"copy from=nbds+unix://alice@/?socket=$nb/a.sock&tls-psk-file=/none%0Astate:%20done%0Aowner:%200:0%0A to=$nb/out.img"
one_line "a tls-psk-file with %0A (kcopydfs quotes it)" forged-key
stop_fakes

# ---------------------------------------------------------------------------
# c. X.509 through the daemon would be root's certificates
rm -f "$nb"/a.sock*
fake --unix "$nb/a.sock" --size 1048576
nobody_job x509 "copy from=nbds+unix:///?socket=$nb/a.sock to=$nb/out.img"
error=$(status_field "$jobs/x509" error)
if [[ $write_said == *"$(errno_text EPERM)"* && $error == *tls-psk-file* && $error == *"(EPERM)"* ]]; then
	pass "nbds without a pre-shared key refused: $error"
else
	fail "nbds without a pre-shared key refused" "EPERM, tls-psk-file named" "$write_said; $error"
fi

# ---------------------------------------------------------------------------
# d. a key file on a pseudo filesystem
for key in /proc/1/stat /sys/kernel/mm/transparent_hugepage/enabled; do
	[ -r "$key" ] || continue
	name=key-$(basename "$key")
	nobody_job "$name" "copy from=nbds+unix://alice@/?socket=$nb/a.sock&tls-psk-file=$key to=$nb/out.img"
	error=$(status_field "$jobs/$name" error)
	if [[ $write_said == *"$(errno_text EINVAL)"* && $error == *"pseudo filesystem"* ]]; then
		pass "tls-psk-file=$key refused: $error"
	else
		fail "tls-psk-file=$key refused" "EINVAL, a pseudo filesystem" "$write_said; $error"
	fi
done
stop_fakes

# ---------------------------------------------------------------------------
# e. a writer in a network namespace of its own, the server on the host's loopback
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
nbdkit -f --exit-with-parent -i 127.0.0.1 -p "$port" memory 1M >"$work/nbdkit.log" 2>&1 &
root_server=$!
background_pids+=("$root_server")
wait_until 100 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null
as_nobody mkdir "$jobs/from-netns"
as_nobody unshare -rn bash -c "ip link set lo up && echo 'copy from=nbd://127.0.0.1:$port/ to=$nb/out.img' >$jobs/from-netns/ctl" \
	2>"$work/write.err"
write_status=$?
error=$(status_field "$jobs/from-netns" error)
if [ "$write_status" != 0 ] && [[ $error == *"writer's network"* && $error == *"(ECONNREFUSED)"* ]]; then
	pass "from its own network namespace nobody does not reach the host's 127.0.0.1: $error"
else
	fail "from its own network namespace nobody does not reach the host's 127.0.0.1" \
		"refused, ECONNREFUSED from the writer's network" "$write_status: $error"
fi

# ---------------------------------------------------------------------------
# f. host names are resolved within the owner's 4 places for connecting jobs
# (a name whose DNS servers never answer would otherwise hold a daemon
# thread per write, without limit): with 4 of nobody's handshakes hung,
# its fifth job is refused with EAGAIN before its host name is looked up.
rm -f "$nb"/mute.sock*
fake --unix "$nb/mute.sock" --mode mute
mute_writers=()
for n in 1 2 3 4; do
	as_nobody mkdir "$jobs/mute$n"
	as_nobody bash -c "echo 'copy from=nbd+unix:///?socket=$nb/mute.sock to=$nb/out.img' >$jobs/mute$n/ctl" \
		2>/dev/null &
	mute_writers+=("$!")
done
sleep 0.5
nobody_job dns5 "copy from=nbd://no-such-host.invalid/ to=$nb/out.img"
error=$(status_field "$jobs/dns5" error)
if [[ $write_said == *"$(errno_text EAGAIN)"* && $error == *"already has 4"* ]]; then
	pass "the fifth job's host name is not resolved past the owner's 4 places: $error"
else
	fail "the fifth job's host name is not resolved past the owner's 4 places" "EAGAIN, already has 4" \
		"$write_said; $error"
fi
wait "${mute_writers[@]}"

# ---------------------------------------------------------------------------
# g. the engine's I/O thread is every job's: a server that answers each
# block-status request just inside the timeout, with a small extent each
# time, held it (root's 64 MiB local copy, 0.4 s alone, did not end in
# 120 s).  Its waits are bounded now: root's copy ends within 10 s.
stop_fakes
rm -f "$nb"/slow.sock*
fake --unix "$nb/slow.sock" --mode bs-slow --delay 4 --size $((64 * 1024 * 1024))
as_nobody truncate -s 64M "$nb/out.img"
nobody_job slow-extents "copy from=nbd+unix:///?socket=$nb/slow.sock to=$nb/out.img"
head -c 64M /dev/urandom >"$work/root-src.img"
truncate -s 64M "$work/root-dst.img"
mkdir "$jobs/root-meanwhile"
start=$(date +%s%N)
write_ctl "$jobs/root-meanwhile/ctl" "copy from=$work/root-src.img to=$work/root-dst.img"
state=$(timeout 30 cat "$jobs/root-meanwhile/wait" | sed -n 's/^state: //p')
took=$((($(date +%s%N) - start) / 1000000))
if [ "$state" = done ] && [ "$took" -lt 10000 ] && cmp -s "$work/root-src.img" "$work/root-dst.img"; then
	pass "root's copy is not held by nobody's slow block status: done in $took ms"
else
	fail "root's copy is not held by nobody's slow block status" "done within 10 s, the same bytes" \
		"${state:-still running} after $took ms"
fi
state=$(timeout 60 cat "$jobs/slow-extents/wait" | sed -n 's/^state: //p')
check "nobody's job itself ends (its source read as data)" done "$state"

stop_fakes
finish
