#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopy-nbd.sh: kcopy with NBD regions against real servers (nbdkit,
# qemu-nbd), as kcopy(1) says:
#   a. every mix, compared byte for byte: a file to an NBD export (Unix
#      socket), an export to a file, TCP to a Unix socket, one file to a
#      file and an export at once, into a qcow2 file through qemu-nbd
#      (qemu-img compare), from sparse-random (its holes not read), a
#      region of an export by :SECTOR+COUNT after the URI;
#   b. TLS with a pre-shared key: the right key copies, none and a wrong
#      one are refused in one line;
#   c. one clear line and the documented exit status for each error: a
#      socket that is not there, a closed port, a host that does not
#      resolve, an export that does not exist (1); a read-only export as a
#      destination and a region past the export's end (2, before anything
#      is written); a read error at a chosen offset (1, the range, and the
#      command that copies the rest);
#   d. --via: copies through a kcopydfs mount (an export to an export, TLS
#      with a key file the daemon opens as the writer), the URIs passed as
#      written; a daemon's refusal (--nbd=none) said by kcopy.
#
# Run by `make check` (which exports KCOPY and KCOPYDFS), or by hand:
#   sudo KCOPY=./kcopy KCOPYDFS=./kcopydfs tests/test-kcopy-nbd.sh
# Needs root (for --via's mount), FUSE, nbdkit, nbdcopy, qemu-nbd and
# qemu-img; exits 77 (skipped) without them.
#
# Every check prints PASS or FAIL with what it expected and what it got;
# the last line is "N passed, M failed"; the exit status is 1 on any failure.

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"
. "${TESTS_SRCDIR:-$(dirname "$0")}/nbd-lib.sh"

KCOPY=${KCOPY:-${BUILDDIR:-.}/kcopy}
require_basics cmp truncate
nbd_require
[ -x "$KCOPY" ] || skip_all "no kcopy at '$KCOPY' (set KCOPY)"
setup_work 512M

MiB=$((1024 * 1024))
SIZE=$((16 * MiB))

# same A B: "same" when the files hold the same bytes.
same() {
	cmp -s "$1" "$2" && echo same || echo differ
}

# kcopy_run ARGS...: run kcopy; its exit status in $rc, its stderr's lines without the summary in $said.
kcopy_run() {
	"$KCOPY" "$@" 2>"$work/kcopy.err"
	rc=$?
	said=$(grep -v '^kcopy: copied\|^kcopy: zeroed' "$work/kcopy.err" | tr '\n' '|')
}

head -c "$SIZE" /dev/urandom >"$work/src.img"
truncate -s "$SIZE" "$work/a.img" "$work/out.img" "$work/b.img"

# ---------------------------------------------------------------------------
# a. every mix
# ---------------------------------------------------------------------------
nbd_server_start file "$work/a.img" || fail "nbdkit serves a.img" "up" "down"
A=$NBD_URI
kcopy_run "$work/src.img" "$A"
check "a file to an export (Unix socket)" "0 same" "$rc $(same "$work/src.img" "$work/a.img")"
kcopy_run "$A" "$work/out.img"
check "an export to a file" "0 same" "$rc $(same "$work/src.img" "$work/out.img")"

nbd_server_start --tcp file "$work/a.img" || fail "nbdkit on TCP" "up" "down"
T=$NBD_URI
nbd_server_start file "$work/b.img" || fail "nbdkit serves b.img" "up" "down"
B=$NBD_URI
kcopy_run "$T" "$B"
check "TCP to a Unix socket ($T)" "0 same" "$rc $(same "$work/src.img" "$work/b.img")"

truncate -s 0 "$work/out.img" "$work/b.img"
truncate -s "$SIZE" "$work/out.img" "$work/b.img"
kcopy_run "$work/src.img" "$work/out.img" "$B"
check "one file to a file and an export at once" "0 same same" \
	"$rc $(same "$work/src.img" "$work/out.img") $(same "$work/src.img" "$work/b.img")"

