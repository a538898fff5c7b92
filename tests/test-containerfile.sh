#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-containerfile.sh: what can be checked of contrib/container/Containerfile
# without a container engine (make check neither needs nor installs one, so
# the image is not built here: contrib/container/build-and-test.sh builds and
# runs it with podman; see doc/containers.md).  That every file it copies from
# the tree exists; that its build stage installs only packages of
# contrib/deps.sh, builds as README.md says (autoreconf -fi, configure,
# make) and that its runtime stage copies every program Makefile.am
# installs; that the runtime stage's packages hold every library kcopydfs
# names itself (DT_NEEDED, dpkg -S; what those need comes with their
# packages); and, as root with FUSE, that the entrypoint runs
# kcopydfs -f on $KCOPYDFS_MOUNT, making it, and that SIGTERM stops it
# with exit status 0 and no mount left.
#
# Run by `make check`, or by hand: tests/test-containerfile.sh (the
# entrypoint part wants root and KCOPYDFS=./kcopydfs).
# The last line is "N passed, M failed"; the exit status is 1 on any failure.

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

top=$(cd "${TESTS_SRCDIR:-$(dirname "$0")}/.." && pwd)
containerfile=$top/contrib/container/Containerfile
entrypoint=$top/contrib/container/entrypoint.sh
[ -r "$containerfile" ] || skip_all "no $containerfile"

# The Containerfile with continuation lines joined and comments dropped, one instruction a line.
instructions=$(sed -e '/^[[:space:]]*#/d' "$containerfile" | sed -e ':join' -e '/\\$/{N; s/\\\n[[:space:]]*/ /; b join}' |
	sed -e '/^[[:space:]]*$/d')
# stage N: the instructions of stage N (1: build, 2: runtime).
stage() {
	awk -v want="$1" '/^FROM / { n++ } n == want' <<<"$instructions"
}
# apt_packages TEXT: the words after --no-install-recommends up to the next &&.
apt_packages() {
	sed -n 's/.*--no-install-recommends \([^&]*\).*/\1/p' <<<"$1" | tr -s ' ' '\n' | sed '/^$/d'
}

