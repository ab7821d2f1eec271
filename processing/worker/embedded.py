"""The embedded default: Dramatiq worker threads inside the server process.

Messages live in memory (StubBroker), so at start-up every unfinished job is
published again, and a background thread re-publishes stale jobs periodically.
"""

import logging
import threading

import dramatiq
from django.conf import settings
from django.db import DatabaseError, close_old_connections

from processing.callbacks import deliveries
from processing.jobs import publishing
from processing.models import Job

logger = logging.getLogger(__name__)

REQUEUE_INTERVAL_SECONDS = 30

_started = False
_lock = threading.Lock()


def start() -> dramatiq.Worker | None:
    """Start the in-process workers once per process; a no-op unless EMBEDDED_WORKERS is on."""
    global _started
    if not settings.EMBEDDED_WORKERS:
        return None
    with _lock:
        if _started:
            return None
        _started = True
    import processing.worker.actors  # noqa: F401  (registers the actors with the broker)

    broker = dramatiq.get_broker()
    # What Dramatiq's own worker processes get at boot: middleware starts its machinery here,
    # the time limit its timer thread (without it, JOB_TIME_LIMIT_SECONDS never fires).
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=settings.EMBEDDED_WORKER_THREADS)
    worker.start()
    # The database work runs on a thread of its own: the server may import the application from
    # inside its event loop (uvicorn does), where Django refuses synchronous queries.
    threading.Thread(target=requeue_forever, name="requeue", daemon=True).start()
    logger.info("embedded workers started (%d threads)", settings.EMBEDDED_WORKER_THREADS)
    return worker


def republish_unfinished() -> None:
    try:
        count = publishing.republish(Job.objects.filter(status__in=[Job.QUEUED, Job.PROCESSING]))
    except DatabaseError as exc:  # e.g. not migrated yet: serve anyway, the periodic pass catches up
        logger.error("could not re-publish unfinished jobs: %s", exc)
        return
    finally:
        close_old_connections()
    if count:
        logger.info("re-published %d unfinished jobs from before the restart", count)


def requeue_forever() -> None:
    """Re-publish what the last process left unfinished, then stale jobs (and overdue callbacks) every
    interval."""
    republish_unfinished()
    stop = threading.Event()
    while not stop.wait(REQUEUE_INTERVAL_SECONDS):
        publishing.republish_stale()
        deliveries.resend_overdue()
