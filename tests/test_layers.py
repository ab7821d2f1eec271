"""processing.events.layer.RedisChannelLayer against a real Redis: one reader per process, bounded buffers,
every loss counted and marked with the groups it was for."""

import asyncio
import uuid

import pytest
import redis

from processing.events import layer as layer_module
from processing.events.layer import WS_DROPPED, RedisChannelLayer, check_channel_layer
from tests.services import require, url_of
from tests.stack import refused_port

pytestmark = [pytest.mark.anyio, pytest.mark.services]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(params=["one round trip", "two round trips"])
async def layer(request):
    """The layer as one Redis host has it (a script sends to groups in one round trip), and as several
    hosts have it (the members found, then the copies delivered)."""
    require("redis")
    prefix = f"test-layers-{uuid.uuid4().hex[:8]}"  # keys of our own in a shared Redis
    layer = RedisChannelLayer(hosts=[{"address": url_of("redis"), "socket_timeout": None}], prefix=prefix)
    assert layer.sends_in_one_trip
    layer.sends_in_one_trip = request.param == "one round trip"
    yield layer
    await layer.flush()
    await layer.close_pools()


async def test_a_group_message_reaches_each_waiting_channel(layer):
    first, second = await layer.new_channel(), await layer.new_channel()
    for channel in (first, second):
        await layer.group_add("job.1", channel)

    await layer.group_send("job.1", {"type": "job.event", "text": "hello"})

    received = await asyncio.wait_for(asyncio.gather(layer.receive(first), layer.receive(second)), 5)
    assert [message["text"] for message in received] == ["hello", "hello"]


async def test_an_event_for_a_group_nobody_is_in_is_dropped_and_later_ones_arrive(layer):
    await layer.group_send("job.empty", {"type": "job.event", "text": "nobody saw this"})
    channel = await layer.new_channel()
    await layer.group_add("job.empty", channel)
    await layer.group_send("job.empty", {"type": "job.event", "text": "seen"})

    received = await asyncio.wait_for(layer.receive(channel), 5)
    assert received["text"] == "seen"


async def test_one_message_to_several_groups_reaches_only_their_members_once_each(layer):
    in_job, in_owner, elsewhere = [await layer.new_channel() for _ in range(3)]
    await layer.group_add("job.7", in_job)
    await layer.group_add("owner.key.7", in_owner)
    await layer.group_add("job.8", elsewhere)

    await layer.group_send_many(["job.7", "owner.key.7", "jobs.all"], {"type": "job.event", "text": "7"})

    for channel, group in ((in_job, "job.7"), (in_owner, "owner.key.7")):
        received = await asyncio.wait_for(layer.receive(channel), 5)
        assert received["text"] == "7" and group in received["groups"]
    await layer.group_send("job.8", {"type": "job.event", "text": "8"})
    assert (await asyncio.wait_for(layer.receive(elsewhere), 5))["text"] == "8"  # and not "7" before it


async def test_a_channel_in_several_of_the_groups_gets_the_message_once_with_each_group(layer):
    process = await layer.new_channel()
    await layer.group_add_many(["job.9", "owner.key.9", "jobs.all"], process)

    await layer.group_send_many(["job.9", "owner.key.9", "jobs.all"], {"type": "job.event", "text": "9"})
    await layer.group_send("job.10", {"type": "job.event", "text": "10"})  # nobody is in it
    await layer.group_discard_many(["job.9", "jobs.all"], process)
    await layer.group_send_many(["job.9", "owner.key.9", "jobs.all"], {"type": "job.event", "text": "9b"})

    first, second = [await asyncio.wait_for(layer.receive(process), 5) for _ in range(2)]
    assert (first["text"], sorted(first["groups"])) == ("9", ["job.9", "jobs.all", "owner.key.9"])
    assert (second["text"], second["groups"]) == ("9b", ["owner.key.9"])


def dropped(reason: str) -> float:
    return WS_DROPPED.labels(reason)._value.get()


async def test_a_message_a_full_inbox_cannot_take_is_counted_and_marked_for_its_groups(layer):
    layer.channel_capacity = layer.compile_capacities({"specific.*": 2})  # a process that stopped reading
    stalled = await layer.new_channel()
    await layer.group_add_many(["job.11", "owner.11", "job.12"], stalled)
    before = dropped("channel_full")
    assert not await layer.losses_of(stalled)

    for number in range(2):
        await layer.group_send("job.12", {"type": "job.event", "text": str(number)})
    await layer.group_send_many(["job.11", "owner.11"], {"type": "job.event", "text": "refused"})

    assert dropped("channel_full") == before + 1
    losses = await layer.losses_of(stalled)
    assert (losses.groups, losses.everyone) == ({"job.11", "owner.11"}, False)  # not job.12's sockets
    assert await layer.losses_of(stalled) == losses  # read, not cleared: a reader that fails reads it again
    await layer.forget_losses(stalled, losses)
    assert not await layer.losses_of(stalled)
    received = [await asyncio.wait_for(layer.receive(stalled), 5) for _ in range(2)]
    assert [message["text"] for message in received] == ["0", "1"]


async def test_a_loss_marked_while_losses_were_being_told_stays_marked(layer):
    layer.channel_capacity = layer.compile_capacities({"specific.*": 0})  # refuses everything
    stalled = await layer.new_channel()
    await layer.group_add("job.14", stalled)
    await layer.group_send("job.14", {"type": "job.event", "text": "first"})

    told = await layer.losses_of(stalled)
    await layer.group_send("job.14", {"type": "job.event", "text": "second"})  # before it is forgotten
    await layer.forget_losses(stalled, told)

    assert (await layer.losses_of(stalled)).groups == {"job.14"}


