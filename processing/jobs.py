"""A job's life: publish, claim, progress, complete, fail, re-publish.

Every state change is a conditional update, so that redeliveries, duplicate
messages, cancellation and a worker that died mid-job all resolve to one outcome.
"""

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import timedelta

import dramatiq
from django.conf import settings
from django.db import connection
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from processing.errors import Cancelled
from processing.models import Job, claimable_jobs, lease_until
from processing.signals import job_changed

logger = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL = 0.5  # seconds; a fast job must not flood the database or its watchers


class BrokerUnavailable(Exception):
    """The broker did not confirm the message: the job is not queued."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


def emit(job: Job, event: str) -> None:
    # send_robust: a job never fails because an event could not be delivered.
    for receiver, result in job_changed.send_robust(sender=Job, job=job, event=event):
        if isinstance(result, Exception):
            logger.warning("event receiver %r failed: %s", receiver, result, extra={"job_id": str(job.id)})


# Publishing runs on these threads so a caller can stop waiting: Dramatiq's own enqueue
# retries a dead or blocked broker for many seconds, and a request must not hang on it.
_publishers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="publish")


def publish(job: Job) -> None:
    """Send the job's message (its id only) and record the broker's confirmation.

    Call after the job row has committed, so a worker always finds it. Raises
    BrokerUnavailable when the broker hasn't confirmed within BROKER_PUBLISH_TIMEOUT;
    a message confirmed later anyway is harmless (see `claim`).
    """
    from processing.actors import process_job  # the actor module imports this one

    sending = _publishers.submit(process_job.send, str(job.id))
    try:
        sending.result(timeout=settings.BROKER_PUBLISH_TIMEOUT)
    except FutureTimeout:
        raise BrokerUnavailable(f"no confirmation within {settings.BROKER_PUBLISH_TIMEOUT}s") from None
    except dramatiq.errors.ConnectionError as exc:
        raise BrokerUnavailable(str(exc) or exc.__class__.__name__) from exc
    Job.objects.filter(id=job.id).update(enqueued_at=timezone.now())


def claim(job_id: str, worker: str) -> Job | None:
    """Take the job for this worker, or return None when there is nothing to do."""
    now = timezone.now()
    claimed = claimable_jobs(job_id, now).update(
        status=Job.PROCESSING,
        worker_id=worker,
        lease_expires_at=lease_until(now),
        started_at=Coalesce(F("started_at"), now),
        attempts=F("attempts") + 1,
        progress=0.0,
    )
    if not claimed:
        return None
    job = Job.objects.get(id=job_id)
    emit(job, "job.processing")
    return job


def lease_holder(job_id: str) -> tuple[str, float] | None:
    """(worker, seconds left) when a live worker holds the job, else None."""
    job = Job.objects.filter(id=job_id, status=Job.PROCESSING).only("worker_id", "lease_expires_at").first()
    if job is None or job.lease_expires_at is None:
        return None
    left = (job.lease_expires_at - timezone.now()).total_seconds()
    return (job.worker_id, left) if left > 0 else None


def _mine(job_id, worker: str):
    return Job.objects.filter(id=job_id, status=Job.PROCESSING, worker_id=worker)


def release(job_id, worker: str) -> None:
    """Give the job back after a transient error, so the retry can claim it at once."""
    _mine(job_id, worker).update(lease_expires_at=timezone.now())


class LeaseKeeper:
    """Renews a job's lease from a background thread while one long step runs."""

    def __init__(self, job_id, worker: str):
        self.job_id, self.worker = job_id, worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        interval = settings.JOB_LEASE_SECONDS / 3
        try:
            while not self._stop.wait(interval):
                try:
                    _mine(self.job_id, self.worker).update(lease_expires_at=lease_until())
                except Exception:  # the next renewal may succeed; the job itself decides its fate
                    logger.warning(
                        "could not renew the lease", exc_info=True, extra={"job_id": str(self.job_id)}
                    )
        finally:
            connection.close()


