#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopydfs-faults.sh: kcopydfs on failing devices, through the mount.
# nbdkit serves disks with errors (nbdkit-ddrescue-filter for reads of
# chosen ranges, nbdkit-error-filter for every request or a random share of
# them while a trigger file exists, nbdkit-delay-filter for a slow disk),
# nbdfuse turns each into a file and a direct-I/O loop device into a block
# device, so the daemon gets genuine EIO and genuine slowness:
#  - a read error at the first, a middle and the last chunk, with and
#    without ignore_error: state, read_err, the error line's range, and the
#    destination chunk by chunk (copied, zeros, or never written);
#  - write errors on destination 1 of 3: only bit 1, the others intact;
#  - reads that fail at random (20%) with ignore_error;
#  - a destination 20 ms slower per request than the others, with the
#    daemon's peak memory checked against --pages;
#  - a destination whose server is killed mid-job: the job fails with an
#    error line, the daemon stays up and runs the next job.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-kcopydfs-faults.sh
# Needs root, nbdkit and nbdfuse; exits 77 (skipped) without them.
#
# Every check prints PASS or FAIL with what it expected and what it got;
# the last line is "N passed, M failed"; the exit status is 1 on any failure.

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics losetup cmp dd awk timeout python3 nbdkit nbdfuse
nbdkit --filter=error --filter=ddrescue --filter=delay memory --dump-plugin >/dev/null 2>&1 ||
	skip_all "nbdkit lacks the error, ddrescue or delay filter"
setup_work 200M

CHUNK_KIB=64
CHUNKS=64
SIZE=$((CHUNK_KIB * CHUNKS * 1024))	# 4 MiB
CHUNK_SECTORS=$((CHUNK_KIB * 2))
SECTORS=$((SIZE / 512))
PAGES=256

if ! start_daemon --subjob-kb "$CHUNK_KIB" --pages "$PAGES"; then
	fail "kcopydfs mounts" "a kcopydfs mount at $daemon_mount" "$(tr '\n' '|' <"$work/kcopydfs.log")"
	finish
fi
mnt=$daemon_mount
jobs=$mnt/jobs

head -c "$SIZE" /dev/urandom >"$work/src.img"
head -c "$SIZE" /dev/zero | tr '\0' '\377' >"$work/fill.img"
healthy=()
for index in 0 1 2; do
	cp "$work/fill.img" "$work/d$index.img"
	new_loop "$work/d$index.img" || skip_all "losetup failed"
	healthy+=("$loop_device")
done

# --- helpers ------------------------------------------------------------------

# nbd_start NAME [-r] NBDKIT-ARGS...: an nbdkit disk through nbdfuse at
# $work/NAME/disk with a direct-I/O loop device on it (request merging off,
# so a bad block fails only the one I/O that touches it).  Sets nbd_loop and
# nbd_fuse_pid; 1 if it did not come up.
nbd_start() {
	local name=$1 readonly=() dir
	shift
	if [ "$1" = -r ]; then
		readonly=(-r)
		shift
	fi
	dir=$work/$name
	nbd_export "$dir" "${readonly[@]}" "$@" || return 1
	new_loop "$dir/disk" "${readonly[@]}" || return 1
	nbd_loop=$loop_device
	echo 2 >"/sys/block/${nbd_loop#/dev/}/queue/nomerges"
}

# bad_source NAME CHUNK: the source, with reads of one 4 KiB block inside
# chunk CHUNK failing (a ddrescue mapfile).  Sets nbd_loop.
bad_source() {
	local name=$1 chunk=$2 bad_off map=$work/$1.map
	bad_off=$((chunk * CHUNK_KIB * 1024 + 8192))
	{
		echo "# Mapfile. Created by test-kcopydfs-faults.sh"
		echo "0x00000000 + 1"
		[ "$bad_off" -gt 0 ] && printf '0x%08x 0x%08x +\n' 0 "$bad_off"
		printf '0x%08x 0x%08x -\n' "$bad_off" 4096
		printf '0x%08x 0x%08x +\n' $((bad_off + 4096)) $((SIZE - bad_off - 4096))
	} >"$map"
	nbd_start "$name" -r --filter=ddrescue file "file=$work/src.img" "ddrescue-mapfile=$map"
}

