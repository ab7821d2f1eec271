"""`make bench-ws`: many WebSocket clients watching jobs while jobs complete at a steady rate,
then a reconnect storm: every gateway process killed and started again under them.

What it measures, on the full stack (PostgreSQL, a private Redis as the channel layer) with
`--processes` uvicorn processes sharing one port, as `make serve` runs them with WEB_CONCURRENCY
(each with its own channel in Redis; the server's flags as printed):

- memory: each gateway process's resident memory with its sockets open on `WS /ws/jobs/{id}/`
  (each authenticated with an API key and holding its job's state), less its memory before,
  divided by its sockets; and the same over all of them. Which process holds a socket, its
  handshake's answer says (GATEWAY_PROCESS_HEADER).
- latency: from the moment a job's status change is committed (the `started_at` and
  `finished_at` the change stamps, just before its UPDATE commits) to the moment a client
  receives the event, for `job.processing` and `job.completed`: over the run, and in each
  WINDOW seconds of it (by commit time), in total and by gateway process, so that one bad
  stretch or one slow process can't hide in the total;
- each gateway process's garbage-collector pauses (gateway.live.gc_pauses, read from the files
  PROMETHEUS_MULTIPROC_DIR gives each process): count, p99 (as the histogram's bucket bound) and
  longest, while the sockets open and while events flow;
- losses: `darkroom_ws_dropped_total{reason}`, events never received, sockets closed early;
- the storm: every gateway process killed at once and started again, while jobs go on finishing.
  Each client reconnects with the jittered exponential backoff of the browser client
  (static/js/live.js's Backoff) and gets its job's current state, which carries what happened
  while it was away: the time until every client is back, those that never came back, each
  new process's peak memory, and completions that reached no client.

Jobs change through processing.jobs.lifecycle.claim and .complete on real Job rows, the code path
workers use, driven from this process through the Django ORM at `--rate` jobs per second;
no image is processed (a worker's image work is not what this measures). Events travel
as in production: processing.events in this process, Redis, the server's channel layer.
Clients run in `--client-processes` processes (asyncio + the websockets library), each from a
loopback address of its own (127.0.0.2, 127.0.0.3, ...: the whole of 127/8 is loopback on Linux),
since one source address has only the kernel's ephemeral ports (about 28,000) toward one server
port. Every process, gateway or client, holds at most SOCKETS_PER_PROCESS sockets, under the
descriptors a process may open. docs/sockets-at-scale.md says what a machine needs.

    python -m bench.websockets                       # 10,000 clients, 100 jobs/s for 30 s, a storm
    python -m bench.websockets --clients 100000 --rate 200    # the goals: 8 + 8 processes
    python -m bench.websockets -n 2000 --no-storm --serve-flags "--ws websockets"
    python -m bench.websockets --url ws://127.0.0.1:8000 --server-pid 1234   # a running server
                                        # (DATABASE_URL and REDIS_URL must be the server's; no storm)
"""

import argparse
import asyncio
import contextlib
import json
import logging
import math
import multiprocessing
import os
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from bench.stack import StartedOrCleanedUp, free_port, start_logged
from project.serving import UVICORN_FLAGS, raise_open_files_limit

ROOT = Path(__file__).resolve().parent.parent
# At most, by default, per gateway process and per client process: under the 20,000 descriptors a
# process may open on the machine this was measured on (its hard limit), with room.
SOCKETS_PER_PROCESS = 12_500
METRICS_TOKEN = f"bench-ws-{uuid.uuid4().hex}"
PROCESS_HEADER = "x-gateway-process"  # gateway.live.consumers names the process holding a socket
WORKER = "bench-ws:driver"
# Threads finishing jobs: each job is two transactions (claim, complete), a few milliseconds
# apiece; one thread alone falls behind 200 jobs/s.
DRIVERS = 4
DRIVER_DATABASE_WAIT = 30  # seconds a job driver waits for a database connection
WARM_UP = 300  # sockets opened and closed before the baseline is measured
WINDOW = 10  # seconds of commits per latency window
# The field each event's change stamps just before its UPDATE commits.
COMMIT_STAMPS = {"job.processing": "started_at", "job.completed": "finished_at"}
DEFAULT_SERVE_FLAGS = shlex.join(UVICORN_FLAGS)  # every gateway's (project/serving.py)
# static/js/live.js's Backoff: 1 s, 2 s, 4 s... up to 30 s, each between half and all of it.
BACKOFF_BASE, BACKOFF_MAX = 1.0, 30.0

