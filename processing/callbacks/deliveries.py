"""Callback deliveries: a job's end POSTed, signed, to its callback_url until delivered or given up.

    job ends ──processing.events.announce──► schedule: a CallbackDelivery row (its id is the event
        id, its payload the job's JSON as it ended), and after the commit a message on the
        "callbacks" queue
    deliver_callback (the actor) ──► attempt: claim the attempt (a conditional update), POST, record
        2xx                                              delivered
        a redirect, another 4xx than 408 and 429,        given up at once, saying why
        an address callbacks may not reach
        5xx, 408, 429, no answer                         tried again after a backoff that doubles from
                                                         CALLBACK_FIRST_RETRY_SECONDS up to an hour
                                                         (longer when Retry-After asks), until
                                                         CALLBACK_RETRY_SECONDS after the job's end
    resend_overdue (requeue_stale's pass) ──► a pending delivery whose message was lost is sent again

Every attempt carries the same body and event id (`Darkroom-Event-Id`), so a receiver that got an
event already can tell a redelivery; only the signature's time changes. A duplicate message is
harmless: an attempt starts only on a pending delivery whose next attempt is due, and moves that
time on first (ATTEMPT_LEASE), so two messages never make two attempts at once.
"""

import functools
import json
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import dramatiq
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, close_old_connections, transaction
from django.db.models import F
from django.utils import timezone

from processing.callbacks import addresses, posting, signing, targets
from processing.errors import BrokerUnavailable, CallbackRefused
from processing.jobs import prometheus, sending
from processing.jobs.pools import CALLBACK_QUEUE
from processing.jobs.public import job_json
from processing.models import CallbackDelivery, Job

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 3600
# The longest an attempt can take: connecting to each address, then three timeouts for the answer.
ATTEMPT_SECONDS = 10 * settings.CALLBACK_TIMEOUT_SECONDS + 10
# An attempt under way holds its delivery this long; a worker that dies in it leaves the delivery to
# the re-sender once that has passed.
ATTEMPT_LEASE = timedelta(seconds=ATTEMPT_SECONDS + 60)
# How early a message may find its attempt due: another machine's clock may be a little behind.
CLOCK_TOLERANCE = timedelta(seconds=2)
# A pending delivery this late for its attempt has lost its message: requeue_stale sends another.
OVERDUE_AFTER = timedelta(minutes=5)
RESEND_BATCH = 500

EVENT_HEADER = "Darkroom-Event"
EVENT_ID_HEADER = "Darkroom-Event-Id"
ATTEMPT_HEADER = "Darkroom-Delivery-Attempt"


# --- Scheduling, as the job ends ---------------------------------------------------------------


def schedule(job: Job, event: str) -> CallbackDelivery:
    """Record the callback of `job`'s end (`event`: job.completed, job.failed or job.cancelled) and,
    once the transaction commits, send its first attempt's message."""
    delivery = CallbackDelivery.objects.create(
        job_id=job.id, event=event, url=job.callback_url, payload=payload(job), next_attempt_at=timezone.now()
    )
    transaction.on_commit(functools.partial(send, delivery.id), robust=True)
    return delivery


def payload(job: Job) -> str:
    """The body of the job's callback: its public JSON (processing.jobs.public), as the API gives it."""
    return json.dumps(job_json(job), cls=DjangoJSONEncoder)


def send(delivery_id: uuid.UUID) -> bool:
    """Send the delivery's message now; False (logged) when the broker did not take it, in which case
    the re-sender sends it once it is overdue."""
    try:
        sending.confirmed(functools.partial(deliver_callback.send, str(delivery_id)))
    except BrokerUnavailable as exc:
        logger.warning("a callback waits for the broker (%s): requeue_stale sends it", exc.cause)
        return False
    return True


def resend_overdue(now: datetime | None = None) -> int:
    """Send again the messages of pending deliveries OVERDUE_AFTER late; each is stamped due now, so
    that a late one is sent again once per OVERDUE_AFTER at most. Stops at the first broker failure;
    a database outage is logged and left to the next pass, as processing.jobs.publishing's are."""
    try:
        return resend(now or timezone.now())
    except DatabaseError as exc:
        logger.warning("database unavailable, callbacks resent later: %s", exc)
        return 0
    finally:
        close_old_connections()


