"""A burst of huge images on workers under a memory cap: does every job complete, with no worker
OOM-killed? `python -m bench.memory` (`make bench-memory`).

The full stack (PostgreSQL, RabbitMQ, Redis, one gateway) with `make worker`'s supervisor,
--processes worker processes of --threads threads each, all inside a memory cgroup (v2, or v1)
of --memory-mb. --jobs distinct --megapixels JPEGs are submitted at once, then each is followed
to its end. Printed: the cgroup's own count of OOM kills, its peak memory, the gateway's 5xx
answers, and jobs completed, failed (with reasons) and unfinished.

--no-admission sets WORKER_PIXEL_BUDGET far above the cap: the same burst without admission.
Needs write access to the cgroup file system (root, here).

--per-operation instead measures what each service's job holds at its peak per decoded pixel (the
figures Operation.memory_per_pixel records): decode, operation, encode, thumbnails and placeholder
of one such JPEG, each in a fresh process, from the rise of its peak resident memory.
"""

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.images import photo_jpeg, tagged
from bench.stack import ROOT, Stack

MB = 1024 * 1024
FINISHED = ("completed", "failed", "cancelled")


class MemoryCgroup:
    """A memory cgroup of its own with a hard limit; processes join it by writing their pid."""

    def __init__(self, limit_bytes: int):
        v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        root = Path("/sys/fs/cgroup") if v2 else Path("/sys/fs/cgroup/memory")
        self.path = root / f"darkroom-bench-{uuid.uuid4().hex[:8]}"
        self.v2 = v2
        self.limit_bytes = limit_bytes

    def __enter__(self) -> "MemoryCgroup":
        self.path.mkdir()
        (self.path / ("memory.max" if self.v2 else "memory.limit_in_bytes")).write_text(str(self.limit_bytes))
        if not self.v2:  # v1 counts swap apart: no swap, so the limit is the limit
            swap = self.path / "memory.memsw.limit_in_bytes"
            if swap.exists():
                swap.write_text(str(self.limit_bytes))
        return self

    def __exit__(self, *exc_info) -> None:
        # A worker group whose supervisor was killed mid-drain (its 49 MP job outlasted the stack's
        # stop) would live on: whatever is still in the cgroup goes with it.
        deadline = time.monotonic() + 10
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        with contextlib.suppress(OSError):
            self.path.rmdir()

    def pids(self) -> list[int]:
        return [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]

    def join_command(self) -> tuple[str, ...]:
        """A command prefix: join this cgroup, then exec the rest of the command line."""
        procs = self.path / "cgroup.procs"
        return ("sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh")

    def oom_kills(self) -> int:
        name = "memory.events" if self.v2 else "memory.oom_control"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def usage_bytes(self) -> int:
        return int((self.path / ("memory.current" if self.v2 else "memory.usage_in_bytes")).read_text())

    def peak_bytes(self) -> int:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        try:
            return int((self.path / name).read_text())
        except OSError:
            return 0


def huge_jpegs(count: int, megapixels: float) -> list[bytes]:
    side = int(math.sqrt(megapixels * 1e6))
    jpeg = photo_jpeg(side, side, quality=85)
    return [tagged(jpeg, f"memory bench {index} {uuid.uuid4().hex}") for index in range(count)]


class Burst:
    """Every image submitted at once, then every accepted job followed to its end."""

    def __init__(self, base_url: str, service: str, params: dict):
        self.base_url, self.service, self.params = base_url, service, params
        self.accepted: list[str] = []
        self.answers: Counter = Counter()
        self.ends: dict[str, dict] = {}
        self.lock = threading.Lock()

    def submit(self, image: bytes) -> None:
        with httpx.Client(base_url=self.base_url, timeout=120) as http:
            response = http.post(
                f"/api/v1/process/{self.service}", data=self.params, files={"image": ("huge.jpg", image)}
            )
        with self.lock:
            self.answers[response.status_code] += 1
            if response.status_code == 202:
                self.accepted.append(response.json()["job_id"])

    def follow(self, job_id: str, deadline: float) -> None:
        with httpx.Client(base_url=self.base_url, timeout=40) as http:
            while time.monotonic() < deadline:
                try:
                    job = http.get(f"/api/v1/jobs/{job_id}", params={"wait": 30}).json()
                except (httpx.HTTPError, ValueError):
                    time.sleep(1)
                    continue
                if job.get("status") in FINISHED:
                    self.ends[job_id] = job
                    return

    def run(self, images: list[bytes], follow_seconds: float) -> None:
        with ThreadPoolExecutor(max_workers=len(images)) as pool:
            list(pool.map(self.submit, images))
        deadline = time.monotonic() + follow_seconds
        with ThreadPoolExecutor(max_workers=max(1, len(self.accepted))) as pool:
            list(pool.map(lambda job_id: self.follow(job_id, deadline), self.accepted))


