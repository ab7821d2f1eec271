"""Live job events for everything on one event loop, through one channel of the channel layer.

A socket (gateway.live.consumers) or a long poll (gateway.live.waiting) is not a channel of its own: it
subscribes here to the groups it follows (processing.events.messages names them). `Subscriptions` has one
channel, which is in every group that any subscriber follows, reads it in one task and hands
each message to the subscribers of the groups it came for (`message["groups"]`). Ten
thousand sockets then cost ten thousand set entries, not ten thousand channels, buffers,
reader tasks and group entries in Redis.

Joins and leaves are gathered and sent together: a burst of sockets opening costs a few round
trips (GROUPS_PER_CALL groups each), not one per socket. A subscriber is told:

- `deliver(message)`: an event of one of its groups, on the loop; it must not block.
- `missed()`: events of its groups may have been lost on the way; it should give its client the
  current state. The layer marks every loss with the groups it was for (processing.events.layer:
  `losses_of`), and only their subscribers are told; everyone when the layer can't say, or when
  the channel could not be read for a while (Redis restarted, say: the channel joins its groups
  again first). Events a sender dropped before they reached the layer are told the same way: the
  sender sends their groups a MISSED_MESSAGE_TYPE message once the layer works again
  (processing.events.sender), or sends it to LISTENERS_GROUP, which every channel joins, to tell
  everyone.
- `lost()`: the channel layer has failed for LOST_AFTER seconds in a row; the subscriber will hear
  nothing more, and should tell its client. Subscriptions start again, with a new channel,
  LISTEN_AGAIN_AFTER seconds later.

A failure shorter than that loses nobody: a call to the layer that fails or runs past its timeout
(Redis slow under load, a dropped connection) is tried again on the same channel, after a delay
that doubles from RETRY_FIRST_AFTER up to RETRY_AT_MOST_AFTER, keeping every subscriber; a
join waits meanwhile (its subscriber's `subscribe` returns once it is done), and fails only if
the channel is declared lost. A loss check that fails clears no mark, so what was lost meanwhile
is still told when a check works again. Only a channel on which nothing has worked yet gives up at
its first failure other than a timeout: Redis is not there (down, or a wrong address), and its
first subscribers had better learn it at once.

Group membership in the channel layer expires `group_expiry` seconds after a join (5 minutes in
the settings; channels-redis has a day): every group is joined again REJOINS_PER_EXPIRY times
within that. A process that stops leaves its groups (the server's shutdown stops its channel:
`Subscriptions.stop_on_running_loop`); one that dies in them stays a member, dead, only until its
membership expires. Until then every event for its groups is copied to its inbox, which nobody
reads, and once that is full, counted as lost (`darkroom_ws_dropped_total{reason="channel_full"}`).
Every process joins ENDED_GROUP and LISTENERS_GROUP: with a day's expiry, each process killed in
a day cost every job's end that much.
"""

import asyncio
import contextlib
import itertools
import logging
import random
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Protocol, Self

import redis.exceptions
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, get_channel_layer

from processing.events import sender
from processing.events.layer import Losses
from processing.events.messages import LISTENERS_GROUP, MISSED_MESSAGE_TYPE

logger = logging.getLogger(__name__)

REJOINS_PER_EXPIRY = 5  # a membership renewed this often within its expiry survives a stalled renewal or two
LISTEN_AGAIN_AFTER = sender.COOLDOWN  # seconds after the channel was declared lost
LOSS_CHECK_EVERY = 1.0  # seconds between asking the layer which groups of this channel lost messages
# Seconds a call to the layer may keep failing (each failure taking up to sender.LAYER_TIMEOUT)
# before the channel is declared lost and every subscriber told so: long enough to ride out Redis
# being slow under load or restarting, short enough that a client soon falls back to polling.
LOST_AFTER = 10 * sender.LAYER_TIMEOUT
RETRY_FIRST_AFTER = 0.1  # seconds before the first retry of a failed call; doubling after each
RETRY_AT_MOST_AFTER = 2.0  # seconds between retries at most
GROUPS_PER_CALL = 1000  # groups joined or left in one call (each under sender.LAYER_TIMEOUT)
PING = "live.ping"  # the type of the message a channel sends itself to learn it is read again

