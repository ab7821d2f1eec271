"""The full pipeline against the raw Pillow loop: `python -m bench.pipeline --service sobel -n 200 -c 16`.

Runs bench.raw's raw loop (decode + operation + encode in plain Pillow) on --workers processes, then
brings up the full stack (fresh PostgreSQL database and RabbitMQ vhost, one uvicorn server,
--workers Dramatiq worker processes), runs -n jobs over HTTP at -c concurrency, each until its
result's bytes are in hand, while counting the CPU time of every process of the stack; then
--latency-jobs jobs one at a time for what the pipeline adds to a job's latency. By default a job is
one request (`Prefer: wait=30, return=representation`, `Accept: image/*`: the result in the submit's
answer); where the server answers 202 instead, one long poll and a download. --mode long-poll and
--mode poll are the three-request paths. Prints both runs, the requests per job, the CPU per job by
process kind, and the goals, met or missed. `--services grayscale,resize,sobel` runs each in turn
on one stack. `--recipe` runs each step of a recipe alone, then the recipe (its steps on one decode
and one encode), and prints the workers' CPU per job of each beside the others."""

import argparse
import contextlib
import json
import os
import queue
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from bench.http_client import Body, Client, ClientError, Response, form
from bench.images import photo_jpeg, tagged
from bench.profile import RATE, Profiler, ProfilerMissing
from bench.profile import summary as profile_summary
from bench.raw import DEFAULT_PARAMS, measure_raw
from bench.stack import Stack, StackError
from processing.errors import DomainError, InvalidParameters
from processing.imaging import recipes
from processing.imaging.operations import OPERATIONS, OutputLimits
from processing.imaging.recipes import STEPS_SERVICE
from scaler.backends.processes import child_pids

FINISHED = ("completed", "failed", "cancelled")
JOB_TIMEOUT = 180  # seconds; longer than the workers' time limit
LONG_POLL_S = 30  # GET /api/v1/jobs/{id}?wait=: the server answers when the job ends, or after this


@dataclass(frozen=True)
class Goal:
    """A goal for a figure: at least, or at most, `limit`."""

    limit: float
    at_most: bool = False
    unit: str = ""

    def verdict(self, value: float | None) -> str:
        if value is None:
            return "unknown"
        return "met" if (value <= self.limit if self.at_most else value >= self.limit) else "missed"

    def __str__(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.limit:g}{self.unit}"


# Issue 23's goals. Pipeline jobs/s over raw images/s, on the same cores; the other services have none.
THROUGHPUT_GOALS = {"grayscale": Goal(0.45), "resize": Goal(0.55), "sobel": Goal(0.65)}
FIXED_COST_GOAL = Goal(10, at_most=True, unit=" ms")  # stack CPU per job beyond the raw work
SERVER_CPU_GOAL = Goal(4, at_most=True, unit=" ms")  # one request per job, the result delivered
WORKER_EXTRA_GOAL = Goal(2, at_most=True, unit=" ms")  # workers' CPU per job beyond the raw loop's per image
OVERHEAD_GOALS = {"p50": Goal(10, at_most=True, unit=" ms")}  # concurrency 1, end-to-end - processing
# Issue 25's: a recipe's workers' CPU per job over that of its most expensive step alone.
RECIPE_GOAL = Goal(1.3, at_most=True, unit="x")
# "resize, sharpen, ... : several operations, one upload": each step service:key=value,key=value.
DEFAULT_RECIPE = "resize:width=1280+sharpen:radius=1,percent=80+rotate:angle=90+grayscale"


class UsageError(Exception):
    """The command line asks for something that can't be benchmarked."""


# --- the pipeline ----------------------------------------------------------------
MODES = ("one-request", "long-poll", "poll")
POLL_EVERY_S = 0.05  # --mode poll's default interval between reads


@dataclass(frozen=True)
class Waiting:
    """How the client waits for a job and takes its result.

    one-request: the submit asks to be answered when the job ends (`Prefer: wait`), with the result's
    bytes (`return=representation`, `Accept: image/*`); a server that answers 202 instead is waited for
    as in long-poll. long-poll: submit, then `GET /api/v1/jobs/{id}?wait=`. poll: submit, then plain reads
    `poll_every` seconds apart. Unless `download` is off, a result not already in hand is then downloaded,
    so that every mode ends with the result delivered."""

    mode: str = "one-request"
    poll_every: float = POLL_EVERY_S
    download: bool = True

    def submit_headers(self) -> dict[str, str]:
        if self.mode != "one-request":
            return {}
        return {"Prefer": f"wait={LONG_POLL_S}, return=representation", "Accept": "image/*"}

    def describe(self) -> str:
        steps = {
            "one-request": f"one request (Prefer: wait={LONG_POLL_S}, return=representation, Accept image/*)",
            "long-poll": f"submit + long poll ?wait={LONG_POLL_S}",
            "poll": f"submit + a read every {self.poll_every:g} s",
        }[self.mode]
        if self.mode == "one-request":
            return f"{steps}; on a 202, long poll + download"
        return steps + (" + download" if self.download else ", no download")


