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

    python -m bench.api [--seconds 10] [--connections 16] [--clients 2] [--processes 2]
                        [--servers uvicorn,uvicorn-django-asgi,gunicorn-uvicorn,granian,gunicorn]
"""

import argparse
import http.client
import importlib.util
import io
import multiprocessing
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
from PIL import Image

from bench.pipeline import Goal, OtherLoad
from bench.stack import Stack, free_port
from scaler.backends.processes import MANAGE

# The job read against the bare view on the server `make serve` runs (issue 23).
JOB_READ_GOAL = Goal(0.8)
SERVED_BY = "uvicorn"
SERVERS = ("uvicorn", "uvicorn-django-asgi", "gunicorn-uvicorn", "granian", "gunicorn")


def hammer(port: int, path: str, headers: dict[str, str], seconds: float, connections: int, results) -> None:
    """One client process: `connections` keep-alive connections taking turns, for `seconds`."""
    pool = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(connections)]
    done = errors = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for connection in pool:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            done += 1
            errors += response.status != 200
    results.put((done, errors))


@dataclass(frozen=True)
class Rate:
    per_second: float
    errors: int
    server_cpu_ms: float | None  # the server's CPU per request, all of its processes


def throughput(
    port: int, path: str, seconds: float, connections: int, clients: int, server_group: int, headers=None
) -> Rate:
    results = multiprocessing.Queue()
    per_client = max(1, connections // clients)
    workers = [
        multiprocessing.Process(target=hammer, args=(port, path, headers or {}, seconds, per_client, results))
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


def serve(stack: Stack, server: str, processes: int) -> int:
    port = free_port()
    stack.spawn(server, server_commands(port, processes)[server])
    stack.wait_until(lambda: answers(port), f"{server} to answer")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--processes", type=int, default=2, help="server processes, for every server")
    parser.add_argument("--servers", default=",".join(SERVERS), help="those installed are measured")
    args = parser.parse_args()
    servers = [name for name in args.servers.split(",") if installed(name)]

    with Stack(workers=1, threads=1) as stack:
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
            keyed = throughput(port, key_job_path, *load, headers=key_headers)
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


def figures(rate: Rate) -> str:
    cpu = f"{rate.server_cpu_ms:4.2f} ms" if rate.server_cpu_ms is not None else "   ? ms"
    return f"{rate.per_second:6.0f} r/s {cpu}"


if __name__ == "__main__":
    main()
