"""Every lease transition: claim, renew, expire, redeliver, duplicate, release, cancel, dead letter."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import dramatiq
import pytest
from django.db import connection
from django.utils import timezone
from dramatiq.broker import MessageProxy

from processing.errors import Cancelled
from processing.jobs import lease, lifecycle, publishing
from processing.models import Job
from processing.worker.actors import process_job, wait_for_lease_or_skip
from processing.worker.middleware import FailJobWhenMessageDies
from tests.factories import stored_job

pytestmark = pytest.mark.django_db(transaction=True)

W1, W2 = "host:1:worker-1", "host:2:worker-2"


def expire(job: Job, seconds_ago: float = 1) -> None:
    """What a dead worker leaves: its lease ran out `seconds_ago`."""
    Job.objects.filter(id=job.id).update(lease_expires_at=timezone.now() - timedelta(seconds=seconds_ago))


def fresh(job: Job) -> Job:
    return Job.objects.get(id=job.id)


def test_a_claim_takes_a_queued_job_for_one_worker_with_a_lease():
    job = stored_job()
    before = timezone.now()
    claimed = lease.claim(job.id, W1)

    row = fresh(job)
    assert claimed is not None and (claimed.status, claimed.worker_id, claimed.attempts) == (
        Job.PROCESSING,
        W1,
        1,
    )
    assert (row.status, row.worker_id, row.attempts) == (Job.PROCESSING, W1, 1)
    assert row.lease_expires_at >= before + timedelta(seconds=19)
    assert row.started_at is not None and claimed.lease_expires_at == row.lease_expires_at


def test_a_duplicate_delivery_finds_the_job_held_and_waits_for_the_lease():
    job = stored_job()
    lease.claim(job.id, W1)

    assert lease.claim(job.id, W2) is None
    worker, seconds_left = lease.holder(job.id)
    assert worker == W1 and 0 < seconds_left <= 20
    with pytest.raises(dramatiq.Retry) as waiting:
        wait_for_lease_or_skip(str(job.id))
    assert waiting.value.delay > seconds_left * 1000  # it looks again just after the lease ends


def test_of_two_workers_claiming_at_once_exactly_one_gets_the_job():
    job = stored_job()
    start = threading.Barrier(2)

    def take(worker: str):
        start.wait()
        try:
            return lease.claim(job.id, worker)
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        claims = list(pool.map(take, [W1, W2]))

    winners = [claimed.worker_id for claimed in claims if claimed is not None]
    assert len(winners) == 1 and fresh(job).worker_id == winners[0] and fresh(job).attempts == 1


def test_the_renewer_pushes_back_the_leases_this_process_holds():
    job = stored_job()
    lease.claim(job.id, W1)
    Job.objects.filter(id=job.id).update(lease_expires_at=timezone.now() + timedelta(seconds=2))
    renewer = lease.Renewer()

    with renewer.hold(job.id, W1):
        assert renewer.renew() == 1
    assert fresh(job).lease_expires_at > timezone.now() + timedelta(seconds=15)
    assert renewer.held() == {}  # let go when the block ends
    assert renewer.renew() == 0


def test_the_renewer_never_renews_a_job_another_worker_took_over():
    job = stored_job()
    lease.claim(job.id, W1)
    expire(job)
    renewer = lease.Renewer()
    with renewer.hold(job.id, W1):
        lease.claim(job.id, W2)  # W1 stalled past its lease; W2 took the job
        taken_over_until = fresh(job).lease_expires_at
        assert renewer.renew() == 0
    assert fresh(job).worker_id == W2 and fresh(job).lease_expires_at == taken_over_until


def test_an_expired_lease_lets_the_next_delivery_claim_the_job_again():
    job = stored_job()
    lease.claim(job.id, W1)
    assert lease.holder(job.id) is not None
    expire(job)

    assert lease.holder(job.id) is None  # nobody alive holds it
    again = lease.claim(job.id, W2)
    assert again is not None and (again.worker_id, again.attempts) == (W2, 2)
    assert lifecycle.complete(again, W1, processing_ms=1.0) is False  # the dead worker's result is refused
    assert lifecycle.complete(again, W2, processing_ms=1.0) is True


def test_a_redelivered_message_completes_a_job_whose_worker_died(run_jobs):
    job = stored_job()
    lease.claim(job.id, "dead-host:9:thread")
    expire(job)
    process_job.send(str(job.id))  # the broker redelivers the dead worker's message
    run_jobs()

    row = fresh(job)
    assert row.status == Job.COMPLETED and row.attempts == 2 and row.worker_id != "dead-host:9:thread"


def test_a_release_after_a_transient_error_makes_the_job_claimable_at_once():
    job = stored_job()
    lease.claim(job.id, W1)
    lease.release(job.id, W2)  # not W2's to release
    assert lease.claim(job.id, W2) is None
    lease.release(job.id, W1)
    assert lease.claim(job.id, W2) is not None


def test_only_leases_expired_for_a_whole_lease_period_are_abandoned(settings):
    settings.JOB_LEASE_SECONDS = 20
    recently, long_ago = stored_job(), stored_job()
    for job, seconds in ((recently, 5), (long_ago, 60)):
        lease.claim(job.id, W1)
        expire(job, seconds_ago=seconds)

    stale = set(publishing.stale_jobs().values_list("id", flat=True))
    assert long_ago.id in stale and recently.id not in stale


def test_a_job_cancelled_mid_run_stops_at_its_checkpoint_and_its_lease_is_gone():
    job = stored_job()
    claimed = lease.claim(job.id, W1)
    renewer = lease.Renewer()
    with renewer.hold(job.id, W1):
        assert lifecycle.cancel(job.id)
        assert renewer.renew() == 0  # a cancelled job's lease is not renewed
        with pytest.raises(Cancelled):
            lifecycle.ProgressReporter(claimed, W1, interval=0)(0.5)
    row = fresh(job)
    assert row.status == Job.CANCELLED and row.lease_expires_at is None
    assert lease.claim(job.id, W2) is None  # and no delivery starts it again


def test_a_dead_letter_fails_the_job_with_the_reason():
    job = stored_job()
    lease.claim(job.id, lease.worker_id())  # this thread ran the job, e.g. until its time limit
    message = MessageProxy(process_job.message(str(job.id)))
    message.fail()  # what Retries does when it gives up on the message

    FailJobWhenMessageDies().after_process_message(None, message, exception=dramatiq.Retry("held"))

    row = fresh(job)
    assert (row.status, row.error_code) == (Job.FAILED, "worker_lost")
    assert row.lease_expires_at is None
    assert lease.claim(job.id, W2) is None


def test_a_dead_lettered_duplicate_leaves_the_job_to_the_live_worker_that_holds_it():
    job = stored_job()
    claimed = lease.claim(job.id, W1)
    duplicate = MessageProxy(process_job.message(str(job.id)))
    duplicate.fail()  # it waited out the lease MAX_LEASE_WAITS times while W1 kept renewing it

    FailJobWhenMessageDies().after_process_message(None, duplicate, exception=dramatiq.Retry("held"))

    assert fresh(job).status == Job.PROCESSING and fresh(job).worker_id == W1
    assert lifecycle.complete(claimed, W1)  # W1 finishes it as if nothing happened
    assert fresh(job).status == Job.COMPLETED


def test_a_dead_letter_fails_a_job_whose_holder_died():
    job = stored_job()
    lease.claim(job.id, W1)
    expire(job)
    message = MessageProxy(process_job.message(str(job.id)))
    message.fail()

    FailJobWhenMessageDies().after_process_message(None, message, exception=OSError("disk on fire"))

    assert (fresh(job).status, fresh(job).error_code) == (Job.FAILED, "processing_error")


def test_a_job_started_job_max_attempts_times_is_failed_by_its_next_delivery_and_stays_failed(settings):
    settings.JOB_MAX_ATTEMPTS = 2
    job = stored_job()
    for worker in (W1, W2):  # each killed mid-job (say, out of memory): its lease runs out
        assert lease.claim(job.id, worker) is not None
        expire(job, seconds_ago=settings.JOB_LEASE_SECONDS * 2)

    assert lifecycle.claim(job.id, "host:3:worker-3") is None

    row = fresh(job)
    assert (row.status, row.error_code, row.attempts) == (Job.FAILED, "worker_lost", 2)
    assert "started 2 times" in row.error_message and "JOB_MAX_ATTEMPTS" in row.error_message
    assert not publishing.stale_jobs().filter(id=job.id).exists()  # the re-publisher leaves it alone
    assert not lifecycle.requeue_failed(job.id)  # and so does a requeue: it would kill the next worker too
    assert fresh(job).status == Job.FAILED


def test_a_failed_job_requeued_gets_its_attempts_anew(settings):
    settings.JOB_MAX_ATTEMPTS = 1
    job = stored_job()
    lease.claim(job.id, W1)
    lifecycle.fail(job.id, "processing_error", "storage was down", W1)

    assert lifecycle.requeue_failed(job.id)

    assert lease.claim(job.id, W2) is not None and fresh(job).attempts == 1
