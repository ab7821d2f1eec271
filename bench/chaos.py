"""`make chaos`: the full stack through the faults it promises to survive, one fault per run of jobs.

The stack runs as a deployment's does (docs/deployment.md): the gateway, `make worker` (supervised
worker processes) and `make requeue`. For each fault, clients submit a few hundred distinct images
(retrying a 503, as a client of a queue should) while the fault strikes: a worker process or a
worker's main process SIGKILLed, RabbitMQ stopped and started, Redis killed and started,
PostgreSQL stopped and started, the S3 server (SeaweedFS: files live there) killed and restarted. Then
every accepted job is followed until it ends. Per fault it prints jobs accepted, completed,
failed (with their reasons) and stuck, the 503s and how fast they came, and any other 5xx.

The promise: every accepted job completes or fails with a reason, none is stuck once the fault
is over, and the only 5xx are fast 503s. The exit status says whether it held.

    python -m bench.chaos [--jobs 300] [--fault postgres-restart ...]
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from urllib.parse import urlparse

import httpx
import psycopg
from PIL import Image

from bench.private_services import as_user, start_redis, stop_redis
from bench.s3 import SeaweedServer
from bench.stack import MANAGE, Stack, rabbitmqctl
from project import config

OUTAGE_SECONDS = 4  # how long a stopped service stays down by default (--outage)
SETTLE_SECONDS = 120  # after the fault, how long accepted jobs get to end before they count as stuck
# The longest a submission may wait on the broker before its 503 (the stack's setting, from this
# environment), plus half a second for the request's own work: a 503 slower than this kept a client
# waiting for nothing.
FAST_503_MS = (config.read("BROKER_PUBLISH_TIMEOUT") + 0.5) * 1000
GIVE_UP_SECONDS = 90  # a client retrying 503s stops after this long
SUBMIT_RATE = 20  # images per second while the fault lasts


# --- the faults ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """What the faults strike: the stack, and the S3 server its files live on."""

    stack: Stack
    s3: SeaweedServer
    outage: float = OUTAGE_SECONDS  # how long a stopped service stays down


BUSY_WORKER = "SELECT worker_id FROM processing_job WHERE status = 'processing' LIMIT 1"


def busy_worker_pid(stack: Stack, timeout: float = 30) -> int:
    """The pid of a worker process that is processing a job now (the pid in the job's worker id)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT worker_id FROM processing_job WHERE status = 'processing' LIMIT 1"
            ).fetchone()
            if row:
                return int(row[0].split(":")[1])  # host:pid:thread
            time.sleep(0.05)
    raise RuntimeError(f"no job was being processed within {timeout}s")


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state


def kill_a_worker_process(target: Target) -> None:
    os.kill(busy_worker_pid(target.stack), signal.SIGKILL)


def kill_a_worker_main_process(target: Target) -> None:
    os.kill(parent_of(busy_worker_pid(target.stack)), signal.SIGKILL)


def restart_rabbitmq(target: Target) -> None:
    rabbitmqctl("stop_app")
    try:
        time.sleep(target.outage)
    finally:
        rabbitmqctl("start_app")


def redis_address(stack: Stack) -> tuple[str, int]:
    url = urlparse(stack.env["REDIS_URL"])
    return url.hostname or "127.0.0.1", url.port or 6379


def restart_redis(target: Target) -> None:
    host, port = redis_address(target.stack)
    stop_redis(host, port)
    try:
        time.sleep(target.outage)
    finally:
        start_redis(host, port)


def postgres_stop_and_start(stack: Stack) -> tuple[list[str], list[str]]:
    """Commands that stop and start the stack's PostgreSQL: `pg_ctl` of its PGDATA when it names
    one (a private server, bench/private_services.py), else `pg_ctlcluster` of the machine's."""
    if data := stack.env.get("PGDATA"):
        pg_ctl = as_user("postgres", ["pg_ctl", "-D", data, "-s", "-w"])
        # -l: a server started without a log file writes to pg_ctl's output, which we would wait on.
        return [*pg_ctl, "stop", "-m", "fast"], [*pg_ctl, "start", "-l", f"{data}/server.log"]
    (version,) = os.listdir("/etc/postgresql")
    cluster = ["pg_ctlcluster", version, "main"]
    return [*cluster, "stop", "-m", "fast"], [*cluster, "start"]