check="every file the Containerfile copies from the tree is there"
missing=
while read -r line; do
	read -ra words <<<"$line"
	for ((index = 1; index < ${#words[@]} - 1; index++)); do
		[[ ${words[index]} == --* ]] && continue 2	# COPY --from=: not the tree's
		[ -e "$top/${words[index]}" ] || missing+=" ${words[index]}"
	done
done < <(grep '^COPY ' <<<"$instructions")
[ -z "$missing" ] && pass "$check" || fail "$check" "every source in $top" "missing:$missing"

check="the build stage installs only packages that contrib/deps.sh lists"
deps=$(bash "$top/contrib/deps.sh" --print)
build_packages=$(apt_packages "$(stage 1)")
strays=$(comm -23 <(sort -u <<<"$build_packages") <(sort -u <<<"$deps") | tr '\n' ' ')
if [ -z "$build_packages" ]; then
	fail "$check" "an apt-get install in the build stage" "none found"
elif [ -n "$strays" ]; then
	fail "$check" "packages of contrib/deps.sh" "also: $strays"
else
	pass "$check"
fi

check="the build stage builds as README.md says: autoreconf -fi, configure, make, make install"
build_run=$(grep '^RUN ' <<<"$(stage 1)" | tail -1)
missing=
for step in "autoreconf -fi" "/configure " "make -j" "make install DESTDIR="; do
	[[ $build_run == *"$step"* ]] || missing+=" '$step'"
done
if [ -n "$missing" ]; then
	fail "$check" "in the build stage's last RUN:$missing" "$build_run"
elif ! grep -q 'autoreconf -fi && ./configure && make' "$top/README.md"; then
	fail "$check" "README.md building with 'autoreconf -fi && ./configure && make'" "it says otherwise now"
else
	pass "$check"
fi

check="the runtime stage copies every program that Makefile.am installs"
programs=$(sed -n 's/^bin_PROGRAMS +\{0,1\}= *//p' "$top/Makefile.am" | tr -s ' ' '\n' | sed '/^$/d' | sort -u)
copied=$(grep '^COPY --from=build ' <<<"$(stage 2)" | tr -s ' ' '\n' | sed -n 's|^/install/usr/bin/||p' | sort -u)
[ -n "$programs" ] && [ "$programs" = "$copied" ] && pass "$check" ||
	fail "$check" "bin: $(echo $programs)" "copied: $(echo $copied)"

# needed_libraries BINARY: the paths of the libraries BINARY names itself
# (DT_NEEDED), as ldd resolves them.  Not ldd's whole closure: what those
# libraries need in turn comes with their packages' dependencies (libnbd0
# brings gnutls), which apt installs.
needed_libraries() {
	local needed

	needed=$(objdump -p "$1" | awk '$1 == "NEEDED" { print $2 }')
	ldd "$1" | awk -v needed="$needed" 'BEGIN { n = split(needed, names, "\n"); for (i = 1; i <= n; i++) want[names[i]] = 1 }
		$2 == "=>" && $3 ~ /^\// && ($1 in want) { print $3 }'
}

check="the runtime stage's packages hold every library kcopydfs links to"
if [ ! -x "$KCOPYDFS" ] || ! command -v ldd >/dev/null || ! command -v objdump >/dev/null || ! command -v dpkg-query >/dev/null; then
	echo "SKIP: $check (needs ldd, objdump, dpkg and a built kcopydfs at '$KCOPYDFS')"
else
	runtime_packages=$(apt_packages "$(stage 2)" | sort -u)
	unheld=
	while read -r library; do
		case ${library##*/} in
		libc.so.* | ld-linux* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.*) continue ;; # in the base image
		libasan.so.* | libubsan.so.* | libtsan.so.* | libgcc_s.so.* | libstdc++.so.*)
			# A sanitized build's runtimes and what they bring: the image's build has none of them.
			[ "${KCOPYD_SANITIZED:-0}" = 1 ] && continue ;;
		esac
		owner=$(dpkg -S "$(readlink -f "$library")" 2>/dev/null || dpkg -S "$library" 2>/dev/null)
		owner=${owner%%:*}
		grep -qx -- "$owner" <<<"$runtime_packages" || unheld+=" ${library##*/}(${owner:-no package})"
	done < <(needed_libraries "$KCOPYDFS")
	[ -z "$unheld" ] && pass "$check" || fail "$check" "in: $(echo $runtime_packages)" "not held:$unheld"
fi

check="the entrypoint is a shell script sh can read"
sh -n "$entrypoint" 2>"${TMPDIR:-/tmp}/containerfile-sh.$$" && pass "$check" ||
	fail "$check" "sh -n to succeed" "$(cat "${TMPDIR:-/tmp}/containerfile-sh.$$")"
rm -f "${TMPDIR:-/tmp}/containerfile-sh.$$"

# --- the entrypoint, run ----------------------------------------------------------------

if [ "$(id -u)" != 0 ] || [ ! -c /dev/fuse ] || [ ! -x "$KCOPYDFS" ]; then
	echo "SKIP: the entrypoint run (needs root, /dev/fuse and kcopydfs at '$KCOPYDFS')"
	finish
fi
setup_work 8M
check="the entrypoint makes \$KCOPYDFS_MOUNT and runs kcopydfs -f there with its arguments"
ep_mount=$work/mnt/kcopyd
PATH=$(dirname "$KCOPYDFS"):$PATH KCOPYDFS_MOUNT=$ep_mount "$entrypoint" -o allow_other --max-jobs 7 \
	>"$work/entrypoint.out" 2>&1 &
ep_pid=$!
daemon_pids+=("$ep_pid")
daemon_mounts+=("$ep_mount")
for _ in $(seq 100); do
	is_mounted "$ep_mount" && cat "$ep_mount/version" >/dev/null 2>&1 && break
	kill -0 "$ep_pid" 2>/dev/null || break
	sleep 0.05
done
line=$(awk -v dir="$ep_mount" '$2 == dir' /proc/mounts)
command=$(tr '\0' ' ' <"/proc/$ep_pid/cmdline" 2>/dev/null)
if [[ $line != *fuse.kcopydfs*allow_other* ]]; then
	fail "$check" "a fuse.kcopydfs mount with allow_other at $ep_mount" "'$line'; $(tr '\n' '|' <"$work/entrypoint.out")"
elif [ "$command" != "kcopydfs -f -o allow_other --max-jobs 7 $ep_mount " ]; then
	fail "$check" "the shell replaced by: kcopydfs -f -o allow_other --max-jobs 7 $ep_mount" "'$command'"
else
	pass "$check"
fi

check="SIGTERM (docker stop) stops it: exit status 0, nothing mounted"
kill -TERM "$ep_pid"
for _ in $(seq 50); do
	kill -0 "$ep_pid" 2>/dev/null || break
	sleep 0.1
done
wait "$ep_pid"
status=$?
if [ "$status" != 0 ]; then
	fail "$check" "exit status 0" "$status; $(tr '\n' '|' <"$work/entrypoint.out")"
elif is_mounted "$ep_mount"; then
	fail "$check" "$ep_mount unmounted" "still mounted"
else
	pass "$check"
fi
finish
