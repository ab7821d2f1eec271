"""The request id and job id bound while a request or a job runs, added to every log line written
meanwhile: one grep shows a job's life (gateway and worker)."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("job_id", default=None)


class ContextFilter(logging.Filter):
    """Adds the current request_id and job_id to records that don't carry their own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id.get()
        return True


@contextmanager
def bound(*, request: str | None = None, job: str | None = None) -> Iterator[None]:
    tokens = [(request_id, request_id.set(request)), (job_id, job_id.set(job))]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
