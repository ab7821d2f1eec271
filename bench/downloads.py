"""`make bench-downloads`: a result's download through nginx, sent by the gateway itself (Django
streams the file) and by nginx (the gateway answers X-Accel-Redirect: DOWNLOAD_ACCEL_PREFIX), one
after the other in one run, on the full stack.

Each mode runs one gateway process as the scaler starts it, behind the scaler's own nginx, and the
same keep-alive clients (bench.api's) download one grayscale result of a 1920x1080 photo for
`--seconds`. Printed per mode: downloads per second, and the CPU each download cost the gateway and
nginx (their utime + stime from /proc, divided by the downloads).

    python -m bench.downloads [--seconds 10] [--connections 8] [--clients 2] [--width 1920 --height 1080]
"""

import argparse
import os
import subprocess
import uuid
from dataclasses import dataclass

import django
import httpx

# The scaler's nginx and gateway helpers read Django's settings.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django.setup()

from bench.api import throughput  # noqa: E402
from bench.images import photo_jpeg  # noqa: E402
from bench.stack import Stack, announced_port, free_port  # noqa: E402
from gateway.http.body_limits import body_limits  # noqa: E402
from project import config  # noqa: E402
from scaler.backends.gateways import gateway_command, gateway_environment  # noqa: E402
from scaler.backends.nginx import Nginx  # noqa: E402
from scaler.backends.processes import ROOT, child_pids  # noqa: E402

MODES = {
    "gateway sends": "",  # DOWNLOAD_ACCEL_PREFIX empty: FileResponse through uvicorn
    "nginx sends": gateway_environment("127.0.0.1")["DOWNLOAD_ACCEL_PREFIX"],
}


@dataclass
class Measured:
    rate: float
    errors: int
    gateway_ms: float  # CPU per download
    nginx_ms: float


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, in seconds."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def completed_job(stack: Stack, image: bytes) -> str:
    with httpx.Client(base_url=stack.base_url, timeout=60) as client:
        job = client.post("/api/v1/process/grayscale", files={"image": ("photo.jpg", image)}).json()
        while job["status"] not in ("completed", "failed", "cancelled"):
            job = client.get(f"/api/v1/jobs/{job['job_id']}", params={"wait": 30}).json()
    if job["status"] != "completed":
        raise SystemExit(f"the job ended {job['status']}: {job.get('error')}")
    return job["job_id"]


def start_gateway(stack: Stack, name: str, prefix: str) -> tuple[subprocess.Popen, str]:
    """A gateway as the scaler starts it, with DOWNLOAD_ACCEL_PREFIX=`prefix`; its process and address."""
    env = {**stack.env, **gateway_environment("127.0.0.1"), "DOWNLOAD_ACCEL_PREFIX": prefix}
    log = stack.workdir / f"{name}.log"
    with open(log, "ab") as output:
        process = subprocess.Popen(
            gateway_command("127.0.0.1", 0),
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
    stack.processes[name] = process  # stopped with the stack
    address = f"127.0.0.1:{announced_port(log, process)}"
    stack.wait_until(lambda: answers(address), f"{name} to answer")
    return process, address


def answers(address: str) -> bool:
    try:
        return httpx.get(f"http://{address}/health/live", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def measure(stack: Stack, mode: str, path: str, args) -> Measured:
    name = f"gateway-{uuid.uuid4().hex[:6]}"
    gateway, address = start_gateway(stack, name, MODES[mode])
    nginx = Nginx(
        stack.workdir / f"nginx-{name}",
        f"127.0.0.1:{free_port()}",
        body_limits(config.defaults()).batch,
        media_root=stack.workdir / "media",
    )
    nginx.start([address])
    try:
        port = nginx.host_port[1]
        throughput(port, path, 2, args.connections, args.clients)  # warm up
        nginx_pids = [nginx.process.pid, *child_pids(nginx.process.pid)]
        before = cpu_seconds([gateway.pid]), cpu_seconds(nginx_pids)
        rate, errors = throughput(port, path, args.seconds, args.connections, args.clients)
        after = cpu_seconds([gateway.pid]), cpu_seconds(nginx_pids)
    finally:
        nginx.stop()
        stack.stop(name)  # one gateway at a time: they share the machine's cores
    downloads = rate * args.seconds
    return Measured(
        rate,
        errors,
        gateway_ms=(after[0] - before[0]) * 1000 / downloads,
        nginx_ms=(after[1] - before[1]) * 1000 / downloads,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    args = parser.parse_args()

    with Stack(workers=1, threads=1) as stack:
        job_id = completed_job(stack, photo_jpeg(args.width, args.height))
        path = f"/api/v1/download/{job_id}"
        size = len(httpx.get(stack.base_url + path).content)
        print(
            f"one {size / 1024:.0f} KiB grayscale result, {args.connections} keep-alive connections from "
            f"{args.clients} client processes, one gateway behind nginx, {args.seconds:g} s per mode"
        )
        print(f"{'mode':14} {'downloads/s':>12} {'gateway CPU':>14} {'nginx CPU':>12} {'errors':>7}")
        for mode in MODES:
            got = measure(stack, mode, path, args)
            print(
                f"{mode:14} {got.rate:12.0f} {got.gateway_ms:10.2f} ms {got.nginx_ms:8.2f} ms {got.errors:7d}"
            )


if __name__ == "__main__":
    main()
