#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test_kcopydfs_badinput.py: kcopydfs shrugs off garbage.  Every file of the
# mount is written with garbage, with random binary data, with a 1 MiB
# write, one byte per write, and at odd offsets; every file is read at odd
# offsets and sizes; mkdir is tried with hostile names ("..", "a/b", 300
# characters, 65 characters, non-UTF-8, a newline, a leading dot, outside
# jobs/).  Each gets a clear errno (checked one by one), the reason shows
# on the job's rejected: line where there is a job, and nothing else
# changes: two bystander jobs (one done, one idle) read the same before and
# after, the daemon is alive, and a new copy afterwards is correct.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test_kcopydfs_badinput.py
# Needs root (a tmpfs and a FUSE mount of its own); exits 77 without it.
#
# Every check prints PASS or FAIL with what it expected and what it got;
# the last line is "N passed, M failed"; the exit status is 1 on any failure.

import errno
import os
import random
import re
import sys
import tempfile

import test_kcopydfs
from test_kcopydfs import Failure, expect, skip

SIZE = 1 << 20
CHECK_SECONDS = 30
TOP_FILES = ("version", "stats", "metrics", "clone")
JOB_FILES = ("ctl", "state", "status", "wait")
READ_ONLY = ("version", "stats", "metrics", "state", "status", "wait")


def errno_name(number):
    return "%s (%s)" % (errno.errorcode.get(number, number), os.strerror(number))


def expect_errno(case, wanted, function, *args):
    """function(*args) must fail with one of the errnos in `wanted` (a number or a tuple)."""
    wanted = wanted if isinstance(wanted, tuple) else (wanted,)
    try:
        result = function(*args)
    except OSError as error:
        expect(error.errno in wanted, case, " or ".join(errno_name(w) for w in wanted), errno_name(error.errno))
        return error.errno
    raise Failure("%s\n      expected: %s\n      got:      success (%r)" % (
        case, " or ".join(errno_name(w) for w in wanted), result))


class Environment(test_kcopydfs.Environment):
    """test_kcopydfs's tmpfs and daemon (and its close()), with this test's files."""

    def setup(self):
        self.work = tempfile.mkdtemp(prefix="test_kcopydfs_badinput.")
        if self.run("mount", "-t", "tmpfs", "-o", "size=64M,mode=0755", "tmpfs", self.work).returncode != 0:
            skip("cannot mount a tmpfs on " + self.work)
        self.mounted_work = True
        with open(self.path("src.img"), "wb") as source:
            source.write(os.urandom(SIZE))
        for name in ("done.img", "after.img", "odd.img"):
            with open(self.path(name), "wb") as dest:
                dest.truncate(SIZE)
        self.start_daemon([], "test_kcopydfs_badinput-mnt.")
        make_bystanders()


env = Environment()


def mnt(*parts):
    return os.path.join(env.mount_point, *parts)


def job(name, *parts):
    return mnt("jobs", name, *parts)


def read_whole(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, 1 << 20, 0)
    finally:
        os.close(fd)


def write_once(path, data, offset=None):
    fd = os.open(path, os.O_WRONLY)
    try:
        return os.write(fd, data) if offset is None else os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def status_dict_of_wait(name):
    return dict(line.split(": ", 1) for line in read_whole(job(name, "wait")).decode().splitlines())


def status_of(name):
    return dict(line.split(": ", 1) for line in read_whole(job(name, "status")).decode().splitlines())


def bystanders():
    """What must not change: the two bystander jobs, as text."""
    return {name: (read_whole(job(name, "status")), read_whole(job(name, "ctl")), read_whole(job(name, "state")))
            for name in ("bystander-done", "bystander-idle")}


def make_bystanders():
    os.mkdir(job("bystander-done"))
    write_once(job("bystander-done", "ctl"), ("copy from=%s to=%s\n" % (env.path("src.img"),
                                                                         env.path("done.img"))).encode())
    read_whole(job("bystander-done", "wait"))
    os.mkdir(job("bystander-idle"))


def garbage_inputs():
    """(label, bytes) pairs that are no job description."""
    rng = random.Random(4242)
    inputs = [
        ("plain garbage", b"hello, kcopydfs\n"),
        ("an unknown verb", b"move from=/a to=/b\n"),
        ("a relative path", b"copy from=src.img to=dst.img\n"),
        ("random binary", bytes(rng.randrange(256) for _ in range(512))),
        ("an embedded NUL", b"copy from=/dev/null\0 to=/dev/null\n"),
        ("two lines", b"copy from=/a to=/b\ncopy from=/c to=/d\n"),
        ("only blanks", b"   \t \n"),
        ("an empty line", b"\n"),
        ("a huge number", b"copy from=/a:99999999999999999999999 to=/b\n"),
        ("an unterminated quote", b"copy from=\"/a to=/b\n"),
        ("bad flags", b"copy from=/a to=/b flags=fast\n"),
        ("33 destinations", b"copy from=/a " + b" ".join(b"to=/d%d" % i for i in range(33)) + b"\n"),
        ("a 4 KiB line", b"copy from=/" + b"a" * 5000 + b" to=/b\n"),
    ]
    return inputs


