"""The full pipeline against a raw Pillow loop: `python -m bench.pipeline --service sobel -n 200 -c 8`.

Brings up the full stack (fresh PostgreSQL database and RabbitMQ vhost, one uvicorn server,
--workers Dramatiq worker processes), submits -n jobs over HTTP at -c concurrency, polls each
until it finishes, then runs the same decode + operation + JPEG encode as a plain loop on the
same number of processes, and prints both, and what the pipeline costs over the raw work.
"""

import argparse
import io
import json
import multiprocessing
import os
import queue
import signal
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from pydantic import BaseModel, ValidationError

from bench.stack import Stack, StackError
from processing.errors import InvalidParameters
from processing.imaging import encode_image
from processing.operations import OPERATIONS, Operation

DEFAULT_PARAMS = {
    "resize": {"width": "400", "height": "300"},
    "crop": {"x": "100", "y": "100", "width": "800", "height": "600"},
}
FINISHED = ("completed", "failed", "cancelled")
JOB_TIMEOUT = 180  # seconds; longer than the workers' time limit
RAW_SINGLE_IMAGES = 50  # images in the single-process raw loop (its mean is "per image")


class UsageError(Exception):
    """The command line asks for something that can't be benchmarked."""


# --- the image -----------------------------------------------------------------
def photo_jpeg(width: int, height: int, quality: int = 90) -> bytes:
    """Gradients, soft light, hard edges and sensor noise: a JPEG that compresses like a photo."""
    rng = np.random.default_rng(20)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    pixels = np.empty((height, width, 3), np.float32)
    pixels[..., 0] = 60 + 150 * x + 0 * y
    pixels[..., 1] = 40 + 120 * y + 0 * x
    pixels[..., 2] = 170 - 90 * x * y + 40 * np.sin(9 * x + 5 * y)
    for _ in range(12):
        cx, cy, r = rng.random(), rng.random(), rng.uniform(0.05, 0.3)
        blob = np.exp(-(((x - cx) * width / height) ** 2 + (y - cy) ** 2) / (2 * r * r))
        pixels += blob[..., None] * rng.uniform(-80, 80, 3).astype(np.float32)
    for _ in range(40):
        left, top = rng.integers(0, max(1, width - 50)), rng.integers(0, max(1, height - 50))
        w, h = rng.integers(20, max(21, width // 4)), rng.integers(20, max(21, height // 4))
        pixels[top : top + h, left : left + w] += rng.uniform(-50, 50, 3).astype(np.float32)
    pixels += rng.normal(0, 7, pixels.shape).astype(np.float32)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def tagged(jpeg: bytes, tag: str) -> bytes:
    """The same pixels with a JPEG comment: distinct bytes, so no upload can reuse another's result."""
    comment = tag.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


# --- the raw loop ----------------------------------------------------------------
def process_once(jpeg: bytes, operation: Operation, params: BaseModel) -> tuple[float, float, float]:
    """Decode, apply, encode as the worker does, minus the job; (decode, operation, encode) seconds."""
    started = time.perf_counter()
    image = Image.open(io.BytesIO(jpeg))
    image.load()
    decoded = time.perf_counter()
    result = operation.apply(image, params, lambda fraction: None)
    applied = time.perf_counter()
    if operation.produces == "image":
        encode_image(result.image, params.format or "jpeg", params.quality)
    return decoded - started, applied - decoded, time.perf_counter() - applied


_barrier = None


def _share_barrier(barrier) -> None:
    global _barrier
    _barrier = barrier


def raw_batch(task: tuple[bytes, str, dict, int]) -> tuple[float, float]:
    """One pool process's share; the barrier starts them together and keeps each to one batch."""
    jpeg, service, raw_params, count = task
    operation = OPERATIONS[service]
    params = operation.parse(raw_params)
    _barrier.wait()
    started = time.time()
    for _ in range(count):
        process_once(jpeg, operation, params)
    return started, time.time()


def measure_raw(jpeg: bytes, service: str, raw_params: dict, images: int, processes: int) -> dict:
    operation = OPERATIONS[service]
    params = operation.parse(raw_params)
    for _ in range(3):
        process_once(jpeg, operation, params)
    single = [process_once(jpeg, operation, params) for _ in range(min(images, RAW_SINGLE_IMAGES))]
    stages = {
        name: statistics.fmean(s[i] for s in single) * 1000
        for i, name in enumerate(("decode", "operation", "encode"))
    }

    shares = [images // processes + (1 if i < images % processes else 0) for i in range(processes)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    with context.Pool(processes, initializer=_share_barrier, initargs=(barrier,)) as pool:
        spans = pool.map(raw_batch, [(jpeg, service, raw_params, n) for n in shares], chunksize=1)
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    return {
        "images": images,
        "processes": processes,
        "wall_s": wall,
        "images_per_s": images / wall,
        "per_image_ms": sum(stages.values()),
        "stages_ms": stages,
    }


# --- the pipeline ----------------------------------------------------------------
@dataclass
class Sample:
    """One job as the client saw it; times are time.time(), comparable with the server's timestamps."""

    submitted: float
    job_id: str | None = None
    seen: float | None = None
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
            "notice": (self.seen - finished) * 1000,  # until a poll saw it
        }


def run_job(client: httpx.Client, service: str, upload: bytes, params: dict, poll: float, stop) -> Sample:
    sample = Sample(submitted=time.time())
    response = client.post(
        f"/api/v1/process/{service}", files={"image": ("bench.jpg", upload, "image/jpeg")}, data=params
    )
    if response.status_code != 202:
        sample.error = f"submit answered {response.status_code}: {response.text[:200]}"
        return sample
    sample.job_id = response.json()["job_id"]
    while not stop.wait(poll):
        response = client.get(f"/api/v1/jobs/{sample.job_id}")
        if response.status_code != 200:
            sample.error = f"poll answered {response.status_code}: {response.text[:200]}"
            return sample
        sample.job = response.json()
        if sample.job["status"] in FINISHED:
            sample.seen = time.time()
            if sample.job["status"] != "completed":
                sample.error = f"{sample.job['status']}: {sample.job.get('error')}"
            return sample
        if time.time() - sample.submitted > JOB_TIMEOUT:
            sample.error = f"still {sample.job['status']} after {JOB_TIMEOUT} s"
            return sample
    sample.error = "interrupted"
    return sample


def run_pipeline(base_url: str, args, params: dict, jpeg: bytes, count: int, label: str) -> list[Sample]:
    """`count` jobs, `args.concurrency` at a time, each submitted and then polled until it finishes."""
    todo = queue.SimpleQueue()
    for number in range(count):
        todo.put(number)
    stop = threading.Event()

    def drive() -> list[Sample]:
        samples = []
        with httpx.Client(base_url=base_url, timeout=60) as client:
            while not stop.is_set():
                try:
                    number = todo.get_nowait()
                except queue.Empty:
                    break
                upload = tagged(jpeg, f"{label}-{number}")
                try:
                    samples.append(run_job(client, args.service, upload, params, args.poll, stop))
                except httpx.HTTPError as exc:  # counted as a failure, like a refused submission
                    samples.append(Sample(submitted=time.time(), error=f"{exc.__class__.__name__}: {exc}"))
        return samples

    pool = ThreadPoolExecutor(args.concurrency, thread_name_prefix="client")
    try:
        futures = [pool.submit(drive) for _ in range(args.concurrency)]
        return [sample for future in futures for sample in future.result()]
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def fetch_results(base_url: str, samples: list[Sample]) -> None:
    """Worker-side timings, read after the timed run so the reads don't load the server during it."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for sample in samples:
            if sample.ok:
                sample.result = client.get(f"/api/v1/result/{sample.job_id}").json()


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
        overhead_ms={"p50": percentiles(overhead)["p50"], "mean": statistics.fmean(overhead)},
        stages_ms_mean={name: statistics.fmean(s[name] for s in stages) for name in stages[0]},
    )
    return summary


def percentiles(values: list[float]) -> dict:
    if len(values) < 2:
        return {"p50": values[0], "p95": values[0], "p99": values[0]}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}


# --- the report --------------------------------------------------------------------
def report(args, params: dict, jpeg: bytes, pipeline: dict, raw: dict, other: dict) -> str:
    shown = " ".join(f"{k}={v}" for k, v in params.items())
    rows = [
        f"{args.service} {shown}".rstrip()
        + f" on a {args.width}x{args.height} JPEG ({len(jpeg) / 1024:.0f} KiB, q90)",
        f"{args.jobs} jobs at concurrency {args.concurrency}; {args.workers} worker processes x "
        f"{args.threads} thread(s); polling every {args.poll * 1000:g} ms",
        f"{os.cpu_count()} cores; other work on the machine: {cores(other['raw'])} during the raw loop, "
        f"{cores(other['pipeline'])} during the pipeline",
        "",
        "pipeline (HTTP -> gateway -> RabbitMQ -> worker -> poll)",
        ("  completed", f"{pipeline['completed']} of {pipeline['jobs']} ({pipeline['failed']} failed)"),
    ]
    if pipeline["completed"]:
        lat, over = pipeline["latency_ms"], pipeline["overhead_ms"]
        rows += [
            ("  throughput", f"{pipeline['jobs_per_s']:.1f} jobs/s ({pipeline['wall_s']:.2f} s)"),
            ("  end-to-end latency", f"p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f} ms"),
            (
                "  processing (worker), mean",
                f"{pipeline['processing_ms_mean']:.1f} ms ({steps(pipeline['processing_steps_ms'])})",
            ),
            ("  overhead (e2e - processing)", f"p50 {over['p50']:.1f}  mean {over['mean']:.1f} ms"),
            ("  where e2e goes, mean", f"{steps(pipeline['stages_ms_mean'])} ms"),
        ]
    rows += [
        f"raw loop (decode + {args.service} + encode, no pipeline)",
        (
            f"  throughput, {raw['processes']} processes",
            f"{raw['images_per_s']:.1f} images/s ({raw['images']} in {raw['wall_s']:.2f} s)",
        ),
        ("  per image, 1 process", f"{raw['per_image_ms']:.1f} ms ({steps(raw['stages_ms'])})"),
    ]
    if pipeline["completed"]:
        ratio = pipeline["jobs_per_s"] / raw["images_per_s"]
        rows.append(("pipeline / raw throughput", f"{ratio:.2f} (the pipeline costs {1 / ratio:.2f}x raw)"))
    return "\n".join(row if isinstance(row, str) else f"{row[0]:<32}{row[1]}" for row in rows)


# --- the command -------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--service", default="grayscale", help="a service from /api/v1/services")
    parser.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="a service parameter (repeatable)"
    )
    parser.add_argument("-n", "--jobs", type=positive, default=200, help="jobs to run (default 200)")
    parser.add_argument("-c", "--concurrency", type=positive, default=8, help="jobs in flight (default 8)")
    parser.add_argument(
        "--workers", type=positive, default=os.cpu_count() or 1, help="worker processes (default: cores)"
    )
    parser.add_argument("--threads", type=positive, default=1, help="threads per worker process (default 1)")
    parser.add_argument("--width", type=positive, default=1920)
    parser.add_argument("--height", type=positive, default=1080)
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between polls (default 0.05)")
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    return parser.parse_args(argv)


def positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw} is not a positive integer")
    return value


def service_params(args) -> dict:
    """The parameters as the API takes them (form strings), checked here before any stack comes up."""
    operation = OPERATIONS.get(args.service)
    if operation is None:
        raise UsageError(f"no service {args.service!r}; choose one of {', '.join(OPERATIONS)}")
    params = dict(DEFAULT_PARAMS.get(args.service, {}))
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--param {item!r}: give it as key=value")
        params[key] = value
    try:
        operation.check_fits(operation.parse(params), args.width, args.height)
    except (ValidationError, InvalidParameters) as exc:
        raise UsageError(f"{args.service} {params}: {exc}") from None
    return params


class OtherLoad:
    """Cores that processes outside the benchmark kept busy while it measured (Linux; None elsewhere).

    Ours are this process (with its reaped children), the stack's process groups and the
    services they use (PostgreSQL, RabbitMQ, Redis); on a shared machine the rest skews the figures.
    """

    def __init__(self, process_groups: set[int] = frozenset()):
        self.process_groups = process_groups
        self.cores: float | None = None

    def __enter__(self) -> "OtherLoad":
        self._start = self._sample()
        return self

    def __exit__(self, *exc_info) -> None:
        end = self._sample()
        if self._start and end:
            (wall, busy, ours), (wall_end, busy_end, ours_end) = self._start, end
            self.cores = max(0.0, (busy_end - busy) - (ours_end - ours)) / (wall_end - wall)

    def _sample(self) -> tuple[float, float, float] | None:
        tick = os.sysconf("SC_CLK_TCK")
        try:
            with open("/proc/stat") as stat:
                ticks = [int(t) for t in stat.readline().split()[1:]]
            ours = sum(self._ticks(path) for path in Path("/proc").glob("[0-9]*/stat"))
        except (OSError, ValueError):
            return None
        return time.monotonic(), (sum(ticks) - ticks[3] - ticks[4]) / tick, ours / tick

    def _ticks(self, path: Path) -> int:
        try:
            raw = path.read_text()
        except OSError:  # the process has gone
            return 0
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        mine = int(path.parent.name) == os.getpid() or int(fields[2]) in self.process_groups
        if mine or name.startswith(("postgres", "beam.smp", "redis-server")):
            return sum(int(t) for t in fields[11:15])  # utime, stime, cutime, cstime
        return 0


def cores(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f} cores"


def interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)  # tear the stack down on `kill` as on Ctrl-C
    other = {}
    try:
        params = service_params(args)
        jpeg = photo_jpeg(args.width, args.height)
        log(f"raw loop: {args.jobs} images on {args.workers} processes")
        with OtherLoad() as load:
            raw = measure_raw(jpeg, args.service, params, args.jobs, args.workers)
        other["raw"] = load.cores
        log(f"starting the stack: 1 server, {args.workers} workers x {args.threads} thread(s)")
        with Stack(args.workers, args.threads) as stack:
            warmup = max(2 * args.workers * args.threads, args.concurrency)
            log(f"warming up with {warmup} jobs")
            run_pipeline(stack.base_url, args, params, jpeg, warmup, "warmup")
            log(f"running {args.jobs} jobs at concurrency {args.concurrency}")
            with OtherLoad({process.pid for process in stack.processes.values()}) as load:
                samples = run_pipeline(stack.base_url, args, params, jpeg, args.jobs, "run")
            other["pipeline"] = load.cores
            fetch_results(stack.base_url, samples)
            pipeline = summarise_pipeline(samples, args.jobs)
            if pipeline["failed"]:
                log(f"failures, e.g. {pipeline['errors']}\n{stack.log_tails()}")
    except (UsageError, StackError) as exc:
        log(str(exc))
        return 2
    except KeyboardInterrupt:
        log("interrupted; the stack is torn down")
        return 130
    print(report(args, params, jpeg, pipeline, raw, other))
    if args.json:
        ratio = pipeline.get("jobs_per_s", 0) / raw["images_per_s"]
        summary = {
            "service": args.service,
            "params": params,
            "image": {"width": args.width, "height": args.height, "bytes": len(jpeg)},
            "concurrency": args.concurrency,
            "workers": args.workers,
            "threads": args.threads,
            "poll_s": args.poll,
            "other_load_cores": other,
            "pipeline": pipeline,
            "raw": raw,
            "pipeline_over_raw": ratio,
            "pipeline_costs_x_raw": 1 / ratio if ratio else None,
        }
        print(json.dumps(rounded(summary)))
    return 1 if pipeline["failed"] else 0


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
