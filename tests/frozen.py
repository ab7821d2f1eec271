"""Worker processes frozen (SIGSTOP) in the middle of a job: the state a test needs, held for as
long as it needs it, whatever the machine's speed. Linux only (/proc)."""

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

import psycopg

from bench.images import tagged
from tests.stack import FINISHED, LiveStack

JOB_STATE = "SELECT status, worker_id FROM processing_job WHERE id = %s"
JOBS_IN_HAND = "SELECT id::text, worker_id FROM processing_job WHERE status = 'processing'"
ACTIVE_FROM_PORTS = "SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY(%s) AND state = 'active'"


def pid_of(worker: str) -> int:
    return int(worker.split(":")[1])  # a job's worker is host:pid:thread


def jobs_in_hand(database: str) -> dict[str, int]:
    """Job -> worker pid, for the jobs being processed now (one query: no job slips by unseen)."""
    with psycopg.connect(database) as conn:
        return {job_id: pid_of(worker) for job_id, worker in conn.execute(JOBS_IN_HAND)}


def freeze(pid: int, database: str) -> None:
    """Stop process `pid`, and wait until the statements it sent PostgreSQL before it stopped have
    landed: what the database says afterwards no longer changes behind the test's back."""
    os.kill(pid, signal.SIGSTOP)
    LiveStack.wait_until(lambda: stopped(pid), 30, f"worker {pid} to stop", interval=0.01)
    what = f"the statements worker {pid} sent before it stopped"
    LiveStack.wait_until(lambda: not statement_in_flight(database, pid), 30, what, interval=0.01)


def submit_and_freeze_mid_job(stack: LiveStack, jpeg: bytes, attempts: int = 5, **params) -> tuple[dict, int]:
    """A grayscale job of `jpeg`, and its worker's pid, frozen with the job certainly in its hands.

    The worker is frozen, then the database looked at: if the job had ended first, the worker is let
    go and a fresh job (the JPEG with another comment: no result to reuse) is tried.
    """
    database = stack.env["DATABASE_URL"]
    for attempt in range(attempts):
        job = stack.submit("grayscale", tagged(jpeg, f"{uuid.uuid4()} {attempt}"), **params)
        pid = worker_once_in_hand(database, job["job_id"])
        if pid is None:  # it ended before a look saw it in a worker's hands: the next one's turn
            continue
        freeze(pid, database)
        if jobs_in_hand(database).get(job["job_id"]) == pid:
            return job, pid
        os.kill(pid, signal.SIGCONT)
    raise AssertionError(f"each of {attempts} jobs ended before its worker could be frozen")


def worker_once_in_hand(database: str, job_id: str, timeout: float = 60) -> int | None:
    """The pid of the worker processing job `job_id` as soon as one is (looked at every 10 ms, in
    the database), or None if the job ends first."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database, autocommit=True) as conn:
        while time.monotonic() < deadline:
            status, worker = conn.execute(JOB_STATE, [job_id]).fetchone()
            if status == "processing":
                return pid_of(worker)
            if status in FINISHED:
                return None
            time.sleep(0.01)
    raise AssertionError(f"job {job_id} was neither processing nor finished within {timeout}s")


def submit_and_kill_mid_job(stack: LiveStack, jpeg: bytes, **params) -> dict:
    """A grayscale job whose worker was SIGKILLed while processing it."""
    job, pid = submit_and_freeze_mid_job(stack, jpeg, **params)
    os.kill(pid, signal.SIGKILL)
    return job


def stopped(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except OSError:
        return True  # gone: nothing more will come from it


def statement_in_flight(database: str, pid: int) -> bool:
    """Whether PostgreSQL is running a statement sent by process `pid` (by its connections' ports)."""
    with psycopg.connect(database) as conn:
        return conn.execute(ACTIVE_FROM_PORTS, [sorted(tcp_ports(pid))]).fetchone()[0] > 0


def holds_a_file_lock(pid: int) -> bool:
    """Whether process `pid` holds a file lock (Linux /proc/locks: "1: FLOCK ADVISORY WRITE <pid> ...")."""
    lines = Path("/proc/locks").read_text().splitlines()
    return any(line.split()[4] == str(pid) for line in lines if "->" not in line)


def tcp_ports(pid: int) -> set[int]:
    """The local ports of the TCP connections process `pid` has open (Linux /proc)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
