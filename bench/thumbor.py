"""Darkroom's full pipeline against thumbor, same images, same cores: `python -m bench.thumbor -n 200 -c 16`.

Writes -n distinct 1920x1080 JPEGs, then for each operation (resize into 400x300, grayscale) sends
them at -c concurrency to thumbor (--processes processes, a file loader on the images' folder, no
storage of originals or results, JPEG quality = Darkroom's default), stops it, and then to the
full stack of bench.stack (one server, --processes worker processes): each job is uploaded until its
result's bytes are in hand, by default in one request (`Prefer: wait=30, return=representation`; a
server that answers 202 is long-polled and the result downloaded), so both sides deliver the bytes.
The two servers never run at the same time; each is warmed up. Prints thumbor requests/s, Darkroom
jobs/s, latencies, Darkroom / thumbor against the targets, and how close each side's result is to a
full-decode Lanczos reference (SSIM on luma): the targets ask for speed without a loss of quality."""

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
from bench.http_client import Body, Client, ClientError
from bench.images import photo_jpeg, tagged
from bench.pipeline import (
    MODES,
    POLL_EVERY_S,
    OtherLoad,
    UsageError,
    Waiting,
    add_poll_argument,
    cores,
    interrupt,
    job_upload,
    log,
    percentiles,
    positive,
    run_job,
)
from bench.raw import ssim
from bench.stack import ROOT, Stack, StackError, StartedOrCleanedUp, free_port
from processing.imaging.operations import OPERATIONS
from processing.imaging.operations.base import OutputOptions

THUMBOR = ROOT / "var" / "thumbor-venv" / "bin" / "thumbor"  # where `make bench-thumbor` installs it
DARKROOM_QUALITY = OutputOptions.model_fields["quality"].default


# fit-in/400x300 is thumbor's "fit inside the box, keep the aspect ratio": Darkroom's fit=contain.
RESIZE_PARAMS = {"width": "400", "height": "300", "fit": "contain"}


def full_decode(jpeg: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(jpeg))
    image.load()
    return image


def resized_reference(jpeg: bytes) -> Image.Image:
    """The whole JPEG decoded, then Lanczos into the box: what a resize with no shortcut gives."""
    image = full_decode(jpeg)
    size = OPERATIONS["resize"].parse(RESIZE_PARAMS).output_size(*image.size)
    return image.resize(size, Image.Resampling.LANCZOS)


def grayscale_reference(jpeg: bytes) -> Image.Image:
    return full_decode(jpeg).convert("L")


@dataclass(frozen=True)
class Comparison:
    """One operation, as a Darkroom service and as the thumbor URL that does the same work."""

    service: str
    params: dict  # Darkroom's form parameters
    thumbor_options: str  # thumbor's URL options, between /unsafe/ and the image
    target: float  # the Darkroom / thumbor throughput aimed for
    reference: Callable[[bytes], Image.Image]  # the result with no shortcut, to measure both sides against


