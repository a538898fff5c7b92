#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopydfs-load.sh: kcopydfs under concurrent use.  200 jobs from four
# shells at once (each 50 times: clone, write, cat wait), 50 more readers
# blocked in `cat wait` on idle jobs that are started later, and a lister
# running `ls -lR` on the mount and `cat stats` in a loop the whole time.
# Everything must finish; every job must end done; every copy must compare
# equal (small regions of loop devices and files, disjoint destinations);
# and no listing round may take over a second.
#
# Destinations: each worker shell writes its own loop device (a job opens a
# destination block device exclusively, so two jobs on one device at once
# would refuse each other with EBUSY) and its own file; the 50 late jobs
# write disjoint regions of one file.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-kcopydfs-load.sh
# Needs root; exits 77 (skipped) without it.  Prints PASS or FAIL per
# check with what it expected and got; the last line is "N passed, M failed".

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics losetup cmp dd timeout sed truncate
setup_work 128M

WORKERS=4
JOBS_PER_WORKER=50
LATE_JOBS=50
REGION=128				# sectors a job copies (64 KiB)
SOURCE_SECTORS=8192			# 4 MiB sources
ROUND_LIMIT_US=1000000			# a listing round may take this long

start_daemon || {
	fail "kcopydfs mounts" "a kcopydfs mount at $daemon_mount" "$(tr '\n' '|' <"$work/kcopydfs.log")"
	finish
}
mnt=$daemon_mount
jobs=$mnt/jobs

dd if=/dev/urandom of="$work/s1.img" bs=1M count=4 status=none
dd if=/dev/urandom of="$work/s2.img" bs=1M count=4 status=none
new_loop "$work/s1.img" || skip_all "cannot set up loop devices with losetup --direct-io=on"
sources=("$loop_device" "$work/s2.img")
worker_loops=()
for worker in $(seq 0 $((WORKERS - 1))); do
	truncate -s 4M "$work/dl$worker.img" "$work/df$worker.img"
	new_loop "$work/dl$worker.img" || skip_all "cannot set up loop devices"
	worker_loops+=("$loop_device")
done
truncate -s 4M "$work/late.img"

# --- the lister: ls -lR and cat stats, timing each round ------------------------------

touch "$work/lister.run"
(
	rounds=0 slowest=0 errors=0
	while [ -e "$work/lister.run" ]; do
		start=${EPOCHREALTIME/./}
		ls -lR "$mnt" >/dev/null 2>>"$work/lister.err" || errors=$((errors + 1))
		cat "$mnt/stats" >/dev/null 2>>"$work/lister.err" || errors=$((errors + 1))
		took=$((${EPOCHREALTIME/./} - start))
		[ "$took" -gt "$slowest" ] && slowest=$took
		rounds=$((rounds + 1))
		echo "$rounds $slowest $errors" >"$work/lister.out"
	done
) &
lister_pid=$!
background_pids+=("$lister_pid")

# --- 50 readers blocked on idle jobs ------------------------------------------------------

late_pids=()
for index in $(seq 0 $((LATE_JOBS - 1))); do
	mkdir "$jobs/late$index"
done
for index in $(seq 0 $((LATE_JOBS - 1))); do
	timeout 60 cat "$jobs/late$index/wait" >"$work/late$index.out" 2>&1 &
	late_pids+=("$!")
	background_pids+=("$!")
done

# --- four shells, 50 clone jobs each -----------------------------------------------------

# worker N: 50 times clone, write, close, cat wait; one line per job:
# "ID STATE SOURCE SOURCE-SECTOR DEST DEST-SECTOR".
worker() {
	local worker=$1 index id source source_sector dest dest_sector state

	for index in $(seq 0 $((JOBS_PER_WORKER - 1))); do
		source=${sources[index % 2]}
		source_sector=$((((worker * JOBS_PER_WORKER + index) * 7 % (SOURCE_SECTORS / REGION)) * REGION))
		if [ $((index % 2)) = 0 ]; then
			dest=${worker_loops[worker]}
		else
			dest=$work/df$worker.img
		fi
		dest_sector=$((index * REGION))
		id=
		if exec 3<>"$mnt/clone"; then
			read -r id <&3
			echo "copy from=$source:$source_sector+$REGION to=$dest:$dest_sector" >&3 ||
				echo "write refused for job '$id': $(grep -E '^(error|rejected):' "$jobs/$id/status" | tr '\n' ' ')" >&2
			exec 3>&-
		fi
		state=$(timeout 30 cat "$jobs/$id/wait" 2>&1 | sed -n 's/^state: //p')
		echo "$id ${state:-none} $source $source_sector $dest $dest_sector"
	done
}

started=${EPOCHREALTIME/./}
worker_pids=()
for worker in $(seq 0 $((WORKERS - 1))); do
	worker "$worker" >"$work/worker$worker.out" 2>"$work/worker$worker.err" &
	worker_pids+=("$!")
	background_pids+=("$!")
done