@dataclass
class Sample:
    """One job as the client saw it; times are time.time(), comparable with the server's timestamps."""

    submitted: float
    job_id: str | None = None
    seen: float | None = None  # when the client had the result's bytes (or, without download, the news)
    requests: int = 0  # HTTP requests the job took: submit, reads, download
    in_one: bool = False  # the submit's answer carried the result's bytes
    result_bytes: int | None = None  # the result's size as delivered; None when not downloaded
    content: bytes = b""  # the result itself, when run_job is asked to keep it
    server_timing: dict[str, float] = field(default_factory=dict)  # ms, from the Server-Timing header
    job: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.job.get("status") == "completed"

    @property
    def latency_ms(self) -> float:
        return (self.seen - self.submitted) * 1000

    def stages_ms(self) -> dict:
        """Where this job's end-to-end time went, from the client's clock and the server's timestamps."""
        created, started, finished = (
            datetime.fromisoformat(self.job[name]).timestamp()
            for name in ("created_at", "started_at", "finished_at")
        )
        return {
            "upload": (created - self.submitted) * 1000,  # POST, spooling, probing, storing the input
            "queue": (started - created) * 1000,  # publish and confirm, delivery, waiting for a worker, claim
            "work": (finished - started) * 1000,  # the worker, from claim to complete
            "deliver": (self.seen - finished) * 1000,  # until the client had the result (or heard of it)
        }


def parse_server_timing(header: str) -> dict[str, float]:
    """`queue;dur=1.2, processing;dur=8.5, total;dur=10.1` as {name: ms}; a metric without dur is left out."""
    timings = {}
    for metric in header.split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if name and key.strip().lower() == "dur":
                with contextlib.suppress(ValueError):
                    timings[name] = float(value.strip().strip('"'))
    return timings


def is_image(response: Response) -> bool:
    return response.headers.get("content-type", "").startswith("image/")


def job_upload(image: bytes, params: Mapping[str, object]) -> Body:
    """A job's submission as the API takes it, the image and the service's parameters, encoded once:
    before the timed run, so that the load client only sends its bytes."""
    return form(params, {"image": ("bench.jpg", image, "image/jpeg")})


def run_job(
    client: Client,
    service: str,
    upload: Body,
    waiting: Waiting,
    stop: threading.Event,
    keep_content: bool = False,
) -> Sample:
    """Submit one job (`upload`, from job_upload) and wait for it as `waiting` says; with `keep_content`,
    the result's bytes are kept."""
    sample = Sample(submitted=time.time())
    response = client.post(submit_path(service), upload, headers=waiting.submit_headers())
    sample.requests = 1
    if response.status_code == 200 and is_image(response):  # the result itself
        sample.in_one = True
        sample.job_id = response.headers.get("job-id")
        sample.job = {"job_id": sample.job_id, "status": response.headers.get("job-status", "completed")}
        sample.server_timing = parse_server_timing(response.headers.get("server-timing", ""))
        if sample.job_id is None:
            sample.error = "the result came without a Job-Id header"
            return sample
        return delivered(sample, response, keep_content)
    if response.status_code not in (200, 202):
        sample.error = f"submit answered {response.status_code}: {response.text[:200]}"
        return sample
    sample.job = response.json()
    sample.job_id = sample.job["job_id"]
    if sample.job["status"] not in FINISHED:  # 202: as today, the job is waited for
        wait_for(client, sample, waiting, stop)
    if sample.error is not None:
        return sample
    if sample.job["status"] != "completed":
        sample.seen = time.time()
        sample.error = f"{sample.job['status']}: {sample.job.get('error')}"
        return sample
    if not waiting.download:
        sample.seen = time.time()
        return sample
    sample.requests += 1
    return delivered(
        sample, client.get(f"/api/v1/download/{sample.job_id}", follow_redirects=True), keep_content
    )


def submit_path(service: str) -> str:
    """Where a job of `service` is submitted: a recipe ("steps") has an endpoint of its own."""
    return "/api/v1/process" if service == STEPS_SERVICE else f"/api/v1/process/{service}"


def wait_for(client: Client, sample: Sample, waiting: Waiting, stop: threading.Event) -> None:
    """Read the job until it ends: long polls, asked again at once if one runs out (one-request's and
    long-poll's), or plain reads `poll_every` apart; the job's final JSON lands in sample.job."""
    wait = {} if waiting.mode == "poll" else {"wait": LONG_POLL_S}
    pause = waiting.poll_every if waiting.mode == "poll" else 0
    while not stop.wait(pause):
        response = client.get(f"/api/v1/jobs/{sample.job_id}", params=wait)
        sample.requests += 1
        if response.status_code != 200:
            sample.error = f"read answered {response.status_code}: {response.text[:200]}"
            return
        sample.job = response.json()
        if sample.job["status"] in FINISHED:
            return
        if time.time() - sample.submitted > JOB_TIMEOUT:
            sample.error = f"still {sample.job['status']} after {JOB_TIMEOUT} s"
            return
    sample.error = "interrupted"


def delivered(sample: Sample, response: Response, keep_content: bool) -> Sample:
    """The sample of the response that carries the result (the submit's, or a download)."""
    sample.seen = time.time()
    if response.status_code != 200:
        sample.error = f"{response.method} {response.path} answered {response.status_code}"
        return sample
    sample.result_bytes = len(response.content)
    if keep_content:
        sample.content = response.content
    return sample


def distinct_uploads(jpeg: bytes, params: dict, count: int, label: str) -> list[Body]:
    """`count` jobs' uploads, each of its own bytes (the JPEG tagged `label-number`), encoded now: before
    the run whose CPU is counted."""
    return [job_upload(tagged(jpeg, f"{label}-{number}"), params) for number in range(count)]


