"""Live job events for everything on one event loop, through one channel of the channel layer.

A socket (gateway.live.consumers) or a long poll (gateway.live.waiting) is not a channel of its own: it
subscribes here to the groups it follows (processing.events.messages names them). `Subscriptions` has one
channel, which is in every group that any subscriber follows, reads it in one task and hands
each message to the subscribers of the groups it came for (`message["groups"]`). Ten
thousand sockets then cost ten thousand set entries, not ten thousand channels, buffers,
reader tasks and group entries in Redis.

Joins and leaves are gathered and sent together: a burst of sockets opening costs a few round
trips, not one per socket. A subscriber is told:

- `deliver(message)`: an event of one of its groups, on the loop; it must not block.
- `missed()`: events may have been lost on the way (processing.events.layer counts and marks every
  loss); it should give its client the current state.
- `lost()`: the channel layer failed; it will hear nothing more, and should tell its client.
  Subscriptions start again, with a new channel, LISTEN_AGAIN_AFTER seconds later.

Group membership in the channel layer expires a day after a join (channels-redis'
`group_expiry`): every group is joined again each REJOIN_EVERY seconds.
"""

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, Self

from channels.layers import BaseChannelLayer, get_channel_layer

from processing.events import sender

logger = logging.getLogger(__name__)

REJOIN_EVERY = 3600  # seconds
LISTEN_AGAIN_AFTER = sender.COOLDOWN  # seconds after the channel layer failed
LOSS_CHECK_EVERY = 1.0  # seconds between asking the layer whether this channel lost messages


# Joins or leaves groups for a channel: add_many or discard_many.
GroupChange = Callable[[BaseChannelLayer, list[str], str], Awaitable[None]]


class NotSubscribed(Exception):
    """The channel layer failed before the subscription took effect."""


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


class Subscriptions(OnePerLoop):
    """The subscriptions of one event loop (see the module's docstring)."""

    def __init__(self, layer: BaseChannelLayer) -> None:
        super().__init__(layer)
        self.loop = asyncio.get_running_loop()
        self.members: dict[str, set[Subscriber]] = {}  # group -> its subscribers on this loop
        self.joined: set[str] = set()  # groups the channel is in, as the layer knows it
        self.emptied: set[str] = set()  # groups whose last subscriber left since the last change
        self.joining: dict[str, asyncio.Future[bool]] = {}  # groups to join with the next change
        self.membership_changed = asyncio.Event()
        self.membership_applied = asyncio.Event()  # every change so far is in the layer
        self.down = False  # the layer failed, and no channel has been tried since
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
        while self.membership_changed.is_set() or self.joining or set(self.members) != self.joined:
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

    # --- The channel -----------------------------------------------------------------------

    async def run(self) -> None:
        sender.serve_from_running_loop()  # the in-memory layer only delivers on the loop that sends
        while True:
            channel = await self.layer.new_channel()
            self.down = False
            try:
                async with asyncio.TaskGroup() as tasks:  # the first to fail stops the others
                    tasks.create_task(self.read(channel))
                    tasks.create_task(self.keep_membership(channel))
                    tasks.create_task(self.watch_for_losses(channel))
            except* Exception as failures:  # mostly the layer's (RedisError, OSError, timeouts)
                failure = failures.exceptions[0]
                logger.warning("live events interrupted: %s: %s", type(failure).__name__, failure)
            finally:
                await self.stop(channel)
            await asyncio.sleep(LISTEN_AGAIN_AFTER)

    async def read(self, channel: str) -> None:
        while True:
            message = await self.layer.receive(channel)
            for group in message.get("groups", ()):
                for subscriber in tuple(self.members.get(group, ())):
                    try:
                        subscriber.deliver(message)
                    except Exception:  # one subscriber's fault: the others still hear
                        logger.exception(
                            "a live event could not be delivered", extra={"job_id": message.get("job_id")}
                        )

    async def keep_membership(self, channel: str) -> None:
        """Join and leave groups as subscribers come and go, all of a moment's changes at once."""
        rejoin_at = self.loop.time() + REJOIN_EVERY
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, rejoin_at - self.loop.time())):
                    await self.membership_changed.wait()
            self.membership_changed.clear()
            if self.loop.time() >= rejoin_at:
                await self.change(add_many, list(self.joined), channel)
                rejoin_at = self.loop.time() + REJOIN_EVERY
            await self.apply_changes(channel)
            self.membership_applied.set()

    async def apply_changes(self, channel: str) -> None:
        emptied, self.emptied = self.emptied, set()
        leaving = [group for group in emptied if group in self.joined and group not in self.members]
        if leaving:
            self.joined.difference_update(leaving)
            await self.change(discard_many, leaving, channel)
        joining, self.joining = self.joining, {}  # who subscribes from now on waits for the next change
        if not joining:
            return
        try:
            await self.change(add_many, list(joining), channel)
        except BaseException:
            fail(joining.values())
            raise
        self.joined.update(joining)
        for joined in joining.values():
            joined.set_result(True)
        deserted = [group for group in joining if group not in self.members]  # left while joining
        if deserted:
            self.emptied.update(deserted)
            self.membership_changed.set()

    async def change(self, how: GroupChange, groups: list[str], channel: str) -> None:
        async with asyncio.timeout(sender.LAYER_TIMEOUT):
            await how(self.layer, groups, channel)

    async def watch_for_losses(self, channel: str) -> None:
        take_losses = getattr(self.layer, "take_losses", None)
        if take_losses is None:  # the in-memory layer: one process, nothing in between to lose
            return
        while True:
            await asyncio.sleep(LOSS_CHECK_EVERY)
            async with asyncio.timeout(sender.LAYER_TIMEOUT):
                lost = await take_losses(channel)
            if lost:
                for subscriber in {subscriber for members in self.members.values() for subscriber in members}:
                    subscriber.missed()

    async def stop(self, channel: str) -> None:
        """Tell every subscriber, and everyone waiting to be one, that it will hear nothing more."""
        self.down = True
        joining, self.joining = self.joining, {}
        fail(joining.values())
        members, self.members = self.members, {}
        joined_groups, self.joined, self.emptied = self.joined, set(), set()
        for subscriber in {subscriber for group in members.values() for subscriber in group}:
            subscriber.lost()
        forget_channel(self.layer, channel)
        with contextlib.suppress(Exception):  # a layer that is down forgets the channel, or expires it
            await self.change(discard_many, list(joined_groups), channel)


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
