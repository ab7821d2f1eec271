"""Dramatiq middleware for jobs."""

import logging

from dramatiq import Middleware

logger = logging.getLogger(__name__)


class FailJobWhenMessageDies(Middleware):
    """When a message is given up on (retries exhausted, or a `throws` error), fail its job with the reason.

    The message itself goes to the dead-letter queue, where operators can inspect and re-publish it.
    """

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if exception is None or not message.failed or message.actor_name != "process_job":
            return
        from processing import jobs  # imported late: middleware loads before Django's apps

        job_id = message.args[0]
        code, reason = describe(exception)
        jobs.fail(job_id, code, reason)


def describe(exception: BaseException) -> tuple[str, str]:
    from dramatiq import Retry
    from dramatiq.middleware import TimeLimitExceeded

    if isinstance(exception, TimeLimitExceeded):
        return "time_limit_exceeded", "processing took longer than the time limit"
    if isinstance(exception, Retry):
        return "worker_lost", "the job stayed held by a worker that never finished it"
    return "processing_error", f"gave up after repeated errors: {exception.__class__.__name__}: {exception}"
