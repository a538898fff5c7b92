#!/usr/bin/env bash
# A first measurement: one SIZE copy between tmpfs-backed loop devices with
# direct I/O, kcopy beside `dd bs=4M iflag=direct oflag=direct`, interleaved
# RUNS times, page cache dropped before each run.  Prints each run and the
# medians; the ratio is median(dd) / median(kcopy) in time, i.e. how many
# times faster kcopy is.  Needs root.
#   contrib/bench/kcopy-vs-dd.sh [SIZE_MiB=2048] [RUNS=5] [KCOPY=build/kcopy]
set -euo pipefail
size_mib=${1:-2048}
runs=${2:-5}
kcopy=${3:-$(cd "$(dirname "$0")/../.." && pwd)/build/kcopy}
[ -x "$kcopy" ] || { echo "no kcopy at $kcopy: build first (contrib/test.sh)" >&2; exit 1; }

work=$(mktemp -d /tmp/kcopyd-bench.XXXXXX)
loops=()
cleanup() {
	for loop in "${loops[@]}"; do losetup -d "$loop" 2>/dev/null || true; done
	umount "$work" 2>/dev/null || true
	rmdir "$work" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
mount -t tmpfs -o size=$((size_mib * 2 + 64))M tmpfs "$work"
head -c "${size_mib}M" /dev/urandom >"$work/src.img"
truncate -s "${size_mib}M" "$work/dst.img"
src=$(losetup --find --show --direct-io=on "$work/src.img"); loops+=("$src")
dst=$(losetup --find --show --direct-io=on "$work/dst.img"); loops+=("$dst")

now() { date +%s.%N; }
timed() {
	local start end
	sync; echo 3 >/proc/sys/vm/drop_caches
	start=$(now)
	"$@" >/dev/null 2>&1
	end=$(now)
	echo "$end - $start" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

echo "# $size_mib MiB, $src -> $dst, $runs interleaved runs, $(nproc) CPUs, kernel $(uname -r)"
timed "$kcopy" --quiet "$src" "$dst" >/dev/null	# warm-up
kcopy_times=() dd_times=()
for run in $(seq "$runs"); do
	kcopy_times+=("$(timed "$kcopy" --quiet "$src" "$dst")")
	cmp "$src" "$dst"
	dd_times+=("$(timed dd if="$src" of="$dst" bs=4M iflag=direct oflag=direct)")
	cmp "$src" "$dst"
	printf 'run %d: kcopy %.3f s, dd %.3f s\n' "$run" "${kcopy_times[-1]}" "${dd_times[-1]}"
done
kcopy_median=$(printf '%s\n' "${kcopy_times[@]}" | median)
dd_median=$(printf '%s\n' "${dd_times[@]}" | median)
printf '| tool | median s | MB/s |\n|---|---|---|\n'
printf '| kcopy | %.3f | %.0f |\n' "$kcopy_median" "$(echo "$size_mib * 1.048576 / $kcopy_median" | bc -l)"
printf '| dd bs=4M direct | %.3f | %.0f |\n' "$dd_median" "$(echo "$size_mib * 1.048576 / $dd_median" | bc -l)"
printf 'ratio median(dd) / median(kcopy): %.2f\n' "$(echo "$dd_median / $kcopy_median" | bc -l)"
