#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-verify-lossy.sh: verification catches a destination that silently loses
# or corrupts a write.  One 16 MiB source is copied to three destinations,
# two healthy loop devices and one that lies (tests/lossy-lib.sh: an
# nbdkit sh plugin through nbdfuse and a direct-I/O loop device, whose
# first write touching a chosen 4 KiB block is acknowledged and lost, or
# stored with a byte inverted), by tests/verify-copy (the library, 1 MiB
# sub-jobs) and by kcopy --verify --hash=sha256 (where it has --verify):
#
#   - without verify the loss goes unseen (exit 0), yet the destination
#     differs: the rig lies as a bad disk would;
#   - with verify, a lost write: exit 1, EBADMSG, verify_err and write_err
#     the lossy destination's bit alone, its report naming the lie's
#     chunk (1 MiB, in device sectors); the others verify ok and hold the
#     source, read back in full (the lossy one up to its bad chunk);
#   - the same with a flipped byte, the lossy destination in the middle;
#   - the lie outside the copied range: every destination verifies;
#   - kcopy: exit 3, one verify error line naming the lossy device and the
#     chunk with EBADMSG, the source's sha256 still sha256sum's.
#
# Run by `make check`, or by hand: sudo BUILDDIR=build tests/test-verify-lossy.sh
# Needs root, FUSE, nbdkit (sh plugin), nbdfuse and losetup; exits 77
# (skipped) without them.

set -u

# shellcheck source=lossy-lib.sh
. "${TESTS_SRCDIR:-$(dirname "$0")}/lossy-lib.sh"

VERIFY_COPY=${BUILDDIR:-$(dirname "$0")/..}/tests/verify-copy
KCOPY=${KCOPY:-${BUILDDIR:-$(dirname "$0")/..}/kcopy}

lossy_require
[ -x "$VERIFY_COPY" ] || skip_all "no tests/verify-copy at '$VERIFY_COPY' (set BUILDDIR)"

setup_work 256M
MiB=$((1 << 20))
SIZE=$((16 * MiB))
# The lie: the 4 KiB block 12 KiB into the sixth 1 MiB chunk (chunk 5).
LIE=$((5 * MiB + 12288))
CHUNK_RANGE="$((5 * 2048))+2048"

head -c "$SIZE" /dev/urandom >"$work/src.img"
good=()
for name in good0 good1; do
	truncate -s "$SIZE" "$work/$name.img"
	new_loop "$work/$name.img" || skip_all "losetup over a tmpfs file failed"
	good+=("$loop_device")
done

# fresh_rig NAME LO LEN MODE [SIZE]: a zeroed image behind a new lossy device; the good ones zeroed.
fresh_rig() {
	local dev

	truncate -s 0 "$work/$1.img"
	truncate -s "${5:-$SIZE}" "$work/$1.img"
	for dev in "${good[@]}"; do
		dd if=/dev/zero of="$dev" bs=1M count=16 oflag=direct status=none
	done
	lossy_dest "$work/$1.img" "$2" "$3" "$4" ||
		skip_all "the lossy rig did not come up: $(tail -n 3 "$work/nbdfuse.log" | tr '\n' '|')"
}

# copy NAME ARGS...: verify-copy -s 1024 ARGS, its report in $work/NAME.out, its exit status in copy_status.
copy() {
	local name=$1
	shift
	"$VERIFY_COPY" -s 1024 "$@" >"$work/$name.out" 2>"$work/$name.err"
	copy_status=$?
}

# said NAME KEY: the value of "KEY: value" in NAME's report.
said() {
	sed -n "s/^$2: //p" "$work/$1.out"
}

# same_as_source NAME DEV...: each DEV holds the source (cmp), else a FAIL naming it.
same_as_source() {
	local name=$1 dev
	shift
	for dev in "$@"; do
		if cmp -s -n "$SIZE" "$work/src.img" "$dev"; then
			pass "$name: $dev holds the source"
		else
			fail "$name: $dev holds the source" "cmp equal" "$(cmp -n "$SIZE" "$work/src.img" "$dev" 2>&1)"
		fi
	done
}

