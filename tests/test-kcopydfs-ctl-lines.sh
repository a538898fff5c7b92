#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-kcopydfs-ctl-lines.sh: ctl (and a clone descriptor) is a line
# protocol (kcopydfs(5), "The line and the write").  Buffered writers cut a
# long line into writes of their buffer's size: bash's echo whose stdout was
# a pipe before the redirection, C stdio with a 4096-byte buffer
# (tests/ctl-stdio-writer), Python's open() with buffering=4096.  For lines
# of 4095, 4096, 4097 and 5000 bytes each must run exactly that line (the
# destination sector it names) or refuse it whole with E2BIG on a write or
# at close, starting nothing.  A line without its newline is never run: it
# is refused at close with EINVAL (`printf cancel > ctl` cancels nothing),
# and a writer killed halfway through a line starts nothing.  A description
# written to a finished job is EBUSY, well formed or not (the state first).
# And `cat A/ctl > B/ctl` starts the same job for a 32-destination
# description whose canonical form is longer than 4096 bytes.
#
# Run by `make check`, or by hand:
#   sudo KCOPYDFS=build/kcopydfs BUILDDIR=build tests/test-kcopydfs-ctl-lines.sh
# Needs root (tmpfs, FUSE); exits 77 (skipped) without it.
#
# Every check prints PASS or FAIL with what it expected and what it got;
# the last line is "N passed, M failed"; the exit status is 1 on any failure.

set -u

. "${TESTS_SRCDIR:-$(dirname "$0")}/kcopydfs-lib.sh"

WRITER=${BUILDDIR:-$(dirname "$KCOPYDFS")}/tests/ctl-stdio-writer
require_basics python3 cmp dd truncate timeout
[ -x "$WRITER" ] || skip_all "no $WRITER (build it: make tests/ctl-stdio-writer)"
setup_work 256M

if ! start_daemon; then
	fail "kcopydfs mounts" "a kcopydfs mount at $daemon_mount" "$(tr '\n' '|' <"$work/kcopydfs.log")"
	finish
fi
mnt=$daemon_mount
jobs=$mnt/jobs
SECTOR=20480	# where every padded line copies to; its first digits are a valid sector too

dd if=/dev/urandom of="$work/src.img" bs=1M count=1 status=none
truncate -s 16M "$work/dst.img"

