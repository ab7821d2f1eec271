"""A burst drained by the autoscaler against a fixed single worker: `python -m bench.scaler`.

One run brings up the full stack (a fresh PostgreSQL database and RabbitMQ vhost, one uvicorn
server) and drains the same burst twice, each time from the moment the first job is submitted
until the last one has finished:
  1. fixed: one worker process (`rundramatiq --processes 1 --threads T`), as `make worker` runs it;
  2. scaled: `manage.py scale_workers` (a check every --interval seconds) starting from one worker
     group of T threads, growing to --max-instances as the queue fills.
It prints both times, their ratio, and the scaling actions the scaler took during the burst.
The jobs are realistic (a 2560x1440 photo-like JPEG through sobel by default), sized so that one
worker takes about a minute for 500; each job's bytes differ, so none is served by result reuse.
Both contenders share the machine's cores with the server, PostgreSQL and RabbitMQ: past the
number of cores, more worker processes only share them.
"""

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import psycopg

from bench.images import photo_jpeg, tagged
from bench.stack import Stack, free_port
from scaler.backends.processes import MANAGE, worker_command

UNFINISHED = ("queued", "processing")


@dataclass
class Drain:
    seconds: float
    submit_seconds: float
    completed: int
    failed: int
    redone: int  # jobs that took more than one attempt
    actions: list[dict]


# --- the burst ------------------------------------------------------------------------------
def submit_burst(stack: Stack, uploads: list[bytes], service: str, concurrency: int) -> float:
    """Submit every upload over HTTP, `concurrency` at a time; the seconds it took."""
    started = time.monotonic()
    with httpx.Client(base_url=stack.base_url, timeout=60) as client:

        def submit(upload: bytes) -> None:
            response = client.post(f"/api/v1/process/{service}", files={"image": ("burst.jpg", upload)})
            response.raise_for_status()

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(submit, uploads))
    return time.monotonic() - started


def unfinished(stack: Stack) -> int:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        return conn.execute(
            "SELECT count(*) FROM processing_job WHERE status = ANY(%s)", [list(UNFINISHED)]
        ).fetchone()[0]


def outcomes(stack: Stack, since: float) -> tuple[int, int, int]:
    """(completed, failed, redone) among the jobs created in this drain."""
    query = """
        SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed'),
               count(*) FILTER (WHERE attempts > 1)
        FROM processing_job WHERE created_at >= to_timestamp(%s)
    """
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        return conn.execute(query, [since]).fetchone()


def drain(stack: Stack, uploads: list[bytes], args) -> tuple[float, float]:
    """Submit the burst and wait until every job has finished; (drain seconds, submit seconds)."""
    started = time.monotonic()
    submit_seconds = submit_burst(stack, uploads, args.service, args.concurrency)
    while unfinished(stack):
        time.sleep(0.25)
    return time.monotonic() - started, submit_seconds


# --- the two contenders -----------------------------------------------------------------------
def wait_for_log(stack: Stack, name: str, text: str, timeout: float = 60) -> None:
    stack.wait_until(lambda: text in stack.log(name), timeout=timeout, what=f"{name}: {text!r}")


def with_fixed_worker(stack: Stack, uploads: list[bytes], args) -> Drain:
    stack.spawn("fixed", worker_command(args.threads))
    wait_for_log(stack, "fixed", "Worker process is ready for action")
    since = time.time()
    try:
        seconds, submit_seconds = drain(stack, uploads, args)
    finally:
        stack.stop("fixed")
    return Drain(seconds, submit_seconds, *outcomes(stack, since), actions=[])


def with_scaler(stack: Stack, uploads: list[bytes], args) -> Drain:
    health_port = free_port()
    health = f"http://127.0.0.1:{health_port}/health"
    flags = [
        *("--interval", str(args.interval), "--cooldown", str(args.cooldown), "--threads", str(args.threads)),
        *("--min-instances", "1", "--max-instances", str(args.max_instances)),
        *(
            "--scale-up-threshold",
            str(args.scale_up_threshold),
            "--scale-down-threshold",
            str(args.scale_down_threshold),
        ),
        *("--health-port", str(health_port), "--metrics-port", "0"),
    ]
    stack.spawn("scaler", [*MANAGE, "scale_workers", *flags])

    def ready() -> bool:
        try:
            state = httpx.get(health, timeout=2).json()
        except httpx.HTTPError:
            return False
        return state.get("queues") and state["queues"][0]["consumers"] == 1

    stack.wait_until(ready, timeout=60, what="the scaler's first worker")
    since = time.time()
    try:
        seconds, submit_seconds = drain(stack, uploads, args)
        actions = httpx.get(health).json()["recent_actions"]  # newest first
    finally:
        stack.stop("scaler")  # drains its workers
    during = [a for a in reversed(actions) if datetime.fromisoformat(a["at"]).timestamp() >= since]
    return Drain(seconds, submit_seconds, *outcomes(stack, since), actions=during)


# --- the report -------------------------------------------------------------------------------
def report(args, job_bytes: int, fixed: Drain, scaled: Drain) -> None:
    print(
        f"\nburst: {args.jobs} x {args.service} on a {args.size} JPEG ({job_bytes // 1024} KB), "
        f"{args.threads} thread(s) per worker process, {args.concurrency} uploads at a time"
    )
    print(f"{'':24}{'drain s':>9}{'submit s':>10}{'completed':>11}{'failed':>8}{'redone':>8}")
    for name, run in (("fixed single worker", fixed), (f"scaler (1..{args.max_instances})", scaled)):
        print(
            f"{name:24}{run.seconds:9.1f}{run.submit_seconds:10.1f}{run.completed:11d}{run.failed:8d}{run.redone:8d}"
        )
    ratio = fixed.seconds / scaled.seconds
    print(f"\nfixed / scaler: {ratio:.2f} (the scaler drains the burst {ratio:.2f}x as fast)")
    print(f"scaling actions during the burst: {len(scaled.actions)}")
    for action in scaled.actions:
        print(f"  {action['at'][11:23]}  {action['from']} -> {action['to']}  {action['reason']}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--jobs", type=int, default=500)
    parser.add_argument("--service", default="sobel")
    parser.add_argument("--size", default="2560x1440", help="WIDTHxHEIGHT of the uploaded image")
    parser.add_argument("--threads", type=int, default=1, help="per worker process, in both runs")
    parser.add_argument("--concurrency", type=int, default=8, help="uploads in flight")
    parser.add_argument("--interval", type=float, default=2.0, help="the scaler's check interval")
    parser.add_argument("--cooldown", type=float, default=10.0)
    parser.add_argument("--max-instances", type=int, default=5)
    parser.add_argument("--scale-up-threshold", type=float, default=10)
    parser.add_argument("--scale-down-threshold", type=float, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    width, height = (int(side) for side in args.size.lower().split("x"))
    photo = photo_jpeg(width, height)
    workdir = Path(tempfile.mkdtemp(prefix="darkroom-bench-scaler-"))  # kept: the processes' logs
    # No workers of the stack's own: each contender starts its own.
    with Stack(workers=0, threads=args.threads, workdir=workdir) as stack:
        fixed = with_fixed_worker(stack, [tagged(photo, f"fixed {i}") for i in range(args.jobs)], args)
        scaled = with_scaler(stack, [tagged(photo, f"scaled {i}") for i in range(args.jobs)], args)
    report(args, len(photo), fixed, scaled)
    print(f"\nlogs: {workdir}")


if __name__ == "__main__":
    main()
