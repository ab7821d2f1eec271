"""gateway.live.subscriptions on a real Redis: however many sockets a process holds, it is one channel
in the channel layer, in each group once, and it leaves the groups nobody follows any more. When
Redis stalls or restarts, the channel keeps its subscribers and tries again; a loss reaches only
the subscribers of the groups that lost something, and so do the events a sender had to drop, once
it can send again."""

import asyncio
import contextlib
from collections.abc import Callable

import pytest
import redis
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from bench.private_services import PrivateServices, start_redis, stop_redis
from gateway.auth import callers
from gateway.live import routing, waiting
from gateway.live import subscriptions as subscriptions_module
from gateway.live.subscriptions import Subscriptions
from gateway.models import ApiKey
from processing.events import messages
from processing.events import sender as sender_module
from processing.events.layer import RedisChannelLayer
from processing.events.sender import BlockingSender, Sender
from processing.jobs import lease, lifecycle
from tests.factories import stored_job
from tests.services import close_database_connections, require, url_of
from tests.waits import client_of_the_server, until_someone_waits_on

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True), pytest.mark.services]

SOCKETS = 20


@pytest.fixture
def anyio_backend():
    return "asyncio"


def members(client: redis.Redis, prefix: str) -> dict[str, set[bytes]]:
    """Each group that sockets follow in Redis and the channels in it (not LISTENERS_GROUP, which
    every listening channel is in, for as long as it listens)."""
    groups = {
        key.decode().removeprefix(f"{prefix}:group:"): set(client.zrange(key, 0, -1))
        for key in client.scan_iter(f"{prefix}:group:*")
    }
    groups.pop(messages.LISTENERS_GROUP, None)
    return groups


@pytest.fixture(autouse=True)
async def no_connection_left_behind():
    """The queries ran on the thread sensitive code runs on, each thread with a pool of its own:
    close that thread's, or the test database can't be dropped at the end of the session."""
    yield
    await database_sync_to_async(close_database_connections)()


@database_sync_to_async
def jobs_of_a_new_key(count: int) -> tuple[str, list]:
    key, presented = ApiKey.issue("subscriptions")
    return presented, [stored_job(**callers.key_caller(key).owner.fields()) for _ in range(count)]


async def test_many_sockets_are_one_channel_in_each_of_their_groups_until_they_close(redis_layer):
    client, prefix = redis_layer
    key, jobs = await jobs_of_a_new_key(SOCKETS)
    sockets = []
    for job in [*jobs, jobs[0]]:  # two sockets on the first job
        path, headers = f"/ws/jobs/{job.id}/", [(b"x-api-key", key.encode())]
        ws = WebsocketCommunicator(routing.application, path, headers=headers)
        assert (await ws.connect())[0]
        assert (await ws.receive_json_from())["type"] == "job.state"
        sockets.append(ws)

    groups = members(client, prefix)
    assert set(groups) == {messages.job_group(job.id) for job in jobs}
    assert len(set.union(*groups.values())) == 1  # the process's one channel
    assert all(len(channels) == 1 for channels in groups.values())

    for ws in sockets[1:]:
        await ws.disconnect()
    await Subscriptions.of_running_loop().settled()
    assert set(members(client, prefix)) == {messages.job_group(jobs[0].id)}  # still followed
    await sockets[0].disconnect()
    await Subscriptions.of_running_loop().settled()
    assert members(client, prefix) == {}


class Quiet:
    """A subscriber that expects nothing."""

    def deliver(self, message):
        raise AssertionError(f"unexpected event {message}")

    def missed(self):
        pass

    def lost(self):
        pass


async def test_a_group_left_while_it_was_being_joined_does_not_stay_joined(redis_layer):
    client, prefix = redis_layer
    subscriptions, subscriber = Subscriptions.of_running_loop(), Quiet()
    joining = asyncio.create_task(subscriptions.subscribe("job.deserted", subscriber))
    await asyncio.sleep(0)  # the subscription is asked for: its join is on its way
    subscriptions.unsubscribe("job.deserted", subscriber)

    assert await joining
    async with asyncio.timeout(30):  # else it never settles: the layer keeps a group nobody follows
        await subscriptions.settled()
    assert members(client, prefix) == {}


async def test_a_channel_joins_its_groups_again_well_within_their_expiry(redis_layer, settings):
    """A dead process's channel leaves the groups when its membership expires; a live one must not."""
    client, prefix = redis_layer
    layer = settings.CHANNEL_LAYERS["default"]
    config = {**layer["CONFIG"], "group_expiry": 1}  # joined again every 0.2 s
    settings.CHANNEL_LAYERS = {"default": {**layer, "CONFIG": config}}
    subscriptions = Subscriptions.of_running_loop()
    assert await subscriptions.subscribe("job.renewed", Quiet())
    group = f"{prefix}:group:job.renewed"
    [channel] = client.zrange(group, 0, -1)
    client.zadd(group, {channel: 0}, xx=True)  # as if it had joined in 1970: expired

    await eventually(lambda: (client.zscore(group, channel) or 0) > 0, within=30)
    assert client.zrange(group, 0, -1) == [channel]


