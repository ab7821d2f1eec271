"""Liveness and readiness: each dependency named, with its state and latency, and each worker pool
whose jobs wait with no worker to take them.

Anyone may ask whether the service is live or ready (probes, load balancers); which dependency is
down, and why, is for operators (gateway.auth.callers.is_operator): an error names hosts and ports.
Unauthenticated and unlimited, so the checks run at most once every two seconds per process
(gateway.ops.snapshots), however often they are asked.
"""

import time
from collections.abc import Callable
from typing import Any

import pika
import redis
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection
from django.http import HttpRequest, JsonResponse

from gateway.auth.callers import is_operator
from gateway.ops.snapshots import Snapshot
from processing.jobs import queues, stats


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_broker() -> None:
    if not settings.BROKER_URL:
        return  # embedded: the in-memory broker lives in this process
    pika.BlockingConnection(pika.URLParameters(queues.broker_url())).close()


def check_redis() -> None:
    if not settings.REDIS_URL:
        return  # embedded: in-memory channel layer and cache
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    finally:
        client.close()


def check_storage() -> None:
    default_storage.exists("health-check")


class PoolsWithoutWorkers(Exception):
    """Jobs wait in pools no worker consumes: they would wait there in silence."""


def check_pools() -> None:
    """Every pool with queued jobs has a worker on its queue (processing.jobs.pools).

    Cheap when nothing waits: one grouped query, and the broker is asked only about pools with
    queued jobs, in one connection.
    """
    if not settings.BROKER_URL:
        return  # embedded: the server's own workers consume every pool
    queued = {row["pool"]: row["jobs_queued"] for row in stats.pool_counts() if row["jobs_queued"]}
    silent = queues.unconsumed(queued) if queued else []
    if silent:
        waiting = ", ".join(f"{pool} ({queued[pool]} queued)" for pool in silent)
        raise PoolsWithoutWorkers(f"no worker consumes {waiting}")


# name -> (check, required). Redis is optional: without it, WebSocket pushes stop but polling works.
# A pool without workers leaves this gateway able to serve (other pools run, reads work): it degrades
# readiness, named for operators, rather than taking every gateway out of service.
CHECKS: dict[str, tuple[Callable[[], None], bool]] = {
    "database": (check_database, True),
    "broker": (check_broker, True),
    "redis": (check_redis, False),
    "storage": (check_storage, True),
    "pools": (check_pools, False),
}


def run_check(check: Callable[[], None], required: bool) -> dict[str, Any]:
    started = time.perf_counter()
    state: dict[str, Any]
    try:
        check()
        state = {"status": "up"}
    except Exception as exc:
        state = {"status": "down", "error": f"{exc.__class__.__name__}: {exc}"[:300]}
    state.update(required=required, latency_ms=round((time.perf_counter() - started) * 1000, 2))
    return state


def readiness() -> tuple[int, dict[str, Any]]:
    checks = {name: run_check(check, required) for name, (check, required) in CHECKS.items()}
    required_down = any(c["status"] == "down" and c["required"] for c in checks.values())
    any_down = any(c["status"] == "down" for c in checks.values())
    overall = "down" if required_down else "degraded" if any_down else "ok"
    mode = "full-stack" if settings.BROKER_URL else "embedded"
    return (503 if required_down else 200), {"status": overall, "mode": mode, "checks": checks}


RECENT_READINESS = Snapshot(readiness)


def live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def public_view(body: dict[str, Any]) -> dict[str, Any]:
    """What anyone may see of a readiness answer: the overall status."""
    return {"status": body["status"]}


def readiness_for(request: HttpRequest) -> tuple[int, dict[str, Any]]:
    status, body = RECENT_READINESS.get()
    return status, body if is_operator(request) else public_view(body)


def ready(request: HttpRequest) -> JsonResponse:
    status, body = readiness_for(request)
    response = JsonResponse(body, status=status)
    if status == 503:
        response["Retry-After"] = "5"
    return response
