#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopydfs.sh: kcopydfs end to end, the way a person at a shell uses it:
# mkdir, echo, cat and rmdir on the mount; the clone pattern; copies and
# zeroes on loop devices (direct I/O, over files on a tmpfs of its own) and
# on plain files, checked with cmp; offsets and byte suffixes; the canonical
# description read back from ctl; every errno a write, a mkdir or a rmdir
# can get, each made the way a user would make it, with the job's error
# line checked and nothing else changed; permissions as nobody; a second
# daemon with --max-jobs 1 and a slow job; a third with -s (one thread).
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-kcopydfs.sh
# Needs root (tmpfs, losetup, FUSE with allow_other, setpriv); exits 77
# (skipped) without it.  The --max-jobs and busy-job checks use nbdkit's
# delay filter through nbdfuse for a slow job, or a long copy without them.
#
# Every check prints PASS or FAIL with what it expected and what it got;
# the last line is "N passed, M failed"; the exit status is 1 on any failure.

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics losetup cmp dd setpriv awk sed timeout mkfs.ext4 truncate stat
getent passwd nobody >/dev/null && getent group nogroup >/dev/null || skip_all "needs the user nobody and the group nogroup"
setup_work 400M

NOBODY=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
SIZE_MIB=8
SECTORS=$((SIZE_MIB * 2048))

if ! start_daemon -o allow_other; then
	fail "kcopydfs mounts" "a kcopydfs mount at $daemon_mount" "$(tr '\n' '|' <"$work/kcopydfs.log")"
	finish
fi
mnt=$daemon_mount
jobs=$mnt/jobs

# --- helpers ------------------------------------------------------------------


# wait_job DIR: `cat DIR/wait` (10 s at most); sets wait_state to its state line's value.
wait_job() {
	timeout 10 cat "$1/wait" >"$work/wait.out" 2>&1
	wait_status=$?
	wait_state=$(sed -n 's/^state: //p' "$work/wait.out")
	[ "$wait_status" = 124 ] && wait_state="(cat wait still blocked after 10 s)"
	[ -n "$wait_state" ] || wait_state="(no state line: $(tr '\n' '|' <"$work/wait.out"))"
}

# run_job NAME DESCRIPTION: mkdir jobs/NAME (unless it is there), echo the
# description, cat wait.  0 if the job ended done; else one FAIL for the
# check named in $check.
run_job() {
	if [ ! -d "$jobs/$1" ] && ! mkdir "$jobs/$1" 2>"$work/mkdir.err"; then
		fail "$check" "mkdir $jobs/$1 to succeed" "$(cat "$work/mkdir.err")"
		return 1
	fi
	write_ctl "$jobs/$1/ctl" "$2"
	if [ "$write_status" != 0 ]; then
		fail "$check" "the description accepted: $2" "$write_said / error: $(status_field "$jobs/$1" error)"
		return 1
	fi
	wait_job "$jobs/$1"
	if [ "$wait_state" != "done" ]; then
		fail "$check" "state done after cat wait" "state $wait_state; $(tr '\n' '|' <"$work/wait.out")"
		return 1
	fi
	return 0
}

# same_bytes CHECK FILE1 OFFSET1 FILE2 OFFSET2 BYTES: cmp a range of two files or devices.
same_bytes() {
	if cmp -n "$6" -i "$3:$5" "$2" "$4" >"$work/cmp.out" 2>&1; then
		return 0
	fi
	fail "$1" "$2 at byte $3 equal to $4 at byte $5 for $6 bytes" "$(cat "$work/cmp.out")"
	return 1
}

# expect_equal CHECK WHAT EXPECTED GOT
expect_equal() {
	[ "$3" = "$4" ] && return 0
	fail "$1" "$2 '$3'" "$2 '$4'"
	return 1
}

# is_zero FILE OFFSET BYTES: are those bytes all zero?
is_zero() {
	cmp -s -n "$3" -i "$2:0" "$1" /dev/zero
}

# expect_reject CHECK JOB ERRNO REASON-ERE DESCRIPTION [USER-PREFIX...]:
# echo DESCRIPTION into the idle job JOB and expect it refused with ERRNO:
# echo says so, the error and rejected lines are "REASON (ERRNO)", and the
# job is untouched: still idle, no progress, nothing in ctl.
expect_reject() {
	local check=$1 job=$2 errno_name=$3 reason=$4 text=$5 message line
	shift 5
	message=$(errno_text "$errno_name")
	write_ctl "$jobs/$job/ctl" "$text" "$@"
	if [ "$write_status" = 0 ]; then
		fail "$check" "the write refused with $errno_name ($message)" \
			"accepted; state $(status_field "$jobs/$job" state)"
		return 1
	fi
	case $write_said in
	*"write error: $message"*) ;;
	*)
		fail "$check" "echo: write error: $message" "$write_said"
		return 1
		;;
	esac
	for line in error rejected; do
		if ! status_field "$jobs/$job" "$line" | grep -Eqx -- "$reason \($errno_name\)"; then
			fail "$check" "$line: /$reason \\($errno_name\\)/" "$line: $(status_field "$jobs/$job" "$line")"
			return 1
		fi
	done
	expect_equal "$check" "state after the refused write:" idle "$(cat "$jobs/$job/state")" || return 1
	expect_equal "$check" "progress after the refused write:" 0/0 "$(status_field "$jobs/$job" progress)" ||
		return 1
	expect_equal "$check" "ctl after the refused write:" "" "$(cat "$jobs/$job/ctl")" || return 1
	pass "$check"
}

# --- data -----------------------------------------------------------------------

dd if=/dev/urandom of="$work/src.img" bs=1M count=$SIZE_MIB status=none
for name in f1 f2 f3 f4 l1 l2 l3 l4 fs nobody-dst; do
	truncate -s ${SIZE_MIB}M "$work/$name.img"
done
truncate -s 16M "$work/l4k.img"
new_loop "$work/src.img" && L_SRC=$loop_device &&
	new_loop "$work/l1.img" && L1=$loop_device &&
	new_loop "$work/l2.img" && L2=$loop_device &&
	new_loop "$work/l3.img" && L3=$loop_device &&
	new_loop "$work/l4.img" && L4=$loop_device &&
	new_loop "$work/l4k.img" --sector-size 4096 && L4K=$loop_device &&
	new_loop "$work/fs.img" && LFS=$loop_device ||
	skip_all "cannot set up loop devices with losetup --direct-io=on"

# --- the tree -------------------------------------------------------------------

check="version says kcopydfs and a version"
got=$(cat "$mnt/version")
[[ $got =~ ^kcopydfs\ [0-9] ]] && pass "$check" || fail "$check" "kcopydfs VERSION" "$got"

check="the top level holds clone, clone-autoremove, jobs, metrics, stats, version"
expect_equal "$check" "ls:" "clone clone-autoremove jobs metrics stats version" "$(ls "$mnt" | tr '\n' ' ' | sed 's/ $//')" && pass "$check"

