"""Memory admission: a worker decodes an image only when its pixels fit the machine's budget.

A 50-megapixel JPEG decodes to 200 MB, and its result can take as much again: a burst of them
on the threads and processes that share one memory limit would get workers OOM-killed. Instead,
every worker process on a machine draws from one budget of pixels (WORKER_PIXEL_BUDGET, or sized
from the memory limit), kept in a small ledger file under an exclusive lock: the pixels each
process has admitted, by pid, so those of a process that died are freed when its pid is found
gone. A job waits, holding its lease, until its pixels fit; one larger than the whole budget
waits until nothing else runs, then runs alone.

What the ledger holds is also written to Redis as the machine's status (`darkroom:admission:<host>`),
by a thread of each worker process, at most every STATUS_EVERY_SECONDS and shortly after every change,
so that `/api/v1/queue/status` on any gateway shows each machine's pixel budget, pixels in use and jobs
waiting. The status is best effort: a job never waits for Redis.
"""

import ctypes
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

Entry = dict[str, int]  # one process's pixels, jobs and jobs waiting
Entries = dict[str, Entry]  # the ledger: each live worker process's entry, by pid
MachineStatus = dict[str, Any]  # a machine's summary, as /api/v1/queue/status shows it

_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL("libc.so.6")  # glibc: malloc_trim
except OSError:
    _libc = None  # another C library (musl, macOS): nothing to trim this way

# The budget counts pixels of the heaviest operations (blur, sharpen, analyze, rotate), which hold
# this many bytes per decoded pixel at their peak: Pillow keeps RGB in 4 bytes a pixel, and the
# result and a blur's passes come on top. Lighter operations count less (Operation.memory_per_pixel).
BYTES_PER_PIXEL = 12
# The share of the memory limit jobs' pixels may take: the rest is the interpreters and libraries.
MEMORY_SHARE = 0.6
WAIT_SECONDS = (0.02, 0.2)  # the first and the longest pause between looks at the ledger
# A process holds the ledger's lock for well under a millisecond. One that holds it this long is
# stopped or hung, and waiting on it would stall every worker on the machine: jobs go ahead
# uncounted instead (LedgerLocked).
LOCK_WAIT_SECONDS = 2.0
LOCK_RETRY_SECONDS = 0.002
# More than the entries of any machine's worker processes take (about 80 bytes each).
MAX_LEDGER_BYTES = 1 << 20
# Jobs this large (in counted pixels, 96 MB) give their freed memory back to the system when they
# end. Smaller ones leave it to the next job: given back, it is faulted in again page by page
# (an HD sobel took 45.6 ms of CPU trimmed after each job, 31.8 ms not).
TRIM_AFTER_PIXELS = 8_000_000
# glibc's mallopt: blocks from MMAP_ABOVE_BYTES (its largest) up get a mapping of their own, and
# up to KEEP_FREED_BYTES free at the top of a heap stay in the process (keep_freed_memory).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_ABOVE_BYTES = 32 << 20
KEEP_FREED_BYTES = 32 << 20
REDIS_PREFIX = "darkroom:admission:"
STATUS_EVERY_SECONDS = 1.0
REDIS_TIMEOUT_SECONDS = 0.5


def pixel_budget() -> int:
    """The machine's budget of pixels: WORKER_PIXEL_BUDGET, or 0 there for a share of the memory limit."""
    if settings.WORKER_PIXEL_BUDGET:
        return int(settings.WORKER_PIXEL_BUDGET)
    return int(memory_limit() * MEMORY_SHARE / BYTES_PER_PIXEL)


@lru_cache(maxsize=1)
def memory_limit() -> int:
    """This process's cgroup memory limit (v2 or v1), or the machine's memory when there is none."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in cgroup_limit_files():
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return min(int(text), physical)
    return physical


def cgroup_limit_files() -> list[Path]:
    files: list[Path] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return files
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            files.append(Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.max")
        elif "memory" in controllers.split(","):
            files.append(Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.limit_in_bytes")
    return files


def ledger_path() -> Path:
    return Path(settings.WORKER_ADMISSION_LEDGER or Path(settings.VAR_DIR) / "admission.json")


class LedgerLocked(Exception):
    """Another process has held the ledger's lock for LOCK_WAIT_SECONDS."""


