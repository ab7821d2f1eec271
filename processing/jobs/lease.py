"""The lease: which worker holds a running job, and until when.

A worker claims a job by a conditional update that sets `worker_id` and
`lease_expires_at`; while it works, one thread per process renews the leases of
every job the process holds, in one UPDATE. A worker that dies stops renewing, so
its lease runs out and the next delivery of the job's message claims it again.

    queued ──claim──► processing, held by W until T ──complete / fail / cancel──► finished
                         │   ▲                │
                         │   └─renew (T += lease, every lease/3)
                         │                    │
                         │ W dies: T passes   │ W hits a transient error: release (T = now)
                         ▼                    ▼
                      processing, lease expired ──claim by the next delivery──► held by W2
                         │
                         └─ JOB_MAX_ATTEMPTS claims used up: the next delivery fails it (worker_lost)

Every claim counts an attempt. A job that has been started JOB_MAX_ATTEMPTS times is never
claimed again (a job whose worker is killed each time, e.g. for memory, would be redelivered
forever): the delivery that finds it `claimable` but out of attempts fails it instead.

A delivery that finds the job held by a live worker (a duplicate message) waits for
that lease to run out and looks again (`holder`); one that finds it finished does
nothing. A message given up on while a live worker holds its job leaves the job to that
worker (`free_or_held_by`). `abandoned` finds jobs whose lease ran out a whole lease
period ago with no delivery to claim them: the re-publisher sends them again.

JOB_LEASE_SECONDS is the lease's length; renewing every third of it leaves two renewals'
worth of slack for a busy database before a live worker's job is taken over.
"""

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone

from processing.models import Job, JobId

logger = logging.getLogger(__name__)


def worker_id() -> str:
    """This worker thread's name in leases: host, process and thread."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


def expires(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(seconds=settings.JOB_LEASE_SECONDS)


def claim(job_id: JobId, worker: str) -> Job | None:
    """Take the job for `worker`; None when it is finished, cancelled, unknown, held by a live worker,
    or out of attempts (see `claimable`).

    One conditional UPDATE that returns the claimed row: of two deliveries racing for the
    job, the database lets one update it, and the other finds nothing to update.
    """
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(_claim_sql(), _claim_params(job_id, worker, now))
        row = cursor.fetchone()
    return None if row is None else _job_from_row(row)


def _job_from_row(row: tuple[Any, ...]) -> Job:
    """The Job of a row of all its columns, as the ORM would make it (JSON decoded), without a
    RawQuerySet's per-query work of mapping columns to fields and finding their converters: a
    third of a millisecond of every claim."""
    values = list(row)
    for index, expression, converters in _row_converters():
        for convert in converters:
            values[index] = convert(values[index], expression, connection)
    return Job.from_db(connection.alias, _attnames(), values)


@functools.cache
def _attnames() -> list[str]:
    return [field.attname for field in Job._meta.concrete_fields]


@functools.cache
def _row_converters() -> list[tuple[int, Any, list[Any]]]:
    """(column index, expression, converters) of each column the database's value needs converting
    for (the JSON fields), found as the ORM's compiler finds them."""
    found = []
    for index, field in enumerate(Job._meta.concrete_fields):
        column = field.get_col(Job._meta.db_table)
        converters = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if converters:
            found.append((index, column, converters))
    return found


@functools.cache
def _claim_sql() -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in Job._meta.concrete_fields)
    return (
        f"UPDATE {quote(Job._meta.db_table)} SET status = %s, worker_id = %s, lease_expires_at = %s,"
        " started_at = COALESCE(started_at, %s), attempts = attempts + 1, progress = 0"
        " WHERE id = %s AND (status = %s OR (status = %s AND lease_expires_at < %s)) AND attempts < %s"
        f" RETURNING {columns}"
    )


def _claim_params(job_id: JobId, worker: str, now: datetime) -> list[Any]:
    def moment(value: datetime) -> Any:
        return Job._meta.get_field("lease_expires_at").get_db_prep_value(value, connection)

    pk = Job._meta.pk.get_db_prep_value(job_id, connection)
    return [
        Job.PROCESSING,
        worker,
        moment(expires(now)),
        moment(now),
        pk,
        Job.QUEUED,
        Job.PROCESSING,
        moment(now),
        settings.JOB_MAX_ATTEMPTS,
    ]


def claimable(job_id: JobId, now: datetime | None = None) -> QuerySet[Job]:
    """The job, if a delivery may start it: queued, or running with its lease run out."""
    now = now or timezone.now()
    return Job.objects.filter(
        Q(status=Job.QUEUED) | Q(status=Job.PROCESSING, lease_expires_at__lt=now), id=job_id
    )


