#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopydfs-cli.sh: kcopydfs's command line, the GNU way.  --help and -h
# print the usage on standard output and exit 0; --version and -V print
# "kcopydfs (kcopyd) X.Y.Z" and the license lines and exit 0, and win over
# any other argument; a usage error (an unknown option, ours or libfuse's, a
# missing or extra operand, a bad number) names what is wrong and says
# "Try 'kcopydfs --help' for more information." on standard error, prints
# nothing on standard output and exits 2.  Also checks that kcopy follows
# the same conventions, and reports where it does not (not a failure: kcopy
# has its own test and owner).
#
# Run by `make check` (which exports KCOPYDFS and KCOPY), or by hand:
#   KCOPYDFS=./kcopydfs KCOPY=./kcopy tests/test-kcopydfs-cli.sh
# Needs no root and mounts nothing.  Prints PASS or FAIL per check with what
# it expected and got; the last line is "N passed, M failed".

set -u

KCOPYDFS=${KCOPYDFS:-${BUILDDIR:-.}/kcopydfs}
KCOPY=${KCOPY:-${BUILDDIR:-.}/kcopy}
VERSION_RE='[0-9]+\.[0-9]+\.[0-9]+'
. "${TESTS_SRCDIR:-$(dirname "$0")}/report-lib.sh"

[ -x "$KCOPYDFS" ] || skip_all "no kcopydfs at '$KCOPYDFS' (set KCOPYDFS)"
out=$(mktemp -d "${TMPDIR:-/tmp}/test-kcopydfs-cli.XXXXXX") || exit 1
trap 'rm -rf "$out"' EXIT

# run PROGRAM ARGS...: keep stdout and stderr, set status.
run() {
	"$@" >"$out/stdout" 2>"$out/stderr" </dev/null
	status=$?
}

shown() {
	tr '\n' '|' <"$1" | cut -c1-300
}

# expect NAME STATUS STDOUT-REGEX STDERR-REGEX: an empty regex means "empty".
expect() {
	local name=$1 want_status=$2 want_out=$3 want_err=$4 stream regex

	if [ "$status" != "$want_status" ]; then
		fail "$name: exit status" "$want_status" "$status (stderr: $(shown "$out/stderr"))"
		return
	fi
	for stream in stdout stderr; do
		if [ "$stream" = stdout ]; then regex=$want_out; else regex=$want_err; fi
		if [ -z "$regex" ]; then
			[ -s "$out/$stream" ] && { fail "$name: $stream" "nothing" "$(shown "$out/$stream")"; return; }
		elif ! grep -Eq -- "$regex" "$out/$stream"; then
			fail "$name: $stream" "a line matching /$regex/" "$(shown "$out/$stream")"
			return
		fi
	done
	pass "$name"
}

TRY="^Try 'kcopydfs --help' for more information\.$"

# --- help and version ------------------------------------------------------------

for option in --help -h; do
	run "$KCOPYDFS" "$option"
	expect "$option" 0 '^Usage: kcopydfs \[OPTION\]\.\.\. MOUNTPOINT$' ''
	for line in '--pages=N' '--state-dir=DIR' '-V   --version' '-f  ' '-o allow_other'; do
		grep -q -- "$line" "$out/stdout" || fail "$option lists $line" "a line with '$line'" "$(shown "$out/stdout")"
	done
done
for option in --version -V; do
	run "$KCOPYDFS" "$option"
	expect "$option" 0 "^kcopydfs \\(kcopyd\\) $VERSION_RE\$" ''
	expect "$option: the license lines" 0 '^License LGPLv2\.1\+: GNU LGPL version 2\.1 or later' ''
	expect "$option: no warranty" 0 '^There is NO WARRANTY' ''
done
run "$KCOPYDFS" --version --no-such-option /a /b
expect "--version wins over bad arguments" 0 "^kcopydfs \\(kcopyd\\) $VERSION_RE\$" ''
run "$KCOPYDFS" --no-such-option --help
expect "--help wins over bad arguments" 0 '^Usage: kcopydfs' ''

# --- usage errors ---------------------------------------------------------------

run "$KCOPYDFS" --no-such-option "$out"
expect "an unknown long option" 2 '' "^kcopydfs: unrecognized option '--no-such-option'\$"
expect "an unknown long option: the Try line" 2 '' "$TRY"
run "$KCOPYDFS" -x "$out"
expect "an unknown short option (libfuse's)" 2 '' '-x'
expect "an unknown short option: the Try line" 2 '' "$TRY"
run "$KCOPYDFS" -o no_such_mount_option "$out"
expect "an unknown -o option" 2 '' 'no_such_mount_option'
expect "an unknown -o option: the Try line" 2 '' "$TRY"
run "$KCOPYDFS"
expect "no mountpoint" 2 '' '^kcopydfs: missing mountpoint$'
expect "no mountpoint: the Try line" 2 '' "$TRY"
run "$KCOPYDFS" "$out" "$out/extra"
expect "an extra operand" 2 '' "^kcopydfs: extra operand '$out/extra'\$"
run "$KCOPYDFS" --pages
expect "--pages without its number" 2 '' "$TRY"
run "$KCOPYDFS" --pages=lots "$out"
expect "--pages=lots" 2 '' "$TRY"
run "$KCOPYDFS" --pages 0 "$out"
expect "--pages 0" 2 '' '--pages must be at least 1'
run "$KCOPYDFS" --subjob-kb 6 "$out"
expect "--subjob-kb 6" 2 '' 'multiple of 4'
# Not a usage error: the mountpoint is wrong (kcopydfs(8): exit status 1).
run "$KCOPYDFS" "$out/no-such-directory"
expect "a missing mountpoint directory" 1 '' 'no-such-directory'

# --- kcopy, for comparison (its own tests own it) -------------------------------------

if [ -x "$KCOPY" ]; then
	run "$KCOPY" --version
	expect "kcopy: --version in the GNU form, exit 0" 0 "^kcopy \\(kcopyd\\) $VERSION_RE\$" ''
	grep -q '^License ' "$out/stdout" && pass "kcopy: --version names the license" ||
		fail "kcopy: --version names the license" "a License line" "$(shown "$out/stdout")"
	run "$KCOPY" --no-such-option
	expect "kcopy: a bad option exits 2 with the Try line" 2 '' "^Try 'kcopy --help' for more information\\.\$"
	run "$KCOPY" --help
	expect "kcopy: --help on stdout, exit 0" 0 '^Usage: kcopy ' ''
fi

finish
