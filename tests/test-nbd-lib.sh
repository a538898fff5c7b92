#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-nbd-lib.sh: the NBD server helpers the shell tests share
# (tests/nbd-lib.sh) start what they say, with the URI they say, and the
# EXIT trap stops them all.
set -u
. "${TESTS_SRCDIR:-$(dirname "$0")}/report-lib.sh"
. "${TESTS_SRCDIR:-$(dirname "$0")}/nbd-lib.sh"

nbd_require
command -v python3 >/dev/null || skip_all "needs python3"
pids=()

nbd_server_start memory 64M
check "unix: the export's size" 67108864 "$(nbdinfo --size "$NBD_URI" 2>&1)"
case "$NBD_URI" in nbd+unix:///\?socket=/*) pass "unix: the URI names the socket" ;;
*) fail "unix: the URI" "nbd+unix:///?socket=..." "$NBD_URI" ;; esac
pids+=("$NBD_PID")

nbd_server_start --tcp --filter=delay memory 1M rdelay=1ms
check "tcp: the export's size" 1048576 "$(nbdinfo --size "$NBD_URI" 2>&1)"
pids+=("$NBD_PID")

nbd_psk_file "$nbd_dir/keys.psk"
check "psk file: mode 0600" 600 "$(stat -c %a "$nbd_dir/keys.psk")"
grep -Eq '^alice:[0-9a-f]{64}$' "$nbd_dir/keys.psk" && pass "psk file: USER:HEXKEY" ||
	fail "psk file" "alice:<64 hex digits>" "$(cat "$nbd_dir/keys.psk")"
nbd_server_start --tls "$nbd_dir/keys.psk" memory 2M
check "tls: the export's size through the key" 2097152 "$(nbdinfo --size "$NBD_URI" 2>&1)"
nbdinfo --size "nbd+unix:///?socket=$NBD_SOCK" >/dev/null 2>&1 && fail "tls: refused without the key" "an error" "connected" ||
	pass "tls: refused without the key"
pids+=("$NBD_PID")

nbd_qcow2_create "$nbd_dir/disk.qcow2" 8M
qemu_nbd_start "$nbd_dir/disk.qcow2"
check "qemu-nbd: the image's size" 8388608 "$(nbdinfo --size "$NBD_URI" 2>&1)"
pids+=("$NBD_PID")

nbd_server_stop "${pids[1]}"
kill -0 "${pids[1]}" 2>/dev/null && fail "nbd_server_stop" "gone" "still running" || pass "nbd_server_stop"

# The EXIT trap, in a child shell: every server gone, the directory too.
out=$(bash -c '. "$1/report-lib.sh"; . "$1/nbd-lib.sh"; trap "echo previous-trap-ran" EXIT
	nbd_server_start memory 1M; echo "$NBD_PID $nbd_dir"' _ "${TESTS_SRCDIR:-$(dirname "$0")}")
read -r child_pid child_dir _ <<<"$out"
sleep 0.2
kill -0 "$child_pid" 2>/dev/null && fail "exit trap: server stopped" "gone" "running" || pass "exit trap: server stopped"
[ -e "$child_dir" ] && fail "exit trap: directory removed" "gone" "$child_dir" || pass "exit trap: directory removed"
case "$out" in *previous-trap-ran*) pass "exit trap: the previous trap still runs" ;;
*) fail "exit trap: the previous trap" "previous-trap-ran" "$out" ;; esac
finish
