"""`make bench-api`: request throughput of GET /api/v1/jobs/{id} against a bare Django JSON view,
on every server that is installed, and the goal for the job read on the server we run.

Each server runs the same Django project with the same middleware and the same number of
processes, on the full stack (PostgreSQL, Redis, RabbitMQ), one after the other in one run. The
bare view is /health/live (a function returning JsonResponse), so the ratio job read / bare view
is what the API's own work (auth, rate limit, the job query, serialisation) costs per request.
The job is read anonymously, as the embedded default allows, and with an API key, as a
deployment requires (its lookup is part of the key's read).

Servers (`--servers`, those installed are measured):
- uvicorn: what `make serve` runs, `project.asgi` (Django's WSGI handler on reused threads:
  gateway.http.wsgi_threads);
- uvicorn-django-asgi: uvicorn with Django's own ASGI handler instead (bench.django_asgi);
- gunicorn-uvicorn: gunicorn managing uvicorn worker processes, `project.asgi`;
- granian: granian's ASGI interface, `project.asgi`;
- gunicorn: gunicorn's threaded WSGI workers (project/gunicorn_conf.py), which hold a thread per long poll.

Beside the rates, the server's CPU per request (all of its processes, from /proc).

Then the floor under a submission, on the server `make serve` runs: the same 1920x1080 JPEG upload
(multipart, encoded once before the run) POSTed to a bare view that only reads it (Django's
multipart parser, the project's upload handler), to the same view answering a result's worth of
bytes (as a job answered in one request would), and to POST /api/v1/process/grayscale, answered
202 with no worker running (the queue is purged after). The bare views (bench/floor_views.py) are
served under bench.floor_settings, set in that server's environment only: the project's own
middleware, server and thread pool, and its URLs behind them. `--measure uploads` runs only this.

    python -m bench.api [--seconds 10] [--connections 16] [--clients 2] [--processes 2]
                        [--servers uvicorn,uvicorn-django-asgi,gunicorn-uvicorn,granian,gunicorn]
                        [--measure reads,uploads]
"""

import argparse
import http.client
import importlib.util
import io
import multiprocessing
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass, field

import httpx
import pika
from PIL import Image

from bench import floor_views
from bench.images import photo_jpeg
from bench.pipeline import SERVER_CPU_GOAL, Goal, OtherLoad
from bench.stack import Stack, free_port
from processing.jobs.pools import DEFAULT_POOL
from scaler.backends.processes import MANAGE

# The job read against the bare view on the server `make serve` runs (issue 23).
JOB_READ_GOAL = Goal(0.8)
SERVED_BY = "uvicorn"
SERVERS = ("uvicorn", "uvicorn-django-asgi", "gunicorn-uvicorn", "granian", "gunicorn")
MEASUREMENTS = ("reads", "uploads")


@dataclass(frozen=True)
class Request:
    """What a client sends again and again, its body encoded once before the run; any other status
    than `expect` counts as an error."""

    method: str
    path: str
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    expect: int = 200


def hammer(port: int, request: Request, seconds: float, connections: int, results) -> None:
    """One client process: `connections` keep-alive connections taking turns, for `seconds`."""
    pool = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(connections)]
    headers = dict(request.headers)
    done = errors = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for connection in pool:
            connection.request(request.method, request.path, body=request.body, headers=headers)
            response = connection.getresponse()
            response.read()
            done += 1
            errors += response.status != request.expect
    results.put((done, errors))


@dataclass(frozen=True)
class Rate:
    per_second: float
    errors: int
    server_cpu_ms: float | None  # the server's CPU per request, all of its processes


