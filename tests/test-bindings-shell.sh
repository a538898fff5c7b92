#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-bindings-shell.sh: contrib/shell/kcopyd.sh against a daemon of its
# own: kc_submit with one and three destinations (checked with cmp),
# kc_status of the whole status and of one key, kc_wait's exit statuses
# (0 done, 1 cancelled, 124 after a timeout), a refused description (the
# reason on stderr, the job removed), kc_pause, kc_rate, kc_resume (refusals
# with their reasons), kc_cancel, kc_remove (EBUSY while
# running), bad arguments, a directory that is no mount; and the same
# functions sourced by dash, to keep them POSIX.
#
# Run by `make check` (which exports KCOPYDFS and TESTS_SRCDIR), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-bindings-shell.sh
# Needs root, nbdkit and nbdfuse (a slow source); exits 77 (skipped)
# without them.
#
# Every check prints PASS or FAIL with what it expected and what it got;
# the last line is "N passed, M failed"; the exit status is 1 on any failure.

set -u
TESTS_SRCDIR=${TESTS_SRCDIR:-$(dirname "$0")}
. "$TESTS_SRCDIR/kcopydfs-lib.sh"
KCOPYD_SH=$TESTS_SRCDIR/../contrib/shell/kcopyd.sh
. "$KCOPYD_SH"

require_basics cmp timeout nbdkit nbdfuse
setup_work 96M

SIZE=$((4 << 20))
SECTORS=$((SIZE / 512))

binding_fixture "$SIZE" $((2 * SIZE))

# check_match NAME REGEX TEXT
check_match() {
	if [[ "$3" =~ $2 ]]; then pass "$1"; else fail "$1" "matching /$2/" "$3"; fi
}

# same_bytes NAME DEST DEST_BYTE SRC_BYTE BYTES: cmp a range of DEST with one of src.img.
same_bytes() {
	local got
	if got=$(cmp -n "$5" "$work/src.img" "$2" "$4" "$3" 2>&1); then
		pass "$1"
	else
		fail "$1" "$(basename "$2") bytes $3+$5 equal to src.img's $4+$5" "$got"
	fi
}

# --- one destination --------------------------------------------------------

job=$(kc_submit "$mnt" "copy from=$work/src.img to=$work/d0.img" 2>"$work/err")
check "kc_submit, one destination: exit status" 0 "$?"
check_match "kc_submit prints the job's directory" "^$(re_quote "$mnt")/jobs/[0-9]+$" "$job"
kc_wait "$job" >"$work/out" 2>"$work/err"
check "kc_wait of a copy that succeeds: exit status" 0 "$?"
check "kc_wait prints the final status" "state: done|progress: $SECTORS/$SECTORS" \
	"$(head -n 2 "$work/out" | paste -sd '|')"
same_bytes "the copy to one destination" "$work/d0.img" 0 0 "$SIZE"
check "kc_status JOB progress" "$SECTORS/$SECTORS" "$(kc_status "$job" progress)"
check "kc_status JOB prints 15 lines (the first nine, the sparse counts, checkpoint, rate, verify)" 15 "$(kc_status "$job" | wc -l)"
# src.img is random bytes: every sector is data, and the whole copy is past the checkpoint.
check "kc_status JOB sectors_data, sectors_zero and checkpoint of a dense copy" "$SECTORS 0 $SECTORS" \
	"$(kc_status "$job" sectors_data) $(kc_status "$job" sectors_zero) $(kc_status "$job" checkpoint)"
kc_status "$job" nosuchkey >"$work/out" 2>"$work/err"
check "kc_status of a key that is not there: exit status" 1 "$?"
check_match "kc_status of a key that is not there: the message" "has no 'nosuchkey' line" "$(cat "$work/err")"
kc_remove "$job"
check "kc_remove of an ended job: exit status" 0 "$?"
check "the job after kc_remove" "gone" "$([ -e "$job" ] && echo there || echo gone)"

# --- three destinations at offsets ------------------------------------------