def run_pipeline(base_url: str, args, uploads: list[Body], concurrency: int) -> list[Sample]:
    """A job of each upload (from distinct_uploads), `concurrency` at a time, submitted and waited for."""

    def one(client: Client, upload: Body, stop: threading.Event) -> Sample:
        return run_job(client, args.service, upload, args.waiting, stop)

    def failed(exc: ClientError, started: float) -> Sample:  # like a refused submission
        return Sample(submitted=time.time(), error=f"{exc.__class__.__name__}: {exc}")

    return run_concurrently(base_url, uploads, concurrency, one, failed)


def run_concurrently(
    base_url: str, items: Iterable, concurrency: int, one: Callable, failed: Callable
) -> list:
    """`one(client, item, stop)` for every item, `concurrency` at a time, a client per thread
    (bench.http_client: one kept-alive connection each); an item whose HTTP failed gives
    `failed(error, started)` (started: its perf_counter)."""
    todo = queue.SimpleQueue()
    for item in items:
        todo.put(item)
    stop = threading.Event()

    def drive() -> list:
        results = []
        # Longer than the long poll, so a wait that runs its course is not a client timeout.
        with Client(base_url, timeout=LONG_POLL_S + 30) as client:
            while not stop.is_set():
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    break
                started = time.perf_counter()
                try:
                    results.append(one(client, item, stop))
                except ClientError as exc:
                    results.append(failed(exc, started))
        return results

    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="client")
    try:
        futures = [pool.submit(drive) for _ in range(concurrency)]
        return [result for future in futures for result in future.result()]
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def fetch_results(base_url: str, samples: list[Sample]) -> None:
    """Worker-side timings, read after the timed run so the reads don't load the server during it; and
    the job's timestamps, for a job whose result came in the submit's answer (its JSON never did)."""
    with Client(base_url, timeout=60) as client:
        for sample in samples:
            if not sample.ok:
                continue
            sample.result = client.get(f"/api/v1/result/{sample.job_id}").json()
            if "finished_at" not in sample.job:
                sample.job = client.get(f"/api/v1/jobs/{sample.job_id}").json()


def summarise_pipeline(samples: list[Sample], requested: int) -> dict:
    done = [s for s in samples if s.ok]
    errors = [s.error for s in samples if not s.ok]
    summary = {"jobs": requested, "completed": len(done), "failed": requested - len(done)}
    summary["errors"] = errors[:5]
    if not done:
        return summary
    wall = max(s.seen for s in done) - min(s.submitted for s in samples)
    latency = [s.latency_ms for s in done]
    processing = [s.result["processing_ms"] for s in done]
    overhead = [lat - proc for lat, proc in zip(latency, processing, strict=True)]
    metrics = [s.result.get("metrics") or {} for s in done]
    worker_steps = {
        name.removesuffix("_ms"): statistics.fmean(m.get(name, 0.0) for m in metrics)
        for name in ("decode_ms", "operation_ms", "encode_ms", "store_ms")
        if any(name in m for m in metrics)
    }
    # What the worker's metrics don't name (its encode and store timings, when it doesn't record them).
    worker_steps["rest"] = statistics.fmean(processing) - sum(worker_steps.values())
    stages = [s.stages_ms() for s in done]
    summary.update(
        wall_s=wall,
        jobs_per_s=len(done) / wall,
        latency_ms=percentiles(latency),
        processing_ms_mean=statistics.fmean(processing),
        processing_steps_ms=worker_steps,
        queue_wait_ms_mean=statistics.fmean(s.result["queue_wait_ms"] for s in done),
        overhead_ms={**percentiles(overhead), "mean": statistics.fmean(overhead)},
        stages_ms_mean={name: statistics.fmean(s[name] for s in stages) for name in stages[0]},
        requests_per_job=statistics.fmean(s.requests for s in done),
        answered_in_one=sum(s.in_one for s in done),
        delivered=all(s.result_bytes is not None for s in done),
    )
    timed = [s.server_timing for s in done if s.server_timing]
    if timed:  # the server's own account, from the one-request answers' Server-Timing
        summary["server_timing_ms"] = {
            name: statistics.fmean(t.get(name, 0.0) for t in timed) for name in timed[0]
        }
    return summary


def percentiles(values: list[float]) -> dict:
    if len(values) < 2:
        return {"p50": values[0], "p95": values[0], "p99": values[0]}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}


# --- CPU time by process kind (Linux /proc) --------------------------------------------
KINDS = ("server", "workers", "postgres", "rabbitmq", "redis", "client")
SERVICE_KINDS = {"postgres": "postgres", "beam.smp": "rabbitmq", "redis-server": "redis"}  # by comm


@dataclass(frozen=True)
class Proc:
    """One line of /proc/<pid>/stat; cpu_s is utime + stime + cutime + cstime in seconds."""

    pid: int
    comm: str
    ppid: int
    pgrp: int
    cpu_s: float


@dataclass(frozen=True)
class CpuSample:
    at: float  # time.monotonic()
    busy_s: float  # all cores' time on anything but idle and iowait, from /proc/stat
    processes: dict[int, Proc]


def parse_stat(text: str, tick: int) -> Proc:
    """/proc/<pid>/stat; the command name is in parentheses and may itself hold spaces or parentheses."""
    fields = text[text.rindex(")") + 2 :].split()  # fields[0] is the state, field 3 of the line
    ticks = sum(int(t) for t in fields[11:15])  # utime, stime, cutime, cstime: fields 14 to 17
    comm = text[text.index("(") + 1 : text.rindex(")")]
    return Proc(
        int(text[: text.index(" ")]), comm, ppid=int(fields[1]), pgrp=int(fields[2]), cpu_s=ticks / tick
    )


