#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test_kcopydfs_soak.py: kcopydfs under load for a bounded time.  Several
# processes submit thousands of jobs (mkdir + ctl, or clone) of random sizes
# and destination counts, cancel some at once, remove some when done;
# meanwhile 100 threads poll job files for changes, 100 threads block in
# reads of `wait`, and a prober reads `version` every 50 ms.  Afterwards:
#  - every job ever submitted reached a final state (done or cancelled;
#    none failed), and jobs/ holds exactly the ones not removed;
#  - every done copy is byte-identical to its source range, on every
#    destination;
#  - the daemon answered the prober within a second every time;
#  - no file descriptor, thread or memory leaked: the daemon's fds and threads
#    (/proc) and its heap in use (stats) after the load, every job removed,
#    match the baseline; its RSS stays within its bound.
#
# Run by `make check` (which exports KCOPYDFS), or by hand:
#   sudo KCOPYDFS=./kcopydfs tests/test_kcopydfs_soak.py
# Size: KCOPYD_SOAK_JOBS (default 3000) and KCOPYD_SOAK_SECONDS (default 60,
# the bound: submitters stop there even if jobs are left); a long soak is
#   sudo KCOPYD_SOAK_JOBS=100000 KCOPYD_SOAK_SECONDS=1800 tests/test_kcopydfs_soak.py
# Needs root (a tmpfs and a FUSE mount of its own); exits 77 without it.
#
# Every check prints PASS or FAIL with what it expected and what it got;
# the last line is "N passed, M failed"; the exit status is 1 on any failure.

import errno
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

KCOPYDFS = os.environ.get("KCOPYDFS") or os.path.join(os.environ.get("BUILDDIR", "build"), "kcopydfs")
JOBS = int(os.environ.get("KCOPYD_SOAK_JOBS", "3000"))
SECONDS = float(os.environ.get("KCOPYD_SOAK_SECONDS", "60"))
# Leaks are judged on the daemon's heap in use (stats: heap_in_use), not on
# RSS: glibc keeps what a busy moment took.  Measured with malloc_stats():
# 1500 finished jobs kept 6.5 MB in use; once removed, 0.29 MB, as before
# them, while the arena still held 12 MB of system memory.  A leak of one
# job's few hundred bytes over 3000 jobs passes the 512 KiB slack.  RSS is
# still checked against the daemon's bound.  The warm-up round is as big as
# the main one.
WARM_JOBS = JOBS
HEAP_SLACK_BYTES = 512 * 1024
RSS_BOUND_KIB = 512 * 4 + 16 * 1024
# Under ASan freed memory sits in a quarantine, so RSS says nothing there;
# LeakSanitizer checks the daemon for leaks at its exit instead.
SANITIZED = os.environ.get("KCOPYD_SANITIZED") == "1"
SUBMITTERS = 6
POLLERS = 100
WAITERS = 100
SLOT = 64 << 10                 # each job owns this much of every destination file
SOURCE_SIZE = 64 << 20
DESTS = 3
FINAL = ("done", "failed", "cancelled")


def skip(reason):
    print("SKIP: " + reason)
    sys.exit(77)


passed = failed = 0


def check(name, condition, expected, got):
    global passed, failed
    if condition:
        passed += 1
        print("PASS: " + name)
    else:
        failed += 1
        print("FAIL: %s\n      expected: %s\n      got:      %s" % (name, expected, got))


def read_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536).decode()
    finally:
        os.close(fd)


def status_dict(text):
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def heap_in_use(mount):
    """The daemon's allocated bytes (heap_in_use in stats), or None."""
    value = status_dict(read_file(os.path.join(mount, "stats"))).get("heap_in_use")
    return int(value) if value is not None else None


def proc_counts(pid):
    """File descriptors, threads and resident KiB of process pid."""
    fds = len(os.listdir("/proc/%d/fd" % pid))
    fields = {}
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fds, int(fields["Threads"]), int(fields["VmRSS"].split()[0])


# ---- the submitters (separate processes) ------------------------------------------


