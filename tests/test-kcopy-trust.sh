#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopy-trust.sh: kcopy's part of issue 17, what a user trusts a copy
# by (kcopy(1): --hash, --verify, --rate, SIGUSR1, SIGTSTP):
#
#   - --hash: every digest kcopy prints as "hash: ALG:HEX" equals md5sum,
#     sha1sum, sha256sum, sha512sum, b2sum and xxhsum -H2 of the same
#     bytes, for a dense and a sparse source (holes hashed as the zeros they
#     read as), as files and as loop devices, to 1 and to 3 destinations,
#     for a sub-range, and with --hash given twice;
#   - --hash with --ignore-errors over a failing read (nbdkit's eval plugin
#     through nbdfuse, failing 2 MiB in the middle): the digest covers the
#     zeros written for the unreadable range, so it equals the destination's;
#   - --verify: "verify: ok" for a good copy; a destination that already
#     holds other bytes, copied with --destination-is-zero (zero ranges
#     skipped: wrongly so there), is caught: exit 3, "verify: mismatch",
#     the right destination and range, the other destinations not named;
#   - --rate=16M: a 64 MiB copy takes 4 s (+-10%, as issue 17 asks);
#   - SIGUSR1 prints one progress line (none with --quiet, as dd's
#     status=none); SIGTSTP stops kcopy (no progress meanwhile) and SIGCONT
#     lets it finish, byte-identical;
#   - the resume command after SIGTERM keeps --verify and --rate, leaves
#     --hash out and says why, and finishes the copy;
#   - --via: the digests, verify: ok, a verify mismatch's line and exit 3
#     the same through a kcopydfs daemon; SIGTSTP pauses its job there,
#     SIGCONT resumes it;
#   - bad input: unknown algorithms, a rate of 0, below 4K or unparsable,
#     --hash/--verify/--rate with --zero: exit 2, a reason, nothing made.
#
# Run by `make check` (which exports KCOPY), or by hand:
#   sudo KCOPY=./kcopy tests/test-kcopy-trust.sh
# Needs root (tmpfs, loop devices, FUSE), the *sum tools, xxhsum, nbdkit
# and nbdfuse; exits 77 naming what is missing.

set -u

KCOPY=${KCOPY:-$(dirname "$0")/../kcopy}
# shellcheck source=kcopydfs-lib.sh
. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

[ "$(id -u)" = 0 ] || skip_all "needs root (tmpfs, loop devices, FUSE)"
[ -x "$KCOPY" ] || skip_all "no kcopy at '$KCOPY' (set KCOPY)"
for tool in losetup cmp md5sum sha1sum sha256sum sha512sum b2sum xxhsum nbdkit nbdfuse; do
	command -v "$tool" >/dev/null || skip_all "needs $tool (contrib/deps.sh installs it)"
done

MiB=$((1024 * 1024))
SIZE=$((64 * MiB))
ALGS=(md5 sha1 sha256 sha512 blake2b512 xxh128)

setup_work 900M

# reference ALG FILE [SKIP_MIB COUNT_MIB]: the digest the ALG tool prints for FILE (or its range).
reference() {
	local alg=$1 file=$2 tool

	case $alg in
	md5) tool=(md5sum) ;;
	sha1) tool=(sha1sum) ;;
	sha256) tool=(sha256sum) ;;
	sha512) tool=(sha512sum) ;;
	blake2b512) tool=(b2sum) ;;
	xxh128) tool=(xxhsum -H2) ;;
	esac
	if [ $# -gt 2 ]; then
		dd if="$file" bs=1M skip="$3" count="$4" status=none | "${tool[@]}" | cut -d' ' -f1
	else
		"${tool[@]}" <"$file" | cut -d' ' -f1
	fi
}

# run_kcopy ARGS...: kcopy, its stderr in $work/stderr, its status in $status.
run_kcopy() {
	"$KCOPY" "$@" >"$work/stdout" 2>"$work/stderr"
	status=$?
}

# printed ALG: the HEX of kcopy's "kcopy: hash: ALG:HEX" line, empty if none.
printed() {
	sed -n "s/^kcopy: hash: $1:\([0-9a-f]*\)\$/\1/p" "$work/stderr"
}

