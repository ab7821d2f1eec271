"""manage.py requeue_stale: no accepted job is lost when its message is."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from processing.models import Job
from tests.factories import stored_job

pytestmark = pytest.mark.django_db(transaction=True)


def queued_job(age_seconds: int, **fields) -> Job:
    return stored_job(created_at=timezone.now() - timedelta(seconds=age_seconds), **fields)


def test_a_job_whose_message_never_reached_the_broker_is_republished_and_completes(run_jobs, capsys):
    lost = queued_job(age_seconds=120)  # committed, but the publish never happened
    call_command("requeue_stale")
    assert "re-published 1 stale job(s)" in capsys.readouterr().out
    run_jobs()
    lost.refresh_from_db()
    assert lost.status == Job.COMPLETED


def test_fresh_and_confirmed_jobs_are_left_alone(stub_broker, capsys):
    queued_job(age_seconds=1)  # its publish may still be under way
    queued_job(
        age_seconds=120, enqueued_at=timezone.now() - timedelta(seconds=100)
    )  # in the queue, confirmed
    call_command("requeue_stale")
    assert "re-published 0 stale job(s)" in capsys.readouterr().out
    assert stub_broker.queues.get("images") is None or stub_broker.queues["images"].qsize() == 0


def test_a_job_whose_worker_died_long_ago_is_republished(run_jobs):
    abandoned = queued_job(
        age_seconds=600,
        status=Job.PROCESSING,
        worker_id="gone:1:t",
        enqueued_at=timezone.now(),
        lease_expires_at=timezone.now() - timedelta(seconds=300),
    )
    call_command("requeue_stale")
    run_jobs()
    abandoned.refresh_from_db()
    assert abandoned.status == Job.COMPLETED and abandoned.worker_id != "gone:1:t"