nbd_qcow2_create "$work/q.qcow2" "$SIZE"
qemu_nbd_start "$work/q.qcow2" || fail "qemu-nbd over q.qcow2" "up" "down"
kcopy_run "$work/src.img" "$NBD_URI"
qemu_pid=$NBD_PID
nbd_server_stop "$qemu_pid"
check "into a qcow2 file through qemu-nbd (qemu-img compare)" "0 0" \
	"$rc $(qemu-img compare -q -f raw -F qcow2 "$work/src.img" "$work/q.qcow2"; echo $?)"

nbd_server_start sparse-random 16M seed=7 percent=10 || fail "nbdkit sparse-random" "up" "down"
nbdcopy "$NBD_URI" "$work/random.ref"
truncate -s 0 "$work/out.img"
truncate -s "$SIZE" "$work/out.img"
kcopy_run "$NBD_URI" "$work/out.img"
zero=$(sed -n 's/.*data, \([0-9]*\) zero.*/\1/p' "$work/kcopy.err")
check "from sparse-random: nbdcopy's bytes, its holes not read" "0 same zero>0" \
	"$rc $(same "$work/random.ref" "$work/out.img") zero$([ "${zero:-0}" -gt 0 ] && echo '>0' || echo =0)"

# 1 MiB from 4 MiB of the export, by :SECTOR+COUNT after the URI.
truncate -s $MiB "$work/part.img"
kcopy_run "$A:8192+2048" "$work/part.img"
check "URI:SECTOR+COUNT: 1 MiB from 4 MiB" "0 same" \
	"$rc $(cmp -s -n $MiB -i $((4 * MiB)):0 "$work/src.img" "$work/part.img" && echo same || echo differ)"

# ---------------------------------------------------------------------------
# b. TLS
# ---------------------------------------------------------------------------
nbd_psk_file "$work/keys.psk"
nbd_psk_file "$work/wrong.psk"
nbd_server_start --tls "$work/keys.psk" file "$work/a.img" || fail "nbdkit with TLS" "up" "down"
TLS=$NBD_URI
tls_sock=$NBD_SOCK
truncate -s 0 "$work/out.img"
truncate -s "$SIZE" "$work/out.img"
kcopy_run "$TLS" "$work/out.img"
check "nbds+unix:// with the right key" "0 same" "$rc $(same "$work/src.img" "$work/out.img")"
kcopy_run "nbd+unix:///?socket=$tls_sock" "$work/out.img"
[[ $rc == 1 && $said == *TLS* && $said != *"|"*"|"* ]] && pass "no TLS to a TLS server: one line: $said" ||
	fail "no TLS to a TLS server" "exit 1, one line naming TLS" "$rc: $said"
kcopy_run "${TLS/keys.psk/wrong.psk}" "$work/out.img"
[[ $rc == 1 && $said == *TLS* ]] && pass "the wrong key: refused: $said" ||
	fail "the wrong key" "exit 1, a line naming TLS" "$rc: $said"