check="jobs/ is drwxrwxrwt (anyone makes jobs, only the owner removes them)"
expect_equal "$check" "mode" drwxrwxrwt "$(stat -c %A "$jobs")" && pass "$check"

# The suite's I/O engine (KCOPYD_IO_ENGINE, contrib/test.sh --io-engine=E) is the daemon's:
# named, it runs; auto is io_uring where the kernel allows it (as test-kcopy.sh checks).
check="stats says the I/O engine the suite runs with"
want=${KCOPYD_IO_ENGINE:-auto}
if [ "$want" = auto ]; then
	want=io_uring
	if [ "$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo 0)" != 0 ] ||
		grep -q '^Seccomp:[[:space:]]*2' /proc/self/status; then
		want=libaio
	fi
fi
expect_equal "$check" "stats io_engine:" "$want" "$(sed -n 's/^io_engine: //p' "$mnt/stats")" && pass "$check"

check="stats shows the job counters and the limit"
grep -qx "jobs: 0" "$mnt/stats" && grep -qx "jobs_max: 4096" "$mnt/stats" && pass "$check" ||
	fail "$check" "jobs: 0 and jobs_max: 4096" "$(tr '\n' '|' <"$mnt/stats")"

# --- mkdir, echo, cat, rmdir ---------------------------------------------------------

check="mkdir makes an idle job with ctl, state, status, wait"
if mkdir "$jobs/first" 2>"$work/mkdir.err"; then
	expect_equal "$check" "ls:" "ctl state status wait" "$(ls "$jobs/first" | tr '\n' ' ' | sed 's/ $//')" &&
		expect_equal "$check" "state:" idle "$(cat "$jobs/first/state")" &&
		expect_equal "$check" "ctl:" "" "$(cat "$jobs/first/ctl")" &&
		expect_equal "$check" "status keys:" "state progress read_err write_err error bytes_per_sec elapsed owner rejected sectors_data sectors_zero sectors_offloaded checkpoint rate verify" \
			"$(sed 's/:.*//' "$jobs/first/status" | tr '\n' ' ' | sed 's/ $//')" &&
		expect_equal "$check" "status:" "state: idle|progress: 0/0|error: none|owner: 0:0|rejected: none" \
			"$(grep -E '^(state|progress|error|owner|rejected):' "$jobs/first/status" | tr '\n' '|' | sed 's/|$//')" &&
		pass "$check"
else
	fail "$check" "mkdir $jobs/first to succeed" "$(cat "$work/mkdir.err")"
fi

check="echo a copy into ctl, cat wait: done, and the file is copied"
write_ctl "$jobs/first/ctl" "copy from=$work/src.img to=$work/f1.img"
if [ "$write_status" != 0 ]; then
	fail "$check" "echo to succeed" "$write_said"
else
	wait_job "$jobs/first"
	expect_equal "$check" "state after cat wait:" "done" "$wait_state" &&
		expect_equal "$check" "progress:" "$SECTORS/$SECTORS" "$(sed -n 's/^progress: //p' "$work/wait.out")" &&
		same_bytes "$check" "$work/src.img" 0 "$work/f1.img" 0 $((SIZE_MIB << 20)) &&
		pass "$check"
fi

check="ctl reads back the canonical description, every region spelled out"
expect_equal "$check" "ctl:" "copy from=$work/src.img:0+$SECTORS to=$work/f1.img:0+$SECTORS" \
	"$(cat "$jobs/first/ctl")" && pass "$check"

check="state and status agree once done"
expect_equal "$check" "state:" "done" "$(cat "$jobs/first/state")" &&
	expect_equal "$check" "status error line:" none "$(status_field "$jobs/first" error)" && pass "$check"

check="rmdir removes a finished job"
if rmdir "$jobs/first" 2>"$work/rmdir.err"; then
	[ ! -e "$jobs/first" ] && ! find "$jobs" -maxdepth 1 -name first | grep -q . && pass "$check" ||
		fail "$check" "no jobs/first after rmdir" "$(ls "$jobs" | tr '\n' ' ')"
else
	fail "$check" "rmdir to succeed" "$(cat "$work/rmdir.err")"
fi

# With io_uring the buffer slots a copy used stay registered, their pages
# pinned once (the kernel counts them in VmPin); libaio pins per request, so
# nothing stays pinned between jobs.
check="the $want engine's buffers: pinned while registered (io_uring), not otherwise (libaio)"
mkdir "$jobs/buffers"
write_ctl "$jobs/buffers/ctl" "copy from=$work/src.img to=$work/f1.img flags=no_offload"
if [ "$write_status" != 0 ]; then
	fail "$check" "echo to succeed" "$write_said"
