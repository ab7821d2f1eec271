"""The sender: hands job events to the channel layer without ever making a job wait.

`processing.events.announce` gives each event to this process's `Sender` once its change has
committed, from worker processes and threads and from gateway request threads. The sender
sends it from a thread of its own (a plain one with our Redis layer on one host, `BlockingSender`;
else an event loop), in the order events came, so the code that changed
the job never waits on the channel layer and never sees its errors: a job never fails, nor
slows down, because Redis is slow or down.

An event the sender drops (the layer failed, or can't keep up) is never lost unseen: the sender
remembers the groups it was for (`Missed`), and once the layer takes a send again it tells them
that they missed events (a `MISSED_MESSAGE_TYPE` message, a round trip per GROUPS_PER_NOTICE
groups; to every listener through LISTENERS_GROUP once more than MISSED_GROUPS_AT_MOST groups missed
something). Their subscribers then give their clients the current state
(gateway.live.subscriptions). A quiet sender tries this every COOLDOWN seconds until it works: what
it remembers is only forgotten once told.
"""

import asyncio
import atexit
import contextlib
import dataclasses
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

from processing.events.messages import LISTENERS_GROUP, MISSED_MESSAGE_TYPE

logger = logging.getLogger(__name__)

# What a failing channel layer raises: Redis errors, socket errors, and our timeouts around its calls.
LAYER_ERRORS = (RedisError, OSError)

LAYER_TIMEOUT = 1.0  # seconds for one channel-layer call; a hung Redis costs the sender this, once
COOLDOWN = 5.0  # seconds after a failure during which events are dropped rather than tried
BACKLOG = 10_000  # events waiting to be sent; past this (Redis too slow) new ones are dropped
FLUSH_AT_EXIT = 1.0  # seconds a finishing process waits for its last events to go out
# Groups remembered to have missed events; past this many, every listener is told instead, and every
# socket re-reads its state: 10,000 groups is half a minute of jobs at 200 a second from one sender.
MISSED_GROUPS_AT_MOST = 10_000
# Groups told in one call to the layer: each costs Redis a lookup and its name in every copy of the
# notice (measured: 1,000 groups, 18 ms and 21 kB a process's inbox; 10,000 in one call held Redis 170 ms).
GROUPS_PER_NOTICE = 1000
# Seconds between two notices at least: a sender that drops events because it can't keep up (its
# backlog full) tells their groups once a second, not once per event it does send.
NOTICE_EVERY = 1.0

# Every event that never reached the channel layer, by why; its groups are told later (MISSED_NOTICES).
EVENTS_DROPPED = Counter("darkroom_job_events_dropped", "Job events never sent to subscribers", ["reason"])
# Notices sent that events were dropped: to="groups" (the groups of the events), or "everyone".
MISSED_NOTICES = Counter(
    "darkroom_job_events_missed_notices",
    "Notices to subscribers that job events for them were dropped",
    ["to"],
)


@dataclasses.dataclass(frozen=True)
class Notice:
    """Who to tell that events were dropped: `groups`, or everyone."""

    groups: frozenset[str] = frozenset()
    everyone: bool = False

    def batches(self) -> list[list[str]]:
        """The groups to send the notice to, GROUPS_PER_NOTICE a call (everyone: LISTENERS_GROUP)."""
        recipients = [LISTENERS_GROUP] if self.everyone else sorted(self.groups)
        return [
            recipients[start : start + GROUPS_PER_NOTICE]
            for start in range(0, len(recipients), GROUPS_PER_NOTICE)
        ]

    def untold(self, batches: list[list[str]]) -> "Notice":
        """What is left to tell when `batches` (the last of its batches) were not sent."""
        return self if self.everyone else Notice(frozenset(group for batch in batches for group in batch))

    def message(self) -> dict[str, Any]:
        return {"type": MISSED_MESSAGE_TYPE}


