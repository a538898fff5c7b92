#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-systemd-units.sh: the installed systemd units pass
# `systemd-analyze verify`.  Installs into a DESTDIR, takes
# kcopydfs.service and kcopydfs@.service from the configured unit
# directory there, points their ExecStart at the kcopydfs in the DESTDIR
# (verify checks that the command exists) and their man pages at the
# DESTDIR's (MANPATH; verify checks Documentation=), and verifies the plain
# unit and template instances named the way `systemd-escape --path` names
# them.  A unit with a broken ExecStart must fail verify, so a verify that
# accepts anything would fail this test.
#
# Run by `make check` (which exports MAKE, BUILDDIR and KCOPYD_DIRS), or by
# hand from a build directory as tests/test-install.sh is.
# Needs systemd-analyze and systemd-escape; exits 77 (skipped) without them.

set -u

BUILDDIR=${BUILDDIR:-$PWD}
MAKE=${MAKE:-make}
. "${TESTS_SRCDIR:-$(dirname "$0")}/report-lib.sh"

command -v systemd-analyze >/dev/null || skip_all "needs systemd-analyze (systemd)"
command -v systemd-escape >/dev/null || skip_all "needs systemd-escape (systemd)"
[ -n "${KCOPYD_DIRS:-}" ] || skip_all "KCOPYD_DIRS is not set (make check sets it)"
eval "$KCOPYD_DIRS"
[ "$systemdsystemunitdir" != no ] || skip_all "configured --without-systemdsystemunitdir: no units to check"
unset MAKEFLAGS MFLAGS

tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-systemd-units.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
dest=$tmp/root
units=$tmp/units
mkdir -p "$dest" "$units"
if ! $MAKE -C "$BUILDDIR" install DESTDIR="$dest" >"$tmp/install.log" 2>&1; then
	fail "make install DESTDIR=..." "exit 0" "$(tail -n 20 "$tmp/install.log")"
	finish
fi

for unit in kcopydfs.service kcopydfs@.service; do
	installed=$dest$systemdsystemunitdir/$unit
	if ! grep -q "^ExecStart=$bindir/kcopydfs -f " "$installed" 2>/dev/null; then
		fail "$unit: installed, ExecStart is $bindir/kcopydfs -f" "ExecStart=$bindir/kcopydfs -f ..." \
			"$(grep '^ExecStart' "$installed" 2>&1)"
		continue
	fi
	sed "s|=$bindir/kcopydfs |=$dest$bindir/kcopydfs |" "$installed" >"$units/$unit"
done

# verify UNIT: systemd-analyze verify with the DESTDIR's man pages; no output, exit 0.
verify() {
	MANPATH=$dest$mandir systemd-analyze verify "$units/$1" >"$tmp/verify.log" 2>&1
	verify_status=$?
	[ "$verify_status" = 0 ] && [ ! -s "$tmp/verify.log" ]
}

for instance in kcopydfs.service \
	"kcopydfs@$(systemd-escape --path /mnt/kcopyd).service" \
	"kcopydfs@$(systemd-escape --path '/srv/disk copies/ä').service"; do
	if verify "$instance"; then
		pass "systemd-analyze verify $instance"
	else
		fail "systemd-analyze verify $instance" "exit 0, no messages" \
			"exit $verify_status: $(tr '\n' '|' <"$tmp/verify.log")"
	fi
done

# The control: a unit whose command does not exist must be refused.
sed "s|^ExecStart=[^ ]*|ExecStart=$tmp/no-such-kcopydfs|" "$units/kcopydfs.service" >"$units/broken.service"
if verify broken.service; then
	fail "verify refuses a unit whose ExecStart does not exist" "a failure" "exit 0"
else
	pass "verify refuses a unit whose ExecStart does not exist"
fi

finish
