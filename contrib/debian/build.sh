#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Build the Debian packages (libkcopyd0, libkcopyd-dev, kcopyd) and leave
# the .deb files in OUTDIR.
#   contrib/debian/build.sh OUTDIR [TARBALL]
# Without TARBALL it makes one with `make dist` from this tree (in a
# temporary build directory; the tree is left as it is, except that
# autoreconf runs in it if it has no configure yet).  dpkg-buildpackage wants
# debian/ at the top of the source, so the tarball is unpacked in a
# temporary directory and this directory is copied there as debian/; then
#   dpkg-buildpackage -us -uc -b
# With --lintian first, lintian checks the result and any error fails.
# Needs dpkg-dev and debhelper (contrib/deps.sh installs them) and the
# build dependencies of debian/control (dpkg-checkbuilddeps says which lack).
set -euo pipefail

lintian=0
if [ "${1:-}" = --lintian ]; then
	lintian=1
	shift
fi
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: $0 [--lintian] OUTDIR [TARBALL]" >&2
	exit 2
fi
out=$1
tarball=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
for tool in dpkg-buildpackage dh; do
	command -v "$tool" >/dev/null ||
		{ echo "build.sh: $tool is missing: install dpkg-dev and debhelper (contrib/deps.sh)" >&2; exit 1; }
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kcopyd-deb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if [ -z "$tarball" ]; then
	[ -x "$top/configure" ] || (cd "$top" && autoreconf -fi)
	mkdir "$tmp/dist"
	(cd "$tmp/dist" && "$top/configure" -q && make -s dist) >"$tmp/dist.log" 2>&1 ||
		{ tail -n 30 "$tmp/dist.log" >&2; echo "build.sh: make dist failed" >&2; exit 1; }
	tarball=$(ls "$tmp"/dist/kcopyd-*.tar.*)
fi
[ -f "$tarball" ] || { echo "build.sh: $tarball: no such tarball" >&2; exit 1; }

# The changelog names the version; a package of another version would lie.
name=$(basename "$tarball")
upstream=${name#kcopyd-}
upstream=${upstream%.tar.*}
packaged=$(dpkg-parsechangelog -l "$here/changelog" -S Version)
if [ "${packaged%-*}" != "$upstream" ]; then
	echo "build.sh: the tarball is version $upstream but contrib/debian/changelog says $packaged;" \
		"add a changelog entry (dch -v $upstream-1)" >&2
	exit 1
fi

mkdir "$tmp/src"
tar -xf "$tarball" -C "$tmp/src"
source=$tmp/src/kcopyd-$upstream
cp -r "$here" "$source/debian"
rm -f "$source/debian/build.sh"
(cd "$source" && dpkg-buildpackage -us -uc -b)
if [ "$lintian" = 1 ]; then
	lintian --fail-on error --info "$tmp"/src/kcopyd_"$upstream"-*.changes
fi
cp "$tmp"/src/*.deb "$out"/
ls -1 "$out"/*.deb
