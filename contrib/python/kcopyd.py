# SPDX-License-Identifier: LGPL-2.1-or-later
"""kcopyd: drive a kcopydfs mount from Python, with the standard library only.

A kcopydfs mount (see kcopydfs(5)) is a copy service driven by plain files;
this module wraps those files in a few calls::

    import kcopyd

    job = kcopyd.submit("/mnt/kcopyd", "copy from=/dev/loop0 to=/dev/loop1 to=/srv/disk.img")
    status = job.wait()                 # blocks until the job has ended
    print(status["state"], status["progress"], status["error"])
    job.remove()

A running job can be paused, resumed and limited::

    job = kcopyd.submit("/mnt/kcopyd", "copy from=/dev/loop0 to=/dev/loop1 hash=sha256 flags=verify rate=64M")
    job.pause()                         # state "paused": no new sub-job starts
    job.set_rate("16M")                 # bytes per second, from its next sub-job on
    job.resume()
    job.wait()
    print(job.hashes()["sha256"], job.status()["verify"])

submit() raises kcopyd.RefusedError (an OSError) when the daemon refuses the
description; its ``errno`` is the errno of the refused write and its
``reason`` the daemon's explanation, the job's ``error:`` line.

How a job is allocated: submit() opens MOUNT/clone, which makes a new job
numbered by the daemon, tied to that descriptor.  Numbers are never reused
and no name can collide, and if this process dies between the open and the
write the daemon removes the job when the descriptor closes, so nothing is
left behind.  submit(..., name="backup") makes a named job with mkdir(2)
instead (EEXIST if the name is taken).  Either way the job stays on the mount
after submit() returns until remove() is called (rmdir of its directory).

Sectors are 512 bytes everywhere, as in the job descriptions.  Every path in
a description must be absolute; an NBD URI region (nbd://..., nbd+unix://...)
is written as it is: the description is passed through unchanged.

Tested by tests/test_bindings_python.py (make check).
"""

import errno
import os
import select
import time

__all__ = ["submit", "stats", "Job", "RefusedError", "FINAL_STATES", "COUNT_KEYS", "parse_hashes"]

FINAL_STATES = ("done", "failed", "cancelled")
# The status lines counts() reads: how this run's sectors were written, and the checkpoint.
COUNT_KEYS = ("sectors_data", "sectors_zero", "sectors_offloaded", "checkpoint")
_READ_SIZE = 65536


class RefusedError(OSError):
    """The daemon refused a job description (or a word: pause, resume, rate=).

    ``errno`` and ``strerror`` are those of the refused write(2) (EINVAL for a
    bad line or refused regions, ENOENT for a missing file, ERANGE, EBUSY,
    ...); ``reason`` is the daemon's explanation, as its status's ``error:``
    line gives it (for example ``to=/srv/missing.img: No such file or
    directory (ENOENT)``); ``description`` is the line that was refused.
    """

    def __init__(self, error_number, reason, description):
        super().__init__(error_number, os.strerror(error_number))
        self.reason = reason
        self.description = description

    def __str__(self):
        # A ctl word (pause, resume, rate=...) is no job description: name it.
        if self.description in ("pause", "resume") or str(self.description).startswith("rate="):
            return "[Errno %d] %s refused: %s" % (self.errno, self.description, self.reason)
        return "[Errno %d] job description refused: %s" % (self.errno, self.reason)


def _read_from_start(fd):
    """Read an open control file from offset 0 to its end (one snapshot)."""
    chunks = []
    offset = 0
    while True:
        chunk = os.pread(fd, _READ_SIZE, offset)
        if not chunk:
            return b"".join(chunks).decode("utf-8", "replace")
        chunks.append(chunk)
        offset += len(chunk)


def parse_status(text):
    """Parse the text of a status or wait file into a dict of strings.

    Each ``key: value`` line gives one entry, for example ``{"state": "done",
    "progress": "16384/16384", "read_err": "0", "write_err": "0x0", "error":
    "none", ...}``.  Lines without ``": "`` are ignored.
    """
    status = {}
    for line in text.splitlines():
        key, separator, value = line.partition(": ")
        if separator:
            status[key] = value
    return status


def parse_hashes(text):
    """The ``hash: ALG:VALUE`` lines of a status text as a dict ALG -> VALUE."""
    hashes = {}
    for line in text.splitlines():
        if line.startswith("hash: "):
            algorithm, _, value = line[len("hash: "):].partition(":")
            hashes[algorithm] = value
    return hashes


