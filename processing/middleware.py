"""Dramatiq middleware for jobs."""

import logging

from dramatiq import Middleware

logger = logging.getLogger(__name__)


class FailJobWhenMessageDies(Middleware):
    """When a message is given up on (retries exhausted, or a `throws` error), fail its job with the reason.

    Unless a live worker other than this one holds the job: a duplicate message that waited out
    its lease waits in vain while that worker is still at it, and the job is that worker's to finish.
    The message itself goes to the dead-letter queue, where operators can inspect and re-publish it.
    """

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if exception is None or not message.failed or message.actor_name != "process_job":
            return
        from processing import jobs, lease  # imported late: middleware loads before Django's apps

        job_id = message.args[0]
        code, reason = describe(exception)
        # This thread ran the actor: its worker id is the one the job's lease names, if it claimed it.
        if not jobs.fail_unless_held_elsewhere(job_id, code, reason, lease.worker_id()):
            logger.info("message given up on, but its job is finished or held by a live worker")


def describe(exception: BaseException) -> tuple[str, str]:
    from dramatiq import Retry
    from dramatiq.middleware import TimeLimitExceeded

    if isinstance(exception, TimeLimitExceeded):
        return "time_limit_exceeded", "processing took longer than the time limit"
    if isinstance(exception, Retry):
        return "worker_lost", "the job stayed held by a worker that never finished it"
    return "processing_error", f"gave up after repeated errors: {exception.__class__.__name__}: {exception}"
