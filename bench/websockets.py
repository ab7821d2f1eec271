"""`make bench-ws`: many WebSocket clients watching jobs while jobs complete at a steady rate.

What it measures, on one uvicorn server process of the full stack (PostgreSQL, a private
Redis as the channel layer, the server's flags as printed):

- memory: the server's resident memory with N sockets open on `WS /ws/jobs/{id}/` (each
  authenticated with an API key and holding its job's state), less its memory before,
  divided by N;
- latency: from the moment a job's status change is committed (the `started_at` and
  `finished_at` the change stamps, just before its UPDATE commits) to the moment a client
  receives the event, for `job.processing` and `job.completed`: over the run, and in each
  WINDOW seconds of it (by commit time), so that one bad stretch can't hide in the total;
- the server's garbage-collector pauses, from its /metrics (gateway.live.gc_pauses): count, p99
  (as the histogram's bucket bound) and longest, while the sockets open and while events flow;
- losses: `darkroom_ws_dropped_total{reason}` and events never received.

Jobs change through processing.jobs.lifecycle.claim and .complete on real Job rows, the code path
workers use, driven from this process through the Django ORM at `--rate` jobs per second;
no image is processed (a worker's image work is not what this measures). Events travel
as in production: processing.events in this process, Redis, the server's channel layer.
Clients run in `--client-processes` processes (asyncio + the websockets library).

    python -m bench.websockets                       # 10,000 clients, 100 jobs/s for 30 s
    python -m bench.websockets -n 2000 --serve-flags "--ws websockets"
    python -m bench.websockets --url ws://127.0.0.1:8000 --server-pid 1234   # a running server
                                        # (DATABASE_URL and REDIS_URL must be the server's)
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from bench.stack import StartedOrCleanedUp, free_port
from project.serving import UVICORN_FLAGS

ROOT = Path(__file__).resolve().parent.parent
FD_LIMIT = 20_000
METRICS_TOKEN = f"bench-ws-{uuid.uuid4().hex}"
WORKER = "bench-ws:driver"
WARM_UP = 300  # sockets opened and closed before the baseline is measured
WINDOW = 10  # seconds of commits per latency window
# The field each event's change stamps just before its UPDATE commits.
COMMIT_STAMPS = {"job.processing": "started_at", "job.completed": "finished_at"}
DEFAULT_SERVE_FLAGS = shlex.join(UVICORN_FLAGS)  # every gateway's (project/serving.py)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.websockets", description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--connections", type=int, default=10_000, help="concurrent WebSocket clients")
    parser.add_argument("--rate", type=float, default=100, help="jobs completed per second")
    parser.add_argument("--duration", type=float, default=30, help="seconds of completing jobs")
    parser.add_argument("--client-processes", type=int, default=2, help="processes the clients run in")
    parser.add_argument(
        "--connect-concurrency", type=int, default=100, help="handshakes in flight per process"
    )
    parser.add_argument("--serve-flags", default=DEFAULT_SERVE_FLAGS, help="extra uvicorn flags")
    parser.add_argument(
        "--no-compression", action="store_true", help="clients don't offer permessage-deflate"
    )
    parser.add_argument("--url", help="a running server's ws:// base URL (else one is started)")
    parser.add_argument("--server-pid", type=int, help="with --url: the server process, for its memory")
    parser.add_argument("--metrics-token", help="with --url: the server's METRICS_TOKEN, for its GC pauses")
    return parser.parse_args(argv)


def raise_fd_limit() -> int:
    """As many open files as allowed, up to FD_LIMIT; children (the server) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_LIMIT if hard == resource.RLIM_INFINITY else min(FD_LIMIT, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


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


# --- The stack: a private Redis, a fresh database, one server ---------------------------


class Stack(StartedOrCleanedUp):
    """A private redis-server, a fresh PostgreSQL database and one uvicorn server; all removed on exit."""

    def __init__(self, serve_flags: str):
        self.name = f"darkroom_benchws_{uuid.uuid4().hex[:8]}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}_"))
        self.serve_flags = serve_flags
        self.processes: dict[str, subprocess.Popen] = {}
        postgres = urlparse(os.getenv("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres")
        self.admin_dsn = postgres._replace(path="/postgres").geturl()
        self.redis_port, self.port = free_port(), free_port()
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
            "METRICS_TOKEN": METRICS_TOKEN,  # to read the server's garbage-collector pauses
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
        server = [sys.executable, "-m", "uvicorn", "project.asgi:application", "--host", "127.0.0.1"]
        server += [
            "--port",
            str(self.port),
            "--no-access-log",
            "--backlog",
            "4096",
            "--forwarded-allow-ips",
            "",
        ]
        self.spawn("server", [*server, *shlex.split(self.serve_flags)])
        wait_until(lambda: reachable("127.0.0.1", self.port), "the server")

    def __exit__(self, *exc_info) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        import psycopg

        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def spawn(self, name: str, command: list[str]) -> None:
        with open(self.workdir / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )

    @property
    def server_pid(self) -> int:
        return self.processes["server"].pid


# --- Jobs, through the code path workers use ----------------------------------------------


def setup_django(env: dict) -> None:
    os.environ.update(
        {k: v for k, v in env.items() if k in ("DATABASE_URL", "REDIS_URL", "DARKROOM_VAR_DIR")}
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()


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


def drive(job_ids: list[str], rate: float, duration: float) -> tuple[int, float]:
    """Finish jobs at `rate` per second for `duration` seconds; returns (finished, seconds taken)."""
    count = min(len(job_ids), int(rate * duration))
    started = time.monotonic()
    for number, job_id in enumerate(job_ids[:count]):
        delay = started + number / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        finish(job_id)
    return count, time.monotonic() - started


# --- Clients ------------------------------------------------------------------------------


def client_process(url: str, key: str, job_ids: list[str], options: dict, results, stop) -> None:
    raise_fd_limit()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run_clients(url, key, job_ids, options, results, stop))


async def run_clients(url: str, key: str, job_ids: list[str], options: dict, results, stop) -> None:
    latencies = {"job.processing": [], "job.completed": []}
    handshakes = asyncio.Semaphore(options["concurrency"])
    connected = asyncio.Event()
    counts = {"open": 0, "failed": 0, "pending": len(job_ids)}

    def one_done():
        counts["pending"] -= 1
        if counts["pending"] == 0:
            connected.set()

    tasks = [
        asyncio.create_task(watch(url, key, job_id, options, handshakes, counts, one_done, latencies))
        for job_id in job_ids
    ]
    await connected.wait()
    results.put(("connected", counts["open"], counts["failed"]))
    while not stop.is_set():
        await asyncio.sleep(0.2)
    early = counts.get("closed early", [])  # before the stop: the cancelled ones don't count
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    results.put(("latencies", {**latencies, "closed early": early}))


async def watch(url, key, job_id, options, handshakes, counts, one_done, latencies) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import WebSocketException

    try:
        async with handshakes:
            ws = await connect(
                f"{url}/ws/jobs/{job_id}/",
                subprotocols=["darkroom", f"darkroom.key.{key}"],
                compression=options["compression"],
                open_timeout=120,
                ping_interval=None,  # the server pings; answering is enough
            )
            await ws.recv()  # the state on connect
    except (OSError, TimeoutError, WebSocketException):
        counts["failed"] += 1
        one_done()
        return
    counts["open"] += 1
    one_done()
    async with ws:
        async for frame in ws:
            received = time.time()
            event = json.loads(frame)
            stamp = COMMIT_STAMPS.get(event["type"])
            if stamp:
                committed = datetime.fromisoformat(event["job"][stamp]).timestamp()
                latencies[event["type"]].append((committed, received - committed))
    if ws.close_code != 1000:  # the server gave up on the socket before its job finished
        counts.setdefault("closed early", []).append(ws.close_code)


# --- The run --------------------------------------------------------------------------------


def percentiles(samples: list[float]) -> str:
    if len(samples) < 2:
        return f"{len(samples)} samples"
    cuts = [cut * 1000 for cut in statistics.quantiles(samples, n=100)]
    slowest = max(samples) * 1000
    return f"p50 {cuts[49]:.1f} ms, p95 {cuts[94]:.1f} ms, p99 {cuts[98]:.1f} ms, max {slowest:.1f} ms"


def start_clients(url: str, key: str, job_ids: list[str], args) -> tuple[list, object, object]:
    context = multiprocessing.get_context("spawn")
    results, stop = context.Queue(), context.Event()
    options = {
        "concurrency": args.connect_concurrency,
        "compression": None if args.no_compression else "deflate",
    }
    share = -(-len(job_ids) // args.client_processes)
    processes = [
        context.Process(
            target=client_process,
            args=(url, key, job_ids[i : i + share], options, results, stop),
            daemon=True,
        )
        for i in range(0, len(job_ids), share)
    ]
    for process in processes:
        process.start()
    return processes, results, stop


def say(what: str) -> None:
    load = " ".join(f"{figure:.1f}" for figure in os.getloadavg())
    print(f"{time.strftime('%H:%M:%S')} {what} (load average {load})", flush=True)


def collect(results, processes: int, timeout: float) -> list[tuple]:
    """One message from each client process."""
    return [results.get(timeout=timeout) for _ in range(processes)]


def warm_up(url: str, key: str, job_ids: list[str], args) -> None:
    """Open and close a few hundred sockets, so that first-use allocations count as baseline."""
    one_process = argparse.Namespace(**{**vars(args), "client_processes": 1})
    processes, results, stop = start_clients(url, key, job_ids, one_process)
    collect(results, 1, timeout=120)
    stop.set()
    collect(results, 1, timeout=60)
    for process in processes:
        process.join()


def run(args, url: str, server_pid: int | None, key: str, job_ids: list[str]) -> None:
    warm_up(url, key, job_ids[:WARM_UP], args)
    job_ids = job_ids[WARM_UP:]
    time.sleep(2)
    before = rss_kib(server_pid) if server_pid else None
    scraped = {"start": server_metrics(url, args.metrics_token)}
    say(f"opening {len(job_ids)} WebSockets from {args.client_processes} processes")
    opened = time.monotonic()
    processes, results, stop = start_clients(url, key, job_ids, args)
    connected = collect(results, len(processes), timeout=900)
    open_count, failed = sum(c[1] for c in connected), sum(c[2] for c in connected)
    say(f"{open_count} open, {failed} failed, in {time.monotonic() - opened:.1f} s")
    time.sleep(3)  # let the server settle
    after = rss_kib(server_pid) if server_pid else None
    scraped["open"] = server_metrics(url, args.metrics_token)

    say(f"finishing jobs at {args.rate:g}/s for {args.duration:g} s")
    started = time.time()
    finished, took = drive(job_ids, args.rate, args.duration)
    time.sleep(2)  # the last events in flight
    scraped["flowed"] = server_metrics(url, args.metrics_token)
    stop.set()  # every client leaves at once
    latencies = {"job.processing": [], "job.completed": [], "closed early": []}
    for _, part in collect(results, len(processes), timeout=120):
        for kind, samples in part.items():
            latencies[kind].extend(samples)
    early = latencies.pop("closed early")
    for process in processes:
        process.join(timeout=30)
    scraped["end"] = server_metrics(url, args.metrics_token)

    report(args, open_count, failed, before, after, finished, took, latencies)
    report_windows(latencies, started)
    report_server(scraped)
    print(f"sockets the server closed early: {len(early)} {sorted(set(early)) if early else ''}")


def report(args, open_count, failed, before, after, finished, took, latencies) -> None:
    compression = "none" if args.no_compression else "permessage-deflate offered, as browsers do"
    print("\n--- bench-ws: one uvicorn process, full stack (PostgreSQL, Redis channel layer) ---")
    print(f"serve flags:         {args.serve_flags or '(uvicorn defaults)'}")
    print(f"client compression:  {compression}")
    print(f"connections:         {open_count} open ({failed} failed) of {args.connections}")
    if before is not None and open_count:
        per_connection = (after - before) / open_count
        print(f"server memory:       {before / 1024:.0f} MiB before, {after / 1024:.0f} MiB with them open")
        print(f"                     = {per_connection:.1f} KiB per connection")
    print(
        f"jobs finished:       {finished} in {took:.1f} s = {finished / took:.1f} jobs/s (claim + complete)"
    )
    print("status commit -> client receipt (from the job's started_at / finished_at):")
    for kind, samples in latencies.items():
        print(f"  {kind:18s} {percentiles([delay for _, delay in samples])} ({len(samples)} events)")
    print(f"completed events never received: {finished - len(latencies['job.completed'])}")


def report_windows(latencies: dict, started: float) -> None:
    """Both kinds of event together, by the WINDOW of the run their change was committed in."""
    windows: dict[int, list[float]] = {}
    for committed, delay in (sample for samples in latencies.values() for sample in samples):
        windows.setdefault(max(0, int((committed - started) // WINDOW)), []).append(delay)
    print(f"per {WINDOW} s window of commits (processing and completed events):")
    for index in sorted(windows):
        print(f"  {index * WINDOW:4d}-{(index + 1) * WINDOW:<4d} s  {percentiles(windows[index])}")
    worst = max((quantile(delays, 0.99) for delays in windows.values() if len(delays) > 1), default=None)
    if worst is not None:
        print(f"  worst window p99: {worst * 1000:.1f} ms")


# --- The server's own figures, from its /metrics -------------------------------------------------


def server_metrics(url: str, token: str | None) -> dict | None:
    """The server's garbage-collector histogram and losses, or None without a metrics token."""
    if not token:
        return None
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    request = urllib.request.Request(
        url.replace("ws://", "http://", 1) + "/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    figures = {"buckets": {}, "longest": 0.0, "dropped": {}}  # buckets: (generation, bound) -> count
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "darkroom_gc_pause_seconds_bucket":
                bucket = (sample.labels["generation"], float(sample.labels["le"]))
                figures["buckets"][bucket] = figures["buckets"].get(bucket, 0.0) + sample.value
            elif sample.name == "darkroom_gc_longest_pause_seconds":
                figures["longest"] = max(figures["longest"], sample.value)
            elif sample.name == "darkroom_ws_dropped_total":
                figures["dropped"][sample.labels["reason"]] = sample.value
    return figures


def gc_pauses_between(first: dict, last: dict, generations=("0", "1", "2")) -> str:
    """How many collections of `generations`, and the bucket bounds of their p99 and longest."""
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


def report_server(scraped: dict) -> None:
    if scraped["start"] is None:
        print("server GC pauses:    not read (give --metrics-token for a server already running)")
        return
    print("server GC pauses (gateway.live.gc_pauses; bounds are the histogram's buckets):")
    for phase, (first, last) in {
        "while the sockets opened": (scraped["start"], scraped["open"]),
        "while events flowed": (scraped["open"], scraped["flowed"]),
        "while the rest left at once": (scraped["flowed"], scraped["end"]),
    }.items():
        print(f"  {phase}: {gc_pauses_between(first, last)}")
        print(f"    of which full collections: {gc_pauses_between(first, last, generations=('2',))}")
    print(f"  longest since the server started: {scraped['end']['longest'] * 1000:.1f} ms")
    dropped = scraped["end"]["dropped"]
    print(f"live events dropped (darkroom_ws_dropped_total): {dict(dropped) or 'none'}")


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
        run(args, args.url.rstrip("/"), args.server_pid, key, job_ids)
        return
    args.metrics_token = METRICS_TOKEN
    with Stack(args.serve_flags) as stack:
        setup_django(stack.env)
        key, job_ids = create_jobs(WARM_UP + args.connections)
        run(args, stack.url, stack.server_pid, key, job_ids)


if __name__ == "__main__":
    main()
