"""Darkroom's full pipeline against thumbor, same images, same cores: `python -m bench.thumbor -n 200 -c 16`.

Writes -n distinct 1920x1080 JPEGs, then for each operation (resize into 400x300, grayscale) sends
them at -c concurrency to thumbor (--processes processes, a file loader on the images' folder, no
storage of originals or results, JPEG quality = Darkroom's default), stops it, and then to the
full stack of bench.stack (one server, --processes worker processes): each job is submitted,
waited for (long-poll, or polling where the server answers at once) and its result downloaded,
so both sides deliver the bytes. The two servers never run at the same time; each is warmed up.
Prints thumbor requests/s, Darkroom jobs/s, latencies and Darkroom / thumbor against the targets.
"""

import argparse
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
from PIL import Image, UnidentifiedImageError

from bench import pipeline
from bench.images import photo_jpeg, tagged
from bench.pipeline import (
    FINISHED,
    JOB_TIMEOUT,
    OtherLoad,
    UsageError,
    cores,
    interrupt,
    log,
    percentiles,
    positive,
)
from bench.stack import ROOT, Stack, StackError, StartedOrCleanedUp, free_port
from processing.imaging.operations.base import OutputOptions

THUMBOR = ROOT / "var" / "thumbor-venv" / "bin" / "thumbor"  # where `make bench-thumbor` installs it
DARKROOM_QUALITY = OutputOptions.model_fields["quality"].default
LONG_POLL_S = 30  # GET /api/v1/jobs/{id}?wait=: the server answers when the job finishes, or after this


@dataclass(frozen=True)
class Comparison:
    """One operation, as a Darkroom service and as the thumbor URL that does the same work."""

    service: str
    params: dict  # Darkroom's form parameters
    thumbor_options: str  # thumbor's URL options, between /unsafe/ and the image
    target: float  # the Darkroom / thumbor throughput aimed for


COMPARISONS = [
    # fit-in is thumbor's "fit inside the box, keep the aspect ratio": Darkroom's fit=contain.
    Comparison("resize", {"width": "400", "height": "300", "fit": "contain"}, "fit-in/400x300", 1.0),
    Comparison("grayscale", {}, "filters:grayscale()", 2.0),
]


def thumbor_path(comparison: Comparison, name: str) -> str:
    return f"/unsafe/{comparison.thumbor_options}/{name}"


def thumbor_config(images: Path, quality: int) -> str:
    """thumbor.conf: images from a folder, every request decoded and encoded afresh."""
    settings = {
        "LOADER": "thumbor.loaders.file_loader",
        "FILE_LOADER_ROOT_PATH": str(images),
        "STORAGE": "thumbor.storages.no_storage",  # the default keeps each original on disk
        "RESULT_STORAGE": None,
        "ALLOW_UNSAFE_URL": True,
        "QUALITY": quality,
        "PROGRESSIVE_JPEG": False,  # thumbor's default is progressive; Darkroom writes baseline JPEGs
    }
    return "".join(f"{name} = {value!r}\n" for name, value in settings.items())


class Thumbor(StartedOrCleanedUp):
    """`with Thumbor(executable, images, processes=2) as thumbor:` then GET thumbor.base_url + path."""

    def __init__(self, executable: Path, images: Path, processes: int):
        self.executable, self.images, self.processes = executable.absolute(), images, processes
        self.workdir = Path(tempfile.mkdtemp(prefix="darkroom_bench_thumbor_"))
        self.base_url = f"http://127.0.0.1:{free_port()}"
        self.process: subprocess.Popen | None = None

    def _start(self) -> None:
        conf = self.workdir / "thumbor.conf"
        conf.write_text(thumbor_config(self.images, DARKROOM_QUALITY))
        port = self.base_url.rsplit(":", 1)[1]
        command = [str(self.executable), "-c", str(conf), "-i", "127.0.0.1", "-p", port]
        with open(self.workdir / "thumbor.log", "ab") as out:
            self.process = subprocess.Popen(
                [*command, "--processes", str(self.processes), "-l", "warning"],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # one process group: the forked processes go with it
            )
        self.wait_until_healthy()

    def __exit__(self, *exc_info) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def wait_until_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.base_url}/healthcheck", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                log_tail = (self.workdir / "thumbor.log").read_text(errors="replace")[-2000:]
                reason = (
                    f"exited {self.process.returncode}" if self.process.poll() is not None else "timed out"
                )
                raise StackError(f"thumbor did not answer /healthcheck ({reason}):\n{log_tail}")
            time.sleep(0.2)


# --- the clients -----------------------------------------------------------------
@dataclass
class Outcome:
    """One image as the client saw it, from the first byte sent to the last byte of the result."""

    started: float
    finished: float = 0.0
    size: tuple[int, int] | None = None  # the result's width and height
    result_bytes: int = 0
    error: str | None = None

    @property
    def latency_ms(self) -> float:
        return (self.finished - self.started) * 1000


