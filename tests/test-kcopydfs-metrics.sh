#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopydfs-metrics.sh: the metrics file of a real mount (kcopydfs(5),
# doc/METRICS.md):
#  - `promtool check metrics` finds nothing to say, idle and while jobs run;
#  - after copies, a zero job and a failed read, every number that stats
#    also shows is the same (bytes are its sectors times 512), and the ones
#    that count something did count it;
#  - the kcopyd_jobs gauges follow jobs through idle, queued, running,
#    paused, cancelled, done, failed and, after a SIGKILL and a restart
#    with --state-dir, interrupted: each time they are what the jobs' state
#    files say;
#  - with issue 17 in the daemon (its statuses have a rate: line): a copy
#    with hash=sha256 and verify counts its bytes hashed and verified once,
#    --rate is the rate gauge, and a copy at rate=2M adds throttled time
#    (a daemon without it: those are 0, and pause is not tried);
#  - a reader that reads in pieces while jobs run gets one well-formed text;
#  - another user (nobody) with -o allow_other reads metrics as it reads
#    stats, finds no job's name or path in it, and without allow_other is
#    refused both alike;
#  - through a symlink as node_exporter's textfile collector would take it:
#    a reader that stats (size 0) and then reads to EOF as Go's os.ReadFile
#    does gets the whole text, and the real collector (when installed),
#    running as nobody, exports the numbers with no scrape error.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-kcopydfs-metrics.sh
# Needs root (tmpfs, FUSE with allow_other, loop-free nbdfuse exports),
# promtool (Debian's prometheus package), nbdkit and nbdfuse; exits 77
# (skipped) without them.

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics promtool python3 setpriv nbdkit nbdfuse truncate cmp
nbdkit --filter=error --filter=delay memory --dump-plugin >/dev/null 2>&1 ||
	skip_all "nbdkit lacks the error or delay filter"
setup_work 512M

NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
SECRET=metrics-secret-name
SIZE_MIB=8

# metric FILE SERIES: the value of SERIES (a name with its labels, as written) in FILE.
metric() {
	awk -v series="$2" '$1 == series { print $2 }' "$1"
}

# stat_key FILE KEY: KEY's value in a copy of the stats file.
stat_key() {
	sed -n "s/^$2: //p" "$1"
}

# promtool_clean NAME FILE: promtool check metrics has nothing to say of FILE.
promtool_clean() {
	local said status

	said=$(promtool check metrics <"$2" 2>&1)
	status=$?
	if [ "$status" = 0 ] && [ -z "$said" ]; then
		pass "$1"
	else
		fail "$1" "exit 0, nothing said" "exit $status: $(printf '%s' "$said" | tr '\n' '|')"
	fi
}

# read_pieces PATH PIECE OUT: PATH read to EOF PIECE bytes at a time, into OUT; prints the number of reads.
read_pieces() {
	python3 - "$@" <<'EOF'
import os, sys
path, piece, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fd = os.open(path, os.O_RDONLY)
data, reads = b"", 0
while True:
    chunk = os.read(fd, piece)
    reads += 1
    if not chunk:
        break
    data += chunk
os.close(fd)
open(out, "wb").write(data)
print(reads)
EOF
}

# read_like_go PATH OUT: PATH read as Go's os.ReadFile reads it (node_exporter's
# textfile collector): stat, a buffer of the size + 1 (512 at least), reads
# into the free part until EOF, the buffer grown when full.  Prints "SIZE READS".
read_like_go() {
	python3 - "$@" <<'EOF'
import os, sys
path, out = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
capacity = max(size + 1, 512)
data, reads = bytearray(), 0
while True:
    chunk = os.read(fd, capacity - len(data))
    reads += 1
    if not chunk:
        break
    data += chunk
    if len(data) >= capacity:
        capacity *= 2
os.close(fd)
open(out, "wb").write(data)
print(size, reads)
EOF
}

# series_of FILE: its kcopyd_ series, a line each, labels in their name's order, sorted.
series_of() {
	grep '^kcopyd_' "$1" | awk '{ print $1 }' | python3 -c '
import re, sys
for line in sys.stdin:
    name, _, labels = line.strip().partition("{")
    print(name + ("{" + ",".join(sorted(labels.rstrip("}").split(","))) + "}" if labels else ""))' | sort
}

