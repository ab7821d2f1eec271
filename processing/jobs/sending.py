"""Sending a message to the broker without hanging on it: the one wait every publish shares.

Dramatiq's own enqueue retries a dead or blocked broker for many seconds, and neither a request nor
a job must hang on it: each send runs on one of a few threads of their own, awaited at most
BROKER_PUBLISH_TIMEOUT. Used for jobs (processing.jobs.publishing) and callbacks
(processing.callbacks.deliveries).
"""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import dramatiq
from django.conf import settings

from processing.errors import BrokerUnavailable

_publishers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="publish")


def confirmed(send: Callable[[], object]) -> None:
    """Run `send` (one enqueue) and wait for it; nothing is written.

    Raises BrokerUnavailable when the broker hasn't confirmed within BROKER_PUBLISH_TIMEOUT; a message
    confirmed later anyway must be harmless to the caller.
    """
    sending = _publishers.submit(send)
    try:
        sending.result(timeout=settings.BROKER_PUBLISH_TIMEOUT)
    except FutureTimeout:
        raise BrokerUnavailable(f"no confirmation within {settings.BROKER_PUBLISH_TIMEOUT}s") from None
    except dramatiq.errors.ConnectionError as exc:
        raise BrokerUnavailable(str(exc) or exc.__class__.__name__) from exc
