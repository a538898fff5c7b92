#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test_kcopydfs.py: kcopydfs through the system calls a program uses, with
# nothing but the standard library: open, os.read, os.write, os.pread and
# select.poll.  Jobs submitted with mkdir + ctl and with clone; poll on
# `wait` (POLLIN once final) and on `state` and `status` (POLLIN once the
# job changed since that descriptor last read it); status parsed as
# "key: value" lines; O_NONBLOCK reads of `wait` (EAGAIN until final);
# cancelling a slow job (progress kept); reads at odd offsets and sizes
# (slices of one snapshot, taken by the read at offset 0).
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test_kcopydfs.py
# Needs root (a tmpfs and a FUSE mount of its own); exits 77 (skipped)
# without it.  Slow jobs read from nbdkit's delay filter through nbdfuse;
# without those, from a loop device with kcopydfs copying 4 KiB at a time.
#
# Every check prints PASS or FAIL with what it expected and what it got;
# the last line is "N passed, M failed"; the exit status is 1 on any failure.

import errno
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

KCOPYDFS = os.environ.get("KCOPYDFS") or os.path.join(os.environ.get("BUILDDIR", "/tmp/h5build"), "kcopydfs")
SIZE = 8 << 20                  # bytes in the source file
SECTORS = SIZE // 512
STATUS_KEYS = ["state", "progress", "read_err", "write_err", "error", "bytes_per_sec", "elapsed", "owner",
               "rejected", "sectors_data", "sectors_zero", "sectors_offloaded", "checkpoint", "rate", "verify"]
FINAL = ("done", "failed", "cancelled")
CHECK_SECONDS = 20              # a check that takes longer is stopped and fails


def skip(reason):
    print("SKIP: " + reason)
    sys.exit(77)


class Failure(Exception):
    pass


def expect(condition, case, expected, got):
    """Fail the check with the case, what was expected and what was seen."""
    if not condition:
        raise Failure("%s\n      expected: %s\n      got:      %r" % (case, expected, got))


def expect_errno(case, wanted, function, *args):
    """Call function(*args) and expect OSError with errno `wanted`."""
    try:
        result = function(*args)
    except OSError as error:
        expect(error.errno == wanted, case, "%s (%s)" % (errno.errorcode[wanted], os.strerror(wanted)),
               "%s (%s)" % (errno.errorcode.get(error.errno, error.errno), error.strerror))
        return
    raise Failure("%s\n      expected: %s\n      got:      success, %r" % (case, errno.errorcode[wanted], result))


