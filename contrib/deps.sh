#!/usr/bin/env bash
# Install the Debian packages kcopyd needs, for one purpose or all of them.
#   contrib/deps.sh           everything: build, tests, benchmarks, fuzzing, packaging
#   contrib/deps.sh --build   only what building and running kcopy and kcopydfs
#                             needs (what contrib/demo.sh installs)
#   contrib/deps.sh --print [--build]   list the packages and install nothing
# Idempotent: apt-get runs only when something is missing.
set -euo pipefail

# What building and running kcopy and kcopydfs needs (contrib/demo.sh, README "Installing").
build_packages=(
	build-essential autoconf automake libtool pkg-config
	libaio-dev libfuse3-dev fuse3 util-linux mount
	liburing-dev	# drv_file_uring.c: the io_uring engine beside libaio
	libnbd-dev libxml2-dev	# drv_nbd.c: NBD regions through libnbd; libxml2 splits URIs
	libssl-dev libxxhash-dev	# digest.c: hashes while copying (libcrypto), XXH3 and verification (libxxhash)
)
# What the tests, benchmarks, fuzzing and packaging add.
all_packages=(
	"${build_packages[@]}"
	libcriterion-dev
	libseccomp-dev	# tests/uring-deny: io_uring refused by a seccomp filter (tests/test-io-engine.sh)
	e2fsprogs xfsprogs btrfs-progs	# tests/test-sparse-devices.sh, test-kcopy-sparse.sh: filesystems on loop-mounted images
	qemu-utils	# contrib/bench/run: qemu-img convert; NBD tests: qemu-nbd over a qcow2, qemu-img compare
	bc nbdkit libnbd-bin fio dcfldd dc3dd gnuplot-nox valgrind python3 clang libclang-rt-dev strace
	# libnbd-bin has nbdfuse (the verify tests' lying destination: tests/lossy-lib.sh)
	tmux	# tests/test-kcopy-terminal.sh: a real terminal of a fixed size
	xxhash coreutils	# hash tests: xxhsum -H2, sha256sum, md5sum, b2sum beside the digests
	prometheus	# promtool check metrics: the metrics file (tests/test-kcopydfs-metrics.sh)
	iproute2	# tests/test-kcopydfs-nbd.sh: two hosts in network namespaces (ip netns, veth)
	nodejs	# tests/test-bindings-node.sh (contrib/node/kcopyd-example.js)
	# packaging: the .debs (contrib/debian/build.sh), systemd-analyze for the units
	debhelper dpkg-dev lintian systemd
)

packages=("${all_packages[@]}")
print=0
for arg in "$@"; do
	case "$arg" in
	--build) packages=("${build_packages[@]}") ;;
	--print) print=1 ;;
	*)
		echo "usage: $0 [--build] [--print]" >&2
		exit 2
		;;
	esac
done
if [ "$print" = 1 ]; then
	printf '%s\n' "${packages[@]}"
	exit 0
fi

missing=()
for package in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: missing packages: ${missing[*]}; run as root (sudo $0 $*)" >&2
	exit 1
fi
echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
