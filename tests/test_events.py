"""gateway.live.events.Publisher: a job's events never wait on the channel layer, and none is lost unseen."""

import asyncio

import pytest
from prometheus_client import REGISTRY

from gateway.live.events import Publisher
from gateway.live.layers import RedisChannelLayer

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
    publisher = Publisher(asyncio.get_running_loop(), layer)
    before = dropped_total()

    for _ in range(3):  # as a worker thread sends them: publish returns at once
        publisher.publish(
            ["job.1"], {"type": "job.event", "job_id": "1", "status": "processing", "text": "x"}
        )
    await asyncio.sleep(0)  # publish hands each event to the loop: let it queue them
    await publisher.pending.join()  # every one was tried or dropped: none left waiting on Redis

    assert publisher.dropped == 3
    assert dropped_total() - before == 3
    publisher.task.cancel()