class Ledger:
    """The machine's admitted pixels and waiting jobs, by pid, read and written under an flock."""

    def __init__(self, path: Path):
        self.path = path

    @contextmanager
    def open(self) -> Iterator[Entries]:
        """The entries of live processes, locked; what the block changes in them is written back
        (and reported as the machine's status)."""
        if not self.path.parent.is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # Not opened for appending: Linux's pwrite would append to such a file, whatever the offset.
        with open(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644), "r+b", buffering=0) as handle:
            lock(handle, self.path)
            try:
                stored = os.pread(handle.fileno(), MAX_LEDGER_BYTES, 0)
                entries = live(parse(stored))
                unrecorded.settle(entries)
                yield entries
                changed = json.dumps(entries).encode()
                if changed != stored.rstrip():
                    # Overwritten in place, padded with spaces (which JSON ignores) over a longer
                    # old text: truncating the file costs a journal commit, about a millisecond.
                    os.pwrite(handle.fileno(), changed.ljust(len(stored)), 0)
                    status_writer.offer(entries)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self) -> Entries:
        with self.open() as entries:
            return dict(entries)


def lock(handle: IO[bytes], path: Path) -> None:
    """Take the ledger's lock, waiting at most LOCK_WAIT_SECONDS."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LedgerLocked(f"{path} has been locked for {LOCK_WAIT_SECONDS:g} s") from None
            time.sleep(LOCK_RETRY_SECONDS)


class Unrecorded:
    """Changes to this process's entry that found the ledger locked, recorded at its next opening:
    a job that ends while the ledger is locked still gives its pixels back."""

    def __init__(self) -> None:
        self.deltas: dict[str, int] = {}
        self.lock = threading.Lock()

    def add(self, deltas: dict[str, int]) -> None:
        with self.lock:
            for name, delta in deltas.items():
                self.deltas[name] = self.deltas.get(name, 0) + delta

    def settle(self, entries: Entries) -> None:
        with self.lock:
            deltas, self.deltas = self.deltas, {}
        if deltas:
            apply(entries, deltas)


unrecorded = Unrecorded()


def parse(text: bytes) -> Entries:
    try:
        entries = json.loads(text) if text else {}
    except ValueError:
        return {}  # a torn write from a process killed mid-write: start afresh
    return entries if isinstance(entries, dict) else {}


def live(entries: Entries) -> Entries:
    """The entries whose process still exists: a killed worker's pixels go back to the budget."""
    return {pid: entry for pid, entry in entries.items() if pid_alive(int(pid))}


def pid_alive(pid: int) -> bool:
    """Whether the process runs: a zombie (killed, not yet reaped by its parent) holds no memory."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def summary(entries: Entries) -> MachineStatus:
    return {
        "host": socket.gethostname(),
        "pixel_budget": pixel_budget(),
        "pixels_admitted": sum(entry.get("pixels", 0) for entry in entries.values()),
        "jobs_admitted": sum(entry.get("jobs", 0) for entry in entries.values()),
        "jobs_waiting": sum(entry.get("waiting", 0) for entry in entries.values()),
    }


@contextmanager
def admitted(pixels: int) -> Iterator[None]:
    """Hold `pixels` of the machine's budget for the block, waiting until they fit."""
    ledger, limit = Ledger(ledger_path()), pixel_budget()
    cost = min(pixels, limit)  # a job larger than the whole budget fits only when nothing else runs
    try:
        enter(ledger, cost, limit)
    except LedgerLocked as exc:
        logger.warning("memory admission: %s; this job runs without being counted", exc)
        counted = False
    else:
        counted = True
    try:
        yield
    finally:
        if cost >= TRIM_AFTER_PIXELS:
            give_back_freed_memory()
        if counted:
            change(ledger, pixels=-cost, jobs=-1)


def enter(ledger: Ledger, cost: int, limit: int) -> None:
    """Take `cost` pixels, waiting (and counted as waiting) until they fit."""
    if take(ledger, cost, limit, waiting=False):
        return
    change(ledger, waiting=+1)
    try:
        wait_for_room(ledger, cost, limit)
    except BaseException:
        change(ledger, waiting=-1)
        raise


def keep_freed_memory() -> None:
    """Let this process reuse what its jobs free rather than give it back to the system at once.

    By default glibc gives back a freed block of a few MB (mmap, or the top of a heap past 128 KB
    to 32 MB), so the next image or array of that size is faulted in page by page again: measured
    on HD sobel jobs (`make bench`), a worker spent 44-50 ms of CPU a job, 35-38 ms with these
    limits. Keeping more than 32 MB raised the peak of `make bench-memory` from 920 MB to 1,008 MB of
    its 1,024 MB cap. Jobs of TRIM_AFTER_PIXELS or more still give back everything
    (`give_back_freed_memory`).
    """
    if _libc is not None:
        _libc.mallopt(M_MMAP_THRESHOLD, MMAP_ABOVE_BYTES)
        _libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)