# ---- the checks --------------------------------------------------------------------


def check_garbage_to_ctl():
    before = bystanders()
    for label, data in garbage_inputs():
        name = "garbage-%d" % abs(hash(label))
        os.mkdir(job(name))
        number = expect_errno("%s written to ctl" % label, (errno.EINVAL, errno.E2BIG, errno.ERANGE, errno.ENOENT),
                              write_once, job(name, "ctl"), data)
        status = status_of(name)
        expect(status["state"] == "idle", "%s: the job stays idle" % label, "idle", status["state"])
        expect(status["rejected"] != "none" and errno.errorcode[number] in status["rejected"],
               "%s: rejected: names the reason and the errno" % label, "a reason with " + errno.errorcode[number],
               status["rejected"])
        os.rmdir(job(name))
    expect(bystanders() == before, "the bystanders after garbage", "unchanged", "changed")


def check_garbage_to_clone():
    before_jobs = sorted(os.listdir(mnt("jobs")))
    for label, data in garbage_inputs():
        fd = os.open(mnt("clone"), os.O_RDWR)
        try:
            job_id = os.read(fd, 64).decode().strip()
            expect_errno("%s written to clone" % label, (errno.EINVAL, errno.E2BIG, errno.ERANGE, errno.ENOENT),
                         os.write, fd, data)
            status = status_of(job_id)
            expect(status["state"] == "idle" and status["rejected"] != "none",
                   "%s: the clone job is idle with a rejected line" % label, "idle, rejected: ...",
                   (status["state"], status["rejected"]))
        finally:
            os.close(fd)
        os.rmdir(job(job_id))
    expect(sorted(os.listdir(mnt("jobs"))) == before_jobs, "jobs/ after the clone garbage", before_jobs,
           sorted(os.listdir(mnt("jobs"))))


def check_big_and_tiny_writes():
    before = bystanders()
    os.mkdir(job("big"))
    expect_errno("a 1 MiB write to ctl", (errno.E2BIG, errno.EINVAL), write_once, job("big", "ctl"), b"x" * (1 << 20))
    expect(status_of("big")["state"] == "idle", "after a 1 MiB write the job", "idle", status_of("big")["state"])
    # One byte per write: ctl takes lines, so the bytes build the line and
    # nothing runs before its newline, which starts the job.
    description = ("copy from=%s to=%s\n" % (env.path("src.img"), env.path("odd.img"))).encode()
    fd = os.open(job("big", "ctl"), os.O_WRONLY)
    try:
        for index, byte in enumerate(description):
            written = os.write(fd, bytes([byte]))
            expect(written == 1, "a one-byte write %r" % bytes([byte]), 1, written)
            if index == len(description) - 2:
                expect(status_of("big")["state"] == "idle", "before the newline the job", "idle",
                       status_of("big")["state"])
    finally:
        os.close(fd)
    final = status_dict_of_wait("big")
    expect(final["state"] == "done", "one-byte writes and a newline: the job", "done", final["state"])
    os.rmdir(job("big"))
    expect(bystanders() == before, "the bystanders after big and tiny writes", "unchanged", "changed")


def check_odd_offsets():
    os.mkdir(job("odd"))
    for offset in (1, 7, 4095, 1 << 40):
        expect_errno("garbage at offset %d" % offset, errno.EINVAL, write_once, job("odd", "ctl"), b"garbage\n", offset)
    # Offsets are ignored, as sysfs does: a good description at an odd offset starts the job.
    description = ("copy from=%s to=%s\n" % (env.path("src.img"), env.path("odd.img"))).encode()
    written = write_once(job("odd", "ctl"), description, 12345)
    expect(written == len(description), "a description at offset 12345", len(description), written)
    read_whole(job("odd", "wait"))
    expect(status_of("odd")["state"] == "done", "the job written at an odd offset", "done", status_of("odd")["state"])
    with open(env.path("src.img"), "rb") as a, open(env.path("odd.img"), "rb") as b:
        expect(a.read() == b.read(), "its copy", "identical to the source", "different")


def check_writes_to_read_only_files():
    before = bystanders()
    for path in [mnt(name) for name in ("version", "stats", "metrics")] + \
            [job("bystander-done", name) for name in ("state", "status", "wait")]:
        expect_errno("open %s for writing" % os.path.relpath(path, env.mount_point), errno.EACCES,
                     os.open, path, os.O_WRONLY)
    for path in (mnt(), mnt("jobs"), job("bystander-done")):
        expect_errno("open directory %s for writing" % (os.path.relpath(path, env.mount_point) or "/"),
                     errno.EISDIR, os.open, path, os.O_WRONLY)
    expect_errno("truncate ctl to 5 bytes", errno.EPERM, os.truncate, job("bystander-idle", "ctl"), 5)
    expect_errno("create a file in jobs/X", (errno.EPERM, errno.ENOSYS, errno.EACCES, errno.EROFS),
                 os.open, job("bystander-idle", "new"), os.O_WRONLY | os.O_CREAT, 0o600)
    expect(bystanders() == before, "the bystanders after writes to read-only files", "unchanged", "changed")