def restart_postgres(target: Target) -> None:
    stop, start = postgres_stop_and_start(target.stack)
    subprocess.run(stop, check=True, capture_output=True)
    try:
        time.sleep(target.outage)
    finally:
        subprocess.run(start, check=True, capture_output=True)


def restart_s3(target: Target) -> None:
    target.s3.stop()
    try:
        time.sleep(target.outage)
    finally:
        target.s3.restart()


FAULTS: dict[str, Callable[[Target], None]] = {
    "worker-kill": kill_a_worker_process,
    "worker-main-kill": kill_a_worker_main_process,
    "rabbitmq-restart": restart_rabbitmq,
    "redis-restart": restart_redis,
    "postgres-restart": restart_postgres,
    "s3-restart": restart_s3,
}


# --- one run ------------------------------------------------------------------------------------
@dataclass
class Outcome:
    fault: str
    fast_503_ms: float = FAST_503_MS  # a 503 slower than this is a problem
    accepted: list[str] = field(default_factory=list)
    not_accepted: int = 0  # gave up after GIVE_UP_SECONDS of 503s
    unavailable_ms: list[float] = field(default_factory=list)  # each 503's answer time
    errors: Counter = field(default_factory=Counter)  # other 5xx by status, transport errors by name
    ends: dict[str, dict] = field(default_factory=dict)  # job id -> the job as it ended
    fault_error: str = ""
    seconds: float = 0.0  # from the first submission until every accepted job ended, or settling ran out

    @property
    def completed(self) -> int:
        return sum(1 for job in self.ends.values() if job["status"] == "completed")

    @property
    def failed(self) -> Counter:
        return Counter(
            (job.get("error") or {}).get("code") or "no reason"
            for job in self.ends.values()
            if job["status"] == "failed"
        )

    @property
    def stuck(self) -> int:
        return len(self.accepted) - len(self.ends)

    @property
    def slow_503s(self) -> int:
        return sum(1 for ms in self.unavailable_ms if ms > self.fast_503_ms)

    def problems(self) -> list[str]:
        found = []
        if self.stuck:
            found.append(f"{self.stuck} accepted jobs never ended")
        if self.failed["no reason"]:
            found.append(f"{self.failed['no reason']} jobs failed without a reason")
        if self.errors:
            found.append(f"errors other than 503: {dict(self.errors)}")
        if self.slow_503s:
            found.append(f"{self.slow_503s} 503s took over {self.fast_503_ms:.0f} ms")
        if self.not_accepted:
            found.append(f"{self.not_accepted} images were never accepted")
        if self.fault_error:
            found.append(f"the fault itself failed: {self.fault_error}")
        return found


