"""Job events for WebSocket subscribers: `job_changed` in, channel-layer group messages out.

processing sends `job_changed` after every change of a job, from worker processes and
threads and from gateway request threads. `on_job_changed` makes one message of it
(the job's public shape, JSON-encoded once for every subscriber) for three groups: the
job's, its owner's and the staff's; and, when it ends the job, for the group of the
processes' long-poll listeners. A `Publisher` sends it from an event loop of its
own, in the order events came, so the sender never waits on the channel layer and never
sees its errors: a job never fails, nor slows down, because Redis is slow or down.
Subscribers then miss live events, and clients fall back to polling.
"""

import asyncio
import atexit
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import CancelledError

from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels_redis.core import RedisChannelLayer as ChannelsRedisLayer
from django.conf import settings
from django.core import checks
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.module_loading import import_string
from prometheus_client import Counter
from redis.exceptions import RedisError

from gateway.serialize import job_json
from processing.models import Job

logger = logging.getLogger(__name__)

# What a failing channel layer raises: Redis errors, socket errors, and our timeouts around its calls.
LAYER_ERRORS = (RedisError, OSError)

LAYER_TIMEOUT = 1.0  # seconds for one channel-layer call; a hung Redis costs the publisher this, once
COOLDOWN = 5.0  # seconds after a failure during which events are dropped rather than tried
BACKLOG = 10_000  # events waiting to be sent; past this (Redis too slow) new ones are dropped
FLUSH_AT_EXIT = 1.0  # seconds a finishing process waits for its last events to go out

# Every event that never reached the channel layer, by why: its subscribers fell back to polling.
EVENTS_DROPPED = Counter("darkroom_job_events_dropped", "Job events never sent to subscribers", ["reason"])

STAFF_GROUP = "jobs.all"
ENDED_GROUP = "jobs.ended"  # only the events that end a job: what long polls wait for (gateway.live.waiting)
MESSAGE_TYPE = "job.event"  # what the channel layer carries: a message needs a type


# --- Groups and messages ------------------------------------------------------------


def job_group(job_id) -> str:
    return f"job.{job_id}"


def owner_group(identity: str) -> str:
    """The group of one owner, named by its identity (processing.owners.Owner.identity)."""
    return "owner." + identity.replace(":", ".")


def groups_for(job: Job) -> list[str]:
    groups = [job_group(job.id), owner_group(job.owner.identity), STAFF_GROUP]
    return [*groups, ENDED_GROUP] if job.status in Job.FINISHED else groups


def event_text(event: str, job: Job) -> str:
    """The WebSocket frame for one event: {"type": "job.completed", "job": {...}}."""
    return json.dumps({"type": event, "job": job_json(job)}, cls=DjangoJSONEncoder)


def event_message(event: str, job: Job) -> dict:
    # The status travels beside the text so consumers can order events without decoding them.
    return {"type": MESSAGE_TYPE, "job_id": str(job.id), "status": job.status, "text": event_text(event, job)}


def on_job_changed(sender, job: Job, event: str, **kwargs) -> None:
    """The `job_changed` receiver: hands the event to this process's publisher and returns at once."""
    publisher = current_publisher()
    if publisher is not None:
        publisher.publish(groups_for(job), event_message(event, job))


# --- Publishing ---------------------------------------------------------------------