def delivered(outcome: Outcome, response: httpx.Response) -> Outcome:
    """The outcome of the response that carries the result image."""
    outcome.finished = time.perf_counter()
    if response.status_code != 200:
        outcome.error = f"{response.request.method} {response.url.path} answered {response.status_code}"
        return outcome
    outcome.result_bytes = len(response.content)
    try:
        outcome.size = Image.open(io.BytesIO(response.content)).size  # reads the header only
    except UnidentifiedImageError:
        outcome.error = f"{response.request.method} {response.url.path} answered 200 without an image"
    return outcome


def thumbor_request(
    client: httpx.Client, name: str, stop: threading.Event, *, comparison: Comparison
) -> Outcome:
    outcome = Outcome(started=time.perf_counter())
    return delivered(outcome, client.get(thumbor_path(comparison, name)))


def darkroom_job(
    client: httpx.Client,
    name: str,
    stop: threading.Event,
    *,
    comparison: Comparison,
    images: dict[str, bytes],
    poll: float,
) -> Outcome:
    """Submit, wait (long-poll; a server that ignores `wait` answers at once, so poll), download."""
    outcome = Outcome(started=time.perf_counter())
    response = client.post(
        f"/api/v1/process/{comparison.service}",
        files={"image": (name, images[name], "image/jpeg")},
        data=comparison.params,
    )
    if response.status_code != 202:
        outcome.error = f"submit answered {response.status_code}: {response.text[:200]}"
        return outcome
    job_id = response.json()["job_id"]
    while True:
        response = client.get(f"/api/v1/jobs/{job_id}", params={"wait": LONG_POLL_S})
        if response.status_code != 200:
            outcome.error = f"wait answered {response.status_code}: {response.text[:200]}"
            return outcome
        job = response.json()
        if job["status"] in FINISHED:
            break
        if time.perf_counter() - outcome.started > JOB_TIMEOUT:
            outcome.error = f"still {job['status']} after {JOB_TIMEOUT} s"
            return outcome
        if stop.wait(poll):
            outcome.error = "interrupted"
            return outcome
    if job["status"] != "completed":
        outcome.error = f"{job['status']}: {job.get('error')}"
        return outcome
    return delivered(outcome, client.get(f"/api/v1/download/{job_id}", follow_redirects=True))


def run_concurrently(base_url: str, names: list[str], concurrency: int, one: Callable) -> list[Outcome]:
    """`one(client, name, stop)` for every name, `concurrency` at a time, a client per thread."""

    def failed(exc: httpx.HTTPError, started: float) -> Outcome:
        return Outcome(started, time.perf_counter(), error=f"{exc.__class__.__name__}: {exc}")

    return pipeline.run_concurrently(base_url, names, concurrency, one, failed)


