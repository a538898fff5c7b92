#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test_bindings_python.py: contrib/python/kcopyd.py against a real daemon on
# a mount of its own: submit (through clone, and named through mkdir) with
# one and three destinations, checked byte for byte; a refused description
# (RefusedError, an OSError, with the errno and the job's error line, and
# the refused job removed); wait(timeout) on a slow job (TimeoutError, job
# untouched); cancel (cancelled, progress kept); remove (EBUSY while
# running, then gone).
#
# Run by `make check` (which exports KCOPYDFS and TESTS_SRCDIR), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test_bindings_python.py
# Needs root (a tmpfs and a FUSE mount of its own); exits 77 (skipped)
# without it.  Slow jobs read from nbdkit's delay filter through nbdfuse;
# without those, from a loop device with the daemon copying 4 KiB at a time.
#
# Every check prints PASS or FAIL with what it expected and what it got;
# the last line is "N passed, M failed"; the exit status is 1 on any failure.

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

TESTS_SRCDIR = os.environ.get("TESTS_SRCDIR") or os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(TESTS_SRCDIR, "..", "contrib", "python"))
sys.dont_write_bytecode = True    # no __pycache__ in the source tree (read-only under distcheck)
import kcopyd  # noqa: E402  (after the path is set)

KCOPYDFS = os.environ.get("KCOPYDFS") or os.path.join(os.environ.get("BUILDDIR", "."), "kcopydfs")
SIZE = 4 << 20                  # bytes in the source file
SECTORS = SIZE // 512
SLOW_SIZE = 64 << 20
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


