#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# lossy-nbdkit.sh: an nbdkit sh plugin (nbdkit-sh-plugin(3)) over a file,
# a disk that lies: the first write that touches a chosen byte range is
# acknowledged but lost (mode=drop) or stored with one byte of it flipped
# (mode=flip).  Every other request is served faithfully, so only a
# read-back can tell: what verification (KCOPYD_VERIFY) is for.
#
#   nbdkit sh tests/lossy-nbdkit.sh file=IMAGE lo=BYTE len=BYTES \
#          [mode=drop|flip] [log=FILE]
#
# file:  the image, served read-write at its size.
# lo:    the first byte of the range; len its length (default 1).
# mode:  drop (default): the write is read from the socket and thrown
#        away, the image keeps its old bytes; flip: the write is stored,
#        then the byte at max(lo, its offset) is inverted.
# log:   a file that receives one line per tampered write,
#        "MODE OFFSET COUNT" (bytes), so a test can see the lie was told.
#
# Only one write lies (the first that touches the range), so a copy that
# writes each range once loses exactly one chunk.  Zero requests are not
# implemented: nbdkit sends them as writes of zeros, which lie alike.
# Requests are serialized (the default thread model): the marker that
# says the lie was told is not raced.
#
# tests/lossy-lib.sh starts it through nbdfuse with a loop device on top;
# tests/test_verify.c through tu_nbd_start() (testutil.c).

conf() {
	cat "$tmpdir/$1" 2>/dev/null || echo "$2"
}

# touches OFFSET COUNT: does [OFFSET, OFFSET+COUNT) meet [lo, lo+len)?
touches() {
	lo=$(conf lo 0)
	len=$(conf len 1)
	[ "$1" -lt $((lo + len)) ] && [ $(($1 + $2)) -gt "$lo" ]
}

case "$1" in
config)
	case "$2" in
	file | lo | len | mode | log) printf '%s\n' "$3" >"$tmpdir/$2" ;;
	*)
		echo "lossy-nbdkit.sh: unknown parameter $2" >&2
		exit 1
		;;
	esac
	;;
config_complete)
	[ -f "$tmpdir/file" ] || {
		echo "lossy-nbdkit.sh: file= is required" >&2
		exit 1
	}
	case $(conf mode drop) in
	drop | flip) ;;
	*)
		echo "lossy-nbdkit.sh: mode must be drop or flip" >&2
		exit 1
		;;
	esac
	;;
get_size)
	stat -L -c %s "$(conf file)"
	;;
can_write | can_flush)
	exit 0
	;;
flush)
	sync "$(conf file)"
	;;
pread)
	# pread HANDLE COUNT OFFSET
	exec dd if="$(conf file)" bs=64K skip="$4" count="$3" iflag=skip_bytes,count_bytes,fullblock status=none
	;;
pwrite)
	# pwrite HANDLE COUNT OFFSET FLAGS, the data on stdin
	file=$(conf file)
	if [ ! -e "$tmpdir/told" ] && touches "$4" "$3"; then
		: >"$tmpdir/told"
		mode=$(conf mode drop)
		log=$(conf log)
		[ -n "$log" ] && echo "$mode $4 $3" >>"$log"
		if [ "$mode" = drop ]; then
			# Acknowledged, never stored.
			exec cat >/dev/null
		fi
		dd of="$file" bs=64K seek="$4" count="$3" iflag=count_bytes,fullblock oflag=seek_bytes \
			conv=notrunc status=none || exit 1
		at=$(conf lo 0)
		[ "$at" -lt "$4" ] && at=$4
		byte=$(od -An -tu1 -j "$at" -N1 "$file" | tr -d ' ')
		printf "\\$(printf %03o $((byte ^ 255)))" |
			dd of="$file" bs=1 seek="$at" conv=notrunc status=none
		exit
	fi
	exec dd of="$file" bs=64K seek="$4" count="$3" iflag=count_bytes,fullblock oflag=seek_bytes \
		conv=notrunc status=none
	;;
*)
	# Every other method: not implemented, nbdkit's default applies.
	exit 2
	;;
esac