# expect_status NAME EXPECTED: 0 if the last run_kcopy exited EXPECTED, else a FAIL.
expect_status() {
	[ "$status" = "$2" ] && return 0
	fail "$1" "exit status $2" "exit status $status: $(tr '\n' '|' <"$work/stderr")"
	return 1
}

# expect_stderr NAME PATTERN: 0 if kcopy's stderr matches the extended regex.
expect_stderr() {
	grep -Eq -- "$2" "$work/stderr" && return 0
	fail "$1" "a line matching /$2/" "$(tr '\n' '|' <"$work/stderr")"
	return 1
}

# check_digests NAME FILE [SKIP_MIB COUNT_MIB]: every ALGS digest kcopy printed equals the tool's.
check_digests() {
	local name=$1 alg want got bad=

	shift
	for alg in "${ALGS[@]}"; do
		want=$(reference "$alg" "$@")
		got=$(printed "$alg")
		[ "$want" = "$got" ] || bad+="$alg: $got, not $want; "
	done
	if [ -z "$bad" ]; then
		pass "$name: md5 sha1 sha256 sha512 blake2b512 xxh128 equal the *sum tools'"
	else
		fail "$name: the digests equal the *sum tools'" "equal" "$bad $(tr '\n' '|' <"$work/stderr")"
	fi
}

all_hashes=$(IFS=,; echo "${ALGS[*]}")

# --- sources ---------------------------------------------------------------------------

head -c "$SIZE" /dev/urandom >"$work/dense.img"
# Sparse: holes at the start, in the middle and at the end, random data between,
# and a MiB of zeros written as data.
truncate -s "$SIZE" "$work/sparse.img"
for mib in 3 4 17 30 31 32 50; do
	head -c "$MiB" /dev/urandom | dd of="$work/sparse.img" bs=1M seek="$mib" conv=notrunc status=none
done
dd if=/dev/zero of="$work/sparse.img" bs=1M seek=40 count=1 conv=notrunc status=none
new_loop "$work/dense.img" || skip_all "losetup failed"
dense_loop=$loop_device
new_loop "$work/sparse.img" || skip_all "losetup failed"
sparse_loop=$loop_device

# --- --hash: files and loop devices, 1 and 3 destinations ------------------------------

for source in dense sparse; do
	for kind in file loop; do
		if [ "$kind" = file ]; then path=$work/$source.img; else eval "path=\$${source}_loop"; fi
		rm -f "$work"/d?.img
		run_kcopy --hash="$all_hashes" "$path" "$work/d1.img"
		expect_status "--hash, $source $kind, 1 destination: exit 0" 0 &&
			check_digests "--hash, $source $kind, 1 destination" "$work/$source.img"
		rm -f "$work"/d?.img
		run_kcopy --hash="$all_hashes" "$path" "$work/d1.img" "$work/d2.img" "$work/d3.img"
		if expect_status "--hash, $source $kind, 3 destinations: exit 0" 0; then
			check_digests "--hash, $source $kind, 3 destinations" "$work/$source.img"
			cmp -s "$work/$source.img" "$work/d3.img" && pass "--hash, $source $kind, 3 destinations: a byte-identical copy" ||
				fail "--hash, $source $kind: a byte-identical copy" "equal" "$(cmp "$work/$source.img" "$work/d3.img" 2>&1)"
		fi
	done
done

# A sub-range (8 MiB from 28 MiB: data, a hole and data), --hash given twice.
rm -f "$work"/d?.img
run_kcopy --hash=md5,sha1,sha256 --hash=sha512,b2,xxh3-128 "$work/sparse.img:28M+8M" "$work/d1.img"
expect_status "--hash twice, a sub-range: exit 0" 0 &&
	check_digests "--hash twice, sectors 28M+8M of the sparse source" "$work/sparse.img" 28 8
[ "$(grep -c '^kcopy: hash: ' "$work/stderr")" = 6 ] && pass "--hash twice: one line per algorithm, six" ||
	fail "--hash twice: one line per algorithm" "6 hash: lines" "$(tr '\n' '|' <"$work/stderr")"