def run(*command):
    return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class Environment:
    """A tmpfs, a kcopydfs mount and a slow source, all undone by close()."""

    def __init__(self):
        self.work = None
        self.mounted_work = False
        self.mount_point = None
        self.daemon = None
        self.log = None
        self.nbd = None
        self.nbd_dir = None
        self.loops = []
        self.slow_path = None

    def setup(self):
        self.work = tempfile.mkdtemp(prefix="test_bindings_python.")
        if run("mount", "-t", "tmpfs", "-o", "size=160M,mode=0755", "tmpfs", self.work).returncode != 0:
            skip("cannot mount a tmpfs on " + self.work)
        self.mounted_work = True
        with open(self.path("src.img"), "wb") as source:
            source.write(os.urandom(SIZE))
        for name in ("d0.img", "d1.img", "d2.img", "big.img"):
            with open(self.path(name), "wb") as dest:
                dest.truncate(SLOW_SIZE if name == "big.img" else SIZE * 2)
        options = []
        if shutil.which("nbdkit") and shutil.which("nbdfuse"):
            self.nbd_dir = self.path("slow")
            os.mkdir(self.nbd_dir)
            self.slow_path = os.path.join(self.nbd_dir, "disk")
            self.nbd = subprocess.Popen(["nbdfuse", self.slow_path, "--command", "nbdkit", "-s",
                                         "--filter=delay", "memory", str(SLOW_SIZE), "rdelay=50ms"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(200):
                if os.path.isfile(self.slow_path):
                    break
                time.sleep(0.05)
            else:
                raise Failure("nbdfuse did not export %s" % self.slow_path)
        else:
            with open(self.path("slow-src.img"), "wb") as source:
                source.truncate(SLOW_SIZE)
            result = run("losetup", "-f", "--show", "--direct-io=on", self.path("slow-src.img"))
            if result.returncode != 0:
                skip("needs nbdkit and nbdfuse, or losetup: " + result.stdout.strip())
            self.slow_path = result.stdout.strip()
            self.loops.append(self.slow_path)
            options = ["--depth", "1", "--subjob-kb", "4"]
        self.mount_point = tempfile.mkdtemp(prefix="test_bindings_python-mnt.")
        self.log = open(self.path("kcopydfs.log"), "w")
        self.daemon = subprocess.Popen([KCOPYDFS, "-f"] + options + [self.mount_point], stderr=self.log)
        for _ in range(100):
            if self.is_mounted(self.mount_point) and os.path.exists(os.path.join(self.mount_point, "version")):
                return
            if self.daemon.poll() is not None:
                break
            time.sleep(0.05)
        raise Failure("kcopydfs did not mount %s (exit %s)" % (self.mount_point, self.daemon.poll()))

    def path(self, name):
        return os.path.join(self.work, name)

    @staticmethod
    def is_mounted(point):
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
            if self.is_mounted(self.mount_point):
                run("fusermount3", "-u", "-z", self.mount_point)
            os.rmdir(self.mount_point)
        for loop in self.loops:
            run("losetup", "-d", loop)
        if self.nbd:
            if self.is_mounted(self.nbd_dir):
                run("fusermount3", "-u", "-z", self.nbd_dir)
            try:
                self.nbd.wait(5)
            except subprocess.TimeoutExpired:
                self.nbd.kill()
                self.nbd.wait()
        if self.log:
            self.log.close()
        if self.mounted_work:
            for _ in range(10):
                if run("umount", self.work).returncode == 0:
                    break
                time.sleep(0.3)
            else:
                run("umount", "-l", self.work)
        if self.work:
            os.rmdir(self.work)


env = Environment()

# ---- helpers -----------------------------------------------------------------------


def file_bytes(name, offset, length):
    with open(env.path(name), "rb") as f:
        f.seek(offset)
        return f.read(length)


def expect_same(case, dest, dest_sector, source_sector=0, sectors=SECTORS):
    want = file_bytes("src.img", source_sector * 512, sectors * 512)
    got = file_bytes(dest, dest_sector * 512, sectors * 512)
    if got != want:
        first = next(index for index in range(len(want)) if index >= len(got) or got[index] != want[index])
        raise Failure("%s\n      expected: %s sectors %d+%d equal to src.img's %d+%d\n      got:      "
                      "the first difference at byte %d" % (case, dest, dest_sector, sectors, source_sector,
                                                           sectors, first))


def job_names():
    return sorted(os.listdir(os.path.join(env.mount_point, "jobs")))


def start_slow(name=None):
    """A job that takes seconds: 64 MiB from the slow source."""
    return kcopyd.submit(env.mount_point, "copy from=%s to=%s" % (env.slow_path, env.path("big.img")), name=name)


def finish(job):
    """Cancel, wait and remove a job a failed check may have left running."""
    try:
        job.cancel()
        job.wait(10)
        job.remove()
    except OSError:
        pass

# ---- the checks --------------------------------------------------------------------


def check_one_destination():
    job = kcopyd.submit(env.mount_point, "copy from=%s to=%s" % (env.path("src.img"), env.path("d0.img")))
    expect(job.name.isdigit(), "a job made through clone is named by its number", "digits", job.name)
    expect(os.path.isdir(job.path), "the job's directory after submit()", "a directory", job.path)
    status = job.wait(10)
    expect(status.get("state") == "done", "the final state", "done", status)
    expect(status.get("progress") == "%d/%d" % (SECTORS, SECTORS), "the final progress",
           "%d/%d" % (SECTORS, SECTORS), status.get("progress"))
    expect(status.get("error") == "none" and status.get("write_err") == "0x0", "error and write_err",
           "none, 0x0", status)
    expect(job.status() == status, "status() of an ended job equals what wait() gave", status, job.status())
    expect(job.progress() == (SECTORS, SECTORS), "progress()", (SECTORS, SECTORS), job.progress())
    expect_same("the copy", "d0.img", 0)
    job.remove()
    expect(not os.path.exists(job.path), "the job after remove()", "gone", job_names())


def check_three_destinations():
    half = SECTORS // 2
    description = "copy from=%s:%d+%d to=%s to=%s:100 to=%s:2M" % (
        env.path("src.img"), half, half, env.path("d0.img"), env.path("d1.img"), env.path("d2.img"))
    job = kcopyd.submit(env.mount_point, description, name="three")
    expect(job.name == "three" and os.path.isdir(job.path), "a named job", "jobs/three", job.path)
    status = job.wait(10)
    expect(status.get("state") == "done", "the final state of a copy to 3 destinations", "done", status)
    expect(job.description().count(" to=") == 3, "the canonical description has 3 to=", 3, job.description())
    expect_same("destination 0", "d0.img", 0, half, half)
    expect_same("destination 1 at sector 100", "d1.img", 100, half, half)
    expect_same("destination 2 at 2 MiB", "d2.img", 4096, half, half)
    job.remove()


def check_refused():
    before = job_names()
    missing = env.path("missing.img")
    try:
        kcopyd.submit(env.mount_point, "copy from=%s to=%s" % (env.path("src.img"), missing))
    except kcopyd.RefusedError as error:
        expect(isinstance(error, OSError), "RefusedError is an OSError", "an OSError", type(error).__mro__)
        expect(error.errno == errno.ENOENT, "the errno of a missing destination", "ENOENT",
               errno.errorcode.get(error.errno, error.errno))
        expect(missing in error.reason and error.reason.endswith("(ENOENT)"),
               "the reason is the job's error line", "names %s, ends (ENOENT)" % missing, error.reason)
        expect(error.reason in str(error), "str() of the error holds the reason", error.reason, str(error))
    else:
        raise Failure("a missing destination\n      expected: RefusedError\n      got:      accepted")
    expect(job_names() == before, "the refused job is removed", before, job_names())

    try:
        kcopyd.submit(env.mount_point, "copy from=src.img to=%s" % env.path("d0.img"), name="relative")
    except kcopyd.RefusedError as error:
        expect(error.errno == errno.EINVAL, "the errno of a relative path", "EINVAL",
               errno.errorcode.get(error.errno, error.errno))
        expect("(EINVAL)" in error.reason and "from=" in error.reason, "the reason of a relative path",
               "from=... (EINVAL)", error.reason)
    else:
        raise Failure("a relative path\n      expected: RefusedError\n      got:      accepted")
    expect("relative" not in job_names(), "the refused named job is removed", before, job_names())

    try:
        kcopyd.submit(env.mount_point, "copy from=%s\nto=%s" % (env.path("src.img"), env.path("d0.img")))
    except ValueError as error:
        expect("one line" in str(error), "a two-line description", "ValueError: one line", str(error))
    else:
        raise Failure("a two-line description\n      expected: ValueError\n      got:      accepted")
    try:
        kcopyd.submit(env.mount_point, b"zero to=/dev/null")
    except TypeError as error:
        expect("str" in str(error), "a bytes description", "TypeError naming str", str(error))
    else:
        raise Failure("a bytes description\n      expected: TypeError\n      got:      accepted")


def check_wait_timeout():
    job = start_slow()
    try:
        started = time.monotonic()
        try:
            status = job.wait(timeout=0.3)
        except TimeoutError as error:
            waited = time.monotonic() - started
            expect(error.errno == errno.ETIMEDOUT, "the errno of TimeoutError", "ETIMEDOUT", error.errno)
            expect(0.25 <= waited < 2.0, "wait(timeout=0.3) returns after about 0.3 s", "0.25 to 2 s", waited)
        else:
            raise Failure("wait(0.3) on a job of seconds\n      expected: TimeoutError\n      got:      %r" % status)
        state = job.state()
        expect(state in ("queued", "running"), "the job after the timeout goes on", "queued or running", state)
        try:
            job.wait(timeout=0)
        except TimeoutError:
            pass
        else:
            raise Failure("wait(timeout=0) on a running job\n      expected: TimeoutError\n      got:      a status")
        try:
            job.wait(timeout=-1)
        except ValueError:
            pass
        else:
            raise Failure("wait(timeout=-1)\n      expected: ValueError\n      got:      no exception")
    finally:
        finish(job)


def check_cancel():
    job = start_slow()
    try:
        for _ in range(100):
            if job.progress()[0] > 0:
                break
            time.sleep(0.05)
        job.cancel()
        status = job.wait(15)
        done, total = job.progress()
        expect(status.get("state") == "cancelled", "the state after cancel()", "cancelled", status)
        expect(status.get("error") == "none (cancelled)", "the error line after cancel()", "none (cancelled)",
               status.get("error"))
        expect(0 < done < total, "progress is kept, not complete", "0 < done < %d" % total, (done, total))
        job.cancel()        # an ended job: no change, no error
        expect(job.state() == "cancelled", "cancel() of an ended job changes nothing", "cancelled", job.state())
    finally:
        finish(job)


def check_remove():
    job = start_slow(name="busy")
    try:
        try:
            job.remove()
        except OSError as error:
            expect(error.errno == errno.EBUSY, "remove() of a running job", "EBUSY",
                   errno.errorcode.get(error.errno, error.errno))
        else:
            raise Failure("remove() of a running job\n      expected: EBUSY\n      got:      removed")
        expect("busy" in job_names(), "the running job is still there", "busy listed", job_names())
        job.cancel()
        job.wait(15)
        job.remove()
        expect("busy" not in job_names(), "the job after cancel, wait and remove", "gone", job_names())
        try:
            job.status()
        except FileNotFoundError:
            pass
        else:
            raise Failure("status() of a removed job\n      expected: FileNotFoundError\n      got:      a status")
    finally:
        finish(job)


def check_zero_and_attach():
    job = kcopyd.submit(env.mount_point, "zero to=%s:0+1M to=%s:0+1M" % (env.path("d1.img"), env.path("d2.img")))
    again = kcopyd.Job(env.mount_point, job.name)
    status = again.wait(10)
    expect(status.get("state") == "done", "a zero job waited for through Job(mount, name)", "done", status)
    for name in ("d1.img", "d2.img"):
        expect(file_bytes(name, 0, 1 << 20) == bytes(1 << 20), "%s's first MiB is zeros" % name, "zeros",
               file_bytes(name, 0, 16))
    again.remove()


def check_not_a_mount():
    try:
        kcopyd.submit(env.work, "copy from=%s to=%s" % (env.path("src.img"), env.path("d0.img")))
    except FileNotFoundError as error:
        expect(error.filename == os.path.join(env.work, "clone"), "the error names the clone file",
               os.path.join(env.work, "clone"), error.filename)
    else:
        raise Failure("submit() to a directory that is no mount\n      expected: FileNotFoundError\n"
                      "      got:      accepted")


CHECKS = [
    ("submit through clone, one destination, wait, status, remove", check_one_destination),
    ("a named job with three destinations at offsets", check_three_destinations),
    ("a refused description raises RefusedError with the errno and the error line", check_refused),
    ("wait(timeout) raises TimeoutError and leaves the job running", check_wait_timeout),
    ("cancel() a slow job: cancelled, progress kept", check_cancel),
    ("remove(): EBUSY while running, then gone", check_remove),
    ("a zero job, waited for through Job(mount, name)", check_zero_and_attach),
    ("submit() to a directory that is no kcopydfs mount", check_not_a_mount),
]


def on_alarm(signum, frame):
    raise Failure("the check took over %d s (a blocked read or poll?)" % CHECK_SECONDS)


def main():
    if os.geteuid() != 0:
        skip("needs root (a tmpfs and a FUSE mount of its own)")
    if not os.path.exists("/dev/fuse"):
        skip("no /dev/fuse")
    if not os.access(KCOPYDFS, os.X_OK):
        skip("no kcopydfs at '%s' (set KCOPYDFS)" % KCOPYDFS)
    for tool in ("mount", "umount", "fusermount3"):
        if not shutil.which(tool):
            skip("needs " + tool)
    passed = failed = 0
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    signal.signal(signal.SIGALRM, on_alarm)
    try:
        try:
            env.setup()
        except Failure as failure:
            print("FAIL: setup: %s" % failure)
            failed += 1
            CHECKS.clear()
        for name, function in CHECKS:
            signal.alarm(CHECK_SECONDS)
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
        env.close()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
