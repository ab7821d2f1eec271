"""Removing stored files: those of jobs finished more than FILE_TTL_SECONDS ago, and those whose
job row is gone. `manage.py cleanup_files` and POST /api/v1/files/cleanup run it."""

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from processing import storage
from processing.models import Job

# A submission stores its input (and a reused result) just before its job row commits: a folder
# without a row is an orphan only once it is older than any submission in progress.
ORPHAN_GRACE = timedelta(hours=1)
ORPHAN_LOOKUP_BATCH = 500


def expired_jobs(now: datetime | None = None) -> QuerySet[Job]:
    """Finished jobs past FILE_TTL_SECONDS whose files are still stored."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.FILE_TTL_SECONDS)
    return Job.objects.filter(status__in=Job.FINISHED, finished_at__lt=cutoff, files_removed_at__isnull=True)


def remove_expired_files(now: datetime | None = None) -> dict[str, int]:
    """Delete the stored input and output of every expired job; the job rows stay, marked."""
    removed = freed = count = 0
    stored = ("id", "input_key", "output_key", "fallback_key", "input_bytes", "output_bytes")
    for job in expired_jobs(now).only(*stored):
        keys = job.file_keys
        storage.delete_job_files(*keys)
        Job.objects.filter(id=job.id).update(files_removed_at=timezone.now())
        count += 1
        removed += len(keys)
        freed += (job.input_bytes or 0) + (job.output_bytes or 0 if job.output_key else 0)
    return {"jobs": count, "files_removed": removed, "bytes_freed": freed}


def clean_up(now: datetime | None = None) -> dict[str, int]:
    """One clean-up pass: the files of expired jobs, then stored files whose job row is gone."""
    now = now or timezone.now()
    return {**remove_expired_files(now), "orphans_removed": remove_orphaned_files(now)}


def remove_orphaned_files(now: datetime | None = None) -> int:
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


def stored_before(key: str, cutoff: datetime) -> bool:
    return storage.modified_time(key) < cutoff


def is_uuid(name: str) -> bool:
    try:
        uuid.UUID(name)
        return True
    except ValueError:
        return False