# --quiet keeps the digests (they are what was asked for), drops the summary.
rm -f "$work"/d?.img
run_kcopy --quiet --hash=sha256 "$work/dense.img" "$work/d1.img"
if expect_status "--quiet --hash: exit 0" 0; then
	check "--quiet --hash: the digest line and nothing else" "kcopy: hash: sha256:$(reference sha256 "$work/dense.img")" \
		"$(cat "$work/stderr")"
fi

# --- --hash --ignore-errors over a failing read -----------------------------------------

# nbdkit's eval plugin over the dense source, through nbdfuse, whose reads of
# 24 MiB to 26 MiB fail with EIO (an aligned 2 MiB: the kernel's and the
# engine's requests never straddle it).
if nbd_export "$work/failing" eval \
	get_size="echo $SIZE" \
	pread='if [ "$4" -lt '$((26 * MiB))' ] && [ $(($4 + $3)) -gt '$((24 * MiB))' ]; then echo "EIO unreadable" >&2; exit 1; fi; dd if='"$work/dense.img"' iflag=skip_bytes,count_bytes skip=$4 count=$3 status=none' \
	can_write="exit 3"; then
	failing=$work/failing/disk
	rm -f "$work"/d?.img
	run_kcopy --ignore-errors --hash=sha256,xxh128 "$failing" "$work/d1.img"
	expect_status "--ignore-errors over a failing read: exit 1 (a read error)" 1
	expect_stderr "--ignore-errors: the read error is reported" "read error on $failing sectors [0-9]+\+[0-9]+: EIO"
	# What it covers: the source as copied, the unreadable range as the zeros written for it.
	cp "$work/dense.img" "$work/expected.img"
	dd if=/dev/zero of="$work/expected.img" bs=1M seek=24 count=2 conv=notrunc status=none
	if cmp -s "$work/expected.img" "$work/d1.img"; then
		pass "--ignore-errors: the destination holds zeros for the unreadable 2 MiB, the source elsewhere"
	else
		fail "--ignore-errors: the destination" "the source with 2 MiB of zeros" "$(cmp "$work/expected.img" "$work/d1.img" 2>&1)"
	fi
	check "--ignore-errors: the sha256 digest is the destination's (zeros for what could not be read)" \
		"$(reference sha256 "$work/d1.img")" "$(printed sha256)"
	check "--ignore-errors: the xxh128 digest is the destination's" \
		"$(reference xxh128 "$work/d1.img")" "$(printed xxh128)"
	rm -f "$work/expected.img"
else
	fail "--ignore-errors over a failing read" "nbdkit eval through nbdfuse" "$(tail -n 3 "$work/nbdfuse.log" | tr '\n' '|')"
fi

# --- --verify ---------------------------------------------------------------------------

rm -f "$work"/d?.img
run_kcopy --verify --hash=sha256 "$work/sparse.img" "$work/d1.img" "$work/d2.img"
expect_status "--verify, a good copy: exit 0" 0 &&
	expect_stderr "--verify, a good copy: verify: ok" "^kcopy: verify: ok" &&
	check "--verify with --hash: the digest too" "$(reference sha256 "$work/sparse.img")" "$(printed sha256)" &&
	pass "--verify: a good copy to 2 destinations reads back as the source"

# Destination 1 already holds random bytes; --destination-is-zero makes kcopy skip the
# source's zero ranges, so its holes keep those bytes: the verify must catch it.
rm -f "$work"/d?.img
head -c "$SIZE" /dev/urandom >"$work/d1.img"
run_kcopy --verify --destination-is-zero "$work/sparse.img" "$work/d0.img" "$work/d1.img" "$work/d2.img"
expect_status "--verify, a destination that was not zero: exit 3" 3 &&
	expect_stderr "--verify: verify: mismatch" "^kcopy: verify: mismatch$" &&
	expect_stderr "--verify: destination 1 named, from sector 0 (a hole of the source)" \
		"^kcopy: verify error on $work/d1.img \(destination 1\) sectors 0\+[1-9][0-9]*: EBADMSG \(Bad message\)$" &&
	pass "--verify catches a destination that held other bytes under --destination-is-zero (exit 3)"