# The goals `make bench-ws` judges a run by (issue 27), printed as one verdict a goal.
GOAL_SOCKETS = 100_000
GOAL_KIB_PER_SOCKET = 16
GOAL_RATE = 200  # jobs/s
GOAL_P99_MS = 100
GOAL_STORM_SECONDS = 60
GOAL_PROCESS_MIB = 1024


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.websockets", description=__doc__.split("\n")[0])
    parser.add_argument(
        "-n", "--connections", "--clients", type=int, default=10_000, help="concurrent WebSocket clients"
    )
    parser.add_argument(
        "--processes", type=int, help="gateway processes on the one port (default: one per 12,500 clients)"
    )
    parser.add_argument("--rate", type=float, default=100, help="jobs completed per second")
    parser.add_argument("--duration", type=float, default=30, help="seconds of completing jobs")
    parser.add_argument(
        "--client-processes",
        type=int,
        help="processes the clients run in (default: one per 12,500, 2 at least)",
    )
    parser.add_argument(
        "--source-addresses",
        type=int,
        help="loopback addresses the clients connect from (default: one per client process)",
    )
    parser.add_argument(
        "--connect-concurrency", type=int, default=100, help="handshakes in flight per process"
    )
    parser.add_argument("--no-storm", dest="storm", action="store_false", help="skip the reconnect storm")
    parser.add_argument(
        "--storm-jobs-for", type=float, default=10, help="seconds jobs go on finishing from the storm's start"
    )
    parser.add_argument(
        "--storm-timeout", type=float, default=180, help="seconds after which a client not back has failed"
    )
    parser.add_argument("--serve-flags", default=DEFAULT_SERVE_FLAGS, help="extra uvicorn flags")
    parser.add_argument(
        "--no-compression", action="store_true", help="clients don't offer permessage-deflate"
    )
    parser.add_argument("--url", help="a running server's ws:// base URL (else one is started)")
    parser.add_argument("--server-pid", type=int, help="with --url: the server process, for its memory")
    parser.add_argument("--metrics-token", help="with --url: the server's METRICS_TOKEN, for its GC pauses")
    args = parser.parse_args(argv)
    per_process = math.ceil(args.connections / SOCKETS_PER_PROCESS)
    args.processes = args.processes or per_process
    args.client_processes = args.client_processes or max(2, per_process)
    args.source_addresses = args.source_addresses or args.client_processes
    if args.url:
        args.storm = False  # a server this run didn't start is not this run's to kill
    return args


def raise_fd_limit() -> int:
    """As many open files as the machine allows; children (the servers) inherit it."""
    return raise_open_files_limit()


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """The process's resident memory now (VmRSS) or at its peak (VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def wait_until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def group_alive(group: int) -> bool:
    """Whether any process of the process group is still there (a zombie counts as gone)."""
    for status in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = status.read_text().rsplit(")", 1)[1].split()  # after the command's name
            if fields[0] != "Z" and int(fields[2]) == group:
                return True
    return False


def can_listen_on(port: int) -> bool:
    """Whether a server could listen on the port now (nobody else does), as uvicorn binds it."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def gateway_pids(server_pid: int) -> list[int]:
    """The processes serving: uvicorn's worker processes, or the server itself when it has none."""
    from scaler.backends.processes import child_pids

    workers = []
    for pid in child_pids(server_pid):
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.append(pid)
    return workers or [server_pid]


# --- The stack: a private Redis, a fresh database, the gateway processes ----------------------


class Stack(StartedOrCleanedUp):
    """A private redis-server, a fresh PostgreSQL database and `processes` uvicorn processes on one
    port; all removed on exit. `restart_server()` kills every gateway process and starts them again."""

    def __init__(self, serve_flags: str, processes: int):
        self.name = f"darkroom_benchws_{uuid.uuid4().hex[:8]}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}_"))
        self.serve_flags = serve_flags
        self.gateway_processes = processes
        self.processes: dict[str, subprocess.Popen] = {}
        postgres = urlparse(os.getenv("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres")
        self.admin_dsn = postgres._replace(path="/postgres").geturl()
        self.redis_port, self.port = free_port(), free_port()
        self.metrics_dir = self.workdir / "metrics"
        self.metrics_dir.mkdir()
        self.env = {
            **os.environ,
            "DATABASE_URL": postgres._replace(path=f"/{self.name}").geturl(),
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "DARKROOM_VAR_DIR": str(self.workdir),
            "EMBEDDED_WORKERS": "false",  # this bench drives the jobs itself
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
            "SECRET_KEY": f"bench-ws-{uuid.uuid4().hex}",  # the embedded default is refused with services
            "API_KEYS_REQUIRED": "false",  # the clients are anonymous
            "METRICS_TOKEN": METRICS_TOKEN,
            "GATEWAY_PROCESS_HEADER": "true",  # which process holds each socket
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),  # each process's figures, in a file of its own
        }
        self.url = f"ws://127.0.0.1:{self.port}"

    def _start(self) -> None:
        import psycopg

        redis = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", ""]
        self.spawn("redis", [*redis, "--appendonly", "no", "--maxclients", "1000"])
        wait_until(lambda: reachable("127.0.0.1", self.redis_port), "redis-server")
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=self.env, check=True, cwd=ROOT)
        self.start_server()
        wait_until(lambda: reachable("127.0.0.1", self.port), "the server")
        self.wait_for_gateways()

    def start_server(self) -> None:
        server = [sys.executable, "-m", "uvicorn", "project.asgi:application", "--host", "127.0.0.1"]
        server += ["--port", str(self.port), "--workers", str(self.gateway_processes), "--no-access-log"]
        # uvicorn's own log says INFO twice for every socket opened: 200,000 lines for 100,000 sockets.
        server += ["--backlog", "4096", "--forwarded-allow-ips", "", "--log-level", "warning"]
        self.spawn("server", [*server, *shlex.split(self.serve_flags)])

    def wait_for_gateways(self, timeout: float = 120) -> list[int]:
        server = self.processes["server"]

        def all_started() -> bool:
            if server.poll() is not None:
                tail = (self.workdir / "server.log").read_text(errors="replace")[-500:]
                raise RuntimeError(f"the server exited ({server.returncode}): {tail}")
            return self.gateway_processes == 1 or len(gateway_pids(self.server_pid)) == self.gateway_processes

        wait_until(all_started, f"{self.gateway_processes} gateway processes", timeout)
        return gateway_pids(self.server_pid)

    def restart_server(self) -> None:
        """Every gateway process killed at once, as a crash or a deploy without draining would; then
        started again on the same port. Returns as soon as they are starting."""
        server = self.processes["server"]
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        # A process holding thousands of sockets takes a while to die, and until the last one of the
        # group has, the port is still theirs: the new server could not listen on it. Nor until the
        # last thread of each has: a process whose first thread is a zombie may have others still
        # closing its sockets (a storm once failed so, on "Address already in use").
        wait_until(
            lambda: not group_alive(server.pid) and can_listen_on(self.port),
            "the killed gateway processes to be gone",
            120,
        )
        self.start_server()

    def __exit__(self, *exc_info) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        import psycopg

        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        if exc_info[0] is None:  # the logs of a run that failed stay, to be read
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            print(f"the servers' logs: {self.workdir}", file=sys.stderr)

    def spawn(self, name: str, command: list[str]) -> None:
        self.processes[name] = start_logged(self.workdir / f"{name}.log", command, self.env)

    @property
    def server_pid(self) -> int:
        return self.processes["server"].pid


