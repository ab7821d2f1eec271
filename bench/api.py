"""`make bench-api`: request throughput of GET /api/v1/jobs/{id} against a bare Django JSON view.

Both are served the same way, by the same uvicorn process of the full stack, in one run:
the bare view is /health/live (a function returning JsonResponse, behind the same
middleware), so the ratio is what the API's own work (auth, rate limit, the job query,
serialisation) costs per request.

    python -m bench.api [--seconds 10] [--connections 16] [--clients 2]
"""

import argparse
import http.client
import multiprocessing
import time

import io

import httpx
from PIL import Image

from bench.stack import Stack


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    args = parser.parse_args()

    with Stack(workers=1, threads=1) as stack:
        image = io.BytesIO()
        Image.linear_gradient("L").save(image, "JPEG")
        job = httpx.post(f"{stack.base_url}/api/v1/process/grayscale", files={"image": ("a.jpg", image.getvalue())})
        job = job.json()
        path = f"/api/v1/jobs/{job['job_id']}"
        for warm_up in (path, "/health/live"):
            throughput(stack.port, warm_up, 2, args.connections, args.clients)
        bare, bare_errors = throughput(stack.port, "/health/live", args.seconds, args.connections, args.clients)
        api, api_errors = throughput(stack.port, path, args.seconds, args.connections, args.clients)

    print(f"uvicorn, 1 process, {args.connections} keep-alive connections from {args.clients} client processes, "
          f"{args.seconds:g} s each")
    print(f"{'endpoint':34} {'req/s':>9} {'errors':>7}")
    print(f"{'GET /health/live (bare JSON view)':34} {bare:9.0f} {bare_errors:7d}")
    print(f"{'GET /api/v1/jobs/{id}':34} {api:9.0f} {api_errors:7d}")
    print(f"ratio jobs/bare: {api / bare:.2f}")


if __name__ == "__main__":
    main()