class Environment:
    """A tmpfs, a kcopydfs mount and maybe an nbdfuse export, all undone by close()."""

    def __init__(self):
        self.work = None
        self.mounted_work = False
        self.mount_point = None
        self.daemon = None
        self.nbd = None
        self.nbd_dir = None
        self.loops = []
        self.slow_path = None
        self.slow_sectors = 0
        self.log = None

    def run(self, *command):
        return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def setup(self):
        self.work = tempfile.mkdtemp(prefix="test_kcopydfs.")
        if self.run("mount", "-t", "tmpfs", "-o", "size=320M,mode=0755", "tmpfs", self.work).returncode != 0:
            skip("cannot mount a tmpfs on " + self.work)
        self.mounted_work = True
        with open(self.path("src.img"), "wb") as source:
            source.write(os.urandom(SIZE))
        for name in ("d1.img", "d2.img", "d3.img", "slow-dest.img"):
            with open(self.path(name), "wb") as dest:
                dest.truncate(128 << 20 if name == "slow-dest.img" else SIZE)
        options = self.slow_source(128 << 20)
        self.start_daemon(options, "test_kcopydfs-mnt.")

    def slow_source(self, size):
        """A source of `size` bytes whose reads are slow, at self.slow_path:
        nbdkit's delay filter (50 ms a read) through nbdfuse, or without
        those a loop device that the daemon copies 4 KiB at a time, one at a
        time.  Returns the daemon options that go with it."""
        self.slow_sectors = size // 512
        if shutil.which("nbdkit") and shutil.which("nbdfuse"):
            self.nbd_dir = os.path.join(self.work, "slow")
            os.mkdir(self.nbd_dir)
            self.slow_path = os.path.join(self.nbd_dir, "disk")
            self.nbd = subprocess.Popen(["nbdfuse", self.slow_path, "--command", "nbdkit", "-s",
                                         "--filter=delay", "memory", str(size), "rdelay=50ms"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(200):
                if os.path.isfile(self.slow_path):
                    return []
                time.sleep(0.05)
            raise Failure("nbdfuse did not export %s" % self.slow_path)
        with open(self.path("slow-src.img"), "wb") as source:
            source.truncate(size)
        result = self.run("losetup", "-f", "--show", "--direct-io=on", self.path("slow-src.img"))
        if result.returncode != 0:
            skip("needs nbdkit and nbdfuse, or losetup: " + result.stdout.strip())
        self.slow_path = result.stdout.strip()
        self.loops.append(self.slow_path)
        return ["--depth", "1", "--subjob-kb", "4"]

    def start_daemon(self, options, prefix):
        """kcopydfs -f OPTIONS on a new mountpoint, logging to kcopydfs.log in the work directory."""
        self.mount_point = tempfile.mkdtemp(prefix=prefix)
        self.log = open(self.path("kcopydfs.log"), "w")
        self.daemon = subprocess.Popen([KCOPYDFS, "-f"] + options + [self.mount_point], stderr=self.log)
        for _ in range(100):
            if self.is_mounted() and os.path.exists(os.path.join(self.mount_point, "version")):
                return
            if self.daemon.poll() is not None:
                break
            time.sleep(0.05)
        raise Failure("kcopydfs did not mount %s (exit %s)" % (self.mount_point, self.daemon.poll()))

    def path(self, name):
        return os.path.join(self.work, name)

    def is_mounted(self, point=None):
        point = point or self.mount_point
        with open("/proc/mounts") as mounts:
            return any(line.split()[1] == point for line in mounts)

    def close(self):
        if self.daemon and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(5)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        if self.mount_point:
            if self.is_mounted():
                self.run("fusermount3", "-u", "-z", self.mount_point)
            os.rmdir(self.mount_point)
        for loop in self.loops:
            self.run("losetup", "-d", loop)
        if self.nbd:
            if self.is_mounted(self.nbd_dir):
                self.run("fusermount3", "-u", "-z", self.nbd_dir)
            try:
                self.nbd.wait(5)
            except subprocess.TimeoutExpired:
                self.nbd.kill()
                self.nbd.wait()
        if self.log:
            self.log.close()
        if self.mounted_work:
            for _ in range(10):
                if self.run("umount", self.work).returncode == 0:
                    break
                time.sleep(0.3)
            else:
                self.run("umount", "-l", self.work)
        if self.work:
            os.rmdir(self.work)


env = Environment()

# ---- helpers -----------------------------------------------------------------------


def mnt(*parts):
    return os.path.join(env.mount_point, *parts)


def job(name, *parts):
    return mnt("jobs", name, *parts)


def read_all(path, flags=0):
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks).decode()
            chunks.append(chunk)
    finally:
        os.close(fd)


def parse_status(text):
    """status as a list of (key, value), checking the shape of every line."""
    expect(text.endswith("\n"), "status ends in a newline", "...\\n", text[-20:])
    pairs = []
    for line in text[:-1].split("\n"):
        key, sep, value = line.partition(": ")
        expect(sep == ": ", "a 'key: value' line", "key: value", line)
        pairs.append((key, value))
    return pairs


def status_dict(text):
    """The status as a dict; its hash: lines (one per algorithm, between rate and verify) as "hashes"."""
    pairs = parse_status(text)
    keys = [key for key, _ in pairs if key != "hash"]
    expect(keys == STATUS_KEYS, "status keys in order", STATUS_KEYS, keys)
    hash_at = [index for index, (key, _) in enumerate(pairs) if key == "hash"]
    rate_at = [key for key, _ in pairs].index("rate")
    expect(hash_at == list(range(rate_at + 1, rate_at + 1 + len(hash_at))), "hash lines between rate and verify",
           "after rate", [key for key, _ in pairs])
    status = dict(pair for pair in pairs if pair[0] != "hash")
    status["hashes"] = [value for key, value in pairs if key == "hash"]
    return status


def progress_of(status):
    done, sep, total = status["progress"].partition("/")
    expect(sep == "/" and done.isdigit() and total.isdigit(), "progress is DONE/TOTAL", "N/N", status["progress"])
    return int(done), int(total)


def write_ctl(name, text):
    fd = os.open(job(name, "ctl"), os.O_WRONLY)
    try:
        return os.write(fd, text.encode())
    finally:
        os.close(fd)


def poll_in(fd, timeout_ms):
    """The events poll() reports for POLLIN on fd within timeout_ms."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    events = poller.poll(timeout_ms)
    return events[0][1] if events else 0


def wait_final(name, timeout_ms=10000):
    """Poll the job's wait file for POLLIN, then read it; its status as a dict."""
    fd = os.open(job(name, "wait"), os.O_RDONLY | os.O_NONBLOCK)
    try:
        events = poll_in(fd, timeout_ms)
        expect(events & select.POLLIN, "poll(wait) POLLIN within %d ms" % timeout_ms, "POLLIN", events)
        return status_dict(os.read(fd, 8192).decode())
    finally:
        os.close(fd)


def file_bytes(name, offset, length):
    with open(env.path(name), "rb") as data:
        data.seek(offset)
        return data.read(length)


def start_slow(name):
    """A job that takes seconds: the slow source copied to a 128 MiB file."""
    os.mkdir(job(name))
    write_ctl(name, "copy from=%s to=%s\n" % (env.slow_path, env.path("slow-dest.img")))


def cancel_and_wait(name):
    write_ctl(name, "cancel\n")
    return wait_final(name, 5000)


# ---- the checks ----------------------------------------------------------------------


def check_mkdir_ctl():
    os.mkdir(job("by-mkdir"))
    text = "copy from=%s:1M+2M to=%s:4M\n" % (env.path("src.img"), env.path("d1.img"))
    written = write_ctl("by-mkdir", text)
    expect(written == len(text), "os.write returns the whole length", len(text), written)
    status = wait_final("by-mkdir")
    expect(status["state"] == "done", "state after wait", "done", status["state"])
    expect(progress_of(status) == (4096, 4096), "progress", (4096, 4096), status["progress"])
    expect(file_bytes("d1.img", 4 << 20, 2 << 20) == file_bytes("src.img", 1 << 20, 2 << 20),
           "d1.img at 4 MiB equals src.img at 1 MiB for 2 MiB", "equal", "different bytes")
    canonical = read_all(job("by-mkdir", "ctl"))
    expected = "copy from=%s:2048+4096 to=%s:8192+4096\n" % (env.path("src.img"), env.path("d1.img"))
    expect(canonical == expected, "ctl reads back the canonical description", expected, canonical)


def check_clone():
    fd = os.open(mnt("clone"), os.O_RDWR)
    try:
        line = os.read(fd, 64).decode()
        expect(line.endswith("\n") and line[:-1].isdigit(), "clone reads a job number and a newline", "N\\n", line)
        name = line[:-1]
        expect(os.path.isdir(job(name)), "jobs/%s exists while the clone fd is open" % name, "a directory", "none")
        text = "copy from=%s to=%s to=%s\n" % (env.path("src.img"), env.path("d2.img"), env.path("d3.img"))
        written = os.write(fd, text.encode())
        expect(written == len(text), "os.write on the clone fd returns the whole length", len(text), written)
    finally:
        os.close(fd)
    status = wait_final(name)
    expect(status["state"] == "done", "state after wait", "done", status["state"])
    source = file_bytes("src.img", 0, SIZE)
    for dest in ("d2.img", "d3.img"):
        expect(file_bytes(dest, 0, SIZE) == source, dest + " equals src.img", "equal", "different bytes")
    owner = "%d:%d" % (os.getuid(), os.getgid())
    expect(status["owner"] == owner, "owner line", owner, status["owner"])


def check_clone_close_removes():
    fd = os.open(mnt("clone"), os.O_RDWR)
    name = os.read(fd, 64).decode().strip()
    os.close(fd)
    for _ in range(40):
        if not os.path.exists(job(name)):
            return
        time.sleep(0.025)
    raise Failure("jobs/%s after closing the clone fd without a write\n      expected: gone\n      got:      "
                  "still there after 1 s" % name)


def check_autoremove_descriptor_is_the_job():
    """clone-autoremove: one descriptor for the whole job; a read at 0 after the write waits."""
    fd = os.open(mnt("clone-autoremove"), os.O_RDWR | os.O_NONBLOCK)
    try:
        line = os.read(fd, 64).decode()
        expect(line.endswith("\n") and line[:-1].isdigit(), "clone-autoremove reads a job number", "N\n", line)
        name = line[:-1]
        expect(os.pread(fd, 64, 0).decode() == line, "a read at 0 before any write", line, os.pread(fd, 64, 0))
        os.write(fd, ("copy from=%s to=%s\n" % (env.slow_path, env.path("slow-dest.img"))).encode())
        expect_errno("an O_NONBLOCK read at 0 while the job runs", errno.EAGAIN, os.pread, fd, 64, 0)
        events = poll_in(fd, 100)
        expect(not events & select.POLLIN, "poll while the job runs", "not POLLIN", events)
        write_ctl(name, "cancel\n")
        events = poll_in(fd, 5000)
        expect(events & select.POLLIN, "poll once the job ended", "POLLIN", events)
        text = os.pread(fd, 8192, 0).decode()
        status = status_dict(text)
        expect(status["state"] == "cancelled", "a read at 0 after the end gives the final status", "cancelled",
               status["state"])
        expect(os.pread(fd, 8192, 5).decode() == text[5:], "a read at 5 continues that status", text[5:40],
               os.pread(fd, 8192, 5)[:35])
    finally:
        os.close(fd)
    # Blocking: the read at 0 returns at the end, with the status; then the close takes the job.
    fd = os.open(mnt("clone-autoremove"), os.O_RDWR)
    try:
        name = os.read(fd, 64).decode().strip()
        os.write(fd, ("copy from=%s to=%s\n" % (env.path("src.img"), env.path("d1.img"))).encode())
        status = status_dict(os.pread(fd, 8192, 0).decode())
        expect(status["state"] == "done", "a blocking read at 0 after the write", "state: done", status)
    finally:
        os.close(fd)
    for _ in range(40):
        if not os.path.exists(job(name)):
            break
        time.sleep(0.025)
    expect(not os.path.exists(job(name)), "the job after closing its clone-autoremove descriptor", "gone",
           "still there after 1 s")
    expect(file_bytes("d1.img", 0, SIZE) == file_bytes("src.img", 0, SIZE), "its copy", "equal", "different")


def check_status_fields():
    os.mkdir(job("fields"))
    idle = status_dict(read_all(job("fields", "status")))
    expected = {"state": "idle", "progress": "0/0", "read_err": "0", "write_err": "0x0", "error": "none",
                "bytes_per_sec": "0", "elapsed": "0.000", "rejected": "none", "sectors_data": "0",
                "sectors_zero": "0", "sectors_offloaded": "0", "checkpoint": "0", "rate": "none", "verify": "none"}
    for key, value in expected.items():
        expect(idle[key] == value, "idle job's " + key, value, idle[key])
    write_ctl("fields", "zero to=%s:0+1M\n" % env.path("d1.img"))
    done = wait_final("fields")
    expect(done["state"] == "done", "state", "done", done["state"])
    expect(progress_of(done) == (2048, 2048), "progress of a 1 MiB zero", (2048, 2048), done["progress"])
    expect(int(done["read_err"]) == 0 and int(done["write_err"], 16) == 0, "error bits", "0 and 0x0",
           (done["read_err"], done["write_err"]))
    expect(done["write_err"].startswith("0x"), "write_err in hex", "0x...", done["write_err"])
    elapsed = float(done["elapsed"])
    rate = int(done["bytes_per_sec"])
    expect(elapsed >= 0 and rate >= 0, "elapsed and bytes_per_sec are numbers", ">= 0", (elapsed, rate))
    expect(file_bytes("d1.img", 0, 1 << 20) == bytes(1 << 20), "d1.img zeroed for 1 MiB", "zeros", "other bytes")
    # A zero job's sectors are all zero ranges, none data, none offloaded; all below the checkpoint.
    counts = tuple(int(done[key]) for key in ("sectors_data", "sectors_zero", "sectors_offloaded", "checkpoint"))
    expect(counts == (0, 2048, 0, 2048), "sectors_data, sectors_zero, sectors_offloaded, checkpoint of the zero job",
           (0, 2048, 0, 2048), counts)
    state = read_all(job("fields", "state"))
    expect(state == "done\n", "state file", "done\\n", state)


def check_rejected_write():
    os.mkdir(job("refused"))
    expect_errno("os.write of 'copy from=relative' to ctl", errno.EINVAL, write_ctl, "refused",
                 "copy from=relative.img to=%s\n" % env.path("d1.img"))
    status = status_dict(read_all(job("refused", "status")))
    expect(status["error"] == 'from="relative.img": relative path (EINVAL)', "error line", "the reason (EINVAL)",
           status["error"])
    expect(status["rejected"] == status["error"], "rejected line", status["error"], status["rejected"])
    expect(status["state"] == "idle", "state after a refused write", "idle", status["state"])
    expect_errno("os.write of a 5000-byte line", errno.E2BIG, write_ctl, "refused",
                 "copy from=/" + "x" * 4990 + " to=/y\n")
    write_ctl("refused", "copy from=%s:0+8 to=%s:0\n" % (env.path("src.img"), env.path("d1.img")))
    expect(wait_final("refused")["state"] == "done", "the job starts after refused writes", "done", "not done")
    expect_errno("os.write of a description to a started job", errno.EBUSY, write_ctl, "refused",
                 "copy from=%s:0+8 to=%s:0\n" % (env.path("src.img"), env.path("d1.img")))


def check_wait_poll():
    os.mkdir(job("polled"))
    fd = os.open(job("polled", "wait"), os.O_RDONLY)
    try:
        events = poll_in(fd, 100)
        expect(events == 0, "poll(wait) on an idle job for 100 ms", "no event", events)
        # About 0.3 s through the 50 ms-a-read source (the fallback takes longer).
        write_ctl("polled", "copy from=%s:0+12M to=%s\n" % (env.slow_path, env.path("slow-dest.img")))
        events = poll_in(fd, 0)
        expect(events == 0, "poll(wait) right after the start", "no event", events)
        started = time.monotonic()
        events = poll_in(fd, 15000)
        waited = time.monotonic() - started
        expect(events & select.POLLIN, "poll(wait) until the job ends", "POLLIN", events)
        status = status_dict(os.read(fd, 8192).decode())
        expect(status["state"] == "done", "state read from wait after POLLIN", "done", status["state"])
        expect(waited > 0.05, "poll(wait) blocked while the job ran", "> 0.05 s", waited)
        expect(poll_in(fd, 0) & select.POLLIN, "poll(wait) once final, again", "POLLIN", poll_in(fd, 0))
    finally:
        os.close(fd)


def check_wait_nonblock():
    os.mkdir(job("nonblock"))
    fd = os.open(job("nonblock", "wait"), os.O_RDONLY | os.O_NONBLOCK)
    try:
        expect_errno("O_NONBLOCK read of wait on an idle job", errno.EAGAIN, os.read, fd, 4096)
        write_ctl("nonblock", "copy from=%s:0+12M to=%s\n" % (env.slow_path, env.path("slow-dest.img")))
        expect_errno("O_NONBLOCK read of wait on a running job", errno.EAGAIN, os.read, fd, 4096)
        expect_errno("O_NONBLOCK pread of wait at offset 0", errno.EAGAIN, os.pread, fd, 4096, 0)
        expect(poll_in(fd, 15000) & select.POLLIN, "poll(wait)", "POLLIN", "no event")
        status = status_dict(os.read(fd, 8192).decode())
        expect(status["state"] == "done", "O_NONBLOCK read of wait once done", "done", status["state"])
    finally:
        os.close(fd)


def check_state_poll():
    os.mkdir(job("watched"))
    state_fd = os.open(job("watched", "state"), os.O_RDONLY)
    status_fd = os.open(job("watched", "status"), os.O_RDONLY)
    try:
        expect(os.pread(state_fd, 64, 0) == b"idle\n", "state of a new job", b"idle\n", os.pread(state_fd, 64, 0))
        os.pread(status_fd, 8192, 0)
        expect(poll_in(state_fd, 0) == 0, "poll(state) with no change since the read", "no event",
               poll_in(state_fd, 0))
        expect(poll_in(status_fd, 0) == 0, "poll(status) with no change since the read", "no event",
               poll_in(status_fd, 0))
        # A refused write changes the error line: a change.
        expect_errno("a refused write", errno.EINVAL, write_ctl, "watched", "copy\n")
        expect(poll_in(status_fd, 1000) & select.POLLIN, "poll(status) after a refused write", "POLLIN", 0)
        expect(poll_in(state_fd, 1000) & select.POLLIN, "poll(state) after a refused write", "POLLIN", 0)
        os.pread(state_fd, 64, 0)
        expect(poll_in(state_fd, 0) == 0, "poll(state) after reading the change", "no event", poll_in(state_fd, 0))
        expect(poll_in(status_fd, 0) & select.POLLIN, "poll(status): this fd has not read the change yet", "POLLIN",
               poll_in(status_fd, 0))
        # Start a slow job: queued, then running.
        start_slow_into("watched")
        expect(poll_in(state_fd, 2000) & select.POLLIN, "poll(state) after the start", "POLLIN", 0)
        state = os.pread(state_fd, 64, 0)
        expect(state in (b"queued\n", b"running\n"), "state after the start", "queued or running", state)
        if state == b"queued\n":
            expect(poll_in(state_fd, 2000) & select.POLLIN, "poll(state) from queued to running", "POLLIN", 0)
            state = os.pread(state_fd, 64, 0)
        expect(state == b"running\n", "state", b"running\n", state)
        events = poll_in(state_fd, 200)
        expect(events == 0, "poll(state) while it runs on (progress is no change)", "no event for 200 ms", events)
        write_ctl("watched", "cancel\n")
        expect(poll_in(state_fd, 5000) & select.POLLIN, "poll(state) once cancelled", "POLLIN", 0)
        state = os.pread(state_fd, 64, 0)
        expect(state == b"cancelled\n", "state", b"cancelled\n", state)
        expect(poll_in(state_fd, 0) & select.POLLIN, "poll(state) of a final job after reading it", "POLLIN", 0)
    finally:
        os.close(state_fd)
        os.close(status_fd)


def start_slow_into(name):
    write_ctl(name, "copy from=%s to=%s\n" % (env.slow_path, env.path("slow-dest.img")))


def check_cancel_keeps_progress():
    start_slow("cancelled")
    time.sleep(0.5)
    before = status_dict(read_all(job("cancelled", "status")))
    done_before, total = progress_of(before)
    expect(before["state"] == "running", "state before cancel", "running", before["state"])
    expect(total == env.slow_sectors, "progress total", env.slow_sectors, total)
    status = cancel_and_wait("cancelled")
    done, total_after = progress_of(status)
    expect(status["state"] == "cancelled", "state after cancel", "cancelled", status["state"])
    expect(status["error"] == "none (cancelled)", "error line", "none (cancelled)", status["error"])
    expect(done_before <= done < total_after and done > 0, "progress kept: between the last look and the total",
           "%d <= done < %d" % (done_before, total_after), status["progress"])
    time.sleep(0.3)
    later = status_dict(read_all(job("cancelled", "status")))
    expect(later["progress"] == status["progress"] and later["elapsed"] == status["elapsed"],
           "progress and elapsed frozen once cancelled", (status["progress"], status["elapsed"]),
           (later["progress"], later["elapsed"]))


def check_pause_resume_rate():
    """ctl's pause, resume and rate= on a slow job (issue 17), and what each refuses."""
    start_slow("paused")
    time.sleep(0.3)
    write_ctl("paused", "pause\n")
    expect(read_all(job("paused", "state")) == "paused\n", "the state file after pause", "paused\n",
           read_all(job("paused", "state")))
    time.sleep(0.5)     # the reads in flight finish
    before = status_dict(read_all(job("paused", "status")))
    fd = os.open(job("paused", "wait"), os.O_RDONLY | os.O_NONBLOCK)
    try:
        expect(poll_in(fd, 1000) == 0, "poll(wait) of a paused job: no POLLIN in 1 s", 0, poll_in(fd, 0))
    finally:
        os.close(fd)
    after = status_dict(read_all(job("paused", "status")))
    expect(after["progress"] == before["progress"] and after["state"] == "paused", "a paused job stays put",
           (before["progress"], "paused"), (after["progress"], after["state"]))
    expect_errno("pause of a paused job", errno.EALREADY, write_ctl, "paused", "pause\n")
    expect(status_dict(read_all(job("paused", "status")))["rejected"] == "job paused is paused already (EALREADY)",
           "the rejected line of a second pause", "job paused is paused already (EALREADY)",
           status_dict(read_all(job("paused", "status")))["rejected"])
    for bad in ("rate=0\n", "rate=4095\n", "rate=1MB\n", "rate=\n", "rate=-1\n"):
        expect_errno("ctl %r" % bad, errno.EINVAL, write_ctl, "paused", bad)
    expect(status_dict(read_all(job("paused", "status")))["rate"] == "none", "bad rates leave none", "none",
           status_dict(read_all(job("paused", "status")))["rate"])
    write_ctl("paused", "rate=32M\n")
    expect(status_dict(read_all(job("paused", "status")))["rate"] == str(32 << 20), "rate=32M", str(32 << 20),
           status_dict(read_all(job("paused", "status")))["rate"])
    write_ctl("paused", "resume\n")
    state = read_all(job("paused", "state"))
    expect(state in ("queued\n", "running\n"), "the state after resume", "queued or running", state)
    expect_errno("resume of a running job", errno.EINVAL, write_ctl, "paused", "resume\n")
    status = cancel_and_wait("paused")
    expect(status["state"] == "cancelled", "a resumed job cancelled", "cancelled", status["state"])
    for word in ("pause\n", "rate=1M\n", "resume\n"):
        expect_errno("%r to a cancelled job" % word, errno.EINVAL, write_ctl, "paused", word)
    os.mkdir(job("idle-words"))
    for word in ("pause\n", "rate=1M\n", "resume\n"):
        expect_errno("%r to an idle job" % word, errno.EINVAL, write_ctl, "idle-words", word)
    expect(read_all(job("idle-words", "state")) == "idle\n", "an idle job after refused words", "idle\n",
           read_all(job("idle-words", "state")))


def check_snapshot_slices():
    start_slow("sliced")
    time.sleep(0.2)
    fd = os.open(job("sliced", "status"), os.O_RDONLY)
    try:
        snapshot = os.pread(fd, 8192, 0)
        status_dict(snapshot.decode())
        time.sleep(0.3)  # progress moves on; the slices must not
        for offset, size in ((3, 7), (10, 1), (17, 13), (1, 255), (len(snapshot) - 5, 64), (len(snapshot), 16),
                             (len(snapshot) + 100, 3), (31, 0)):
            piece = os.pread(fd, size, offset)
            expect(piece == snapshot[offset:offset + size], "pread(%d bytes at %d) after the snapshot" % (size, offset),
                   snapshot[offset:offset + size], piece)
        fresh = os.pread(fd, 8192, 0)
        expect(progress_of(status_dict(fresh.decode()))[0] > progress_of(status_dict(snapshot.decode()))[0],
               "a read at offset 0 takes a new snapshot (progress moved on)", "more than " +
               status_dict(snapshot.decode())["progress"], status_dict(fresh.decode())["progress"])
        # Sequential reads of odd sizes with pauses: one snapshot, whole and parsable.
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while True:
            chunk = os.read(fd, 5)
            if not chunk:
                break
            chunks.append(chunk)
            time.sleep(0.01)
        joined = b"".join(chunks)
        status_dict(joined.decode())
        rest = os.pread(fd, 8192, 5)
        expect(joined == chunks[0] + rest, "5-byte reads are slices of the snapshot of the first",
               chunks[0] + rest, joined)
    finally:
        os.close(fd)
    cancel_and_wait("sliced")
    # The same for stats.
    fd = os.open(mnt("stats"), os.O_RDONLY)
    try:
        snapshot = os.pread(fd, 8192, 0)
        os.mkdir(job("stats-mover"))  # changes "jobs:"
        piece = os.pread(fd, 9, 0 + 2)
        expect(piece == snapshot[2:11], "stats: pread at offset 2 after a change", snapshot[2:11], piece)
        expect(os.pread(fd, 8192, 0) != snapshot, "stats: a new read at 0 shows the change", "a new count",
               os.pread(fd, 8192, 0))
    finally:
        os.close(fd)


def check_wait_at_offset():
    # A reader that seeks first (dd skip=N) waits too: a read of wait at an
    # offset other than 0, before any read at 0, blocks (or gives EAGAIN)
    # until the job ends, and then reads the final status from there.
    os.mkdir(job("offset-wait"))
    fd = os.open(job("offset-wait", "wait"), os.O_RDONLY | os.O_NONBLOCK)
    try:
        expect_errno("O_NONBLOCK pread of wait at offset 5 on an idle job", errno.EAGAIN, os.pread, fd, 4096, 5)
    finally:
        os.close(fd)
    write_ctl("offset-wait", "copy from=%s:0+12M to=%s\n" % (env.slow_path, env.path("slow-dest.img")))
    fd = os.open(job("offset-wait", "wait"), os.O_RDONLY)
    try:
        piece = os.pread(fd, 4096, 5).decode()
        expect(piece.startswith(": done\n"), "a blocking pread of wait at offset 5 waits for the end",
               "': done\\n...' (state: done from byte 5)", piece[:20])
    finally:
        os.close(fd)
        write_ctl("offset-wait", "cancel\n")


def check_long_canonical():
    # A valid description of at most 4096 bytes can render to more than
    # 8 KiB (backslashes in paths are doubled, byte suffixes become sector
    # numbers, counts are added): it must be accepted and ctl must give it
    # back whole.  33 regions of one sparse file reached through a symlink
    # /tmp/\\\...; the job is cancelled at once.
    huge = env.path("huge.img")
    with open(huge, "wb") as data:
        data.truncate(40 << 40)
    tebi = 1 << 31  # sectors in 1 TiB
    for backslashes in range(255, 0, -1):
        link = "/tmp/" + "\\" * backslashes
        line = "copy from=%s:33T+1T" % link + "".join(" to=%s:%dT" % (link, index) for index in range(1, 33))
        if len(line) <= 4096:
            break
    quoted = '"' + link.replace("\\", "\\\\") + '"'
    canonical = ("copy from=%s:%d+%d" % (quoted, 33 * tebi, tebi) +
                 "".join(" to=%s:%d+%d" % (quoted, index * tebi, tebi) for index in range(1, 33)) + "\n")
    try:
        os.symlink(huge, link)
    except FileExistsError:
        raise Failure("a symlink %s...\n      expected: free to make\n      got:      it exists" % link[:12])
    try:
        os.mkdir(job("long-canonical"))
        try:
            written = write_ctl("long-canonical", line + "\n")
        except OSError as error:
            status = status_dict(read_all(job("long-canonical", "status")))
            raise Failure("a %d-byte description whose canonical form is %d bytes\n      expected: accepted\n"
                          "      got:      %s; error: %s" % (len(line), len(canonical), error, status["error"]))
        write_ctl("long-canonical", "cancel\n")
        expect(written == len(line) + 1, "os.write length", len(line) + 1, written)
        got = read_all(job("long-canonical", "ctl"))
        expect(got == canonical, "ctl reads back all %d bytes of the canonical description" % len(canonical),
               "%d bytes ending %r" % (len(canonical), canonical[-30:]), "%d bytes ending %r" % (len(got), got[-30:]))
        wait_final("long-canonical", 10000)
    finally:
        os.unlink(link)
        os.unlink(huge)


CHECKS = [
    ("submit with mkdir and a write to ctl", check_mkdir_ctl),
    ("submit through clone (read the number, write, close)", check_clone),
    ("a clone fd closed without a write takes its job away", check_clone_close_removes),
    ("a clone-autoremove descriptor is the whole job: read at 0 waits", check_autoremove_descriptor_is_the_job),
    ("status parses as key: value lines, idle and done", check_status_fields),
    ("a refused os.write raises the errno and leaves the reason", check_rejected_write),
    ("poll(wait) gives POLLIN once the job ends", check_wait_poll),
    ("O_NONBLOCK read of wait: EAGAIN until the job ends", check_wait_nonblock),
    ("poll(state) and poll(status) give POLLIN on changes", check_state_poll),
    ("cancel a slow job: cancelled, progress kept", check_cancel_keeps_progress),
    ("pause, resume and rate= of a slow job, and their refusals", check_pause_resume_rate),
    ("reads at odd offsets and sizes are slices of one snapshot", check_snapshot_slices),
    ("wait read first at an offset other than 0 also waits", check_wait_at_offset),
    ("a valid description whose canonical form passes 8 KiB", check_long_canonical),
]


def run_checks(environment, checks, check_seconds):
    """Skip (77) unless the machine can run a daemon; set the environment
    up, run each (name, function) check with an alarm of check_seconds,
    print PASS or FAIL for each and "N passed, M failed", close the
    environment.  Returns the exit status."""
    if os.geteuid() != 0:
        skip("needs root (a tmpfs and a FUSE mount of its own)")
    if not os.path.exists("/dev/fuse"):
        skip("no /dev/fuse")
    if not os.access(KCOPYDFS, os.X_OK):
        skip("no kcopydfs at '%s' (set KCOPYDFS)" % KCOPYDFS)
    for tool in ("mount", "umount", "fusermount3"):
        if not shutil.which(tool):
            skip("needs " + tool)

    def on_alarm(signum, frame):
        raise Failure("the check took over %d s (a blocked read or poll?)" % check_seconds)

    passed = failed = 0
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    signal.signal(signal.SIGALRM, on_alarm)
    try:
        try:
            environment.setup()
        except Failure as failure:
            print("FAIL: setup: %s" % failure)
            failed += 1
            checks = []
        for name, function in checks:
            signal.alarm(check_seconds)
            try:
                function()
                print("PASS: " + name)
                passed += 1
            except Failure as failure:
                print("FAIL: %s: %s" % (name, failure))
                failed += 1
            except Exception:
                print("FAIL: %s: an exception\n%s" % (name, traceback.format_exc()))
                failed += 1
            finally:
                signal.alarm(0)
    finally:
        environment.close()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_checks(env, CHECKS, CHECK_SECONDS))
