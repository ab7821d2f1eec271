"""Job events: built where a job changes, sent once the change has committed.

The code that changes a job (processing.jobs.lifecycle, processing.jobs.publishing) announces
each change here, once. `announce` builds its event from the job as it is now (messages: the
job's public JSON, encoded once for every subscriber); once the transaction commits, it records
the change's metrics and hands the event to this process's `Sender` (sender), which sends it
through the channel layer (layer) to the job's, its owner's and the staff's groups. The
server's realtime tier only delivers what arrives there, to sockets and long polls. An event that
ends a job with a callback_url is also recorded as that job's callback, sent by a worker
(processing.callbacks.deliveries).

A job never fails because its event could not be built or sent: such an event is logged and
lost, and its subscribers fall back to polling.
"""

import logging

from django.db import transaction

from processing.callbacks import deliveries
from processing.events.messages import PROGRESS_EVENT, STATUS_EVENTS, event_message, groups_for
from processing.events.sender import current_sender
from processing.jobs import prometheus
from processing.models import Job

logger = logging.getLogger(__name__)


def announce(job: Job) -> None:
    """Tell who follows `job` that it has reached its status (job.queued, job.processing, ...); when it
    has ended and has a callback_url, its callback too (processing.callbacks.deliveries)."""
    event = STATUS_EVENTS[job.status]
    send_on_commit(job, event)
    if job.callback_url and job.is_finished:
        deliveries.schedule(job, event)


def announce_progress(job: Job) -> None:
    """Tell who follows `job` how far it has got (job.progress)."""
    send_on_commit(job, PROGRESS_EVENT)


def send_on_commit(job: Job, event: str) -> None:
    try:
        sender = current_sender()  # None: nobody in this process could hear it, so don't build it
        if sender is not None:  # built now: the caller may change `job` again before the commit
            groups, message = groups_for(job), event_message(event, job)
    except Exception:  # the promise above: this event is lost, the change it announces is not
        logger.exception("job event not sent: %s", event, extra={"job_id": str(job.id)})
        sender = None

    def committed() -> None:
        prometheus.record(job, event)
        if sender is not None:
            sender.send(groups, message)

    # On commit, so that nobody hears of a change that could still be rolled back, and the events
    # of one transaction go out in order; outside a transaction, that is at once. `robust`: an
    # error is logged, and neither fails the change nor stops the transaction's other callbacks.
    transaction.on_commit(committed, robust=True)