# --- When Redis stalls, restarts, or loses messages -----------------------------------------


class Recorder:
    """A subscriber that keeps what it is told."""

    def __init__(self):
        self.heard: list[str] = []
        self.times_missed = 0
        self.times_lost = 0

    def deliver(self, message):
        self.heard.append(message["text"])

    def missed(self):
        self.times_missed += 1

    def lost(self):
        self.times_lost += 1


async def eventually(condition: Callable[[], bool], within: float = 60.0) -> None:
    """Wait until `condition()` holds; the deadline is only there so that a broken test ends."""
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.01)


def event(text: str) -> dict:
    return {"type": "job.event", "text": text}


def redis_host(url: str) -> dict:
    return {"address": url, "socket_timeout": None, "socket_connect_timeout": 0.5}


@pytest.fixture
def private_redis(settings):
    """The channel layer on a Redis of the test's own, which the test may pause or restart without
    touching the tests running beside it (a pause holds every client of the server)."""
    require("redis")
    with PrivateServices("redis") as services:
        server = services.servers["redis"]
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "processing.events.layer.RedisChannelLayer",
                "CONFIG": {"hosts": [redis_host(server.url)]},
            }
        }
        yield server


@pytest.fixture
def patient(monkeypatch):
    """A channel that never gives up on its own: only the test ends a failure."""
    monkeypatch.setattr(subscriptions_module, "LOST_AFTER", 3600)


@contextlib.contextmanager
def writes_held(url: str):
    """Redis holds every write (CLIENT PAUSE WRITE) until the block ends, as a Redis too busy to
    answer in time does: a join or a loss mark's removal runs past its timeout; reads still answer."""
    client = redis.Redis.from_url(url)
    client.client_pause(3_600_000, all=False)
    try:
        yield
    finally:
        client.client_unpause()
        client.close()


@contextlib.asynccontextmanager
async def sending_layer(url: str, **config):
    """Another process's channel layer, to send events from."""
    layer = RedisChannelLayer(hosts=[redis_host(url)], **config)
    try:
        yield layer
    finally:
        await layer.close_pools()


async def test_a_join_that_times_out_is_tried_again_and_no_socket_is_closed(private_redis, patient):
    subscriptions, first, second = Subscriptions.of_running_loop(), Recorder(), Recorder()
    assert await subscriptions.subscribe("job.first", first)

    with writes_held(private_redis.url):
        joining = asyncio.create_task(subscriptions.subscribe("job.second", second))
        await eventually(lambda: "membership" in subscriptions.failing())
        assert not joining.done()  # waiting for the join, not failed

    assert await joining
    async with sending_layer(private_redis.url) as other_process:
        await other_process.group_send_many(["job.first", "job.second"], event("after"))
    await eventually(lambda: first.heard and second.heard)
    assert first.heard == second.heard == ["after"]
    assert (first.times_lost, second.times_lost) == (0, 0)
    assert (first.times_missed, second.times_missed) == (0, 0)  # reading went on: nothing was lost


async def test_a_layer_that_stays_unreachable_ends_in_lost_and_fails_the_joins_waiting(
    private_redis, monkeypatch
):
    monkeypatch.setattr(subscriptions_module, "LOST_AFTER", 0.5)
    subscriptions, first, second = Subscriptions.of_running_loop(), Recorder(), Recorder()
    assert await subscriptions.subscribe("job.first", first)

    with writes_held(private_redis.url):
        assert not await asyncio.wait_for(subscriptions.subscribe("job.second", second), 60)
        assert first.times_lost == 1
        assert second.times_lost == 0  # never a subscriber: its subscribe said so, and that is all


async def test_after_redis_restarts_every_subscriber_gets_the_state_and_later_events(private_redis, patient):
    subscriptions, first, second = Subscriptions.of_running_loop(), Recorder(), Recorder()
    assert await subscriptions.subscribe("job.first", first)
    assert await subscriptions.subscribe("job.second", second)

    stop_redis("127.0.0.1", private_redis.port)  # its groups and inboxes go with it
    await eventually(lambda: "reading" in subscriptions.failing())
    start_redis("127.0.0.1", private_redis.port, private_redis.folder)

    await eventually(lambda: first.times_missed and second.times_missed)  # once it read and joined again
    async with sending_layer(private_redis.url) as other_process:
        await other_process.group_send_many(["job.first", "job.second"], event("after"))
    await eventually(lambda: first.heard and second.heard)
    assert (first.times_lost, second.times_lost) == (0, 0)


