"""Getting a job's message to the broker: the one publish path, and the re-publisher behind it.

A job row commits first, then its message (the job id only) is published and the broker's
confirmation awaited; `enqueue` then announces the job (processing.events), new or requeued.
A new job's row is written already stamped as published (`enqueued_at`), so that its publish
writes nothing more: a submission whose message the broker doesn't confirm is withdrawn whole
(processing.jobs.submissions), and the only stamped job without a message is one whose process
died between its INSERT and its publish. A job re-published or requeued is stamped when the
broker confirms it.

A job whose message never made it (the broker was down, the process died in between) or whose
worker died is found by `stale_jobs` and published again; a duplicate message is harmless, since
claims are conditional (see processing.jobs.lease), but a job whose message still waits in its
queue is not published again (`not_in_their_queues`).
"""

import functools
import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from processing import events
from processing.errors import BrokerUnavailable
from processing.jobs import lease, lifecycle, queues, sending
from processing.models import Job
from processing.worker.actors import process_job

logger = logging.getLogger(__name__)

# Queued, and its message confirmed by the broker: the message is in its queue unless lost.
PUBLISHED = Q(status=Job.QUEUED, enqueued_at__isnull=False)


def publish(job: Job) -> None:
    """Send the job's message, await the broker's confirmation, and record it (enqueued_at).

    For a job whose row exists already unstamped or stamped long ago: one re-published, requeued or
    left over. Raises BrokerUnavailable as `send_confirmed` does.
    """
    send_confirmed(job)
    job.enqueued_at = timezone.now()
    Job.objects.filter(id=job.id).update(enqueued_at=job.enqueued_at)


def send_confirmed(job: Job) -> None:
    """Send the job's message and await the broker's confirmation; nothing is written.

    Call after the job row has committed, so that a worker always finds it. Raises
    BrokerUnavailable when the broker hasn't confirmed within BROKER_PUBLISH_TIMEOUT;
    a message confirmed later anyway is harmless.
    """
    sending.confirmed(functools.partial(send, job))


def send(job: Job) -> None:
    """The job's message, to the queue of its pool (TRAFFIC_SPLIT)."""
    message = process_job.message(str(job.id))
    if job.pool != message.queue_name:
        message = message.copy(queue_name=job.pool)
    process_job.broker.enqueue(message)


def enqueue(jobs: list[Job]) -> None:
    """Publish the jobs a submission has just created queued, then announce each of `jobs`.

    Their rows say they are published already (`stamped_as_published`), so nothing is written here.
    Every message is confirmed before any job is announced: when one can't be published
    (BrokerUnavailable), a submission withdraws them all, and nobody has heard of them. A job
    that reused an earlier result is announced as completed; it has no message to publish.
    """
    for job in jobs:
        if job.status == Job.QUEUED:
            send_confirmed(job)
    for job in jobs:
        events.announce(job)


def stamped_as_published(job: Job) -> None:
    """Stamp a new queued job, before its INSERT, as if its message were confirmed already: `enqueue`
    publishes it right after, or its submission is withdrawn. One UPDATE per job less; the price is
    that a process dying in between leaves a stamped job without a message, which `stale_jobs` and
    `not_in_their_queues` find by counting its pool's queue."""
    job.enqueued_at = job.created_at


def requeue(job: Job) -> bool:
    """Queue a failed job again and publish it; False when it was no longer failed.

    A broker that can't take the message leaves the job queued for the re-publisher
    (BrokerUnavailable is raised so the caller can say so).
    """
    if not lifecycle.requeue_failed(job.id):
        return False
    job.refresh_from_db()
    publish(job)
    events.announce(job)
    return True