def read_sample() -> CpuSample | None:
    """Every process's CPU seconds and the machine's busy seconds, now; None where there is no /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        with open("/proc/stat") as stat:
            ticks = [int(t) for t in stat.readline().split()[1:9]]  # guest time is already in user
    except (OSError, ValueError):
        return None
    processes = {}
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            proc = parse_stat(path.read_text(), tick)
        except OSError:  # the process has gone
            continue
        processes[proc.pid] = proc
    return CpuSample(time.monotonic(), (sum(ticks) - ticks[3] - ticks[4]) / tick, processes)


def kind_of(proc: Proc, processes: dict[int, Proc], groups: Mapping[int, str], client_pid: int) -> str | None:
    """The stack's process groups by their group; then the first of the process and its ancestors that is
    the client or a service (so beam.smp's children are RabbitMQ's); None for anything else."""
    if proc.pgrp in groups:
        return groups[proc.pgrp]
    for _ in range(64):  # ancestry is shallow; the bound guards against a pid reused mid-read
        if proc.pid == client_pid:
            return "client"
        if proc.comm in SERVICE_KINDS:
            return SERVICE_KINDS[proc.comm]
        proc = processes.get(proc.ppid)
        if proc is None:
            break
    return None


def cpu_by_kind(start: CpuSample, end: CpuSample, groups: Mapping[int, str], client_pid: int) -> dict:
    """CPU seconds each kind of process spent between two samples.

    Per kind, the sum over its processes of utime + stime + cutime + cstime is a counter that only grows:
    a process that exits moves its time (and its reaped children's) into its parent's cutime/cstime when
    the parent reaps it. Sums are taken per sample, never per pid, so processes that come and go between
    the samples (PostgreSQL forks a backend per connection, the postmaster reaps it; Dramatiq's and
    beam.smp's children likewise) are counted once, and a reused pid is no confusion. Time is lost only
    if a process is reaped by a parent of another kind, which none of the stack's processes are.
    """

    def totals(sample: CpuSample) -> dict[str, float]:
        found = dict.fromkeys((*KINDS, *groups.values()), 0.0)
        for proc in sample.processes.values():
            kind = kind_of(proc, sample.processes, groups, client_pid)
            if kind is not None:
                found[kind] += proc.cpu_s
        return found

    before, after = totals(start), totals(end)
    return {kind: after[kind] - before[kind] for kind in after}


def other_cores(start: CpuSample, end: CpuSample, ours: Mapping[str, float]) -> float:
    """Cores that processes of no kind kept busy between the samples (other people's work)."""
    return max(0.0, (end.busy_s - start.busy_s) - sum(ours.values())) / (end.at - start.at)


class OtherLoad:
    """`with OtherLoad(groups) as load:` then load.cpu_s (CPU seconds by kind, see cpu_by_kind) and
    load.cores (cores that processes outside the benchmark used meanwhile); both None without /proc.

    `groups` maps the stack's process group ids to their kind; a plain set of ids counts them as "stack".
    """

    def __init__(self, groups: Mapping[int, str] | Iterable[int] = ()):
        self.groups = dict(groups) if isinstance(groups, Mapping) else dict.fromkeys(groups, "stack")
        self.cpu_s: dict[str, float] | None = None
        self.cores: float | None = None

    def __enter__(self) -> "OtherLoad":
        self._start = read_sample()
        return self

    def __exit__(self, *exc_info) -> None:
        end = read_sample()
        if self._start and end:
            self.cpu_s = cpu_by_kind(self._start, end, self.groups, os.getpid())
            self.cores = other_cores(self._start, end, self.cpu_s)


def stack_groups(stack: Stack) -> dict[int, str]:
    """Each stack process leads a process group of its own (the worker's forked processes are in it)."""
    return {p.pid: "server" if name == "server" else "workers" for name, p in stack.processes.items()}


def cpu_per_job(cpu_s: Mapping[str, float], jobs: int, raw_per_image_ms: float) -> dict:
    """CPU ms per job by kind, the stack's total (the load client excluded) and the total with it, and
    the fixed cost: what the stack spends on a job beyond the raw loop's work on one image (its CPU
    time, `raw_per_image_ms`)."""
    by_kind = {kind: seconds * 1000 / jobs for kind, seconds in cpu_s.items()}
    stack = sum(ms for kind, ms in by_kind.items() if kind != "client")
    return {
        "by_kind": by_kind,
        "stack": stack,
        "total": stack + by_kind.get("client", 0.0),
        "raw_per_image": raw_per_image_ms,
        "fixed_cost": stack - raw_per_image_ms,
        "workers_over_raw": by_kind.get("workers", 0.0) - raw_per_image_ms,
    }


# --- the verdicts ----------------------------------------------------------------------
def goals(
    service: str, ratio: float | None, cpu: dict | None, overhead_c1: dict | None, one_request: bool
) -> dict:
    """Each of the goals with the figure measured, as {name: {value, goal, verdict}}.

    The server's CPU goal is for one request per job with the result delivered (`one_request`); a run
    that took more requests per job shows its figure, unjudged."""
    checks = {}
    if service in THROUGHPUT_GOALS:
        checks["pipeline_over_raw"] = (ratio, THROUGHPUT_GOALS[service])
    checks["fixed_cost_ms"] = (cpu["fixed_cost"] if cpu else None, FIXED_COST_GOAL)
    checks["server_cpu_ms"] = (cpu["by_kind"]["server"] if cpu else None, SERVER_CPU_GOAL)
    checks["workers_over_raw_ms"] = (cpu["workers_over_raw"] if cpu else None, WORKER_EXTRA_GOAL)
    for name, goal in OVERHEAD_GOALS.items():
        checks[f"overhead_c1_{name}_ms"] = (overhead_c1[name] if overhead_c1 else None, goal)
    found = {
        name: {"value": value, "goal": str(goal), "verdict": goal.verdict(value)}
        for name, (value, goal) in checks.items()
    }
    if not one_request:
        found["server_cpu_ms"]["verdict"] = "not judged: not one request per job"
    return found


def summarise(args, params: dict, jpeg: bytes, pipeline: dict, latency: dict, raw: dict, load: dict) -> dict:
    """Everything the run found, as the --json summary; the report prints from it."""
    ratio = pipeline["jobs_per_s"] / raw["images_per_s"] if pipeline["completed"] else None
    cpu_s = load["pipeline"].cpu_s
    cpu = cpu_per_job(cpu_s, pipeline["completed"], raw["cpu_per_image_ms"]) if cpu_s and ratio else None
    overhead_c1 = latency["overhead_ms"] if latency["completed"] else None
    one_request = bool(pipeline["completed"]) and pipeline["answered_in_one"] == pipeline["completed"]
    return {
        "service": args.service,
        "name": args.name,
        "params": params,
        "image": {"width": args.width, "height": args.height, "bytes": len(jpeg)},
        "concurrency": args.concurrency,
        "workers": args.workers,
        "threads": args.threads,
        "mode": args.waiting.mode,
        "wait": args.waiting.describe(),
        "one_request_per_job": one_request,
        "other_load_cores": {name: meter.cores for name, meter in load.items()},
        "pipeline": pipeline,
        "raw": raw,
        "pipeline_over_raw": ratio,
        "pipeline_costs_x_raw": 1 / ratio if ratio else None,
        "cpu_ms_per_job": cpu,
        "latency_c1": latency,
        "goals": goals(args.service, ratio, cpu, overhead_c1, one_request),
    }


# --- the report --------------------------------------------------------------------
KIND_NAMES = {
    "server": "server (uvicorn)",
    "workers": "workers (dramatiq)",
    "postgres": "PostgreSQL",
    "rabbitmq": "RabbitMQ (beam.smp)",
    "redis": "Redis",
}
GOAL_NAMES = {
    "pipeline_over_raw": "pipeline / raw throughput",
    "fixed_cost_ms": "fixed cost per job",
    "server_cpu_ms": "server CPU per job",
    "workers_over_raw_ms": "workers CPU - raw per image",
    "overhead_c1_p50_ms": "overhead at c=1, p50",
}
# How a job's result reaches the client, by mode.
PATHS = {
    "one-request": "HTTP -> gateway -> RabbitMQ -> worker -> the result in the submit's answer",
    "long-poll": "HTTP -> gateway -> RabbitMQ -> worker -> long poll",
    "poll": "HTTP -> gateway -> RabbitMQ -> worker -> polls",
}


def path_taken(summary: dict) -> str:
    """The mode's path, or the fallback's where a one-request run was answered 202."""
    if summary["mode"] == "one-request" and not summary["one_request_per_job"]:
        return f"{PATHS['long-poll']} + download: the server answered 202, not with the result"
    return PATHS[summary["mode"]]


def report(args, summary: dict) -> str:
    pipeline, raw, latency, other = (
        summary[k] for k in ("pipeline", "raw", "latency_c1", "other_load_cores")
    )
    rows = [
        summary["name"]
        + f" on a {args.width}x{args.height} JPEG ({summary['image']['bytes'] / 1024:.0f} KiB, q90)",
        f"{args.jobs} jobs at concurrency {args.concurrency}, then {args.latency_jobs} at concurrency 1; "
        f"{args.workers} worker processes x {args.threads} thread(s); {summary['wait']}",
        f"{os.cpu_count()} cores; other work on the machine (outside the stack and this client): "
        f"{cores(other['raw'])} during the raw loop, {cores(other['pipeline'])} during the pipeline, "
        f"{cores(other['latency'])} at concurrency 1",
        "",
        f"pipeline, {summary['mode']} mode ({path_taken(summary)})",
        *pipeline_rows(pipeline),
        f"raw loop (bench.raw: decode + {summary['name']} + encode in plain Pillow, no pipeline)",
        (
            f"  throughput, {raw['processes']} processes",
            f"{raw['images_per_s']:.1f} images/s ({raw['images']} in {raw['wall_s']:.2f} s)",
        ),
        (
            "  per image, 1 process",
            f"{raw['per_image_ms']:.1f} ms ({steps(raw['stages_ms'])}); CPU {raw['cpu_per_image_ms']:.1f} ms",
        ),
    ]
    if summary["pipeline_over_raw"]:
        ratio = summary["pipeline_over_raw"]
        rows.append(("pipeline / raw throughput", f"{ratio:.2f} (the pipeline costs {1 / ratio:.2f}x raw)"))
    cpu = summary["cpu_ms_per_job"]
    if cpu:
        rows += ["", f"CPU ms per job by process kind (the timed run, {pipeline['completed']} jobs)"]
        rows += [
            (f"  {KIND_NAMES.get(k, k)}", f"{ms:7.1f}") for k, ms in cpu["by_kind"].items() if k != "client"
        ]
        rows += [
            ("  stack total", f"{cpu['stack']:7.1f}"),
            ("  load client (this process)", f"{cpu['by_kind']['client']:7.1f}"),
            ("  total", f"{cpu['total']:7.1f}"),
            (
                "fixed cost per job",
                f"{cpu['fixed_cost']:.1f} ms (stack {cpu['stack']:.1f} - raw loop CPU per image "
                f"{cpu['raw_per_image']:.1f})",
            ),
            (
                "workers beyond the raw loop",
                f"{cpu['workers_over_raw']:.1f} ms per job (workers {cpu['by_kind']['workers']:.1f} - "
                f"raw loop CPU per image {cpu['raw_per_image']:.1f})",
            ),
        ]
    rows += ["", f"pipeline at concurrency 1 ({args.latency_jobs} jobs, one at a time)"]
    rows += pipeline_rows(latency, throughput=False)
    rows += ["", "the goals"]
    for name, check in summary["goals"].items():
        value = "no figure" if check["value"] is None else f"{check['value']:.2f}"
        rows.append((f"  {GOAL_NAMES[name]}", f"{value:>9}  goal {check['goal']:<9} {check['verdict']}"))
    if args.service not in THROUGHPUT_GOALS:
        rows.append(("  pipeline / raw throughput", f"no goal for {args.service}"))
    return "\n".join(row if isinstance(row, str) else f"{row[0]:<32}{row[1]}" for row in rows)


def pipeline_rows(pipeline: dict, throughput: bool = True) -> list:
    rows = [("  completed", f"{pipeline['completed']} of {pipeline['jobs']} ({pipeline['failed']} failed)")]
    if not pipeline["completed"]:
        return rows
    lat, over = pipeline["latency_ms"], pipeline["overhead_ms"]
    if throughput:
        rows.append(("  throughput", f"{pipeline['jobs_per_s']:.1f} jobs/s ({pipeline['wall_s']:.2f} s)"))
    return rows + [
        ("  end-to-end latency", f"p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f} ms"),
        (
            "  processing (worker), mean",
            f"{pipeline['processing_ms_mean']:.1f} ms ({steps(pipeline['processing_steps_ms'])})",
        ),
        (
            "  overhead (e2e - processing)",
            f"p50 {over['p50']:.1f}  p99 {over['p99']:.1f}  mean {over['mean']:.1f} ms",
        ),
        ("  where e2e goes, mean", f"{steps(pipeline['stages_ms_mean'])} ms"),
        (
            "  requests per job, mean",
            f"{pipeline['requests_per_job']:.2f} ({pipeline['answered_in_one']} of {pipeline['completed']} "
            "answered with the result itself)",
        ),
        ("  result delivered", "yes" if pipeline["delivered"] else "no (not downloaded)"),
        *server_timing_rows(pipeline),
    ]


def server_timing_rows(pipeline: dict) -> list:
    timing = pipeline.get("server_timing_ms")
    if not timing:
        return []
    return [("  Server-Timing, mean", f"{steps(timing)} ms")]


# --- the command -------------------------------------------------------------------
def add_poll_argument(parser: argparse.ArgumentParser) -> None:
    """--poll, as every benchmark of the pipeline's client takes it (Waiting reads it)."""
    parser.add_argument(
        "--poll",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"seconds between reads in poll mode (default {POLL_EVERY_S:g}); alone, it selects poll mode",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--service",
        "--services",
        dest="services",
        type=service_list,
        default=None,
        metavar="NAME[,NAME...]",
        help="a service from /api/v1/services, or several (grayscale,resize,sobel) run one after the other "
        "on one stack (default grayscale)",
    )
    parser.add_argument(
        "--recipe",
        nargs="?",
        const=DEFAULT_RECIPE,
        default=None,
        metavar="STEPS",
        help="run each step alone, then all of them as one recipe (one decode, one encode), and compare the "
        "workers' CPU per job; steps as service:key=value,key=value joined by + "
        f"(default {DEFAULT_RECIPE})",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a service parameter (repeatable; with one service only)",
    )
    parser.add_argument("-n", "--jobs", type=positive, default=200, help="jobs to run (default 200)")
    parser.add_argument("-c", "--concurrency", type=positive, default=16, help="jobs in flight (default 16)")
    parser.add_argument(
        "--latency-jobs", type=positive, default=50, help="jobs run one at a time afterwards (default 50)"
    )
    parser.add_argument(
        "--workers", type=positive, default=os.cpu_count() or 1, help="worker processes (default: cores)"
    )
    parser.add_argument("--threads", type=positive, default=1, help="threads per worker process (default 1)")
    parser.add_argument("--width", type=positive, default=1920)
    parser.add_argument("--height", type=positive, default=1080)
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help="one-request (default): the result's bytes in the submit's answer (Prefer: wait, "
        "return=representation), falling back to long-poll where the server answers 202; long-poll: "
        f"submit, ?wait={LONG_POLL_S}, download; poll: submit, reads every --poll seconds, download",
    )
    add_poll_argument(parser)
    parser.add_argument(
        "--no-download",
        dest="download",
        action="store_false",
        help="long-poll and poll modes: stop when the job has ended, without downloading the result",
    )
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the server and workers with py-spy during the timed run; stacks to DIR (bench.profile)",
    )
    args = parser.parse_args(argv)
    mode = args.mode or ("poll" if args.poll is not None else "one-request")
    args.waiting = Waiting(mode, POLL_EVERY_S if args.poll is None else args.poll, args.download)
    return args


def service_list(raw: str) -> list[str]:
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one service")
    return names


def positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw} is not a positive integer")
    return value