# tally_states MOUNT: "STATE COUNT" for every job, from the jobs' state files.
tally_states() {
	local dir
	for dir in "$1"/jobs/*/; do
		[ -d "$dir" ] && cat "$dir/state"
	done | sort | uniq -c | awk '{ print $2, $1 }'
}

# check_gauges NAME MOUNT: every kcopyd_jobs{state=...} is the number of jobs whose state file says it.
check_gauges() {
	local name=$1 mount=$2 expected got line state count try

	# The state files and the metrics are two reads: a job that moves between them (a queued
	# job takes the buffers a paused one gave back) is not a miscount.  Read until the states
	# are the same before and after the metrics.
	for try in $(seq 20); do
		tally_states "$mount" >"$work/tally"
		cat "$mount/metrics" >"$work/gauges.prom"
		tally_states "$mount" >"$work/tally.after"
		cmp -s "$work/tally" "$work/tally.after" && break
		sleep 0.05
	done
	expected= got=
	while read -r line; do
		state=${line#kcopyd_jobs\{state=\"}
		state=${state%%\"*}
		count=$(awk -v s="$state" '$1 == s { print $2 }' "$work/tally")
		expected+="$state=${count:-0} "
		got+="$state=${line##* } "
	done < <(grep '^kcopyd_jobs{state="' "$work/gauges.prom")
	for state in $(awk '{ print $1 }' "$work/tally"); do
		grep -q "^kcopyd_jobs{state=\"$state\"} " "$work/gauges.prom" || got+="($state missing) "
	done
	check "$name" "$expected" "$got"
}

# state_is MOUNT JOB STATE: JOB's state file says STATE.
state_is() {
	[ "$(cat "$1/jobs/$2/state" 2>/dev/null)" = "$3" ]
}

# start_job MOUNT NAME DESCRIPTION: mkdir and write the description; FAIL if refused.
start_job() {
	mkdir "$1/jobs/$2"
	write_ctl "$1/jobs/$2/ctl" "$3"
	[ "$write_status" = 0 ] || fail "job $2 is taken: $3" "write status 0" "$write_status: $write_said"
}

head -c $((SIZE_MIB << 20)) /dev/urandom >"$work/src.img"
truncate -s $((SIZE_MIB << 20)) "$work/d0.img" "$work/d1.img" "$work/z.img"
# Destinations of the slow and the failing source (sparse on the tmpfs).
truncate -s 256M "$work/slow-a.img" "$work/slow-b.img" "$work/slow-d.img"
truncate -s 4M "$work/slow-c.img"
# A source of 256 MiB whose reads each take 250 ms: with a budget of one
# sub-job (--pages 256), a job on it runs for about a minute, long enough to
# look at while it is running, and is cancelled; a second one waits queued
# all that time (the engine serves the first job's sub-jobs first).
slow_source 256M 250ms || skip_all "nbdfuse did not export a slow source: $(tail -n 3 "$work/nbdfuse.log" | tr '\n' '|')"
slow=$slow_file
# A source whose every read fails (EIO): a job on it fails.
bad_dir=$work/bad
nbd_export "$bad_dir" -r --filter=error pattern 4M error=EIO error-pread-rate=100% ||
	skip_all "nbdfuse did not export a failing source: $(tail -n 3 "$work/nbdfuse.log" | tr '\n' '|')"
bad=$bad_dir/disk
# The source of SIZE_MIB through nbdfuse, read at full speed: a copy from it goes through the buffers.
nbd_export "$work/fast" -r file "file=$work/src.img" ||
	skip_all "nbdfuse did not export a file: $(tail -n 3 "$work/nbdfuse.log" | tr '\n' '|')"
rate_src=$work/fast/disk

# --- the file, idle --------------------------------------------------------------

if ! start_daemon -o allow_other --pages 256; then
	fail "kcopydfs mounts" "a mount at $daemon_mount" "$(tail -n 3 "$work/kcopydfs.log" | tr '\n' '|')"
	finish
fi
mnt=$daemon_mount

check "metrics has the mode and owner of stats" "$(stat -c '%A %U %G' "$mnt/stats")" "$(stat -c '%A %U %G' "$mnt/metrics")"
check "metrics reports a size of 0 (read to EOF)" 0 "$(stat -c %s "$mnt/metrics")"
cat "$mnt/metrics" >"$work/idle.prom"
promtool_clean "promtool check metrics: an idle daemon" "$work/idle.prom"
check "metrics cannot be opened for writing" 1 "$( (echo x >"$mnt/metrics") 2>/dev/null && echo 0 || echo 1)"
check "build_info names the version and the I/O engine of stats" \
	"kcopyd_build_info{version=\"$(sed 's/^kcopydfs //' "$mnt/version")\",io_engine=\"$(stat_key "$mnt/stats" io_engine)\"} 1" \
	"$(grep '^kcopyd_build_info' "$work/idle.prom")"
start=$(metric "$work/idle.prom" kcopyd_start_time_seconds)
now=$(date +%s)
if awk -v s="$start" -v n="$now" -v m="$(stat -c %Y "$mnt")" 'BEGIN { exit !(int(s) <= n && int(s) == m) }'; then
	pass "kcopyd_start_time_seconds is when the daemon started (the mount's mtime)"
else
	fail "kcopyd_start_time_seconds" "the mount's mtime $(stat -c %Y "$mnt"), not after $now" "$start"
fi
check_gauges "no jobs: every state's gauge is 0" "$mnt"

# --- the job gauges through a job's states ------------------------------------------

mkdir "$mnt/jobs/$SECRET-idle"
check_gauges "an idle job" "$mnt"
# A daemon with issue 17 (pause, hash=, verify, rates) says so in every status: its rate: line.
trust=0
grep -q '^rate: ' "$mnt/jobs/$SECRET-idle/status" && trust=1
[ "$trust" = 1 ] ||
	echo "NOTE: this daemon's status has no rate: line (no pause, hash=, verify nor --rate): those numbers not followed"
start_job "$mnt" "$SECRET-run" "copy from=$slow to=$work/slow-a.img"
wait_until 100 state_is "$mnt" "$SECRET-run" running
start_job "$mnt" "$SECRET-queued" "copy from=$slow to=$work/slow-b.img"
check "with a budget of one sub-job the second slow job is queued" queued "$(cat "$mnt/jobs/$SECRET-queued/state")"
check_gauges "a running and a queued job (and an idle one)" "$mnt"
promtool_clean "promtool check metrics: jobs running" "$mnt/metrics"

# Pieces of 7 and 100 bytes while the job's counters move: one text, well formed.
for piece in 7 100; do
	reads=$(read_pieces "$mnt/metrics" "$piece" "$work/pieces.prom")
	if [ "$reads" -gt 50 ] && promtool check metrics <"$work/pieces.prom" >/dev/null 2>&1 &&
		[ "$(grep -c '^# TYPE' "$work/pieces.prom")" = "$(grep -c '^# TYPE' "$work/idle.prom")" ]; then
		pass "read in $reads pieces of $piece bytes while a job runs: one whole, well-formed text"
	else
		fail "read in pieces of $piece bytes while a job runs" "a well-formed text (promtool)" \
			"$reads reads: $(promtool check metrics <"$work/pieces.prom" 2>&1 | head -n 3 | tr '\n' '|')"
	fi
done

# paused (issue 17): a flag on a queued or running job, shown by its state file and counted apart.
if [ "$trust" = 1 ]; then
	write_ctl "$mnt/jobs/$SECRET-run/ctl" pause
	if [ "$write_status" = 0 ] && wait_until 100 state_is "$mnt" "$SECRET-run" paused; then
		check_gauges "a paused job" "$mnt"
		check "kcopyd_jobs{state=\"paused\"} while paused" 1 "$(metric "$mnt/metrics" 'kcopyd_jobs{state="paused"}')"
		write_ctl "$mnt/jobs/$SECRET-run/ctl" resume
		wait_until 100 state_is "$mnt" "$SECRET-run" running
		check_gauges "the paused job resumed" "$mnt"
	else
		fail "pause a running job" "state paused" "write $write_status ($write_said), state $(cat "$mnt/jobs/$SECRET-run/state")"
	fi
fi

before=$(metric "$mnt/metrics" 'kcopyd_jobs_ended_total{state="cancelled"}')
write_ctl "$mnt/jobs/$SECRET-run/ctl" cancel
write_ctl "$mnt/jobs/$SECRET-queued/ctl" cancel
wait_until 100 state_is "$mnt" "$SECRET-run" cancelled
wait_until 100 state_is "$mnt" "$SECRET-queued" cancelled
check_gauges "two cancelled jobs" "$mnt"
check "kcopyd_jobs_ended_total{state=\"cancelled\"} counted both" $((before + 2)) \
	"$(metric "$mnt/metrics" 'kcopyd_jobs_ended_total{state="cancelled"}')"

run_job "$mnt/jobs" "$SECRET-copy" "copy from=$work/src.img to=$work/d0.img to=$work/d1.img"
run_job "$mnt/jobs" "$SECRET-zero" "zero to=$work/z.img"
run_job "$mnt/jobs" "$SECRET-bad" "copy from=$bad to=$work/slow-c.img"
check "the copy is done" done "$(final "$SECRET-copy" state)"
check "the job reading a failing source failed" failed "$(final "$SECRET-bad" state)"
if [ "$trust" = 1 ]; then
	run_job "$mnt/jobs" "$SECRET-hash" "copy from=$work/src.img to=$work/d0.img hash=sha256 flags=verify"
	check "the copy with hash=sha256 and verify is done" done "$(final "$SECRET-hash" state)"
fi
check_gauges "done, failed, cancelled and idle jobs" "$mnt"

# --- the counters against stats -------------------------------------------------------------

# Nothing runs now: two reads show the same numbers (but heap_in_use, which moves with every read).
cat "$mnt/stats" >"$work/stats"
cat "$mnt/metrics" >"$work/after.prom"
promtool_clean "promtool check metrics: after copies, a zero job and a failed read" "$work/after.prom"
mismatches=
for pair in read_bytes_total:sectors_read written_bytes_total:sectors_written zeroed_bytes_total:sectors_zero \
	offloaded_bytes_total:sectors_offloaded; do
	want=$(($(stat_key "$work/stats" "${pair#*:}") * 512))
	got=$(metric "$work/after.prom" "kcopyd_${pair%%:*}")
	[ "$got" = "$want" ] || mismatches+="kcopyd_${pair%%:*} $got, stats ${pair#*:} * 512 = $want; "
done
for pair in read_errors_total:read_errors write_errors_total:write_errors zero_fallbacks_total:zero_fallbacks \
	offload_fallbacks_total:offload_fallbacks jobs_started_total:jobs_total 'jobs_ended_total{state="done"}:jobs_done' \
	'jobs_ended_total{state="failed"}:jobs_failed' 'jobs_ended_total{state="cancelled"}:jobs_cancelled' \
	jobs_max:jobs_max pages_budget:pages_total pages_in_use:pages_in_use pages_peak:pages_peak \
	subjob_depth:depth; do
	want=$(stat_key "$work/stats" "${pair#*:}")
	got=$(metric "$work/after.prom" "kcopyd_${pair%%:*}")
	[ -n "$want" ] && [ "$got" = "$want" ] || mismatches+="kcopyd_${pair%%:*} $got, stats ${pair#*:} $want; "
done
want=$(($(stat_key "$work/stats" subjob_sectors) * 512))
got=$(metric "$work/after.prom" kcopyd_subjob_size_bytes)
[ "$got" = "$want" ] || mismatches+="kcopyd_subjob_size_bytes $got, stats subjob_sectors * 512 = $want; "
sum=$(grep '^kcopyd_jobs{' "$work/after.prom" | awk '{ s += $2 } END { print s }')
[ "$sum" = "$(stat_key "$work/stats" jobs)" ] || mismatches+="the kcopyd_jobs gauges add up to $sum, stats jobs $(stat_key "$work/stats" jobs); "
check "every number stats also shows is the same in metrics" "" "$mismatches"

# They counted what the jobs did: a copy of SIZE to two destinations, a zero
# job of SIZE.  What copy_file_range(2) copied (tmpfs to tmpfs) was not read
# through the buffers: it is in offloaded, once per destination.
size=$((SIZE_MIB << 20))
read_bytes=$(metric "$work/after.prom" kcopyd_read_bytes_total)
offloaded=$(metric "$work/after.prom" kcopyd_offloaded_bytes_total)
written=$(metric "$work/after.prom" kcopyd_written_bytes_total)
zeroed=$(metric "$work/after.prom" kcopyd_zeroed_bytes_total)
if [ $((read_bytes + offloaded)) -ge "$size" ] && [ "$written" -ge $((3 * size)) ] && [ "$zeroed" -ge "$size" ]; then
	pass "bytes read $read_bytes + offloaded $offloaded >= $size, written $written >= 3 * $size, zeroed $zeroed >= $size"
else
	fail "the bytes counted" "read + offloaded >= $size, written >= $((3 * size)), zeroed >= $size" \
		"read $read_bytes, offloaded $offloaded, written $written, zeroed $zeroed"
fi
if [ "$(metric "$work/after.prom" kcopyd_read_errors_total)" -ge 1 ]; then
	pass "the failed read is counted in kcopyd_read_errors_total"
else
	fail "kcopyd_read_errors_total after a failed read" ">= 1" "$(metric "$work/after.prom" kcopyd_read_errors_total)"
fi
check "kcopyd_jobs_created_total counts every mkdir" $((6 + trust)) "$(metric "$work/after.prom" kcopyd_jobs_created_total)"
# hashed, verified and verify_errors are the engine's (issue 17): the one copy that asked, once; else 0.
check "kcopyd_hashed_bytes_total: the source of the hashing copy, once" $((trust * size)) \
	"$(metric "$work/after.prom" kcopyd_hashed_bytes_total)"
check "kcopyd_verified_bytes_total: its one destination, read back" $((trust * size)) \
	"$(metric "$work/after.prom" kcopyd_verified_bytes_total)"
check "kcopyd_verify_errors_total: none, the destination is good" 0 "$(metric "$work/after.prom" kcopyd_verify_errors_total)"
check "kcopyd_rate_limit_bytes_per_second is 0 without --rate" 0 "$(metric "$work/after.prom" kcopyd_rate_limit_bytes_per_second)"

# --- another user -----------------------------------------------------------------------

if "${NOBODY[@]}" cat "$mnt/stats" >/dev/null 2>&1 && "${NOBODY[@]}" cat "$mnt/metrics" >"$work/nobody.prom" 2>&1; then
	pass "with allow_other, nobody reads stats and metrics alike"
else
	fail "nobody reads stats and metrics (allow_other)" "both readable" \
		"stats: $("${NOBODY[@]}" cat "$mnt/stats" 2>&1 >/dev/null), metrics: $(head -c 200 "$work/nobody.prom")"
fi
promtool_clean "promtool check metrics: nobody's read" "$work/nobody.prom"
check "nobody's read has the same series as root's" "$(grep -v '^#' "$work/after.prom" | awk '{ print $1 }')" \
	"$(grep -v '^#' "$work/nobody.prom" | awk '{ print $1 }')"
check "nothing of a job's name, owner or paths in metrics" "" \
	"$(grep -e "$SECRET" -e "$work" -e "$slow" "$work/nobody.prom" "$work/after.prom")"

# --- node_exporter's textfile collector, through a symlink ---------------------------------

textfile=$work/textfile
mkdir -m 0755 "$textfile"
ln -s "$mnt/metrics" "$textfile/kcopyd.prom"
read -r size_seen reads < <(read_like_go "$textfile/kcopyd.prom" "$work/go.prom")
grep -v '^kcopyd_heap_bytes ' "$work/go.prom" >"$work/go.stable"
cat "$mnt/metrics" | grep -v '^kcopyd_heap_bytes ' >"$work/cat.stable"
if [ "$size_seen" = 0 ] && [ "$reads" -gt 2 ] && cmp -s "$work/go.stable" "$work/cat.stable"; then
	pass "read as os.ReadFile does through the symlink (st_size 0, $reads reads): the whole text"
else
	fail "read as os.ReadFile does through the symlink" "st_size 0, more than 2 reads, the text cat reads" \
		"st_size $size_seen, $reads reads, $(diff "$work/cat.stable" "$work/go.stable" | head -n 4 | tr '\n' '|')"
fi
promtool_clean "promtool check metrics: the symlink's read" "$work/go.prom"

exporter=$(command -v prometheus-node-exporter || command -v node_exporter)
if [ -n "$exporter" ]; then
	port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	"${NOBODY[@]}" "$exporter" --collector.disable-defaults --collector.textfile \
		--collector.textfile.directory="$textfile" --web.listen-address="127.0.0.1:$port" \
		>"$work/node_exporter.log" 2>&1 &
	exporter_pid=$!
	background_pids+=("$exporter_pid")
	scrape() {
		python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
			"http://127.0.0.1:$port/metrics" >"$work/scrape.txt" 2>/dev/null
	}
	if wait_until 100 scrape; then
		check "node_exporter (as nobody) read the symlink without a scrape error" 0 \
			"$(metric "$work/scrape.txt" node_textfile_scrape_error)"
		# node_exporter writes 1.6777216e+07 for 16777216, and labels in their name's order.
		check "node_exporter exports kcopyd_read_bytes_total as the file says" \
			"$(metric "$work/after.prom" kcopyd_read_bytes_total)" \
			"$(awk '$1 == "kcopyd_read_bytes_total" { printf "%.0f", $2 }' "$work/scrape.txt")"
		check "node_exporter exports every kcopyd_ series of the file" \
			"$(series_of "$work/after.prom")" "$(series_of "$work/scrape.txt")"
	else
		fail "node_exporter serves its metrics" "a scrape of 127.0.0.1:$port" "$(tail -n 3 "$work/node_exporter.log" | tr '\n' '|')"
	fi
	kill "$exporter_pid" 2>/dev/null
	wait "$exporter_pid" 2>/dev/null
else
	echo "NOTE: no prometheus-node-exporter here: the real collector's read is not checked (the reader above is)"
fi

stop_daemon "$daemon_pid" "$mnt"

# --- the daemon's rate limit (issue 17) --------------------------------------------------

if [ "$trust" = 1 ]; then
	if start_daemon --rate 64M; then
		check "kcopyd_rate_limit_bytes_per_second is --rate 64M" $((64 << 20)) \
			"$(metric "$daemon_mount/metrics" kcopyd_rate_limit_bytes_per_second)"
		check "no job waited yet" 0.000000000 "$(metric "$daemon_mount/metrics" kcopyd_throttled_seconds_total)"
		# 8 MiB at 2 MiB/s through the buffers (from FUSE: no copy_file_range): jobs wait for credit.
		run_job "$daemon_mount/jobs" "$SECRET-rate" "copy from=$rate_src to=$work/d1.img rate=2M"
		check "the limited copy is done" done "$(final "$SECRET-rate" state)"
		throttled=$(metric "$daemon_mount/metrics" kcopyd_throttled_seconds_total)
		if awk -v t="$throttled" 'BEGIN { exit !(t > 0) }'; then
			pass "kcopyd_throttled_seconds_total counted the limited copy's waits ($throttled s)"
		else
			fail "kcopyd_throttled_seconds_total after a copy at rate=2M" "> 0" "$throttled"
		fi
		promtool_clean "promtool check metrics: a daemon with --rate" "$daemon_mount/metrics"
		stop_daemon "$daemon_pid" "$daemon_mount"
	else
		fail "kcopydfs mounts with --rate 64M" "a mount" "$(tail -n 3 "$work/kcopydfs.log" | tr '\n' '|')"
	fi
fi

# --- without allow_other, nobody is refused both alike --------------------------------------

if start_daemon; then
	stats_said=$("${NOBODY[@]}" cat "$daemon_mount/stats" 2>&1 >/dev/null; echo "exit $?")
	metrics_said=$("${NOBODY[@]}" cat "$daemon_mount/metrics" 2>&1 >/dev/null; echo "exit $?")
	check "without allow_other nobody is refused metrics as stats" \
		"${stats_said//stats/FILE}" "${metrics_said//metrics/FILE}"
	[[ $metrics_said == *"Permission denied"* ]] && pass "... with EACCES" ||
		fail "nobody's read without allow_other" "Permission denied" "$metrics_said"
	stop_daemon "$daemon_pid" "$daemon_mount"
else
	fail "kcopydfs mounts without allow_other" "a mount" "$(tail -n 3 "$work/kcopydfs.log" | tr '\n' '|')"
fi

# --- interrupted: a job killed with its daemon, restored from --state-dir -------------------

state_dir=$work/state
mkdir -m 0700 "$state_dir"
mnt=$(mktemp -d "${TMPDIR:-/tmp}/test-kcopydfs-mnt.XXXXXX")
if start_daemon_on "$mnt" --state-dir "$state_dir"; then
	start_job "$mnt" "$SECRET-killed" "copy from=$slow to=$work/slow-d.img"
	wait_until 100 state_is "$mnt" "$SECRET-killed" running
	kill -KILL "$daemon_pid"
	wait "$daemon_pid" 2>/dev/null
	if start_daemon_on "$mnt" --state-dir "$state_dir"; then
		check "the job killed with its daemon is interrupted" interrupted "$(cat "$mnt/jobs/$SECRET-killed/state")"
		check_gauges "an interrupted job" "$mnt"
		check "kcopyd_jobs{state=\"interrupted\"}" 1 "$(metric "$mnt/metrics" 'kcopyd_jobs{state="interrupted"}')"
		promtool_clean "promtool check metrics: a restored daemon" "$mnt/metrics"
	else
		fail "kcopydfs restarts with --state-dir" "a mount" "$(tail -n 3 "$work/kcopydfs.log" | tr '\n' '|')"
	fi
else
	fail "kcopydfs mounts with --state-dir" "a mount" "$(tail -n 3 "$work/kcopydfs.log" | tr '\n' '|')"
fi

finish
