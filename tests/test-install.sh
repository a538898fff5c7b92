#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-install.sh: what `make install` gives a user.  Installs the build into
# a DESTDIR and checks that every file is there (library, header, pkg-config
# file, kcopy, kcopydfs, the man pages, the systemd units, the bash
# completion); builds tests/pkgconfig_client.c with nothing but
# `pkg-config --cflags --libs libkcopyd` pointed at that DESTDIR, runs it
# against the installed library (ldd must show that one) to copy a small
# file, and compares the bytes; then `make uninstall` must leave no file.
#
# Run by `make check` (which exports MAKE, CC, BUILDDIR and KCOPYD_DIRS, the
# configured directories), or by hand from a build directory:
#   BUILDDIR=$PWD KCOPYD_DIRS="bindir=/usr/local/bin libdir=/usr/local/lib ..." tests/test-install.sh
# Needs make, a C compiler and pkg-config; no root.  Prints PASS or FAIL per
# check with what it expected and got; the last line is "N passed, M failed".

set -u

BUILDDIR=${BUILDDIR:-$PWD}
MAKE=${MAKE:-make}
CC=${CC:-cc}
SRCDIR=${TESTS_SRCDIR:-$(dirname "$0")}
. "${TESTS_SRCDIR:-$(dirname "$0")}/report-lib.sh"

[ -n "${KCOPYD_DIRS:-}" ] || skip_all "KCOPYD_DIRS is not set (make check sets it)"
command -v pkg-config >/dev/null || skip_all "needs pkg-config"
command -v "${CC%% *}" >/dev/null || skip_all "needs a C compiler ($CC)"
eval "$KCOPYD_DIRS"
# The make that runs this test is not ours to share jobs with.
unset MAKEFLAGS MFLAGS

tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-install.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
dest=$tmp/root
work=$tmp/work
mkdir -p "$dest" "$work"

if ! $MAKE -C "$BUILDDIR" install DESTDIR="$dest" >"$tmp/install.log" 2>&1; then
	fail "make install DESTDIR=..." "exit 0" "$(tail -n 20 "$tmp/install.log")"
	finish
fi
pass "make install DESTDIR=..."

# --- the files --------------------------------------------------------------------

expected=(
	"$bindir/kcopy" "$bindir/kcopydfs"
	"$libdir/libkcopyd.so" "$libdir/libkcopyd.so.0" "$includedir/kcopyd.h" "$libdir/pkgconfig/libkcopyd.pc"
	"$mandir/man1/kcopy.1" "$mandir/man8/kcopydfs.8" "$mandir/man5/kcopydfs.5" "$mandir/man3/libkcopyd.3"
	"$mandir/man3/kcopyd_copy.3" "$mandir/man3/kcopyd_client_create.3"
)
if [ "$systemdsystemunitdir" != no ]; then
	expected+=("$systemdsystemunitdir/kcopydfs.service" "$systemdsystemunitdir/kcopydfs@.service")
fi
if [ "$bashcompletiondir" != no ]; then
	expected+=("$bashcompletiondir/kcopy")
fi
missing=()
for file in "${expected[@]}"; do
	[ -e "$dest$file" ] || missing+=("$file")
done
check "every file is installed" "" "${missing[*]}"
# A --prefix install keeps everything in the prefix (the systemd units once
# went to systemd.pc's /lib/systemd/system whatever the prefix was).
outside=$(cd "$dest" && find . ! -type d | sed 's/^\.//' | grep -v "^$prefix/" | head -n 20)
check "every installed file is under the prefix $prefix" "" "$outside"
[ -x "$dest$bindir/kcopy" ] && [ -x "$dest$bindir/kcopydfs" ]
check "kcopy and kcopydfs are executable" 0 "$?"
man3_count=$(find "$dest$mandir/man3" -name '*.3' | wc -l)
source_man3=$(find "$SRCDIR/../doc/man3" -name '*.3' | wc -l)
check "every man3 page is installed (libkcopyd.3 and doc/man3)" "$((source_man3 + 1))" "$man3_count"
if [ "$systemdsystemunitdir" != no ]; then
	exec_start=$(sed -n 's/^ExecStart=//p' "$dest$systemdsystemunitdir/kcopydfs@.service")
	check "the template unit runs the installed kcopydfs" "$bindir/kcopydfs -f \$KCOPYDFS_OPTIONS %f" "$exec_start"
fi
version=$("$dest$bindir/kcopydfs" --version | sed -n '1s/^kcopydfs (kcopyd) //p')
[ -n "$version" ] || fail "the installed kcopydfs --version" "kcopydfs (kcopyd) X.Y.Z" "$("$dest$bindir/kcopydfs" --version 2>&1)"

# --- a program built with pkg-config ------------------------------------------------

# libkcopyd.pc requires libnbd and libxml-2.0 (Requires.private): the system's
# .pc files come after the DESTDIR's, as an installed system has them beside it.
system_pc_path=$(pkg-config --variable pc_path pkg-config)
export PKG_CONFIG_LIBDIR=$dest$libdir/pkgconfig:$system_pc_path PKG_CONFIG_SYSROOT_DIR=$dest
unset PKG_CONFIG_PATH
check "pkg-config --modversion libkcopyd" "$version" "$(pkg-config --modversion libkcopyd 2>&1)"
flags=$(pkg-config --cflags --libs libkcopyd 2>&1)
case " $flags " in
*" -I$dest$includedir "* | *" -L$dest$libdir "*) pass "pkg-config points into the DESTDIR: $flags" ;;
*) fail "pkg-config points into the DESTDIR" "-I$dest$includedir or -L$dest$libdir" "$flags" ;;
esac
# shellcheck disable=SC2086 # the flags are words
if $CC ${KCOPYD_SAN_CFLAGS:-} -o "$work/client" "$SRCDIR/pkgconfig_client.c" $flags >"$tmp/cc.log" 2>&1; then
	pass "the client builds with pkg-config's flags alone"
	export LD_LIBRARY_PATH=$dest$libdir
	resolved=$(ldd "$work/client" | awk '$1 ~ /^libkcopyd\.so/ { print $3 }')
	check "the client uses the installed library" "$dest$libdir/libkcopyd.so.0" "$resolved"
	head -c $((1024 * 1024 + 4096)) /dev/urandom >"$work/source.img"
	truncate -s $((1024 * 1024 + 4096)) "$work/dest.img"
	if "$work/client" "$work/source.img" "$work/dest.img" >"$tmp/client.log" 2>&1; then
		pass "the client copies a file and checks the bytes: $(tr '\n' ' ' <"$tmp/client.log")"
	else
		fail "the client copies a file and checks the bytes" "exit 0" "$(tr '\n' '|' <"$tmp/client.log")"
	fi
	if cmp -s "$work/source.img" "$work/dest.img"; then
		pass "the copy is byte-identical (cmp)"
	else
		fail "the copy is byte-identical (cmp)" "no difference" "$(cmp "$work/source.img" "$work/dest.img" 2>&1)"
	fi
	unset LD_LIBRARY_PATH
else
	fail "the client builds with pkg-config's flags alone" "it compiles and links" "$(tail -n 20 "$tmp/cc.log")"
fi

# --- uninstall ------------------------------------------------------------------------

if $MAKE -C "$BUILDDIR" uninstall DESTDIR="$dest" >"$tmp/uninstall.log" 2>&1; then
	left=$(find "$dest" ! -type d | head -n 20)
	check "make uninstall leaves no file" "" "$left"
else
	fail "make uninstall DESTDIR=..." "exit 0" "$(tail -n 20 "$tmp/uninstall.log")"
fi

finish