# caught NAME BIT INDEX: the report of a verify that caught the lie on dests[INDEX].
caught() {
	local name=$1 bit=$2 index=$3 i

	check "$name: exit status 1 (the job failed)" 1 "$copy_status"
	check "$name: error EBADMSG" "-74 EBADMSG" "$(said "$name" error)"
	check "$name: verified -1" -1 "$(said "$name" verified)"
	check "$name: verify_err is dests[$index]'s bit" "$bit" "$(said "$name" verify_err)"
	check "$name: write_err is that bit alone" "$bit" "$(said "$name" write_err)"
	check "$name: dests[$index]'s report names the lie's chunk" "EBADMSG $CHUNK_RANGE" \
		"$(said "$name" "verify $index")"
	for i in 0 1 2; do
		[ "$i" = "$index" ] && continue
		check "$name: dests[$i] verifies ok" ok "$(said "$name" "verify $i")"
	done
	# The lossy destination is not read back past its bad chunk; the good ones are, in full.
	verified=$(said "$name" sectors_verified)
	if [ "${verified#*/}" = $((3 * SIZE / 512)) ] && [ "${verified%/*}" -lt $((3 * SIZE / 512)) ] &&
		[ "${verified%/*}" -ge $((2 * SIZE / 512 + 5 * 2048)) ]; then
		pass "$name: the good destinations read back in full, the lossy one up to its bad chunk ($verified)"
	else
		fail "$name: the good destinations read back in full, the lossy one up to its bad chunk" \
			"at least $((2 * SIZE / 512 + 5 * 2048)), below $((3 * SIZE / 512)) of $((3 * SIZE / 512))" "$verified"
	fi
	check "$name: the disk lied once" 1 "$(lossy_lies)"
}

# --- without verify: the loss is silent ----------------------------------------

fresh_rig silent "$LIE" 4096 drop
copy silent "$work/src.img" "${good[@]}" "$lossy_device"
check "no verify: exit status 0 (the loss is not seen)" 0 "$copy_status"
check "no verify: no error" "0 OK" "$(said silent error)"
check "no verify: the disk lied once" 1 "$(lossy_lies)"
if cmp -s -n "$SIZE" "$work/src.img" "$lossy_device"; then
	fail "no verify: the lossy destination lost a write" "differs from the source" "equal"
else
	first=$(cmp -n "$SIZE" "$work/src.img" "$lossy_device" | sed -n 's/.* byte \([0-9]*\),.*/\1/p')
	lied_at=$(awk '{ print $2 }' "$lossy_log")
	lied_len=$(awk '{ print $3 }' "$lossy_log")
	# The first differing byte is in the lost write (the lost bytes are zeros on the device: a
	# source byte that is zero too, 1 in 256 of random data, moves the first difference on).
	if [ "$first" -gt "$lied_at" ] && [ "$first" -le $((lied_at + lied_len)) ]; then
		pass "no verify: the first lost byte is in the lost write ($first, of $((lied_at + 1))+$lied_len)"
	else
		fail "no verify: the first lost byte is in the lost write" "$((lied_at + 1)) to $((lied_at + lied_len))" "$first"
	fi
fi
same_as_source "no verify" "${good[@]}"

# --- a lost write ---------------------------------------------------------------

fresh_rig lost "$LIE" 4096 drop
copy lost -f verify "$work/src.img" "${good[@]}" "$lossy_device"
caught lost 0x4 2
same_as_source "lost write" "${good[@]}"
# The lossy destination holds the source everywhere but the lie's chunk.
if cmp -s -n $((5 * MiB)) "$work/src.img" "$lossy_device" &&
	cmp -s -n $((10 * MiB)) -i $((6 * MiB)) "$work/src.img" "$lossy_device"; then
	pass "lost write: the lossy destination differs from the source only in chunk 5"