def give_back_freed_memory() -> None:
    """Return what the job freed to the system before its pixels go back to the budget.

    glibc keeps freed memory in its arenas (a thread's own, mostly) for reuse, and after one large
    free it raises the size it hands to mmap, so a worker that ran one big job would keep most of
    it: measured, a 49 MP rotate left 380 MB behind, which malloc_trim gives back.
    """
    if _libc is not None:
        _libc.malloc_trim(0)


def wait_for_room(ledger: Ledger, cost: int, limit: int) -> None:
    """Look again, pausing longer each time (but not long), until the pixels fit; a pause is where
    a time limit can interrupt the wait."""
    pause = WAIT_SECONDS[0]
    while not take(ledger, cost, limit, waiting=True):
        time.sleep(pause)
        pause = min(pause * 2, WAIT_SECONDS[1])


def take(ledger: Ledger, cost: int, limit: int, waiting: bool) -> bool:
    """Take `cost` pixels for this process if they fit now (no longer waiting, if it was)."""
    with ledger.open() as entries:
        in_use = sum(entry.get("pixels", 0) for entry in entries.values())
        if in_use + cost > limit:
            return False
        mine = entries.setdefault(str(os.getpid()), {})
        mine["pixels"] = mine.get("pixels", 0) + cost
        mine["jobs"] = mine.get("jobs", 0) + 1
        if waiting:
            mine["waiting"] = mine.get("waiting", 0) - 1
        return True


def change(ledger: Ledger, **deltas: int) -> None:
    """Change this process's entry now, or at the ledger's next opening if it is locked."""
    try:
        with ledger.open() as entries:
            apply(entries, deltas)
    except LedgerLocked:
        unrecorded.add(deltas)


def apply(entries: Entries, deltas: dict[str, int]) -> None:
    mine = entries.setdefault(str(os.getpid()), {})
    for name, delta in deltas.items():
        mine[name] = max(0, mine.get(name, 0) + delta)
    if not any(mine.values()):
        del entries[str(os.getpid())]


# --- What each machine's workers hold, for /api/v1/queue/status ------------------------------


class StatusWriter:
    """Writes the summary of the latest ledger it was offered to Redis from a thread of its own, at
    most every STATUS_EVERY_SECONDS: a burst of jobs costs a write a second, not two a job."""

    def __init__(self) -> None:
        self.latest: Entries | None = None  # the ledger's entries, summarised when written
        self.lock = threading.Lock()
        self.writing = threading.Lock()  # one write at a time: an older state never lands last
        self.offered = threading.Event()
        self.thread_pid = 0  # the process whose thread runs: after a fork, the child starts its own

    def offer(self, entries: Entries) -> None:
        with self.lock:
            self.latest = entries
            if self.thread_pid != os.getpid():
                self.thread_pid = os.getpid()
                threading.Thread(target=self.run, name="admission-status", daemon=True).start()
        self.offered.set()

    def run(self) -> None:
        while True:
            self.offered.wait()
            self.offered.clear()
            self.flush()
            time.sleep(STATUS_EVERY_SECONDS)

    def flush(self) -> None:
        """Write what is pending now."""
        with self.writing:
            with self.lock:
                entries, self.latest = self.latest, None
            if entries is not None:
                report_status(summary(entries))


status_writer = StatusWriter()


@lru_cache(maxsize=4)
def redis_client(url: str, pid: int) -> redis.Redis:
    """A client per process (`pid` in the key: a forked worker must not share its parent's sockets)."""
    return redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )


def report_status(state: MachineStatus) -> None:
    """Best effort: the machine's state in Redis until the longest a job can run has passed."""
    if not settings.REDIS_URL:
        return
    try:
        client = redis_client(settings.REDIS_URL, os.getpid())
        client.set(REDIS_PREFIX + state["host"], json.dumps(state), ex=settings.JOB_TIME_LIMIT_SECONDS * 2)
    except redis.RedisError as exc:
        logger.debug("could not write the admission state: %s", exc)


def machines() -> list[MachineStatus]:
    """Each machine's admission state: from Redis when there is one, else this machine's ledger."""
    if not settings.REDIS_URL:
        try:
            return [summary(Ledger(ledger_path()).read())]
        except LedgerLocked as exc:
            logger.warning("could not read the admission state: %s", exc)
            return []
    try:
        client = redis_client(settings.REDIS_URL, os.getpid())
        keys = sorted(client.scan_iter(match=REDIS_PREFIX + "*", count=100))
        values = client.mget(keys) if keys else []
    except redis.RedisError as exc:
        logger.warning("could not read the admission state: %s", exc)
        return []
    return [json.loads(value) for value in values if value]
