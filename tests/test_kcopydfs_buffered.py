#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test_kcopydfs_buffered.py: the refusals of kcopydfs(5), ERRORS, as a
# program with a buffered stream sees them.  Each line is written the way
# most Python is written:
#
#     with open(ctl, "w") as f:
#         f.write(line)
#
# where f.write() only fills Python's buffer and the write(2) happens when
# the block ends, at close: so the write must return, and the OSError come
# from close with exactly the errno kcopydfs(5) documents.  Checked for
# EINVAL (bad syntax; a line without its newline; a character device; a
# file of /proc; an overlap), E2BIG, ERANGE (a number; past the end),
# ENOENT (a path; the job removed), EACCES and EPERM (a writer that is not
# the owner, and the owner without the right to a file: as nobody), EBUSY,
# EAGAIN (--max-jobs 1 and a slow job running) and EDEADLK.  EDQUOT and
# ENOSPC are refusals of mkdir and of opening clone, not of a line: EDQUOT
# is checked at open().  After each, nothing but the job's rejected: line
# (and its error: line while idle) has changed: its state, its progress,
# jobs/ and stats.  A program that never flushes is never heard: its line
# reaches nobody and the job is untouched.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test_kcopydfs_buffered.py
# Needs root, the user nobody, nbdkit and nbdfuse (a slow source for
# EAGAIN); exits 77 without them.  Every check prints PASS or FAIL with what
# it expected and what it got; the last line is "N passed, M failed".

import errno
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import test_kcopydfs
from test_kcopydfs import Failure, expect, skip

SIZE = 1 << 20
SLOW_SIZE = 16 << 20            # read 1000 ms a request: about 2 s of copy
CHECK_SECONDS = 30
CHANGES_ON_REFUSAL = ("rejected", "error")  # what a refused line may change (kcopydfs(5), ERRORS)