class Job:
    """One job of a kcopydfs mount: the directory MOUNT/jobs/NAME.

    ``name`` is the job's name (its number for a job made through clone);
    ``path`` its directory.  Jobs are made by submit(); Job(mount, name)
    also attaches to an existing job.
    """

    def __init__(self, mount, name):
        self.mount = mount
        self.name = str(name)
        self.path = os.path.join(mount, "jobs", self.name)

    def __repr__(self):
        return "Job(%r, %r)" % (self.mount, self.name)

    def _file(self, leaf):
        return os.path.join(self.path, leaf)

    def status(self):
        """The job's status now, as a dict (see parse_status()).

        Raises FileNotFoundError once the job has been removed.
        """
        fd = os.open(self._file("status"), os.O_RDONLY)
        try:
            return parse_status(_read_from_start(fd))
        finally:
            os.close(fd)

    def state(self):
        """The job's state now: idle, queued, running, paused, done, failed, cancelled or interrupted."""
        return self.status()["state"]

    def progress(self):
        """(sectors done, sectors in all) now, from the status's progress line."""
        done, _, total = self.status()["progress"].partition("/")
        return int(done), int(total)

    def counts(self):
        """How the job's finished sectors were written, now: a dict of ints.

        ``sectors_data`` and ``sectors_zero`` are this run's sectors written
        as data and as zeros (zero ranges: holes and blocks of zeros, zeroed,
        written as zeros or, with flags=dest_zero, skipped);
        ``sectors_offloaded`` is the part of ``sectors_data`` copied by
        copy_file_range(2); ``checkpoint`` the sectors from the job's start
        known written to every destination.  After a resume the first three
        count the resumed run only: with ``progress()[0]`` they add up as
        done - (what earlier runs did).  Raises KeyError from a daemon that
        does not report them (before sparse copies).
        """
        status = self.status()
        return {key: int(status[key]) for key in COUNT_KEYS}

    def hashes(self):
        """The status's hash lines as a dict: algorithm -> lowercase hex digest,
        ``"pending"`` before the job ends, ``"none"`` (or ``"none (resumed at
        sector N)"``) when it ended without a digest of the whole range.
        Empty for a job without hash= (or from a daemon before hashes).
        """
        fd = os.open(self._file("status"), os.O_RDONLY)
        try:
            text = _read_from_start(fd)
        finally:
            os.close(fd)
        return parse_hashes(text)

    def _word(self, word):
        """Write one ctl word; a refusal raises RefusedError with the job's rejected line."""
        fd = os.open(self._file("ctl"), os.O_WRONLY)
        try:
            _write_description(fd, word)
        except OSError as error:
            try:
                reason = self.status().get("rejected", error.strerror)
            except OSError:
                reason = error.strerror
            raise RefusedError(error.errno, reason, word) from None
        finally:
            os.close(fd)

    def pause(self):
        """Pause a queued or running job: write ``pause`` to its ctl.

        It starts no new sub-job (those in flight finish); its state reads
        ``paused`` and its progress stays; wait() goes on waiting.  With
        --state-dir it stays paused across a restart of the daemon.  Raises
        RefusedError: EINVAL for an idle, interrupted or ended job,
        EALREADY if it is paused already.
        """
        self._word("pause")

    def resume(self):
        """Resume a paused job, or finish an interrupted one from its
        checkpoint: write ``resume`` to its ctl.  Raises RefusedError
        (EINVAL) for a job that is neither.
        """
        self._word("resume")

    def set_rate(self, rate):
        """Limit the job to ``rate`` bytes read per second from its next
        sub-job on: an int, or text with K, M, G, T (powers of 1024) as in
        ``rate=`` of a description ("16M"); ``"none"`` lifts the limit.
        Raises RefusedError: EINVAL for a rate below 4K or one that does not
        parse (0 and None among them), or an idle or ended job.
        """
        self._word("rate=%s" % (rate,))

    def description(self):
        """The job's canonical description (empty while it is idle)."""
        with open(self._file("ctl")) as ctl:
            return ctl.read().rstrip("\n")

    def wait(self, timeout=None):
        """Wait until the job has ended and return its final status as a dict.

        ``timeout`` is in seconds; None waits for as long as it takes.
        Raises TimeoutError (errno ETIMEDOUT) if the job is still going
        after ``timeout`` seconds (the job itself is not touched),
        FileNotFoundError if the job is removed meanwhile, and ValueError
        for a negative timeout.

        How: the job's wait file is opened with O_NONBLOCK and polled;
        kcopydfs reports it readable (POLLIN) once the job has ended, and a
        read then gives the final status (before that a read fails with
        EAGAIN).  No thread of the daemon is held while we wait.  An idle
        or interrupted job has not ended: waiting for it waits until it is
        started and ends, or is cancelled.
        """
        if timeout is not None and not timeout >= 0:
            raise ValueError("timeout must be None or a number of seconds >= 0, not %r" % (timeout,))
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = os.open(self._file("wait"), os.O_RDONLY | os.O_NONBLOCK)
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            while True:
                if deadline is None:
                    timeout_ms = None
                else:
                    timeout_ms = max(0, int((deadline - time.monotonic()) * 1000 + 0.999))
                events = poller.poll(timeout_ms)
                if events:
                    if events[0][1] & (select.POLLERR | select.POLLNVAL) and not events[0][1] & select.POLLIN:
                        raise FileNotFoundError(errno.ENOENT, "job removed while waiting", self.path)
                    try:
                        return parse_status(_read_from_start(fd))
                    except BlockingIOError:
                        pass    # woken before the end (a poll that raced a change): poll again
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(errno.ETIMEDOUT, "job %s still %s after %g s"
                                       % (self.name, self.state(), timeout), self.path)
        finally:
            os.close(fd)

    def cancel(self):
        """Cancel the job: write ``cancel`` to its ctl.

        An idle job becomes cancelled at once; a queued or running one
        starts no new sub-job and ends cancelled (or failed, if an I/O
        error came first) once the I/O in flight is done: wait() for it.
        An ended job is not changed.  Raises FileNotFoundError once the
        job has been removed.
        """
        fd = os.open(self._file("ctl"), os.O_WRONLY)
        try:
            os.write(fd, b"cancel\n")
        finally:
            os.close(fd)

    def remove(self):
        """Remove the job from the mount (rmdir of its directory).

        Raises OSError EBUSY while the job is queued or running: cancel()
        and wait() first.
        """
        os.rmdir(self.path)