# --- the figures -----------------------------------------------------------------
@dataclass
class Figures:
    """One server's run of one operation."""

    requested: int
    completed: int
    per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    result_kib: float = 0.0
    sizes: list[tuple[int, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    other_load: float | None = None  # cores that processes outside the benchmark used meanwhile


def summarise(outcomes: list[Outcome], other_load: float | None) -> Figures:
    done = [o for o in outcomes if o.error is None]
    figures = Figures(requested=len(outcomes), completed=len(done), other_load=other_load)
    figures.errors = [o.error for o in outcomes if o.error is not None][:5]
    if not done:
        return figures
    wall = max(o.finished for o in done) - min(o.started for o in outcomes)
    latency = percentiles([o.latency_ms for o in done])
    figures.per_s = len(done) / wall
    figures.p50_ms, figures.p99_ms = latency["p50"], latency["p99"]
    figures.result_kib = sum(o.result_bytes for o in done) / len(done) / 1024
    figures.sizes = sorted({o.size for o in done})
    return figures


def ratio(darkroom: Figures, thumbor: Figures) -> float | None:
    """Darkroom jobs/s over thumbor requests/s; None when thumbor completed nothing."""
    return darkroom.per_s / thumbor.per_s if thumbor.per_s else None


def verdict(comparison: Comparison, darkroom: Figures, thumbor: Figures) -> str:
    found = ratio(darkroom, thumbor)
    if found is None:
        return f"{comparison.service}: no thumbor figure (target >= {comparison.target:g}x)"
    met = "met" if found >= comparison.target else "missed"
    return f"{comparison.service}: {found:.2f}x thumbor, target >= {comparison.target:g}x: {met}"


def report(header: list[str], results: list[tuple[Comparison, Figures, Figures]]) -> str:
    """The table for each operation, then the targets; results are (comparison, thumbor, darkroom)."""
    rows = [*header]
    for comparison, thumbor, darkroom in results:
        shown = " ".join(f"{k}={v}" for k, v in comparison.params.items())
        rows += [
            "",
            f"{comparison.service}: Darkroom {comparison.service} {shown}".rstrip()
            + f"; thumbor {thumbor_path(comparison, '<image>')}",
            f"  {'':<20}{'throughput':>16}{'p50':>11}{'p99':>11}{'result':>11}  other load",
        ]
        for name, figures, unit in (("thumbor", thumbor, "req/s"), ("Darkroom", darkroom, "jobs/s")):
            sizes = ", ".join(f"{w}x{h}" for w, h in figures.sizes) or "none"
            rows.append(
                f"  {name:<20}{figures.per_s:>9.1f} {unit:<6}"
                f"{figures.p50_ms:>8.0f} ms{figures.p99_ms:>8.0f} ms{figures.result_kib:>7.1f} KiB  "
                f"{cores(figures.other_load)}; "
                f"{figures.completed}/{figures.requested} done, {sizes}"
            )
            rows += [f"    failed: {error}" for error in figures.errors]
        found = ratio(darkroom, thumbor)
        rows.append(f"  {'Darkroom / thumbor':<20}{'n/a' if found is None else f'{found:.2f}x':>9}")
    rows += ["", "the targets (Darkroom jobs/s over thumbor req/s)"]
    rows += [f"  {verdict(comparison, darkroom, thumbor)}" for comparison, thumbor, darkroom in results]
    return "\n".join(rows)


# --- the command -------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.thumbor", description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--images", type=positive, default=200, help="distinct images (default 200)")
    parser.add_argument("-c", "--concurrency", type=positive, default=16, help="in flight (default 16)")
    parser.add_argument(
        "--processes", type=positive, default=2, help="thumbor processes and Darkroom workers (default 2)"
    )
    parser.add_argument("--width", type=positive, default=1920)
    parser.add_argument("--height", type=positive, default=1080)
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between polls (default 0.05)")
    parser.add_argument(
        "--thumbor", type=Path, default=THUMBOR, help=f"thumbor's command (default {THUMBOR})"
    )
    return parser.parse_args(argv)


def write_images(folder: Path, labels: list[str], width: int, height: int) -> dict[str, bytes]:
    """One photo-like JPEG, tagged per label: the same pixels, distinct bytes, one file each."""
    jpeg = photo_jpeg(width, height)
    images = {}
    for label in labels:
        images[f"{label}.jpg"] = tagged(jpeg, label)
        (folder / f"{label}.jpg").write_bytes(images[f"{label}.jpg"])
    return images


def measure(
    base_url: str,
    process_groups: set[int],
    names: list[str],
    warmup: list[str],
    concurrency: int,
    one: Callable[[httpx.Client, str, threading.Event], Outcome],
) -> Figures:
    """Warm the server up on other images, then run `names`; OtherLoad counts the server's groups as ours."""
    run_concurrently(base_url, warmup, concurrency, one)
    with OtherLoad(process_groups) as load:
        outcomes = run_concurrently(base_url, names, concurrency, one)
    return summarise(outcomes, load.cores)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)  # tear the servers down on `kill` as on Ctrl-C
    folder = Path(tempfile.mkdtemp(prefix="darkroom_bench_images_"))
    try:
        if not os.access(args.thumbor, os.X_OK):
            raise UsageError(f"no thumbor at {args.thumbor}; `make bench-thumbor` installs it")
        labels = [f"run-{number:04d}" for number in range(args.images)]
        warmup = [f"warmup-{number:04d}" for number in range(max(2 * args.processes, args.concurrency))]
        log(f"writing {len(labels) + len(warmup)} distinct {args.width}x{args.height} JPEGs")
        images = write_images(folder, labels + warmup, args.width, args.height)
        names, warmup = [f"{label}.jpg" for label in labels], [f"{label}.jpg" for label in warmup]
        thumbor, darkroom = {}, {}

        log(f"thumbor: {args.processes} processes")
        with Thumbor(args.thumbor, folder, args.processes) as server:
            for comparison in COMPARISONS:
                log(f"thumbor {comparison.service}: {len(names)} requests at concurrency {args.concurrency}")
                ask = partial(thumbor_request, comparison=comparison)
                groups = {server.process.pid}
                thumbor[comparison.service] = measure(
                    server.base_url, groups, names, warmup, args.concurrency, ask
                )

        log(f"Darkroom: 1 server, {args.processes} worker processes x 1 thread")
        with Stack(args.processes, 1) as server:
            for comparison in COMPARISONS:
                log(f"Darkroom {comparison.service}: {len(names)} jobs at concurrency {args.concurrency}")
                submit = partial(darkroom_job, comparison=comparison, images=images, poll=args.poll)
                groups = {process.pid for process in server.processes.values()}
                darkroom[comparison.service] = measure(
                    server.base_url, groups, names, warmup, args.concurrency, submit
                )
    except (UsageError, StackError) as exc:
        log(str(exc))
        return 2
    except KeyboardInterrupt:
        log("interrupted; the servers are torn down")
        return 130
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    header = [
        f"{args.images} distinct {args.width}x{args.height} JPEGs at concurrency {args.concurrency}, "
        f"JPEG quality {DARKROOM_QUALITY} on both sides; one server at a time, each warmed up with "
        f"{len(warmup)} images",
        f"thumbor: {args.processes} processes, file loader, no storage; Darkroom: full stack, "
        f"1 server + {args.processes} worker processes, submit + wait + download",
        f"{os.cpu_count()} cores; 'other load' is what processes outside the benchmark used meanwhile",
    ]
    results = [(c, thumbor[c.service], darkroom[c.service]) for c in COMPARISONS]
    print(report(header, results))
    failed = any(figures.completed < figures.requested for _, *pair in results for figures in pair)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
