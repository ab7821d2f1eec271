"""KeepDbConnections: a worker thread keeps its database connection between jobs, unless it is broken."""

import pytest
from django.db import connection

from processing.models import Job
from processing.worker.middleware import KeepDbConnections

pytestmark = pytest.mark.django_db(transaction=True)


def between_jobs() -> None:
    """What the middleware does after one message and before the next."""
    middleware = KeepDbConnections()
    middleware.after_process_message(None, None)
    middleware.before_process_message(None, None)


def test_a_worker_thread_keeps_its_connection_from_one_job_to_the_next():
    Job.objects.exists()
    session = connection.connection
    between_jobs()
    assert connection.connection is session
    Job.objects.exists()
    assert connection.connection is session


def test_a_connection_the_database_dropped_is_closed(monkeypatch):
    Job.objects.exists()
    connection.errors_occurred = True  # as a failed statement leaves it
    monkeypatch.setattr(connection, "is_usable", lambda: False)
    between_jobs()
    assert connection.connection is None


def test_a_connection_that_failed_once_but_works_is_kept():
    Job.objects.exists()
    session = connection.connection
    connection.errors_occurred = True
    between_jobs()
    assert connection.connection is session and not connection.errors_occurred


def test_a_connection_left_in_a_transaction_is_closed():
    Job.objects.exists()
    connection.set_autocommit(False)
    between_jobs()
    assert connection.connection is None
