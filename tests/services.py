"""Real services for the tests: reachable, or skipped with a reason — and under CI=true, a failure."""

import os
import socket
from urllib.parse import urlparse

import pytest

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


def require(*services: str) -> None:
    """Skip the test when a service is down, unless under CI, where that is a failure."""
    missing = [name for name in services if not reachable(url_of(name))]
    if not missing:
        return
    reason = f"needs {', '.join(missing)} ({', '.join(url_of(m) for m in missing)} unreachable)"
    if IN_CI:
        pytest.fail(f"CI=true and a service is missing: {reason}", pytrace=False)
    pytest.skip(reason)
