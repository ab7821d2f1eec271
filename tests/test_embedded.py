"""The embedded default: jobs survive a server restart although the in-memory broker does not."""

import threading
import time

import dramatiq
import pytest
from django.conf import settings
from django_dramatiq.utils import load_middleware
from dramatiq.brokers.stub import StubBroker

from processing.callbacks import signing
from processing.callbacks.deliveries import CALLBACK_QUEUE, deliver_callback
from processing.jobs import lifecycle, publishing
from processing.models import Job
from processing.worker import actors, embedded
from processing.worker.actors import process_job
from tests.factories import stored_job
from tests.receivers import Receiver

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


@pytest.fixture
def unbooted_broker():
    """The broker as the server has it before the embedded workers start: no process_boot yet."""
    broker = StubBroker(middleware=[load_middleware(path) for path in settings.DRAMATIQ_BROKER["MIDDLEWARE"]])
    previous = dramatiq.get_broker()
    dramatiq.set_broker(broker)
    for actor in (process_job, deliver_callback):
        actor.broker = broker
        broker.declare_actor(actor)
    yield broker
    broker.close()
    dramatiq.set_broker(previous)
    for actor in (process_job, deliver_callback):
        actor.broker = previous


@pytest.fixture
def embedded_start(unbooted_broker, settings, monkeypatch):
    """embedded.start() as the server runs it, its worker stopped after the test."""
    settings.EMBEDDED_WORKERS = True
    monkeypatch.setattr(embedded, "_started", False)
    monkeypatch.setattr(embedded, "requeue_forever", lambda: None)  # its own tests cover it
    workers = []

    def start() -> dramatiq.Worker:
        workers.append(embedded.start())
        return workers[-1]

    yield start
    for worker in workers:
        worker.stop()


def test_an_embedded_job_over_its_time_limit_fails_with_the_reason(
    unbooted_broker, embedded_start, monkeypatch
):
    job = unfinished_job(Job.QUEUED)
    monkeypatch.setattr(process_job, "options", {**process_job.options, "time_limit": 200})
    never = threading.Event()

    def endless(job, worker):
        # Python-level work that only the time limit stops; without one it gives up after a
        # generous while, leaving the job unfinished, so that the test fails rather than hangs.
        deadline = time.monotonic() + 30
        while not never.wait(0.01) and time.monotonic() < deadline:
            pass

    monkeypatch.setattr(actors, "run", endless)

    worker = embedded_start()
    embedded.republish_unfinished()  # the first thing its requeue thread does: the job left queued
    unbooted_broker.join(process_job.queue_name, fail_fast=False)
    worker.join()

    job.refresh_from_db()
    assert (job.status, job.error_code) == (Job.FAILED, "time_limit_exceeded")


def test_the_embedded_workers_deliver_callbacks_too(unbooted_broker, embedded_start, settings):
    settings.CALLBACK_ALLOWED_NETWORKS = ["127.0.0.1"]
    signing.issue("anonymous")
    worker = embedded_start()
    with Receiver() as receiver:
        job = stored_job(callback_url=receiver.url)
        lifecycle.cancel(job.id)
        unbooted_broker.join(CALLBACK_QUEUE)
        worker.join()
    assert [each.headers["Darkroom-Event"] for each in receiver.received] == ["job.cancelled"]