class Environment(test_kcopydfs.Environment):
    """test_kcopydfs's tmpfs and daemon (allow_other, --max-jobs 1 --max-jobs-per-user 2), a slow source, files."""

    def setup(self):
        try:
            self.nobody = pwd.getpwnam("nobody")
        except KeyError:
            skip("needs the user nobody")
        if not (shutil.which("nbdkit") and shutil.which("nbdfuse")):
            skip("needs nbdkit and nbdfuse (a slow source keeps a job running for EAGAIN)")
        self.work = tempfile.mkdtemp(prefix="test_kcopydfs_buffered.")
        if self.run("mount", "-t", "tmpfs", "-o", "size=64M,mode=0755", "tmpfs", self.work).returncode != 0:
            skip("cannot mount a tmpfs on " + self.work)
        self.mounted_work = True
        with open(self.path("src.img"), "wb") as source:
            source.write(os.urandom(SIZE))
        with open(self.path("secret.img"), "wb") as secret:
            secret.write(os.urandom(SIZE))
        os.chmod(self.path("secret.img"), 0o600)
        for name in ("dst.img", "done.img"):
            with open(self.path(name), "wb") as dest:
                dest.truncate(SIZE)
        with open(self.path("slow-dst.img"), "wb") as dest:
            dest.truncate(SLOW_SIZE)
        self.nbd_dir = self.path("slow")
        os.mkdir(self.nbd_dir)
        self.slow_path = os.path.join(self.nbd_dir, "disk")
        self.nbd = subprocess.Popen(["nbdfuse", self.slow_path, "--command", "nbdkit", "-s", "--exit-with-parent",
                                     "--filter=delay", "memory", str(SLOW_SIZE), "rdelay=1000ms"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.isfile(self.slow_path):
                break
            time.sleep(0.05)
        else:
            raise Failure("nbdfuse did not export %s" % self.slow_path)
        self.start_daemon(["-o", "allow_other", "--max-jobs", "1", "--max-jobs-per-user", "2"],
                          "test_kcopydfs_buffered-mnt.")


env = Environment()


def mnt(*parts):
    return os.path.join(env.mount_point, *parts)


def job(name, *parts):
    return mnt("jobs", name, *parts)


def errno_name(number):
    """EDEADLK, not Python's EDEADLOCK (the same number): the name kcopydfs(5) and the daemon use."""
    if not number:
        return "no error"
    return "EDEADLK" if number == errno.EDEADLK else errno.errorcode.get(number, str(number))


def read_text(path):
    with open(path) as f:
        return f.read()


def status_of(name):
    return dict(line.split(": ", 1) for line in read_text(job(name, "status")).splitlines())


def stats():
    return dict(line.split(": ", 1) for line in read_text(mnt("stats")).splitlines())


def buffered_write(ctl, line, between=None):
    """`with open(ctl, "w") as f: f.write(line)`; between() runs once the file is open.
    Returns (did f.write() return?, the errno of the OSError that ended the block, or 0)."""
    wrote = False
    try:
        with open(ctl, "w") as f:
            if between:
                between()
            f.write(line)
            wrote = True
    except OSError as error:
        return wrote, error.errno
    return wrote, 0


def as_nobody(function, *args):
    """function(*args) in a child that is nobody:nogroup; returns what it returned (a short tuple of ints)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(reader)
            os.setgroups([])
            os.setgid(env.nobody.pw_gid)
            os.setuid(env.nobody.pw_uid)
            result = function(*args)
            os.write(writer, repr(result).encode())
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    if not text:
        raise Failure("the child as nobody reported nothing")
    return eval(text, {})    # a tuple of ints and bools, written by repr() above


def comparable(name):
    """The job's status without what a refusal may change (and the clock)."""
    status = status_of(name)
    return {key: value for key, value in status.items()
            if key not in CHANGES_ON_REFUSAL + ("elapsed", "bytes_per_sec")}


def snapshot(name):
    current = stats()
    return (comparable(name) if name else None, sorted(os.listdir(mnt("jobs"))),
            {key: current[key] for key in ("jobs", "jobs_active", "jobs_done", "jobs_failed", "jobs_cancelled")})


def expect_refused_at_close(case, name, wanted, wrote, got, rejected=True):
    """f.write() returned, close raised `wanted`, and the job's rejected: line names it (if `rejected`)."""
    expect(wrote, "%s: f.write() returns (the line waits in Python's buffer)" % case, "it returns",
           "it raised %s" % errno_name(got))
    expect(got == wanted, "%s: the OSError at close" % case, errno_name(wanted), errno_name(got))
    if rejected:
        line = status_of(name)["rejected"]
        expect(line.endswith("(%s)" % errno_name(wanted)), "%s: the rejected: line" % case,
               "a reason ending in (%s)" % errno_name(wanted), line)


def refused(case, name, line, wanted, between=None, rejected=True):
    """Write `line` to job `name`'s ctl, buffered; expect `wanted` at close and nothing else changed."""
    before = snapshot(name)
    wrote, got = buffered_write(job(name, "ctl"), line, between)
    expect_refused_at_close(case, name, wanted, wrote, got, rejected)
    expect(snapshot(name) == before, "%s: the job, jobs/ and stats after the refusal" % case, before,
           snapshot(name))


def new_job(name):
    os.mkdir(job(name))
    return name


# ---- the checks --------------------------------------------------------------------


def check_einval():
    new_job("syntax")
    refused("EINVAL, an unknown operation", "syntax", "copy bogus\n", errno.EINVAL)
    refused("EINVAL, a line without its newline ('cancel')", "syntax", "cancel", errno.EINVAL)
    expect(status_of("syntax")["state"] == "idle", "after 'cancel' without a newline the job", "idle",
           status_of("syntax")["state"])
    refused("EINVAL, a character device", "syntax", "copy from=/dev/null to=%s\n" % env.path("dst.img"),
            errno.EINVAL)
    refused("EINVAL, a file of /proc", "syntax", "copy from=/proc/self/status to=%s\n" % env.path("dst.img"),
            errno.EINVAL)
    refused("EINVAL, a destination that overlaps the source", "syntax",
            "copy from=%s to=%s\n" % (env.path("src.img"), env.path("src.img")), errno.EINVAL)


def check_e2big_erange_enoent():
    new_job("sizes")
    refused("E2BIG, a 5000-byte line", "sizes", "copy from=/%s to=/b\n" % ("a" * 5000), errno.E2BIG)
    refused("ERANGE, a number over 64 bits", "sizes", "copy from=/a:99999999999999999999999 to=/b\n", errno.ERANGE)
    refused("ERANGE, a region past the end", "sizes",
            "copy from=%s:4096+8 to=%s\n" % (env.path("src.img"), env.path("dst.img")), errno.ERANGE)
    refused("ENOENT, a missing path", "sizes",
            "copy from=%s to=%s\n" % (env.path("missing.img"), env.path("dst.img")), errno.ENOENT)
    # The job removed while its ctl is open: nothing is recorded anywhere.
    new_job("removed")
    listing = sorted(name for name in os.listdir(mnt("jobs")) if name != "removed")
    wrote, got = buffered_write(job("removed", "ctl"), "cancel\n", lambda: os.rmdir(job("removed")))
    expect_refused_at_close("ENOENT, the job removed", "removed", errno.ENOENT, wrote, got, rejected=False)
    expect(sorted(os.listdir(mnt("jobs"))) == listing, "ENOENT: jobs/ after", listing, sorted(os.listdir(mnt("jobs"))))


def check_eacces_eperm():
    # nobody's job: nobody may not read secret.img (root's, 0600).
    def make_and_write():
        os.mkdir(job("nobodys"))
        return buffered_write(job("nobodys", "ctl"), "copy from=%s to=%s\n" % (env.path("secret.img"),
                                                                              env.path("dst.img")))
    before = snapshot(None)
    wrote, got = as_nobody(make_and_write)
    expect_refused_at_close("EACCES, nobody's source it may not read", "nobodys", errno.EACCES, wrote, got)
    expect(status_of("nobodys")["state"] == "idle", "EACCES: nobody's job", "idle", status_of("nobodys")["state"])
    expect(snapshot(None)[2] == dict(before[2], jobs=str(int(before[2]["jobs"]) + 1)),
           "EACCES: stats after (one job more, nothing started)", before[2], snapshot(None)[2])
    # Root writes to nobody's job: only the owner may, and nothing is recorded.
    refused("EPERM, root writing to nobody's job", "nobodys",
            "copy from=%s to=%s\n" % (env.path("src.img"), env.path("dst.img")), errno.EPERM, rejected=False)
    # nobody has --max-jobs-per-user 2 jobs now; opening clone is refused at open(), not at close.
    def make_second():
        os.mkdir(job("nobody-2"))
        return (0,)
    expect(as_nobody(make_second) == (0,), "nobody's second job", "made", "not made")

    def open_clone():
        try:
            with open(mnt("clone"), "r+"):
                return (True, 0)
        except OSError as error:
            return (False, error.errno)
    opened, got = as_nobody(open_clone)
    expect(not opened and got == errno.EDQUOT, "EDQUOT, a third job of nobody's through open(clone)",
           "open() raises EDQUOT", "opened" if opened else errno_name(got))


def check_ebusy():
    new_job("finished")
    with open(job("finished", "ctl"), "w") as f:
        f.write("copy from=%s to=%s\n" % (env.path("src.img"), env.path("done.img")))
    read_text(job("finished", "wait"))
    expect(status_of("finished")["state"] == "done", "the job to refuse", "done", status_of("finished")["state"])
    refused("EBUSY, a description to a finished job", "finished",
            "copy from=%s to=%s\n" % (env.path("src.img"), env.path("done.img")), errno.EBUSY)
    refused("EBUSY, even one that would not parse", "finished", "copy bogus\n", errno.EBUSY)


def check_eagain():
    new_job("blocker")
    with open(job("blocker", "ctl"), "w") as f:
        f.write("copy from=%s to=%s\n" % (env.slow_path, env.path("slow-dst.img")))
    for _ in range(100):
        if status_of("blocker")["state"] == "running":
            break
        time.sleep(0.02)
    expect(status_of("blocker")["state"] == "running", "the slow job", "running", status_of("blocker")["state"])
    new_job("second")
    try:
        refused("EAGAIN, a second job under --max-jobs 1", "second",
                "copy from=%s to=%s\n" % (env.path("src.img"), env.path("dst.img")), errno.EAGAIN)
        expect(status_of("blocker")["state"] == "running", "EAGAIN: the running job after", "running",
               status_of("blocker")["state"])
    finally:
        with open(job("blocker", "ctl"), "w") as f:
            f.write("cancel\n")
        read_text(job("blocker", "wait"))


def check_edeadlk():
    new_job("onmount")
    refused("EDEADLK, a region on the mount itself", "onmount",
            "copy from=%s to=%s\n" % (mnt("version"), env.path("dst.img")), errno.EDEADLK)


def check_never_flushed():
    new_job("unflushed")
    before = status_of("unflushed")
    writer = subprocess.Popen([sys.executable, "-c",
                               "import sys, time\n"
                               "f = open(sys.argv[1], 'w')\n"
                               "f.write('copy bogus\\n')\n"
                               "print('written', flush=True)\n"
                               "time.sleep(60)\n", job("unflushed", "ctl")], stdout=subprocess.PIPE, text=True)
    try:
        said = writer.stdout.readline().strip()
        expect(said == "written", "the writer's f.write()", "written", said)
        time.sleep(0.3)
        expect(status_of("unflushed") == before, "a line in a buffer never flushed: the job meanwhile", before,
               status_of("unflushed"))
    finally:
        writer.kill()
        writer.wait()
    expect(status_of("unflushed") == before, "the writer killed: the job", before, status_of("unflushed"))


def check_still_serving():
    expect(env.daemon.poll() is None, "the daemon", "running", "exited %s" % env.daemon.poll())
    new_job("after")
    with open(job("after", "ctl"), "w") as f:
        f.write("copy from=%s to=%s\n" % (env.path("src.img"), env.path("dst.img")))
    final = read_text(job("after", "wait"))
    expect("state: done" in final.splitlines(), "a copy after all that", "state: done", final)
    with open(env.path("src.img"), "rb") as a, open(env.path("dst.img"), "rb") as b:
        expect(a.read() == b.read(), "its copy", "identical to the source", "different")


CHECKS = [
    ("EINVAL at close: syntax, no newline, a character device, /proc, an overlap", check_einval),
    ("E2BIG, ERANGE and ENOENT at close", check_e2big_erange_enoent),
    ("EACCES and EPERM at close, EDQUOT at open (as nobody)", check_eacces_eperm),
    ("EBUSY at close", check_ebusy),
    ("EAGAIN at close", check_eagain),
    ("EDEADLK at close", check_edeadlk),
    ("a line never flushed reaches nobody", check_never_flushed),
    ("the daemon still serves, a copy is correct", check_still_serving),
]


if __name__ == "__main__":
    sys.exit(test_kcopydfs.run_checks(env, CHECKS, CHECK_SECONDS))