COMPARISONS = [
    Comparison("resize", RESIZE_PARAMS, "fit-in/400x300", 0.6, resized_reference),
    Comparison("grayscale", {}, "filters:grayscale()", 2.0, grayscale_reference),
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
    content: bytes = b""  # the result, for its likeness to the reference
    requests: int = 1  # HTTP requests it took
    error: str | None = None

    @property
    def latency_ms(self) -> float:
        return (self.finished - self.started) * 1000


def with_result(outcome: Outcome, content: bytes, where: str) -> Outcome:
    """The outcome with the result image's bytes and size (from its header), or an error if it is none."""
    outcome.result_bytes, outcome.content = len(content), content
    try:
        outcome.size = Image.open(io.BytesIO(content)).size  # reads the header only
    except UnidentifiedImageError:
        outcome.error = f"{where} answered 200 without an image"
    return outcome


def thumbor_request(client: Client, name: str, stop: threading.Event, *, comparison: Comparison) -> Outcome:
    outcome = Outcome(started=time.perf_counter())
    response = client.get(thumbor_path(comparison, name))
    outcome.finished = time.perf_counter()
    if response.status_code != 200:
        outcome.error = f"GET {response.path} answered {response.status_code}"
        return outcome
    return with_result(outcome, response.content, f"GET {response.path}")


def darkroom_uploads(comparison: Comparison, images: dict[str, bytes]) -> dict[str, Body]:
    """Each image as a job of `comparison`'s service, encoded before the run (bench.pipeline.job_upload)."""
    return {name: job_upload(image, comparison.params) for name, image in images.items()}


def darkroom_job(
    client: Client,
    name: str,
    stop: threading.Event,
    *,
    comparison: Comparison,
    uploads: dict[str, Body],
    waiting: Waiting,
) -> Outcome:
    """Upload, until the result's bytes are in hand: bench.pipeline's client, in `waiting`'s mode;
    `uploads` from darkroom_uploads."""
    outcome = Outcome(started=time.perf_counter())
    sample = run_job(client, comparison.service, uploads[name], waiting, stop, keep_content=True)
    outcome.finished, outcome.requests = time.perf_counter(), sample.requests
    if not sample.ok:
        outcome.error = sample.error or f"the job is {sample.job.get('status')}"
        return outcome
    return with_result(outcome, sample.content, f"job {sample.job_id}")


def run_concurrently(base_url: str, names: list[str], concurrency: int, one: Callable) -> list[Outcome]:
    """`one(client, name, stop)` for every name, `concurrency` at a time, a client per thread: for both
    servers the same kept-alive client (bench.http_client), so that neither side's load costs more."""

    def failed(exc: ClientError, started: float) -> Outcome:
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
    requests_per_job: float = 0.0
    ssim: float | None = None  # a result's likeness to the full-decode reference (1.0: the same)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    other_load: float | None = None  # cores that processes outside the benchmark used meanwhile


def summarise(outcomes: list[Outcome], other_load: float | None, reference: Image.Image) -> Figures:
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
    figures.requests_per_job = sum(o.requests for o in done) / len(done)
    figures.sizes = sorted({o.size for o in done})
    # Every upload has the same pixels (only a JPEG comment differs), so one result stands for all.
    figures.ssim = likeness(done[0].content, reference)
    return figures


def likeness(content: bytes, reference: Image.Image) -> float:
    """SSIM of a result's luma against the reference's (bench.raw.ssim: 7x7 windows, uniform weights).

    A result of another size is first brought to the reference's with Lanczos, which costs it a little;
    both sides give 400x225 for the box and keep the size for grayscale, so this is only a guard."""
    result = Image.open(io.BytesIO(content))
    if result.size != reference.size:
        result = result.convert("RGB").resize(reference.size, Image.Resampling.LANCZOS)
    return ssim(result, reference)


def ratio(darkroom: Figures, thumbor: Figures) -> float | None:
    """Darkroom jobs/s over thumbor requests/s; None when thumbor completed nothing."""
    return darkroom.per_s / thumbor.per_s if thumbor.per_s else None


def verdict(comparison: Comparison, darkroom: Figures, thumbor: Figures) -> str:
    """Met when Darkroom is at least `target` times as fast and its result at least as close to the
    reference as thumbor's."""
    found = ratio(darkroom, thumbor)
    if found is None or darkroom.ssim is None or thumbor.ssim is None:
        return f"{comparison.service}: no figure for one side (target >= {comparison.target:g}x)"
    met = found >= comparison.target and darkroom.ssim >= thumbor.ssim
    return (
        f"{comparison.service}: {found:.2f}x thumbor (target >= {comparison.target:g}x), "
        f"SSIM {darkroom.ssim:.4f} vs thumbor's {thumbor.ssim:.4f} (target: at least thumbor's): "
        + ("met" if met else "missed")
    )


def report(header: list[str], results: list[tuple[Comparison, Figures, Figures]]) -> str:
    """The table for each operation, then the targets; results are (comparison, thumbor, darkroom)."""
    rows = [*header]
    for comparison, thumbor, darkroom in results:
        shown = " ".join(f"{k}={v}" for k, v in comparison.params.items())
        rows += [
            "",
            f"{comparison.service}: Darkroom {comparison.service} {shown}".rstrip()
            + f"; thumbor {thumbor_path(comparison, '<image>')}",
            f"  {'':<20}{'throughput':>16}{'p50':>11}{'p99':>11}{'result':>11}{'SSIM':>8}{'req/job':>9}"
            "  other load",
        ]
        for name, figures, unit in (("thumbor", thumbor, "req/s"), ("Darkroom", darkroom, "jobs/s")):
            sizes = ", ".join(f"{w}x{h}" for w, h in figures.sizes) or "none"
            likeness = "n/a" if figures.ssim is None else f"{figures.ssim:.4f}"
            rows.append(
                f"  {name:<20}{figures.per_s:>9.1f} {unit:<6}"
                f"{figures.p50_ms:>8.0f} ms{figures.p99_ms:>8.0f} ms{figures.result_kib:>7.1f} KiB"
                f"{likeness:>8}{figures.requests_per_job:>9.2f}  {cores(figures.other_load)}; "
                f"{figures.completed}/{figures.requested} done, {sizes}"
            )
            rows += [f"    failed: {error}" for error in figures.errors]
        found = ratio(darkroom, thumbor)
        rows.append(f"  {'Darkroom / thumbor':<20}{'n/a' if found is None else f'{found:.2f}x':>9}")
    rows += [
        "",
        "the targets (Darkroom jobs/s over thumbor req/s, upload to result bytes against request to bytes;",
        "SSIM of each side's result against a full-decode Lanczos reference, on luma, 1.0 the same)",
    ]
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
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help="how Darkroom's client waits (bench.pipeline's modes; default one-request, the result in "
        "the submit's answer); every mode ends with the result's bytes",
    )
    add_poll_argument(parser)
    parser.add_argument(
        "--thumbor", type=Path, default=THUMBOR, help=f"thumbor's command (default {THUMBOR})"
    )
    args = parser.parse_args(argv)
    mode = args.mode or ("poll" if args.poll is not None else "one-request")
    args.waiting = Waiting(mode, POLL_EVERY_S if args.poll is None else args.poll)
    return args


