# SPDX-License-Identifier: LGPL-2.1-or-later
#
# lossy-lib.sh: a destination that lies, for the shell tests.  Sourced, not run:
#   . "${TESTS_SRCDIR:-$(dirname "$0")}/lossy-lib.sh"
#
# It sources kcopydfs-lib.sh (reporting, $work, the EXIT trap that
# detaches loop devices, unmounts with fusermount3 -u and stops nbdfuse,
# whose nbdkit runs --exit-with-parent) and adds:
#
#   lossy_require             skip (77) unless root, FUSE, nbdkit's sh plugin,
#                             nbdfuse and losetup are here
#   lossy_dest IMAGE LO LEN [drop|flip]
#                             serve IMAGE through tests/lossy-nbdkit.sh: the
#                             first write touching bytes [LO, LO+LEN) is
#                             acknowledged but lost (drop, the default) or
#                             stored with its byte at max(LO, its offset)
#                             inverted (flip); nbdfuse makes the export a
#                             file, a direct-I/O loop device a block device.
#                             Sets lossy_device (the loop device), lossy_log
#                             (one "MODE OFFSET COUNT" line per lie) and
#                             lossy_file (the FUSE file).  1 if it failed.
#   lossy_lies                how many lies lossy_dest's last device told
#
# The loop device must do direct I/O: a buffered loop device over the FUSE
# file would keep what was written in that file's page cache and read it
# back from there, hiding the loss from any verify.  Where the kernel does
# not switch direct I/O on, lossy_dest hands out the FUSE file itself as
# lossy_device (the engine opens it O_DIRECT, or drops its cache before
# reading it back) and says so on stderr.  Its queue's request merging is
# off (nomerges 2), so a lost request holds one sub-job's bytes at most
# and the lie stays in one chunk.

# shellcheck source=kcopydfs-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/kcopydfs-lib.sh"

lossy_plugin=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lossy-nbdkit.sh
lossy_count=0

lossy_require() {
	local tool

	[ "$(id -u)" = 0 ] || skip_all "needs root (tmpfs, loop devices, FUSE)"
	[ -c /dev/fuse ] || skip_all "no /dev/fuse"
	for tool in nbdkit nbdfuse losetup fusermount3 cmp od; do
		command -v "$tool" >/dev/null || skip_all "needs $tool"
	done
	nbdkit sh "$lossy_plugin" --dump-plugin >/dev/null 2>&1 ||
		skip_all "nbdkit cannot run its sh plugin over $lossy_plugin (nbdkit-plugin-sh)"
}

lossy_dest() {
	local image=$1 lo=$2 len=$3 mode=${4:-drop} dir

	lossy_count=$((lossy_count + 1))
	dir=$work/lossy$lossy_count
	lossy_log=$dir.lies
	: >"$lossy_log"
	nbd_export "$dir" sh "$lossy_plugin" "file=$image" "lo=$lo" "len=$len" "mode=$mode" "log=$lossy_log" ||
		return 1
	lossy_file=$dir/disk
	if ! new_loop "$lossy_file"; then
		echo "lossy_dest: losetup over $lossy_file failed" >&2
		return 1
	fi
	if [ "$(losetup -n -O DIO "$loop_device" | tr -d ' ')" != 1 ]; then
		echo "lossy_dest: $loop_device over $lossy_file took no direct I/O: using the FUSE file itself" >&2
		detach_loop "$loop_device"
		lossy_device=$lossy_file
		return 0
	fi
	echo 2 >"/sys/block/${loop_device#/dev/}/queue/nomerges" 2>/dev/null
	lossy_device=$loop_device
}

lossy_lies() {
	wc -l <"$lossy_log" | tr -d ' '
}
