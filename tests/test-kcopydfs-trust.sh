#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopydfs-trust.sh: hashes, verification, rate limits and pause
# (issue 17) through a kcopydfs mount, on files of a tmpfs and on a
# failing source (nbdkit's ddrescue filter through nbdfuse and a loop
# device, as test-kcopydfs-faults.sh makes one):
#  - hash=md5,sha1,sha256,sha512,blake2b512,xxh128: each digest on the
#    status's hash: lines equals md5sum, sha1sum, sha256sum, sha512sum,
#    b2sum and xxhsum -H2 of the source, dense and sparse, to 1 and to 3
#    destinations; with ignore_error over a failing read, of the bytes
#    written for it (the zeros of the chunk that could not be read);
#  - flags=verify: "verify: ok" on good destinations; flags=dest_zero,verify
#    onto a destination that is not zero fails the job with EBADMSG on a
#    "verify error on DEST (to #N) sectors S+C" entry inside a hole of the source;
#  - rate=16M: a 64 MiB copy takes 4 s +-10% by the status's elapsed;
#    rate= written to ctl mid-copy takes effect; two jobs under the daemon's
#    --rate share it (each about half);
#  - pause: progress does not move for 2 s, wait keeps blocking, resume
#    finishes byte-identical; pause, SIGKILL, a restart with --state-dir:
#    the job comes back paused, and resume finishes it (its hash then
#    "none (resumed at sector N)", its verify "ok (sectors below N ...)");
#  - every bad input: an unknown hash, rates of 0, below 4K or unparsable,
#    pause of an idle or finished job, rate= of a finished one, hash= or
#    verify on a zero job, pause twice, resume of a running job, a bad
#    kcopydfs --rate: each refused with its errno (as echo prints it), its
#    reason on the rejected: line, and nothing changed.
#
# The rate checks time the copies by the daemon's own elapsed: at issue 17's
# request (its Tests section), a bound on the limiter, not a benchmark.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-kcopydfs-trust.sh
# Needs root, nbdkit, nbdfuse and the *sum tools; exits 77 (skipped) without them.

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics losetup cmp dd awk timeout truncate md5sum sha1sum sha256sum sha512sum b2sum xxhsum nbdkit nbdfuse
nbdkit --filter=ddrescue file --dump-plugin >/dev/null 2>&1 || skip_all "nbdkit lacks the ddrescue filter"
setup_work 900M

ALGS="md5 sha1 sha256 sha512 blake2b512 xxh128"

# tool_of ALG: the usual tool's name, for messages.
tool_of() {
	case $1 in
	blake2b512) echo b2sum ;;
	xxh128) echo "xxhsum -H2" ;;
	*) echo "${1}sum" ;;
	esac
}

# sum_of ALG FILE: what the usual tool prints for FILE's bytes.
sum_of() {
	case $1 in
	md5) md5sum "$2" ;;
	sha1) sha1sum "$2" ;;
	sha256) sha256sum "$2" ;;
	sha512) sha512sum "$2" ;;
	blake2b512) b2sum "$2" ;;
	xxh128) xxhsum -H2 "$2" ;;
	esac 2>/dev/null | awk '{ print $1 }'
}

# hash_line STATUS-FILE ALG: the value after "hash: ALG:".
hash_line() {
	sed -n "s/^hash: $2://p" "$1"
}

# job_field JOB KEY: KEY of job JOB's status now.
job_field() {
	status_field "$jobs/$1" "$2"
}

# expect_refused CHECK JOB TEXT ERRNO ERRNO-TEXT REASON-ERE: echo TEXT into JOB's ctl; it must be
# refused with ERRNO (echo says ERRNO-TEXT), the rejected: line matching "REASON (ERRNO)", and
# state and progress as they were.
expect_refused() {
	local check=$1 job=$2 text=$3 errno_name=$4 message=$5 reason=$6 state_before progress_before
	state_before=$(cat "$jobs/$job/state")
	progress_before=$(job_field "$job" progress)
	write_ctl "$jobs/$job/ctl" "$text"
	if [ "$write_status" = 0 ]; then
		fail "$check" "'$text' refused with $errno_name" "accepted; state $(cat "$jobs/$job/state")"
		return 1
	fi
	case $write_said in
	*"write error: $message"*) ;;
	*)
		fail "$check" "echo: write error: $message" "$write_said"
		return 1
		;;
	esac
	if ! job_field "$job" rejected | grep -Eqx -- "$reason \($errno_name\)"; then
		fail "$check" "rejected: /$reason \\($errno_name\\)/" "rejected: $(job_field "$job" rejected)"
		return 1
	fi
	# A running job's progress moves on its own: only a stopped one's must stay.
	case $state_before in
	idle | done | failed | cancelled | paused | interrupted)
		if [ "$(job_field "$job" progress)" != "$progress_before" ]; then
			fail "$check" "progress $progress_before after the refused write" "$(job_field "$job" progress)"
			return 1
		fi
		;;
	esac
	check "$check" "state $state_before" "state $(cat "$jobs/$job/state")"
}

