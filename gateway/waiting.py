"""Long polls: `GET /api/v1/jobs/{id}?wait=N` holds the request until its job ends.

Under the ASGI entry point (project.asgi) `LongPolls` serves them in two passes of the
ordinary synchronous view, with the wait between them on the event loop: the first pass
authenticates, finds the job and, when it has not ended, marks its answer with
WAIT_HEADER instead of waiting; `LongPolls` then holds the request, holding no thread,
until the job's live events say it ended (or the wait runs out), and answers with a
second pass. Elsewhere (a WSGI server, the test client) the view waits itself.

Waiting joins the job's event group on the channel layer, as a WebSocket would, then
checks once that the job has not ended meanwhile; where live events can't reach this
process (the channel layer is down, or its reader runs on another event loop) it looks
at the job every FALLBACK_INTERVAL seconds instead.
"""

import asyncio
import logging
import re

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection

from gateway import events
from processing.models import Job

logger = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 60
FALLBACK_INTERVAL = 0.25
WAIT_HEADER = "Darkroom-Wait"  # the first pass's mark: the job to wait for
PASS = "darkroom.long_poll"  # scope key: "first" or "final" (clients can't set scope keys)

LONG_POLL = re.compile(r"^/api/v1/jobs/[0-9a-fA-F-]{32,36}/?$")
WAIT = re.compile(rb"(?:^|&)wait=([0-9.]+)")


# --- Waiting ---------------------------------------------------------------------------


async def until_ended(job_id, timeout: float) -> bool:
    """Wait until the job has ended, `timeout` seconds at most; True if it has."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    layer = get_channel_layer()
    events.serve_from_running_loop()
    channel = await layer.new_channel()
    joined = await events.join(layer, [events.job_group(job_id)], channel)
    try:
        if await has_ended(job_id):  # it may have ended before the join
            return True
        if joined and await end_event(layer, channel, job_id, deadline):
            return True
        return await poll(job_id, deadline)
    finally:
        await events.leave(layer, joined, channel)
        events.forget_channel(layer, channel)


async def end_event(layer, channel: str, job_id, deadline: float) -> bool:
    """True when an event says the job ended; False at the deadline, or when events can't come."""
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        try:
            async with asyncio.timeout(deadline - loop.time()):
                message = await layer.receive(channel)
        except TimeoutError:
            return False
        except (RuntimeError, *events.LAYER_ERRORS) as exc:
            # RuntimeError: the layer's reader runs on another event loop.
            logger.info("long poll falls back to reading the job: %s", exc, extra={"job_id": str(job_id)})
            return False
        if message.get("status") in Job.FINISHED:
            return True
    return False


async def poll(job_id, deadline: float) -> bool:
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        await asyncio.sleep(min(FALLBACK_INTERVAL, max(0.0, deadline - loop.time())))
        if await has_ended(job_id):
            return True
    return False


@sync_to_async(thread_sensitive=False)
def has_ended(job_id) -> bool:
    try:
        return Job.objects.filter(id=job_id, status__in=Job.FINISHED).exists()
    finally:
        connection.close()  # this thread serves no request that would give it back to the pool


async def until_finished(job: Job, timeout: float) -> Job:
    """The job once it has ended, or as it is after `timeout` seconds (for the view's own wait)."""
    await until_ended(job.id, timeout)
    await sync_to_async(job.refresh_from_db)()
    return job


# --- The two passes under ASGI ---------------------------------------------------------------


def deferred_by_the_server(request) -> bool:
    """True in a first pass: the view marks its answer and `LongPolls` waits, not the view."""
    return request.META.get("asgi.scope", {}).get(PASS) == "first"


def is_final_pass(request) -> bool:
    """True in a second pass: the same request as the first, answered now (not counted again)."""
    return request.META.get("asgi.scope", {}).get(PASS) == "final"


class LongPolls:
    """ASGI middleware in front of the synchronous Django app (see the module's docstring)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        wait = requested_wait(scope)
        if not wait:
            return await self.app(scope, receive, send)
        first = await Captured.from_app(self.app, {**scope, PASS: "first"})
        job_id = first.header(WAIT_HEADER)
        if job_id is None:  # ended already, or not found, or refused: the answer as it is
            return await first.replay(send)
        await until_ended(job_id, min(wait, MAX_WAIT_SECONDS))
        final = await Captured.from_app(self.app, {**scope, PASS: "final"})
        await final.replay(send)


def requested_wait(scope) -> float | None:
    """The seconds a `GET /api/v1/jobs/{id}?wait=N` asks to wait; None for any other request."""
    if scope["type"] != "http" or scope["method"] != "GET" or not LONG_POLL.match(scope["path"]):
        return None
    found = WAIT.search(scope.get("query_string", b""))
    try:
        return float(found.group(1)) if found else None
    except ValueError:
        return None  # the view answers 422


class Captured:
    """One pass's whole answer, held back so that `LongPolls` decides what the client gets."""

    def __init__(self):
        self.messages: list[dict] = []

    @classmethod
    async def from_app(cls, app, scope) -> "Captured":
        captured = cls()

        async def receive():  # a GET: no body, and the client's own disconnect is not ours to see
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            captured.messages.append(message)

        await app(scope, receive, send)
        return captured

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        for key, value in self.messages[0].get("headers", []):
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    async def replay(self, send) -> None:
        start, *body = self.messages
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != WAIT_HEADER.lower().encode()]
        await send({**start, "headers": headers})
        for message in body:
            await send(message)