# ---------------------------------------------------------------------------
# c. errors
# ---------------------------------------------------------------------------
# expect_error NAME STATUS PATTERN ARGS...: kcopy ARGS exits STATUS with one line matching PATTERN.
expect_error() {
	local name=$1 status=$2 pattern=$3
	shift 3

	kcopy_run "$@"
	if [ "$rc" = "$status" ] && [[ $said =~ $pattern ]] && [ "$(grep -c . <<<"${said//|/$'\n'}")" -le 2 ]; then
		pass "$name: exit $status: $said"
	else
		fail "$name" "exit $status, /$pattern/" "$rc: $said"
	fi
}
expect_error "a socket that is not there" 1 "no such host, socket or export" \
	"nbd+unix:///?socket=$work/none.sock" "$work/out.img"
expect_error "a closed port" 1 "connection refused" "nbd://127.0.0.1:$(nbd_free_port)/" "$work/out.img"
expect_error "a host that does not resolve" 1 "no such host" "nbd://no-such-host.invalid/" "$work/out.img"
nbd_server_start --filter=exportname memory 16M exportname=disk1 exportname-strict=true ||
	fail "nbdkit with one export" "up" "down"
expect_error "an export that does not exist" 1 "disk2" "nbd+unix:///disk2?socket=$NBD_SOCK" "$work/out.img"
nbd_server_start -r file "$work/src.img" || fail "a read-only nbdkit" "up" "down"
before=$(sha256sum <"$work/out.img")
expect_error "a read-only export as a destination" 2 "read-only" "$work/out.img" "$NBD_URI"
expect_error "a region past the export's end" 2 "past its end" "$A:32000+2048" "$work/part.img"
check "nothing was written by the refused copies" "$before" "$(sha256sum <"$work/out.img")"
nbd_server_start eval get_size="echo $SIZE" \
	pread='if [ "$4" -ge 8388608 ]; then echo "EIO injected" >&2; exit 1; fi; head -c "$3" /dev/zero' ||
	fail "nbdkit eval" "up" "down"
EVAL=$NBD_URI
kcopy_run "$NBD_URI" "$work/out.img"
if [ "$rc" = 1 ] && [[ $said == *"read error on $NBD_URI sectors 16384+"*EIO* ]] && [[ $said == *"to copy the rest"* ]]; then
	pass "a read error at 8 MiB: exit 1, the range, the command for the rest"
else
	fail "a read error at 8 MiB" "exit 1, read error on URI sectors 16384+N: EIO, the rest's command" "$rc: $said"
fi

# ---------------------------------------------------------------------------
# d. --via
# ---------------------------------------------------------------------------
if start_daemon; then
	truncate -s 0 "$work/b.img"
	truncate -s "$SIZE" "$work/b.img"
	kcopy_run --via "$daemon_mount" "$A" "$B"
	check "--via: an export to an export through the mount" "0 same" "$rc $(same "$work/src.img" "$work/b.img")"
	truncate -s 0 "$work/out.img"
	truncate -s "$SIZE" "$work/out.img"
	kcopy_run --via "$daemon_mount" "$TLS" "$work/out.img"
	check "--via: TLS with a key file (opened as the writer)" "0 same" "$rc $(same "$work/src.img" "$work/out.img")"
	# The daemon's error line tells what the server said: kcopy still reads the failing range from it.
	kcopy_run --via "$daemon_mount" "$EVAL" "$work/out.img"
	rest=$(grep -o 'kcopy .*:16384+[0-9]*.*' "$work/kcopy.err" | tail -1)
	if [ "$rc" = 1 ] && [[ $said == *"read error on $EVAL sectors 16384+"*EIO* ]] && [[ $rest == *"$EVAL:16384+"* ]] &&
		[[ $said == *"$EVAL said: the server failed a read"* ]]; then
		pass "--via: a read error at 8 MiB: exit 1, the range, the rest from 8 MiB"
	else
		fail "--via: a read error at 8 MiB" "exit 1, read error on URI sectors 16384+N: EIO, the rest from sector 16384" \
			"$rc: $said"
	fi
else
	fail "kcopydfs mounts" "a mount" "$(tail -1 "$work/kcopydfs.log")"
fi
# A daemon that takes no NBD region: its reason reaches kcopy's message.
if start_daemon --nbd=none; then
	kcopy_run --via "$daemon_mount" "$A" "$work/out.img"
	[[ $rc != 0 && $said == *"--nbd=none"* ]] && pass "--via: the daemon's refusal said: $said" ||
		fail "--via: the daemon's refusal" "non-zero, naming --nbd=none" "$rc: $said"
else
	fail "kcopydfs --nbd=none mounts" "a mount" "$(tail -1 "$work/kcopydfs.log")"
fi

finish
