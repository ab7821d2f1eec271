"""Operators' figures from the job table: jobs by status and service, durations, jobs in flight,
stored files and bytes. Removing files is processing.jobs.cleanup's."""

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from processing.jobs.cleanup import expired_jobs
from processing.models import Job

DURATION_SAMPLE = 10_000  # the most recent finished jobs the duration figures are computed from


def statistics(jobs: QuerySet[Job], now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    by_service: dict[str, dict[str, int]] = {}
    for service, status, count in jobs.values_list("service", "status").annotate(n=Count("id")).order_by():
        by_service.setdefault(service, {})[status] = count
    by_status: dict[str, int] = {status: 0 for status, _ in Job.STATUS_CHOICES}
    for counts in by_service.values():
        for status, count in counts.items():
            by_status[status] += count
    recent = list(
        jobs.filter(status=Job.COMPLETED, finished_at__gte=now - timedelta(hours=1))
        .order_by("-finished_at")
        .values_list("created_at", "started_at", "finished_at", "processing_ms")[:DURATION_SAMPLE]
    )
    five_minutes_ago = now - timedelta(minutes=5)
    last_5m = [finished for _, _, finished, _ in recent if finished and finished >= five_minutes_ago]
    waits = [(started - created).total_seconds() * 1000 for created, started, _, _ in recent if started]
    return {
        "total": sum(by_status.values()),
        "by_status": by_status,
        "by_service": by_service,
        "completed_per_minute_5m": round(len(last_5m) / 5, 2),
        "completed_per_minute_60m": round(len(recent) / 60, 2),
        "queue_wait": duration_stats(waits),
        "processing": duration_stats([ms for *_, ms in recent if ms is not None]),
    }


def duration_stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"mean_ms": None, "p95_ms": None, "samples": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return {
        "mean_ms": round(sum(ordered) / len(ordered), 2),
        "p95_ms": round(p95, 2),
        "samples": len(ordered),
    }


def total(jobs: QuerySet[Job], field: str) -> int:
    return jobs.aggregate(n=Sum(field))["n"] or 0


def file_group(inputs: QuerySet[Job], outputs: QuerySet[Job]) -> dict[str, Any]:
    """Files and bytes of the inputs of `inputs` and the outputs of `outputs`."""
    outputs = outputs.exclude(output_key="")
    return {
        "files": inputs.count() + outputs.count(),
        "bytes": total(inputs, "input_bytes") + total(outputs, "output_bytes"),
    }


def file_stats() -> dict[str, Any]:
    stored = Job.objects.filter(files_removed_at__isnull=True)
    none = Job.objects.none()
    expired = expired_jobs()
    return {
        "uploads": file_group(stored, none),
        "results": file_group(none, stored),
        "expired": file_group(expired, expired),
        "ttl_seconds": settings.FILE_TTL_SECONDS,
    }


def in_flight() -> dict[str, Any]:
    """The counts of jobs queued and of jobs processing, as aggregates."""
    return {
        "jobs_queued": Count("id", filter=Q(status=Job.QUEUED)),
        "jobs_processing": Count("id", filter=Q(status=Job.PROCESSING)),
    }


def in_flight_counts(pool: str | None = None) -> dict[str, Any]:
    """Jobs queued and processing: all of them, or one pool's."""
    found = Job.objects.filter(pool=pool) if pool else Job.objects.all()
    return found.aggregate(**in_flight())


def pool_counts() -> list[dict[str, Any]]:
    """Per pool with jobs in flight: how many are queued and processing (TRAFFIC_SPLIT)."""
    in_flight_jobs = Job.objects.filter(status__in=[Job.QUEUED, Job.PROCESSING])
    return list(in_flight_jobs.values("pool").annotate(**in_flight()).order_by("pool"))