half=$((SECTORS / 2))
job=$(kc_submit "$mnt" "copy from=$work/src.img:$half+$half to=$work/d0.img to=$work/d1.img:100 to=$work/d2.img:2M")
check "kc_submit, three destinations: exit status" 0 "$?"
kc_wait "$job" 10 >"$work/out"
check "kc_wait JOB 10 of three destinations: exit status" 0 "$?"
same_bytes "three destinations: #0 at 0" "$work/d0.img" 0 $((half * 512)) $((half * 512))
same_bytes "three destinations: #1 at sector 100" "$work/d1.img" $((100 * 512)) $((half * 512)) $((half * 512))
same_bytes "three destinations: #2 at 2 MiB" "$work/d2.img" $((2 << 20)) $((half * 512)) $((half * 512))
kc_remove "$job"

# --- refused descriptions ---------------------------------------------------------

before=$(ls "$mnt/jobs" | paste -sd ' ')
job=$(kc_submit "$mnt" "copy from=$work/src.img to=$work/missing.img" 2>"$work/err")
check "kc_submit of a missing destination: exit status" 1 "$?"
check "kc_submit of a missing destination prints nothing on stdout" "" "$job"
check "kc_submit of a missing destination: the reason" \
	"kc_submit: refused: to=$work/missing.img: $(errno_text ENOENT) (ENOENT)" "$(cat "$work/err")"
kc_submit "$mnt" "copy from=$work/src.img:1+8 to=$work/d0.img:0+16" 2>"$work/err"
check "kc_submit of a COUNT that differs: exit status" 1 "$?"
check_match "kc_submit of a COUNT that differs: the reason" "^kc_submit: refused: .*\(EINVAL\)$" "$(cat "$work/err")"
# An NBD URI region goes to the daemon as it was written: no path made of it,
# no quoting (the daemon names it in its reason).  Connecting is not tested here.
uri="nbd+unix:///disk?socket=$work/no-such.sock"
kc_submit "$mnt" "copy from=$uri:8+8 to=$work/d0.img" 2>"$work/err"
check "kc_submit of a URI region to a socket nobody serves: exit status" 1 "$?"
check_match "kc_submit of a URI region: the reason names the URI as written" \
	"^kc_submit: refused: .*from=\"?$(re_quote "$uri")[\":]" "$(cat "$work/err")"
check "refused jobs are removed" "$before" "$(ls "$mnt/jobs" | paste -sd ' ')"

# --- a timeout, cancel, remove of a running job -------------------------------------

job=$(kc_submit "$mnt" "copy from=$slow_file to=$work/big.img")
started=$(date +%s%N)
kc_wait "$job" 0.3 >"$work/out" 2>"$work/err"
status=$?
waited_ms=$((($(date +%s%N) - started) / 1000000))
check "kc_wait JOB 0.3 of a job of seconds: exit status" 124 "$status"
check_match "kc_wait's timeout message" "^kc_wait: .*: still (queued|running) after 0.3 s$" "$(cat "$work/err")"
if [ "$waited_ms" -ge 250 ] && [ "$waited_ms" -lt 3000 ]; then
	pass "kc_wait JOB 0.3 returns after about 0.3 s ($waited_ms ms)"
else
	fail "kc_wait JOB 0.3 returns after about 0.3 s" "250 to 3000 ms" "$waited_ms ms"