def resend(now: datetime) -> int:
    overdue = list(
        CallbackDelivery.objects.filter(
            state=CallbackDelivery.PENDING, next_attempt_at__lt=now - OVERDUE_AFTER
        ).values_list("id", flat=True)[:RESEND_BATCH]
    )
    count = 0
    for delivery_id in overdue:
        CallbackDelivery.objects.filter(id=delivery_id, state=CallbackDelivery.PENDING).update(
            next_attempt_at=now
        )
        if not send(delivery_id):
            break
        count += 1
    return count


def redeliver(delivery: CallbackDelivery) -> bool:
    """An operator's "deliver again": a delivery given up on becomes pending, due now, with the same
    event id and body; False when it was not given up."""
    again = CallbackDelivery.objects.filter(id=delivery.id, state=CallbackDelivery.GIVEN_UP).update(
        state=CallbackDelivery.PENDING, next_attempt_at=timezone.now(), finished_at=None
    )
    if again:
        transaction.on_commit(functools.partial(send, delivery.id), robust=True)
    return bool(again)


# --- Attempts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    state: str  # CallbackDelivery.DELIVERED, GIVEN_UP or PENDING (to be tried again)
    status: int | None = None
    error: str = ""
    retry_in: float | None = None  # seconds, for PENDING

    @property
    def label(self) -> str:
        """How the metrics count it: delivered, retried or given_up."""
        return "retried" if self.state == CallbackDelivery.PENDING else self.state


def attempt(delivery_id: str | uuid.UUID) -> CallbackDelivery | None:
    """One attempt at the delivery, recorded on it; None when there is nothing to do (delivered, given
    up, gone, or not due: a duplicate message)."""
    delivery = claim(delivery_id)
    if delivery is None:
        return None
    outcome = try_once(delivery)
    record(delivery, outcome)
    return delivery


def claim(delivery_id: str | uuid.UUID) -> CallbackDelivery | None:
    """The delivery with its job, when it is pending and due; its attempt counted and its next one
    moved ATTEMPT_LEASE on, so that no other message starts one meanwhile."""
    now = timezone.now()
    claimed = CallbackDelivery.objects.filter(
        id=delivery_id, state=CallbackDelivery.PENDING, next_attempt_at__lte=now + CLOCK_TOLERANCE
    ).update(attempts=F("attempts") + 1, last_attempt_at=now, next_attempt_at=now + ATTEMPT_LEASE)
    if not claimed:
        return None
    return CallbackDelivery.objects.select_related("job").filter(id=delivery_id).first()


def try_once(delivery: CallbackDelivery) -> Outcome:
    try:
        target = targets.parse(delivery.url)
    except CallbackRefused as exc:  # checked at submit: only a key's default changed since could be
        return Outcome(CallbackDelivery.GIVEN_UP, error=exc.message)
    signing_with = signing.signing_secrets(delivery.job.owner.identity)
    if not signing_with:
        return Outcome(
            CallbackDelivery.GIVEN_UP, error="its owner no longer has a callback secret to sign with"
        )
    body = delivery.payload.encode()
    headers = {
        EVENT_HEADER: delivery.event,
        EVENT_ID_HEADER: str(delivery.id),
        ATTEMPT_HEADER: str(delivery.attempts),
        signing.SIGNATURE_HEADER: signing.header(signing_with, int(timezone.now().timestamp()), body),
    }
    allowed = addresses.networks(settings.CALLBACK_ALLOWED_NETWORKS)
    try:
        answer = posting.post(target, body, headers, allowed, settings.CALLBACK_TIMEOUT_SECONDS)
    except addresses.AddressRefused as exc:
        return Outcome(CallbackDelivery.GIVEN_UP, error=str(exc))
    except posting.Unreachable as exc:
        return retried(delivery, None, str(exc))
    return judged(delivery, answer)


