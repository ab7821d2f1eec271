"""The embedded default: jobs survive a server restart although the in-memory broker does not."""

import pytest

from processing import embedded, publishing
from processing.models import Job
from tests.factories import stored_job

pytestmark = pytest.mark.django_db(transaction=True)


def unfinished_job(status: str) -> Job:
    return stored_job("sobel", status=status)


def test_start_up_republishes_the_jobs_the_last_process_left_queued(run_jobs):
    # The previous server process accepted these; its in-memory queue died with it.
    left_behind = [unfinished_job(Job.QUEUED) for _ in range(3)]
    done = unfinished_job(Job.COMPLETED)

    embedded.republish_unfinished()
    run_jobs()

    assert all(Job.objects.get(id=job.id).status == Job.COMPLETED for job in left_behind)
    assert Job.objects.get(id=done.id).attempts == 0  # finished jobs are left alone


def test_a_job_is_published_with_only_its_id(stub_broker):
    job = unfinished_job(Job.QUEUED)
    publishing.publish(job)
    message = stub_broker.queues["images"].get_nowait()
    assert b'"args":["%s"]' % str(job.id).encode() in message
    assert len(message) < 1024  # never image bytes
