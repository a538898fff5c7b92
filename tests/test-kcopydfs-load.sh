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
# Destinations: two loop devices and a file that every shell writes at once,
# each job its own region (jobs share their claim on a block device they
# write, so they do not refuse each other with EBUSY); afterwards nothing
# holds the loop devices any more (mkfs.ext4 can open them exclusively).
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-kcopydfs-load.sh
# Needs root; exits 77 (skipped) without it.  Prints PASS or FAIL per
# check with what it expected and got; the last line is "N passed, M failed".

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics losetup cmp dd timeout sed truncate mkfs.ext4
setup_work 128M

WORKERS=4
JOBS_PER_WORKER=50
LATE_JOBS=50
REGION=128				# sectors a job copies (64 KiB)
SOURCE_SECTORS=8192			# 4 MiB sources
# A listing round that takes longer than this means the daemon stalled (a
# wait holding a worker, a lock held across I/O).  Not a speed target: those
# live in contrib/bench.  Generous, because make check runs other suites at
# once on a small machine; the slowest round is printed either way.
ROUND_LIMIT_US=5000000

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
# Every job has its own region, numbered 0..249 across all of them: region N
# is sectors N*REGION on dests[N % 3].
truncate -s 16M "$work/d0.img" "$work/d1.img" "$work/d2.img"
new_loop "$work/d0.img" && dest_loop0=$loop_device && new_loop "$work/d1.img" && dest_loop1=$loop_device ||
	skip_all "cannot set up loop devices"
dests=("$dest_loop0" "$dest_loop1" "$work/d2.img")

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

# worker N: 50 times clone, write, close, read wait; one line per job:
# "ID STATE SOURCE SOURCE-SECTOR DEST DEST-SECTOR".  Shell builtins only, so
# that the load on the machine is kcopydfs's, not fork and exec's.
worker() {
	local worker=$1 index region id source source_sector dest dest_sector line

	for ((index = 0; index < JOBS_PER_WORKER; index++)); do
		region=$((worker * JOBS_PER_WORKER + index))
		source=${sources[index % 2]}
		source_sector=$((region * 7 % (SOURCE_SECTORS / REGION) * REGION))
		dest=${dests[region % 3]}
		dest_sector=$((region * REGION))
		id="" line=""
		if exec 3<>"$mnt/clone"; then
			read -r id <&3
			echo "copy from=$source:$source_sector+$REGION to=$dest:$dest_sector" >&3 ||
				echo "job $id: the write was refused: $(<"$jobs/$id/status")" >&2
			exec 3>&-
		fi
		# The first line of wait, "state: ...", once the job has ended.
		read -r line <"$jobs/$id/wait"
		echo "$id ${line#state: } $source $source_sector $dest $dest_sector"
	done
}