def submitter(index, mount, work, first_job, count, deadline, report_path):
    """Submit jobs first_job.. first_job+count-1; write one line per job to report_path."""
    rng = random.Random(1000 + index)
    jobs = os.path.join(mount, "jobs")
    lines = []
    for job_index in range(first_job, first_job + count):
        if time.monotonic() > deadline:
            break
        sectors = rng.choice((8, 16, 64, 128))          # 4 KiB to 64 KiB
        src_sector = rng.randrange(0, SOURCE_SIZE // 512 - sectors, 8)
        dests = rng.randint(1, DESTS)
        dst_sector = job_index * (SLOT // 512)
        description = "copy from=%s/src.img:%d+%d %s\n" % (
            work, src_sector, sectors,
            " ".join("to=%s/d%d.img:%d" % (work, dest, dst_sector) for dest in range(dests)))
        cancel = rng.random() < 0.1
        # Half are removed when done; past the first 4000 all are, so that a long
        # soak stays below the daemon's bound on jobs that exist.
        remove = rng.random() < 0.5 or job_index >= 4000
        if rng.random() < 0.5:
            name = "s%d" % job_index
            os.mkdir(os.path.join(jobs, name))
            fd = os.open(os.path.join(jobs, name, "ctl"), os.O_WRONLY)
            os.write(fd, description.encode())
        else:
            fd = os.open(os.path.join(mount, "clone"), os.O_RDWR)
            name = os.read(fd, 64).decode().strip()
            os.write(fd, description.encode())
        if cancel:
            os.write(fd, b"cancel\n")
        os.close(fd)
        wait_fd = os.open(os.path.join(jobs, name, "wait"), os.O_RDONLY)
        final = status_dict(os.read(wait_fd, 65536).decode())
        os.close(wait_fd)
        if remove:
            os.rmdir(os.path.join(jobs, name))
        lines.append("%d %s %s %d %d %d %d\n" % (job_index, name, final.get("state", "?"), src_sector, sectors, dests,
                                                int(remove)))
    with open(report_path, "w") as report:
        report.writelines(lines)


# ---- the threads of the main process ----------------------------------------------


class Load:
    def __init__(self, mount):
        self.mount = mount
        self.stop = threading.Event()
        self.max_latency = 0.0
        self.probes = 0
        self.poller_changes = 0
        self.waiter_reads = 0
        self.errors = []
        self.lock = threading.Lock()
        self.names = []
        self.threads = []
        self.stop_file = os.path.join(tempfile.gettempdir(), "kcopydfs-soak-stop.%d" % os.getpid())

    def start(self):
        self.threads = [threading.Thread(target=self.prober), threading.Thread(target=self.lister)]
        self.threads += [threading.Thread(target=self.poller, args=(seed,)) for seed in range(POLLERS)]
        self.threads += [threading.Thread(target=self.waiter, args=(10000 + seed,)) for seed in range(WAITERS)]
        for thread in self.threads:
            thread.start()

    def finish(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def job_names(self):
        with self.lock:
            return self.names

    def lister(self):
        """One listing of jobs/ every 100 ms, shared by the pollers and waiters."""
        while not self.stop.is_set():
            try:
                names = os.listdir(os.path.join(self.mount, "jobs"))
            except OSError as error:
                self.note("lister: %s" % error)
                names = []
            with self.lock:
                self.names = names[-400:]
            self.stop.wait(0.1)

    def prober(self):
        """
        Time a read of version every 50 ms, from a process of its own: in this
        one the latency would include waiting for the GIL among 200 threads.
        """
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(reader)
            probes, slowest, errors = 0, 0.0, 0
            while os.getppid() != 1 and not os.path.exists(self.stop_file):
                start = time.monotonic()
                try:
                    read_file(os.path.join(self.mount, "version"))
                except OSError:
                    errors += 1
                slowest = max(slowest, time.monotonic() - start)
                probes += 1
                time.sleep(0.05)
            os.write(writer, ("%d %f %d" % (probes, slowest, errors)).encode())
            os._exit(0)
        os.close(writer)
        self.stop.wait()
        with open(self.stop_file, "w"):
            pass
        text = os.read(reader, 256).decode().split()
        os.close(reader)
        os.waitpid(pid, 0)
        os.unlink(self.stop_file)
        if len(text) == 3:
            self.probes, self.max_latency = int(text[0]), float(text[1])
            if int(text[2]):
                self.note("prober: %s reads of version failed" % text[2])
        else:
            self.note("prober: no report from the probing process")

    def open_some_job(self, rng, file_name):
        """(name, fd) of FILE_NAME of a job picked at random, or None: no job yet, or it went meanwhile."""
        names = self.job_names()
        if not names:
            self.stop.wait(0.05)
            return None
        name = rng.choice(names)
        try:
            return name, os.open(os.path.join(self.mount, "jobs", name, file_name), os.O_RDONLY)
        except OSError:
            return None

    def poller(self, seed):
        """Open a job's state file, poll it for a change, read it again; over and over."""
        rng = random.Random(seed)
        while not self.stop.is_set():
            opened = self.open_some_job(rng, "state")
            if not opened:
                continue
            fd = opened[1]
            try:
                os.read(fd, 64)
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                if poller.poll(200):
                    os.pread(fd, 64, 0)
                    with self.lock:
                        self.poller_changes += 1
            except OSError as error:
                if error.errno != errno.ENOENT:
                    self.note("poller: %s" % error)
            finally:
                os.close(fd)

    def waiter(self, seed):
        """Block in a read of some job's wait file; it must answer with a final state."""
        rng = random.Random(seed)
        while not self.stop.is_set():
            opened = self.open_some_job(rng, "wait")
            if not opened:
                continue
            name, fd = opened
            try:
                text = os.read(fd, 65536).decode()
                state = status_dict(text).get("state")
                if state not in FINAL and state != "idle":
                    self.note("waiter: jobs/%s/wait answered state %r" % (name, state))
                with self.lock:
                    self.waiter_reads += 1
            except OSError as error:
                # ENOENT: removed while we waited; EINTR: the daemon is going away.
                if error.errno not in (errno.ENOENT, errno.EINTR):
                    self.note("waiter: %s" % error)
            finally:
                os.close(fd)

    def note(self, text):
        with self.lock:
            if len(self.errors) < 20:
                self.errors.append(text)


def run_phase(mount, work, first_job, count, deadline, tag):
    """Jobs first_job.. first_job+count-1 from SUBMITTERS processes; their reports and exit statuses."""
    per_process = (count + SUBMITTERS - 1) // SUBMITTERS
    children = []
    for index in range(SUBMITTERS):
        report_path = os.path.join(work, "report-%s%d" % (tag, index))
        start = first_job + index * per_process
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                submitter(index, mount, work, start, max(0, min(per_process, first_job + count - start)), deadline,
                          report_path)
            except Exception as error:       # reported through the missing lines
                sys.stderr.write("submitter %d: %r\n" % (index, error))
                code = 1
            os._exit(code)
        children.append((pid, report_path))
    statuses = [os.waitpid(pid, 0)[1] for pid, _ in children]
    reports = {}
    for _, report_path in children:
        if os.path.exists(report_path):
            with open(report_path) as report:
                for line in report:
                    job_index, name, state, src_sector, sectors, dests, removed = line.split()
                    reports[int(job_index)] = (name, state, int(src_sector), int(sectors), int(dests), removed == "1")
    return reports, statuses


def remove_all(mount):
    for name in os.listdir(os.path.join(mount, "jobs")):
        os.rmdir(os.path.join(mount, "jobs", name))


def verify_copies(work, reports):
    """Every done job: each destination slot equals its source range."""
    source = os.open(os.path.join(work, "src.img"), os.O_RDONLY)
    dests = [os.open(os.path.join(work, "d%d.img" % dest), os.O_RDONLY) for dest in range(DESTS)]
    bad = []
    for job_index, (name, state, src_sector, sectors, dest_count, removed) in reports.items():
        if state != "done":
            continue
        want = os.pread(source, sectors * 512, src_sector * 512)
        for dest in range(dest_count):
            if os.pread(dests[dest], sectors * 512, job_index * SLOT) != want:
                bad.append("job %d (%s) dest %d" % (job_index, name, dest))
    for fd in [source] + dests:
        os.close(fd)
    return bad


def main():
    if os.geteuid() != 0:
        skip("needs root (a tmpfs and a FUSE mount of its own)")
    if not os.access(KCOPYDFS, os.X_OK):
        skip("no kcopydfs at '%s' (set KCOPYDFS)" % KCOPYDFS)
    for tool in ("mount", "umount", "fusermount3"):
        if not shutil.which(tool):
            skip("needs " + tool)
    work = tempfile.mkdtemp(prefix="test_kcopydfs_soak.")
    mount = tempfile.mkdtemp(prefix="test_kcopydfs_soak-mnt.")
    tmpfs_mib = (SOURCE_SIZE + DESTS * (JOBS + WARM_JOBS) * SLOT) // (1 << 20) + 64
    daemon = None
    try:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dM,mode=0755" % tmpfs_mib, "tmpfs", work]).returncode:
            skip("cannot mount a tmpfs on " + work)
        with open(os.path.join(work, "src.img"), "wb") as source:
            source.write(os.urandom(SOURCE_SIZE))
        for dest in range(DESTS):
            with open(os.path.join(work, "d%d.img" % dest), "wb") as dest_file:
                dest_file.truncate((JOBS + WARM_JOBS) * SLOT)
        log = open(os.path.join(work, "kcopydfs.log"), "w")
        # 64 KiB sub-jobs and a 2 MiB budget: the jobs are small, and the buffers then
        # hold at most 2 MiB of the daemon's memory, so the leak check sees the rest.
        daemon = subprocess.Popen([KCOPYDFS, "-f", "--max-jobs", "100000", "--subjob-kb", "64", "--pages", "512",
                                   mount], stderr=log)
        for _ in range(100):
            if os.path.exists(os.path.join(mount, "version")):
                break
            time.sleep(0.05)
        else:
            check("kcopydfs mounts", False, "a mount at " + mount, "exit %s" % daemon.poll())
            return 1

        # A first, smaller round warms up what may keep memory afterwards (worker
        # threads, their malloc arenas, the touched buffer slots); its end is the baseline.
        warm_jobs = WARM_JOBS
        load = Load(mount)
        load.start()
        warm_reports, _ = run_phase(mount, work, JOBS, warm_jobs, time.monotonic() + SECONDS, "warm")
        load.finish()
        remove_all(mount)
        time.sleep(1.0)
        before = proc_counts(daemon.pid)
        heap_before = heap_in_use(mount)

        load = Load(mount)
        load.start()
        started = time.monotonic()
        reports, statuses = run_phase(mount, work, 0, JOBS, started + SECONDS, "main")
        elapsed = time.monotonic() - started
        load.finish()
        states = {}
        for name, state, *_ in reports.values():
            states[state] = states.get(state, 0) + 1
        print("      %d jobs in %.1f s (%.0f jobs/s): %s; %d probes, %d poll wake-ups, %d wait reads" % (
            len(reports), elapsed, len(reports) / elapsed if elapsed else 0, states, load.probes,
            load.poller_changes, load.waiter_reads))
        check("every submitter exited cleanly", all(status == 0 for status in statuses), "exit 0 each", statuses)
        check("jobs submitted", len(reports) >= min(JOBS, 1000), "at least %d" % min(JOBS, 1000), len(reports))
        check("every job reached done or cancelled, none failed",
              set(states) <= {"done", "cancelled"} and states.get("done", 0) > 0, "done/cancelled only", states)
        kept = sorted(name for name, state, _, _, _, removed in reports.values() if not removed)
        listed = sorted(os.listdir(os.path.join(mount, "jobs")))
        check("jobs/ holds exactly the jobs not removed", kept == listed, "%d jobs" % len(kept),
              "%d jobs%s" % (len(listed), "" if kept == listed else ", differing: %s" % sorted(
                  set(kept) ^ set(listed))[:5]))
        lingering = [name for name in listed if status_dict(read_file(os.path.join(mount, "jobs", name,
                                                                                   "status")))["state"] not in FINAL]
        check("no job is left queued or running", not lingering, "none", lingering[:5])
        bad = verify_copies(work, reports)
        check("every done copy is byte-identical to its source range", not bad, "no difference", bad[:5])
        check("the daemon answered within a second throughout", load.max_latency < 1.0 and load.probes > 0,
              "every probe under 1 s", "%d probes, the slowest %.3f s" % (load.probes, load.max_latency))
        check("the load threads saw no error", not load.errors, "none", load.errors)
        check("the poll and wait threads worked", load.poller_changes > 0 and load.waiter_reads > 0,
              "poll wake-ups and wait reads", (load.poller_changes, load.waiter_reads))

        remove_all(mount)
        time.sleep(1.0)
        after = proc_counts(daemon.pid)
        heap_after = heap_in_use(mount)
        print("      daemon before: %d fds, %d threads, %d KiB; after: %d fds, %d threads, %d KiB" % (before + after))
        check("no file descriptor leaked", after[0] == before[0], "%d fds" % before[0], "%d fds" % after[0])
        # libfuse keeps up to max_idle_threads (16) idle workers after a burst.
        check("no thread leaked", after[1] <= before[1] + 16, "at most %d threads" % (before[1] + 16),
              "%d threads" % after[1])
        print("      daemon heap in use before: %s bytes; after: %s bytes" % (heap_before, heap_after))
        if SANITIZED:
            print("      (memory not checked in a sanitized build: LeakSanitizer checks the daemon at its exit)")
        else:
            # The heap, not RSS: glibc keeps what a busy moment took (measured: the heap back to
            # 0.29 MB in use after removing 1500 jobs, while the arena kept 12 MB of system memory).
            check("no memory leaked: the heap is back where it was", heap_before is not None and
                  heap_after is not None and heap_after <= heap_before + HEAP_SLACK_BYTES,
                  "at most %s + %d bytes" % (heap_before, HEAP_SLACK_BYTES), heap_after)
            check("RSS stays within the daemon's bound after the soak", after[2] <= RSS_BOUND_KIB,
                  "at most %d KiB (--pages 512 x 4 KiB + 16 MiB)" % RSS_BOUND_KIB, "%d KiB" % after[2])
    finally:
        if daemon and daemon.poll() is None:
            daemon.terminate()
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            check("the daemon exits 0 on SIGTERM after the soak", daemon.returncode == 0, 0, daemon.returncode)
        subprocess.run(["fusermount3", "-u", "-z", mount], stderr=subprocess.DEVNULL)
        os.rmdir(mount)
        subprocess.run(["umount", "-l", work], stderr=subprocess.DEVNULL)
        os.rmdir(work)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    sys.exit(main())