# reset_dest INDEX: destination INDEX back to the fill pattern (0xff).
reset_dest() {
	dd if="$work/fill.img" of="${healthy[$1]}" bs=1M oflag=direct status=none
}

# chunk_map DEVICE: one letter per chunk of DEVICE: S (the source), Z
# (zeros), F (the fill pattern: never written), ? (anything else).
chunk_map() {
	python3 - "$1" "$work/src.img" "$CHUNKS" $((CHUNK_KIB * 1024)) <<'EOF'
import os, sys
device, source, chunks, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(source, "rb") as f:
    src = f.read()
fd = os.open(device, os.O_RDONLY | os.O_DIRECT)
import mmap
buf = mmap.mmap(-1, chunk)
letters = []
for index in range(chunks):
    os.preadv(fd, [buf], index * chunk)
    data = bytes(buf)
    if data == src[index * chunk:(index + 1) * chunk]:
        letters.append("S")
    elif data == bytes(chunk):
        letters.append("Z")
    elif data == b"\xff" * chunk:
        letters.append("F")
    else:
        letters.append("?")
os.close(fd)
print("".join(letters))
EOF
}

# repeat LETTER COUNT: LETTER COUNT times.
repeat() {
	local out="" index
	for ((index = 0; index < $2; index++)); do out+=$1; done
	printf '%s' "$out"
}

# run_job NAME DESCRIPTION: mkdir, echo, cat wait (60 s at most); sets
# job_dir, job_state, job_read_err, job_write_err, job_error.
run_job() {
	job_dir=$jobs/$1
	mkdir "$job_dir" || { job_state="(mkdir failed)"; return; }
	if ! echo "$2" >"$job_dir/ctl" 2>"$work/write.err"; then
		job_state="(write refused: $(tr '\n' ' ' <"$work/write.err"))"
		return
	fi
	timeout 60 cat "$job_dir/wait" >"$work/wait.out" 2>&1
	job_state=$(sed -n 's/^state: //p' "$work/wait.out")
	job_read_err=$(sed -n 's/^read_err: //p' "$work/wait.out")
	job_write_err=$(sed -n 's/^write_err: //p' "$work/wait.out")
	job_error=$(sed -n 's/^error: //p' "$work/wait.out")
	[ -n "$job_state" ] || job_state="(no state: $(tr '\n' '|' <"$work/wait.out"))"
}

# check NAME EXPECTED GOT
check() {
	if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "$2" "$3"; fi
}

# check_match NAME REGEX TEXT
check_match() {
	if [[ "$3" =~ $2 ]]; then pass "$1"; else fail "$1" "matching /$2/" "$3"; fi
}

# --- a read error at the first, a middle and the last chunk -------------------

for chunk in 0 31 63; do
	if ! bad_source "bad$chunk" "$chunk"; then
		fail "bad source at chunk $chunk comes up" "a loop device" "$(tail -n 5 "$work/nbdfuse.log" | tr '\n' '|')"
		continue
	fi
	bad=$nbd_loop
	start=$((chunk * CHUNK_SECTORS))
	for flags in "" ignore_error; do
		case_name="read error in chunk $chunk${flags:+, $flags}"
		reset_dest 0
		run_job "read$chunk$flags" "copy from=$bad to=${healthy[0]}${flags:+ flags=$flags}"
		check "$case_name: state" failed "$job_state"
		check "$case_name: read_err" 1 "$job_read_err"
		check "$case_name: write_err" 0x0 "$job_write_err"
		check_match "$case_name: the error line names the failed chunk" \
			"^read error on $(re_quote "$bad") sectors $start\+$CHUNK_SECTORS: EIO " "$job_error"
		if [ -n "$flags" ]; then
			expected=$(repeat S "$chunk")Z$(repeat S $((CHUNKS - chunk - 1)))
		else
			expected=$(repeat S "$chunk")$(repeat F $((CHUNKS - chunk)))
		fi
		check "$case_name: the destination chunk by chunk" "$expected" "$(chunk_map "${healthy[0]}")"
		rmdir "$job_dir"
	done
