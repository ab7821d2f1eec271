"""`make bench-api`: request throughput of GET /api/v1/jobs/{id} against a bare Django JSON view.

Both are served the same way, by the same server of the full stack, in one run, once on
uvicorn (ASGI) and once on gunicorn (WSGI): the bare view is /health/live (a function
returning JsonResponse, behind the same middleware), so the ratio is what the API's own
work (auth, rate limit, the job query, serialisation) costs per request.

    python -m bench.api [--seconds 10] [--connections 16] [--clients 2] [--gunicorn-workers 2]
"""

import argparse
import http.client
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


def serve_with_gunicorn(stack: Stack, workers: int) -> int:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "project.wsgi",
        "-c",
        "project/gunicorn_conf.py",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
    ]
    stack.spawn("gunicorn", command)
    stack.wait_until(lambda: answers(port), "gunicorn to answer")
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
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    args = parser.parse_args()

    with Stack(workers=1, threads=1) as stack:
        image = io.BytesIO()
        Image.linear_gradient("L").save(image, "JPEG")
        job = httpx.post(
            f"{stack.base_url}/api/v1/process/grayscale", files={"image": ("a.jpg", image.getvalue())}
        )
        job_path = f"/api/v1/jobs/{job.json()['job_id']}"
        servers = {
            "uvicorn, 1 process": stack.port,
            f"gunicorn, {args.gunicorn_workers} processes": serve_with_gunicorn(stack, args.gunicorn_workers),
        }
        print(
            f"{args.connections} keep-alive connections from {args.clients} client processes, "
            f"{args.seconds:g} s per measurement"
        )
        print(
            f"{'server':24} {'bare JSON view':>15} {'GET /api/v1/jobs/{id}':>22} {'ratio':>6} {'errors':>7}"
        )
        for name, port in servers.items():
            load = (args.seconds, args.connections, args.clients)
            throughput(port, job_path, 2, args.connections, args.clients)  # warm up
            bare, bare_errors = throughput(port, "/health/live", *load)
            api, api_errors = throughput(port, job_path, *load)
            print(
                f"{name:24} {bare:11.0f} r/s {api:18.0f} r/s {api / bare:6.2f} {bare_errors + api_errors:7d}"
            )


if __name__ == "__main__":
    main()