def service_params(service: str, items: list[str], width: int, height: int) -> dict:
    """The parameters as the API takes them (form strings): the service's defaults and `items`
    (key=value each), checked here before any stack comes up."""
    operation = OPERATIONS.get(service)
    if operation is None:
        raise UsageError(f"no service {service!r}; choose one of {', '.join(OPERATIONS)}")
    params = dict(DEFAULT_PARAMS.get(service, {}))
    params.update(key_values(items, "--param"))
    try:
        operation.check_fits(operation.parse(params), width, height)
    except (ValidationError, InvalidParameters) as exc:
        raise UsageError(f"{service} {params}: {exc}") from None
    return params


def key_values(items: list[str], where: str) -> dict[str, str]:
    found = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{where} {item!r}: give it as key=value")
        found[key] = value
    return found


def recipe_steps(spec: str, width: int, height: int) -> list[dict]:
    """`resize:width=1280+sharpen` as steps ({"service", "parameters"} each, values as form strings),
    checked as a submission's are, against a width x height upload, before any stack comes up."""
    steps = []
    for written in spec.split("+"):
        service, _, items = written.strip().partition(":")
        parameters = key_values([item for item in items.split(",") if item], f"--recipe step {written!r}:")
        steps.append({"service": service, "parameters": parameters})
    try:
        recipe = recipes.from_steps(steps, {}, max_steps=100)
        recipe.check_job(width, height, "jpeg", OutputLimits(10**9, 10**4, 10**9))
    except (ValidationError, DomainError) as exc:
        raise UsageError(f"--recipe {spec!r}: {exc}") from None
    if len(steps) < 2:
        raise UsageError("--recipe: give two steps or more (one step is --service)")
    return steps


