#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-bash-completion.sh: contrib/bash-completion/kcopy, sourced in a bash
# and called the way bash calls it (COMP_WORDS, COMP_CWORD, COMP_LINE):
# options complete from their prefix (--help and --version only as the
# first argument); nothing is offered for a number or after a region's ':';
# files and directories complete in a directory of the test's; a word
# under /dev completes to block devices (and directories) only, never to a
# character device such as /dev/null.
#
# Run by `make check`, or by hand: tests/test-bash-completion.sh
# Needs only bash.  Prints PASS or FAIL per check with what it expected and
# got; the last line is "N passed, M failed".

set -u

COMPLETION=${TESTS_SRCDIR:-$(dirname "$0")}/../contrib/bash-completion/kcopy
. "${TESTS_SRCDIR:-$(dirname "$0")}/report-lib.sh"

# shellcheck source=../contrib/bash-completion/kcopy
. "$COMPLETION" || { echo "FAIL: cannot source $COMPLETION"; exit 1; }
case $(complete -p kcopy 2>&1) in
*"-F _kcopy"*) pass "sourcing registers _kcopy for kcopy" ;;
*) fail "sourcing registers _kcopy for kcopy" "complete -F _kcopy kcopy" "$(complete -p kcopy 2>&1)" ;;
esac

# complete_line WORD...: run _kcopy on "kcopy WORD..." with the cursor at the
# end of the last WORD; sets got (the sorted replies, one line).
complete_line() {
	COMP_WORDS=(kcopy "$@")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMP_LINE="${COMP_WORDS[*]}"
	COMP_POINT=${#COMP_LINE}
	COMPREPLY=()
	_kcopy kcopy "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
	got=$(printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' ')
	got=${got% }
}

# expect NAME WANTED WORD...: the replies for "kcopy WORD..." are exactly WANTED.
expect() {
	local name=$1 wanted=$2
	shift 2
	complete_line "$@"
	if [ "$got" = "$wanted" ]; then pass "$name"; else fail "$name" "'$wanted'" "'$got'"; fi
}

expect "--pa completes to --pages" "--pages" --pa
expect "--s completes to --subjob-kb" "--subjob-kb" --s
expect "--ze completes to --zero" "--zero" --ze
expect "--de completes to --depth and --destination-is-zero" "--depth --destination-is-zero" --de
expect "--no completes to --no-offload" "--no-offload" --no
expect "--al completes to --allocated" "--allocated" /dev/sda --al
expect "every long option from --" \
	"--allocated --depth --destination-is-zero --hash= --help --ignore-errors --io-engine= --no-offload --pages --progress --quiet --rate= --subjob-kb --verbose --verify --version --via --write-seq --zero" --
expect "--io completes to --io-engine=" "--io-engine=" --io
expect "the engines after --io-engine" "auto io_uring libaio" --io-engine ""
expect "the engines after --io-engine=" "auto io_uring libaio" --io-engine =
expect "io_uring from --io-engine=io" "io_uring" --io-engine = io
expect "libaio from --io-engine li" "libaio" --io-engine li
expect "--ve completes to --verbose, --verify and --version" "--verbose --verify --version" --ve
expect "--ha completes to --hash=" "--hash=" --ha
expect "the algorithms after --hash=" "blake2b512 md5 sha1 sha256 sha512 xxh128" --hash = ""
expect "sha1, sha256 and sha512 from --hash=sha" "sha1 sha256 sha512" --hash = sha
expect "the list's last name after a comma" "sha256,xxh128" --hash = sha256,x
expect "nothing for the number after --rate=" "" --rate = ""
expect "--vi completes to --via" "--via" /dev/sda --vi
expect "no --help after the first argument" "" /dev/sda --hel
expect "--quiet after the first argument" "--quiet" /dev/sda --qu
expect "nothing for the number after --pages" "" --pages ""
expect "nothing for the number after --depth" "" --depth 1
expect "nothing after the ':' of a region" "" /dev/sda : ""
expect "nothing for a region's sector" "" /dev/sda : 20
expect "nothing after an unknown option's '='" "" --pages = ""

dir=$(mktemp -d "${TMPDIR:-/tmp}/test-bash-completion.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
touch "$dir/disk-a.img" "$dir/disk-b.img" "$dir/other"
mkdir "$dir/disks"
cd "$dir" || exit 1
expect "files from a prefix" "disk-a.img disk-b.img disks" dis
expect "files after an option" "disk-a.img disk-b.img disks" --zero dis
expect "files as the second region" "disk-a.img disk-b.img disks" disk-a.img dis
expect "an absolute path" "$dir/other" "$dir/ot"
expect "only directories after --via" "disks" --via dis

complete_line /dev/
not_block=()
blocks=0
for reply in "${COMPREPLY[@]}"; do
	if [ -b "$reply" ]; then
		blocks=$((blocks + 1))
	elif [ ! -d "$reply" ]; then
		not_block+=("$reply")
	fi
done
if [ ${#not_block[@]} -eq 0 ]; then
	pass "under /dev only block devices and directories ($blocks block devices)"
else
	fail "under /dev only block devices and directories" "none else" "${not_block[*]}"
fi
case " $got " in
*" /dev/null "*) fail "/dev/null is not offered" "no /dev/null" "$got" ;;
*) pass "/dev/null is not offered" ;;
esac
first_block=$(find /dev -maxdepth 1 -type b | sort | head -n 1)
if [ -n "$first_block" ]; then
	expect "a block device from its prefix ($first_block)" "$first_block" "$first_block"
else
	echo "      (no block device in /dev here: the prefix case is not checked)"
fi

finish
