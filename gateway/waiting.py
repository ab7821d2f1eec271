"""Long polls: hold a request until its job ends, woken by the job's live events.

The request joins the job's event group on the channel layer (as a WebSocket would),
reads the job once more (it may have ended before the join), then sleeps until an
event says the job has ended or the wait runs out; one request, whatever the job's
length. Where live events can't reach this request (the channel layer is down, or a
server without an event loop of its own runs the view), it reads the job every
FALLBACK_INTERVAL seconds instead.
"""

import asyncio
import logging

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from gateway import events
from processing.models import Job

logger = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 60
FALLBACK_INTERVAL = 0.25


async def until_finished(job: Job, timeout: float) -> Job:
    """The job once it has ended, or as it is after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    layer = get_channel_layer()
    events.serve_from_running_loop()
    channel = await layer.new_channel()
    joined = await events.join(layer, [events.job_group(job.id)], channel)
    try:
        job = await reread(job)
        if joined:
            job = await wait_for_end_event(layer, channel, job, deadline)
        return await poll_until(job, deadline)
    finally:
        await events.leave(layer, joined, channel)
        events.forget_channel(layer, channel)


async def wait_for_end_event(layer, channel: str, job: Job, deadline: float) -> Job:
    loop = asyncio.get_running_loop()
    while not job.is_finished and loop.time() < deadline:
        try:
            async with asyncio.timeout(deadline - loop.time()):
                message = await layer.receive(channel)
        except TimeoutError:
            break
        except (RuntimeError, *events.LAYER_ERRORS) as exc:
            # RuntimeError: the layer's reader runs on another event loop (a WSGI server's view).
            logger.info("long poll falls back to reading the job: %s", exc, extra={"job_id": str(job.id)})
            break
        if message.get("status") in Job.FINISHED:
            job = await reread(job)
    return job


async def poll_until(job: Job, deadline: float) -> Job:
    loop = asyncio.get_running_loop()
    while not job.is_finished and loop.time() < deadline:
        await asyncio.sleep(min(FALLBACK_INTERVAL, max(0.0, deadline - loop.time())))
        job = await reread(job)
    return job


@sync_to_async
def reread(job: Job) -> Job:
    job.refresh_from_db()
    return job