# --- Jobs, through the code path workers use ----------------------------------------------


def setup_django(env: dict) -> None:
    os.environ.update(
        {k: v for k, v in env.items() if k in ("DATABASE_URL", "REDIS_URL", "DARKROOM_VAR_DIR")}
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    # The job drivers finish jobs while 100,000 clients reconnect and read their state: a new
    # PostgreSQL connection may then take longer than a server's 1 s, and a driver that gave up
    # would stop finishing jobs for the rest of the storm (one 100,000-socket run did).
    os.environ["DATABASE_POOL_TIMEOUT"] = str(DRIVER_DATABASE_WAIT)
    import django

    django.setup()
    # A gateway's full inbox is logged at every event sent to it; the run counts them (sender_losses).
    logging.getLogger("processing.events.layer").setLevel(logging.ERROR)


def sender_losses() -> float:
    """Events this process (the jobs' side) could not put in a gateway's inbox in Redis so far: the
    gateway was not reading them (a stalled or dead process). Its sockets get the state instead."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("darkroom_ws_dropped_total", {"reason": "channel_full"}) or 0.0


def create_jobs(count: int) -> tuple[str, list[str]]:
    """An API key and `count` queued jobs it owns (no input file: no worker will open it)."""
    from gateway.models import ApiKey
    from processing.models import Job

    key, presented = ApiKey.issue("bench-ws")
    jobs = [
        Job(
            service="grayscale",
            owner_key=str(key.pk),
            input_key="bench/none.png",
            input_sha256="0" * 64,
            input_format="png",
            input_bytes=1,
            input_width=1,
            input_height=1,
        )
        for _ in range(count)
    ]
    Job.objects.bulk_create(jobs, batch_size=1000)
    return presented, [str(job.id) for job in jobs]


def finish(job_id: str) -> None:
    """claim then complete, as a worker does; each commits, then emits its event."""
    from processing.jobs import lifecycle

    claimed = lifecycle.claim(job_id, WORKER)
    output = {"output_format": "png", "output_content_type": "image/png", "output_bytes": 1}
    lifecycle.complete(claimed, WORKER, output_key=f"results/{job_id}/output.png", **output)


def drive(job_ids: list[str], rate: float, duration: float) -> tuple[list[str], float]:
    """Finish jobs at `rate` per second for `duration` seconds, each when its turn comes, on DRIVERS
    threads (like a worker's); returns (those finished, seconds taken)."""
    count = min(len(job_ids), int(rate * duration))
    started = time.monotonic()

    def finish_in_turn(number: int, job_id: str) -> None:
        delay = started + number / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        finish(job_id)

    with ThreadPoolExecutor(DRIVERS, thread_name_prefix="bench-ws-driver") as threads:
        list(threads.map(finish_in_turn, range(count), job_ids[:count]))  # in order; raises a failure
    return job_ids[:count], time.monotonic() - started


# --- Clients ------------------------------------------------------------------------------


class Backoff:
    """static/js/live.js's Backoff (change both together): base * 2**attempt up to max, each delay
    between half and all of it, so that clients dropped together don't come back together."""

    def __init__(self, base: float = BACKOFF_BASE, most: float = BACKOFF_MAX):
        self.base, self.most, self.attempt = base, most, 0

    def next(self) -> float:
        delay = min(self.most, self.base * 2**self.attempt)
        self.attempt += 1
        return delay / 2 + random.random() * delay / 2

    def reset(self) -> None:
        self.attempt = 0


def client_process(url: str, key: str, job_ids: list[str], options: dict, results, events) -> None:
    raise_fd_limit()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(Clients(url, key, job_ids, options, results, events).run())


class Clients:
    """One process's clients, one task each (`watch`). `events` are the run's phases, set by the
    main process: "storm" (every gateway is about to be killed: a drop is the storm's, not an early
    close), "stop" (leave)."""

    def __init__(self, url: str, key: str, job_ids: list[str], options: dict, results, events):
        self.url, self.key, self.job_ids, self.options = url, key, job_ids, options
        self.results, self.events = results, events
        self.handshakes = asyncio.Semaphore(options["concurrency"])
        self.latencies: list[tuple[str, float, float, str]] = []  # (kind, committed, delay, process)
        self.completed: set[str] = set()  # jobs whose completion reached their client (event or state)
        self.opened: dict[str, int] = {}  # gateway process -> sockets it took at the first handshake
        self.failed: dict[str, int] = {}  # why first handshakes failed -> how many
        self.closed_early: list[int] = []  # close codes of sockets the server closed outside the storm
        self.pending = len(job_ids)  # first handshakes not yet done
        self.connected = asyncio.Event()
        self.open_now: set[str] = set()  # jobs whose socket is open
        self.finished: set[str] = set()  # jobs whose socket the server closed with 1000
        self.away: set[str] = set()  # jobs whose socket the storm dropped, not back yet
        self.back: dict[str, float] = {}  # job -> when its client had its state again after the storm
        self.refused = 0  # reconnection attempts that failed (the server not back yet, or too busy)

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.watch(job_id)) for job_id in self.job_ids]
        await self.connected.wait()
        self.results.put(("connected", self.opened, self.failed))
        while not self.events["stop"].is_set():
            if self.events["storm"].is_set():
                await self.report_storm()
                break
            await asyncio.sleep(0.2)
        while not self.events["stop"].is_set():
            await asyncio.sleep(0.2)
        early = list(self.closed_early)  # before the stop: the cancelled ones don't count
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.results.put(("done", self.latencies, sorted(self.completed), early))

    async def report_storm(self) -> None:
        """Once each socket the storm dropped is back (or has failed), say when they came back."""
        deadline = time.monotonic() + self.options["storm_timeout"]
        dropped = self.open_now | self.away  # open when the storm began: each dies with its process

        def unsettled() -> set[str]:
            return dropped - self.back.keys() - self.finished

        while unsettled() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        back = [self.back[job] for job in dropped if job in self.back]
        self.results.put(("storm", back, len(unsettled()), self.refused))

    def one_done(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            self.connected.set()

    async def handshake(self, job_id: str):
        from websockets.asyncio.client import connect

        async with self.handshakes:
            ws = await connect(
                f"{self.url}/ws/jobs/{job_id}/",
                subprotocols=["darkroom", f"darkroom.key.{self.key}"],
                compression=self.options["compression"],
                open_timeout=120,
                ping_interval=None,  # the server pings; answering is enough
                local_addr=(self.options["source"], 0),
            )
            try:
                state = json.loads(await ws.recv())  # the state on connect
            except BaseException:
                await ws.close()
                raise
        return ws, state

    async def watch(self, job_id: str) -> None:
        from websockets.exceptions import WebSocketException

        backoff = Backoff()
        first = True
        while True:
            try:
                ws, state = await self.handshake(job_id)
            except (OSError, TimeoutError, WebSocketException) as exc:
                if first:
                    reason = f"{type(exc).__name__}: {exc}"[:80]
                    self.failed[reason] = self.failed.get(reason, 0) + 1
                    return self.one_done()
                self.refused += 1
                await asyncio.sleep(backoff.next())
                continue
            process = ws.response.headers.get(PROCESS_HEADER, "?")
            if first:
                first = False
                self.opened[process] = self.opened.get(process, 0) + 1
                self.one_done()
            elif job_id in self.away:
                self.away.discard(job_id)
                self.back[job_id] = time.time()
            backoff.reset()
            self.receive(job_id, state, process)
            self.open_now.add(job_id)
            code = await self.follow(ws, job_id, process)
            self.open_now.discard(job_id)
            if code == 1000:
                self.finished.add(job_id)
                return
            if self.events["stop"].is_set():
                return
            if not self.events["storm"].is_set():
                self.closed_early.append(code)  # the server gave up on it before its job finished
                return
            self.away.add(job_id)
            await asyncio.sleep(backoff.next())

    async def follow(self, ws, job_id: str, process: str) -> int:
        """The socket's events until it closes; its close code (1006: the server's process died)."""
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed, OSError):
            async for frame in ws:
                self.receive(job_id, json.loads(frame), process)
        return ws.close_code or 1006

    def receive(self, job_id: str, event: dict, process: str) -> None:
        received = time.time()
        if event["job"]["status"] == "completed":
            self.completed.add(job_id)  # by its event, or by the state on reconnect
        stamp = COMMIT_STAMPS.get(event["type"])
        if stamp:
            committed = datetime.fromisoformat(event["job"][stamp]).timestamp()
            self.latencies.append((event["type"], committed, received - committed, process))


