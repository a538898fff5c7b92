#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test_bindings_python.py: contrib/python/kcopyd.py against a real daemon on
# a mount of its own: submit (through clone, and named through mkdir) with
# one and three destinations, checked byte for byte; a refused description
# (RefusedError, an OSError, with the errno and the job's error line, and
# the refused job removed); wait(timeout) on a slow job (TimeoutError, job
# untouched); cancel (cancelled, progress kept); remove (EBUSY while
# running, then gone); pause, set_rate, resume and hashes (issue 17: paused
# progress stays, bad rates refused with EINVAL, digests equal hashlib's).
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
import sys
import tempfile
import time

TESTS_SRCDIR = os.environ.get("TESTS_SRCDIR") or os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(TESTS_SRCDIR, "..", "contrib", "python"))
sys.dont_write_bytecode = True    # no __pycache__ in the source tree (read-only under distcheck)
import kcopyd  # noqa: E402  (after the path is set)

import test_kcopydfs  # noqa: E402
from test_kcopydfs import Failure, expect, skip  # noqa: E402

SIZE = 4 << 20                  # bytes in the source file
SECTORS = SIZE // 512
SLOW_SIZE = 64 << 20
CHECK_SECONDS = 20              # a check that takes longer is stopped and fails


class Environment(test_kcopydfs.Environment):
    """test_kcopydfs's tmpfs, slow source and daemon (and its close()), with this test's files."""

    def setup(self):
        self.work = tempfile.mkdtemp(prefix="test_bindings_python.")
        if self.run("mount", "-t", "tmpfs", "-o", "size=160M,mode=0755", "tmpfs", self.work).returncode != 0:
            skip("cannot mount a tmpfs on " + self.work)
        self.mounted_work = True
        with open(self.path("src.img"), "wb") as source:
            source.write(os.urandom(SIZE))
        for name in ("d0.img", "d1.img", "d2.img", "big.img"):
            with open(self.path(name), "wb") as dest:
                dest.truncate(SLOW_SIZE if name == "big.img" else SIZE * 2)
        self.start_daemon(self.slow_source(SLOW_SIZE), "test_bindings_python-mnt.")


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
    # src.img is random bytes: all data, none of it zeros, all of it below the checkpoint.
    counts = job.counts()
    expect(counts["sectors_data"] == SECTORS and counts["sectors_zero"] == 0 and counts["checkpoint"] == SECTORS,
           "counts() of a dense copy", "data %d, zero 0, checkpoint %d" % (SECTORS, SECTORS), counts)
    expect(0 <= counts["sectors_offloaded"] <= SECTORS, "sectors_offloaded is of sectors_data",
           "0..%d" % SECTORS, counts["sectors_offloaded"])
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

    # An NBD URI region goes to the daemon as it was written: no path made of
    # it, no quoting (the daemon names it in its reason).  Connecting is not tested here.
    uri = "nbd+unix:///disk?socket=%s" % env.path("no-such.sock")
    try:
        kcopyd.submit(env.mount_point, "copy from=%s:8+8 to=%s" % (uri, env.path("d0.img")))
    except kcopyd.RefusedError as error:
        expect("from=%s" % uri in error.reason or 'from="%s"' % uri in error.reason,
               "the reason of a URI region names the URI as written", "from=" + uri, error.reason)
    else:
        raise Failure("a URI region to a socket nobody serves\n      expected: RefusedError\n      got:      accepted")
    expect(job_names() == before, "the refused URI job is removed", before, job_names())

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
    before = kcopyd.stats(env.mount_point)
    job = kcopyd.submit(env.mount_point, "zero to=%s:0+1M to=%s:0+1M" % (env.path("d1.img"), env.path("d2.img")))
    again = kcopyd.Job(env.mount_point, job.name)
    status = again.wait(10)
    expect(status.get("state") == "done", "a zero job waited for through Job(mount, name)", "done", status)
    counts = again.counts()
    expect(counts["sectors_zero"] == 2048 and counts["sectors_data"] == 0, "counts() of a zero job: all zeros",
           "zero 2048, data 0", counts)
    # stats sums each destination: 2 x 2048 sectors zeroed, counted in sectors_written too.
    after = kcopyd.stats(env.mount_point)
    grew = {key: after[key] - before[key] for key in ("sectors_written", "sectors_zero")}
    expect(grew == {"sectors_written": 4096, "sectors_zero": 4096}, "stats() after the zero job",
           {"sectors_written": 4096, "sectors_zero": 4096}, grew)
    expect(after["io_engine"] in ("io_uring", "libaio"), "stats() gives io_engine as a word",
           "io_uring or libaio", after["io_engine"])
    for name in ("d1.img", "d2.img"):
        expect(file_bytes(name, 0, 1 << 20) == bytes(1 << 20), "%s's first MiB is zeros" % name, "zeros",
               file_bytes(name, 0, 16))
    again.remove()