grep -Eq "verify error on $work/d[02]\.img" "$work/stderr" &&
	fail "--verify: the destinations that read back well are not named" "only d1.img" "$(tr '\n' '|' <"$work/stderr")" ||
	pass "--verify: destinations 0 and 2 (made by kcopy, zeros indeed) are not named"
grep -q "to copy the rest" "$work/stderr" &&
	fail "--verify mismatch: no resume command (everything was copied)" "none" "$(tr '\n' '|' <"$work/stderr")" ||
	pass "--verify mismatch: no resume command (everything was copied)"

# --- --rate ------------------------------------------------------------------------------

rm -f "$work"/d?.img
start=$(date +%s.%N)
run_kcopy --rate=16M "$work/dense.img" "$work/d1.img"
seconds=$(awk -v start="$start" -v end="$(date +%s.%N)" 'BEGIN { printf "%.2f", end - start }')
if expect_status "--rate=16M: exit 0" 0; then
	if awk -v s="$seconds" 'BEGIN { exit !(s >= 3.6 && s <= 4.4) }'; then
		pass "--rate=16M: 64 MiB in $seconds s (4 s +-10%)"
	else
		fail "--rate=16M: 64 MiB in 4 s +-10%" "3.6 to 4.4 s" "$seconds s"
	fi
	cmp -s "$work/dense.img" "$work/d1.img" && pass "--rate=16M: a byte-identical copy" ||
		fail "--rate=16M: a byte-identical copy" "equal" "$(cmp "$work/dense.img" "$work/d1.img" 2>&1)"
fi

# --- SIGUSR1 and SIGTSTP, on a copy held to 4 s by --rate ---------------------------------

rm -f "$work"/d?.img
"$KCOPY" --rate=16M "$work/dense.img" "$work/d1.img" >"$work/stdout" 2>"$work/stderr" &
pid=$!
background_pids+=("$pid")
sleep 1
kill -USR1 "$pid"
wait "$pid"
status=$?
expect_status "SIGUSR1: the copy goes on (exit 0)" 0 &&
	expect_stderr "SIGUSR1 prints a progress line" \
		"^kcopy: [0-9]+ of $SIZE bytes \([0-9.]+%\) done in [0-9.]+ s, [0-9.]+ MB/s, ETA [0-9]+:[0-9]{2}:[0-9]{2}$" &&
	pass "SIGUSR1 prints one progress line, the copy finishes"

rm -f "$work"/d?.img
"$KCOPY" --quiet --rate=16M "$work/dense.img" "$work/d1.img" >"$work/stdout" 2>"$work/stderr" &
pid=$!
background_pids+=("$pid")
sleep 1
kill -USR1 "$pid"
wait "$pid"
status=$?
expect_status "--quiet, SIGUSR1: the copy goes on (exit 0)" 0 &&
	check "--quiet, SIGUSR1: nothing printed (dd's status=none)" "" "$(cat "$work/stderr")"

# SIGTSTP: stopped as by ^Z (job control on, so its process group is not orphaned: the
# kernel drops a terminal stop sent to an orphaned one), SIGCONT: it goes on.
rm -f "$work"/d?.img "$work/tstp.progress"
set -m
"$KCOPY" --rate=16M --progress=3 "$work/dense.img" "$work/d1.img" 3>"$work/tstp.progress" \
	>"$work/stdout" 2>"$work/stderr" &
pid=$!
set +m
background_pids+=("$pid")
proc_state() {
	awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null
}
is_stopped() {
	[ "$(proc_state)" = T ]
}
sleep 1
kill -TSTP "$pid"
if wait_until 50 is_stopped; then
	pass "SIGTSTP: kcopy stops (state T)"
	lines=$(wc -l <"$work/tstp.progress")
	sleep 2
	check "SIGTSTP: no progress while stopped (2 s)" "$lines" "$(wc -l <"$work/tstp.progress")"
else
	fail "SIGTSTP: kcopy stops" "state T" "state $(proc_state)"
fi
kill -CONT "$pid"
wait "$pid"
status=$?
# wait returns when the job stops too (job control was on when it started): wait until it is gone.
while [ -d "/proc/$pid" ]; do
	wait "$pid"
	status=$?
