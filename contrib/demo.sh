#!/usr/bin/env bash
# The demonstration: install the dependencies, build, then copy one 256 MiB
# image to two others with kcopy (block devices on a tmpfs, O_DIRECT) and
# show that all three match.  Needs root for the loop devices.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

contrib/deps.sh
[ -x configure ] || autoreconf -fi
mkdir -p build
(cd build && { [ -f Makefile ] || ../configure -q; } && make -s -j"$(nproc)")
kcopy=$top/build/kcopy

work=$(mktemp -d /tmp/kcopyd-demo.XXXXXX)
loops=()
cleanup() {
	for loop in "${loops[@]}"; do losetup -d "$loop" 2>/dev/null || true; done
	umount "$work" 2>/dev/null || true
	rmdir "$work" 2>/dev/null || true
}
trap cleanup EXIT
mount -t tmpfs -o size=1G tmpfs "$work"

echo "== three 256 MiB images on a tmpfs, as loop devices with direct I/O"
head -c 256M /dev/urandom >"$work/source.img"
truncate -s 256M "$work/copy1.img" "$work/copy2.img"
for image in source copy1 copy2; do
	loops+=("$(losetup --find --show --direct-io=on "$work/$image.img")")
done
losetup --list "${loops[@]}"

echo
echo "== kcopy ${loops[0]} ${loops[1]} ${loops[2]}"
"$kcopy" --progress "${loops[0]}" "${loops[1]}" "${loops[2]}"

echo
echo "== do they match?"
sha256sum "${loops[@]}"
cmp "${loops[0]}" "${loops[1]}" && cmp "${loops[0]}" "${loops[2]}" && echo "all three images are identical"
