"""gateway.live.subscriptions on a real Redis: however many sockets a process holds, it is one channel
in the channel layer, in each group once, and it leaves the groups nobody follows any more."""

import asyncio

import pytest
import redis
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from gateway.auth import callers
from gateway.live import routing
from gateway.live.subscriptions import Subscriptions
from gateway.models import ApiKey
from processing.events import messages
from tests.factories import stored_job
from tests.services import close_database_connections

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True), pytest.mark.services]

SOCKETS = 20


@pytest.fixture
def anyio_backend():
    return "asyncio"


def members(client: redis.Redis, prefix: str) -> dict[str, set[bytes]]:
    """Each group in Redis and the channels in it."""
    return {
        key.decode().removeprefix(f"{prefix}:group:"): set(client.zrange(key, 0, -1))
        for key in client.scan_iter(f"{prefix}:group:*")
    }


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