def throughput(
    port: int, request: Request | str, seconds: float, connections: int, clients: int, server_group: int
) -> Rate:
    """`request` (a path: a plain GET) sent for `seconds` on `connections` from `clients` processes."""
    request = Request("GET", request) if isinstance(request, str) else request
    results = multiprocessing.Queue()
    per_client = max(1, connections // clients)
    workers = [
        multiprocessing.Process(target=hammer, args=(port, request, seconds, per_client, results))
        for _ in range(clients)
    ]
    with OtherLoad({server_group: "server"}) as load:
        started = time.monotonic()
        for worker in workers:
            worker.start()
        counts = [results.get() for _ in workers]
        elapsed = time.monotonic() - started
    for worker in workers:
        worker.join()
    done, errors = sum(done for done, _ in counts), sum(errors for _, errors in counts)
    cpu_ms = load.cpu_s["server"] * 1000 / done if load.cpu_s and done else None
    return Rate(done / elapsed, errors, cpu_ms)


def server_commands(port: int, processes: int) -> dict[str, list[str]]:
    """How each server is started, as `make serve` / `make serve-http` would, on `port`."""
    python = [sys.executable, "-m"]
    uvicorn_options = [
        *("--host", "127.0.0.1", "--port", str(port), "--workers", str(processes)),
        *("--no-access-log", "--loop", "uvloop", "--http", "httptools", "--forwarded-allow-ips", ""),
    ]
    return {
        "uvicorn": [*python, "uvicorn", "project.asgi:application", *uvicorn_options],
        "uvicorn-django-asgi": [*python, "uvicorn", "bench.django_asgi:application", *uvicorn_options],
        "gunicorn-uvicorn": [
            *python,
            "gunicorn",
            "project.asgi:application",
            *("--worker-class", "uvicorn.workers.UvicornWorker", "--workers", str(processes)),
            *("--bind", f"127.0.0.1:{port}", "--forwarded-allow-ips", ""),
        ],
        "granian": [
            *python,
            "granian",
            "project.asgi:application",
            *("--interface", "asgi", "--host", "127.0.0.1", "--port", str(port)),
            *("--workers", str(processes), "--loop", "uvloop", "--no-access-log"),
        ],
        "gunicorn": [
            *python,
            "gunicorn",
            "project.wsgi",
            *("-c", "project/gunicorn_conf.py", "--bind", f"127.0.0.1:{port}", "--workers", str(processes)),
        ],
    }


def installed(server: str) -> bool:
    needs = {"uvicorn-django-asgi": "uvicorn", "gunicorn-uvicorn": "gunicorn"}
    return importlib.util.find_spec(needs.get(server, server)) is not None


def serve(stack: Stack, server: str, processes: int, name: str | None = None, **env: str) -> int:
    """Start `server` as the stack's process `name` (the server's own name by default), with `env`
    added to the stack's environment; its port once it answers."""
    port, name = free_port(), name or server
    stack.spawn(name, server_commands(port, processes)[server], **env)
    stack.wait_until(lambda: answers(port), f"{name} to answer")
    return port


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def api_key(stack: Stack) -> str:
    """A new API key of the stack, as `manage.py create_api_key` prints it."""
    done = subprocess.run(
        [*MANAGE, "create_api_key", "bench-api"], env=stack.env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def submitted_job(stack: Stack, headers: dict[str, str]) -> str:
    """The path of a new job, owned by whoever `headers` name."""
    image = io.BytesIO()
    Image.linear_gradient("L").save(image, "JPEG")
    job = httpx.post(
        f"{stack.base_url}/api/v1/process/grayscale",
        files={"image": ("a.jpg", image.getvalue())},
        headers=headers,
    )
    job.raise_for_status()
    return f"/api/v1/jobs/{job.json()['job_id']}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with Stack(workers=1, threads=1) as stack:
        if "reads" in args.measure:
            measure_reads(stack, args)
        if "uploads" in args.measure:
            print(upload_report(args, measure_uploads(stack, args)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--processes", type=int, default=2, help="server processes, for every server")
    parser.add_argument("--servers", default=",".join(SERVERS), help="those installed are measured")
    parser.add_argument(
        "--measure",
        default=",".join(MEASUREMENTS),
        type=measurements,
        help="reads: the job read on each server; uploads: the floor under a submission, on uvicorn",
    )
    return parser.parse_args(argv)


def measurements(raw: str) -> list[str]:
    chosen = [name for name in raw.split(",") if name]
    unknown = set(chosen) - set(MEASUREMENTS)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(MEASUREMENTS)}")
    return chosen


def measure_reads(stack: Stack, args: argparse.Namespace) -> None:
    """The job read against the bare view on each installed server, one server at a time."""
    servers = [name for name in args.servers.split(",") if installed(name)]
    key_headers = {"X-API-Key": api_key(stack)}
    job_path, key_job_path = submitted_job(stack, {}), submitted_job(stack, key_headers)
    print(
        f"{args.connections} keep-alive connections from {args.clients} client processes, "
        f"{args.processes} server processes, {args.seconds:g} s per measurement; "
        "requests/s, and the server's CPU ms per request"
    )
    print(
        f"{'server':20} {'bare JSON view':>18} {'GET /api/v1/jobs/{id}':>22} {'ratio':>6}"
        f" {'with an API key':>18} {'ratio':>6} {'errors':>7}"
    )
    ratios = {}
    for server in servers:
        port = serve(stack, server, args.processes)
        group = stack.processes[server].pid  # the server's processes are in its own group
        load = (args.seconds, args.connections, args.clients, group)
        throughput(port, job_path, 2, args.connections, args.clients, group)  # warm up
        bare = throughput(port, "/health/live", *load)
        api = throughput(port, job_path, *load)
        keyed = throughput(port, Request("GET", key_job_path, headers=key_headers), *load)
        stack.stop(server)  # one server at a time: they share the machine's cores
        errors = bare.errors + api.errors + keyed.errors
        ratios[server] = api.per_second / bare.per_second
        print(
            f"{server:20} {figures(bare)} {figures(api):>22} {ratios[server]:6.2f}"
            f" {figures(keyed)} {keyed.per_second / bare.per_second:6.2f} {errors:7d}"
        )
    if SERVED_BY in ratios:
        ratio = ratios[SERVED_BY]
        print(
            f"\njob read / bare view on {SERVED_BY} (`make serve`): {ratio:.2f}, "
            f"goal {JOB_READ_GOAL}: {JOB_READ_GOAL.verdict(ratio)}"
        )


# --- the floor under a submission --------------------------------------------------------
FLOOR_SETTINGS = "bench.floor_settings"  # the project's, with the bare views' URLs (bench/floor_urls.py)
SUBMIT_PATH = "/api/v1/process/grayscale"
UPLOAD_SIZE = (1920, 1080)  # as `make bench` uploads
WARM_UP_S = 1.0


@dataclass(frozen=True)
class UploadFigures:
    upload_bytes: int
    rates: dict[str, Rate]  # by what was asked (upload_requests' labels), in order
    purged: int  # submissions left in the queue, which no worker consumed


def multipart_upload(jpeg: bytes) -> tuple[bytes, str]:
    """The body and Content-Type of a submission of `jpeg` as `image`, as `make bench`'s client sends it."""
    request = httpx.Request("POST", "http://bench/", files={"image": ("bench.jpg", jpeg, "image/jpeg")})
    return request.read(), request.headers["Content-Type"]


def upload_requests(body: bytes, content_type: str) -> dict[str, Request]:
    """What is measured, by label: the bare views, then the real submission, all with the same upload."""
    form = {"Content-Type": content_type}
    result_kb = floor_views.RESULT_SIZE // 1000
    return {
        "bare JSON view, GET, no body": Request("GET", floor_views.PING_PATH),
        "bare view reading the upload, JSON answer": Request("POST", floor_views.UPLOAD_PATH, body, form),
        f"the same, answering {result_kb} KB": Request("POST", floor_views.UPLOAD_RESULT_PATH, body, form),
        f"POST {SUBMIT_PATH}, 202, no worker": Request("POST", SUBMIT_PATH, body, form, expect=202),
    }


def measure_uploads(stack: Stack, args: argparse.Namespace) -> UploadFigures:
    """Each of upload_requests on uvicorn under bench.floor_settings, after the stack's workers have
    stopped: the submissions wait in their queue, which is purged at the end."""
    stack.stop(*[name for name in stack.processes if name.startswith("worker")])
    body, content_type = multipart_upload(photo_jpeg(*UPLOAD_SIZE))
    requests = upload_requests(body, content_type)
    name = f"{SERVED_BY}-floor"
    port = serve(stack, SERVED_BY, args.processes, name, DJANGO_SETTINGS_MODULE=FLOOR_SETTINGS)
    group = stack.processes[name].pid
    try:
        rates = {}
        for label, request in requests.items():
            throughput(port, request, WARM_UP_S, args.connections, args.clients, group)
            rates[label] = throughput(port, request, args.seconds, args.connections, args.clients, group)
    finally:
        stack.stop(name)
        purged = purge(stack, DEFAULT_POOL)
    return UploadFigures(len(body), rates, purged)


def purge(stack: Stack, queue: str) -> int:
    """Empty `queue` of the stack's vhost; the messages it held."""
    with closing(pika.BlockingConnection(pika.URLParameters(stack.env["BROKER_URL"]))) as connection:
        return connection.channel().queue_purge(queue).method.message_count


def upload_report(args: argparse.Namespace, found: UploadFigures) -> str:
    lines = [
        f"\nThe floor under a submission, on {SERVED_BY} (`make serve`), {args.processes} processes, "
        f"{args.connections} connections from {args.clients} client processes, {args.seconds:g} s each: "
        f"the same {UPLOAD_SIZE[0]}x{UPLOAD_SIZE[1]} JPEG, {found.upload_bytes / 1024:.0f} KB multipart; "
        f"bare views under {FLOOR_SETTINGS}. No worker ran: {found.purged} submissions purged after.",
        f"{'request':46} {'r/s':>7} {'server CPU/request':>19} {'errors':>7}",
    ]
    for label, rate in found.rates.items():
        cpu = f"{rate.server_cpu_ms:.2f} ms" if rate.server_cpu_ms is not None else "? ms"
        lines.append(f"{label:46} {rate.per_second:7.0f} {cpu:>19} {rate.errors:7d}")
    lines += goal_shares(found.rates)
    return "\n".join(lines)


def goal_shares(rates: dict[str, Rate]) -> list[str]:
    """Each request's server CPU as a share of the server's goal per job (a one-request job)."""
    goal = SERVER_CPU_GOAL.limit
    shares = [
        f"  {label}: {rate.server_cpu_ms:.2f} ms, {rate.server_cpu_ms / goal:.0%} of the goal's {goal:g} ms"
        for label, rate in rates.items()
        if rate.server_cpu_ms is not None
    ]
    heading = f"Server CPU per job, goal {SERVER_CPU_GOAL} (a job in one request, its result delivered):"
    return [heading, *shares]


def figures(rate: Rate) -> str:
    cpu = f"{rate.server_cpu_ms:4.2f} ms" if rate.server_cpu_ms is not None else "   ? ms"
    return f"{rate.per_second:6.0f} r/s {cpu}"


if __name__ == "__main__":
    main()
