"""manage.py requeue_stale: no accepted job is lost when its message is."""

import uuid
from datetime import timedelta

import dramatiq
import pika
import pytest
from django.core.management import call_command
from django.utils import timezone
from django_dramatiq.utils import load_middleware
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name, xq_name

from processing.jobs import publishing, queues
from processing.models import Job
from processing.worker.actors import process_job
from tests.factories import stored_job
from tests.services import require, url_of
from tests.stack import refused_port

pytestmark = pytest.mark.django_db(transaction=True)


def queued_job(age_seconds: int, **fields) -> Job:
    return stored_job(created_at=timezone.now() - timedelta(seconds=age_seconds), **fields)


@pytest.mark.parametrize(
    "stamped",
    [
        False,  # committed, but the publish never happened
        True,  # a new job's row is stamped as published when written: its process died before the publish
    ],
    ids=["unpublished", "died-before-its-publish"],
)
def test_a_job_whose_message_never_reached_the_broker_is_republished_and_completes(run_jobs, capsys, stamped):
    stamp = {"enqueued_at": timezone.now() - timedelta(seconds=60)} if stamped else {}
    lost = queued_job(age_seconds=120, **stamp)
    call_command("requeue_stale")
    assert "re-published 1 stale job(s)" in capsys.readouterr().out
    run_jobs()
    lost.refresh_from_db()
    assert lost.status == Job.COMPLETED


def test_fresh_jobs_and_jobs_whose_message_waits_in_the_queue_are_left_alone(stub_broker, capsys):
    queued_job(age_seconds=1)  # its publish may still be under way
    fresh = queued_job(age_seconds=1, enqueued_at=timezone.now())  # stamped at its INSERT
    waiting = queued_job(age_seconds=120, enqueued_at=timezone.now() - timedelta(seconds=100))
    for job in (fresh, waiting):
        publishing.send(job)  # in its queue, confirmed
    call_command("requeue_stale")
    assert "re-published 0 stale job(s)" in capsys.readouterr().out
    assert stub_broker.queues["images"].qsize() == 2


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


# --- On RabbitMQ ----------------------------------------------------------------------------


@pytest.fixture
def rabbitmq_broker(settings):
    """The actors bound to the machine's RabbitMQ, as in a full stack."""
    require("rabbitmq")
    url = url_of("rabbitmq")
    middleware = [load_middleware(path) for path in settings.DRAMATIQ_BROKER["MIDDLEWARE"]]
    broker = RabbitmqBroker(url=url, confirm_delivery=True, middleware=middleware)
    settings.BROKER_URL = url
    settings.DRAMATIQ_BROKER = {**settings.DRAMATIQ_BROKER, "OPTIONS": {"url": url}}
    previous = dramatiq.get_broker()
    dramatiq.set_broker(broker)
    process_job.broker = broker
    yield broker
    broker.close()
    dramatiq.set_broker(previous)
    process_job.broker = previous


@pytest.fixture
def silent_pool(rabbitmq_broker):
    """A pool of this test's own that no worker consumes; its queues deleted afterwards."""
    name = f"silent-{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(url_of("rabbitmq")))
    channel = connection.channel()
    yield name, channel
    for queue in (name, dq_name(name), xq_name(name)):
        channel.queue_delete(queue)
    connection.close()


def depth(pool: str) -> int:
    ready: int = queues.queue_status(pool)["queues"][0]["ready"]
    return ready


@pytest.mark.services
def test_jobs_waiting_in_a_pool_without_workers_are_not_published_again_at_every_pass(settings, silent_pool):
    pool, channel = silent_pool
    settings.REQUEUE_UNPUBLISHED_AFTER_SECONDS = 0  # every published job has waited long enough at once
    for _ in range(3):
        publishing.publish(queued_job(age_seconds=60, pool=pool))
    assert depth(pool) == 3

    for _ in range(3):
        call_command("requeue_stale")
        assert depth(pool) == 3, "one message per waiting job, however many passes"

    channel.queue_purge(pool)  # the broker lost them: each is published again, once
    call_command("requeue_stale")
    call_command("requeue_stale")
    assert depth(pool) == 3


@pytest.fixture
def unreadable_broker(settings):
    """RabbitMQ as the broker, down: its queues can't be read (nor anything published)."""
    with refused_port() as port:
        url = f"amqp://guest:guest@127.0.0.1:{port}/%2F"
        settings.DRAMATIQ_BROKER = {**settings.DRAMATIQ_BROKER, "OPTIONS": {"url": url}}
        previous = dramatiq.get_broker()
        dramatiq.set_broker(RabbitmqBroker(url=url))
        yield
        dramatiq.set_broker(previous)


def test_when_the_queues_cant_be_read_only_jobs_waiting_past_the_stale_time_are_published_blindly(
    settings, unreadable_broker
):
    settings.REQUEUE_STALE_AFTER_SECONDS = 900
    minutes_ago = queued_job(age_seconds=120, enqueued_at=timezone.now() - timedelta(seconds=100))
    long_ago = queued_job(age_seconds=2000, enqueued_at=timezone.now() - timedelta(seconds=1000))
    never_confirmed = queued_job(age_seconds=120)

    chosen = set(publishing.not_in_their_queues(publishing.stale_jobs()))

    assert chosen == {long_ago, never_confirmed} and minutes_ago not in chosen