done

# --- write errors on destination 1 of 3 -------------------------------------------

if nbd_start wbad --filter=error memory "$SIZE" error=EIO error-pwrite-rate=100% \
	"error-pwrite-file=$work/wbad.trigger"; then
	wbad=$nbd_loop
	touch "$work/wbad.trigger"
	for flags in "" ignore_error; do
		case_name="write errors on dest 1 of 3${flags:+, $flags}"
		reset_dest 0
		reset_dest 2
		run_job "write$flags" "copy from=$work/src.img to=${healthy[0]} to=$wbad to=${healthy[2]}${flags:+ flags=$flags}"
		check "$case_name: state" failed "$job_state"
		check "$case_name: write_err is bit 1 alone" 0x2 "$job_write_err"
		check "$case_name: read_err" 0 "$job_read_err"
		check_match "$case_name: the error line names dest 1" \
			"^write error on $(re_quote "$wbad") \(to #1\) sectors 0\+$CHUNK_SECTORS: EIO " "$job_error"
		if [ -n "$flags" ]; then
			expected=$(repeat S "$CHUNKS")
			check "$case_name: dest 0 is the source" "$expected" "$(chunk_map "${healthy[0]}")"
			check "$case_name: dest 2 is the source" "$expected" "$(chunk_map "${healthy[2]}")"
		else
			# Stopped at the first failure: each chunk is copied or never written, nothing else.
			check_match "$case_name: dest 0 holds source or old data" '^S*F*$' "$(chunk_map "${healthy[0]}")"
			check_match "$case_name: dest 2 holds source or old data" '^S*F*$' "$(chunk_map "${healthy[2]}")"
		fi
		rmdir "$job_dir"
	done
	rm -f "$work/wbad.trigger"
else
	fail "write-error disk comes up" "a loop device" "$(tail -n 5 "$work/nbdfuse.log" | tr '\n' '|')"
fi

# --- reads failing at random ------------------------------------------------------

if nbd_start flaky --filter=error memory "$SIZE" error=EIO error-pread-rate=20% \
	"error-pread-file=$work/flaky.trigger"; then
	flaky=$nbd_loop
	dd if="$work/src.img" of="$flaky" bs=1M oflag=direct status=none
	touch "$work/flaky.trigger"
	reset_dest 1
	run_job flaky "copy from=$flaky to=${healthy[1]} flags=ignore_error"
	map=$(chunk_map "${healthy[1]}")
	check "reads failing at 20%: state" failed "$job_state"
	check "reads failing at 20%: read_err" 1 "$job_read_err"
	# 64 draws at 20%: no failure at all, or all failing, has a chance below one in a million.
	check_match "reads failing at 20%: every chunk copied or zeros, some of each" '^[SZ]*(SZ|ZS)[SZ]*$' "$map"
	first_zero=${map%%Z*}
	check_match "reads failing at 20%: the error line names the lowest zeroed chunk" \
		"^read error on $(re_quote "$flaky") sectors $((${#first_zero} * CHUNK_SECTORS))\+$CHUNK_SECTORS: EIO " \
		"$job_error"
	rm -f "$work/flaky.trigger"
	rmdir "$job_dir"
else
	fail "flaky disk comes up" "a loop device" "$(tail -n 5 "$work/nbdfuse.log" | tr '\n' '|')"
fi

# --- a slow destination -----------------------------------------------------------