else
	fail "lost write: the lossy destination differs from the source only in chunk 5" "cmp equal outside it" \
		"$(cmp -n "$SIZE" "$work/src.img" "$lossy_device" 2>&1)"
fi

# --- a flipped byte, the lossy destination in the middle -------------------------------

fresh_rig flipped $((LIE + 1000)) 1 flip
copy flipped -f verify "$work/src.img" "${good[0]}" "$lossy_device" "${good[1]}"
caught flipped 0x2 1
same_as_source "flipped byte" "${good[@]}"
differences=$(cmp -l -n "$SIZE" "$work/src.img" "$lossy_device" | wc -l)
check "flipped byte: one byte differs" 1 "$differences"

# --- the lie outside the copied range: every destination verifies ------------------------

fresh_rig honest $((SIZE + MiB)) 4096 drop $((SIZE + 2 * MiB))
copy honest -f verify "$work/src.img" "${good[@]}" "$lossy_device"
check "honest: exit status 0" 0 "$copy_status"
check "honest: no error" "0 OK" "$(said honest error)"
check "honest: verified 1" 1 "$(said honest verified)"
check "honest: verify_err 0" 0x0 "$(said honest verify_err)"
for i in 0 1 2; do
	check "honest: dests[$i] verifies ok" ok "$(said honest "verify $i")"
done
check "honest: every destination read back" "$((3 * SIZE / 512))/$((3 * SIZE / 512))" \
	"$(said honest sectors_verified)"
check "honest: the disk told no lie" 0 "$(lossy_lies)"
same_as_source "honest" "${good[@]}" "$lossy_device"

# --- kcopy --verify over the same rig, where kcopy has it ----------------------------------

if [ -x "$KCOPY" ] && "$KCOPY" --help 2>&1 | grep -q -- '--verify'; then
	fresh_rig kcopy "$LIE" 4096 drop
	"$KCOPY" --verify --hash=sha256 --subjob-kb 1024 "$work/src.img" "${good[0]}" "$lossy_device" "${good[1]}" \
		>"$work/kcopy.out" 2>&1
	kcopy_status=$?
	check "kcopy --verify: exit status 3 (a destination did not read back)" 3 "$kcopy_status"
	check "kcopy --verify: the disk lied once" 1 "$(lossy_lies)"
	check "kcopy --verify: verify: mismatch" "kcopy: verify: mismatch" "$(grep '^kcopy: verify:' "$work/kcopy.out")"
	# One error line, the lossy destination's, naming the lie's chunk.
	verify_lines=$(grep -c 'verify error on' "$work/kcopy.out")
	check "kcopy --verify: one verify error line" 1 "$verify_lines"
	if grep -q "verify error on $(re_quote "$lossy_device") .*sectors $CHUNK_RANGE: EBADMSG (Bad message)$" \
		"$work/kcopy.out"; then
		pass "kcopy --verify: the error names $lossy_device and sectors $CHUNK_RANGE, EBADMSG"
	else
		fail "kcopy --verify: the error names $lossy_device and sectors $CHUNK_RANGE, EBADMSG" \
			"verify error on $lossy_device ... sectors $CHUNK_RANGE: EBADMSG (Bad message)" \
			"$(tr '\n' '|' <"$work/kcopy.out")"
	fi
	# The source's digest is the source's, whatever a destination did with it.
	check "kcopy --verify: the sha256 is sha256sum's" "kcopy: hash: sha256:$(sha256sum <"$work/src.img" | cut -d' ' -f1)" \
		"$(grep '^kcopy: hash:' "$work/kcopy.out")"
	same_as_source "kcopy --verify" "${good[@]}"
else
	echo "(kcopy has no --verify: its case is left out)"
fi

finish
