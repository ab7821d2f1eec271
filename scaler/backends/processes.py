"""Starting and watching the local processes the scaler owns."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

from processing.jobs.pools import CALLBACK_QUEUE

# From this file, not settings.BASE_DIR (the same folder), so that the benchmarks can import this module
# without configuring Django.
ROOT = Path(__file__).resolve().parents[2]
MANAGE = [sys.executable, str(ROOT / "manage.py")]

# The modules `manage.py rundramatiq` finds and hands to Dramatiq, named here so that a worker group
# starts Dramatiq at once: rundramatiq starts Django only to find them, a second of CPU per group
# (tests/test_pools.py checks the list against rundramatiq's own discovery).
WORKER_MODULES = ["project.dramatiq_setup", "django_dramatiq.tasks", "processing.worker.actors"]

SUPERVISE_EVERY = 1.0  # seconds: how soon a crashed process is replaced


def worker_command(threads: int, pool: str | None = None) -> list[str]:
    """One Dramatiq worker process of `threads` threads, on the queue of `pool` and the callbacks' (and
    their retries), or on every queue."""
    queues = ["--queues", pool, CALLBACK_QUEUE] if pool else []
    size = ["--processes", "1", "--threads", str(threads)]
    return [sys.executable, "-m", "dramatiq", "--path", str(ROOT), *size, *WORKER_MODULES, *queues]


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: a supervisor stops its processes its own way, once."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def spawn(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `command` in a session of its own, its output joined to the scaler's.

    Its own session keeps signals meant for the scaler (a Ctrl-C, a `kill` of the scaler's process
    group) from reaching it: the scaler decides how each of its processes stops.
    """
    return subprocess.Popen(
        command, env={**os.environ, **(env or {})}, cwd=settings.BASE_DIR, start_new_session=True
    )


def child_pids(pid: int) -> list[int]:
    """The direct children of `pid` (Linux /proc), or [] where that can't be read."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def signal_group(pid: int, sig: int) -> None:
    """Send `sig` to what is left of the process group `pid` led; nothing there is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def wait_all(processes: list[subprocess.Popen], timeout: float) -> list[subprocess.Popen]:
    """Wait up to `timeout` seconds for all of `processes` to exit; those still running."""
    deadline = time.monotonic() + timeout
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    return [process for process in processes if process.poll() is None]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"