# padded_line N: "copy from=$work/./././src.img:0+8 to=$work/dst.img:SECTOR",
# exactly N bytes, padded with "/." in the source path and a leading blank.
padded_line() {
	local path=$work tail=" to=$work/dst.img:$SECTOR" line
	line="copy from=$path/src.img:0+8$tail"
	while [ $((${#line} + 2)) -le "$1" ]; do
		path="$path/."
		line="copy from=$path/src.img:0+8$tail"
	done
	[ ${#line} -lt "$1" ] && line=" $line"
	printf '%s' "$line"
}

# job_outcome JOB: "STATE CANONICAL-DESTINATION", e.g. "done to=/w/dst.img:20480+8"
# (the destination as ctl reads back; "-" when ctl is empty), after the job ended.
job_outcome() {
	local state dest
	state=$(cat "$jobs/$1/state")
	case $state in queued | running) timeout 10 cat "$jobs/$1/wait" >/dev/null; state=$(cat "$jobs/$1/state") ;; esac
	dest=$(grep -o ' to=[^ ]*' "$jobs/$1/ctl" | sed 's/^ //')
	printf '%s %s' "$state" "${dest:--}"
}

# expect_line CHECK JOB LENGTH STATUS SAID: what a writer of a LENGTH-byte line
# did (its exit status and what it said) was right, and so was the job.
expect_line() {
	local check=$1 job=$2 length=$3 status=$4 said=$5 outcome
	outcome=$(job_outcome "$job")
	if [ "$length" -le 4096 ]; then
		if [ "$status" != 0 ] || [ "$outcome" != "done to=$work/dst.img:$SECTOR+8" ]; then
			fail "$check" "the writer succeeds and the job ran the line: done to=$work/dst.img:$SECTOR+8" \
				"status $status ($said); $outcome; rejected: $(status_field "$jobs/$job" rejected)"
			return
		fi
	else
		if [ "$status" = 0 ] || [[ $said != *"$(errno_text E2BIG)"* && $said != *E2BIG* ]] ||
			[ "$outcome" != "idle -" ]; then
			fail "$check" "the writer told E2BIG (on a write or at close), nothing started (idle -)" \
				"status $status ($said); $outcome; rejected: $(status_field "$jobs/$job" rejected)"
			return
		fi
	fi
	pass "$check"
}

for length in 4095 4096 4097 5000; do
	line=$(padded_line "$length")
	[ ${#line} = "$length" ] || fail "padded_line $length" "$length bytes" "${#line} bytes"

	# bash: stdout was a pipe when echo first wrote, so its stdio buffer is 4096 bytes.
	job=bash-$length
	mkdir "$jobs/$job"
	bash -c 'echo started; echo "$1" > "$2"' _ "$line" "$jobs/$job/ctl" 2>"$work/said" | cat >/dev/null
	expect_line "bash, stdout a pipe: echo \"\$line\" > ctl, a $length-byte line" "$job" "$length" \
		"${PIPESTATUS[0]}" "$(tr '\n' ' ' <"$work/said")"

	# C stdio with a 4096-byte buffer: fwrite of the line and its newline, then fclose.
	job=stdio-$length
	mkdir "$jobs/$job"
	printf '%s\n' "$line" | "$WRITER" "$jobs/$job/ctl" 4096 2>"$work/said"
	expect_line "C stdio, setvbuf 4096: a $length-byte line" "$job" "$length" $? "$(tr '\n' ' ' <"$work/said")"

	# Python: open(ctl, "w") as f: f.write(line), default and 4096-byte buffers.
	for buffering in default 4096; do
		job=python-$buffering-$length
		mkdir "$jobs/$job"
		python3 - "$jobs/$job/ctl" "$line" "$buffering" 2>"$work/said" <<'EOF'
import errno, sys
ctl, line, buffering = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    with open(ctl, "w", **({} if buffering == "default" else {"buffering": int(buffering)})) as f:
        f.write(line + "\n")
except OSError as error:
    print("%s: %s" % (errno.errorcode[error.errno], error.strerror), file=sys.stderr)
    sys.exit(1)
EOF
		expect_line "Python open(ctl, 'w', buffering=$buffering).write: a $length-byte line" "$job" "$length" $? \
			"$(tr '\n' ' ' <"$work/said")"
	done
done

# The same code path through a clone descriptor: stdio, 4096-byte buffer.
for length in 4096 4097; do
	line=$(padded_line "$length")
	id=$(printf '%s\n' "$line" | "$WRITER" -c "$mnt/clone" 4096 2>"$work/said")
	status=$?
	id=${id//[!0-9]/}
	if [ -z "$id" ] || [ ! -d "$jobs/$id" ]; then
		fail "clone, C stdio, setvbuf 4096: a $length-byte line" "a job number, and the job kept" \
			"'$id', status $status ($(tr '\n' ' ' <"$work/said"))"
	else
		expect_line "clone, C stdio, setvbuf 4096: a $length-byte line" "$id" "$length" "$status" \
			"$(tr '\n' ' ' <"$work/said")"
	fi
done

# Many lines cut anywhere: one byte per write builds each line, and the lines run in order.
check="one byte per write(2): the line runs once its newline comes"
mkdir "$jobs/bytewise"
python3 - "$jobs/bytewise/ctl" "copy from=$work/src.img:0+8 to=$work/dst.img:$SECTOR" 2>"$work/said" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
for byte in (sys.argv[2] + "\n").encode():
    assert os.write(fd, bytes([byte])) == 1
os.close(fd)
EOF
expect_equal_outcome=$(job_outcome bytewise)
[ "$expect_equal_outcome" = "done to=$work/dst.img:$SECTOR+8" ] && pass "$check" ||
	fail "$check" "done to=$work/dst.img:$SECTOR+8" "$expect_equal_outcome; $(tr '\n' ' ' <"$work/said")"

# A line without its newline is never run.
check="printf 'cancel' > ctl (no newline): refused at close with EINVAL, the idle job not cancelled"
mkdir "$jobs/no-newline"
printf 'cancel' >"$jobs/no-newline/ctl" 2>"$work/said"
python3 - "$jobs/no-newline/ctl" >"$work/close.out" 2>&1 <<'EOF'
import errno, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
print("write", os.write(fd, b"cancel"))
try:
    os.close(fd)
    print("close ok")
except OSError as error:
    print("close", errno.errorcode[error.errno])
EOF
got="$(tr '\n' ' ' <"$work/close.out")state $(cat "$jobs/no-newline/state"); rejected: $(status_field "$jobs/no-newline" rejected)"
case $got in
"write 6 close EINVAL state idle; rejected: "*"must end with a newline"*"never run (EINVAL)") pass "$check" ;;
*) fail "$check" "write 6 close EINVAL state idle; rejected: ...must end with a newline...never run (EINVAL)" "$got" ;;
esac

# A duplicate of the descriptor closed in another process (a forked child, a program started with
# it) while the writer is half-way through its line: that flush is not the writer's, the line goes on.
check="a line written in two parts around children that inherit the descriptor runs"
mkdir "$jobs/children"
python3 - "$jobs/children/ctl" "$work/src.img" "$work/dst.img" $((SECTOR + 64)) >"$work/said" 2>&1 <<'EOF'
import os, subprocess, sys
ctl, src, dst, sector = sys.argv[1:]
fd = os.open(ctl, os.O_WRONLY)
os.write(fd, ("copy from=%s:0+8 " % src).encode())
subprocess.run(["true"], pass_fds=(fd,), check=True)
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
os.write(fd, ("to=%s:%s\n" % (dst, sector)).encode())
os.close(fd)
EOF
outcome=$(job_outcome children)
[ "$outcome" = "done to=$work/dst.img:$((SECTOR + 64))+8" ] && pass "$check" ||
	fail "$check" "done to=$work/dst.img:$((SECTOR + 64))+8" "$outcome; $(tr '\n' ' ' <"$work/said")"

check="printf 'cancel' > ctl of a started job: not cancelled, it ends done"
mkdir "$jobs/keeps-running"
truncate -s 160M "$work/big-src.img" "$work/big-dst.img"
echo "copy from=$work/big-src.img to=$work/big-dst.img" >"$jobs/keeps-running/ctl"
printf 'cancel' >"$jobs/keeps-running/ctl"
state_after=$(cat "$jobs/keeps-running/state")
outcome=$(job_outcome keeps-running)
rejected=$(status_field "$jobs/keeps-running" rejected)
if [ "${outcome%% *}" = done ] && [[ $rejected == *"never run (EINVAL)" ]]; then
	pass "$check"
else
	fail "$check" "done in the end, rejected: ... never run (EINVAL)" "state $state_after then $outcome; rejected: $rejected"
fi
rm -f "$work/big-src.img" "$work/big-dst.img"

check="a writer killed after 4096 bytes of a line without its newline starts nothing"
mkdir "$jobs/killed"
line=$(padded_line 4096)
python3 - "$jobs/killed/ctl" "$line" >"$work/killed.out" 2>&1 <<'EOF' &
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY)
print("wrote", os.write(fd, sys.argv[2].encode()), flush=True)
time.sleep(60)
EOF
killed_pid=$!
for _ in $(seq 100); do grep -q wrote "$work/killed.out" && break; sleep 0.05; done
kill -KILL "$killed_pid"
wait "$killed_pid" 2>/dev/null
got="$(cat "$work/killed.out"); $(job_outcome killed); rejected: $(status_field "$jobs/killed" rejected)"
case $got in
"wrote 4096; idle -; rejected: "*"never run (EINVAL)") pass "$check" ;;
*) fail "$check" "wrote 4096; idle -; rejected: ... never run (EINVAL)" "$got" ;;
esac

check="the tail of an over-long line never runs, and the next line does"
mkdir "$jobs/tail"
valid=" copy from=$work/src.img:0+8 to=$work/dst.img:$SECTOR"
python3 - "$jobs/tail/ctl" "$valid" >"$work/tail.out" 2>&1 <<'EOF'
import errno, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
valid = (sys.argv[2] + "\n").encode()
results = []
# 12288 bytes without a newline (more than any command can be), then a
# line end that alone would be a valid description, then that line again.
for chunk in (b"x" * 4096, b"x" * 4096, b"x" * 4096, valid, valid):
    try:
        results.append(str(os.write(fd, chunk)))
    except OSError as error:
        results.append(errno.errorcode[error.errno])
os.close(fd)
print(" ".join(results))
EOF
got="$(cat "$work/tail.out"); $(job_outcome tail)"
expected="4096 4096 E2BIG E2BIG $((${#valid} + 1)); done to=$work/dst.img:$SECTOR+8"
[ "$got" = "$expected" ] && pass "$check" || fail "$check" "$expected" "$got"

check="EBUSY: 'copy bogus' written to a finished job (its state is checked first)"
echo "copy bogus" >"$jobs/bash-4095/ctl" 2>"$work/said"
status=$?
got="status $status: $(tr '\n' ' ' <"$work/said")rejected: $(status_field "$jobs/bash-4095" rejected)"
case $got in
"status 1: "*"write error: $(errno_text EBUSY) rejected: job bash-4095 has already ended (done) (EBUSY)") pass "$check" ;;
*) fail "$check" "write error: $(errno_text EBUSY), rejected: job bash-4095 has already ended (done) (EBUSY)" "$got" ;;
esac

# cat A/ctl > B/ctl of a job whose canonical description is over 4096 bytes.
check="cat A/ctl > B/ctl: 32 destinations and long paths, canonical form over 4096 bytes"
# A zero of 32 destinations without counts, 4000 to 4096 bytes long: the
# canonical form adds ":0+128" to each, 192 bytes.
long_dir=$work/d
while :; do
	line="zero"
	for index in $(seq -w 0 31); do line="$line to=$long_dir/destination-file-number-$index.img"; done
	[ ${#line} -ge 4000 ] && break
	long_dir=${long_dir}d
done
mkdir -p "$long_dir"
for index in $(seq -w 0 31); do truncate -s 64K "$long_dir/destination-file-number-$index.img"; done
mkdir "$jobs/wide-a" "$jobs/wide-b"
echo "$line" >"$jobs/wide-a/ctl" 2>"$work/said"
job_outcome wide-a >/dev/null
canonical_a=$(cat "$jobs/wide-a/ctl")
cat "$jobs/wide-a/ctl" >"$jobs/wide-b/ctl" 2>>"$work/said"
status=$?
job_outcome wide-b >/dev/null
canonical_b=$(cat "$jobs/wide-b/ctl")
if [ ${#line} -le 4096 ] && [ ${#canonical_a} -gt 4096 ] && [ "$status" = 0 ] &&
	[ "$(cat "$jobs/wide-b/state")" = done ] && [ "$canonical_a" = "$canonical_b" ]; then
	pass "$check"
else
	fail "$check" "a ${#line}-byte line, a canonical form over 4096 bytes, cat > B succeeds, B done with the same" \
		"canonical ${#canonical_a} bytes; cat status $status ($(tr '\n' ' ' <"$work/said")); B: $(cat "$jobs/wide-b/state"), rejected: $(status_field "$jobs/wide-b" rejected)"
fi

finish
