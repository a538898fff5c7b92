#!/usr/bin/env bash
# Install the Debian packages kcopyd needs to build, test and benchmark.
# Idempotent: apt-get runs only when something is missing.
set -euo pipefail

packages=(
	build-essential autoconf automake libtool pkg-config
	libaio-dev libcriterion-dev libfuse3-dev fuse3
	util-linux bc nbdkit libnbd-bin fio dcfldd dc3dd gnuplot-nox valgrind python3 clang libclang-rt-dev strace
	tmux	# tests/test-kcopy-terminal.sh (the progress bar in a real terminal)
	nodejs	# tests/test-bindings-node.sh (contrib/node/kcopyd-example.js)
	# packaging: the .debs (contrib/debian/build.sh), systemd-analyze for the units
	debhelper dpkg-dev lintian systemd
)

missing=()
for package in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: missing packages: ${missing[*]}; run as root (sudo $0)" >&2
	exit 1
fi
echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
