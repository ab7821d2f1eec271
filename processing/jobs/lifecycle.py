"""A job's transitions from its claim: hold, progress, complete, fail, release, cancel, and requeue.

Every state change is a conditional update, so that redeliveries, duplicate
messages, cancellation and a worker that died mid-job all resolve to one outcome;
each change that happened is announced once, here (processing.events). Creating jobs
is `processing.jobs.submissions`, publishing and announcing them `processing.jobs.publishing`.
Who holds a running job is `processing.jobs.lease`, behind this module: the worker talks to the
lifecycle alone.
"""

import logging
import time
from contextlib import AbstractContextManager
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from processing import events
from processing.errors import Cancelled
from processing.jobs import lease
from processing.models import Job, JobId

logger = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL = 0.5  # seconds; a fast job must not flood the database or its watchers


def worker_id() -> str:
    """This worker thread's name, the one its claims and leases carry."""
    return lease.worker_id()


def claim(job_id: JobId, worker: str) -> Job | None:
    """Start the job on `worker` (see lease.claim) and announce it; None when there is nothing to do.

    A job out of attempts is failed here rather than started again: see `give_up`.
    """
    job = lease.claim(job_id, worker)
    if job is not None:
        events.announce(job)
    else:
        give_up(job_id)
    return job


def give_up(job_id: JobId) -> bool:
    """Fail a job that would otherwise start for the (JOB_MAX_ATTEMPTS + 1)th time; False when it wouldn't.

    Every attempt so far ended without a result: a job whose worker is killed each time
    (say, for memory) would otherwise be redelivered forever.
    """
    limit = settings.JOB_MAX_ATTEMPTS
    message = (
        f"started {limit} times (JOB_MAX_ATTEMPTS) and never finished: its worker was lost each time, "
        "for example killed for lack of memory, so it is not started again"
    )
    return _fail(lease.out_of_attempts(job_id), job_id, "worker_lost", message)


def held(job_id: JobId, worker: str) -> AbstractContextManager[None]:
    """Keep `worker`'s lease on the job alive while the block runs (the process's renewer renews it)."""
    return lease.renewer.hold(job_id, worker)


def holder(job_id: JobId) -> tuple[str, float] | None:
    """(worker, seconds left) when a live worker holds the job, else None: finished, cancelled, unknown
    or with its lease run out."""
    return lease.holder(job_id)


def release(job_id: JobId, worker: str) -> None:
    """Give the job back after a transient error, so that the retry can claim it at once."""
    lease.release(job_id, worker)


class ProgressReporter:
    """The progress callback handed to operations: a throttled write and a cancellation checkpoint.

    The first write comes `interval` seconds after the reporter is made, as the job's work begins
    (processing.worker.progress cuts that work into stages): a job that finishes sooner reports no
    progress at all, since "processing" and then "completed" say all there is.
    """

    def __init__(self, job: Job, worker: str, interval: float | None = None):
        self.job, self.worker = job, worker
        self.interval = PROGRESS_WRITE_INTERVAL if interval is None else interval
        self._last_write = time.monotonic()

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        if now - self._last_write < self.interval:
            return
        self._last_write = now
        fraction = max(0.0, min(1.0, fraction))
        updated = lease.held_by(self.job.id, self.worker).update(
            progress=fraction, lease_expires_at=lease.expires()
        )
        if not updated:
            raise Cancelled(f"job {self.job.id} is no longer ours to process")
        self.job.progress = fraction
        events.announce_progress(self.job)


def complete(job: Job, worker: str, **result_fields: Any) -> bool:
    """Record the result on the row and on `job`; False when it was cancelled or taken over meanwhile."""
    finished = {
        "status": Job.COMPLETED,
        "progress": 1.0,
        "finished_at": timezone.now(),
        "lease_expires_at": None,
    }
    updated = lease.update_held(job.id, worker, **finished, **result_fields)
    if updated:
        for name, value in {**finished, **result_fields}.items():
            setattr(job, name, value)
        events.announce(job)
    return bool(updated)


def result_unwanted(job_id: JobId) -> bool:
    """After a `complete` that found the job no longer ours: True when it was cancelled or deleted, so
    no one will ever serve the files made for it; False when another worker took it over (it writes
    the same keys, so the files are its)."""
    return not Job.objects.filter(id=job_id).exclude(status=Job.CANCELLED).exists()


def fail(job_id: JobId, code: str, message: str, worker: str | None = None) -> bool:
    """Mark the job failed with a reason; only a job still in flight (and, given `worker`, held by it)."""
    jobs = (
        lease.held_by(job_id, worker)
        if worker
        else Job.objects.filter(id=job_id, status__in=[Job.QUEUED, Job.PROCESSING])
    )
    return _fail(jobs, job_id, code, message)


def fail_unless_held_elsewhere(job_id: JobId, code: str, message: str, worker: str) -> bool:
    """Fail the job unless a live worker other than `worker` holds it (and will finish it)."""
    return _fail(lease.free_or_held_by(job_id, worker), job_id, code, message)


def _fail(jobs: QuerySet[Job], job_id: JobId, code: str, message: str) -> bool:
    updated = jobs.update(
        status=Job.FAILED,
        error_code=code,
        error_message=message[:2000],
        finished_at=timezone.now(),
        lease_expires_at=None,
    )
    if updated:
        logger.info("job failed: %s: %s", code, message, extra={"job_id": str(job_id)})
        events.announce(Job.objects.get(id=job_id))
    return bool(updated)


def cancel(job_id: JobId) -> bool:
    """Cancel a queued or running job; False when it had already finished.

    A queued job's message finds it cancelled and does nothing; a running one stops
    at its next progress checkpoint, and its result, if it still finishes, is dropped.
    """
    updated = Job.objects.filter(id=job_id, status__in=[Job.QUEUED, Job.PROCESSING]).update(
        status=Job.CANCELLED, finished_at=timezone.now(), lease_expires_at=None
    )
    if updated:
        events.announce(Job.objects.get(id=job_id))
    return bool(updated)


def requeue_failed(job_id: JobId) -> bool:
    """Failed → queued with a clean slate and JOB_MAX_ATTEMPTS new attempts; `publishing.requeue` sends it.

    False when the job is no longer failed (the conditional update makes a double click requeue it
    once), or when it ran out of attempts (`give_up`): a job that killed its worker every time
    would kill the next one too, so it stays failed.
    """
    poisoned = Q(error_code="worker_lost", attempts__gte=settings.JOB_MAX_ATTEMPTS)
    reset = (
        Job.objects.filter(id=job_id, status=Job.FAILED)
        .exclude(poisoned)
        .update(
            status=Job.QUEUED,
            progress=0.0,
            attempts=0,
            error_code="",
            error_message="",
            worker_id="",
            started_at=None,
            finished_at=None,
            lease_expires_at=None,
            enqueued_at=None,
            processing_ms=None,
            metrics={},
        )
    )
    return bool(reset)