def planned_runs(args) -> list[argparse.Namespace]:
    """The runs, one after the other on one stack: each --service; or with --recipe each of its steps
    alone (each distinct one once), then the recipe. Each has its `params` and a `name` of its own."""
    if args.recipe is None:
        services = args.services or ["grayscale"]
        if args.param and len(services) > 1:
            raise UsageError("--param goes with one service")
        return [
            run_of(args, number, service, service_params(service, args.param, args.width, args.height))
            for number, service in enumerate(services)
        ]
    if args.services or args.param:
        raise UsageError("--recipe names its own steps: give no --service or --param with it")
    steps = recipe_steps(args.recipe, args.width, args.height)
    alone = []
    for step in steps:
        if (step["service"], step["parameters"]) not in alone:
            alone.append((step["service"], step["parameters"]))
    runs = [run_of(args, number, service, params) for number, (service, params) in enumerate(alone)]
    return [*runs, run_of(args, len(runs), STEPS_SERVICE, {"steps": json.dumps(steps)})]


def run_of(args, number: int, service: str, params: dict) -> argparse.Namespace:
    """One run: the command's arguments with its service, params, name and tag (distinct uploads)."""
    fields = {
        "service": service,
        "params": params,
        "name": described(service, params),
        "tag": f"{number}-{service}",
    }
    return argparse.Namespace(**{**vars(args), **fields})