class Publisher:
    """Sends group messages from one task on `loop`, one after another, so each group sees
    events in the order they were published; `publish` is thread-safe and never blocks.

    After a failure it drops events for COOLDOWN seconds (a circuit breaker), so a dead
    Redis costs one timeout per cooldown rather than one per event.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, layer):
        self.loop = loop
        self.layer = layer
        self.pending: asyncio.Queue = asyncio.Queue(BACKLOG)
        self.paused_until = 0.0
        self.dropped = 0
        loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        self.task = self.loop.create_task(self._send_forever())

    def publish(self, groups: list[str], message: dict) -> None:
        # A closed loop raises RuntimeError: its server is shutting down, nobody is listening.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._enqueue, groups, message)

    def _enqueue(self, groups: list[str], message: dict) -> None:
        try:
            self.pending.put_nowait((groups, message))
        except asyncio.QueueFull:
            self._drop("backlog", "the channel layer is not keeping up")

    async def _send_forever(self) -> None:
        while True:
            groups, message = await self.pending.get()
            try:
                await self.send(groups, message)
            except Exception:  # anything else the layer raises: this event is lost, never the rest
                self.dropped += 1
                EVENTS_DROPPED.labels("error").inc()
                logger.exception("job event not delivered", extra={"job_id": message.get("job_id")})
            finally:
                self.pending.task_done()

    async def send(self, groups: Iterable[str], message: dict) -> None:
        if time.monotonic() < self.paused_until:
            self._drop("cooldown", "the channel layer failed recently")
            return
        send_many = getattr(self.layer, "group_send_many", None)  # ours: one round trip for all
        try:
            if send_many is not None:
                async with asyncio.timeout(LAYER_TIMEOUT):
                    await send_many(list(groups), message)
            else:
                for group in groups:  # each copy says which group it came for, as ours do
                    async with asyncio.timeout(LAYER_TIMEOUT):
                        await self.layer.group_send(group, {**message, "groups": [group]})
        except LAYER_ERRORS as exc:
            self.paused_until = time.monotonic() + COOLDOWN
            self.dropped += 1
            EVENTS_DROPPED.labels("failed").inc()
            logger.warning(
                "job events not delivered (%s: %s); dropping them for %ss",
                type(exc).__name__,
                exc,
                COOLDOWN,
                extra={"job_id": message.get("job_id")},
            )
        else:
            if self.dropped:
                logger.info("job events flowing again after %d dropped", self.dropped)
                self.dropped = 0

    def _drop(self, reason: str, why: str) -> None:
        if not self.dropped:
            logger.warning("dropping job events: %s", why)
        self.dropped += 1
        EVENTS_DROPPED.labels(reason).inc()

    def close(self, timeout: float) -> None:
        """From another thread (at exit): send what is pending, for `timeout` seconds at most, then stop."""
        if self.loop.is_closed():
            return
        closing = asyncio.run_coroutine_threadsafe(self._send_pending_then_stop(), self.loop)
        try:
            closing.result(timeout)
        except (TimeoutError, CancelledError):  # the rest is lost, as it would be without waiting
            closing.cancel()

    async def _send_pending_then_stop(self) -> None:
        try:
            await self.pending.join()
        finally:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def start_in_thread(layer) -> Publisher:
    """A publisher on an event loop in a daemon thread of its own (keeps its Redis connections)."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="job-events", daemon=True).start()
    publisher = Publisher(loop, layer)
    # A worker that completes a job and exits at once must not take the event with it.
    atexit.register(publisher.close, FLUSH_AT_EXIT)
    return publisher


_publisher: Publisher | None = None
_publisher_pid: int | None = None
_lock = threading.Lock()


def current_publisher() -> Publisher | None:
    """This process's publisher, or None while nobody in this process could receive the events.

    The in-memory layer (the embedded default) only reaches consumers on the event loop
    that serves them, and its queues may only be touched from that loop, so it publishes
    there (see `serve_from_running_loop`). Other layers (Redis) get a thread of their own,
    made on first use in each process (worker processes are forked).
    """
    global _publisher, _publisher_pid
    layer = get_channel_layer()
    if _publisher is not None and _publisher.layer is layer and _publisher_pid == os.getpid():
        return _publisher
    if isinstance(layer, InMemoryChannelLayer):
        return None  # no WebSocket has connected to this process yet
    with _lock:
        if _publisher is None or _publisher.layer is not layer or _publisher_pid != os.getpid():
            _publisher, _publisher_pid = start_in_thread(layer), os.getpid()
        return _publisher


def serve_from_running_loop() -> None:
    """Called by consumers as they connect: with the in-memory layer, publish on their loop."""
    global _publisher, _publisher_pid
    layer = get_channel_layer()
    if not isinstance(layer, InMemoryChannelLayer):
        return
    loop = asyncio.get_running_loop()
    with _lock:
        if _publisher is None or _publisher.loop is not loop or _publisher.layer is not layer:
            _publisher, _publisher_pid = Publisher(loop, layer), os.getpid()


# --- Subscribing (gateway.live.subscriptions) ---------------------------------------------


def forget_channel(channel_layer, channel: str) -> None:
    """Drop what the layer keeps for a channel that nobody will receive on again (a stopped listener)."""
    for kept in (getattr(channel_layer, "receive_buffer", None), getattr(channel_layer, "channels", None)):
        if isinstance(kept, dict):
            kept.pop(channel, None)


# --- Configuration ------------------------------------------------------------------


def check_channel_layer(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """gateway.E001: every Redis channel-layer host sets "socket_timeout": None.

    channels-redis waits for events in 5 s BZPOPMIN calls, and redis-py's default socket
    timeout is 5 s too: idle WebSockets would break every 5 s. Any socket timeout also
    makes redis-py wrap its writes in asyncio.wait_for, which on Python 3.11 can swallow a
    cancellation (CPython gh-86296): a closed socket's receive then never ends, and its
    consumer stays in memory. Hung Redis calls are bounded by this module's timeouts.
    """
    errors = []
    for alias, layer in settings.CHANNEL_LAYERS.items():
        if not issubclass(import_string(layer["BACKEND"]), ChannelsRedisLayer):
            continue
        for host in layer.get("CONFIG", {}).get("hosts", []):
            if not (isinstance(host, dict) and "socket_timeout" in host and host["socket_timeout"] is None):
                errors.append(
                    checks.Error(
                        f'CHANNEL_LAYERS[{alias!r}]: a Redis host without "socket_timeout": None',
                        hint='Give each host as {"address": REDIS_URL, "socket_timeout": None, '
                        '"socket_connect_timeout": 1}; see gateway.live.events.check_channel_layer.',
                        id="gateway.E001",
                    )
                )
    return errors
