"""processing.events: a job's events are built where it changes and sent on commit; the sender never
makes a job wait on the channel layer, and no event is lost unseen: the groups of those it drops are
told once it can (their subscribers, end to end: tests/test_subscriptions.py)."""

import asyncio
import uuid

import pytest
from channels.layers import InMemoryChannelLayer
from django.db import transaction
from prometheus_client import REGISTRY

from processing.events import messages
from processing.events import sender as sender_module
from processing.events.layer import RedisChannelLayer
from processing.events.sender import BlockingSender, Missed, Notice, Sender, start_in_thread
from processing.jobs import lifecycle, publishing
from processing.worker.actors import process_job
from tests.factories import stored_job
from tests.services import require, url_of
from tests.uploads import submit

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def dropped_total() -> float:
    reasons = ("failed", "cooldown", "backlog", "error")
    samples = (REGISTRY.get_sample_value("darkroom_job_events_dropped_total", {"reason": r}) for r in reasons)
    return sum(value or 0 for value in samples)


@pytest.mark.parametrize("redis_url", ["silent_redis", "refusing_redis"])
async def test_events_an_unreachable_redis_cannot_take_are_dropped_and_counted(request, redis_url):
    address = request.getfixturevalue(redis_url)
    layer = RedisChannelLayer(
        hosts=[{"address": address, "socket_timeout": None, "socket_connect_timeout": 1}]
    )
    sender = Sender(asyncio.get_running_loop(), layer)
    before = dropped_total()

    for _ in range(3):  # as a worker thread sends them: send returns at once
        sender.send(["job.1"], {"type": "job.event", "job_id": "1", "status": "processing", "text": "x"})
    await asyncio.sleep(0)  # send hands each event to the loop: let it queue them
    await sender.pending.join()  # every one was tried or dropped: none left waiting on Redis

    assert sender.dropped == 3
    assert dropped_total() - before == 3
    sender.task.cancel()


@pytest.mark.parametrize("redis_url", ["silent_redis", "refusing_redis"])
def test_events_the_blocking_sender_cannot_deliver_are_dropped_and_counted(request, redis_url):
    address = request.getfixturevalue(redis_url)
    layer = RedisChannelLayer(
        hosts=[{"address": address, "socket_timeout": None, "socket_connect_timeout": 1}]
    )
    sender = start_in_thread(layer)
    assert isinstance(sender, BlockingSender)
    before = dropped_total()

    try:
        for _ in range(3):  # as a worker thread sends them: send returns at once
            sender.send(["job.1"], {"type": "job.event", "job_id": "1", "status": "processing", "text": "x"})
        sender.pending.join()  # every one was tried or dropped: none left waiting on Redis
    finally:
        sender.stop()  # else it would tell this dead Redis what it dropped every few seconds, all run long

    assert sender.dropped == 3
    assert dropped_total() - before == 3


@pytest.mark.services
async def test_the_blocking_sender_delivers_to_the_groups_channels_in_order():
    require("redis")
    layer = RedisChannelLayer(
        hosts=[{"address": url_of("redis"), "socket_timeout": None}], prefix=f"test-{uuid.uuid4().hex[:8]}"
    )
    channel = await layer.new_channel()
    await layer.group_add("job.2", channel)
    sender = start_in_thread(layer)

    for number in range(3):
        event = {"type": "job.event", "job_id": "2", "status": "x", "text": str(number)}
        sender.send(["job.2", "jobs.all"], event)
    received = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(3)]

    assert [(message["text"], message["groups"]) for message in received] == [
        ("0", ["job.2"]),
        ("1", ["job.2"]),
        ("2", ["job.2"]),
    ]
    assert sender.dropped == 0
    sender.stop()
    await layer.flush()


# --- What the sender remembers of the events it dropped --------------------------------


def test_the_groups_of_dropped_events_are_told_once_each():
    missed = Missed()
    missed.add(["job.1", "jobs.all"])
    missed.add(["job.2", "jobs.all"])

    notice = missed.take()
    assert notice == Notice(frozenset({"job.1", "job.2", "jobs.all"}))
    assert notice.batches() == [["job.1", "job.2", "jobs.all"]]
    assert missed.take() is None  # told: nothing more to tell


def test_past_the_groups_the_sender_remembers_every_listener_is_told(monkeypatch):
    monkeypatch.setattr(sender_module, "MISSED_GROUPS_AT_MOST", 2)
    missed = Missed()
    missed.add(["job.1", "job.2"])
    missed.add(["job.3"])
    missed.add(["job.4"])

    notice = missed.take()
    assert notice is not None and notice.everyone
    assert notice.batches() == [[messages.LISTENERS_GROUP]]