def judged(delivery: CallbackDelivery, answer: posting.Answer) -> Outcome:
    """What the receiver's answer means for the delivery."""
    status = answer.status
    said = f"answered {status}" + (f": {answer.excerpt}" if answer.excerpt.strip() else "")
    if 200 <= status < 300:
        return Outcome(CallbackDelivery.DELIVERED, status)
    if 300 <= status < 400:
        reason = f"answered {status}, a redirect: callbacks follow none, give the URL it leads to"
        return Outcome(CallbackDelivery.GIVEN_UP, status, reason)
    if 400 <= status < 500 and status not in (408, 429):
        return Outcome(
            CallbackDelivery.GIVEN_UP, status, f"{said} (a 4xx other than 408 and 429 is not retried)"
        )
    return retried(delivery, status, said, asked=answer.retry_after)


def retried(
    delivery: CallbackDelivery, status: int | None, error: str, asked: float | None = None
) -> Outcome:
    """Try again after the backoff (or the Retry-After asked, up to MAX_BACKOFF_SECONDS), unless that
    falls past CALLBACK_RETRY_SECONDS after the job's end: then it is given up."""
    wait = backoff(delivery.attempts)
    if asked is not None:
        wait = max(wait, min(asked, MAX_BACKOFF_SECONDS))
    given_until = delivery.created_at + timedelta(seconds=settings.CALLBACK_RETRY_SECONDS)
    if timezone.now() + timedelta(seconds=wait) > given_until:
        tried_for = timedelta(seconds=settings.CALLBACK_RETRY_SECONDS)
        reason = f"{error}; tried {delivery.attempts} times in {tried_for} (CALLBACK_RETRY_SECONDS), given up"
        return Outcome(CallbackDelivery.GIVEN_UP, status, reason)
    return Outcome(CallbackDelivery.PENDING, status, error, retry_in=wait)


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after `attempts` of them: CALLBACK_FIRST_RETRY_SECONDS, doubled
    at each, up to MAX_BACKOFF_SECONDS."""
    first: float = settings.CALLBACK_FIRST_RETRY_SECONDS
    return float(min(first * 2 ** min(attempts - 1, 20), MAX_BACKOFF_SECONDS))


def record(delivery: CallbackDelivery, outcome: Outcome) -> None:
    """Write the attempt's outcome on the delivery (and on `delivery`), and count it."""
    now = timezone.now()
    fields = {
        "state": outcome.state,
        "last_status": outcome.status,
        "last_error": outcome.error[:2000],
        "next_attempt_at": None if outcome.retry_in is None else now + timedelta(seconds=outcome.retry_in),
        "finished_at": now if outcome.state != CallbackDelivery.PENDING else None,
    }
    # Only the attempt this claim started: a delivery deleted or made pending again meanwhile is left.
    CallbackDelivery.objects.filter(id=delivery.id, attempts=delivery.attempts).update(**fields)
    for name, value in fields.items():
        setattr(delivery, name, value)
    prometheus.CALLBACK_ATTEMPTS.labels(outcome.label).inc()
    log = logger.info if outcome.state == CallbackDelivery.DELIVERED else logger.warning
    log(
        "callback %s after attempt %d: %s",
        outcome.label,
        delivery.attempts,
        outcome.error or outcome.status,
        extra={"job_id": str(delivery.job_id)},
    )


def should_retry(retries: int, exception: Exception) -> bool:
    """A Retry is the delivery's own schedule (attempt decided it); anything else (the database down,
    say) is retried a few times, and the re-sender finds the delivery later if that was not enough."""
    return isinstance(exception, dramatiq.Retry) or retries < 5


@dramatiq.actor(
    queue_name=CALLBACK_QUEUE,
    retry_when=should_retry,
    min_backoff=5_000,
    max_backoff=300_000,
    time_limit=int(ATTEMPT_SECONDS * 1000),
)
def deliver_callback(delivery_id: str) -> None:
    delivery = attempt(delivery_id)
    if delivery is not None and delivery.state == CallbackDelivery.PENDING and delivery.next_attempt_at:
        wait = max(0.0, (delivery.next_attempt_at - timezone.now()).total_seconds())
        raise dramatiq.Retry(
            f"callback {delivery_id} tried again in {wait:.0f}s", delay=math.ceil(wait * 1000)
        )