def check_pause_resume_rate():
    """pause(), set_rate(), resume() and hashes() of a job of seconds (issue 17)."""
    import hashlib
    source = env.path("src.img")
    job = kcopyd.submit(env.mount_point, "copy from=%s to=%s hash=sha256,md5 flags=verify rate=256K"
                        % (source, env.path("d0.img")))
    try:
        expect(job.status().get("rate") == "262144", "the status's rate line", "262144", job.status().get("rate"))
        expect(job.hashes() == {"md5": "pending", "sha256": "pending"}, "hashes() before the end",
               {"md5": "pending", "sha256": "pending"}, job.hashes())
        job.pause()
        expect(job.state() == "paused", "the state after pause()", "paused", job.state())
        time.sleep(0.3)     # the sub-jobs in flight finish
        before = job.progress()
        try:
            job.wait(timeout=1)
        except TimeoutError:
            pass
        else:
            raise Failure("wait(1) on a paused job\n      expected: TimeoutError\n      got:      a status")
        expect(job.progress() == before, "progress() of a paused job stays", before, job.progress())
        try:
            job.pause()
        except kcopyd.RefusedError as error:
            expect(error.errno == errno.EALREADY, "pause() twice", "EALREADY",
                   errno.errorcode.get(error.errno, error.errno))
            expect("paused already" in error.reason, "the reason of pause() twice", "... paused already ...",
                   error.reason)
            expect(str(error).startswith("[Errno %d] pause refused: " % errno.EALREADY), "str() of pause() twice",
                   "[Errno %d] pause refused: ..." % errno.EALREADY, str(error))
        else:
            raise Failure("pause() of a paused job\n      expected: RefusedError EALREADY\n      got:      taken")
        for bad in (0, 4095, "16MB", "fast"):
            try:
                job.set_rate(bad)
            except kcopyd.RefusedError as error:
                expect(error.errno == errno.EINVAL, "set_rate(%r)" % (bad,), "EINVAL",
                       errno.errorcode.get(error.errno, error.errno))
            else:
                raise Failure("set_rate(%r)\n      expected: RefusedError EINVAL\n      got:      taken" % (bad,))
        expect(job.status().get("rate") == "262144", "bad rates change nothing", "262144", job.status().get("rate"))
        job.set_rate("none")
        expect(job.status().get("rate") == "none", "set_rate('none')", "none", job.status().get("rate"))
        job.set_rate("1G")
        expect(job.status().get("rate") == str(1 << 30), "set_rate('1G')", str(1 << 30), job.status().get("rate"))
        job.resume()
        status = job.wait(15)
        expect(status.get("state") == "done", "the state after resume()", "done", status)
        expect(status.get("verify") == "ok", "verify after resume()", "ok", status.get("verify"))
        with open(source, "rb") as f:
            data = f.read()
        want = {"md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()}
        expect(job.hashes() == want, "hashes() equal hashlib's", want, job.hashes())
        expect_same("the paused and resumed copy", "d0.img", 0)
        for word in (job.pause, job.resume, lambda: job.set_rate("1M")):
            try:
                word()
            except kcopyd.RefusedError as error:
                expect(error.errno == errno.EINVAL and "done" in error.reason,
                       "pause, resume or set_rate of an ended job", "EINVAL, a reason saying it is done",
                       (errno.errorcode.get(error.errno, error.errno), error.reason))
            else:
                raise Failure("a word to an ended job\n      expected: RefusedError EINVAL\n      got:      taken")
    finally:
        finish(job)


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
    ("pause(), set_rate(), resume() and hashes()", check_pause_resume_rate),
    ("submit through clone, one destination, wait, status, remove", check_one_destination),
    ("a named job with three destinations at offsets", check_three_destinations),
    ("a refused description raises RefusedError with the errno and the error line", check_refused),
    ("wait(timeout) raises TimeoutError and leaves the job running", check_wait_timeout),
    ("cancel() a slow job: cancelled, progress kept", check_cancel),
    ("remove(): EBUSY while running, then gone", check_remove),
    ("a zero job, waited for through Job(mount, name)", check_zero_and_attach),
    ("submit() to a directory that is no kcopydfs mount", check_not_a_mount),
]


if __name__ == "__main__":
    sys.exit(test_kcopydfs.run_checks(env, CHECKS, CHECK_SECONDS))
