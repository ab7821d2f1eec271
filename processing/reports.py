"""Operators' numbers from the job table: statistics, stored files, and their clean-up."""

import uuid
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.utils import timezone

from processing import storage
from processing.models import Job

DURATION_SAMPLE = 10_000  # the most recent finished jobs the duration figures are computed from
# A submission stores its input (and a reused result) just before its job row commits: a folder
# without a row is an orphan only once it is older than any submission in progress.
ORPHAN_GRACE = timedelta(hours=1)
ORPHAN_LOOKUP_BATCH = 500


def statistics(jobs, now=None) -> dict:
    now = now or timezone.now()
    by_service: dict[str, dict[str, int]] = {}
    for service, status, count in jobs.values_list("service", "status").annotate(n=Count("id")).order_by():
        by_service.setdefault(service, {})[status] = count
    by_status: dict[str, int] = {status: 0 for status, _ in Job.STATUS_CHOICES}
    for counts in by_service.values():
        for status, count in counts.items():
            by_status[status] += count
    recent = (
        jobs.filter(status=Job.COMPLETED, finished_at__gte=now - timedelta(hours=1))
        .order_by("-finished_at")
        .values_list("created_at", "started_at", "finished_at", "processing_ms")[:DURATION_SAMPLE]
    )
    recent = list(recent)
    waits = [(started - created).total_seconds() * 1000 for created, started, _, _ in recent if started]
    return {
        "total": sum(by_status.values()),
        "by_status": by_status,
        "by_service": by_service,
        "completed_per_minute_5m": round(sum(1 for r in recent if r[2] >= now - timedelta(minutes=5)) / 5, 2),
        "completed_per_minute_60m": round(len(recent) / 60, 2),
        "queue_wait": duration_stats(waits),
        "processing": duration_stats([ms for *_, ms in recent if ms is not None]),
    }


def duration_stats(values: list[float]) -> dict:
    if not values:
        return {"mean_ms": None, "p95_ms": None, "samples": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return {
        "mean_ms": round(sum(ordered) / len(ordered), 2),
        "p95_ms": round(p95, 2),
        "samples": len(ordered),
    }


def expired_jobs(now=None):
    """Finished jobs past FILE_TTL_SECONDS whose files are still stored."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.FILE_TTL_SECONDS)
    return Job.objects.filter(status__in=Job.FINISHED, finished_at__lt=cutoff, files_removed_at__isnull=True)


def total(jobs, field: str) -> int:
    return jobs.aggregate(n=Sum(field))["n"] or 0


def file_group(inputs, outputs) -> dict:
    """Files and bytes of the inputs of `inputs` and the outputs of `outputs`."""
    outputs = outputs.exclude(output_key="")
    return {
        "files": inputs.count() + outputs.count(),
        "bytes": total(inputs, "input_bytes") + total(outputs, "output_bytes"),
    }


def file_stats() -> dict:
    stored = Job.objects.filter(files_removed_at__isnull=True)
    none = Job.objects.none()
    expired = expired_jobs()
    return {
        "uploads": file_group(stored, none),
        "results": file_group(none, stored),
        "expired": file_group(expired, expired),
        "ttl_seconds": settings.FILE_TTL_SECONDS,
    }


def remove_expired_files(now=None) -> dict:
    """Delete the stored input and output of every expired job; the job rows stay, marked."""
    removed = freed = count = 0
    for job in expired_jobs(now).only("id", "input_key", "output_key", "input_bytes", "output_bytes"):
        keys = [key for key in (job.input_key, job.output_key) if key]
        storage.delete_job_files(*keys)
        Job.objects.filter(id=job.id).update(files_removed_at=timezone.now())
        count += 1
        removed += len(keys)
        freed += (job.input_bytes or 0) + (job.output_bytes or 0 if job.output_key else 0)
    return {"jobs": count, "files_removed": removed, "bytes_freed": freed}


def clean_up(now=None) -> dict:
    """One clean-up pass: the files of expired jobs, then stored files whose job row is gone."""
    now = now or timezone.now()
    return {**remove_expired_files(now), "orphans_removed": remove_orphaned_files(now)}


def remove_orphaned_files(now=None) -> int:
    """Delete stored files older than ORPHAN_GRACE whose job row no longer exists (e.g. a job deleted
    while a worker was still writing its output); the number of files removed."""
    cutoff = (now or timezone.now()) - ORPHAN_GRACE
    removed = 0
    for folder in storage.JOB_FOLDERS:
        job_ids = [name for name in storage.stored_job_folders(folder) if is_uuid(name)]
        for start in range(0, len(job_ids), ORPHAN_LOOKUP_BATCH):
            batch = job_ids[start : start + ORPHAN_LOOKUP_BATCH]
            existing = {
                str(job_id) for job_id in Job.objects.filter(id__in=batch).values_list("id", flat=True)
            }
            for job_id in set(batch) - existing:
                old = [key for key in storage.folder_files(folder, job_id) if stored_before(key, cutoff)]
                storage.delete_job_files(*old)
                removed += len(old)
    return removed


def stored_before(key: str, cutoff) -> bool:
    return storage.default_storage.get_modified_time(key) < cutoff


def is_uuid(name: str) -> bool:
    try:
        uuid.UUID(name)
        return True
    except ValueError:
        return False


def in_flight_counts() -> dict:
    counts = Job.objects.aggregate(
        queued=Count("id", filter=Q(status=Job.QUEUED)),
        processing=Count("id", filter=Q(status=Job.PROCESSING)),
    )
    return {"jobs_queued": counts["queued"], "jobs_processing": counts["processing"]}
