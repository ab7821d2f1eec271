"""For operators: queues, statistics, stored files, health."""

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Router, Status

from gateway.api.auth import READ_LIMIT, SUBMIT_LIMIT, CallerRequest
from gateway.api.schemas import CleanupOut, ErrorOut, FileStatsOut, HealthOut, QueueStatusOut, StatisticsOut
from gateway.http.errors import ApiError
from gateway.ops import health
from gateway.ops.disclosure import opaque_label
from gateway.ops.snapshots import Snapshot
from processing.jobs import cleanup, queues, stats
from processing.worker import admission

router = Router(tags=["system"])

AUTH_ERRORS = {401: ErrorOut, 429: ErrorOut, 503: ErrorOut}  # 503: the database is down


def require_staff(request: CallerRequest) -> None:
    if not request.auth.is_staff:
        raise ApiError(403, "staff_only", "only staff users and staff API keys may do this")


@router.get(
    "/queue/status",
    response={200: QueueStatusOut, **AUTH_ERRORS},
    throttle=READ_LIMIT,
    url_name="queues",
)
def queue_status(request: CallerRequest) -> dict[str, Any]:
    """Per queue, from the broker itself: messages ready, delayed, in flight, dead-lettered; consumers.
    Per worker machine: its pixel budget, the pixels its jobs hold and the jobs waiting for memory.
    Staff see each machine's host name; anyone else an opaque label in its place. Read at most once
    every two seconds per gateway process (gateway.ops.snapshots)."""
    status = QUEUE_STATUS.get()
    return status if request.auth.is_staff else without_host_names(status)


def read_queue_status() -> dict[str, Any]:
    return {
        **queues.queue_status(),
        **stats.in_flight_counts(),
        "pools": stats.pool_counts(),
        "memory": admission.machines(),
    }


QUEUE_STATUS = Snapshot(read_queue_status)


def without_host_names(status: dict[str, Any]) -> dict[str, Any]:
    """The queue status as anyone may see it: each machine labelled, not named (gateway.ops.disclosure)."""
    memory = [{**machine, "host": opaque_label("machine", machine["host"])} for machine in status["memory"]]
    return {**status, "memory": memory}


@router.get(
    "/statistics",
    response={200: StatisticsOut, **AUTH_ERRORS},
    throttle=READ_LIMIT,
    url_name="statistics",
)
def statistics(request: CallerRequest) -> dict[str, Any]:
    """The caller's jobs (all jobs for staff): counts, throughput, and queue-wait and processing durations."""
    return stats.statistics(request.auth.visible_jobs())


@router.get(
    "/files/stats",
    response={200: FileStatsOut, 403: ErrorOut, **AUTH_ERRORS},
    throttle=READ_LIMIT,
    url_name="file_stats",
)
def file_stats(request: CallerRequest) -> dict[str, Any]:
    """Stored uploads and results, and how much of it is past its retention (staff only)."""
    require_staff(request)
    return stats.file_stats()


@router.post(
    "/files/cleanup",
    response={200: CleanupOut, 403: ErrorOut, **AUTH_ERRORS},
    throttle=SUBMIT_LIMIT,
    url_name="file_cleanup",
)
def file_cleanup(request: CallerRequest) -> dict[str, int]:
    """Remove the files of jobs finished more than FILE_TTL_SECONDS ago, and stored files whose job is
    gone (staff only). `manage.py cleanup_files --every N` does this on a schedule."""
    require_staff(request)
    return cleanup.clean_up()


@router.get(
    "/health", response={200: HealthOut, 503: HealthOut}, auth=None, exclude_none=True, url_name="health"
)
def api_health(request: HttpRequest, response: HttpResponse) -> Status[dict[str, Any]]:
    """Overall status (503 when a required dependency is down); for staff and METRICS_TOKEN, each
    dependency named with its state and latency."""
    status, body = health.readiness_for(request)
    if status == 503:
        response["Retry-After"] = "5"
    return Status(status, body)