# --- The run --------------------------------------------------------------------------------


def percentiles(samples: list[float]) -> str:
    if len(samples) < 2:
        return f"{len(samples)} samples"
    cuts = [cut * 1000 for cut in statistics.quantiles(samples, n=100)]
    slowest = max(samples) * 1000
    return f"p50 {cuts[49]:.1f} ms, p95 {cuts[94]:.1f} ms, p99 {cuts[98]:.1f} ms, max {slowest:.1f} ms"


def start_clients(url: str, key: str, job_ids: list[str], args) -> tuple[list, object, dict]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    events = {"storm": context.Event(), "stop": context.Event()}
    share = -(-len(job_ids) // args.client_processes)
    processes = []
    for number, first in enumerate(range(0, len(job_ids), share)):
        options = {
            "concurrency": args.connect_concurrency,
            "compression": None if args.no_compression else "deflate",
            "source": f"127.0.0.{2 + number % args.source_addresses}",
            "storm_timeout": args.storm_timeout,
        }
        target_args = (url, key, job_ids[first : first + share], options, results, events)
        processes.append(context.Process(target=client_process, args=target_args, daemon=True))
    for process in processes:
        process.start()
    return processes, results, events


def say(what: str) -> None:
    load = " ".join(f"{figure:.1f}" for figure in os.getloadavg())
    print(f"{time.strftime('%H:%M:%S')} {what} (load average {load})", flush=True)


def collect(results, kind: str, processes: int, timeout: float) -> list[tuple]:
    """One message of `kind` from each client process."""
    found = []
    while len(found) < processes:
        message = results.get(timeout=timeout)
        assert message[0] == kind, f"expected {kind!r} from the clients, got {message[0]!r}"
        found.append(message[1:])
    return found


def warm_up(url: str, key: str, job_ids: list[str], args) -> None:
    """Open and close a few hundred sockets, so that first-use allocations count as baseline."""
    one_process = argparse.Namespace(**{**vars(args), "client_processes": 1})
    processes, results, events = start_clients(url, key, job_ids, one_process)
    collect(results, "connected", 1, timeout=120)
    events["stop"].set()
    collect(results, "done", 1, timeout=60)
    for process in processes:
        process.join()


class Gateways:
    """The gateway processes as this run sees them: their pids (None: a server it can't see into), and
    their figures from the files of PROMETHEUS_MULTIPROC_DIR or, for a server already running, /metrics."""

    def __init__(self, server_pid: int | None, metrics_dir: Path | None, url: str, token: str | None):
        self.server_pid, self.metrics_dir, self.url, self.token = server_pid, metrics_dir, url, token

    def pids(self) -> list[int]:
        return gateway_pids(self.server_pid) if self.server_pid else []

    def memory(self, field: str = "VmRSS") -> dict[str, int]:
        """Each gateway process's memory in KiB, by pid (as the handshake header says it)."""
        return {str(pid): memory_kib(pid, field) for pid in self.pids()}

    def metrics(self) -> dict[str, dict]:
        """Figures by pid, and "total"; {} where none can be read."""
        if self.metrics_dir is not None:
            from prometheus_client.multiprocess import MultiProcessCollector

            by_pid: dict[str, list[str]] = {}
            for path in self.metrics_dir.glob("*.db"):
                by_pid.setdefault(path.stem.rsplit("_", 1)[-1], []).append(str(path))
            every = [path for paths in by_pid.values() for path in paths]
            figures = {pid: figures_of(MultiProcessCollector.merge(paths)) for pid, paths in by_pid.items()}
            return {**figures, "total": figures_of(MultiProcessCollector.merge(every))}
        if self.token:
            return {"total": figures_of(scraped_families(self.url, self.token))}
        return {}


def run(args, url: str, key: str, job_ids: list[str], gateways: Gateways, stack: Stack | None) -> None:
    warm_up(url, key, job_ids[:WARM_UP], args)
    job_ids = job_ids[WARM_UP:]
    time.sleep(2)
    before = gateways.memory()
    scraped = {"start": gateways.metrics()}
    say(
        f"opening {len(job_ids)} WebSockets from {args.client_processes} processes on "
        f"{args.source_addresses} loopback addresses, to {args.processes} gateway processes"
    )
    opened = time.monotonic()
    processes, results, events = start_clients(url, key, job_ids, args)
    connected = collect(results, "connected", len(processes), timeout=1800)
    by_process: dict[str, int] = {}
    failures: dict[str, int] = {}
    for counts, reasons in connected:
        for reason, count in reasons.items():
            failures[reason] = failures.get(reason, 0) + count
        for process, count in counts.items():
            by_process[process] = by_process.get(process, 0) + count
    open_count, failed = sum(by_process.values()), sum(failures.values())
    say(f"{open_count} open, {failed} failed, in {time.monotonic() - opened:.1f} s")
    for reason, count in sorted(failures.items(), key=lambda item: -item[1]):
        print(f"  failed handshakes: {count} {reason}")
    time.sleep(3)  # let the servers settle
    after = gateways.memory()
    scraped["open"] = gateways.metrics()

    say(f"finishing jobs at {args.rate:g}/s for {args.duration:g} s")
    started = time.time()
    finished, took = drive(job_ids, args.rate, args.duration)
    time.sleep(2)  # the last events in flight
    scraped["flowed"] = gateways.metrics()
    inboxes_full = sender_losses()
    storm = None
    if args.storm and stack is not None:
        storm = reconnect_storm(args, stack, job_ids[len(finished) :], results, events, len(processes))
    events["stop"].set()  # every client leaves at once
    done = collect(results, "done", len(processes), timeout=300)
    for process in processes:
        process.join(timeout=30)
    scraped["end"] = gateways.metrics()
    latencies = [sample for part in done for sample in part[0]]
    completed = {job_id for part in done for job_id in part[1]}
    early = [code for part in done for code in part[2]]

    memory = memory_per_socket(before, after, by_process)
    steady = [sample for sample in latencies if sample[1] < started + took]
    never = len(set(finished) - completed)
    report(args, open_count, failed, by_process, memory, len(finished), took, steady, never)
    worst = report_windows(steady, started)
    report_server(scraped, list(by_process))
    print(f"sockets the server closed early: {len(early)} {sorted(set(early)) if early else ''}")
    print(f"events a gateway's inbox in Redis could not take (it was not reading): {inboxes_full:.0f}")
    if storm is not None:
        storm["never"] = len(set(storm.pop("finished")) - completed)
        storm["inboxes full"] = sender_losses() - inboxes_full
        report_storm(storm)
    verdicts(args, open_count, failed, memory, len(finished) / took, worst, never, len(early), storm)


def reconnect_storm(args, stack: Stack, job_ids: list[str], results, events, client_processes: int) -> dict:
    """Every gateway process killed at once and started again while jobs go on finishing; clients
    come back with live.js's backoff. What it cost and how long until everyone was back."""
    say(f"reconnect storm: killing every gateway process; jobs go on finishing for {args.storm_jobs_for:g} s")
    events["storm"].set()
    driven: dict = {}

    def drive_through_the_storm() -> None:
        try:
            driven["finished"] = drive(job_ids, args.rate, args.storm_jobs_for)[0]
        except Exception as exc:  # else no job would count as finished, and none as lost: say so
            driven["error"] = f"{type(exc).__name__}: {exc}"

    driver = threading.Thread(target=drive_through_the_storm, daemon=True)
    killed = time.time()
    error = None
    try:
        stack.restart_server()
        driver.start()
        pids = stack.wait_for_gateways()
        say(f"{len(pids)} gateway processes started again; waiting for every client to be back")
    except RuntimeError as exc:  # the clients still report, as failures: the run's figures still print
        error = str(exc)
        say(f"the gateways did not come back: {error}")
    reports = collect(results, "storm", client_processes, timeout=args.storm_timeout + 120)
    if driver.ident is not None:  # started
        driver.join()
    back = [when - killed for report in reports for when in report[0]]
    peaks = {}
    for pid in gateway_pids(stack.server_pid) if error is None else ():
        with contextlib.suppress(OSError, RuntimeError):
            peaks[str(pid)] = memory_kib(pid, "VmHWM")
    return {
        "error": error,
        "back": len(back),
        "until all back": max(back, default=0.0),
        "failures": sum(report[1] for report in reports),
        "refused attempts": sum(report[2] for report in reports),
        "peak KiB": peaks,
        "finished": driven.get("finished", []),
        "driver error": driven.get("error"),
    }


def memory_per_socket(before: dict, after: dict, sockets: dict[str, int]) -> dict[str, tuple[int, int, int]]:
    """By pid and "total": (KiB before, KiB with the sockets open, sockets)."""
    figures = {pid: (before.get(pid, 0), after[pid], sockets.get(pid, 0)) for pid in after}
    if figures:
        figures["total"] = tuple(sum(figure[i] for figure in figures.values()) for i in range(3))  # type: ignore[assignment]
    return figures


def kib_per_socket(figure: tuple[int, int, int]) -> float | None:
    before, after, sockets = figure
    return (after - before) / sockets if sockets else None


def report(args, open_count, failed, by_process, memory, finished, took, latencies, never) -> None:
    compression = "none" if args.no_compression else "permessage-deflate offered, as browsers do"
    print(f"\n--- bench-ws: {args.processes} uvicorn process(es) on one port, PostgreSQL, Redis ---")
    print(f"serve flags:         {args.serve_flags or '(uvicorn defaults)'}")
    print(f"client compression:  {compression}")
    print(
        f"clients:             {args.client_processes} processes, {args.source_addresses} loopback addresses"
    )
    print(f"connections:         {open_count} open ({failed} failed) of {args.connections}")
    for pid, count in sorted(by_process.items()):
        print(f"  gateway {pid}: {count} sockets")
    for pid, figure in sorted(memory.items(), key=lambda item: item[0] == "total"):
        per_socket = kib_per_socket(figure)
        name = "all gateways" if pid == "total" else f"gateway {pid}"
        shown = f"{per_socket:.1f} KiB per socket" if per_socket is not None else "no sockets"
        print(
            f"server memory, {name}: {figure[0] / 1024:.0f} MiB before, "
            f"{figure[1] / 1024:.0f} MiB with them open = {shown}"
        )
    print(
        f"jobs finished:       {finished} in {took:.1f} s = {finished / took:.1f} jobs/s (claim + complete)"
    )
    print("status commit -> client receipt (from the job's started_at / finished_at):")
    for kind in COMMIT_STAMPS:
        samples = [delay for sample_kind, _, delay, _ in latencies if sample_kind == kind]
        print(f"  {kind:18s} {percentiles(samples)} ({len(samples)} events)")
    print(f"completed events never received: {never}")


def report_windows(latencies: list[tuple], started: float) -> float | None:
    """By the WINDOW of the run their change was committed in: both kinds of event together, the
    completed ones alone, and each gateway process's p99. Returns the worst completed-event p99."""
    windows: dict[int, list[tuple]] = {}
    for sample in latencies:
        windows.setdefault(max(0, int((sample[1] - started) // WINDOW)), []).append(sample)
    print(f"per {WINDOW} s window of commits:")
    worst = None
    for index in sorted(windows):
        samples = windows[index]
        completed = [delay for kind, _, delay, _ in samples if kind == "job.completed"]
        by_process: dict[str, list[float]] = {}
        for _, _, delay, process in samples:
            by_process.setdefault(process, []).append(delay)
        print(
            f"  {index * WINDOW:4d}-{(index + 1) * WINDOW:<4d} s  "
            f"all events: {percentiles([sample[2] for sample in samples])}"
        )
        if len(completed) > 1:
            p99 = quantile(completed, 0.99)
            worst = p99 if worst is None else max(worst, p99)
            print(f"             completed: p99 {p99 * 1000:.1f} ms ({len(completed)} events)")
        shares = ", ".join(
            f"{process} p99 {quantile(delays, 0.99) * 1000:.1f} ms ({len(delays)})"
            if len(delays) > 1
            else process
            for process, delays in sorted(by_process.items())
        )
        print(f"             by gateway process: {shares}")
    if worst is not None:
        print(f"  worst window completed-event p99: {worst * 1000:.1f} ms")
    return worst


# --- The servers' own figures ----------------------------------------------------------------


def scraped_families(url: str, token: str):
    """A running server's /metrics, parsed."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    request = urllib.request.Request(
        url.replace("ws://", "http://", 1) + "/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return list(text_string_to_metric_families(response.read().decode()))


def figures_of(families) -> dict:
    """Garbage-collector pauses and losses from metric families."""
    figures = {"buckets": {}, "longest": 0.0, "dropped": {}}  # buckets: (generation, bound) -> count
    for family in families:
        for sample in family.samples:
            if sample.name == "darkroom_gc_pause_seconds_bucket":
                bucket = (sample.labels["generation"], float(sample.labels["le"]))
                figures["buckets"][bucket] = figures["buckets"].get(bucket, 0.0) + sample.value
            elif sample.name == "darkroom_gc_longest_pause_seconds":
                figures["longest"] = max(figures["longest"], sample.value)
            elif sample.name == "darkroom_ws_dropped_total":
                figures["dropped"][sample.labels["reason"]] = sample.value
    return figures


def gc_pauses_between(first: dict | None, last: dict, generations=("0", "1", "2")) -> str:
    """How many collections of `generations`, and the bucket bounds of their p99 and longest."""
    first = first or {"buckets": {}}
    below: dict[float, float] = {}  # bound -> pauses no longer than it
    for (generation, bound), count in last["buckets"].items():
        if generation in generations:
            below[bound] = below.get(bound, 0.0) + count - first["buckets"].get((generation, bound), 0.0)
    count = below.get(float("inf"), 0.0)
    if not count:
        return "none"
    p99 = min(bound for bound, within in below.items() if within >= 0.99 * count)
    longest = min(bound for bound, within in below.items() if within >= count)
    return f"{count:.0f}, p99 <= {p99 * 1000:g} ms, longest <= {longest * 1000:g} ms"


def report_server(scraped: dict, gateways: list[str]) -> None:
    """GC pauses of each of `gateways` (pids) and of all, and the losses the servers counted."""
    if not scraped["open"]:
        print("server GC pauses:    not read (give --metrics-token for a server already running)")
        return
    print("server GC pauses (gateway.live.gc_pauses; bounds are the histogram's buckets):")
    for pid in [*sorted(set(gateways) & set(scraped["flowed"])), "total"]:
        print(f"  {'all gateways' if pid == 'total' else 'gateway ' + pid}:")
        for phase, (first, last) in {
            "while the sockets opened": (scraped["start"].get(pid), scraped["open"][pid]),
            "while events flowed": (scraped["open"].get(pid), scraped["flowed"][pid]),
        }.items():
            print(f"    {phase}: {gc_pauses_between(first, last)}")
            print(f"      of which full collections: {gc_pauses_between(first, last, generations=('2',))}")
        print(f"    longest: {scraped['flowed'][pid]['longest'] * 1000:.1f} ms")
    dropped = scraped["end"]["total"]["dropped"]
    print(f"live events dropped (darkroom_ws_dropped_total): {dict(dropped) or 'none'}")


def report_storm(storm: dict) -> None:
    peaks = storm["peak KiB"]
    print(
        "reconnect storm (every gateway process killed and started again; clients back with "
        "live.js's backoff):"
    )
    print(
        f"  clients back with their job's state: {storm['back']}, in {storm['until all back']:.1f} s for all"
    )
    print(f"  clients not back within the storm's timeout (failures): {storm['failures']}")
    print(f"  reconnection attempts refused or failed on the way (retried): {storm['refused attempts']}")
    print(f"  completions during the storm that reached no client: {storm['never']}")
    print(f"  events for the killed gateways' inboxes, which nobody read again: {storm['inboxes full']:.0f}")
    shown = ", ".join(f"{pid} {kib / 1024:.0f} MiB" for pid, kib in sorted(peaks.items()))
    print(f"  peak memory of each new gateway process: {shown}")
    if storm["error"]:
        print(f"  the gateways did not come back: {storm['error']}")
    if storm["driver error"]:
        print(f"  the jobs stopped finishing during the storm: {storm['driver error']}")


def verdicts(args, open_count, failed, memory, rate, worst, never, early, storm) -> None:
    """One line a goal: PASS or FAIL and the figures it was judged on."""
    per_socket = kib_per_socket(memory["total"]) if memory else None
    lines = [
        (
            open_count >= GOAL_SOCKETS and failed == 0,
            f"{GOAL_SOCKETS:,} sockets open at once, 0 failed handshakes: "
            f"{open_count:,} open, {failed} failed",
        ),
        (
            per_socket is not None and per_socket <= GOAL_KIB_PER_SOCKET,
            f"server memory <= {GOAL_KIB_PER_SOCKET} KiB a socket over all gateway processes: "
            + (f"{per_socket:.1f} KiB" if per_socket is not None else "not measured"),
        ),
        (
            worst is not None and worst * 1000 <= GOAL_P99_MS and rate >= GOAL_RATE * 0.99,
            f"completed-event p99 <= {GOAL_P99_MS} ms in every {WINDOW} s window at {GOAL_RATE} jobs/s: "
            + (f"worst {worst * 1000:.1f} ms" if worst is not None else "no window")
            + f" at {rate:.1f} jobs/s",
        ),
        (never == 0 and early == 0, f"0 events never received, 0 sockets closed early: {never}, {early}"),
    ]
    if storm is not None:
        peak_mib = max(storm["peak KiB"].values(), default=0) / 1024
        lines.append(
            (
                storm["error"] is None
                and storm["driver error"] is None
                and storm["until all back"] <= GOAL_STORM_SECONDS
                and storm["failures"] == 0
                and storm["never"] == 0
                and peak_mib <= GOAL_PROCESS_MIB,
                f"storm: every client back with its state within {GOAL_STORM_SECONDS} s, 0 failures, "
                f"no process over {GOAL_PROCESS_MIB} MiB: {storm['until all back']:.1f} s, "
                f"{storm['failures']} failures, {storm['never']} completions lost, "
                f"largest process {peak_mib:.0f} MiB",
            )
        )
    else:
        lines.append((False, "storm: not run"))
    print("\n--- goals (issue 27) ---")
    for passed, line in lines:
        print(f"{'PASS' if passed else 'FAIL'}  {line}")


def quantile(samples: list[float], cut: float) -> float:
    return statistics.quantiles(samples, n=100)[round(cut * 100) - 1]


def main(argv=None) -> None:
    args = parse_args(argv)
    raise_fd_limit()
    sys.path.insert(0, str(ROOT))
    if args.url:
        args.serve_flags = f"(the server already running at {args.url})"
        setup_django(os.environ)
        key, job_ids = create_jobs(WARM_UP + args.connections)
        url = args.url.rstrip("/")
        run(args, url, key, job_ids, Gateways(args.server_pid, None, url, args.metrics_token), None)
        return
    with Stack(args.serve_flags, args.processes) as stack:
        setup_django(stack.env)
        key, job_ids = create_jobs(WARM_UP + args.connections)
        gateways = Gateways(stack.server_pid, stack.metrics_dir, stack.url, METRICS_TOKEN)
        run(args, stack.url, key, job_ids, gateways, stack)


if __name__ == "__main__":
    main()
