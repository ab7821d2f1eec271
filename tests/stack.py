"""The full stack as real processes on loopback: a fresh PostgreSQL database, a RabbitMQ
vhost of its own, Redis, a uvicorn server and Dramatiq worker processes."""

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
import psycopg

from bench.ports import unused_ports
from bench.stack import announced_port, start_logged, stop_side_by_side
from project.serving import UVICORN_FLAGS
from scaler.backends.processes import MANAGE, child_pids, worker_command
from tests.services import clear_rate_limits, url_of

FINISHED = ("completed", "failed", "cancelled")


# Servers bind port 0 (the kernel picks a free port: no race with another process for it) and say
# which port they got on their first lines of output.
SERVERS = {
    "uvicorn": lambda port: [
        sys.executable,
        "-m",
        "uvicorn",
        "project.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        *UVICORN_FLAGS,
    ],
    "gunicorn": lambda port: [
        sys.executable,
        "-m",
        "gunicorn",
        "project.wsgi",
        "-c",
        "project/gunicorn_conf.py",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
    ],
}


def serving_pid(process: subprocess.Popen) -> int:
    """The process that handles requests: the server itself, or a gunicorn master's one worker."""
    pids = child_pids(process.pid)
    return pids[0] if pids else process.pid


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def bmp_upload_body(boundary: str, megabytes: int):
    """A multipart body carrying a `megabytes` MB BMP, generated as it is sent (never held in memory)."""
    width = 4096
    height = megabytes * 1024 * 1024 // (width * 3)
    pixels = width * 3 * height
    header = b"BM" + (54 + pixels).to_bytes(4, "little") + b"\0\0\0\0" + (54).to_bytes(4, "little")
    header += (40).to_bytes(4, "little") + width.to_bytes(4, "little") + height.to_bytes(4, "little")
    header += (1).to_bytes(2, "little") + (24).to_bytes(2, "little") + b"\0" * 24
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.bmp"\r\n'
        "Content-Type: image/bmp\r\n\r\n"
    ).encode() + header
    tail = f"\r\n--{boundary}--\r\n".encode()
    chunk = b"\x80" * (1024 * 1024)

    def stream():
        yield head
        for _ in range(pixels // len(chunk)):
            yield chunk
        yield b"\x80" * (pixels % len(chunk))
        yield tail

    return len(head) + pixels + len(tail), stream


@contextlib.contextmanager
def refused_port():
    """A port where every connection is refused for as long as the block lasts: bound, never
    listening, so that no other process can take it meanwhile (as a closed "free port" could be)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


class HangingUp:
    """A server that accepts each connection and closes it at once, counting them: a service that
    is there but fails every request."""

    def __init__(self):
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self.sock.close()


def start_on_a_free_port(start, attempts: int = 20):
    """`start(port)` -> started (a process that has bound `port`), or None when the port turned out
    to be taken: then again on another port. For servers that can't bind port 0 and report it.

    The ports come from below the kernel's ephemeral range (bench.ports.unused_ports), so that no
    process's port-0 bind or outgoing connection takes one between the check and the start."""
    for _ in range(attempts):
        [port] = unused_ports(1)
        started = start(port)
        if started is not None:
            return started, port
    raise AssertionError(f"no free port after {attempts} attempts")


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def broker_url(vhost: str) -> str:
    """BROKER_URL (host, port, credentials) with a vhost of the stack's own."""
    return urlparse(url_of("rabbitmq"))._replace(path=f"/{vhost}").geturl()


def broker_user() -> str:
    return unquote(urlparse(url_of("rabbitmq")).username or "guest")


class MigratedTemplate:
    """One database migrated once per test process; each stack's database is a copy of it.

    `CREATE DATABASE ... TEMPLATE` copies files, well under a second, where `manage.py migrate` takes
    several seconds per stack. The template is dropped when the process exits.
    """

    def __init__(self):
        self.name: str | None = None
        self.lock = threading.Lock()

    def create(self, admin_dsn: str, env: dict[str, str], name: str) -> None:
        template = self.ensure(admin_dsn, env)
        with self.lock, psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')

    def ensure(self, admin_dsn: str, env: dict[str, str]) -> str:
        """The template's name, migrating it first if this process has none yet."""
        with self.lock:
            if self.name is None:
                template = f"darkroom_e2e_template_{uuid.uuid4().hex[:8]}"
                with psycopg.connect(admin_dsn, autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{template}"')
                atexit.register(self.drop, admin_dsn, template)
                database = env["DATABASE_URL"].rsplit("/", 1)[0] + f"/{template}"
                migrate = [*MANAGE, "migrate", "--noinput", "-v", "0"]
                subprocess.run(migrate, env={**env, "DATABASE_URL": database}, check=True, timeout=300)
                self.name = template
            return self.name

    @staticmethod
    def drop(admin_dsn: str, template: str) -> None:
        try:
            with psycopg.connect(admin_dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
        except psycopg.Error:
            pass  # the server is gone: nothing to clean up there


TEMPLATE = MigratedTemplate()

# A connection per request, for clients of an nginx that reloads: an old nginx worker closes the
# connections it kept alive, and a request sent on one just then is reset. That race is the
# client's, not nginx's.
NO_KEEPALIVE = httpx.Limits(max_keepalive_connections=0)


def migrated_database() -> str:
    """This test process's migrated template database, for a bench stack (bench.stack) to copy."""
    admin_dsn = url_of("postgres").rsplit("/", 1)[0] + "/postgres"
    # Services are configured, so manage.py refuses the embedded default key.
    env = {**os.environ, "DATABASE_URL": admin_dsn, "SECRET_KEY": f"template-{uuid.uuid4().hex}"}
    return TEMPLATE.ensure(admin_dsn, env)


class LiveStack:
    def __init__(self, workdir: Path, **settings: str):
        self.name = f"darkroom_e2e_{uuid.uuid4().hex[:8]}"
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen] = {}
        postgres = url_of("postgres").rsplit("/", 1)[0]
        self.admin_dsn = f"{postgres}/postgres"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"{postgres}/{self.name}",
            "BROKER_URL": broker_url(self.name),
            "REDIS_URL": url_of("redis"),
            "DARKROOM_VAR_DIR": str(workdir),
            "JOB_LEASE_SECONDS": "4",
            "REQUEUE_UNPUBLISHED_AFTER_SECONDS": "5",
            "LOG_LEVEL": "INFO",
            # Services are configured, so production defaults apply: a key of its own, and (as the
            # tests are anonymous clients) API keys not required unless a test asks for them.
            "SECRET_KEY": f"live-stack-{uuid.uuid4().hex}",
            "API_KEYS_REQUIRED": "false",
            **settings,
        }
        self.urls: dict[str, str] = {}  # server name -> its URL, once it is started
        self.port = 0  # the first server's port and URL
        self.base_url = ""

    # --- lifecycle -----------------------------------------------------------
    def __enter__(self):
        try:
            TEMPLATE.create(self.admin_dsn, self.env, self.name)
            clear_rate_limits(self.env["REDIS_URL"])  # not an earlier stack's counts: those of this one
            rabbitmqctl("add_vhost", self.name)
            rabbitmqctl("set_permissions", "-p", self.name, broker_user(), ".*", ".*", ".*")
        except BaseException:
            self.__exit__()  # what was made so far: no database or vhost left behind
            raise
        return self

    def __exit__(self, *exc_info):
        self.stop(*self.processes)
        with contextlib.suppress(subprocess.CalledProcessError):  # a vhost that was never made
            rabbitmqctl("delete_vhost", self.name)
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def spawn(self, name: str, command: list[str], **env: str) -> subprocess.Popen:
        process = start_logged(self.workdir / f"{name}.log", command, {**self.env, **env})
        self.processes[name] = process
        return process

    def start_server(
        self, name: str = "server", kind: str = "uvicorn", workers: int = 1, **env: str
    ) -> subprocess.Popen:
        """uvicorn (ASGI: HTTP and WebSockets) or gunicorn (WSGI, one worker process: HTTP), on a port
        the kernel picks; `url(name)` then answers (and `base_url` too, for the first server).
        uvicorn with `workers` > 1: that many processes sharing the port, as `make serve` runs them."""
        command = SERVERS[kind](0)
        if workers > 1:
            command += ["--workers", str(workers)]
        if kind == "uvicorn":  # as the Makefile does: forwarded headers only from TRUSTED_PROXIES
            command += ["--forwarded-allow-ips", {**self.env, **env}.get("TRUSTED_PROXIES", "")]
        log = self.workdir / f"{name}.log"
        start = log.stat().st_size if log.exists() else 0
        process = self.spawn(name, command, **env)
        port = announced_port(log, process, start)
        url = f"http://127.0.0.1:{port}"
        self.wait_until(lambda: self.is_live(url), timeout=30, what=f"{name} to answer /health/live")
        self.urls[name] = url
        if not self.base_url:
            self.port, self.base_url = port, url
        return process

    def url(self, name: str) -> str:
        return self.urls[name]

    def manage(self, *args: str) -> str:
        """Run a manage.py command against this stack; its standard output."""
        done = subprocess.run(
            [*MANAGE, *args], env=self.env, capture_output=True, text=True, check=True, timeout=120
        )
        return done.stdout.strip()

    def start_worker(self, name: str = "worker", threads: int = 2, **env: str) -> subprocess.Popen:
        return self.spawn(name, worker_command(threads), **env)

    def stop(self, *names: str, sig: int = signal.SIGTERM) -> None:
        """Signal each process; they shut down side by side."""
        stopping = [self.processes.pop(name) for name in names]
        # The main process only: it stops its children itself. A Dramatiq worker that got a
        # second SIGTERM (as the whole group would) exits at once, mid-job.
        stop_side_by_side(stopping, lambda process: os.kill(process.pid, sig), timeout=30)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    # --- the API, as a client sees it ------------------------------------------
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30)

    def is_live(self, url: str | None = None) -> bool:
        try:
            return httpx.get(f"{url or self.base_url}/health/live", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def submit(self, service: str, image: bytes, filename: str = "image.jpg", **params) -> dict:
        with self.client() as client:
            response = client.post(
                f"/api/v1/process/{service}",
                files={"image": (filename, image)},
                data={k: str(v) for k, v in params.items()},
            )
        assert response.status_code == 202, response.text
        return response.json()

    def job(self, job_id: str) -> dict:
        with self.client() as client:
            return client.get(f"/api/v1/jobs/{job_id}").json()

    def result(self, job_id: str) -> dict:
        with self.client() as client:
            return client.get(f"/api/v1/result/{job_id}").json()

    def wait_for_status(self, job_id: str, statuses=FINISHED, timeout: float = 60) -> dict:
        found = {}

        def reached():
            found.update(self.job(job_id))
            return found["status"] in statuses

        self.wait_until(reached, timeout=timeout, what=f"job {job_id} to reach {statuses}")
        return found

    def result_files(self, job_id: str) -> list[Path]:
        folder = self.workdir / "media" / "results" / job_id
        return sorted(folder.iterdir()) if folder.exists() else []

    @staticmethod
    def wait_until(condition, timeout: float, what: str, interval: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
