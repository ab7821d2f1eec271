"""The full stack for a benchmark run, as real processes on loopback: a fresh PostgreSQL database
and RabbitMQ vhost, one uvicorn server and Dramatiq worker processes; all removed on exit."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import closing
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pika
import psycopg

from bench.ports import unused_ports
from processing.jobs.pools import DEFAULT_POOL
from processing.jobs.queues import declared_counts
from scaler.backends.processes import MANAGE, ROOT, worker_command


class StackError(Exception):
    """A part of the stack did not come up."""


def with_path(env_name: str, default: str, path: str) -> str:
    """The service URL from the environment (or the default), pointing at `path` instead."""
    return urlparse(os.getenv(env_name) or default)._replace(path=path).geturl()


# A server started on port 0 gets a free port from the kernel (no other process can take it between
# a check and the bind) and says which one on its first lines of output.
ANNOUNCED_PORT = re.compile(rb"(?:Uvicorn running on|Listening at:) http://127\.0\.0\.1:(\d+)")


def announced_port(log: Path, process: subprocess.Popen, start: int = 0, timeout: float = 60) -> int:
    """The port a server started on port 0 says it got, in its output (`log`, from offset `start`)."""
    deadline = time.monotonic() + timeout
    while True:
        with open(log, "rb") as lines:
            lines.seek(start)
            match = ANNOUNCED_PORT.search(lines.read())
        if match:
            return int(match.group(1))
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise StackError(f"the server exited ({process.returncode}) before listening:\n{tail}")
        if time.monotonic() > deadline:
            raise StackError(f"the server did not say which port it listens on within {timeout}s")
        time.sleep(0.1)


def free_port() -> int:
    """For servers that can't bind port 0 and say which port they got: a port free now, below the
    kernel's ephemeral range, so that no port-0 bind or outgoing connection takes it before the
    server binds it (see bench.ports.unused_ports)."""
    return unused_ports(1)[0]


def rabbitmqctl(*args: str, check: bool = True) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], check=check, capture_output=True, text=True, timeout=120
    )
    return done.stdout


class StartedOrCleanedUp:
    """A context manager that starts something in `_start()` and tears it down in `__exit__()`,
    also when starting fails halfway (whatever had started is stopped)."""

    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def __exit__(self, *exc_info) -> None:
        raise NotImplementedError


def stop_side_by_side(processes: list[subprocess.Popen], signal_each, timeout: float) -> None:
    """`signal_each` every process still running, then wait for them all: one shutdown's time, not
    their sum. A process group still running after `timeout` seconds is killed."""
    for process in processes:
        if process.poll() is None:
            signal_each(process)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start_logged(log_path: Path, command: list[str], env: dict[str, str]) -> subprocess.Popen:
    """`command` from the project's folder, in a process group of its own (stopped as a whole), its
    output appended to `log_path`."""
    with open(log_path, "ab") as log:  # the child holds its own copy of the descriptor
        return subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )


class Stack(StartedOrCleanedUp):
    """`with Stack(workers=2, threads=1) as stack:` then talk to `stack.base_url`."""

    def __init__(
        self,
        workers: int,
        threads: int,
        supervised: bool = False,
        database_template: str | None = None,
        worker_prefix: tuple[str, ...] = (),
        workdir: Path | None = None,
        **settings: str,
    ):
        self.name = f"darkroom_bench_{uuid.uuid4().hex[:8]}"
        self.workers, self.threads = workers, threads
        # Supervised: one `run_workers` process keeps them (`make worker`); else a process per group.
        self.supervised = supervised
        # A migrated database to copy (the tests keep one): seconds faster than migrating a new one.
        self.database_template = database_template
        # What the worker commands run under, e.g. a command that joins a memory cgroup and execs the rest.
        self.worker_prefix = list(worker_prefix)
        # The processes' logs: in `workdir`, kept; by default in a temporary folder removed on exit.
        self.keep_workdir = workdir is not None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"{self.name}_"))
        self.processes: dict[str, subprocess.Popen] = {}
        self.admin_dsn = with_path("DATABASE_URL", "postgres://postgres@127.0.0.1:5432", "/postgres")
        self.port = 0  # the server's, once it has started
        self.base_url = ""
        self.env = {
            **os.environ,
            "DATABASE_URL": with_path("DATABASE_URL", self.admin_dsn, f"/{self.name}"),
            "BROKER_URL": with_path("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672", f"/{self.name}"),
            "REDIS_URL": os.getenv("REDIS_URL") or "redis://127.0.0.1:6379/0",
            "DARKROOM_VAR_DIR": str(self.workdir),
            "DEBUG": "false",  # DEBUG keeps every SQL query in memory
            # One client on one address sends every request, and every upload must be processed.
            "RATE_LIMIT_SUBMIT": "1000000/s",
            "RATE_LIMIT_READ": "1000000/s",
            "RESULT_REUSE": "false",
            "SECRET_KEY": f"bench-{uuid.uuid4().hex}",  # the embedded default is refused with services
            "API_KEYS_REQUIRED": "false",  # the load client is anonymous
            **settings,
        }

    def _start(self) -> None:
        template = f' TEMPLATE "{self.database_template}"' if self.database_template else ""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"{template}')
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        if not self.database_template:
            self.migrate()
        command = [sys.executable, "-m", "uvicorn", "project.asgi:application", "--port", "0"]
        self.spawn(
            "server", [*command, "--host", "127.0.0.1", "--no-access-log", "--forwarded-allow-ips", ""]
        )
        self.port = announced_port(self.workdir / "server.log", self.processes["server"])
        self.base_url = f"http://127.0.0.1:{self.port}"
        if self.supervised:
            count = ["--processes", str(self.workers), "--threads", str(self.threads)]
            self.spawn("workers", [*self.worker_prefix, *MANAGE, "run_workers", *count])
        for number in range(0 if self.supervised else self.workers):
            command = worker_command(self.threads)
            self.spawn(f"worker{number + 1}", [*self.worker_prefix, *command])
        self.wait_until(self.is_live, "the server to answer /health/live")
        # Workers that are still booting would show up as queue wait in the first jobs.
        self.wait_until(lambda: self.consumers() >= self.workers, f"{self.workers} workers to consume")

    def migrate(self) -> None:
        migrate = [*MANAGE, "migrate", "--noinput", "-v", "0"]
        done = subprocess.run(migrate, env=self.env, capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise StackError(f"manage.py migrate failed:\n{done.stdout}{done.stderr}")

    def __exit__(self, *exc_info) -> None:
        self.stop(*self.processes)
        rabbitmqctl("delete_vhost", self.name, check=False)
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def spawn(self, name: str, command: list[str], **env: str) -> None:
        """Start `command` as `name`, in a process group of its own; `env` adds to the stack's environment."""
        self.processes[name] = start_logged(self.workdir / f"{name}.log", command, {**self.env, **env})

    def stop(self, *names: str) -> None:
        """SIGTERM to each process group; they shut down side by side."""
        stopping = [self.processes.pop(name) for name in names]
        stop_side_by_side(stopping, lambda process: os.killpg(process.pid, signal.SIGTERM), timeout=15)

    def is_live(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/health/live", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def consumers(self) -> int:
        """Workers consuming the default pool's queue, as RabbitMQ counts them (0 before one has declared it).

        Asked over AMQP: `rabbitmqctl` starts an Erlang VM, half a second of CPU a call."""
        with closing(pika.BlockingConnection(pika.URLParameters(self.env["BROKER_URL"]))) as connection:
            _, consumers = declared_counts(connection, DEFAULT_POOL)
            return consumers

    def wait_until(self, condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            exited = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
            if exited or time.monotonic() > deadline:
                reason = f"exited: {exited}" if exited else f"timed out after {timeout:g}s"
                raise StackError(f"waiting for {what}: {reason}\n{self.log_tails()}")
            time.sleep(0.2)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def log_tails(self, lines: int = 15) -> str:
        tails = []
        for path in sorted(self.workdir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"--- {path.name} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(tails)
