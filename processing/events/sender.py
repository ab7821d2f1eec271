"""The sender: hands job events to the channel layer without ever making a job wait.

`processing.events.announce` gives each event to this process's `Sender` once its change has
committed, from worker processes and threads and from gateway request threads. The sender
sends it from a thread of its own (a plain one with our Redis layer on one host, `BlockingSender`;
else an event loop), in the order events came, so the code that changed
the job never waits on the channel layer and never sees its errors: a job never fails, nor
slows down, because Redis is slow or down. Subscribers then miss live events, and clients
fall back to polling.
"""

import asyncio
import atexit
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable
from concurrent.futures import CancelledError
from typing import Any

from channels.layers import BaseChannelLayer, InMemoryChannelLayer, get_channel_layer
from prometheus_client import Counter
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# What a failing channel layer raises: Redis errors, socket errors, and our timeouts around its calls.
LAYER_ERRORS = (RedisError, OSError)

LAYER_TIMEOUT = 1.0  # seconds for one channel-layer call; a hung Redis costs the sender this, once
COOLDOWN = 5.0  # seconds after a failure during which events are dropped rather than tried
BACKLOG = 10_000  # events waiting to be sent; past this (Redis too slow) new ones are dropped
FLUSH_AT_EXIT = 1.0  # seconds a finishing process waits for its last events to go out

# Every event that never reached the channel layer, by why: its subscribers fell back to polling.
EVENTS_DROPPED = Counter("darkroom_job_events_dropped", "Job events never sent to subscribers", ["reason"])


class Breaker:
    """What both senders keep of their deliveries: after a failure, events are dropped for COOLDOWN
    seconds (a circuit breaker), so a dead Redis costs one timeout per cooldown rather than one per
    event; every event dropped is counted and logged."""

    def __init__(self) -> None:
        self.paused_until = 0.0
        self.dropped = 0

    def paused(self) -> bool:
        if time.monotonic() < self.paused_until:
            self._drop("cooldown", "the channel layer failed recently")
            return True
        return False

    def failed(self, exc: Exception, message: dict[str, Any]) -> None:
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

    def delivered(self) -> None:
        if self.dropped:
            logger.info("job events flowing again after %d dropped", self.dropped)
            self.dropped = 0

    def lost(self, message: dict[str, Any]) -> None:
        """An event the layer failed in an unforeseen way: it is lost, never the rest."""
        self.dropped += 1
        EVENTS_DROPPED.labels("error").inc()
        logger.exception("job event not delivered", extra={"job_id": message.get("job_id")})

    def _drop(self, reason: str, why: str) -> None:
        if not self.dropped:
            logger.warning("dropping job events: %s", why)
        self.dropped += 1
        EVENTS_DROPPED.labels(reason).inc()


class Sender(Breaker):
    """Sends group messages from one task on `loop`, one after another, so each group sees
    events in the order they were handed over; `send` is thread-safe and never blocks."""

    def __init__(self, loop: asyncio.AbstractEventLoop, layer: BaseChannelLayer):
        super().__init__()
        self.loop = loop
        self.layer = layer
        self.pending: asyncio.Queue[tuple[list[str], dict[str, Any]]] = asyncio.Queue(BACKLOG)
        loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        self.task = self.loop.create_task(self._deliver_forever())

    def send(self, groups: list[str], message: dict[str, Any]) -> None:
        # A closed loop raises RuntimeError: its server is shutting down, nobody is listening.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._enqueue, groups, message)

    def _enqueue(self, groups: list[str], message: dict[str, Any]) -> None:
        try:
            self.pending.put_nowait((groups, message))
        except asyncio.QueueFull:
            self._drop("backlog", "the channel layer is not keeping up")

    async def _deliver_forever(self) -> None:
        while True:
            groups, message = await self.pending.get()
            try:
                await self.deliver(groups, message)
            except Exception:  # anything else the layer raises: this event is lost, never the rest
                self.lost(message)
            finally:
                self.pending.task_done()

    async def deliver(self, groups: Iterable[str], message: dict[str, Any]) -> None:
        if self.paused():
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
            self.failed(exc, message)
        else:
            self.delivered()

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