# wait_all SECONDS PID...: wait for the PIDs; any still running after
# SECONDS is killed.  Returns the number of PIDs that did not exit 0.
wait_all() {
	local seconds=$1 pid bad=0 deadline
	shift
	deadline=$((SECONDS + seconds))
	for pid in "$@"; do
		while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
			sleep 0.1
		done
		kill -0 "$pid" 2>/dev/null && kill "$pid"
		wait "$pid" || bad=$((bad + 1))
	done
	return "$bad"
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
	region=$((WORKERS * JOBS_PER_WORKER + index))
	echo "copy from=${sources[index % 2]}:$((index * REGION))+$REGION to=${dests[region % 3]}:$((region * REGION))" \
		>"$jobs/late$index/ctl" 2>>"$work/late.err" || refused="$refused late$index"
done
check="the 50 idle jobs start while the workers run"
[ -z "$refused" ] && pass "$check" || fail "$check" "every description accepted" "refused:$refused $(head -3 "$work/late.err")"

# --- everything finishes ---------------------------------------------------------------------

check="the four worker shells finish (200 jobs)"
wait_all 40 "${worker_pids[@]}"
workers_failed=$?
[ "$workers_failed" = 0 ] && pass "$check" ||
	fail "$check" "every worker exits 0 within 40 s" "$workers_failed did not; $(cat "$work"/worker*.err | head -3 | tr '\n' '|')"

check="the 50 blocked readers get their answers"
wait_all 10 "${late_pids[@]}"
readers_failed=$?
[ "$readers_failed" = 0 ] && pass "$check" || fail "$check" "cat wait exits 0 for every late job" "$readers_failed did not"
took_ms=$(((${EPOCHREALTIME/./} - started) / 1000))
echo "      (250 jobs took ${took_ms} ms)"

# Two more rounds with all 250 jobs there, then stop the lister.
read -r rounds_then _ <"$work/lister.out"
deadline=$((SECONDS + 10))
while read -r rounds _ <"$work/lister.out" && [ "$rounds" -lt $((rounds_then + 2)) ] && [ "$SECONDS" -lt "$deadline" ]; do
	sleep 0.1
done
rm -f "$work/lister.run"
wait_all 10 "$lister_pid"

check="every worker's job ended done, as cat wait said"
bad=$(cat "$work"/worker*.out | awk '$2 != "done"' | head -5 | tr '\n' '|')
count=$(cat "$work"/worker*.out | wc -l)
[ -z "$bad" ] && [ "$count" = $((WORKERS * JOBS_PER_WORKER)) ] && pass "$check" ||
	fail "$check" "$((WORKERS * JOBS_PER_WORKER)) lines 'ID done ...'" "$count lines; not done: $bad $(cat "$work"/worker*.err | head -3 | tr '\n' '|')"

check="every late reader's cat wait said done"
bad=
for index in $(seq 0 $((LATE_JOBS - 1))); do
	[ "$(sed -n 's/^state: //p' "$work/late$index.out")" = "done" ] || bad="$bad late$index($(head -1 "$work/late$index.out"))"
done
[ -z "$bad" ] && pass "$check" || fail "$check" "state: done from each" "$bad"

check="every job directory's state is done"
total=0
bad=
for dir in "$jobs"/*/; do
	total=$((total + 1))
	state=$(cat "$dir/state")
	[ "$state" = "done" ] || bad="$bad $(basename "$dir"):$state"
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
	region=$((WORKERS * JOBS_PER_WORKER + index))
	cmp -s -n $((REGION * 512)) -i "$((index * REGION * 512)):$((region * REGION * 512))" "${sources[index % 2]}" \
		"${dests[region % 3]}" || bad="$bad late$index"
done
[ -z "$bad" ] && pass "$check" || fail "$check" "all $expected_jobs regions equal to their sources" "differ:$bad"

check="once all jobs ended, nothing holds the destination loop devices (mkfs.ext4 opens them exclusively)"
bad=
for dest in "$dest_loop0" "$dest_loop1"; do
	mkfs.ext4 -q -F "$dest" >"$work/mkfs.out" 2>&1 || bad="$bad $dest: $(tr '\n' ' ' <"$work/mkfs.out")"
done
[ -z "$bad" ] && pass "$check" || fail "$check" "mkfs.ext4 succeeds on both" "$bad"

check="the lister ran throughout, without errors, never stalled (${ROUND_LIMIT_US} us a round at most)"
read -r rounds slowest errors <"$work/lister.out"
if [ "$rounds" -lt 2 ] || [ "$errors" != 0 ] || [ "$slowest" -gt "$ROUND_LIMIT_US" ]; then
	fail "$check" "2+ rounds, 0 errors, slowest <= ${ROUND_LIMIT_US} us" \
		"$rounds rounds, $errors errors, slowest $slowest us; $(head -3 "$work/lister.err" | tr '\n' '|')"
else
	pass "$check"
	echo "      ($rounds rounds, the slowest ${slowest} us)"
fi

finish