async def test_a_loss_on_one_group_is_told_to_its_subscribers_only(redis_layer):
    _, prefix = redis_layer
    subscriptions, in_lost, in_other = Subscriptions.of_running_loop(), Recorder(), Recorder()
    assert await subscriptions.subscribe("job.lost", in_lost)
    assert await subscriptions.subscribe("job.other", in_other)

    # A sender for which every process's inbox is full: the event is refused and marked lost.
    async with sending_layer(url_of("redis"), prefix=prefix, channel_capacity={"specific.*": 0}) as full:
        await full.group_send("job.lost", event("refused"))

    await eventually(lambda: in_lost.times_missed)
    assert in_other.times_missed == 0  # told in the same check, had it been told
    assert (in_lost.times_lost, in_other.times_lost) == (0, 0)


class TimesOutOnceItSeesALoss:
    """The layer's loss check, whose first answer that holds a loss comes too late for its caller: Redis
    read the marks, the caller timed out. A check that cleared the marks as it read them lost them."""

    def __init__(self, layer):
        self.losses_of = layer.losses_of
        self.timed_out = False

    async def __call__(self, channel):
        losses = await self.losses_of(channel)
        if losses and not self.timed_out:
            self.timed_out = True
            raise TimeoutError
        return losses


async def test_a_loss_check_that_times_out_loses_no_subscriber_and_no_loss(redis_layer, patient, monkeypatch):
    _, prefix = redis_layer
    layer = get_channel_layer()
    check = TimesOutOnceItSeesALoss(layer)
    monkeypatch.setattr(layer, "losses_of", check)
    subscriptions, in_lost, in_other = Subscriptions.of_running_loop(), Recorder(), Recorder()
    assert await subscriptions.subscribe("job.lost", in_lost)
    assert await subscriptions.subscribe("job.other", in_other)

    async with sending_layer(url_of("redis"), prefix=prefix, channel_capacity={"specific.*": 0}) as full:
        await full.group_send("job.lost", event("refused"))
    await eventually(lambda: in_lost.times_missed)  # by the check after the one that timed out

    assert check.timed_out and in_other.times_missed == 0
    async with sending_layer(url_of("redis"), prefix=prefix) as other_process:
        await other_process.group_send_many(["job.lost", "job.other"], event("after"))
    await eventually(lambda: in_lost.heard and in_other.heard)
    assert (in_lost.times_lost, in_other.times_lost) == (0, 0)


# --- Events a sender dropped -----------------------------------------------------------------


@pytest.fixture
def short_cooldown(monkeypatch):
    """A sender that fails tries again after 0.2 s rather than 5: the tests wait for it."""
    monkeypatch.setattr(sender_module, "COOLDOWN", 0.2)


@contextlib.contextmanager
def blocking_sender(url: str):
    """A worker process's sender, on the test's Redis."""
    layer = RedisChannelLayer(hosts=[redis_host(url)])
    sender = BlockingSender(layer)
    try:
        yield sender
    finally:
        sender.stop()


async def all_handled(sender: BlockingSender) -> None:
    """Returns once the sender has sent or dropped every event handed to it so far."""
    await asyncio.to_thread(sender.pending.join)


async def test_an_event_dropped_while_redis_held_writes_is_told_to_its_groups_subscribers_once_it_can(
    private_redis, patient, short_cooldown
):
    subscriptions, in_dropped, in_other = Subscriptions.of_running_loop(), Recorder(), Recorder()
    assert await subscriptions.subscribe("job.dropped", in_dropped)
    assert await subscriptions.subscribe("job.other", in_other)

    with blocking_sender(private_redis.url) as sender:
        with writes_held(private_redis.url):
            sender.send(["job.dropped"], event("never sent"))  # times out: dropped
            await all_handled(sender)
            assert sender.dropped == 1 and not in_dropped.times_missed

        await eventually(lambda: in_dropped.times_missed)
    assert in_dropped.heard == []  # the event itself never went out
    assert in_other.times_missed == 0  # told in the same message, had it been told
    assert (in_dropped.times_lost, in_other.times_lost) == (0, 0)


async def test_dropped_events_are_still_told_after_a_notice_that_failed(
    private_redis, patient, short_cooldown
):
    subscriptions, in_dropped = Subscriptions.of_running_loop(), Recorder()
    assert await subscriptions.subscribe("job.dropped", in_dropped)

    with blocking_sender(private_redis.url) as sender:
        with writes_held(private_redis.url):
            sender.send(["job.dropped"], event("never sent"))
            await all_handled(sender)
            failed_until = sender.paused_until
            # Nothing more to send: only a notice, tried after the cooldown, can pause the sender again.
            await eventually(lambda: sender.paused_until > failed_until)
            assert not in_dropped.times_missed

        await eventually(lambda: in_dropped.times_missed)