done
expect_status "SIGTSTP, SIGCONT: the copy finishes (exit 0)" 0 &&
	cmp -s "$work/dense.img" "$work/d1.img" && pass "SIGTSTP, SIGCONT: a byte-identical copy" ||
	fail "SIGTSTP, SIGCONT: a byte-identical copy" "equal" "$(cmp "$work/dense.img" "$work/d1.img" 2>&1)"

# --- the resume command: --verify and --rate kept, --hash left out (and said so) ----------
# (SIGTERM: a background job of a script ignores SIGINT, and so does kcopy then.)

rm -f "$work"/d?.img
"$KCOPY" --rate=16M --verify --hash=sha256 "$work/dense.img" "$work/d1.img" >"$work/stdout" 2>"$work/stderr" &
pid=$!
background_pids+=("$pid")
sleep 1
kill -TERM "$pid"
wait "$pid"
status=$?
resume=$(sed -n '/, run:$/{n;p}' "$work/stderr")
if expect_status "SIGTERM: exit 143" 143; then
	if [[ $resume =~ ^kcopy\ --verify\ --rate=16M\ [^\ ]+:([0-9]+)\+([0-9]+)\ [^\ ]+:([0-9]+)$ ]] &&
	   [ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[3]}" ] && [ "${BASH_REMATCH[1]}" -gt 0 ]; then
		pass "the resume command keeps --verify and --rate, not --hash: $resume"
	else
		fail "the resume command" "kcopy --verify --rate=16M SRC:C+REST DST:C" "$resume"
	fi
	expect_stderr "the resume command: why not --hash" "no --hash in it: a digest of the rest is not the whole range's" &&
		expect_stderr "cancelled: hash: sha256:none" "^kcopy: hash: sha256:none " &&
		expect_stderr "cancelled: verify: not done" "^kcopy: verify: not done" &&
		pass "cancelled: the digest is none, the verify not done, and the note on --hash"
	run_kcopy ${resume#kcopy }
	expect_status "the resume command finishes the copy" 0 &&
		expect_stderr "the resumed copy verifies the rest" "^kcopy: verify: ok" &&
		cmp -s "$work/dense.img" "$work/d1.img" && pass "cancelled, then resumed with --verify: byte-identical" ||
		fail "cancelled, then resumed: byte-identical" "equal" "$(cmp "$work/dense.img" "$work/d1.img" 2>&1)"
fi

# --- --via: the same through a kcopydfs daemon -------------------------------------------

if [ -x "$KCOPYDFS" ] && [ -c /dev/fuse ] && start_daemon; then
	mount_point=$daemon_mount
	rm -f "$work"/d?.img
	run_kcopy --via "$mount_point" --hash="$all_hashes" --verify "$work/sparse.img" "$work/d1.img" "$work/d2.img" "$work/d3.img"
	if expect_status "--via --hash --verify: exit 0" 0; then
		check_digests "--via, the sparse source to 3 destinations" "$work/sparse.img"
		expect_stderr "--via --verify: verify: ok" "^kcopy: verify: ok \(3 destinations read back as the source\)$" &&
			pass "--via: verify: ok, as without --via"
	fi
	rm -f "$work"/d?.img
	head -c "$SIZE" /dev/urandom >"$work/d1.img"
	run_kcopy --via "$mount_point" --verify --destination-is-zero "$work/sparse.img" "$work/d0.img" "$work/d1.img" "$work/d2.img"
	expect_status "--via, a destination that was not zero: exit 3" 3 &&
		expect_stderr "--via: verify: mismatch" "^kcopy: verify: mismatch$" &&
		expect_stderr "--via: destination 1 named, from sector 0" \
			"^kcopy: verify error on $work/d1.img \(destination 1\) sectors 0\+[1-9][0-9]*: EBADMSG \(Bad message\)$" &&
		pass "--via: the verify error of the right destination and range, exit 3, as without --via"
	grep -Eq "verify error on $work/d[02]\.img|write error" "$work/stderr" &&
		fail "--via: only destination 1 named" "one verify error line" "$(tr '\n' '|' <"$work/stderr")" ||
		pass "--via: destinations 0 and 2 not named, no write error line"

	# ^Z with --via: the daemon's job is paused while kcopy is stopped, resumed after.
	rm -f "$work"/d?.img
	set -m
	"$KCOPY" --via "$mount_point" --rate=16M "$work/dense.img" "$work/d1.img" >"$work/stdout" 2>"$work/stderr" &
	pid=$!
	set +m
	background_pids+=("$pid")
	sleep 1
	kill -TSTP "$pid"
	job_state() {
		sed -n 's/^state: //p' "$mount_point"/jobs/*/status 2>/dev/null | head -n 1
	}
	job_paused() {
		[ "$(job_state)" = paused ]
	}
	if wait_until 50 is_stopped && wait_until 50 job_paused; then
		pass "--via, SIGTSTP: kcopy stops and its job in the daemon is paused"
	else
		fail "--via, SIGTSTP: kcopy stops and its job is paused" "state T, state: paused" \
			"state $(proc_state), state: $(job_state)"
	fi
	kill -CONT "$pid"
	job_running() {
		[ "$(job_state)" != paused ]
	}
	wait_until 50 job_running && pass "--via, SIGCONT: the job is resumed" ||
		fail "--via, SIGCONT: the job is resumed" "not paused" "state: $(job_state)"
	wait "$pid"
	status=$?
	while [ -d "/proc/$pid" ]; do
		wait "$pid"
		status=$?
	done
	expect_status "--via, SIGTSTP, SIGCONT: the copy finishes (exit 0)" 0 &&
		cmp -s "$work/dense.img" "$work/d1.img" && pass "--via, SIGTSTP, SIGCONT: a byte-identical copy" ||
		fail "--via, SIGTSTP, SIGCONT: a byte-identical copy" "equal" "$(cmp "$work/dense.img" "$work/d1.img" 2>&1)"
else
	fail "--via" "a kcopydfs daemon at '$KCOPYDFS'" "none started: $(tail -n 3 "$work/kcopydfs.log" 2>/dev/null | tr '\n' '|')"
fi

# --- bad input: exit 2, a reason, nothing made -------------------------------------------

rm -f "$work"/d?.img
bad_input() {
	local name=$1 pattern=$2

	shift 2
	run_kcopy "$@"
	expect_status "$name: exit 2" 2 && expect_stderr "$name: the reason" "$pattern" &&
		{ [ ! -e "$work/d1.img" ] || { fail "$name: nothing made" "no d1.img" "d1.img exists"; false; }; } &&
		pass "$name: exit 2, the reason, nothing made"
}
bad_input "--hash=sha3" "unknown algorithm 'sha3'" --hash=sha3 "$work/dense.img" "$work/d1.img"
bad_input "--hash=sha256,,md5" "an empty algorithm name" --hash=sha256,,md5 "$work/dense.img" "$work/d1.img"
bad_input "--rate=0" "rate '0' is below 4096" --rate=0 "$work/dense.img" "$work/d1.img"
bad_input "--rate=4095" "rate '4095' is below 4096" --rate=4095 "$work/dense.img" "$work/d1.img"
bad_input "--rate=1K" "rate '1K' is below 4096" --rate=1K "$work/dense.img" "$work/d1.img"
bad_input "--rate=10MB" "rate '10MB' has a 1000-based unit" --rate=10MB "$work/dense.img" "$work/d1.img"
bad_input "--rate=fast" "rate 'fast' is not a number" --rate=fast "$work/dense.img" "$work/d1.img"
bad_input "--rate=-4M" "rate '-4M' is not a number" --rate=-4M "$work/dense.img" "$work/d1.img"
bad_input "--verify --zero" "--verify cannot go with --zero" --verify --zero "$work/d1.img:0+1M"
bad_input "--hash --zero" "--hash cannot go with --zero" --hash=md5 --zero "$work/d1.img:0+1M"
bad_input "--rate --zero" "--rate cannot go with --zero" --rate=1M --zero "$work/d1.img:0+1M"
run_kcopy --rate=4K --hash=md5 "$work/dense.img:0+8K" "$work/d1.img"
expect_status "--rate=4K (the lowest) is taken" 0 &&
	check "--rate=4K: 8 KiB hashed" "$(reference md5 "$work/d1.img")" "$(printed md5)"

finish
