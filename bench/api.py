"""`make bench-api`: request throughput of GET /api/v1/jobs/{id} against a bare Django JSON view,
on every server that is installed: uvicorn and granian (ASGI) and gunicorn (WSGI).

Each server runs the same Django project with the same middleware and the same number of
processes, on the full stack (PostgreSQL, Redis, RabbitMQ), one after the other in one run. The
bare view is /health/live (a function returning JsonResponse), so the ratio job read / bare view
is what the API's own work (auth, rate limit, the job query, serialisation) costs per request.

    python -m bench.api [--seconds 10] [--connections 16] [--clients 2] [--processes 2]
                        [--servers uvicorn,granian,gunicorn]
"""

import argparse
import http.client
import importlib.util
import io
import multiprocessing
import sys
import time

import httpx
from PIL import Image

from bench.stack import Stack, free_port


def hammer(port: int, path: str, seconds: float, connections: int, results) -> None:
    """One client process: `connections` keep-alive connections taking turns, for `seconds`."""
    pool = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(connections)]
    done = errors = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for connection in pool:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            done += 1
            errors += response.status != 200
    results.put((done, errors))


def throughput(port: int, path: str, seconds: float, connections: int, clients: int) -> tuple[float, int]:
    results = multiprocessing.Queue()
    per_client = max(1, connections // clients)
    workers = [
        multiprocessing.Process(target=hammer, args=(port, path, seconds, per_client, results))
        for _ in range(clients)
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    counts = [results.get() for _ in workers]
    elapsed = time.monotonic() - started
    for worker in workers:
        worker.join()
    return sum(done for done, _ in counts) / elapsed, sum(errors for _, errors in counts)


def server_commands(port: int, processes: int) -> dict[str, list[str]]:
    """How each server is started, as `make serve` / `make serve-http` would, on `port`."""
    python = [sys.executable, "-m"]
    return {
        "uvicorn": [
            *python,
            "uvicorn",
            "project.asgi:application",
            *("--host", "127.0.0.1", "--port", str(port), "--workers", str(processes)),
            *("--no-access-log", "--loop", "uvloop", "--http", "httptools", "--forwarded-allow-ips", ""),
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
    return importlib.util.find_spec(server) is not None


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--processes", type=int, default=2, help="server processes, for every server")
    parser.add_argument("--servers", default="uvicorn,granian,gunicorn", help="those installed are measured")
    args = parser.parse_args()
    servers = [name for name in args.servers.split(",") if installed(name)]

    with Stack(workers=1, threads=1) as stack:
        image = io.BytesIO()
        Image.linear_gradient("L").save(image, "JPEG")
        job = httpx.post(
            f"{stack.base_url}/api/v1/process/grayscale", files={"image": ("a.jpg", image.getvalue())}
        )
        job_path = f"/api/v1/jobs/{job.json()['job_id']}"
        print(
            f"{args.connections} keep-alive connections from {args.clients} client processes, "
            f"{args.processes} server processes, {args.seconds:g} s per measurement"
        )
        print(
            f"{'server':10} {'bare JSON view':>15} {'GET /api/v1/jobs/{id}':>22} {'ratio':>6} {'errors':>7}"
        )
        for server in servers:
            port = serve(stack, server, args.processes)
            load = (args.seconds, args.connections, args.clients)
            throughput(port, job_path, 2, args.connections, args.clients)  # warm up
            bare, bare_errors = throughput(port, "/health/live", *load)
            api, api_errors = throughput(port, job_path, *load)
            stack.stop(server)  # one server at a time: they share the machine's cores
            errors = bare_errors + api_errors
            print(f"{server:10} {bare:11.0f} r/s {api:18.0f} r/s {api / bare:6.2f} {errors:7d}")


if __name__ == "__main__":
    main()