class Missed:
    """The groups of the events dropped and not yet told (thread-safe: threads that hand events over
    drop them when the backlog is full). Past MISSED_GROUPS_AT_MOST groups, everyone."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.groups: set[str] = set()
        self.everyone = False

    def __bool__(self) -> bool:
        return self.everyone or bool(self.groups)

    def add(self, groups: Iterable[str]) -> None:
        with self.lock:
            if self.everyone:
                return
            self.groups.update(groups)
            if len(self.groups) > MISSED_GROUPS_AT_MOST:
                self.groups, self.everyone = set(), True

    def take(self) -> Notice | None:
        """What to tell now, forgotten here: give it back (`put_back`) if telling it fails. What is
        dropped meanwhile is remembered apart, and told next time."""
        with self.lock:
            if not (self.everyone or self.groups):
                return None
            notice = Notice(frozenset(self.groups), self.everyone)
            self.groups, self.everyone = set(), False
            return notice

    def put_back(self, notice: Notice) -> None:
        if notice.everyone:
            with self.lock:
                self.groups, self.everyone = set(), True
        else:
            self.add(notice.groups)


class Breaker:
    """What both senders keep of their deliveries: after a failure, events are dropped for COOLDOWN
    seconds (a circuit breaker), so a dead Redis costs one timeout per cooldown rather than one per
    event; every event dropped is counted and logged, and its groups remembered (`missed`) until
    they are told (`notice_due`, `told`, `not_told`)."""

    def __init__(self) -> None:
        self.paused_until = 0.0
        self.dropped = 0
        self.missed = Missed()
        self.next_notice_at = 0.0
        self.replaced = False  # another sender serves this process now: nothing left to tell from here

    def paused(self, groups: Iterable[str]) -> bool:
        """True, and the event for `groups` dropped, within COOLDOWN of a failure."""
        if time.monotonic() < self.paused_until:
            self._drop("cooldown", "the channel layer failed recently", groups)
            return True
        return False

    def failed(self, exc: Exception, groups: Iterable[str], message: dict[str, Any]) -> None:
        self.paused_until = time.monotonic() + COOLDOWN
        self.dropped += 1
        self.missed.add(groups)
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

    def lost(self, groups: Iterable[str], message: dict[str, Any]) -> None:
        """An event the layer failed in an unforeseen way: it is lost, never the rest."""
        self.dropped += 1
        self.missed.add(groups)
        EVENTS_DROPPED.labels("error").inc()
        logger.exception("job event not delivered", extra={"job_id": message.get("job_id")})

    def _drop(self, reason: str, why: str, groups: Iterable[str]) -> None:
        if not self.dropped:
            logger.warning("dropping job events: %s", why)
        self.dropped += 1
        self.missed.add(groups)
        EVENTS_DROPPED.labels(reason).inc()

    # --- Telling the groups of dropped events -----------------------------------------------

    def notice_due(self) -> Notice | None:
        """Who to tell now that events were dropped: None when nobody, or not now (the layer failed
        less than COOLDOWN ago, or a notice went out less than NOTICE_EVERY ago)."""
        now = time.monotonic()
        if self.replaced or now < self.paused_until or now < self.next_notice_at:
            return None
        notice = self.missed.take()
        if notice is not None:
            self.next_notice_at = now + NOTICE_EVERY
        return notice

    def seconds_to_notice(self) -> float | None:
        """How long to wait for the next event before a notice is due; None: no notice to send."""
        if self.replaced or not self.missed:
            return None
        return max(0.0, self.paused_until - time.monotonic(), self.next_notice_at - time.monotonic())

    def told(self, notice: Notice) -> None:
        MISSED_NOTICES.labels("everyone" if notice.everyone else "groups").inc()
        logger.info(
            "told %s that job events were dropped",
            "every listener" if notice.everyone else f"{len(notice.groups)} groups",
        )

    def not_told(self, notice: Notice, exc: Exception) -> None:
        """The notice failed: remembered again, and tried after COOLDOWN when the layer failed (as
        an event would be), else after NOTICE_EVERY."""
        self.missed.put_back(notice)
        if isinstance(exc, LAYER_ERRORS):
            self.paused_until = time.monotonic() + COOLDOWN
            logger.warning("dropped job events not told yet (%s: %s)", type(exc).__name__, exc)
        else:
            logger.error("dropped job events not told yet", exc_info=exc)


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
            self._drop("backlog", "the channel layer is not keeping up", groups)

    async def _deliver_forever(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.seconds_to_notice()):
                    groups, message = await self.pending.get()
            except TimeoutError:  # no event came while a notice was due: the notice alone
                await self.tell_missed()
                continue
            try:
                await self.deliver(groups, message)
            except Exception:  # anything else the layer raises: this event is lost, never the rest
                self.lost(groups, message)
            finally:
                self.pending.task_done()

    async def deliver(self, groups: list[str], message: dict[str, Any]) -> None:
        if self.paused(groups):
            return
        try:
            await self.send_to_groups(groups, message)
        except LAYER_ERRORS as exc:
            self.failed(exc, groups, message)
            return
        self.delivered()
        await self.tell_missed()

    async def send_to_groups(self, groups: list[str], message: dict[str, Any]) -> None:
        send_many = getattr(self.layer, "group_send_many", None)  # ours: one round trip for all
        if send_many is not None:
            async with asyncio.timeout(LAYER_TIMEOUT):
                await send_many(groups, message)
            return
        for group in groups:  # each copy says which group it came for, as ours do
            async with asyncio.timeout(LAYER_TIMEOUT):
                await self.layer.group_send(group, {**message, "groups": [group]})

    async def tell_missed(self) -> None:
        """Tell the groups of the events dropped so far, if it is time (`notice_due`)."""
        notice = self.notice_due()
        if notice is None:
            return
        batches = notice.batches()
        for sent, batch in enumerate(batches):
            try:
                await self.send_to_groups(batch, notice.message())
            except Exception as exc:  # what is left is remembered again: told once the layer takes it
                return self.not_told(notice.untold(batches[sent:]), exc)
        self.told(notice)

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
            self._drop("backlog", "the channel layer is not keeping up", groups)

    def stop(self) -> None:
        """Stop the thread once the events handed over so far are sent (a test's sender on a dead layer)."""
        self.pending.put(STOP)

    def _deliver_forever(self) -> None:
        while True:
            try:
                groups, message = self.pending.get(timeout=self.seconds_to_notice())
            except queue.Empty:  # no event came while a notice was due: the notice alone
                self.tell_missed()
                continue
            if groups is STOP[0]:
                self.pending.task_done()
                return
            try:
                self.deliver(groups, message)
            except Exception:  # anything else the layer raises: this event is lost, never the rest
                self.lost(groups, message)
            finally:
                self.pending.task_done()

    def deliver(self, groups: list[str], message: dict[str, Any]) -> None:
        if self.paused(groups):
            return
        try:
            self.layer.send_blocking(groups, message, LAYER_TIMEOUT)  # type: ignore[attr-defined]
        except LAYER_ERRORS as exc:
            self.failed(exc, groups, message)
            return
        self.delivered()
        self.tell_missed()

    def tell_missed(self) -> None:
        """Tell the groups of the events dropped so far, if it is time (`notice_due`)."""
        notice = self.notice_due()
        if notice is None:
            return
        batches = notice.batches()
        for sent, batch in enumerate(batches):
            try:
                self.layer.send_blocking(batch, notice.message(), LAYER_TIMEOUT)  # type: ignore[attr-defined]
            except Exception as exc:  # what is left is remembered again: told once the layer takes it
                return self.not_told(notice.untold(batches[sent:]), exc)
        self.told(notice)

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
    layer = get_channel_layer()
    if _sender is not None and _sender.layer is layer and _sender_pid == os.getpid():
        return _sender
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return None  # no layer; or in memory, and no WebSocket has connected to this process yet
    with _lock:
        if _sender is None or _sender.layer is not layer or _sender_pid != os.getpid():
            replace_sender(start_in_thread(layer))
        return _sender


def replace_sender(made: Sender | BlockingSender) -> None:
    """Make `made` this process's sender (under _lock). The one it replaces, for another layer (only
    tests change a process's layer) or another loop, no longer tells what it dropped: its groups
    were another layer's, and a dead one would be tried every COOLDOWN for as long as the process lives."""
    global _sender, _sender_pid
    if _sender is not None:
        _sender.replaced = True
    _sender, _sender_pid = made, os.getpid()


def serve_from_running_loop() -> None:
    """Called by subscribers as they start: with the in-memory layer, send from their loop."""
    layer = get_channel_layer()
    if not isinstance(layer, InMemoryChannelLayer):
        return
    loop = asyncio.get_running_loop()
    with _lock:
        if not isinstance(_sender, Sender) or _sender.loop is not loop or _sender.layer is not layer:
            replace_sender(Sender(loop, layer))