def out_of_attempts(job_id: JobId) -> QuerySet[Job]:
    """The job, if it is claimable but has been started JOB_MAX_ATTEMPTS times already."""
    return claimable(job_id).filter(attempts__gte=settings.JOB_MAX_ATTEMPTS)


def free_or_held_by(job_id: JobId, worker: str) -> QuerySet[Job]:
    """The job, if it is in flight and no live worker other than `worker` holds it."""
    live_elsewhere = Q(status=Job.PROCESSING, lease_expires_at__gte=timezone.now()) & ~Q(worker_id=worker)
    return Job.objects.filter(id=job_id, status__in=[Job.QUEUED, Job.PROCESSING]).exclude(live_elsewhere)


def held_by(job_id: JobId, worker: str) -> QuerySet[Job]:
    """The job, if `worker` still holds it: the condition of every update a worker makes."""
    return Job.objects.filter(id=job_id, status=Job.PROCESSING, worker_id=worker)


def update_held(job_id: JobId, worker: str, **values: Any) -> bool:
    """`held_by(job_id, worker).update(**values)` in an UPDATE compiled once per set of fields: the
    ORM's compiling costs more CPU than the statement. False when `worker` no longer holds the job."""
    sql, fields = _held_update(tuple(values))
    prepared = zip(fields, values.values(), strict=True)
    params = [field.get_db_prep_save(value, connection) for field, value in prepared]
    params += [Job._meta.pk.get_db_prep_value(job_id, connection), Job.PROCESSING, worker]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return bool(cursor.rowcount)


@functools.lru_cache(maxsize=32)
def _held_update(names: tuple[str, ...]) -> tuple[str, list[Any]]:
    quote = connection.ops.quote_name
    fields: list[Any] = [Job._meta.get_field(name) for name in names]
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    return (
        f"UPDATE {quote(Job._meta.db_table)} SET {assignments}"
        f" WHERE {quote(Job._meta.pk.column)} = %s AND status = %s AND worker_id = %s"
    ), fields


def holder(job_id: JobId) -> tuple[str, float] | None:
    """(worker, seconds left) when a live worker holds the job, else None."""
    job = Job.objects.filter(id=job_id, status=Job.PROCESSING).only("worker_id", "lease_expires_at").first()
    if job is None or job.lease_expires_at is None:
        return None
    left = (job.lease_expires_at - timezone.now()).total_seconds()
    return (job.worker_id, left) if left > 0 else None


def release(job_id: JobId, worker: str) -> None:
    """Give the job back after a transient error, so that the retry can claim it at once."""
    held_by(job_id, worker).update(lease_expires_at=timezone.now())


def abandoned(now: datetime | None = None) -> Q:
    """Running jobs whose lease ran out a lease period ago: nobody is on them, nor about to be."""
    now = now or timezone.now()
    return Q(
        status=Job.PROCESSING,
        lease_expires_at__lt=now - timedelta(seconds=settings.JOB_LEASE_SECONDS),
    )


class Renewer:
    """Renews every lease this process holds, from one thread, in one UPDATE per pass.

    Started on first use (never on import) and again in a forked child, which inherits
    the registry but not the thread.
    """

    def __init__(self) -> None:
        self._held: dict[str, str] = {}  # job id -> worker
        self._lock = threading.Lock()
        self._pid: int | None = None

    @contextmanager
    def hold(self, job_id: JobId, worker: str) -> Iterator[None]:
        """Keep the job's lease alive for as long as the block runs."""
        with self._lock:
            self._held[str(job_id)] = worker
            self._start_once()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(str(job_id), None)

    def held(self) -> dict[str, str]:
        with self._lock:
            return dict(self._held)

    def renew(self) -> int:
        """One pass: push back the lease of every job still held here; returns how many."""
        held = self.held()
        if not held:
            return 0
        try:
            return Job.objects.filter(
                id__in=held, status=Job.PROCESSING, worker_id__in=set(held.values())
            ).update(lease_expires_at=expires())
        finally:
            connection.close()  # back to the pool; the next pass is a lease-third away

    def _start_once(self) -> None:
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        threading.Thread(target=self._run, name="lease-renewer", daemon=True).start()

    def _run(self) -> None:
        interval = settings.JOB_LEASE_SECONDS / 3
        while True:
            time.sleep(interval)
            try:
                self.renew()
            except Exception:  # the next pass may succeed; each job decides its own fate
                logger.warning("could not renew leases of %s", sorted(self.held()), exc_info=True)


renewer = Renewer()