def report(args, burst: Burst, cgroup: MemoryCgroup, seconds: float, idle_bytes: int) -> str:
    statuses = Counter(job["status"] for job in burst.ends.values())
    reasons = Counter(
        (job.get("error") or {}).get("code") for job in burst.ends.values() if job["status"] == "failed"
    )
    server_errors = sum(count for status, count in burst.answers.items() if status >= 500)
    admission = (
        "off (WORKER_PIXEL_BUDGET far above the cap)" if args.no_admission else "on (budget from the cap)"
    )
    lines = [
        f"{args.jobs} × {args.megapixels:g} MP JPEGs, {args.service}, {args.processes} worker processes × "
        f"{args.threads} threads under a {args.memory_mb} MB memory cap; admission {admission}",
        f"  answers: {dict(sorted(burst.answers.items()))}  (5xx: {server_errors})",
        f"  jobs: {statuses.get('completed', 0)} completed, {statuses.get('failed', 0)} failed"
        f"{' ' + str(dict(reasons)) if reasons else ''}, {len(burst.accepted) - len(burst.ends)} unfinished",
        f"  OOM kills: {cgroup.oom_kills()}   the workers' memory: {idle_bytes / MB:.0f} MB idle, "
        f"{cgroup.peak_bytes() / MB:.0f} MB at the peak",
        f"  {seconds:.0f} s from the first upload to the last end",
    ]
    return "\n".join(lines)


# Each service with the parameters it is measured with (the others need none).
MEMORY_PARAMS = {
    "grayscale": {},
    "sobel": {},
    "blur": {},
    "sharpen": {},
    "analyze": {},
    "rotate": {"angle": 90},
    "convert": {"format": "png"},
    "crop": {"x": 0, "y": 0, "width": 3000, "height": 3000},
    "resize": {"width": 400, "height": 300},
    "thumbnail": {},
    "watermark": {"text": "Darkroom", "font_size": 64, "tile": True, "angle": 30},
}
# One job's work in a fresh process; prints the rise of its peak resident memory, in MB.
MEASURE_ONE = """
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
import django
django.setup()
from processing.imaging import admin_thumbnails, placeholders
from processing.imaging.codecs import encode_image, load_image, probe
from processing.imaging.operations import get_operation

def peak_mb():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024

before = peak_mb()
path, operation = sys.argv[1], get_operation(sys.argv[2])
params = operation.parse(json.loads(sys.argv[3]))
info = probe(path, 10**9)
image, _ = load_image(path, 10**9, operation.decode_hint(params, info.width, info.height))
result = operation.apply(image, params, lambda fraction: None)
if result.image is not None:
    encode_image(result.image, "jpeg", 85)
    admin_thumbnails.thumbnail_bytes(result.image)
    placeholders.make(result.image)
admin_thumbnails.thumbnail_bytes(image)
print(peak_mb() - before)
"""


def per_operation(path: Path, megapixels: float) -> str:
    """Each service's peak bytes per input pixel, measured in a fresh process."""
    lines = [f"peak bytes a job holds per pixel of a {megapixels:g} MP JPEG (decode to placeholder):"]
    for name, raw in MEMORY_PARAMS.items():
        done = subprocess.run(
            [sys.executable, "-c", MEASURE_ONE, str(path), name, json.dumps(raw)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        rise_mb = float(done.stdout.strip())
        lines.append(
            f"  {name:10s} {rise_mb:7.0f} MB  {rise_mb * MB / (megapixels * 1e6):5.1f} bytes a pixel"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--megapixels", type=float, default=49)
    parser.add_argument("--service", default="blur", choices=sorted(MEMORY_PARAMS))
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-mb", type=int, default=1024)
    parser.add_argument("--follow-seconds", type=float, default=900)
    parser.add_argument("--no-admission", action="store_true")
    parser.add_argument("--per-operation", action="store_true", help="measure each service's peak instead")
    args = parser.parse_args(argv)

    if args.per_operation:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "huge.jpg"
            path.write_bytes(huge_jpegs(1, args.megapixels)[0])
            print(per_operation(path, args.megapixels))
        return 0
    images = huge_jpegs(args.jobs, args.megapixels)
    print(f"{len(images)} images of {len(images[0]) / MB:.1f} MB made", flush=True)
    limits = {
        "MAX_UPLOAD_BYTES": str(max(64 * MB, 2 * len(images[0]))),
        "MAX_IMAGE_PIXELS": str(int(args.megapixels * 1e6 * 1.1)),
        "MAX_OUTPUT_PIXELS": str(int(args.megapixels * 1e6 * 1.1)),
        "JOB_TIME_LIMIT_SECONDS": str(int(args.follow_seconds)),
    }
    if args.no_admission:
        limits["WORKER_PIXEL_BUDGET"] = str(10**12)
    with MemoryCgroup(args.memory_mb * MB) as cgroup:
        stack = Stack(
            workers=args.processes,
            threads=args.threads,
            supervised=True,
            worker_prefix=cgroup.join_command(),
            **limits,
        )
        with stack:
            burst = Burst(stack.base_url, args.service, MEMORY_PARAMS.get(args.service, {}))
            idle_bytes, started = cgroup.usage_bytes(), time.monotonic()
            burst.run(images, args.follow_seconds)
            print(report(args, burst, cgroup, time.monotonic() - started, idle_bytes), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