def described(service: str, params: dict) -> str:
    """`resize width=1280`; a recipe as its steps: `resize width=1280 -> sharpen -> grayscale`."""
    if service == STEPS_SERVICE:
        return " -> ".join(
            described(step["service"], step["parameters"]) for step in json.loads(params["steps"])
        )
    return " ".join([service, *(f"{key}={value}" for key, value in params.items())])


def cores(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f} cores"


def interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)  # tear the stack down on `kill` as on Ctrl-C
    raws, found = {}, {}
    try:
        runs = planned_runs(args)
        loads = {run.name: {} for run in runs}
        jpeg = photo_jpeg(args.width, args.height)
        for run in runs:  # before the stack is up, so that it takes nothing of the raw loop's cores
            log(f"raw loop {run.name}: {args.jobs} images on {args.workers} processes")
            with OtherLoad() as loads[run.name]["raw"]:
                raws[run.name] = measure_raw(jpeg, run.service, run.params, args.jobs, args.workers)
        log(f"starting the stack: 1 server, {args.workers} workers x {args.threads} thread(s)")
        with Stack(args.workers, args.threads) as stack:
            for run in runs:
                if len(runs) > 1 and args.profile:
                    run.profile = args.profile / run.tag
                found[run.name] = measure_pipeline(stack, run, run.params, jpeg, loads[run.name])
    except (UsageError, StackError, ProfilerMissing) as exc:
        log(str(exc))
        return 2
    except KeyboardInterrupt:
        log("interrupted; the stack is torn down")
        return 130
    failed = False
    summaries = []
    for number, run in enumerate(runs):
        pipeline, latency, profiler = found[run.name]
        failed = failed or bool(pipeline["failed"] or latency["failed"])
        summary = summarise(run, run.params, jpeg, pipeline, latency, raws[run.name], loads[run.name])
        summaries.append(summary)
        print(("\n" if number else "") + report(run, summary))
        if profiler is not None:
            print(f"\nwhere the timed run's samples went (py-spy, {RATE} a second; stacks in {run.profile})")
            print("\n".join(profile_summary(path) for path in profiler.outputs.values()))
        if args.json:
            print(json.dumps(rounded(summary)))
    if args.recipe is not None:
        figures = recipe_figures(summaries)
        print("\n" + recipe_report(args, figures))
        if args.json:
            print(json.dumps(rounded(figures)))
    return 1 if failed else 0