# --- the daemon and the data ----------------------------------------------------

state_dir=$work/state
mnt=$(mktemp -d "${TMPDIR:-/tmp}/test-kcopydfs-mnt.XXXXXX")
daemon_mounts+=("$mnt")
# start: kcopydfs -f --state-dir on $mnt; 1 if it did not come up.
start() {
	start_daemon_on "$mnt" --state-dir "$state_dir" && main_pid=$daemon_pid
}
if ! start; then
	fail "kcopydfs mounts with --state-dir" "a mount" "$(tail -n 3 "$work/kcopydfs.log")"
	finish
fi
jobs=$mnt/jobs

SIZE=$((8 << 20))
head -c "$SIZE" /dev/urandom >"$work/dense.img"
# Sparse: holes at 0-2 MiB, 3-6 MiB and 7-8 MiB, random data between.
truncate -s "$SIZE" "$work/sparse.img"
dd if=/dev/urandom of="$work/sparse.img" bs=1M seek=2 count=1 conv=notrunc status=none
dd if=/dev/urandom of="$work/sparse.img" bs=1M seek=6 count=1 conv=notrunc status=none
for name in a b c; do
	truncate -s "$SIZE" "$work/$name.img"
done

# --- hashes, dense and sparse, 1 and 3 destinations ----------------------------

hash_all="hash=md5,sha1,sha256,sha512,b2,xxh128"
for source in dense sparse; do
	for dests in 1 3; do
		name=h-$source-$dests
		for dest in a b c; do
			head -c "$SIZE" /dev/zero | tr '\0' '\377' >"$work/$dest.img"
		done
		to="to=$work/a.img"
		[ "$dests" = 3 ] && to="to=$work/a.img to=$work/b.img to=$work/c.img"
		run_job "$jobs" "$name" "copy from=$work/$source.img $to $hash_all" || continue
		check "$name: done" done "$(final "$name" state)"
		for alg in $ALGS; do
			check "$name: hash $alg equals $(tool_of "$alg")" "$(sum_of "$alg" "$work/$source.img")" \
				"$(hash_line "$work/$name.status" "$alg")"
		done
		for dest in a b c; do
			[ "$dests" = 1 ] && [ "$dest" != a ] && continue
			check "$name: $dest.img is the source" same \
				"$(cmp -s "$work/$source.img" "$work/$dest.img" && echo same || echo differs)"
		done
		check "$name: the description renders the names in bit order" \
			"hash=md5,sha1,sha256,sha512,blake2b512,xxh128" \
			"$(grep -o 'hash=[^ ]*' "$jobs/$name/ctl")"
		check "$name: verify: none without flags=verify" none "$(final "$name" verify)"
	done
done

# 4 jobs of 8 MiB hashed so far, each once whatever its algorithms and destinations.
check "stats: sectors_hashed counts each job's source once" $((4 * SIZE / 512)) "$(sed -n 's/^sectors_hashed: //p' "$mnt/stats")"
check "stats: no --rate" none "$(sed -n 's/^rate: //p' "$mnt/stats")"

# A job's hash lines while it has not ended say pending.
mkdir "$jobs/h-pending"
slow_source 16M 200ms || skip_all "nbdfuse did not export a slow source: $(tail -n 3 "$work/nbdfuse.log" | tr '\n' '|')"
truncate -s 16M "$work/pending.img"
write_ctl "$jobs/h-pending/ctl" "copy from=$slow_file to=$work/pending.img hash=sha256"
check "a slow job with hash=sha256 starts" 0 "$write_status"
check "its hash line says pending while it runs" pending "$(hash_line "$jobs/h-pending/status" sha256)"
echo cancel >"$jobs/h-pending/ctl"
timeout 60 cat "$jobs/h-pending/wait" >"$work/h-pending.status"
check "cancelled, its hash line says none" none "$(hash_line "$work/h-pending.status" sha256)"

# --- ignore_error over a failing read --------------------------------------------