if nbd_start slow --filter=delay memory "$SIZE" delay-write=20ms; then
	slow=$nbd_loop
	reset_dest 0
	reset_dest 2
	started=$(date +%s.%N)
	run_job slow "copy from=$work/src.img to=${healthy[0]} to=$slow to=${healthy[2]}"
	slow_seconds=$(echo "$(date +%s.%N) - $started" | bc -l)
	check "a destination 20 ms slower per request: state" done "$job_state"
	expected=$(repeat S "$CHUNKS")
	check "a slow destination: dest 0 is the source" "$expected" "$(chunk_map "${healthy[0]}")"
	check "a slow destination: the slow one is the source" "$expected" "$(chunk_map "$slow")"
	check "a slow destination: dest 2 is the source" "$expected" "$(chunk_map "${healthy[2]}")"
	rmdir "$job_dir"
	started=$(date +%s.%N)
	run_job fast "copy from=$work/src.img to=${healthy[1]}"
	fast_seconds=$(echo "$(date +%s.%N) - $started" | bc -l)
	echo "      (the copy with the slow destination took $slow_seconds s, to a fast one alone $fast_seconds s)"
	rmdir "$job_dir"
	peak_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$daemon_pid/status")
	bound_kib=$((PAGES * 4 + 16 * 1024))
	if [ "${KCOPYD_SANITIZED:-0}" = 1 ]; then
		echo "      (peak RSS ${peak_kib} KiB not checked: a sanitized daemon's shadow memory counts in it)"
	elif [ -n "$peak_kib" ] && [ "$peak_kib" -lt "$bound_kib" ]; then
		pass "a slow destination: daemon peak RSS ${peak_kib} KiB < --pages x 4 KiB + 16 MiB"
	else
		fail "a slow destination: daemon peak RSS" "below $bound_kib KiB" "${peak_kib:-?} KiB"
	fi
else
	fail "slow disk comes up" "a loop device" "$(tail -n 5 "$work/nbdfuse.log" | tr '\n' '|')"
fi

# --- a destination that vanishes mid-job --------------------------------------------

if nbd_start vanish --filter=delay memory "$SIZE" delay-write=30ms; then
	vanish=$nbd_loop
	reset_dest 0
	mkdir "$jobs/vanish"
	echo "copy from=$work/src.img to=${healthy[0]} to=$vanish" >"$jobs/vanish/ctl"
	for _ in $(seq 400); do
		done_sectors=$(sed -n 's/^progress: \([0-9]*\)\/.*/\1/p' "$jobs/vanish/status")
		[ "${done_sectors:-0}" -ge $((4 * CHUNK_SECTORS)) ] && break
		sleep 0.01
	done
	nbdkit_pid=$(ps -o pid= --ppid "$nbd_fuse_pid" | head -n 1 | tr -d ' ')
	if [ -n "$nbdkit_pid" ] && kill -KILL "$nbdkit_pid"; then
		pass "a vanishing destination: nbdkit killed at progress ${done_sectors:-?}/$SECTORS"
	else
		fail "a vanishing destination: kill nbdkit" "the child of nbdfuse $nbd_fuse_pid" "${nbdkit_pid:-none}"
	fi
	timeout 60 cat "$jobs/vanish/wait" >"$work/wait.out" 2>&1
	check "a vanishing destination: the job ends" failed "$(sed -n 's/^state: //p' "$work/wait.out")"
	check "a vanishing destination: write_err is bit 1" 0x2 "$(sed -n 's/^write_err: //p' "$work/wait.out")"
	check_match "a vanishing destination: the error line says what failed" \
		"^write error on $(re_quote "$vanish") \(to #1\) sectors [0-9]+\+[0-9]+: E[A-Z]+ " \
		"$(sed -n 's/^error: //p' "$work/wait.out")"
	check_match "a vanishing destination: dest 0 holds source or old data" '^S*F*$' "$(chunk_map "${healthy[0]}")"
	if kill -0 "$daemon_pid" 2>/dev/null && grep -q '^kcopydfs ' "$mnt/version"; then
		pass "a vanishing destination: the daemon is still up"
	else
		fail "a vanishing destination: the daemon" "running and answering" "gone"
	fi
	reset_dest 1
	run_job after "copy from=$work/src.img to=${healthy[1]}"
	check "a vanishing destination: the next job" done "$job_state"
	check "a vanishing destination: the next job's copy" "$(repeat S "$CHUNKS")" "$(chunk_map "${healthy[1]}")"
else
	fail "vanishing disk comes up" "a loop device" "$(tail -n 5 "$work/nbdfuse.log" | tr '\n' '|')"
fi

finish