# --- a recipe against its steps alone ----------------------------------------------------------
def workers_cpu_ms(summary: dict) -> float | None:
    cpu = summary["cpu_ms_per_job"]
    return cpu["by_kind"]["workers"] if cpu else None


def recipe_figures(summaries: list[dict]) -> dict:
    """The workers' CPU per job of each step alone and of the recipe (the last summary), and the goal:
    the recipe over its most expensive step alone."""
    *alone, recipe = summaries
    steps = {summary["name"]: workers_cpu_ms(summary) for summary in alone}
    measured = {name: ms for name, ms in steps.items() if ms is not None}
    costliest = max(measured, key=lambda name: measured[name]) if measured else None
    recipe_ms = workers_cpu_ms(recipe)
    ratio = recipe_ms / measured[costliest] if costliest and recipe_ms is not None else None
    return {
        "recipe": recipe["name"],
        "steps_alone_workers_cpu_ms": steps,
        "recipe_workers_cpu_ms": recipe_ms,
        "recipe_processing_ms": recipe["pipeline"].get("processing_ms_mean"),
        "steps_alone_processing_ms": {
            summary["name"]: summary["pipeline"].get("processing_ms_mean") for summary in alone
        },
        "costliest_step": costliest,
        "recipe_over_costliest": ratio,
        "goal": {"value": ratio, "goal": str(RECIPE_GOAL), "verdict": RECIPE_GOAL.verdict(ratio)},
    }


def recipe_report(args, figures: dict) -> str:
    rows = [
        f"the recipe {figures['recipe']}",
        f"against its steps alone, on a {args.width}x{args.height} JPEG: the workers' CPU per job (claim, "
        "decode, steps, encode, store, complete) and their processing time, mean",
        ("  step or recipe", f"{'CPU ms':>9}  {'processing ms':>14}"),
    ]
    for name, ms in figures["steps_alone_workers_cpu_ms"].items():
        rows.append(
            (f"  {name} alone", f"{number(ms)}  {number(figures['steps_alone_processing_ms'][name]):>14}")
        )
    rows.append(
        (
            "  the recipe: one decode, the steps, one encode",
            f"{number(figures['recipe_workers_cpu_ms'])}  {number(figures['recipe_processing_ms']):>14}",
        )
    )
    goal = figures["goal"]
    rows.append(
        (
            f"  recipe / {figures['costliest_step']} alone",
            f"{number(goal['value'], 2)}  goal {goal['goal']:<9} {goal['verdict']}",
        )
    )
    return "\n".join(row if isinstance(row, str) else f"{row[0]:<48}{row[1]}" for row in rows)


def number(value: float | None, places: int = 1) -> str:
    return f"{'no figure':>9}" if value is None else f"{value:9.{places}f}"


def measure_pipeline(stack: Stack, args, params: dict, jpeg: bytes, load: dict) -> tuple:
    """One service on the running stack: warm-up, the timed run, then one job at a time; the figures of
    both runs (worker timings read afterwards) and the profiler, if any; `load` gets both runs' meters."""
    groups = stack_groups(stack)
    warmup = max(2 * args.workers * args.threads, args.concurrency)
    log(f"{args.name}: warming up with {warmup} jobs")
    uploads = distinct_uploads(jpeg, params, warmup, f"{args.tag}-warmup")
    run_pipeline(stack.base_url, args, uploads, args.concurrency)
    log(f"{args.name}: {args.jobs} jobs at concurrency {args.concurrency}, {args.waiting.mode} mode")
    uploads = distinct_uploads(jpeg, params, args.jobs, f"{args.tag}-run")
    with OtherLoad(groups) as load["pipeline"], profiled(args.profile, stack) as profiler:
        samples = run_pipeline(stack.base_url, args, uploads, args.concurrency)
    log(f"{args.name}: running {args.latency_jobs} jobs at concurrency 1")
    uploads = distinct_uploads(jpeg, params, args.latency_jobs, f"{args.tag}-c1")
    with OtherLoad(groups) as load["latency"]:
        one_by_one = run_pipeline(stack.base_url, args, uploads, 1)
    fetch_results(stack.base_url, samples + one_by_one)
    pipeline = summarise_pipeline(samples, args.jobs)
    latency = summarise_pipeline(one_by_one, args.latency_jobs)
    if pipeline["failed"] or latency["failed"]:
        errors = pipeline["errors"] + latency["errors"]
        log(f"failures, e.g. {errors[:5]}\n{stack.log_tails()}")
    return pipeline, latency, profiler


def profiled(folder: Path | None, stack: Stack):
    """A Profiler of the stack's server and worker processes, or nothing to do without a folder."""
    if folder is None:
        return contextlib.nullcontext()
    workers = [
        pid
        for name, process in stack.processes.items()
        if name.startswith("worker")
        for pid in child_pids(process.pid)
    ]
    return Profiler(folder, {"server": [stack.processes["server"].pid], "worker": workers})


def rounded(value):
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def steps(parts: dict) -> str:
    return " + ".join(f"{name} {ms:.1f}" for name, ms in parts.items())


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