# The source, with the reads of one 4 KiB block at 3 MiB + 8 KiB failing.
bad_off=$(((3 << 20) + 8192))
{
	echo "# Mapfile. Created by test-kcopydfs-trust.sh"
	echo "0x00000000 + 1"
	printf '0x%08x 0x%08x +\n' 0 "$bad_off"
	printf '0x%08x 0x%08x -\n' "$bad_off" 4096
	printf '0x%08x 0x%08x +\n' $((bad_off + 4096)) $((SIZE - bad_off - 4096))
} >"$work/bad.map"
if nbd_export "$work/bad" -r --filter=ddrescue file "file=$work/dense.img" "ddrescue-mapfile=$work/bad.map" &&
	new_loop "$work/bad/disk" -r; then
	bad_loop=$loop_device
	echo 2 >"/sys/block/${bad_loop#/dev/}/queue/nomerges"
	head -c "$SIZE" /dev/zero | tr '\0' '\377' >"$work/a.img"
	run_job "$jobs" h-ignore "copy from=$bad_loop to=$work/a.img to=$work/b.img hash=sha256,xxh128 flags=ignore_error" &&
		{
			# ignore_error goes on past the error, and the job still ends failed (kcopydfs(5)).
			check "ignore_error over a failing read: failed, having gone on" failed "$(final h-ignore state)"
			check "ignore_error over a failing read: read_err 1" 1 "$(final h-ignore read_err)"
			check "ignore_error over a failing read: every sector done" "$((SIZE / 512))/$((SIZE / 512))" \
				"$(final h-ignore progress)"
			check "the destination differs from the source (the failed chunk is zeros)" differs \
				"$(cmp -s "$work/dense.img" "$work/a.img" && echo same || echo differs)"
			# The digest covers what was written: the zeros of the chunk that could not be read.
			for alg in sha256 xxh128; do
				check "ignore_error: hash $alg is of what was written ($(tool_of "$alg") of the destination)" \
					"$(sum_of "$alg" "$work/a.img")" "$(hash_line "$work/h-ignore.status" "$alg")"
			done
			check "ignore_error: both destinations alike" same \
				"$(cmp -s "$work/a.img" "$work/b.img" && echo same || echo differs)"
		}
else
	fail "a failing source through nbdfuse and a loop device" "a loop device" "$(tail -n 3 "$work/nbdfuse.log")"
fi

# --- verification -----------------------------------------------------------------

run_job "$jobs" v-ok "copy from=$work/sparse.img to=$work/a.img to=$work/b.img flags=verify hash=sha256" && {
	check "verify on good destinations: done" done "$(final v-ok state)"
	check "verify on good destinations: verify: ok" ok "$(final v-ok verify)"
	check "verify on good destinations: error none" none "$(final v-ok error)"
}