else
	wait_job "$jobs/buffers"
	pinned_kb=$(sed -n 's/^VmPin:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$daemon_pid/status")
	if [ "$want" = io_uring ]; then
		# At least one 1 MiB slot; at most the 64 MiB budget and the zero buffer.
		[ "$wait_state" = done ] && [ "${pinned_kb:-0}" -ge 1024 ] && [ "$pinned_kb" -le $((65 * 1024)) ] &&
			pass "$check: $pinned_kb kB pinned" ||
			fail "$check" "done, and 1024 to 66560 kB in VmPin" "$wait_state, ${pinned_kb:-no} kB"
	else
		[ "$wait_state" = done ] && [ "${pinned_kb:-0}" = 0 ] && pass "$check: nothing pinned" ||
			fail "$check" "done, and 0 kB in VmPin" "$wait_state, ${pinned_kb:-no} kB"
	fi
	rmdir "$jobs/buffers"
fi

# --- clone ---------------------------------------------------------------------

check="clone: exec 3<>clone; read -r id <&3; echo copy >&3; exec 3>&-"
id=
exec 3<>"$mnt/clone"
read -r id <&3
{ echo "copy from=$work/src.img:0+1M to=$work/f2.img:1M" >&3; } 2>"$work/write.err"
# shellcheck disable=SC2320 # the status of that echo is the one wanted
write_status=$?
exec 3>&-
if ! [[ $id =~ ^[0-9]+$ ]]; then
	fail "$check" "a job number from clone" "'$id'"
elif [ "$write_status" != 0 ]; then
	fail "$check" "echo >&3 to succeed" "$(cat "$work/write.err")"
else
	wait_job "$jobs/$id"
	expect_equal "$check" "state of jobs/$id:" "done" "$wait_state" &&
		expect_equal "$check" "ctl of jobs/$id:" "copy from=$work/src.img:0+2048 to=$work/f2.img:2048+2048" \
			"$(cat "$jobs/$id/ctl")" &&
		same_bytes "$check" "$work/src.img" 0 "$work/f2.img" $((1 << 20)) $((1 << 20)) &&
		pass "$check"
fi


check="closing a clone fd without a write removes its job"
exec 3<>"$mnt/clone"
read -r id <&3
present=no
[ -d "$jobs/$id" ] && present=yes
exec 3>&-
gone=no
for _ in $(seq 20); do
	[ -e "$jobs/$id" ] || { gone=yes; break; }
	sleep 0.05
done
expect_equal "$check" "jobs/$id there while the fd was open:" yes "$present" &&
	expect_equal "$check" "jobs/$id gone after close:" yes "$gone" && pass "$check"

check="a clone fd whose write was refused keeps its job, to show why"
exec 3<>"$mnt/clone"
read -r id <&3
{ echo "copy from=relative.img to=$work/f2.img" >&3; } 2>/dev/null
exec 3>&-
sleep 0.2
if [ -d "$jobs/$id" ]; then
	expect_equal "$check" "error:" 'from="relative.img": relative path (EINVAL)' "$(status_field "$jobs/$id" error)" &&
		pass "$check"
	rmdir "$jobs/$id"
else
	fail "$check" "jobs/$id still there" "it is gone"
fi

check="a clone skips a number that a mkdir took as a name"
exec 3<>"$mnt/clone"
read -r id <&3
exec 3>&-
# The mkdir takes the next id and names it what would be the clone's after.
taken=$((id + 2))
mkdir "$jobs/$taken"
exec 3<>"$mnt/clone"
read -r id2 <&3
if [ "$id2" = "$taken" ] || ! [[ $id2 =~ ^[0-9]+$ ]]; then
	fail "$check" "a clone job number other than $taken (taken by mkdir)" "$id2"
elif [ ! -d "$jobs/$id2" ] || [ ! -d "$jobs/$taken" ]; then
	fail "$check" "both jobs/$id2 and jobs/$taken" "$(ls "$jobs" | tr '\n' ' ')"
else
	pass "$check"
fi
exec 3>&-
rmdir "$jobs/$taken"

# --- clone-autoremove ---------------------------------------------------------------

# gone_soon PATH: is PATH gone within a second?  (A release reaches the daemon after close(2) returns.)
gone_soon() {
	for _ in $(seq 20); do
		[ -e "$1" ] || return 0
		sleep 0.05
	done
	return 1
}

check="clone-autoremove: wait gives the status; closing the descriptor then removes the finished job"
exec 3<>"$mnt/clone-autoremove"
read -r id <&3
{ echo "copy from=$work/src.img:0+8 to=$work/f2.img:0" >&3; } 2>"$work/write.err"
# shellcheck disable=SC2320 # the status of that echo is the one wanted
write_status=$?
if [ "$write_status" = 0 ] && [[ $id =~ ^[0-9]+$ ]]; then
	wait_job "$jobs/$id"
	exec 3>&-
	if expect_equal "$check" "state of jobs/$id:" "done" "$wait_state"; then
		gone_soon "$jobs/$id" && pass "$check" || fail "$check" "jobs/$id gone after close" "still there"
	fi
else
	exec 3>&-
	fail "$check" "a job number and the description accepted" "id '$id': $(cat "$work/write.err")"
fi

check="clone-autoremove: a job whose write was refused goes too (unlike clone)"
exec 3<>"$mnt/clone-autoremove"
read -r id <&3
{ echo "copy from=relative.img to=$work/f2.img" >&3; } 2>/dev/null
present=no
[ -d "$jobs/$id" ] && present=yes
exec 3>&-
expect_equal "$check" "jobs/$id there while the fd was open:" yes "$present" &&
	if gone_soon "$jobs/$id"; then pass "$check"; else fail "$check" "jobs/$id gone after close" "still there"; fi

check="clone-autoremove reads like clone; mkdir and rmdir on the mount still work beside it"
exec 3<"$mnt/clone-autoremove"
read -r id <&3
exec 3<&-
mkdir "$jobs/beside" && rmdir "$jobs/beside" && [[ $id =~ ^[0-9]+$ ]] && gone_soon "$jobs/$id" && pass "$check" ||
	fail "$check" "a number, and mkdir + rmdir of jobs/beside" "id '$id'; $(ls "$jobs" | tr '\n' ' ')"

# --- copies on loop devices and files --------------------------------------------

check="copy a loop device to one loop device"
run_job loop1 "copy from=$L_SRC to=$L1" &&
	same_bytes "$check" "$L_SRC" 0 "$L1" 0 $((SIZE_MIB << 20)) && pass "$check"

check="copy a loop device to three loop devices"
if run_job loop3 "copy from=$L_SRC:0+4M to=$L2 to=$L3:4M to=$L4:1M"; then
	same_bytes "$check" "$L_SRC" 0 "$L2" 0 $((4 << 20)) &&
		same_bytes "$check" "$L_SRC" 0 "$L3" $((4 << 20)) $((4 << 20)) &&
		same_bytes "$check" "$L_SRC" 0 "$L4" $((1 << 20)) $((4 << 20)) &&
		expect_equal "$check" "ctl:" "copy from=$L_SRC:0+8192 to=$L2:0+8192 to=$L3:8192+8192 to=$L4:2048+8192" \
			"$(cat "$jobs/loop3/ctl")" &&
		pass "$check"
fi

check="copy a file to three files"
run_job files3 "copy from=$work/src.img to=$work/f1.img to=$work/f3.img to=$work/f4.img" &&
	same_bytes "$check" "$work/src.img" 0 "$work/f1.img" 0 $((SIZE_MIB << 20)) &&
	same_bytes "$check" "$work/src.img" 0 "$work/f3.img" 0 $((SIZE_MIB << 20)) &&
	same_bytes "$check" "$work/src.img" 0 "$work/f4.img" 0 $((SIZE_MIB << 20)) && pass "$check"

check="copy a file to a loop device and a file at once"
run_job mixed "copy from=$work/src.img:3M+1M to=$L1:7M to=$work/f1.img:0" &&
	same_bytes "$check" "$work/src.img" $((3 << 20)) "$L1" $((7 << 20)) $((1 << 20)) &&
	same_bytes "$check" "$work/src.img" $((3 << 20)) "$work/f1.img" 0 $((1 << 20)) && pass "$check"

check="copy to 32 destinations (the most there may be)"
description="copy from=$work/src.img:0+8"
for index in $(seq 0 31); do
	description="$description to=$work/f2.img:$((4096 + index * 16))+8"
done
if run_job dests32 "$description"; then
	bad=
	for index in 0 17 31; do
		cmp -s -n 4096 -i "0:$(((4096 + index * 16) * 512))" "$work/src.img" "$work/f2.img" || bad="$bad #$index"
	done
	expect_equal "$check" "destinations that differ from the source:" "" "$bad" && pass "$check"
fi

# --- zero ------------------------------------------------------------------------

check="zero a range of a file, leaving its neighbours"
cp "$work/src.img" "$work/f3.img"
if run_job zero1 "zero to=$work/f3.img:8+4K"; then
	if ! is_zero "$work/f3.img" 4096 4096; then
		fail "$check" "bytes 4096..8191 zero" "$(cmp -n 4096 -i 4096:0 "$work/f3.img" /dev/zero 2>&1)"
	else
		same_bytes "$check" "$work/src.img" 0 "$work/f3.img" 0 4096 &&
			same_bytes "$check" "$work/src.img" 8192 "$work/f3.img" 8192 $(((SIZE_MIB << 20) - 8192)) &&
			expect_equal "$check" "ctl:" "zero to=$work/f3.img:8+8" "$(cat "$jobs/zero1/ctl")" && pass "$check"
	fi
fi

check="zero two whole loop devices"
if run_job zero2 "zero to=$L2 to=$L3"; then
	is_zero "$L2" 0 $((SIZE_MIB << 20)) && is_zero "$L3" 0 $((SIZE_MIB << 20)) && pass "$check" ||
		fail "$check" "$L2 and $L3 all zero" "$(cmp "$L2" /dev/zero 2>&1; cmp "$L3" /dev/zero 2>&1)"
fi

# --- offsets and suffixes ----------------------------------------------------------

check="byte suffixes: from=SRC:1M+64K to=DST:2M is sectors 2048+128 to 4096+128"
if run_job suffix "copy from=$work/src.img:1M+64K to=$work/f4.img:2M"; then
	expect_equal "$check" "ctl:" "copy from=$work/src.img:2048+128 to=$work/f4.img:4096+128" "$(cat "$jobs/suffix/ctl")" &&
		same_bytes "$check" "$work/src.img" $((1 << 20)) "$work/f4.img" $((2 << 20)) 65536 && pass "$check"
fi

check="sector numbers and lower-case suffixes: from=SRC:100+28 to=DST:1k"
if run_job sectors "copy from=$L_SRC:100+28 to=$L4:1k flags=write_seq,ignore_error"; then
	expect_equal "$check" "ctl:" "copy from=$L_SRC:100+28 to=$L4:2+28 flags=ignore_error,write_seq" \
		"$(cat "$jobs/sectors/ctl")" &&
		same_bytes "$check" "$L_SRC" $((100 * 512)) "$L4" 1024 $((28 * 512)) && pass "$check"
fi

check="a B suffix counts bytes: from=SRC:1024B+4096B to=DST:512b is sectors 2+8 to 1+8"
if run_job bytes "copy from=$work/src.img:1024B+4096B to=$work/f4.img:512b"; then
	expect_equal "$check" "ctl:" "copy from=$work/src.img:2+8 to=$work/f4.img:1+8" "$(cat "$jobs/bytes/ctl")" &&
		same_bytes "$check" "$work/src.img" 1024 "$work/f4.img" 512 4096 && pass "$check"
fi

check="a 4K-sector loop device takes 4K-aligned regions"
run_job aligned4k "copy from=$L_SRC:8+4K to=$L4K:4K" &&
	same_bytes "$check" "$L_SRC" 4096 "$L4K" 4096 4096 && pass "$check"

# --- refused writes: every errno --------------------------------------------------------

# Two bystanders whose status must not move while others are refused.
run_job bystander-done "copy from=$work/src.img:0+8 to=$work/f4.img:0+8"
mkdir "$jobs/bystander-idle"
bystander_before=$(cat "$jobs/bystander-done/status")

mkdir "$jobs/bad"
expect_reject "EINVAL: a line that does not parse" bad EINVAL "'from': expected KEY=VALUE" "copy from"
expect_reject "EINVAL: an unknown operation" bad EINVAL "unknown operation 'move' \(expected copy or zero\)" \
	"move from=$work/src.img to=$work/f1.img"
expect_reject "EINVAL: an unknown word" bad EINVAL "unknown key 'speed' \(known: from, to, flags, hash, rate\)" \
	"copy from=$work/src.img to=$work/f1.img speed=fast"
expect_reject "EINVAL: an unknown flag" bad EINVAL "unknown flag 'bogus' \(known: ignore_error, write_seq, dest_zero, allocated, no_offload, verify\)" \
	"copy from=$work/src.img to=$work/f1.img flags=write_seq,bogus"
expect_reject "EINVAL: a relative path" bad EINVAL 'from="src\.img": relative path' "copy from=src.img to=$work/f1.img"
expect_reject "EINVAL: no destination" bad EINVAL "no destination: give at least one to=REGION" \
	"copy from=$work/src.img"
expect_reject "EINVAL: misaligned destination on a 4096-byte-sector loop device" bad EINVAL \
	"destination 0 sectors 1\+8 are not aligned to its block size of 4096 bytes" "copy from=$L_SRC:0+8 to=$L4K:1"
expect_reject "EINVAL: misaligned length on a 4096-byte-sector loop device" bad EINVAL \
	"destination 0 sectors 0\+7 are not aligned to its block size of 4096 bytes" "copy from=$L_SRC:0+7 to=$L4K:0"
expect_reject "EINVAL: misaligned source on a 4096-byte-sector loop device" bad EINVAL \
	"source sectors 4\+8 are not aligned to its block size of 4096 bytes" "copy from=$L4K:4+8 to=$L1"
expect_reject "EINVAL: a destination overlapping the source" bad EINVAL "destination 0 overlaps the source" \
	"copy from=$work/src.img:0+16 to=$work/src.img:8"
expect_reject "EINVAL: two overlapping destinations" bad EINVAL "destination 1 overlaps destination 0" \
	"copy from=$work/src.img:0+16 to=$work/f1.img:0 to=$work/f1.img:15"
expect_reject "EINVAL: counts that differ" bad EINVAL "destination 0 has 4 sectors, the source has 8" \
	"copy from=$work/src.img:0+8 to=$work/f1.img:0+4"
description="copy from=$work/src.img:0+8"
for index in $(seq 0 32); do
	description="$description to=$work/f1.img:$((index * 8))"
done
expect_reject "EINVAL: 33 destinations" bad EINVAL "too many destinations: at most 32 to=" "$description"
expect_reject "EINVAL: a directory as a region" bad EINVAL "from=$(re_quote "$work"): neither a block device nor a regular file" \
	"copy from=$work to=$work/f1.img"

expect_reject "ERANGE: a source past the end" bad ERANGE \
	"source sectors $((SECTORS - 1))\+2 run past the end of its device \($SECTORS sectors\)" \
	"copy from=$work/src.img:$((SECTORS - 1))+2 to=$work/f1.img"
expect_reject "ERANGE: a destination past the end" bad ERANGE \
	"destination 0 sectors $((SECTORS - 4))\+8 run past the end of its device \($SECTORS sectors\)" \
	"copy from=$L_SRC:0+8 to=$L1:$((SECTORS - 4))"
expect_reject "ERANGE: a sector number over 64 bits" bad ERANGE \
	'from="[^"]*": sector 99999999999999999999 does not fit in 64 bits' \
	"copy from=$work/src.img:99999999999999999999 to=$work/f1.img"

expect_reject "EINVAL: a byte count that is not whole sectors" bad EINVAL \
	'from="[^"]*": sector 100B .*' "copy from=$work/src.img:100B+4096B to=$work/f1.img"

expect_reject "ENOENT: no such source" bad ENOENT "from=$(re_quote "$work/missing.img"): No such file or directory" \
	"copy from=$work/missing.img to=$work/f1.img"
expect_reject "ENOENT: no such destination" bad ENOENT "to=$(re_quote "$work/no/such.img"): No such file or directory" \
	"zero to=$work/no/such.img"

expect_reject "EDEADLK: a source on the kcopydfs mount" bad EDEADLK \
	"from=$(re_quote "$mnt/version"): is on the kcopydfs mount itself" "copy from=$mnt/version to=$work/f1.img"
expect_reject "EDEADLK: a destination on the kcopydfs mount" bad EDEADLK \
	"to=$(re_quote "$jobs/bad/ctl"): is on the kcopydfs mount itself" "copy from=$work/src.img:0+8 to=$jobs/bad/ctl"

ln -s "$mnt" "$work/into-mount"
expect_reject "EDEADLK: a region reached through a symlink into the mount" bad EDEADLK \
	"from=$(re_quote "$work/into-mount/version"): is on the kcopydfs mount itself" \
	"copy from=$work/into-mount/version to=$work/f1.img"

# Known bug (reported to the lead): with -s (one thread) the daemon's own
# open of such a path waits for an answer only that thread could give: the
# daemon hangs for good, the writer with it, and SIGTERM cannot end it.
check="kcopydfs -s: a region through a symlink into the mount is refused (EDEADLK), not a hang"
if start_daemon -s; then
	single_mnt=$daemon_mount
	single_pid=$daemon_pid
	ln -s "$single_mnt" "$work/into-single"
	mkdir "$single_mnt/jobs/loop"
	# The writer cannot be killed while the daemon hangs (not even by
	# SIGKILL): watch it from here, and end the daemon if it is stuck.
	bash -c 'echo "$1" >"$2"' _ "copy from=$work/into-single/version to=$work/f1.img" \
		"$single_mnt/jobs/loop/ctl" 2>"$work/write.err" &
	writer=$!
	for _ in $(seq 50); do
		kill -0 "$writer" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$writer" 2>/dev/null; then
		fail "$check" "echo refused with $(errno_text EDEADLK) at once" "echo still blocked after 5 s; the daemon hangs"
		kill -KILL "$single_pid"
		wait "$single_pid" "$writer" 2>/dev/null
		fusermount3 -u -z "$single_mnt"
	else
		wait "$writer"
		write_status=$?
		if grep -q "$(errno_text EDEADLK)" "$work/write.err"; then
			pass "$check"
		else
			fail "$check" "echo: write error: $(errno_text EDEADLK)" "status $write_status: $(cat "$work/write.err")"
		fi
	fi
else
	fail "$check" "kcopydfs -s to mount" "$(tail -2 "$work/kcopydfs.log" | tr '\n' '|')"
fi

mkfs.ext4 -q -F "$LFS" >/dev/null 2>&1 && mkdir "$work/fs-mount" && mount "$LFS" "$work/fs-mount"
if is_mounted "$work/fs-mount"; then
	expect_reject "EBUSY: a mounted block device as a destination" bad EBUSY \
		"to=$(re_quote "$LFS"): Device or resource busy \(mounted, or held exclusively\)" "copy from=$L_SRC:0+8 to=$LFS:0+8"
	umount "$work/fs-mount"
else
	fail "EBUSY: a mounted block device as a destination" "mkfs.ext4 and mount of $LFS" "not mounted"
fi

# A job holds a claim on a destination block device (an O_EXCL open) while
# it runs; mkfs.ext4 opens the device exclusively, so it tells whether the
# claim is still held.
check="a finished job let go of its destination devices"
if mkfs.ext4 -q -F "$L2" >"$work/mkfs.out" 2>&1; then
	pass "$check"
else
	fail "$check" "mkfs.ext4 on $L2 (written by jobs loop3 and zero2) succeeds" "$(tr '\n' ' ' <"$work/mkfs.out")"
fi
check="a refused job let go of its destination device"
if mkfs.ext4 -q -F "$L1" >"$work/mkfs.out" 2>&1; then
	pass "$check"
else
	fail "$check" "mkfs.ext4 on $L1 (opened by the refused ERANGE job) succeeds" "$(tr '\n' ' ' <"$work/mkfs.out")"
fi

# E2BIG: the line limit is 4096 bytes without the newline.  pad_line N: a
# valid description N bytes long (a path padded with /.), for this job.
pad_line() {
	local path=$work line
	while :; do
		line="copy from=$path/src.img:0+8 to=$work/f1.img:64+8"
		[ ${#line} -ge "$1" ] && break
		path="$path/."
	done
	if [ ${#line} -gt "$1" ]; then
		path=${path%/.}
		line="copy from=$path/src.img:0+8 to=$work/f1.img:64+8"
		while [ ${#line} -lt "$1" ]; do line="$line "; done
	fi
	printf '%s' "$line"
}

check="E2BIG: one write(2) of a 4097-byte line"
line=$(pad_line 4097)
printf '%s\n' "$line" | dd of="$jobs/bad/ctl" bs=64k iflag=fullblock count=1 2>"$work/write.err"
write_status=$?
if [ "$write_status" = 0 ]; then
	fail "$check" "dd to fail with $(errno_text E2BIG)" "it succeeded; state $(cat "$jobs/bad/state")"
elif ! grep -q "$(errno_text E2BIG)" "$work/write.err"; then
	fail "$check" "dd: error writing: $(errno_text E2BIG)" "$(tr '\n' ' ' <"$work/write.err")"
else
	expect_equal "$check" "error:" "the line is 4097 bytes, at most 4096 (E2BIG)" "$(status_field "$jobs/bad" error)" &&
		expect_equal "$check" "state:" idle "$(cat "$jobs/bad/state")" && pass "$check"
fi

# stdio (and with it bash's echo and printf) writes a line in pieces of its
# buffer's size; ctl joins them into the line (a line protocol), so an
# over-long line whose first 4096 bytes parse must not start a job on the
# wrong region (here sector 1 for 12345).  Here echo writes the line at
# once; tests/test-kcopydfs-ctl-lines.sh cuts lines with 4096-byte buffers.
check="E2BIG: echo of a 4100-byte line: refused whole, not cut into a job on another sector"
# "... to=f1.img:12345" padded to 4100 bytes: its first 4096 end in "to=f1.img:1".
line="copy from=$work/src.img:0+8 to=$work/f1.img:12345"
pad=$((4100 - ${#line}))
path=$work
for ((index = 0; index < pad / 2; index++)); do path="$path/."; done
[ $((pad % 2)) = 1 ] && path="$path/"
line="copy from=$path/src.img:0+8 to=$work/f1.img:12345"
mkdir "$jobs/cut"
write_ctl "$jobs/cut/ctl" "$line"
if [ "$write_status" = 0 ]; then
	fail "$check" "echo to fail with $(errno_text E2BIG)" "it succeeded"
elif [ "$(cat "$jobs/cut/state")" != idle ]; then
	fail "$check" "no job started (state idle)" \
		"state $(cat "$jobs/cut/state"), started as: $(sed "s|$path|...|" "$jobs/cut/ctl"); echo said: $write_said"
else
	expect_equal "$check" "echo said:" "write error: $(errno_text E2BIG)" "$(grep -o 'write error: .*' "$work/write.err")" &&
		expect_equal "$check" "error:" "the line is 4100 bytes, at most 4096 (E2BIG)" "$(status_field "$jobs/cut" error)" &&
		pass "$check"
fi

check="a 4096-byte line (the most there may be) through echo starts the job, and echo succeeds"
mkdir "$jobs/longest"
write_ctl "$jobs/longest/ctl" "$(pad_line 4096)"
wait_job "$jobs/longest"
expect_equal "$check" "echo exit status:" "0 " "$write_status $write_said" &&
	expect_equal "$check" "state:" "done" "$wait_state" &&
	expect_equal "$check" "rejected:" none "$(status_field "$jobs/longest" rejected)" && pass "$check"

check="EBUSY: a description written to a started job"
write_ctl "$jobs/loop1/ctl" "copy from=$work/src.img to=$work/f1.img"
if [ "$write_status" = 0 ]; then
	fail "$check" "echo to fail with $(errno_text EBUSY)" "it succeeded"
else
	expect_equal "$check" "echo said:" "write error: $(errno_text EBUSY)" "$(grep -o 'write error: .*' "$work/write.err")" &&
		expect_equal "$check" "rejected:" "job loop1 has already ended (done) (EBUSY)" "$(status_field "$jobs/loop1" rejected)" &&
		expect_equal "$check" "state (unchanged):" "done" "$(cat "$jobs/loop1/state")" &&
		expect_equal "$check" "error (unchanged):" none "$(status_field "$jobs/loop1" error)" &&
		expect_equal "$check" "ctl (unchanged):" "copy from=$L_SRC:0+$SECTORS to=$L1:0+$SECTORS" "$(cat "$jobs/loop1/ctl")" &&
		pass "$check"
fi

check="EINVAL: bad job names on mkdir, and nothing made"
before=$(ls "$jobs" | tr '\n' ' ')
bad=
for name in "bad name" ".hidden" "..." $'tab\tname' "jöb" "semi;colon"; do
	if mkdir "$jobs/$name" 2>"$work/mkdir.err"; then
		bad="$bad '$name' was accepted;"
	elif ! grep -q "$(errno_text EINVAL)" "$work/mkdir.err"; then
		bad="$bad '$name': $(cat "$work/mkdir.err");"
	fi
done
expect_equal "$check" "names not refused with EINVAL:" "" "$bad" &&
	expect_equal "$check" "ls jobs:" "$before" "$(ls "$jobs" | tr '\n' ' ')" && pass "$check"

check="ENAMETOOLONG: a 65-character job name, and nothing made"
if mkdir "$jobs/$(printf 'x%.0s' $(seq 65))" 2>"$work/mkdir.err"; then
	fail "$check" "mkdir to fail with $(errno_text ENAMETOOLONG)" "it succeeded"
else
	grep -q "$(errno_text ENAMETOOLONG)" "$work/mkdir.err" && pass "$check" ||
		fail "$check" "$(errno_text ENAMETOOLONG)" "$(cat "$work/mkdir.err")"
fi

check="a 64-character name and dots, dashes, underscores inside are good names"
name="a$(printf 'b%.0s' $(seq 59))-_.z"
if mkdir "$jobs/$name" 2>"$work/mkdir.err" && mkdir "$jobs/v1.2_x-y" 2>>"$work/mkdir.err"; then
	pass "$check"
	rmdir "$jobs/$name" "$jobs/v1.2_x-y"
else
	fail "$check" "mkdir to succeed" "$(cat "$work/mkdir.err")"
fi

check="EEXIST: mkdir of an existing job name"
if mkdir "$jobs/bad" 2>"$work/mkdir.err"; then
	fail "$check" "mkdir to fail with $(errno_text EEXIST)" "it succeeded"
else
	grep -q "$(errno_text EEXIST)" "$work/mkdir.err" && pass "$check" ||
		fail "$check" "mkdir: $(errno_text EEXIST)" "$(cat "$work/mkdir.err")"
fi

check="ENOENT: rmdir of no such job"
if rmdir "$jobs/never-was" 2>"$work/rmdir.err"; then
	fail "$check" "rmdir to fail" "it succeeded"
else
	grep -q "$(errno_text ENOENT)" "$work/rmdir.err" && pass "$check" ||
		fail "$check" "rmdir: $(errno_text ENOENT)" "$(cat "$work/rmdir.err")"
fi

check="after all those refusals the job still starts, and its lines are cleared"
if run_job bad "copy from=$work/src.img:0+64 to=$work/f1.img:128"; then
	expect_equal "$check" "error:" none "$(status_field "$jobs/bad" error)" &&
		expect_equal "$check" "rejected:" none "$(status_field "$jobs/bad" rejected)" &&
		same_bytes "$check" "$work/src.img" 0 "$work/f1.img" 65536 32768 && pass "$check"
fi

check="refused writes changed no other job"
expect_equal "$check" "the done bystander's status:" "$bystander_before" "$(cat "$jobs/bystander-done/status")" &&
	expect_equal "$check" "the idle bystander:" "idle none none" \
		"$(cat "$jobs/bystander-idle/state") $(status_field "$jobs/bystander-idle" error) $(status_field "$jobs/bystander-idle" rejected)" &&
	expect_equal "$check" "stats jobs_active:" 0 "$(sed -n 's/^jobs_active: //p' "$mnt/stats")" && pass "$check"

check="cancel an idle job: cancelled, and wait answers at once"
mkdir "$jobs/idle-cancel"
write_ctl "$jobs/idle-cancel/ctl" cancel
wait_job "$jobs/idle-cancel"
expect_equal "$check" "echo cancel:" 0 "$write_status" && expect_equal "$check" "state:" cancelled "$wait_state" &&
	pass "$check"

check="cancel a finished job: no error, it stays done"
write_ctl "$jobs/loop1/ctl" cancel
expect_equal "$check" "echo cancel:" "0 " "$write_status $write_said" &&
	expect_equal "$check" "state:" "done" "$(cat "$jobs/loop1/state")" && pass "$check"

# --- permissions: nobody ----------------------------------------------------------------

dd if=/dev/urandom of="$work/nobody-src.img" bs=1M count=1 status=none
dd if=/dev/urandom of="$work/root-only.img" bs=1M count=1 status=none
chmod 0600 "$work/root-only.img"
chown nobody:nogroup "$work/nobody-src.img" "$work/nobody-dst.img"
cp "$work/src.img" "$work/root-dst.img"
chmod 0644 "$work/root-dst.img"

check="nobody makes a job with mkdir: it is nobody's"
if "${NOBODY[@]}" mkdir "$jobs/nobodys" 2>"$work/mkdir.err"; then
	expect_equal "$check" "owner:" "nobody:nogroup" "$(stat -c %U:%G "$jobs/nobodys")" &&
		expect_equal "$check" "status owner line:" "$(id -u nobody):$(getent group nogroup | cut -d: -f3)" \
			"$("${NOBODY[@]}" sed -n 's/^owner: //p' "$jobs/nobodys/status")" && pass "$check"
else
	fail "$check" "mkdir as nobody to succeed" "$(cat "$work/mkdir.err")"
fi

expect_reject "EACCES: nobody copies from a root-only (0600) file" nobodys EACCES \
	"from=$(re_quote "$work/root-only.img"): Permission denied" \
	"copy from=$work/root-only.img to=$work/nobody-dst.img:0" "${NOBODY[@]}"
expect_reject "EACCES: nobody copies onto a root-owned 0644 file" nobodys EACCES \
	"to=$(re_quote "$work/root-dst.img"): Permission denied" \
	"copy from=$work/nobody-src.img to=$work/root-dst.img:0" "${NOBODY[@]}"
expect_reject "EACCES: nobody copies from a loop device (root's)" nobodys EACCES \
	"from=$(re_quote "$L_SRC"): Permission denied" \
	"copy from=$L_SRC:0+8 to=$work/nobody-dst.img:0" "${NOBODY[@]}"

if getent group disk >/dev/null; then
	check="the writer's supplementary groups count: nobody in group disk reads a root:disk 0640 file"
	cp "$work/root-only.img" "$work/group-disk.img"
	chgrp disk "$work/group-disk.img" && chmod 0640 "$work/group-disk.img"
	"${NOBODY[@]}" mkdir "$jobs/grouped"
	write_ctl "$jobs/grouped/ctl" "copy from=$work/group-disk.img:0+8 to=$work/nobody-dst.img:4M" \
		setpriv --reuid=nobody --regid=nogroup --groups=disk
	if [ "$write_status" != 0 ]; then
		fail "$check" "echo as nobody with group disk to succeed" "$write_said; error: $(status_field "$jobs/grouped" error)"
	else
		"${NOBODY[@]}" timeout 10 cat "$jobs/grouped/wait" >"$work/wait.out" 2>&1
		expect_equal "$check" "state:" "done" "$(sed -n 's/^state: //p' "$work/wait.out")" && pass "$check"
	fi
	expect_reject "EACCES: the same file for nobody without the group" nobodys EACCES \
		"from=$(re_quote "$work/group-disk.img"): Permission denied" \
		"copy from=$work/group-disk.img:0+8 to=$work/nobody-dst.img:4M" "${NOBODY[@]}"
else
	echo "SKIP: supplementary groups (no group disk)"
fi

check="nobody's job on files nobody owns works"
write_ctl "$jobs/nobodys/ctl" "copy from=$work/nobody-src.img to=$work/nobody-dst.img:2M" "${NOBODY[@]}"
if [ "$write_status" != 0 ]; then
	fail "$check" "echo as nobody to succeed" "$write_said; error: $(status_field "$jobs/nobodys" error)"
else
	"${NOBODY[@]}" timeout 10 cat "$jobs/nobodys/wait" >"$work/wait.out" 2>&1
	expect_equal "$check" "state:" "done" "$(sed -n 's/^state: //p' "$work/wait.out")" &&
		same_bytes "$check" "$work/nobody-src.img" 0 "$work/nobody-dst.img" $((2 << 20)) $((1 << 20)) &&
		pass "$check"
fi

check="nobody's clone job is nobody's and works"
"${NOBODY[@]}" bash -c 'exec 3<>"$1/clone"; read -r id <&3; echo "copy from=$2:0+8 to=$3:8" >&3 && echo "$id"; exec 3>&-' \
	_ "$mnt" "$work/nobody-src.img" "$work/nobody-dst.img" >"$work/clone.out" 2>&1
id=$(cat "$work/clone.out")
if [[ $id =~ ^[0-9]+$ ]]; then
	expect_equal "$check" "owner:" nobody "$(stat -c %U "$jobs/$id")" &&
		expect_equal "$check" "state:" "done" "$("${NOBODY[@]}" timeout 10 cat "$jobs/$id/wait" | sed -n 's/^state: //p')" &&
		pass "$check"
else
	fail "$check" "a job id from the clone as nobody" "$(tr '\n' ' ' <"$work/clone.out")"
fi

check="EACCES: nobody reads root's job status"
if "${NOBODY[@]}" cat "$jobs/bystander-idle/status" >/dev/null 2>"$work/cat.err"; then
	fail "$check" "cat to fail with $(errno_text EACCES)" "it read it"
else
	grep -q "$(errno_text EACCES)" "$work/cat.err" && pass "$check" ||
		fail "$check" "cat: $(errno_text EACCES)" "$(cat "$work/cat.err")"
fi

check="EACCES: nobody writes cancel to root's ctl, and the job stays idle"
write_ctl "$jobs/bystander-idle/ctl" cancel "${NOBODY[@]}"
if [ "$write_status" = 0 ]; then
	fail "$check" "echo to fail with $(errno_text EACCES)" "it succeeded; state $(cat "$jobs/bystander-idle/state")"
else
	case $write_said in
	*"$(errno_text EACCES)"*)
		expect_equal "$check" "state:" idle "$(cat "$jobs/bystander-idle/state")" && pass "$check"
		;;
	*) fail "$check" "echo: $(errno_text EACCES)" "$write_said" ;;
	esac
fi

check="EACCES: nobody cannot list inside root's job"
"${NOBODY[@]}" ls "$jobs/bystander-idle" >/dev/null 2>"$work/ls.err" && fail "$check" "ls to fail" "it listed it" ||
	{ grep -q "$(errno_text EACCES)" "$work/ls.err" && pass "$check" || fail "$check" "ls: $(errno_text EACCES)" "$(cat "$work/ls.err")"; }

check="EPERM: nobody cannot rmdir root's job (jobs/ is sticky)"
if "${NOBODY[@]}" rmdir "$jobs/bystander-idle" 2>"$work/rmdir.err"; then
	fail "$check" "rmdir to fail with $(errno_text EPERM)" "it removed it"
else
	grep -Eq "$(errno_text EPERM)|$(errno_text EACCES)" "$work/rmdir.err" && [ -d "$jobs/bystander-idle" ] &&
		pass "$check" || fail "$check" "rmdir: $(errno_text EPERM), the job still there" "$(cat "$work/rmdir.err")"
fi

check="nobody removes its own job"
"${NOBODY[@]}" rmdir "$jobs/nobodys" 2>"$work/rmdir.err" && [ ! -e "$jobs/nobodys" ] && pass "$check" ||
	fail "$check" "rmdir as nobody to succeed" "$(cat "$work/rmdir.err")"

# --- a busy daemon: --max-jobs 1 and a slow job --------------------------------------------

# The slow job's destination: 128 MiB, sparse until written; it is cancelled early.
truncate -s 128M "$work/big.img"
if slow_source 128M; then
	slow_how="a 128 MiB source read at 50 ms a request (nbdkit delay)"
	slow_desc="copy from=$slow_file to=$work/big.img"
	slow_options=()
else
	# No nbdkit: a long loop-to-loop copy, 4 KiB at a time, one at a time.
	truncate -s 128M "$work/big-src.img"
	new_loop "$work/big-src.img" && slow_source_loop=$loop_device &&
		new_loop "$work/big.img" && slow_dest_loop=$loop_device
	slow_how="a copy 4 KiB at a time (no nbdkit/nbdfuse)"
	slow_desc="copy from=$slow_source_loop to=$slow_dest_loop"
	slow_options=(--depth 1 --subjob-kb 4)
fi
if start_daemon --max-jobs 1 "${slow_options[@]}"; then
	busy_mnt=$daemon_mount
	saved_jobs=$jobs
	jobs=$busy_mnt/jobs
	mkdir "$jobs/slow" "$jobs/second"
	write_ctl "$jobs/slow/ctl" "$slow_desc"
	slow_state=$(cat "$jobs/slow/state")
	case $slow_state in
	queued | running)
		expect_reject "EAGAIN: a second job over --max-jobs 1" second EAGAIN \
			"1 jobs are queued or running, the limit \(--max-jobs\)" "copy from=$work/src.img:0+8 to=$work/f2.img:0"

		check="EBUSY: rmdir of a running job"
		if rmdir "$jobs/slow" 2>"$work/rmdir.err"; then
			fail "$check" "rmdir to fail with $(errno_text EBUSY)" "it removed it"
		else
			grep -q "$(errno_text EBUSY)" "$work/rmdir.err" && [ -d "$jobs/slow" ] && pass "$check" ||
				fail "$check" "rmdir: $(errno_text EBUSY), the job still there" "$(cat "$work/rmdir.err")"
		fi

		check="cancel a running job: cancelled, progress kept"
		sleep 0.3
		write_ctl "$jobs/slow/ctl" cancel
		wait_job "$jobs/slow"
		progress=$(sed -n 's/^progress: //p' "$work/wait.out")
		expect_equal "$check" "state:" cancelled "$wait_state" &&
			expect_equal "$check" "error:" "none (cancelled)" "$(sed -n 's/^error: //p' "$work/wait.out")" &&
			if [ "${progress%/*}" -gt 0 ] && [ "${progress%/*}" -lt "${progress#*/}" ]; then
				pass "$check"
			else
				fail "$check" "progress above 0 and below the total" "$progress"
			fi

		check="once the slow job ended, the refused job starts (the limit is free again)"
		if run_job second "copy from=$work/src.img:0+8 to=$work/f2.img:0"; then
			pass "$check"
		fi

		check="clone-autoremove closed while its job runs: a blocked wait gets the end, then the job goes"
		exec 3<>"$busy_mnt/clone-autoremove"
		read -r id <&3
		{ echo "$slow_desc" >&3; } 2>"$work/write.err"
		timeout 20 cat "$jobs/$id/wait" >"$work/auto-wait.out" 2>&1 &
		auto_waiter=$!
		sleep 0.3
		exec 3>&-
		sleep 0.3
		present=no
		[ -d "$jobs/$id" ] && present=yes
		write_ctl "$jobs/$id/ctl" cancel
		wait "$auto_waiter"
		expect_equal "$check" "jobs/$id there after close, while running:" yes "$present" &&
			expect_equal "$check" "the blocked wait's state:" cancelled \
				"$(sed -n 's/^state: //p' "$work/auto-wait.out")" &&
			if gone_soon "$jobs/$id"; then pass "$check"; else fail "$check" "jobs/$id gone at its end" "still there"; fi
		;;
	*)
		fail "EAGAIN: a second job over --max-jobs 1" "the slow job ($slow_how) queued or running" \
			"state $slow_state; $write_said; $(status_field "$jobs/slow" error)"
		;;
	esac
	jobs=$saved_jobs
else
	fail "kcopydfs --max-jobs 1 mounts" "a second mount" "$(tail -3 "$work/kcopydfs.log" | tr '\n' '|')"
fi

check="two jobs write disjoint regions of one loop device at once"
if [ -n "${slow_file:-}" ]; then
	new_loop "$work/big.img" && big_loop=$loop_device
	run_job_started=no
	mkdir "$jobs/shared-slow" "$jobs/shared-quick"
	write_ctl "$jobs/shared-slow/ctl" "copy from=$slow_file:0+64M to=$big_loop:0"
	if [ "$write_status" = 0 ] && [ "$(cat "$jobs/shared-slow/state")" != "done" ]; then
		run_job_started=yes
	fi
	if [ "$run_job_started" = yes ] && run_job shared-quick "copy from=$L_SRC:0+1M to=$big_loop:100M"; then
		expect_equal "$check" "the slow job while the quick one ended:" running "$(cat "$jobs/shared-slow/state")" &&
			same_bytes "$check" "$L_SRC" 0 "$big_loop" $((100 << 20)) $((1 << 20)) && pass "$check"
	elif [ "$run_job_started" = no ]; then
		fail "$check" "the slow job to $big_loop running" "$write_said; state $(cat "$jobs/shared-slow/state")"
	fi
	echo cancel >"$jobs/shared-slow/ctl"
	wait_job "$jobs/shared-slow"
else
	echo "SKIP: $check (needs nbdkit and nbdfuse for a slow job)"
fi

# Issue 12, item 10: a loop device and its backing file are one storage to the daemon too.
mkdir "$jobs/alias"
expect_reject "EINVAL: a file to a loop device over it, overlapping (one storage)" alias EINVAL \
	"destination 0 overlaps the source \(the same storage, through a loop device or partition\)" \
	"copy from=$work/l1.img:0+2048 to=$L1:1024"
check="a file to a loop device over it, apart, copies"
if run_job alias-apart "copy from=$work/l1.img:0+2048 to=$L1:4096"; then
	same_bytes "$check" "$work/l1.img" 0 "$L1" $((4096 * 512)) $((2048 * 512)) && pass "$check"
fi

# Issue 12, item 12: a full disk, whose last write is short, is ENOSPC on the error line, not EIO.
check="4 MiB to a file on a 3584 KiB tmpfs: error: says ENOSPC"
full_dir="$work/full-tmpfs"
mkdir "$full_dir"
if mount -t tmpfs -o size=3584k tmpfs "$full_dir"; then
	truncate -s 4M "$full_dir/full.img"
	mkdir "$jobs/full"
	write_ctl "$jobs/full/ctl" "copy from=$work/src.img:0+8192 to=$full_dir/full.img:0"
	wait_job "$jobs/full"
	full_error=$(status_field "$jobs/full" error)
	expect_equal "$check" "state:" failed "$wait_state" &&
		case $full_error in
		*"write error on $full_dir/full.img (to #0) sectors "*": ENOSPC (No space left on device)"*) pass "$check" ;;
		*) fail "$check" "error: write error on $full_dir/full.img (to #0) ...: ENOSPC (No space left on device)" \
			"error: $full_error" ;;
		esac
	rmdir "$jobs/full" 2>/dev/null
	umount "$full_dir"
else
	fail "$check" "a 3584 KiB tmpfs mounted" "mount failed"
fi
rmdir "$full_dir"

finish
