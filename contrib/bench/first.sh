#!/usr/bin/env bash
# First measurements, in one run on one machine, as ratios to peers:
#  1. a SIZE MiB copy between tmpfs-backed loop devices (direct I/O) with
#     kcopy, with dd bs=4M iflag=direct oflag=direct, and through a kcopydfs
#     mount (mkdir, echo the job, cat wait), interleaved RUNS times, the page
#     cache dropped before each run, every copy checked with cmp outside the
#     timed part;
#  2. small jobs (4 KiB copies) per second: the library (4 submitting
#     threads), the mount (4 clients doing clone + write + wait + rmdir), and
#     dd spawned once per copy.
# Needs root.  Build first (contrib/test.sh or make).
#   contrib/bench/first.sh [SIZE_MiB=2048] [RUNS=5] [BUILDDIR=build]
set -euo pipefail
size_mib=${1:-2048}
runs=${2:-5}
top=$(cd "$(dirname "$0")/../.." && pwd)
builddir=${3:-$top/build}
kcopy=$builddir/kcopy
kcopydfs=$builddir/kcopydfs
smalljobs=$builddir/contrib/bench/smalljobs
for tool in "$kcopy" "$kcopydfs" "$smalljobs"; do
	[ -x "$tool" ] || { echo "no $tool: build first (contrib/test.sh)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/kcopyd-bench.XXXXXX)
mnt=$work/mnt
loops=()
cleanup() {
	fusermount3 -u -z "$mnt" 2>/dev/null || true
	for loop in "${loops[@]}"; do losetup -d "$loop" 2>/dev/null || true; done
	umount -l "$work/tmpfs" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM
mkdir -p "$work/tmpfs" "$mnt"
mount -t tmpfs -o size=$((size_mib * 2 + 512))M tmpfs "$work/tmpfs"
head -c "${size_mib}M" /dev/urandom >"$work/tmpfs/src.img"
truncate -s "${size_mib}M" "$work/tmpfs/dst.img"
truncate -s 256M "$work/tmpfs/small.img"
src=$(losetup --find --show --direct-io=on "$work/tmpfs/src.img"); loops+=("$src")
dst=$(losetup --find --show --direct-io=on "$work/tmpfs/dst.img"); loops+=("$dst")
small=$(losetup --find --show --direct-io=on "$work/tmpfs/small.img"); loops+=("$small")
dd if=/dev/zero of="$dst" bs=1M count="$size_mib" oflag=direct status=none	# allocate the tmpfs pages once
"$kcopydfs" "$mnt"

now() { date +%s.%N; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
minmax() { sort -g | awk 'NR==1 {min=$1} {max=$1} END {printf "%.3f / %.3f", min, max}'; }

run_kcopy() { "$kcopy" --quiet "$src" "$dst"; }
run_dd() { dd if="$src" of="$dst" bs=4M iflag=direct oflag=direct status=none; }
run_mount() {
	mkdir "$mnt/jobs/bench"
	echo "copy from=$src to=$dst" >"$mnt/jobs/bench/ctl"
	grep -q '^state: done' "$mnt/jobs/bench/wait"
	rmdir "$mnt/jobs/bench"
}

declare -A times
contenders=(kcopy dd mount)
echo "# $size_mib MiB copy, $runs interleaved runs; $(nproc) CPUs, kernel $(uname -r)"
for contender in "${contenders[@]}"; do "run_$contender"; done	# warm-up
for run in $(seq "$runs"); do
	line="run $run:"
	for contender in "${contenders[@]}"; do
		dd if=/dev/zero of="$dst" bs=4M count=1 oflag=direct status=none
		drop_caches
		start=$(now)
		"run_$contender"
		end=$(now)
		cmp "$src" "$dst" || { echo "$contender: copy differs" >&2; exit 1; }
		seconds=$(echo "$end - $start" | bc -l)
		times[$contender]+="$seconds "
		line+=$(printf ' %s %.3f s' "$contender" "$seconds")
	done
	echo "$line"
done

echo
echo "| $size_mib MiB copy | median s | min / max s | MB/s | median(peer) / median(kcopy) |"
echo "|---|---|---|---|---|"
kcopy_median=$(printf '%s\n' ${times[kcopy]} | median)
for contender in "${contenders[@]}"; do
	m=$(printf '%s\n' ${times[$contender]} | median)
	printf '| %s | %.3f | %s | %.0f | %.2f |\n' "$contender" "$m" "$(printf '%s\n' ${times[$contender]} | minmax)" \
		"$(echo "$size_mib * 1.048576 / $m" | bc -l)" "$(echo "$m / $kcopy_median" | bc -l)"
done

echo
echo "# small jobs: 4 KiB copies"
"$smalljobs" lib "$src" "$small" 50000 8 4
"$smalljobs" mount "$mnt" "$src" "$small" 10000 8 4
count=500
start=$(now)
for job in $(seq 0 $((count - 1))); do
	dd if="$src" of="$small" bs=4k count=1 skip=$((job % 512)) seek="$job" iflag=direct oflag=direct \
		conv=notrunc status=none
done
end=$(now)
printf 'dd per copy: %d jobs, %.0f jobs/s\n' "$count" "$(echo "$count / ($end - $start)" | bc -l)"