async def test_a_message_that_expired_unread_is_a_loss_for_every_group(layer):
    stalled = await layer.new_channel()
    await layer.group_add_many(["job.13", "job.15"], stalled)
    await layer.group_send("job.13", {"type": "job.event", "text": "old"})
    inbox, redis_client = layer.channel_key(stalled), layer.connection(0)
    (old,) = await redis_client.zrange(inbox, 0, -1)
    await redis_client.zadd(inbox, {old: 0}, xx=True)  # as if it had waited unread since 1970

    await layer.group_send("job.15", {"type": "job.event", "text": "new"})  # drops what expired

    losses = await layer.losses_of(stalled)
    assert losses.everyone  # its groups are not read from an expired message: everyone is told
    assert (await asyncio.wait_for(layer.receive(stalled), 5))["text"] == "new"


async def test_a_stopped_consumers_channel_keeps_nothing(layer):
    gone, alive = await layer.new_channel(), await layer.new_channel()
    for channel in (gone, alive):
        await layer.group_add("job.2", channel)
    waiting = asyncio.create_task(layer.receive(gone))
    while layer.reader is None:  # receive() starts the reader, then waits on the channel's buffer
        await asyncio.sleep(0)
    waiting.cancel()  # what channels does when a socket closes

    for number in range(3):
        await layer.group_send("job.2", {"type": "job.event", "text": str(number)})
    received = [await asyncio.wait_for(layer.receive(alive), 5) for _ in range(3)]

    assert [message["text"] for message in received] == ["0", "1", "2"]
    assert gone not in layer.receive_buffer  # all three went by it


async def test_a_channel_that_does_not_read_holds_at_most_its_capacity(layer):
    layer.capacity = 5  # per channel; the process's inbox in Redis may hold more
    layer.channel_capacity = layer.compile_capacities({"specific.*": 1000})
    stuck, reader = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("owner.x", stuck)
    await layer.group_add("job.3", reader)
    reading = asyncio.create_task(layer.receive(reader))  # starts the process's reader

    for number in range(50):
        await layer.group_send("owner.x", {"type": "job.event", "text": str(number)})
    await layer.group_send("job.3", {"type": "job.event", "text": "done"})
    await asyncio.wait_for(reading, 5)

    assert layer.receive_buffer[stuck].qsize() == 5
    assert (await layer.receive(stuck))["text"] == "45"  # the oldest were dropped
    losses = await layer.losses_of(stuck)
    assert (losses.groups, losses.everyone) == ({"owner.x"}, False)
    assert not await layer.losses_of(stuck)  # a buffer's losses are told once
    assert not await layer.losses_of(reader)


async def read_in_order(layer, channel: str, count: int) -> list[str]:
    return [(await asyncio.wait_for(layer.receive(channel), 5))["text"] for _ in range(count)]


async def test_a_burst_larger_than_one_read_arrives_whole_and_in_order(layer):
    count = 2 * layer_module.READ_AT_ONCE + 17  # three reads: two full, one not
    layer.capacity = count  # the channel's buffer, and the inbox in Redis, hold the whole burst
    layer.channel_capacity = layer.compile_capacities({"specific.*": count})
    channel = await layer.new_channel()
    await layer.group_add("job.burst", channel)
    for number in range(count):  # waiting in the inbox before anyone reads it
        await layer.group_send("job.burst", {"type": "job.event", "text": str(number)})

    assert await read_in_order(layer, channel, count) == [str(number) for number in range(count)]


async def test_on_a_redis_without_bzmpop_the_inbox_is_read_a_message_a_call(layer, monkeypatch):
    """Redis before 7.0 answers BZMPOP with an error: the reader falls back to BZPOPMIN, for good."""
    tried = []

    async def bzmpop_of_redis_6(self, *args, **kwargs):
        tried.append(args)
        raise redis.ResponseError("unknown command 'BZMPOP', with args beginning with: '5' '1'")

    monkeypatch.setattr(redis.asyncio.Redis, "bzmpop", bzmpop_of_redis_6)
    channel = await layer.new_channel()
    await layer.group_add("job.old", channel)
    for number in range(3):
        await layer.group_send("job.old", {"type": "job.event", "text": str(number)})

    assert await read_in_order(layer, channel, 3) == ["0", "1", "2"]
    await layer.group_send("job.old", {"type": "job.event", "text": "later"})
    assert await read_in_order(layer, channel, 1) == ["later"]
    assert len(tried) == 1 and not layer.pops_many  # asked once, then never again


async def test_when_redis_goes_away_every_waiting_receive_raises(layer):
    with refused_port() as port:
        dead = RedisChannelLayer(hosts=[{"address": f"redis://127.0.0.1:{port}/0", "socket_timeout": None}])
        channels = [await dead.new_channel() for _ in range(3)]

        results = await asyncio.wait_for(
            asyncio.gather(*(dead.receive(channel) for channel in channels), return_exceptions=True), 60
        )

    assert all(isinstance(result, redis.RedisError) for result in results)
    assert not dead.receive_buffer


def redis_layers(host) -> dict:
    return {"default": {"BACKEND": "processing.events.layer.RedisChannelLayer", "CONFIG": {"hosts": [host]}}}


def test_start_up_refuses_a_redis_layer_whose_sockets_time_out(settings):
    # redis-py's default 5 s read timeout would end every idle WebSocket after 5 s.
    settings.CHANNEL_LAYERS = redis_layers("redis://127.0.0.1:6379/0")
    assert [error.id for error in check_channel_layer()] == ["gateway.E001"]

    settings.CHANNEL_LAYERS = redis_layers({"address": "redis://127.0.0.1:6379/0", "socket_timeout": None})
    assert check_channel_layer() == []