def check_reads_at_odd_offsets():
    paths = [mnt(name) for name in ("version", "stats", "metrics")] + \
        [job("bystander-done", name) for name in JOB_FILES] + [job("bystander-idle", name) for name in
                                                                ("ctl", "state", "status")]
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            # A read at offset 0 renders the file anew (stats changes all the time);
            # reads at other offsets continue that snapshot.
            whole = os.pread(fd, 1 << 20, 0)
            for offset in (1, 3, 7, 100, 4095, 4097, 1 << 20, 1 << 62):
                for size in (1, 3, 7, 64, 4095, 4097, 65536):
                    got = os.pread(fd, size, offset)
                    expect(got == whole[offset:offset + size],
                           "%s read %d bytes at %d" % (os.path.relpath(path, env.mount_point), size, offset),
                           whole[offset:offset + size][:40], got[:40])
        finally:
            os.close(fd)


def check_hostile_names():
    before = bystanders()
    listing = sorted(os.listdir(mnt("jobs")))
    cases = [
        ("..", (errno.EEXIST,)),
        (".", (errno.EEXIST,)),
        ("a/b", (errno.ENOENT,)),
        ("x" * 300, (errno.ENAMETOOLONG,)),
        ("x" * 65, (errno.ENAMETOOLONG,)),
        (b"\xff\xfe-not-utf8", (errno.EINVAL,)),
        ("new\nline", (errno.EINVAL,)),
        (".hidden", (errno.EINVAL,)),
        ("space name", (errno.EINVAL,)),
        ("bystander-done", (errno.EEXIST,)),
    ]
    for name, wanted in cases:
        path = os.path.join(mnt("jobs").encode(), name if isinstance(name, bytes) else name.encode())
        expect_errno("mkdir jobs/%r" % (name[:20] + "..." if len(name) > 20 else name), wanted, os.mkdir, path)
    expect_errno("mkdir at the top", errno.EPERM, os.mkdir, mnt("myjob"))
    expect_errno("mkdir inside a job", errno.EPERM, os.mkdir, job("bystander-idle", "sub"))
    expect_errno("rmdir a job that does not exist", errno.ENOENT, os.rmdir, job("no-such-job"))
    expect_errno("rmdir the jobs directory", (errno.EPERM, errno.EBUSY, errno.ENOTEMPTY), os.rmdir, mnt("jobs"))
    expect(sorted(os.listdir(mnt("jobs"))) == listing, "jobs/ after hostile names", listing,
           sorted(os.listdir(mnt("jobs"))))
    expect(bystanders() == before, "the bystanders after hostile names", "unchanged", "changed")


def check_still_serving():
    expect(env.daemon.poll() is None, "the daemon", "running", "exited %s" % env.daemon.poll())
    expect(read_whole(mnt("version")).startswith(b"kcopydfs "), "version", "kcopydfs ...", read_whole(mnt("version")))
    os.mkdir(job("after"))
    write_once(job("after", "ctl"), ("copy from=%s to=%s\n" % (env.path("src.img"), env.path("after.img"))).encode())
    final = read_whole(job("after", "wait")).decode()
    expect(re.search(r"^state: done$", final, re.M), "a copy after all that", "state: done", final)
    with open(env.path("src.img"), "rb") as a, open(env.path("after.img"), "rb") as b:
        expect(a.read() == b.read(), "its copy", "identical to the source", "different")
    stats = dict(line.split(": ", 1) for line in read_whole(mnt("stats")).decode().splitlines())
    expect(stats["jobs_active"] == "0", "stats jobs_active at the end", "0", stats["jobs_active"])


CHECKS = [
    ("garbage written to ctl is refused with a reason", check_garbage_to_ctl),
    ("garbage written to clone is refused with a reason", check_garbage_to_clone),
    ("a 1 MiB write and one-byte writes", check_big_and_tiny_writes),
    ("writes at odd offsets", check_odd_offsets),
    ("writes to read-only files and directories", check_writes_to_read_only_files),
    ("every file read at odd offsets and sizes", check_reads_at_odd_offsets),
    ("mkdir and rmdir with hostile names", check_hostile_names),
    ("the daemon still serves, a copy is correct", check_still_serving),
]


if __name__ == "__main__":
    sys.exit(test_kcopydfs.run_checks(env, CHECKS, CHECK_SECONDS))
