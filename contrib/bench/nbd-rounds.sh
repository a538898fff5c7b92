#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# nbd-rounds.sh: the library's NBD driver and the kcopy command against
# nbdcopy and qemu-img convert, 1 GiB each way between an nbdkit memory
# export on a Unix socket and a file on tmpfs.  Rounds are interleaved
# (kcopyd, kcopy, nbdcopy, qemu-img, kcopyd, ...) RUNS times (3) and the
# medians printed: seconds, MB/s, CPU seconds (user+sys of the copying
# process; nbdkit's own CPU is not counted for any).
#
# Run as root from a build directory: ../contrib/bench/nbd-rounds.sh [RUNS]
# (needs contrib/bench/nbdround and kcopy built, nbdkit, nbdcopy, qemu-img).
set -euo pipefail
runs=${1:-3}
nbdround=${NBDROUND:-./contrib/bench/nbdround}
kcopy=${KCOPY:-./kcopy}
dir=$(mktemp -d /tmp/kcopyd-nbdbench.XXXXXX)
mount -t tmpfs -o size=3G tmpfs "$dir"
nbdkit -f -U "$dir/m.sock" -P "$dir/nbdkit.pid" memory 1G &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; umount "$dir"; rmdir "$dir"' EXIT
uri="nbd+unix:///?socket=$dir/m.sock"
head -c 1G /dev/urandom >"$dir/src.img"
truncate -s 1G "$dir/dst.img"
while [ ! -S "$dir/m.sock" ]; do sleep 0.05; done

declare -A results
# round NAME COMMAND...: time it; "seconds cpu" appended to results[NAME].
round() {
	local name=$1 out
	shift
	out=$( { /usr/bin/time -f '%e %U %S' "$@" >/dev/null; } 2>&1 | tail -n1)
	read -r secs user sys <<<"$out"
	results[$name]+="$secs $(echo "$user + $sys" | bc) "
}
for ((run = 0; run < runs; run++)); do
	round kcopyd-file-to-nbd "$nbdround" "$dir/src.img" "$uri"
	round kcopy-file-to-nbd "$kcopy" "$dir/src.img" "$uri"
	round nbdcopy-file-to-nbd nbdcopy "$dir/src.img" "$uri"
	round qemu-img-file-to-nbd qemu-img convert -n -f raw -O raw "$dir/src.img" "$uri"
	round kcopyd-nbd-to-file "$nbdround" "$uri" "$dir/dst.img"
	round kcopy-nbd-to-file "$kcopy" "$uri" "$dir/dst.img"
	round nbdcopy-nbd-to-file nbdcopy "$uri" "$dir/dst.img"
	round qemu-img-nbd-to-file qemu-img convert -n -f raw -O raw "$uri" "$dir/dst.img"
done
cmp "$dir/src.img" "$dir/dst.img"
printf '%-22s %8s %8s %8s\n' round seconds MB/s cpu-s
for name in kcopyd-file-to-nbd kcopy-file-to-nbd nbdcopy-file-to-nbd qemu-img-file-to-nbd \
	kcopyd-nbd-to-file kcopy-nbd-to-file nbdcopy-nbd-to-file qemu-img-nbd-to-file; do
	read -r -a values <<<"${results[$name]}"
	secs=$(for ((i = 0; i < ${#values[@]}; i += 2)); do echo "${values[i]}"; done | sort -n | sed -n "$(((runs + 1) / 2))p")
	cpu=$(for ((i = 1; i < ${#values[@]}; i += 2)); do echo "${values[i]}"; done | sort -n | sed -n "$(((runs + 1) / 2))p")
	printf '%-22s %8s %8.0f %8s\n' "$name" "$secs" "$(echo "1073.741824 / $secs" | bc -l)" "$cpu"
done