def stats(mount):
    """The mount's stats file as a dict (kcopydfs(5), STATS): its counters
    as ints (jobs, sectors_read, sectors_written, and so on;
    ``sectors_zero`` and ``sectors_offloaded`` are the parts of
    ``sectors_written`` written as zeros and copied by
    copy_file_range(2)), and its words as strings (``io_engine``:
    ``"io_uring"`` or ``"libaio"``)."""
    with open(os.path.join(mount, "stats")) as stats_file:
        return {key: int(value) if value.isdigit() else value
                for key, value in parse_status(stats_file.read()).items()}


def _write_description(fd, description):
    """The description as one line with its newline, in one write(2).

    ctl takes lines (a line without its newline is never run); one write
    makes the refusal, if any, this write's error rather than close's.
    """
    line = description if description.endswith("\n") else description + "\n"
    data = line.encode()
    written = os.write(fd, data)
    if written != len(data):
        raise OSError(errno.EIO, "short write of a job description (%d of %d bytes)" % (written, len(data)))


def _refused(job, error, description):
    """A RefusedError for `error`, with the job's error line; removes the idle job."""
    try:
        reason = job.status().get("error", error.strerror)
    except OSError:
        reason = error.strerror
    try:
        job.remove()
    except OSError:
        pass
    return RefusedError(error.errno, reason, description)


def submit(mount, description, name=None):
    """Start a job on the kcopydfs mount `mount` and return its Job.

    ``description`` is one job description line, for example
    ``"copy from=/dev/loop0 to=/dev/loop1:2048"`` or ``"zero to=/srv/a.img:0+1M"``
    (grammar in kcopydfs(5); paths must be absolute, NBD URIs are written
    as they are, e.g. ``"copy from=nbd://host/disk:8 to=/dev/loop1"``).  The call returns as
    soon as the job is queued; use Job.wait() for the end.

    Without ``name`` the job is made through MOUNT/clone and named by its
    number; with one, by mkdir(2) of MOUNT/jobs/NAME.

    Raises RefusedError (an OSError) if the daemon refuses the description;
    the refused job is removed.  Raises ValueError for a description with
    more than one line, which the daemon would refuse anyway, and TypeError
    for one that is not a str.  Other
    OSErrors come from the mount itself (FileNotFoundError for a path that
    is no kcopydfs mount, EEXIST for a name that is taken, ESHUTDOWN while
    the daemon stops).
    """
    if not isinstance(description, str):
        raise TypeError("a job description is a str, not %s" % type(description).__name__)
    if "\n" in description.rstrip("\n"):
        raise ValueError("a job description is one line: %r" % description)
    if name is not None:
        os.mkdir(os.path.join(mount, "jobs", name))
        job = Job(mount, name)
        fd = os.open(os.path.join(job.path, "ctl"), os.O_WRONLY)
    else:
        fd = os.open(os.path.join(mount, "clone"), os.O_RDWR)
    try:
        if name is None:
            # Closing this descriptor before the write below removes the job.
            job = Job(mount, os.read(fd, 64).decode().strip())
        try:
            _write_description(fd, description)
        except OSError as error:
            raise _refused(job, error, description) from None
    finally:
        os.close(fd)
    return job