def write_images(folder: Path, labels: list[str], jpeg: bytes) -> dict[str, bytes]:
    """The JPEG tagged per label: the same pixels, distinct bytes, one file each."""
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
    one: Callable[[Client, str, threading.Event], Outcome],
    reference: Image.Image,
) -> Figures:
    """Warm the server up on other images, then run `names`; OtherLoad counts the server's groups as ours."""
    run_concurrently(base_url, warmup, concurrency, one)
    with OtherLoad(process_groups) as load:
        outcomes = run_concurrently(base_url, names, concurrency, one)
    return summarise(outcomes, load.cores, reference)


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
        jpeg = photo_jpeg(args.width, args.height)
        images = write_images(folder, labels + warmup, jpeg)
        references = {comparison.service: comparison.reference(jpeg) for comparison in COMPARISONS}
        names, warmup = [f"{label}.jpg" for label in labels], [f"{label}.jpg" for label in warmup]
        thumbor, darkroom = {}, {}

        log(f"thumbor: {args.processes} processes")
        with Thumbor(args.thumbor, folder, args.processes) as server:
            for comparison in COMPARISONS:
                log(f"thumbor {comparison.service}: {len(names)} requests at concurrency {args.concurrency}")
                ask = partial(thumbor_request, comparison=comparison)
                groups = {server.process.pid}
                thumbor[comparison.service] = measure(
                    server.base_url,
                    groups,
                    names,
                    warmup,
                    args.concurrency,
                    ask,
                    references[comparison.service],
                )

        log(f"Darkroom: 1 server, {args.processes} worker processes x 1 thread")
        with Stack(args.processes, 1) as server:
            for comparison in COMPARISONS:
                log(f"Darkroom {comparison.service}: {len(names)} jobs at concurrency {args.concurrency}")
                uploads = darkroom_uploads(comparison, images)
                submit = partial(darkroom_job, comparison=comparison, uploads=uploads, waiting=args.waiting)
                groups = {process.pid for process in server.processes.values()}
                darkroom[comparison.service] = measure(
                    server.base_url,
                    groups,
                    names,
                    warmup,
                    args.concurrency,
                    submit,
                    references[comparison.service],
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
        f"1 server + {args.processes} worker processes, {args.waiting.describe()}",
        f"{os.cpu_count()} cores; 'other load' is what processes outside the benchmark used meanwhile",
    ]
    results = [(c, thumbor[c.service], darkroom[c.service]) for c in COMPARISONS]
    print(report(header, results))
    failed = any(figures.completed < figures.requested for _, *pair in results for figures in pair)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
