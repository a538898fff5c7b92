#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopydfs-memory.sh: the daemon's memory bound.  With --pages 256 its
# own resident memory (VmHWM less the file pages of its program and
# libraries, RssFile: code shared with every process that maps them, about
# 5 MB since libnbd brings gnutls, libxml2 and ICU) must stay below
# --pages x 4 KiB + 16 MiB while
# the most jobs that may exist do: 8192 finished ones and --max-jobs
# (4096) queued at once behind a slow source, each with its clone
# descriptor still open.  Then the next job is refused with ENOSPC (12,288
# jobs exist).  A bound on memory, not on time: nothing here is timed.
#
# Run by `make check` (not in sanitized builds, whose shadow memory and
# quarantine are no measure of the daemon's), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test-kcopydfs-memory.sh
# Needs root, nbdkit and nbdfuse; exits 77 (skipped) without them.  Prints
# PASS or FAIL per check with what it expected and got; the last line is
# "N passed, M failed".

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

require_basics python3 truncate timeout
setup_work 64M

PAGES=256
FINISHED=8192
QUEUED=4096				# the default --max-jobs
BOUND_KB=$((PAGES * 4 + 16 * 1024))

truncate -s 1M "$work/src.img"
truncate -s 24M "$work/dst.img"		# 4 KiB a job: the finished ones share 1024 regions, the queued have their own
# Reads that take 250 ms each keep the queued jobs queued (one 1 MiB slot
# in a 1 MiB budget: one read at a time).
slow_source 16M 250ms || skip_all "needs nbdkit and nbdfuse (a source slow enough to keep jobs queued)"

start_daemon --pages "$PAGES" || {
	fail "kcopydfs mounts" "a kcopydfs mount at $daemon_mount" "$(tr '\n' '|' <"$work/kcopydfs.log")"
	finish
}
mnt=$daemon_mount
pid=$daemon_pid

# The client: FINISHED jobs made, run and left (clone, write, close), then
# QUEUED more on the slow source with their clone descriptors kept open,
# then one more clone, which must fail.  Prints the stats lines and the
# errno of that last open.
python3 - "$mnt" "$work/src.img" "$work/dst.img" "$slow_file" "$FINISHED" "$QUEUED" >"$work/client.out" \
	2>"$work/client.err" <<'EOF'
import errno, os, resource, sys

mnt, src, dst, slow, finished, queued = sys.argv[1:5] + [int(n) for n in sys.argv[5:7]]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

def submit(description, keep):
    fd = os.open(mnt + "/clone", os.O_RDWR)
    os.read(fd, 32)
    os.write(fd, description.encode())
    if not keep:
        os.close(fd)
    return fd

for job in range(finished):
    submit("copy from=%s:0+8 to=%s:%d+8\n" % (src, dst, job % 1024 * 8), False)
# The last of them has ended before the queued ones come (so have the others, as small and older).
with open("%s/jobs/%d/wait" % (mnt, finished)) as wait:
    wait.read()
held = [submit("copy from=%s:0+8 to=%s:%d+8\n" % (slow, dst, (1024 + n) * 8), True) for n in range(queued)]
with open(mnt + "/stats") as stats:
    print(stats.read(), end="")
try:
    os.close(os.open(mnt + "/clone", os.O_RDWR))
    print("next clone: opened")
except OSError as e:
    print("next clone: " + errno.errorcode[e.errno])
EOF
client_status=$?

# expect_equal NAME WHAT EXPECTED GOT
expect_equal() {
	[ "$3" = "$4" ] && return 0
	fail "$1" "$2 '$3'" "$2 '$4'"
	return 1
}
hwm_kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
file_kb=$(awk '/^RssFile:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
active=$(sed -n 's/^jobs_active: //p' "$work/client.out")
exist=$(sed -n 's/^jobs: //p' "$work/client.out")

check="the client made $FINISHED finished and $QUEUED queued jobs"
if [ "$client_status" != 0 ]; then
	fail "$check" "the client to succeed" "exit $client_status: $(tail -3 "$work/client.err" | tr '\n' '|')"
else
	# The slow source lets at most two jobs a second end: most of them are still queued.
	expect_equal "$check" "jobs:" $((FINISHED + QUEUED)) "$exist" &&
		if [ "${active:-0}" -ge $((QUEUED * 3 / 4)) ]; then
			pass "$check"
		else
			fail "$check" "at least $((QUEUED * 3 / 4)) of them queued or running" "jobs_active: $active"
		fi
fi

check="ENOSPC: the next job, when $((FINISHED + QUEUED)) exist"
expect_equal "$check" "" "next clone: ENOSPC" "$(sed -n 's/^next clone/&/p' "$work/client.out")" && pass "$check"

check="VmHWM less RssFile below --pages x 4 KiB + 16 MiB ($BOUND_KB kB) with all of them"
if [ -z "$hwm_kb" ] || [ -z "$file_kb" ]; then
	fail "$check" "VmHWM and RssFile lines in /proc/$pid/status" "none (is the daemon gone?)"
elif [ $((hwm_kb - file_kb)) -lt "$BOUND_KB" ]; then
	pass "$check"
	echo "      VmHWM: $hwm_kb kB, RssFile: $file_kb kB"
else
	fail "$check" "VmHWM - RssFile below $BOUND_KB kB" "$hwm_kb - $file_kb kB"
fi

finish