STOP: tuple[list[str], dict[str, Any]] = ([], {})  # what BlockingSender.stop queues: the thread ends at it


class BlockingSender(Breaker):
    """The Sender for a layer that can send blocking (ours on one Redis host, `sends_blocking`): the
    same order, breaker and counts, from a plain thread of its own through the layer's synchronous
    client. An event costs this thread a third of what the asyncio client and an event loop's
    wake-ups cost (measured in a worker: 0.35 ms of CPU an event, 0.1 this way)."""

    def __init__(self, layer: BaseChannelLayer):
        super().__init__()
        self.layer = layer
        self.pending: queue.Queue[tuple[list[str], dict[str, Any]]] = queue.Queue(BACKLOG)
        threading.Thread(target=self._deliver_forever, name="job-events", daemon=True).start()

    def send(self, groups: list[str], message: dict[str, Any]) -> None:
        try:
            self.pending.put_nowait((groups, message))
        except queue.Full:
            self._drop("backlog", "the channel layer is not keeping up")

    def stop(self) -> None:
        """Stop the thread once the events handed over so far are sent (a test's sender on a dead layer)."""
        self.pending.put(STOP)

    def _deliver_forever(self) -> None:
        while True:
            groups, message = self.pending.get()
            if groups is STOP[0]:
                self.pending.task_done()
                return
            try:
                self.deliver(groups, message)
            except Exception:  # anything else the layer raises: this event is lost, never the rest
                self.lost(message)
            finally:
                self.pending.task_done()

    def deliver(self, groups: list[str], message: dict[str, Any]) -> None:
        if self.paused():
            return
        try:
            self.layer.send_blocking(groups, message, LAYER_TIMEOUT)  # type: ignore[attr-defined]
        except LAYER_ERRORS as exc:
            self.failed(exc, message)
        else:
            self.delivered()

    def close(self, timeout: float) -> None:
        """At exit: let what is pending go out, for `timeout` seconds at most."""
        done = self.pending.all_tasks_done
        with done:
            done.wait_for(lambda: not self.pending.unfinished_tasks, timeout)


def start_in_thread(layer: BaseChannelLayer) -> Sender | BlockingSender:
    """A sender in a daemon thread of its own (keeps its Redis connections): a plain thread when the
    layer can send blocking, else an event loop."""
    if getattr(layer, "sends_blocking", False):
        blocking = BlockingSender(layer)
        atexit.register(blocking.close, FLUSH_AT_EXIT)
        return blocking
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="job-events", daemon=True).start()
    sender = Sender(loop, layer)
    # A worker that completes a job and exits at once must not take the event with it.
    atexit.register(sender.close, FLUSH_AT_EXIT)
    return sender


_sender: Sender | BlockingSender | None = None
_sender_pid: int | None = None
_lock = threading.Lock()


def current_sender() -> Sender | BlockingSender | None:
    """This process's sender, or None while nobody in this process could receive the events.

    The in-memory layer (the embedded default) only reaches consumers on the event loop
    that serves them, and its queues may only be touched from that loop, so it sends
    from there (see `serve_from_running_loop`). Other layers (Redis) get a thread of their own,
    made on first use in each process (worker processes are forked).
    """
    global _sender, _sender_pid
    layer = get_channel_layer()
    if _sender is not None and _sender.layer is layer and _sender_pid == os.getpid():
        return _sender
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return None  # no layer; or in memory, and no WebSocket has connected to this process yet
    with _lock:
        if _sender is None or _sender.layer is not layer or _sender_pid != os.getpid():
            _sender, _sender_pid = start_in_thread(layer), os.getpid()
        return _sender


def serve_from_running_loop() -> None:
    """Called by subscribers as they start: with the in-memory layer, send from their loop."""
    global _sender, _sender_pid
    layer = get_channel_layer()
    if not isinstance(layer, InMemoryChannelLayer):
        return
    loop = asyncio.get_running_loop()
    with _lock:
        if not isinstance(_sender, Sender) or _sender.loop is not loop or _sender.layer is not layer:
            _sender, _sender_pid = Sender(loop, layer), os.getpid()