async def test_past_the_groups_a_sender_remembers_every_listener_is_told(
    private_redis, patient, short_cooldown, monkeypatch
):
    monkeypatch.setattr(sender_module, "MISSED_GROUPS_AT_MOST", 2)
    subscriptions, in_dropped, elsewhere = Subscriptions.of_running_loop(), Recorder(), Recorder()
    assert await subscriptions.subscribe("job.dropped-1", in_dropped)
    assert await subscriptions.subscribe("job.never-dropped", elsewhere)

    with blocking_sender(private_redis.url) as sender:
        with writes_held(private_redis.url):
            for number in (1, 2, 3):  # three groups: more than the sender remembers
                sender.send([f"job.dropped-{number}"], event("never sent"))
            await all_handled(sender)
            assert sender.dropped == 3

        await eventually(lambda: in_dropped.times_missed and elsewhere.times_missed)
    assert (in_dropped.times_lost, elsewhere.times_lost) == (0, 0)


async def test_events_a_sender_could_not_keep_up_with_are_told_to_their_groups(in_memory_layer, monkeypatch):
    monkeypatch.setattr(sender_module, "BACKLOG", 1)
    subscriptions = Subscriptions.of_running_loop()
    in_kept, in_dropped, in_other = Recorder(), Recorder(), Recorder()
    for group, subscriber in (("job.kept", in_kept), ("job.dropped", in_dropped), ("job.other", in_other)):
        assert await subscriptions.subscribe(group, subscriber)

    sender = Sender(asyncio.get_running_loop(), get_channel_layer())  # the in-memory layer's, on this loop
    sender.send(["job.kept"], event("kept"))
    sender.send(["job.dropped"], event("dropped"))  # handed over before the sender takes the first: no room
    try:
        await eventually(lambda: in_dropped.times_missed)
    finally:
        sender.task.cancel()

    assert in_kept.heard == ["kept"] and in_dropped.heard == []
    assert (in_kept.times_missed, in_other.times_missed) == (0, 0)


WORKER = "test-host:1:worker"


def stop_the_process_sender() -> None:
    """This process's sender, made for the test's Redis: its thread ends."""
    running = sender_module.current_sender()
    if isinstance(running, BlockingSender):
        running.stop()


def finish_job(job) -> None:
    """What a worker records of a job it has claimed and completed."""
    claimed = lifecycle.claim(job.id, WORKER)
    lifecycle.complete(
        claimed,
        WORKER,
        output_key=f"results/{job.id}/output.png",
        output_format="png",
        output_content_type="image/png",
        output_bytes=10,
        output_width=64,
        output_height=48,
    )


async def test_a_socket_whose_job_completed_while_redis_held_writes_gets_the_completed_state(
    private_redis, patient, short_cooldown
):
    key, (job,) = await jobs_of_a_new_key(1)
    path, headers = f"/ws/jobs/{job.id}/", [(b"x-api-key", key.encode())]
    ws = WebsocketCommunicator(routing.application, path, headers=headers)
    assert (await ws.connect())[0]
    assert (await ws.receive_json_from())["job"]["status"] == "queued"

    try:
        with writes_held(private_redis.url):
            await database_sync_to_async(finish_job)(job)  # its events can't be sent: dropped
            worker_sender = sender_module.current_sender()
            assert isinstance(worker_sender, BlockingSender)
            await all_handled(worker_sender)
            assert worker_sender.dropped == 2  # processing, completed

        state = await ws.receive_json_from(timeout=60)
        assert state["type"] == "job.state"
        assert state["job"]["status"] == "completed"
        closed = await ws.receive_output(timeout=60)
        assert (closed["type"], closed["code"]) == ("websocket.close", 1000)
    finally:
        stop_the_process_sender()


async def test_a_long_poll_whose_job_completed_while_redis_held_writes_is_answered(
    private_redis, patient, short_cooldown, monkeypatch
):
    monkeypatch.setattr(waiting, "RECHECK_EVERY", 3600)  # the job is read again only when told to
    job = await database_sync_to_async(stored_job)()
    claimed = await database_sync_to_async(lease.claim)(job.id, WORKER)

    async with client_of_the_server() as server:
        polling = asyncio.create_task(server.get(f"/api/v1/jobs/{job.id}?wait=60"))
        try:
            await until_someone_waits_on(job.id)
            with writes_held(private_redis.url):
                assert await database_sync_to_async(lifecycle.complete)(claimed, WORKER, processing_ms=1.0)
                worker_sender = sender_module.current_sender()
                assert isinstance(worker_sender, BlockingSender)
                await all_handled(worker_sender)
                assert worker_sender.dropped == 1  # completed: its end is never heard

            # Long before the 60 s the client allowed, after which it would be answered anyway.
            response = await asyncio.wait_for(polling, 30)
        finally:
            stop_the_process_sender()

    assert response.json()["status"] == "completed"
