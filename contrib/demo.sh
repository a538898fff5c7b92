#!/usr/bin/env bash
# The demonstration: install the dependencies, build, then
#  1. copy one 256 MiB image to two others with kcopy, with its sha256 and a
#     read-back of both copies (block devices on a
#     tmpfs, O_DIRECT) and show that all three match;
#  2. mount kcopydfs, start the same copy by writing a job description to a
#     control file, wait for it, show its status (digest and verify), the
#     metrics of the mount, and check the copies again.
# Needs root for the loop devices and the mount.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

contrib/deps.sh --build
[ -x configure ] || autoreconf -fi
mkdir -p build
(cd build && { [ -f Makefile ] || ../configure -q; } && make -s -j"$(nproc)")
kcopy=$top/build/kcopy
kcopydfs=$top/build/kcopydfs

work=$(mktemp -d /tmp/kcopyd-demo.XXXXXX)
loops=()
cleanup() {
	fusermount3 -u -z "$work/mnt" 2>/dev/null || true
	for loop in "${loops[@]}"; do losetup -d "$loop" 2>/dev/null || true; done
	umount -l "$work/images" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
# losetup --find can lose a race with another program taking the same device: try again.
attach() {
	local try
	for try in $(seq 50); do
		losetup --find --show --direct-io=on "$1" 2>/dev/null && return 0
		sleep 0.2
	done
	losetup --find --show --direct-io=on "$1"
}
mkdir -p "$work/images" "$work/mnt"
mount -t tmpfs -o size=1G tmpfs "$work/images"

echo "== three 256 MiB images on a tmpfs, as loop devices with direct I/O"
head -c 256M /dev/urandom >"$work/images/source.img"
# fallocate, not truncate: the tmpfs pages exist before the copy, so it is the copy that is timed.
fallocate -l 256M "$work/images/copy1.img"
fallocate -l 256M "$work/images/copy2.img"
for image in source copy1 copy2; do
	loops+=("$(attach "$work/images/$image.img")")
done
for loop in "${loops[@]}"; do losetup --list --noheadings --output NAME,BACK-FILE,DIO,LOG-SEC "$loop"; done

echo
echo "== kcopy --hash=sha256 --verify ${loops[0]} ${loops[1]} ${loops[2]}"
"$kcopy" --progress --hash=sha256 --verify "${loops[0]}" "${loops[1]}" "${loops[2]}"
echo "== do they match? (sha256sum's digest of the source is the one kcopy printed)"
sha256sum "${loops[@]}"
cmp "${loops[0]}" "${loops[1]}" && cmp "${loops[0]}" "${loops[2]}" && echo "all three images are identical"

echo
echo "== the same through kcopydfs: wipe the copies, mount, write a job, wait for it"
"$kcopy" --quiet --zero "${loops[1]}:0+256M" "${loops[2]}:0+256M"
"$kcopydfs" "$work/mnt"
set -x
mkdir "$work/mnt/jobs/demo"
echo "copy from=${loops[0]} to=${loops[1]} to=${loops[2]} hash=sha256 flags=verify" >"$work/mnt/jobs/demo/ctl"
cat "$work/mnt/jobs/demo/wait"
cat "$work/mnt/jobs/demo/ctl"
cat "$work/mnt/stats"
grep -E '^kcopyd_(jobs|read_bytes_total|hashed_bytes_total|verified_bytes_total)' "$work/mnt/metrics"
set +x
cmp "${loops[0]}" "${loops[1]}" && cmp "${loops[0]}" "${loops[2]}" && echo "all three images are identical again"