# What a failing layer raises: Redis and socket errors, and the timeouts around its calls.
LAYER_FAILURES = (*sender.LAYER_ERRORS, TimeoutError)
TIMEOUTS = (TimeoutError, redis.exceptions.TimeoutError)  # a layer too slow, rather than not there


# Joins or leaves groups for a channel: add_many or discard_many.
GroupChange = Callable[[BaseChannelLayer, list[str], str], Awaitable[None]]


class NotSubscribed(Exception):
    """The channel layer failed before the subscription took effect."""


class ChannelLost(Exception):
    """A call to the channel layer has kept failing for LOST_AFTER seconds."""


class Retries:
    """One kind of call to the layer (reading, membership, the loss check) failing in a row: since
    when, and how long to wait before the next try."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failing_since: float | None = None
        self.delays: Iterator[float] = iter(())

    def failed(self, error: BaseException, now: float) -> float:
        """Seconds to wait before trying again; ChannelLost once failing for LOST_AFTER seconds."""
        if self.failing_since is None:
            self.failing_since, self.delays = now, backoff()
            logger.warning(
                "live events: %s failed (%s: %s); trying again for up to %ss",
                self.what,
                type(error).__name__,
                error,
                LOST_AFTER,
            )
        elif now - self.failing_since >= LOST_AFTER:
            raise ChannelLost(f"{self.what} failing for {now - self.failing_since:.1f}s") from error
        return next(self.delays)

    def worked(self, now: float) -> None:
        if self.failing_since is not None:
            logger.info("live events: %s works again after %.1fs", self.what, now - self.failing_since)
            self.failing_since = None


def backoff() -> Iterator[float]:
    """Delays doubling from RETRY_FIRST_AFTER to RETRY_AT_MOST_AFTER, each drawn between half and all
    of it: the processes of a machine that failed together do not all try again together."""
    for step in itertools.count():
        delay = min(RETRY_AT_MOST_AFTER, RETRY_FIRST_AFTER * 2**step)
        yield random.uniform(delay / 2, delay)


class Subscriber(Protocol):
    """What Subscriptions tell a subscriber (see the module's docstring)."""

    def deliver(self, message: dict[str, Any]) -> None: ...

    def missed(self) -> None: ...

    def lost(self) -> None: ...


class OnePerLoop:
    """One instance per event loop, made for the channel layer of the moment (tests change it):
    `of_running_loop()`. An instance has `layer` and a `task` to cancel when it is replaced."""

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Self]  # event loop -> its instance
    task: asyncio.Task[None]

    def __init__(self, layer: BaseChannelLayer) -> None:
        self.layer = layer

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._by_loop = weakref.WeakKeyDictionary()

    @classmethod
    def of_running_loop(cls) -> Self:
        loop = asyncio.get_running_loop()
        layer = get_channel_layer()
        assert layer is not None, "settings.CHANNEL_LAYERS names no default layer"
        found = cls._by_loop.get(loop)
        if found is None or found.layer is not layer:
            if found is not None:
                found.task.cancel()
            found = cls._by_loop[loop] = cls(layer)
        return found

    @classmethod
    async def stop_on_running_loop(cls, timeout: float) -> None:
        """At the server's shutdown: cancel this event loop's instance's task, if it has one, and
        wait for it to end, `timeout` seconds at most."""
        running = cls._by_loop.get(asyncio.get_running_loop())
        if running is None or running.task.done():
            return
        running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(timeout):
                await running.task