class ProgressReporter:
    """The progress callback handed to operations: a throttled write and a cancellation checkpoint."""

    def __init__(self, job: Job, worker: str):
        self.job, self.worker = job, worker
        self._last_write = 0.0

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        if now - self._last_write < PROGRESS_WRITE_INTERVAL and fraction < 1.0:
            return
        self._last_write = now
        fraction = max(0.0, min(1.0, fraction))
        updated = _mine(self.job.id, self.worker).update(progress=fraction, lease_expires_at=lease_until())
        if not updated:
            raise Cancelled(f"job {self.job.id} is no longer ours to process")
        self.job.progress = fraction
        emit(self.job, "job.progress")


def complete(job: Job, worker: str, **result_fields) -> bool:
    """Record the result; False when the job was cancelled or taken over meanwhile."""
    now = timezone.now()
    updated = _mine(job.id, worker).update(
        status=Job.COMPLETED, progress=1.0, finished_at=now, lease_expires_at=None, **result_fields
    )
    if updated:
        emit(Job.objects.get(id=job.id), "job.completed")
    return bool(updated)


def fail(job_id, code: str, message: str, worker: str | None = None) -> bool:
    """Mark the job failed with a reason; only a job still in flight (and, given `worker`, held by it)."""
    jobs = (
        _mine(job_id, worker)
        if worker
        else Job.objects.filter(id=job_id, status__in=[Job.QUEUED, Job.PROCESSING])
    )
    updated = jobs.update(
        status=Job.FAILED,
        error_code=code,
        error_message=message[:2000],
        finished_at=timezone.now(),
        lease_expires_at=None,
    )
    if updated:
        logger.info("job failed: %s: %s", code, message, extra={"job_id": str(job_id)})
        emit(Job.objects.get(id=job_id), "job.failed")
    return bool(updated)


def cancel(job_id) -> bool:
    """Cancel a queued or running job; False when it had already finished.

    A queued job's message finds it cancelled and does nothing; a running one stops
    at its next progress checkpoint, and its result, if it still finishes, is dropped.
    """
    updated = Job.objects.filter(id=job_id, status__in=[Job.QUEUED, Job.PROCESSING]).update(
        status=Job.CANCELLED, finished_at=timezone.now(), lease_expires_at=None
    )
    if updated:
        emit(Job.objects.get(id=job_id), "job.cancelled")
    return bool(updated)


def requeue_failed(job_id) -> bool:
    """Failed → queued with a clean slate (attempts are kept, for the record); publish it next.

    False when the job is no longer failed: the conditional update makes a double click requeue it once.
    """
    reset = Job.objects.filter(id=job_id, status=Job.FAILED).update(
        status=Job.QUEUED,
        progress=0.0,
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
    return bool(reset)


def stale_jobs(now=None):
    """Queued jobs whose message may never have reached a worker, and jobs whose worker died."""
    now = now or timezone.now()
    unconfirmed = Q(
        status=Job.QUEUED,
        enqueued_at__isnull=True,
        created_at__lt=now - timedelta(seconds=settings.REQUEUE_UNPUBLISHED_AFTER_SECONDS),
    )
    unclaimed = Q(
        status=Job.QUEUED, enqueued_at__lt=now - timedelta(seconds=settings.REQUEUE_STALE_AFTER_SECONDS)
    )
    abandoned = Q(
        status=Job.PROCESSING,
        lease_expires_at__lt=now - timedelta(seconds=settings.REQUEUE_UNPUBLISHED_AFTER_SECONDS),
    )
    return Job.objects.filter(unconfirmed | unclaimed | abandoned)


def republish(jobs) -> int:
    """Publish each job again; a duplicate message is harmless (claims are conditional)."""
    count = 0
    for job in jobs.only("id"):
        try:
            publish(job)
        except BrokerUnavailable as exc:
            logger.warning("broker unavailable, will retry later: %s", exc)
            break
        count += 1
    return count