fi
check_match "the job goes on after the timeout" "^(queued|running)$" "$(kc_status "$job" state)"
kc_remove "$job" 2>"$work/err"
check "kc_remove of a running job: exit status" 1 "$?"
check_match "kc_remove of a running job: the message" "$(errno_text EBUSY)" "$(cat "$work/err")"
kc_pause "$job"
check "kc_pause: exit status" 0 "$?"
check "kc_pause: the state" paused "$(kc_status "$job" state)"
kc_pause "$job" 2>"$work/err"
check "kc_pause of a paused job: exit status" 1 "$?"
check_match "kc_pause of a paused job: the reason" "^kc_pause: refused: .*paused already \(EALREADY\)$" "$(cat "$work/err")"
kc_rate "$job" 0 2>"$work/err"
check "kc_rate JOB 0: exit status" 1 "$?"
check_match "kc_rate JOB 0: the reason" "^kc_rate: refused: rate '0' is below 4096 .*\(EINVAL\)$" "$(cat "$work/err")"
kc_rate "$job" 1M
check "kc_rate JOB 1M: exit status" 0 "$?"
check "kc_rate JOB 1M: the status's rate" 1048576 "$(kc_status "$job" rate)"
kc_resume "$job"
check "kc_resume: exit status" 0 "$?"
check_match "kc_resume: the state" "^(queued|running)$" "$(kc_status "$job" state)"
kc_cancel "$job"
check "kc_cancel: exit status" 0 "$?"
kc_wait "$job" 15 >"$work/out"
check "kc_wait of a cancelled job: exit status" 1 "$?"
check "kc_wait of a cancelled job: the state" "cancelled" "$(sed -n 's/^state: //p' "$work/out")"
progress=$(sed -n 's/^progress: //p' "$work/out")
if [ "${progress%/*}" -lt "${progress#*/}" ] 2>/dev/null; then
	pass "a cancelled job keeps its progress ($progress)"
else
	fail "a cancelled job keeps its progress" "DONE/TOTAL with DONE < TOTAL" "$progress"
fi
kc_remove "$job"
check "kc_remove after cancel and wait: the job" "gone" "$([ -e "$job" ] && echo there || echo gone)"

# --- bad input -------------------------------------------------------------------

for call in "kc_submit $mnt" "kc_status" "kc_wait" "kc_cancel" "kc_remove" "kc_pause" "kc_resume" "kc_rate x"; do
	$call >"$work/out" 2>"$work/err"
	status=$?
	label=${call/"$mnt"/MOUNT}
	if [ "$status" = 2 ] && grep -q "^usage: ${call%% *} " "$work/err"; then
		pass "$label with too few arguments: exit 2 and the usage"
	else
		fail "$label with too few arguments" "exit 2, usage: ${call%% *} ..." "exit $status, $(cat "$work/err")"
	fi
done
job=$(kc_submit "$mnt" "copy from=$work/src.img to=$work/d0.img")
kc_wait "$job" soon >"$work/out" 2>"$work/err"
check "kc_wait JOB soon: exit status" 2 "$?"
check "kc_wait JOB soon: the message" "kc_wait: 'soon' is not a number of seconds" "$(cat "$work/err")"
kc_wait "$job" >/dev/null && kc_remove "$job"
kc_submit "$work" "copy from=$work/src.img to=$work/d0.img" >"$work/out" 2>"$work/err"
check "kc_submit to a directory that is no mount: exit status" 1 "$?"
check "kc_submit to a directory that is no mount: the message" \
	"kc_submit: $work: not a kcopydfs mount (no $work/clone)" "$(cat "$work/err")"

# --- the same functions in dash (POSIX sh) -----------------------------------------

if command -v dash >/dev/null; then
	dash -c '. "$1"
		job=$(kc_submit "$2" "zero to=$3:0+1M") || exit 10
		kc_wait "$job" 10 >/dev/null || exit 11
		[ "$(kc_status "$job" progress)" = 2048/2048 ] || exit 12
		kc_remove "$job" || exit 13
		kc_submit "$2" "zero to=$3.missing:0+1M" 2>/dev/null && exit 14
		exit 0' dash "$KCOPYD_SH" "$mnt" "$work/d1.img" >"$work/out" 2>&1
	status=$?
	if [ "$status" = 0 ]; then
		pass "dash: kc_submit, kc_wait, kc_status, kc_remove, a refusal"
	else
		fail "dash: kc_submit, kc_wait, kc_status, kc_remove, a refusal (exit 10-14 name the step that failed)" \
			"exit 0" "exit $status, said: $(tr '\n' '|' <"$work/out")"
	fi
	if cmp -s -n $((1 << 20)) "$work/d1.img" /dev/zero; then
		pass "dash: the zero job zeroed the first MiB"
	else
		fail "dash: the zero job zeroed the first MiB" "zeros" "$(od -An -tx1 -N16 "$work/d1.img")"
	fi
else
	echo "SKIP: the checks in dash (no dash here)"
fi

finish