class Subscriptions(OnePerLoop):
    """The subscriptions of one event loop (see the module's docstring)."""

    def __init__(self, layer: BaseChannelLayer) -> None:
        super().__init__(layer)
        self.loop = asyncio.get_running_loop()
        self.members: dict[str, set[Subscriber]] = {}  # group -> its subscribers on this loop
        self.joined: set[str] = set()  # groups the channel is in, as the layer knows it
        self.emptied: set[str] = set()  # groups whose last subscriber left, to leave with the next change
        self.joining: dict[str, asyncio.Future[bool]] = {}  # groups to join with the next change
        self.membership_changed = asyncio.Event()
        self.membership_applied = asyncio.Event()  # every change so far is in the layer
        self.down = False  # the channel was declared lost, and no channel has been tried since
        self.retries: dict[str, Retries] = {}  # by kind of call, for the channel of the moment
        self.has_worked = False  # a call to the layer has succeeded on the channel of the moment
        self.rejoin_due = False  # join every group again with the next change
        self.refresh_due = False  # then tell every subscriber it missed events
        self.task = self.loop.create_task(self.run(), name="live-subscriptions")

    # --- For subscribers -------------------------------------------------------------------

    async def subscribe(self, group: str, subscriber: Subscriber) -> bool:
        """Follow `group`: True once events from now on reach `subscriber`, False if the layer is down.
        TypeError for a name the layer does not take: it fails this subscriber here, where joined in a
        batch it would fail the channel and every subscriber of the loop."""
        self.layer.require_valid_group_name(group)
        if self.down:
            return False
        self.members.setdefault(group, set()).add(subscriber)
        if group in self.joined:
            return True
        joined = self.joining.get(group)
        if joined is None:
            joined = self.joining[group] = self.loop.create_future()
            self.membership_changed.set()
        try:
            await asyncio.shield(joined)  # one future for everyone waiting on this group
        except NotSubscribed:
            self.unsubscribe(group, subscriber)
            return False
        return True

    async def settled(self) -> None:
        """Returns once the layer has every join and leave asked for so far."""
        while (
            self.membership_changed.is_set()
            or self.joining
            or self.emptied
            or set(self.members) != self.joined
        ):
            if self.down:
                return
            self.membership_applied.clear()
            await self.membership_applied.wait()

    def unsubscribe(self, group: str, subscriber: Subscriber) -> None:
        members = self.members.get(group)
        if members is None:
            return
        members.discard(subscriber)
        if not members:
            del self.members[group]
            self.emptied.add(group)
            self.membership_changed.set()

    def failing(self) -> set[str]:
        """The kinds of call to the layer failing at the moment (being tried again)."""
        return {retries.what for retries in self.retries.values() if retries.failing_since is not None}

    # --- The channel -----------------------------------------------------------------------

    async def run(self) -> None:
        sender.serve_from_running_loop()  # the in-memory layer only delivers on the loop that sends
        while True:
            channel = await self.layer.new_channel()
            self.down = False
            self.retries = {what: Retries(what) for what in ("reading", "membership", "the loss check")}
            self.has_worked = False
            self.rejoin_due = True  # the new channel joins LISTENERS_GROUP, before any group of a subscriber
            self.membership_changed.set()
            try:
                async with asyncio.TaskGroup() as tasks:  # the first to fail stops the others
                    tasks.create_task(self.read(channel))
                    tasks.create_task(self.keep_membership(channel))
                    tasks.create_task(self.watch_for_losses(channel))
            except* Exception as failures:  # ChannelLost, or a fault of ours
                failure = failures.exceptions[0]
                logger.warning("live events interrupted: %s: %s", type(failure).__name__, failure)
            finally:
                await self.stop(channel)
            await asyncio.sleep(LISTEN_AGAIN_AFTER)

    async def failed(self, what: str, error: BaseException) -> None:
        """Wait before trying `what` again; ChannelLost when it has failed for too long, or at once
        when nothing has worked yet on this channel and Redis is not there (not merely slow): its
        first subscribers are better told now that live events are unavailable than in LOST_AFTER."""
        if not self.has_worked and not isinstance(error, TIMEOUTS):
            raise ChannelLost(f"{what} failed before anything worked") from error
        await asyncio.sleep(self.retries[what].failed(error, self.loop.time()))

    def worked(self, what: str) -> None:
        self.has_worked = True
        self.retries[what].worked(self.loop.time())

    async def read(self, channel: str) -> None:
        while True:
            try:
                message = await self.layer.receive(channel)
            except LAYER_FAILURES as error:
                # The layer stopped reading the channel's inbox: what Redis held for the channel (its
                # messages, its groups) may be gone with a restart.
                self.refresh_due = True
                await self.read_again(channel, error)
                continue
            if message.get("type") == PING:
                self.read_again_works()
                continue
            self.has_worked = True
            if message.get("type") == MISSED_MESSAGE_TYPE:  # a sender dropped events of these groups
                self.tell_missed(self.subscribers_of_groups_told(message.get("groups", ())))
                continue
            self.hand_out(message)

    def hand_out(self, message: dict[str, Any]) -> None:
        for group in message.get("groups", ()):
            for subscriber in tuple(self.members.get(group, ())):
                try:
                    subscriber.deliver(message)
                except Exception:  # one subscriber's fault: the others still hear
                    logger.exception(
                        "a live event could not be delivered", extra={"job_id": message.get("job_id")}
                    )

    async def read_again(self, channel: str, error: BaseException) -> None:
        """After a failed read, wait, then send the channel a ping: reading works again when it comes."""
        while True:
            await self.failed("reading", error)
            try:
                async with asyncio.timeout(sender.LAYER_TIMEOUT):
                    await self.layer.send(channel, {"type": PING})
                return
            except (*LAYER_FAILURES, ChannelFull) as failure:
                error = failure

    def read_again_works(self) -> None:
        if self.retries["reading"].failing_since is None:
            return  # a ping from an earlier failure
        self.worked("reading")
        self.rejoin_due = True  # then refresh_due tells everyone (keep_membership)
        self.membership_changed.set()

    async def keep_membership(self, channel: str) -> None:
        """Join and leave groups as subscribers come and go, all of a moment's changes at once."""
        rejoin_every = getattr(self.layer, "group_expiry", 86400) / REJOINS_PER_EXPIRY
        rejoin_at = self.loop.time() + rejoin_every
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, rejoin_at - self.loop.time())):
                    await self.membership_changed.wait()
            self.membership_changed.clear()
            if self.loop.time() >= rejoin_at:
                self.rejoin_due, rejoin_at = True, self.loop.time() + rejoin_every
            try:
                if self.rejoin_due:
                    await self.rejoin(channel)
                await self.apply_changes(channel)
            except LAYER_FAILURES as error:
                self.membership_changed.set()  # what is left is tried again
                await self.failed("membership", error)
                continue
            self.worked("membership")
            self.membership_applied.set()

    async def rejoin(self, channel: str) -> None:
        """Join every group again, and LISTENERS_GROUP (their membership expires; Redis may have
        restarted), then tell every subscriber if reading had stopped: events may have been lost
        meanwhile."""
        await self.change(add_many, [LISTENERS_GROUP, *self.joined], channel)
        self.rejoin_due = False
        if self.refresh_due:
            self.refresh_due = False
            self.tell_missed(self.subscribers())

    async def apply_changes(self, channel: str) -> None:
        """Leave the emptied groups, then join the new ones; what fails stays to do (a failed join is
        neither joined nor failed: its subscribers wait for the next try)."""
        leaving = [group for group in self.emptied if group not in self.members and group not in self.joining]
        self.emptied.clear()
        self.joined.difference_update(leaving)  # from now on, a subscriber to one of them joins it again
        try:
            await self.change(discard_many, leaving, channel)
        except BaseException:
            self.emptied.update(leaving)
            raise
        for batch in batches(list(self.joining)):
            await self.change(add_many, batch, channel)
            self.joined.update(batch)
            for group in batch:
                self.joining.pop(group).set_result(True)
            deserted = [group for group in batch if group not in self.members]  # left while joining
            if deserted:
                self.emptied.update(deserted)
                self.membership_changed.set()

    async def change(self, how: GroupChange, groups: list[str], channel: str) -> None:
        for batch in batches(groups):
            async with asyncio.timeout(sender.LAYER_TIMEOUT):
                await how(self.layer, batch, channel)

    async def watch_for_losses(self, channel: str) -> None:
        """Tell the subscribers of the groups that lost messages, then have the layer forget them
        (a forget that fails tells those groups twice, never none)."""
        losses_of = getattr(self.layer, "losses_of", None)
        forget_losses = getattr(self.layer, "forget_losses", None)
        if losses_of is None or forget_losses is None:  # in memory: one process, nothing in between to lose
            return
        while True:
            await asyncio.sleep(LOSS_CHECK_EVERY)
            try:
                async with asyncio.timeout(sender.LAYER_TIMEOUT):
                    losses: Losses = await losses_of(channel)
                self.tell_missed(self.subscribers(None if losses.everyone else losses.groups))
                if losses.marks:
                    async with asyncio.timeout(sender.LAYER_TIMEOUT):
                        await forget_losses(channel, losses)
            except LAYER_FAILURES as error:
                await self.failed("the loss check", error)
                continue
            self.worked("the loss check")

    def subscribers_of_groups_told(self, groups: Iterable[str]) -> set[Subscriber]:
        """Who a message to `groups` is for: every subscriber when it came to LISTENERS_GROUP."""
        groups = list(groups)
        return self.subscribers(None if LISTENERS_GROUP in groups else groups)

    def subscribers(self, groups: Iterable[str] | None = None) -> set[Subscriber]:
        """The subscribers of `groups` (None: of every group), each once."""
        if groups is None:
            return {subscriber for members in self.members.values() for subscriber in members}
        return {subscriber for group in groups for subscriber in self.members.get(group, ())}

    def tell_missed(self, subscribers: Iterable[Subscriber]) -> None:
        for subscriber in subscribers:
            try:
                subscriber.missed()
            except Exception:  # one subscriber's fault: the others are still told
                logger.exception("a subscriber could not be told it missed events")

    async def stop(self, channel: str) -> None:
        """Tell every subscriber that it will hear nothing more (`lost`), and everyone still waiting
        to be one that it is not (its `subscribe` returns False)."""
        self.down = True
        joining, self.joining = self.joining, {}
        fail(joining.values())
        members, self.members = self.members, {}
        joined_groups, self.joined, self.emptied = self.joined, set(), set()
        self.rejoin_due = self.refresh_due = False
        for subscriber in {subscriber for group in joined_groups for subscriber in members.get(group, ())}:
            subscriber.lost()
        forget_channel(self.layer, channel)
        with contextlib.suppress(Exception):  # a layer that is down forgets the channel, or expires it
            await self.change(discard_many, [LISTENERS_GROUP, *joined_groups], channel)


def batches(groups: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(groups), GROUPS_PER_CALL):
        yield groups[start : start + GROUPS_PER_CALL]


def forget_channel(channel_layer: Any, channel: str) -> None:
    """Drop what the layer keeps for a channel that nobody will receive on again (a stopped listener)."""
    for kept in (getattr(channel_layer, "receive_buffer", None), getattr(channel_layer, "channels", None)):
        if isinstance(kept, dict):
            kept.pop(channel, None)


def fail(joins: Iterable[asyncio.Future[bool]]) -> None:
    for joined in joins:
        if not joined.done():
            joined.set_exception(NotSubscribed())
            joined.exception()  # retrieved: its waiters may have gone


async def add_many(layer: BaseChannelLayer, groups: list[str], channel: str) -> None:
    if hasattr(layer, "group_add_many"):  # ours: one round trip
        await layer.group_add_many(groups, channel)
        return
    for group in groups:
        await layer.group_add(group, channel)


async def discard_many(layer: BaseChannelLayer, groups: list[str], channel: str) -> None:
    if hasattr(layer, "group_discard_many"):
        await layer.group_discard_many(groups, channel)
        return
    for group in groups:
        await layer.group_discard(group, channel)