def distinct_jpeg(index: int) -> bytes:
    """A small photo-like JPEG of its own: no two jobs share an input (nor a cached result)."""
    image = Image.linear_gradient("L").resize((320, 240)).convert("RGB")
    image.putpixel((index % 320, index // 320 % 240), (index % 256, 0, 255))
    buffer = BytesIO()
    image.save(buffer, "JPEG", quality=85, comment=f"chaos {index}".encode())
    return buffer.getvalue()


class Client:
    """Submits images as a well-behaved client: a 503 is retried after a short pause."""

    def __init__(self, base_url: str, outcome: Outcome):
        # Idle connections are dropped before the server's keep-alive timeout (uvicorn: 5 s) can close
        # one just as a request goes out on it: that race is the client's, and no fault of the stack's.
        limits = httpx.Limits(keepalive_expiry=2)
        self.http = httpx.Client(base_url=base_url, timeout=30, limits=limits)
        self.outcome = outcome
        self.lock = threading.Lock()

    def submit(self, image: bytes) -> None:
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                response = self.http.post("/api/v1/process/grayscale", files={"image": ("chaos.jpg", image)})
            except httpx.HTTPError as exc:
                self.record_error(exc.__class__.__name__)
                time.sleep(0.5)
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000
            if response.status_code == 202:
                with self.lock:
                    self.outcome.accepted.append(response.json()["job_id"])
                return
            if response.status_code == 503:
                with self.lock:
                    self.outcome.unavailable_ms.append(elapsed_ms)
                time.sleep(0.5)
                continue
            self.record_error(f"{response.status_code} {response.text[:200]}")
            return
        with self.lock:
            self.outcome.not_accepted += 1

    def record_error(self, what: str) -> None:
        with self.lock:
            self.outcome.errors[what] += 1

    def follow(self, job_ids: list[str], deadline: float) -> None:
        """Wait for each job to end (long polls), until the deadline."""
        waiting = list(job_ids)
        while waiting and time.monotonic() < deadline:
            job_id = waiting.pop(0)
            try:
                response = self.http.get(f"/api/v1/jobs/{job_id}", params={"wait": 5})
            except httpx.HTTPError:
                waiting.append(job_id)
                time.sleep(0.5)
                continue
            job = response.json() if response.status_code == 200 else {}
            if job.get("status") in ("completed", "failed", "cancelled"):
                self.outcome.ends[job_id] = job
            else:
                waiting.append(job_id)


def run_fault(target: Target, fault: str, jobs: int, concurrency: int, fast_503_ms: float) -> Outcome:
    """A third of the jobs, then the fault strikes while the rest go in at SUBMIT_RATE, and on until
    the fault is over; then every accepted job is followed to its end."""
    outcome = Outcome(fault, fast_503_ms)
    client = Client(target.stack.base_url, outcome)
    started = time.monotonic()

    def strike() -> None:
        try:
            FAULTS[fault](target)
        except Exception as exc:  # a fault that could not be made is reported, not hidden
            outcome.fault_error = f"{exc.__class__.__name__}: {exc}"

    striker = threading.Thread(target=strike, name=f"fault {fault}")
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client.submit, map(distinct_jpeg, range(jobs // 3))))
        striker.start()
        index = jobs // 3
        while index < jobs or striker.is_alive():
            pool.submit(client.submit, distinct_jpeg(index))
            index += 1
            time.sleep(1 / SUBMIT_RATE)
    striker.join()
    client.follow(list(outcome.accepted), deadline=time.monotonic() + SETTLE_SECONDS)
    outcome.seconds = time.monotonic() - started
    return outcome


# --- the report ---------------------------------------------------------------------------------
def report_row(outcome: Outcome) -> str:
    failed = ", ".join(f"{code} {count}" for code, count in outcome.failed.items()) or "0"
    slowest = max(outcome.unavailable_ms, default=0)
    errors = sum(outcome.errors.values())
    return (
        f"| {outcome.fault} | {len(outcome.accepted)} | {outcome.completed} | {failed} | {outcome.stuck} "
        f"| {len(outcome.unavailable_ms)} (slowest {slowest:.0f} ms) | {errors} | {outcome.seconds:.0f} s |"
    )


def report(outcomes: list[Outcome]) -> str:
    lines = [
        "| fault | accepted | completed | failed (reason) | stuck | 503s | other errors | took |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(report_row(outcome) for outcome in outcomes),
    ]
    for outcome in outcomes:
        for problem in outcome.problems():
            lines.append(f"{outcome.fault}: {problem}")
    return "\n".join(lines)


# Shorter than the defaults, so that a dead worker's job is taken over within the settle time.
LEASES = {
    "JOB_LEASE_SECONDS": "6",
    "REQUEUE_UNPUBLISHED_AFTER_SECONDS": "2",
    "REQUEUE_STALE_AFTER_SECONDS": "30",
}


def run(
    faults: list[str],
    jobs: int,
    concurrency: int = 8,
    workers: int = 2,
    outage: float = OUTAGE_SECONDS,
    database_template: str | None = None,
    fast_503_ms: float = FAST_503_MS,
) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="darkroom-s3-") as folder, SeaweedServer(Path(folder)) as s3:
        storage = s3.settings(s3.new_bucket("chaos"))
        options = {"supervised": True, "database_template": database_template, **LEASES, **storage}
        with Stack(workers=workers, threads=2, **options) as stack:
            stack.spawn("requeue", [*MANAGE, "requeue_stale", "--every", "1"])
            target = Target(stack, s3, outage)
            return [run_fault(target, fault, jobs, concurrency, fast_503_ms) for fault in faults]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300, help="images submitted per fault")
    parser.add_argument("--concurrency", type=int, default=8, help="clients submitting at once")
    parser.add_argument("--fault", action="append", choices=sorted(FAULTS), help="only these (repeatable)")
    parser.add_argument("--outage", type=float, default=OUTAGE_SECONDS, help="seconds a service stays down")
    args = parser.parse_args(argv)
    outcomes = run(args.fault or list(FAULTS), args.jobs, args.concurrency, outage=args.outage)
    print(report(outcomes))
    return 1 if any(outcome.problems() for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
