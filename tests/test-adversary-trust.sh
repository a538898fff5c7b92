#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-adversary-trust.sh: what a local user can do with issue 17's controls
# (pause, resume, rate=, hash=, flags=verify, metrics) to a root kcopydfs
# mounted with -o allow_other.  The attacker is nobody:
#   setpriv --reuid=65534 --regid=65534 --clear-groups
#  - nobody cannot pause, resume or re-rate root's job, nor read its status
#    (its digests), and learns none of root's paths from stats or metrics;
#  - odd ctl words (rate= with nothing, 0, past 64 bits, two rates, pause
#    and resume from 8 writers at once) are refused or taken, and the
#    daemon's count of paused jobs stays what the jobs say;
#  - a job limited to rate=4K holds no more than its rate keeps busy: over a
#    sparse source with flags=verify its copy phase is free (holes are not
#    read), but its read-back goes at 4 KiB/s (plus the one sub-job a fresh
#    bucket lets start) and holds one sub-job's buffers, not the whole depth
#    (issue 17: "a limited job holds fewer buffers and never starves other
#    jobs of the page budget");
#  - stats' throttled_ns counts a job's wait for its rate while it waits.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-adversary-trust.sh
# Needs root, setpriv and python3; exits 77 (skipped) without them.
# Each check prints PASS or FAIL with what it expected and what it got;
# the last line is "N passed, M failed".

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics setpriv python3 timeout truncate
setup_work 256M

NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
PYTHON=
for candidate in /usr/bin/python3 /usr/local/bin/python3 "$(command -v python3)"; do
	[ -x "$candidate" ] && "${NOBODY[@]}" "$candidate" -c '' 2>/dev/null && PYTHON=$candidate && break
done
[ -n "$PYTHON" ] || skip_all "no python3 that uid 65534 can run"

# status_field JOB FIELD: FIELD's value in JOB's status, read as root.
status_field() {
	sed -n "s/^$2: //p" "$mnt/jobs/$1/status"
}

head -c 8M /dev/urandom >"$work/root-secret-src.img"
truncate -s 8M "$work/root-secret-dst.img"
chmod 0600 "$work/root-secret-src.img" "$work/root-secret-dst.img"
mkdir "$work/nobody"
chown 65534:65534 "$work/nobody"
# 64 GiB of holes: its copy phase would be over in seconds unthrottled.
"${NOBODY[@]}" truncate -s 64G "$work/nobody/holes.img" "$work/nobody/holes-copy.img"

start_daemon -o allow_other || { fail "kcopydfs mounts" "a mount" "$(tail -n 3 "$work/kcopydfs.log")"; finish; }
mnt=$daemon_mount

# --- another user's job ----------------------------------------------------------------------

mkdir "$mnt/jobs/root-job"
echo "copy from=$work/root-secret-src.img to=$work/root-secret-dst.img hash=sha256 flags=verify rate=4K" \
	>"$mnt/jobs/root-job/ctl"
for word in pause resume rate=none rate=1G cancel; do
	if "${NOBODY[@]}" sh -c "echo $word >'$mnt/jobs/root-job/ctl'" 2>/dev/null; then
		fail "nobody writes '$word' to root's ctl" "refused" "taken"
	else
		pass "nobody cannot write '$word' to root's ctl"
	fi
done
check "root's job is still running at its own rate after nobody's tries" "running 4096" \
	"$(status_field root-job state) $(status_field root-job rate)"
if "${NOBODY[@]}" cat "$mnt/jobs/root-job/status" >/dev/null 2>&1; then
	fail "nobody reads root's status (its digests)" "refused" "read"
else
	pass "nobody cannot read root's status (its digests)"
fi
leaks=$("${NOBODY[@]}" cat "$mnt/stats" "$mnt/metrics" | grep -c -e root-secret -e root-job)
check "stats and metrics, read by nobody, name none of root's paths or jobs" 0 "$leaks"

# --- odd ctl words ---------------------------------------------------------------------------

"${NOBODY[@]}" mkdir "$mnt/jobs/odd"
"${NOBODY[@]}" sh -c "echo 'copy from=$work/nobody/holes.img to=$work/nobody/holes-copy.img rate=4K' \
	>'$mnt/jobs/odd/ctl'"
for word in "rate=" "rate=0" "rate=4095" "rate=16E" "rate=17179869184T" "rate=4K rate=8K" "rate=-1"; do
	if "${NOBODY[@]}" sh -c "echo '$word' >'$mnt/jobs/odd/ctl'" 2>/dev/null; then
		fail "ctl '$word' on a running job" "refused" "taken"
	else
		pass "ctl '$word' on a running job is refused: $(status_field odd rejected)"
	fi
done
check "the refused words left the rate as it was" 4096 "$(status_field odd rate)"
# Eight writers at once, each its own descriptor, pause/resume/rate in any order.
writers=()
for _ in 1 2 3 4 5 6 7 8; do
	"${NOBODY[@]}" "$PYTHON" - "$mnt/jobs/odd/ctl" <<'PY' &