# dest_zero says the destinations read as zeros: a.img does, c.img does not (0xff), so its holes stay 0xff.
truncate -s 0 "$work/a.img"
truncate -s "$SIZE" "$work/a.img"
head -c "$SIZE" /dev/zero | tr '\0' '\377' >"$work/c.img"
run_job "$jobs" v-bad "copy from=$work/sparse.img to=$work/a.img to=$work/c.img flags=dest_zero,verify" && {
	check "dest_zero onto 0xff with verify: failed" failed "$(final v-bad state)"
	check "dest_zero onto 0xff with verify: verify: mismatch" mismatch "$(final v-bad verify)"
	check "dest_zero onto 0xff with verify: write_err names only destination #1" 0x2 "$(final v-bad write_err)"
	error=$(final v-bad error)
	entry=$(printf '%s\n' "$error" | grep -oE "verify error on $(re_quote "$work/c.img") \(to #1\) sectors [0-9]+\+[0-9]+: EBADMSG \(Bad message\)")
	if [ -n "$entry" ]; then
		pass "the error line names destination #1's range with EBADMSG: $entry"
		range=${entry##* sectors }
		range=${range%%:*}
		sector=${range%+*}
		count=${range#*+}
		# The first hole of the source is sectors 0-4095: the range must lie in a hole.
		in_hole=no
		{ [ $((sector + count)) -le 4096 ] || { [ "$sector" -ge 6144 ] && [ $((sector + count)) -le 12288 ]; } ||
			[ "$sector" -ge 14336 ]; } && in_hole=yes
		check "the range named ($range) lies in a hole of the source" yes "$in_hole"
	else
		fail "the error line names destination #1's range with EBADMSG" \
			"verify error on $work/c.img (to #1) sectors S+C: EBADMSG (Bad message)" "$error"
	fi
	check "destination #0 (zero already) verifies: not named on the error line" "" \
		"$(printf '%s\n' "$error" | grep -o "verify error on $work/a.img")"
}

# --- rates ---------------------------------------------------------------------------

RATE_SIZE=$((64 << 20))
head -c "$RATE_SIZE" /dev/urandom >"$work/big.img"
truncate -s "$RATE_SIZE" "$work/big-out.img"
truncate -s "$RATE_SIZE" "$work/big-out2.img"

# within ELAPSED LOW HIGH: is LOW <= ELAPSED <= HIGH (seconds, decimals)?
within() {
	awk -v e="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(e >= lo && e <= hi) }'
}

run_job "$jobs" r-16m "copy from=$work/big.img to=$work/big-out.img rate=16M" && {
	elapsed=$(final r-16m elapsed)
	check "rate=16M: done" done "$(final r-16m state)"
	check "rate=16M: the status's rate line" 16777216 "$(final r-16m rate)"
	if within "$elapsed" 3.6 4.4; then
		pass "rate=16M: 64 MiB in $elapsed s (4 s +-10%)"
	else
		fail "rate=16M: 64 MiB in 4 s +-10%" "elapsed 3.6 to 4.4" "elapsed $elapsed"
	fi
	check "rate=16M: byte-identical" same "$(cmp -s "$work/big.img" "$work/big-out.img" && echo same || echo differs)"
}

# At 4M the copy would take 16 s; after 1 s it is raised to 64M: about 2 s in all.
mkdir "$jobs/r-change"
write_ctl "$jobs/r-change/ctl" "copy from=$work/big.img to=$work/big-out.img rate=4M"
check "rate=4M: started" 0 "$write_status"
sleep 1
write_ctl "$jobs/r-change/ctl" "rate=64M"
check "rate=64M written to a running job's ctl is taken" 0 "$write_status"
check "its status says the new rate" 67108864 "$(job_field r-change rate)"
check "its description says the new rate" "rate=67108864" "$(grep -o 'rate=[0-9]*' "$jobs/r-change/ctl")"
write_ctl "$jobs/r-change/ctl" "rate=none"
check "rate=none written to a running job's ctl lifts its limit" 0 "$write_status"
check "its status says rate: none" none "$(job_field r-change rate)"
check "its description has no rate= left" "" "$(grep -o 'rate=[0-9]*' "$jobs/r-change/ctl")"
timeout 60 cat "$jobs/r-change/wait" >"$work/r-change.status"
elapsed=$(sed -n 's/^elapsed: //p' "$work/r-change.status")
if within "$elapsed" 1 6; then
	pass "the new rate took effect: $elapsed s, not the 16 s of 4M"
else
	fail "the new rate took effect" "elapsed 1 to 6 s (16 s at 4M)" "elapsed $elapsed"
fi

# Two jobs under a daemon's --rate=16M: 2 x 32 MiB in about 4 s, each at about half.
# The separate form, "--rate 16M", as the man page writes it.
if start_daemon --rate 16M; then
	total_mnt=$daemon_mount
	mkdir "$total_mnt/jobs/s1" "$total_mnt/jobs/s2"
	echo "copy from=$work/big.img:0+32M to=$work/big-out.img:0+32M" >"$total_mnt/jobs/s1/ctl"
	echo "copy from=$work/big.img:32M+32M to=$work/big-out2.img:0+32M" >"$total_mnt/jobs/s2/ctl"
	timeout 60 cat "$total_mnt/jobs/s1/wait" >"$work/s1.status"
	timeout 60 cat "$total_mnt/jobs/s2/wait" >"$work/s2.status"
	for name in s1 s2; do
		rate=$(sed -n 's/^bytes_per_sec: //p' "$work/$name.status")
		if within "$rate" $((6 << 20)) $((10 << 20)); then
			pass "--rate=16M shared: job $name at $rate bytes/s (about half)"
		else
			fail "--rate=16M shared: job $name at about half" "6 to 10 MiB/s" "$rate bytes/s"
		fi
		check "--rate=16M: job $name has no rate of its own" none "$(sed -n 's/^rate: //p' "$work/$name.status")"
	done
	check "--rate 16M: the stats file's rate" 16777216 "$(sed -n 's/^rate: //p' "$total_mnt/stats")"
	throttled=$(sed -n 's/^throttled_ns: //p' "$total_mnt/stats")
	check "--rate 16M: stats say jobs waited for credit" yes "$([ "${throttled:-0}" -gt 0 ] && echo yes || echo "no: ${throttled:-none}")"
else
	fail "kcopydfs --rate=16M mounts" "a mount" "$(tail -n 3 "$work/kcopydfs.log")"
fi

# --- pause and resume ------------------------------------------------------------------

# progress_of JOB: DONE of its progress line.
progress_of() {
	job_field "$1" progress | cut -d/ -f1
}

mkdir "$jobs/p"
write_ctl "$jobs/p/ctl" "copy from=$work/big.img to=$work/big-out2.img rate=8M"
check "pause: an 8 s copy started" 0 "$write_status"
sleep 1
write_ctl "$jobs/p/ctl" pause
check "pause: taken" 0 "$write_status"
check "pause: state paused" paused "$(cat "$jobs/p/state")"
check "pause: status says paused" paused "$(job_field p state)"
sleep 0.5	# the sub-jobs in flight finish
before=$(progress_of p)
timeout 2 cat "$jobs/p/wait" >/dev/null
check "pause: wait keeps blocking while paused (timeout's 124)" 124 "$?"
after=$(progress_of p)
check "pause: progress does not move for 2 s" "$before" "$after"
expect_refused "pause twice: EALREADY" p pause EALREADY "Operation already in progress" \
	"job p is paused already"
write_ctl "$jobs/p/ctl" "rate=64M"
check "rate= of a paused job is taken" 0 "$write_status"
write_ctl "$jobs/p/ctl" resume
check "resume: taken" 0 "$write_status"
check "resume: running again" running "$(cat "$jobs/p/state")"
timeout 60 cat "$jobs/p/wait" >"$work/p.status"
check "resume: done" done "$(final p state)"
check "resume: byte-identical" same "$(cmp -s "$work/big.img" "$work/big-out2.img" && echo same || echo differs)"

# Paused, then SIGKILL, then a restart: paused again; resume finishes it.
truncate -s 0 "$work/big-out2.img"
truncate -s "$RATE_SIZE" "$work/big-out2.img"
mkdir "$jobs/pk"
write_ctl "$jobs/pk/ctl" "copy from=$work/big.img to=$work/big-out2.img rate=8M hash=sha256 flags=verify"
check "pause and kill: started" 0 "$write_status"
sleep 2.5	# past a checkpoint or two (--checkpoint-ms 1000)
echo pause >"$jobs/pk/ctl"
check "pause and kill: paused" paused "$(cat "$jobs/pk/state")"
sleep 1.5	# a checkpoint after the pause
kill -KILL "$main_pid" 2>/dev/null
wait "$main_pid" 2>/dev/null
if ! start; then
	fail "restart after SIGKILL" "a mount" "$(tail -n 3 "$work/kcopydfs.log")"
	finish
fi
check "after SIGKILL and a restart: paused" paused "$(cat "$jobs/pk/state")"
check "after SIGKILL and a restart: status paused" paused "$(job_field pk state)"
check "after SIGKILL and a restart: its rate kept" 8388608 "$(job_field pk rate)"
check "after SIGKILL and a restart: verify pending" pending "$(job_field pk verify)"
resumed_at=$(job_field pk checkpoint)
write_ctl "$jobs/pk/ctl" resume
check "after the restart: resume taken" 0 "$write_status"
write_ctl "$jobs/pk/ctl" rate=1G
timeout 60 cat "$jobs/pk/wait" >"$work/pk.status"
check "after the restart: done" done "$(final pk state)"
check "after the restart: byte-identical" same \
	"$(cmp -s "$work/big.img" "$work/big-out2.img" && echo same || echo differs)"
if [ "${resumed_at:-0}" -gt 0 ]; then
	check "after the restart: the hash cannot cover what the killed daemon read" \
		"none (resumed at sector $resumed_at)" "$(hash_line "$work/pk.status" sha256)"
	check "after the restart: verify covers only this run" \
		"ok (sectors below $resumed_at copied before the restart, not verified)" "$(final pk verify)"
else
	check "after the restart from sector 0: the hash is whole" "$(sum_of sha256 "$work/big.img")" \
		"$(hash_line "$work/pk.status" sha256)"
	check "after the restart from sector 0: verify ok" ok "$(final pk verify)"
fi

# --- bad input -------------------------------------------------------------------------------

mkdir "$jobs/bad"
expect_refused "an unknown hash: EINVAL" bad "copy from=$work/dense.img to=$work/a.img hash=sha3" \
	EINVAL "Invalid argument" "unknown hash 'sha3' \(known: md5, sha1, sha256, sha512, blake2b512, xxh128\)"
expect_refused "rate=0: EINVAL" bad "copy from=$work/dense.img to=$work/a.img rate=0" \
	EINVAL "Invalid argument" "rate '0' is below 4096 bytes per second.*"
expect_refused "rate below 4K: EINVAL" bad "copy from=$work/dense.img to=$work/a.img rate=4095" \
	EINVAL "Invalid argument" "rate '4095' is below 4096 bytes per second.*"
expect_refused "an unparsable rate: EINVAL" bad "copy from=$work/dense.img to=$work/a.img rate=fast" \
	EINVAL "Invalid argument" "rate 'fast' is not a number of bytes per second.*"
expect_refused "a 1000-based rate: EINVAL" bad "copy from=$work/dense.img to=$work/a.img rate=16MB" \
	EINVAL "Invalid argument" "rate '16MB' has a 1000-based unit.*"
expect_refused "hash= on a zero job: EINVAL" bad "zero to=$work/a.img hash=sha256" \
	EINVAL "Invalid argument" "zero takes no hash=.*"
expect_refused "verify on a zero job: EINVAL" bad "zero to=$work/a.img flags=verify" \
	EINVAL "Invalid argument" "zero takes no flags=verify.*"
expect_refused "rate= on a zero job: EINVAL" bad "zero to=$work/a.img rate=1M" \
	EINVAL "Invalid argument" "zero takes no rate= \(a rate counts bytes read, and it reads none\)"
# Nor does its ctl take one later (its record's description could not hold it).
mkdir "$jobs/z"
echo "zero to=$work/a.img:0+1M" >"$jobs/z/ctl"
timeout 30 cat "$jobs/z/wait" >/dev/null
expect_refused "rate= written to a zero job's ctl: EINVAL" z rate=1M \
	EINVAL "Invalid argument" "job z is a zero job: rate= applies only to copies \(it reads nothing\)"
expect_refused "pause of an idle job: EINVAL" bad pause \
	EINVAL "Invalid argument" "job bad is idle: pause applies only to a queued or running job"
expect_refused "rate= of an idle job: EINVAL" bad rate=1M \
	EINVAL "Invalid argument" "job bad is idle: rate= applies only to .*"
expect_refused "resume of an idle job: EINVAL" bad resume \
	EINVAL "Invalid argument" "job bad is idle: only a paused or interrupted job can be resumed"
expect_refused "pause of a finished job: EINVAL" r-16m pause \
	EINVAL "Invalid argument" "job r-16m has already ended \(done\): pause applies only to a queued or running job"
expect_refused "rate= of a finished job: EINVAL" r-16m rate=1M \
	EINVAL "Invalid argument" "job r-16m has already ended \(done\): rate= applies only to .*"
check "the finished job's rate is as it was" 16777216 "$(job_field r-16m rate)"

# On a running job: a bad rate changes nothing, resume is not for it.
mkdir "$jobs/run"
echo "copy from=$work/big.img to=$work/big-out.img rate=8M" >"$jobs/run/ctl"
expect_refused "rate=0 of a running job: EINVAL" run rate=0 \
	EINVAL "Invalid argument" "rate '0' is below 4096 bytes per second.*"
check "the running job's rate is as it was" 8388608 "$(job_field run rate)"
expect_refused "resume of a running job: EINVAL" run resume \
	EINVAL "Invalid argument" "job run is running: only a paused or interrupted job can be resumed"
echo cancel >"$jobs/run/ctl"
timeout 60 cat "$jobs/run/wait" >/dev/null

# kcopydfs --rate refuses what rate= refuses, as a usage error (exit 2), before mounting.
for bad_rate in 0 4095 fast 16MB; do
	bad_mnt=$(mktemp -d "$work/badrate.XXXXXX")
	timeout 10 "$KCOPYDFS" -f --rate="$bad_rate" "$bad_mnt" 2>"$work/badrate.err"
	status=$?
	check "kcopydfs --rate=$bad_rate: exit 2" 2 "$status"
	check "kcopydfs --rate=$bad_rate: says why" yes \
		"$(grep -q -- "--rate: rate '$bad_rate'" "$work/badrate.err" && echo yes || echo "no: $(head -c 200 "$work/badrate.err")")"
	is_mounted "$bad_mnt" && fusermount3 -u "$bad_mnt"
done

finish
