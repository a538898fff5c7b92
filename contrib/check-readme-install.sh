#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# check-readme-install.sh: run README.md's "Installing" lines as written, in
# a fresh clone, with the prefix a temporary directory, and check that
# nothing lands outside it.
#   contrib/check-readme-install.sh [REPOSITORY]   (default: this checkout's HEAD)
# The sh block under "## Installing" runs line by line in the clone, with
# "--prefix=/usr/local" replaced by the temporary prefix and "sudo " dropped
# (run it as root: the first line installs Debian packages).  Then the same
# tree is installed again with DESTDIR, and every file it installs must be
# under the prefix; make uninstall must leave nothing in the prefix.
# Prints PASS/FAIL lines and "N passed, M failed"; exits 1 on a failure.
# Called by .ci/run; takes about a minute (one build).
set -u

top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/tests/report-lib.sh"
repository=${1:-$top}

tmp=$(mktemp -d /tmp/kcopyd-readme-install.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
stage=$tmp/stage
clone=$tmp/clone
unset MAKEFLAGS MFLAGS

# The block: from the first ```sh after "## Installing" to its closing ```.
block=$(awk '/^## Installing/ { inside = 1; next }
	inside && /^```sh/ { code = 1; next }
	code && /^```/ { exit }
	code { print }' "$top/README.md")
if [ -z "$block" ]; then
	fail "README.md has a sh block under ## Installing" "one" "none"
	finish
fi
grep -q -- "--prefix=/usr/local" <<<"$block"
check "the block installs with --prefix=/usr/local (replaced by a temporary prefix here)" 0 $?

if ! git clone -q "$repository" "$clone" 2>"$tmp/clone.log"; then
	fail "git clone $repository" "exit 0" "$(cat "$tmp/clone.log")"
	finish
fi
[ ! -e "$clone/configure" ]
check "a fresh clone has no ./configure" 0 $?

line_number=0
while IFS= read -r line; do
	line_number=$((line_number + 1))
	command=${line%%#*}
	command=${command//--prefix=\/usr\/local/--prefix=$prefix}
	command=${command//sudo /}
	command=${command%"${command##*[![:space:]]}"}
	[[ $command =~ ^[[:space:]]*$ ]] && continue
	if (cd "$clone" && bash -euo pipefail -c "$command") >"$tmp/line$line_number.log" 2>&1; then
		pass "README line $line_number: $command"
	else
		fail "README line $line_number: $command" "exit 0" "$(tail -n 15 "$tmp/line$line_number.log")"
		finish
	fi
done <<<"$block"

for file in bin/kcopy bin/kcopydfs include/kcopyd.h lib/pkgconfig/libkcopyd.pc lib/systemd/system/kcopydfs.service \
	share/man/man1/kcopy.1 share/bash-completion/completions/kcopy; do
	[ -e "$prefix/$file" ] || fail "the install put $file in the prefix" "$prefix/$file" "missing"
done
pass "the install's files are in the prefix ($prefix)"
version=$("$prefix/bin/kcopy" --version 2>&1 | head -n 1)
[[ $version == "kcopy (kcopyd) "* ]]
check "the installed kcopy runs: $version" 0 $?

# The same install into a DESTDIR shows every file it writes.
make -C "$clone" install DESTDIR="$stage" >"$tmp/destdir.log" 2>&1
check "make install DESTDIR=$stage" 0 $?
outside=$(cd "$stage" && find . ! -type d | sed 's/^\.//' | grep -v "^$prefix/" | head -n 20)
check "make install DESTDIR= writes nothing outside the prefix" "" "$outside"
count=$(find "$stage$prefix" ! -type d | wc -l)
[ "$count" -gt 20 ]
check "make install DESTDIR= installs the files ($count)" 0 $?

make -C "$clone" uninstall >"$tmp/uninstall.log" 2>&1
check "make uninstall" 0 $?
left=$(find "$prefix" ! -type d | head -n 20)
check "make uninstall leaves no file in the prefix" "" "$left"
finish