def stale_jobs(now: datetime | None = None) -> QuerySet[Job]:
    """Queued jobs whose message may never have reached a worker, and jobs whose worker died.

    Queued jobs qualify after REQUEUE_UNPUBLISHED_AFTER_SECONDS: those never confirmed by their
    creation time, the others by their stamp (enqueued_at). A stamped one is published again only
    where its queue's count says a message is missing, or, when the broker can't be read, once it
    waited REQUEUE_STALE_AFTER_SECONDS (`not_in_their_queues`).
    """
    now = now or timezone.now()
    unpublished_before = now - timedelta(seconds=settings.REQUEUE_UNPUBLISHED_AFTER_SECONDS)
    unconfirmed = Q(status=Job.QUEUED, enqueued_at__isnull=True, created_at__lt=unpublished_before)
    waiting = Q(status=Job.QUEUED, enqueued_at__lt=unpublished_before)
    return Job.objects.filter(unconfirmed | waiting | lease.abandoned(now))


def waiting_briefly(now: datetime) -> Q:
    """Published jobs that have waited less than REQUEUE_STALE_AFTER_SECONDS: published again only
    when their queue's count says a message is missing, never blindly."""
    return PUBLISHED & Q(enqueued_at__gte=now - timedelta(seconds=settings.REQUEUE_STALE_AFTER_SECONDS))


def republish(found: QuerySet[Job]) -> int:
    """Publish each job again; stops at the first broker failure (the next pass tries again)."""
    count = 0
    for job in found.only("id", "pool"):
        try:
            publish(job)
        except BrokerUnavailable as exc:
            logger.warning("broker unavailable, will retry later: %s", exc.cause)
            break
        count += 1
    return count


def not_in_their_queues(found: QuerySet[Job], now: datetime | None = None) -> QuerySet[Job]:
    """`found`, less the unclaimed jobs whose messages are still waiting in their queues.

    A pool's queue that holds a ready message for each of its published, queued jobs has lost none:
    its workers are busy, or it has none. Publishing those jobs again would add one more copy of each
    at every pass, and the depth the scaler reads would grow with nothing new to do. A queue holding
    fewer has lost some (purged, a broker that lost them, or a process that died between a job's
    INSERT and its publish): that many are published again, the longest waiting first. Which ones were
    lost can't be known; a job whose message still exists is harmless to publish twice (a worker
    holding messages it hasn't started counts as such a loss: one extra copy each, which then waits
    in the queue and balances the count; so does a publish under way while the count is taken), and
    one left out is found at a later pass, once the workers have drained its queue. When the broker
    can't be read, every job found is published but those that waited less than
    REQUEUE_STALE_AFTER_SECONDS.
    """
    pools = tuple(set(found.filter(PUBLISHED).values_list("pool", flat=True)))
    if not pools:
        return found  # none of them was ever in a queue
    status = queues.read_queues(pools)
    if not status["available"]:
        return found.exclude(waiting_briefly(now or timezone.now()))
    chosen = [
        job_id
        for pool, missing in unaccounted_messages(status["queues"]).items()
        if missing > 0
        for job_id in found.filter(PUBLISHED, pool=pool)
        .order_by("enqueued_at")
        .values_list("id", flat=True)[:missing]
    ]
    return found.filter(~PUBLISHED | Q(id__in=chosen))


def unaccounted_messages(in_queues: list[dict[str, Any]]) -> dict[str, int]:
    """Per pool: its published, queued jobs less the ready messages in its queue."""
    ready = {queue["name"]: queue["ready"] or 0 for queue in in_queues}
    counts = Job.objects.filter(PUBLISHED, pool__in=ready).values_list("pool").annotate(count=Count("id"))
    return {pool: count - ready[pool] for pool, count in counts}


def republish_stale() -> int:
    """One pass of the re-publisher. A database outage is logged and left to the next pass: the
    loop that calls this must outlive it, or nothing would ever re-publish again."""
    try:
        now = timezone.now()
        return republish(not_in_their_queues(stale_jobs(now), now))
    except DatabaseError as exc:
        logger.warning("database unavailable, will retry later: %s", exc)
        return 0
    finally:
        close_old_connections()  # a connection broken by an outage is replaced on the next pass