sleep 0.3
check="50 readers stay blocked in cat wait while their jobs are idle"
blocked=0
for pid in "${late_pids[@]}"; do
	kill -0 "$pid" 2>/dev/null && blocked=$((blocked + 1))
done
[ "$blocked" = "$LATE_JOBS" ] && pass "$check" || fail "$check" "$LATE_JOBS cat processes still blocked" "$blocked"

refused=
for index in $(seq 0 $((LATE_JOBS - 1))); do
	echo "copy from=${sources[index % 2]}:$((index * REGION))+$REGION to=$work/late.img:$((index * REGION))" \
		>"$jobs/late$index/ctl" 2>>"$work/late.err" || refused="$refused late$index"
done
check="the 50 idle jobs start while the workers run"
[ -z "$refused" ] && pass "$check" || fail "$check" "every description accepted" "refused:$refused $(head -3 "$work/late.err")"

# --- everything finishes ---------------------------------------------------------------------

check="the four worker shells finish (200 jobs)"
workers_failed=
for pid in "${worker_pids[@]}"; do
	wait "$pid" || workers_failed="$workers_failed $pid"
done
[ -z "$workers_failed" ] && pass "$check" || fail "$check" "exit 0 from every worker" "failed:$workers_failed"

check="the 50 blocked readers get their answers"
readers_failed=
for index in $(seq 0 $((LATE_JOBS - 1))); do
	wait "${late_pids[index]}" || readers_failed="$readers_failed late$index"
done
[ -z "$readers_failed" ] && pass "$check" || fail "$check" "cat wait exits 0 for every late job" "failed:$readers_failed"
took_ms=$(((${EPOCHREALTIME/./} - started) / 1000))
echo "      (250 jobs took ${took_ms} ms)"

rm -f "$work/lister.run"
wait "$lister_pid"

check="every worker's job ended done, as cat wait said"
bad=$(cat "$work"/worker*.out | awk '$2 != "done"' | head -5 | tr '\n' '|')
count=$(cat "$work"/worker*.out | wc -l)
[ -z "$bad" ] && [ "$count" = $((WORKERS * JOBS_PER_WORKER)) ] && pass "$check" ||
	fail "$check" "$((WORKERS * JOBS_PER_WORKER)) lines 'ID done ...'" "$count lines; not done: $bad $(cat "$work"/worker*.err | head -3 | tr '\n' '|')"

check="every late reader's cat wait said done"
bad=
for index in $(seq 0 $((LATE_JOBS - 1))); do
	[ "$(sed -n 's/^state: //p' "$work/late$index.out")" = done ] || bad="$bad late$index($(head -1 "$work/late$index.out"))"
done
[ -z "$bad" ] && pass "$check" || fail "$check" "state: done from each" "$bad"

check="every job directory's state is done"
total=0
bad=
for dir in "$jobs"/*/; do
	total=$((total + 1))
	state=$(cat "$dir/state")
	[ "$state" = done ] || bad="$bad $(basename "$dir"):$state"
done
expected_jobs=$((WORKERS * JOBS_PER_WORKER + LATE_JOBS))
[ -z "$bad" ] && [ "$total" = "$expected_jobs" ] && pass "$check" ||
	fail "$check" "$expected_jobs jobs, all done" "$total jobs; not done:$bad"

check="stats agrees: all done, none active or failed"
got=$(grep -E '^(jobs|jobs_active|jobs_done|jobs_failed|jobs_cancelled):' "$mnt/stats" | tr '\n' ' ')
expected="jobs: $expected_jobs jobs_active: 0 jobs_done: $expected_jobs jobs_failed: 0 jobs_cancelled: 0 "
[ "$got" = "$expected" ] && pass "$check" || fail "$check" "$expected" "$got"

check="every copy compares equal"
bad=
while read -r id state source source_sector dest dest_sector; do
	cmp -s -n $((REGION * 512)) -i "$((source_sector * 512)):$((dest_sector * 512))" "$source" "$dest" ||
		bad="$bad job$id"
done < <(cat "$work"/worker*.out)
for index in $(seq 0 $((LATE_JOBS - 1))); do
	offset=$((index * REGION * 512))
	cmp -s -n $((REGION * 512)) -i "$offset:$offset" "${sources[index % 2]}" "$work/late.img" || bad="$bad late$index"
done
[ -z "$bad" ] && pass "$check" || fail "$check" "all $expected_jobs regions equal to their sources" "differ:$bad"

check="the lister ran throughout, without errors, under a second a round"
read -r rounds slowest errors <"$work/lister.out"
if [ "$rounds" -lt 2 ] || [ "$errors" != 0 ] || [ "$slowest" -gt "$ROUND_LIMIT_US" ]; then
	fail "$check" "2+ rounds, 0 errors, slowest <= ${ROUND_LIMIT_US} us" \
		"$rounds rounds, $errors errors, slowest $slowest us; $(head -3 "$work/lister.err" | tr '\n' '|')"
else
	pass "$check"
	echo "      ($rounds rounds, the slowest ${slowest} us)"
fi

finish