import os, random, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
for _ in range(500):
    try:
        os.write(fd, random.choice([b"pause\n", b"resume\n", b"rate=4K\n", b"rate=none\n", b"rate=1G\n"]))
    except OSError:
        pass
os.close(fd)
PY
	writers+=($!)
done
wait "${writers[@]}"
if kill -0 "$daemon_pid" 2>/dev/null; then pass "the daemon lives through 4000 racing pause/resume/rate writes"; else
	fail "the daemon after racing ctl writes" "alive" "gone"; finish; fi
state=$(status_field odd state)
expected_paused=0
[ "$state" = paused ] && expected_paused=1
check "stats' jobs_paused is what the job's state says ($state)" "$expected_paused" \
	"$(sed -n 's/^jobs_paused: //p' "$mnt/stats")"
"${NOBODY[@]}" sh -c "echo cancel >'$mnt/jobs/odd/ctl'"
timeout 30 cat "$mnt/jobs/odd/wait" >/dev/null
echo cancel >"$mnt/jobs/root-job/ctl"
timeout 30 cat "$mnt/jobs/root-job/wait" >/dev/null

# --- a rate that holds the page budget -------------------------------------------------------

# A rate counts bytes read (kcopyd_submit_options(3)): the source's data, and with flags=verify
# every destination's read-back; holes cost nothing (as qemu's mirror counts no zero ranges),
# so a sparse copy's copy phase goes at full speed.  Its read-back, which reads every byte,
# must then go at the rate: nobody's rate=4K job over 1 GiB of holes reads back one sub-job
# (the fresh bucket's first) and waits, holding no more buffers than that one.
"${NOBODY[@]}" truncate -s 1G "$work/nobody/holes1g.img" "$work/nobody/holes1g-copy.img"
"${NOBODY[@]}" mkdir "$mnt/jobs/slow"
"${NOBODY[@]}" sh -c "echo 'copy from=$work/nobody/holes1g.img to=$work/nobody/holes1g-copy.img rate=4K flags=verify' \
	>'$mnt/jobs/slow/ctl'"
for _ in $(seq 300); do
	case $(status_field slow verify) in running*) break ;; esac
	sleep 0.1
done
verify_line=$(status_field slow verify)
case $verify_line in
running*) pass "rate=4K over holes: the copy phase went unthrottled, the read-back began ($verify_line)" ;;
*) fail "rate=4K over holes: the read-back began within 30 s" "verify: running D/T" "verify: $verify_line" ;;
esac
sleep 2
pages=$(sed -n 's/^pages_in_use: //p' "$mnt/stats")
verified=$(status_field slow verify)
verified=${verified#running }
verified=${verified%%/*}
# 2 s at 4 KiB/s is 16 sectors; a fresh bucket lets one sub-job (2048 sectors) start first.
# The upper bound only: a slower machine reads back less, never more.
if [ "${verified:-0}" -le $((2048 + 2 * 2 * 4096 / 512)) ] 2>/dev/null; then
	pass "rate=4K: the read-back of 1 GiB holds its rate: $verified sectors in 2 s"
else
	fail "rate=4K: sectors read back in 2 s" "at most $((2048 + 16))" "$verified"
fi
if [ "$pages" -le 256 ]; then
	pass "rate=4K: the throttled read-back holds at most one sub-job's pages: $pages"
else
	fail "pages held by nobody's one rate=4K job (the budget is 16384)" "at most 256" "$pages"
fi
"${NOBODY[@]}" sh -c "echo cancel >'$mnt/jobs/slow/ctl'"
timeout 30 cat "$mnt/jobs/slow/wait" >/dev/null

# --- the time a throttled job waits, in stats and metrics ------------------------------------

# A dense 1 MiB-plus source at rate=4K: the first sub-job starts, the next waits 256 s for
# its credit.  stats' throttled_ns (metrics' kcopyd_throttled_seconds_total) must count
# that wait while it lasts, not only once it is over, or a scraper sees a job held back
# for minutes as never throttled.
head -c 2M /dev/urandom >"$work/nobody/dense.img"
truncate -s 2M "$work/nobody/dense-copy.img"
chown 65534:65534 "$work/nobody/dense.img" "$work/nobody/dense-copy.img"
before=$(sed -n 's/^throttled_ns: //p' "$mnt/stats")
"${NOBODY[@]}" mkdir "$mnt/jobs/waiting"
"${NOBODY[@]}" sh -c "echo 'copy from=$work/nobody/dense.img to=$work/nobody/dense-copy.img rate=4K' \
	>'$mnt/jobs/waiting/ctl'"
sleep 2
throttled=$(sed -n 's/^throttled_ns: //p' "$mnt/stats")
if [ "${throttled:-0}" -gt "${before:-0}" ]; then
	pass "stats' throttled_ns counts a wait under way: $before, then $throttled"
else
	fail "stats' throttled_ns 2 s into a rate=4K job's 256 s wait" "above $before" "$throttled"
fi
"${NOBODY[@]}" sh -c "echo cancel >'$mnt/jobs/waiting/ctl'"
timeout 30 cat "$mnt/jobs/waiting/wait" >/dev/null

finish