def test_a_sender_replaced_for_another_layer_tells_nothing_more(monkeypatch):
    """Only tests change a process's layer; a sender left on a dead one must not try it forever."""
    old, new = sender_module.Breaker(), sender_module.Breaker()
    old.layer = new.layer = None  # senders of no layer: only what Breaker keeps is looked at
    monkeypatch.setattr(sender_module, "_sender", old)
    monkeypatch.setattr(sender_module, "_sender_pid", None)
    old.missed.add(["job.1"])
    assert old.seconds_to_notice() is not None  # due, before it is replaced

    sender_module.replace_sender(new)

    assert sender_module._sender is new
    assert old.seconds_to_notice() is None
    assert old.notice_due() is None


def test_a_notice_that_failed_is_told_again_with_the_groups_dropped_meanwhile():
    missed = Missed()
    missed.add(["job.1"])
    failed = missed.take()
    missed.add(["job.2"])
    missed.put_back(failed)

    assert missed.take() == Notice(frozenset({"job.1", "job.2"}))


def test_many_groups_are_told_in_calls_of_a_bounded_size(monkeypatch):
    monkeypatch.setattr(sender_module, "GROUPS_PER_NOTICE", 2)
    notice = Notice(frozenset({"job.1", "job.2", "job.3"}))

    assert notice.batches() == [["job.1", "job.2"], ["job.3"]]
    assert notice.untold(notice.batches()[1:]) == Notice(frozenset({"job.3"}))  # the first call went out


def test_a_group_dropped_again_while_its_notice_was_on_its_way_is_told_again():
    missed = Missed()
    missed.add(["job.1"])
    assert missed.take() == Notice(frozenset({"job.1"}))  # on its way: it may reach Redis before the drop
    missed.add(["job.1"])

    assert missed.take() == Notice(frozenset({"job.1"}))


def test_everyone_put_back_stays_everyone(monkeypatch):
    monkeypatch.setattr(sender_module, "MISSED_GROUPS_AT_MOST", 1)
    missed = Missed()
    missed.add(["job.1", "job.2"])
    failed = missed.take()
    missed.add(["job.3"])
    missed.put_back(failed)

    assert missed.take() == Notice(everyone=True)


# --- Announcing: where a job changes, on commit ----------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_job_is_announced_once_per_change_as_the_api_shows_it(client, stub_broker, sent):
    accepted = submit(client, "grayscale").json()
    assert [(event["type"], event["job"]) for event in sent.events] == [("job.queued", accepted)]

    process_job.fn(accepted["job_id"])  # as a worker runs it

    assert [event["type"] for event in sent.events] == ["job.queued", "job.processing", "job.completed"]
    assert sent.events[-1]["job"] == client.get(accepted["job_url"]).json()


@pytest.mark.django_db(transaction=True)
def test_a_requeued_job_is_announced_as_queued_again(stub_broker, sent):
    job = stored_job()
    lifecycle.fail(job.id, "worker_lost", "lost")
    assert publishing.requeue(job)

    assert [event["type"] for event in sent.events] == ["job.failed", "job.queued"]


@pytest.mark.django_db(transaction=True)
def test_a_change_is_announced_once_it_commits_and_never_if_it_is_rolled_back(sent):
    job, other = stored_job(), stored_job()
    with transaction.atomic():
        lifecycle.cancel(job.id)
        assert sent.events == []  # the cancellation could still be rolled back
    assert [event["type"] for event in sent.events] == ["job.cancelled"]

    with pytest.raises(RuntimeError), transaction.atomic():
        lifecycle.cancel(other.id)
        raise RuntimeError("the request failed")
    assert len(sent.events) == 1


@pytest.mark.parametrize(
    "identities",
    [
        ("token:alice:x", "token:alice.x"),
        ("token:auth0|alice123", "token:alice@example.com"),
        ("token:" + "x" * 255, "token:" + "x" * 254 + "y"),
        ("anonymous", "key:12", "session:" + "0" * 32),
    ],
)
def test_every_owner_has_a_group_of_its_own_that_the_channel_layer_takes(identities):
    groups = {messages.owner_group(identity) for identity in identities}

    assert len(groups) == len(identities)
    for group in groups:
        assert InMemoryChannelLayer().require_valid_group_name(group)
