"""The Redis channel layer, for one subscribing channel per server process.

Sockets are not channels here: each event loop's `Subscriptions` (gateway.live.subscriptions) has
one channel, joins every group its sockets follow, and hands each message to the sockets of
the groups it came for. What that needs from channels-redis, and what this adds:

- One reader task per process pops the process's inbox in Redis, every message waiting in one
  call, and puts each message in its channel's bounded buffer (channels-redis has every receiver
  compete for a lock, with two tasks and several futures each, and makes four calls a message);
  a receive only waits on its own buffer, and can be cancelled at any point without a Redis
  command in flight.
- `group_send_many`: one event for several groups in one round trip, a script (two with
  several Redis hosts; channels-redis takes four per group); a channel in more than one of
  them gets it once, with the groups it was sent for in `groups`.
- `group_add_many` / `group_discard_many`: many groups joined or left in one round trip.
- Losses are never silent: a message that a channel could not take (its inbox full, or
  expired unread: its process stalled) or that a full buffer pushed out is counted in
  `darkroom_ws_dropped_total{reason}` and marked for the channel with the groups it was for.
  `losses_of(channel)` tells its receiver which groups lost messages (`Losses`; every group when
  a lost message's groups are unknown, as for one that expired), so that only the sockets of those
  groups are given the current state instead of what they missed. Reading the marks does not
  clear them: `forget_losses` does, once the receiver has acted on them, so a call that times out
  on the way loses no mark (at worst a group is told twice).
"""

import asyncio
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgpack  # type: ignore[import-untyped]  # channels-redis serialises with it
import redis
from channels_redis.core import BoundedQueue
from channels_redis.core import RedisChannelLayer as ChannelsRedisLayer
from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string
from prometheus_client import Counter
from redis.asyncio import BlockingConnectionPool, ConnectionPool
from redis.exceptions import RedisError, ResponseError

logger = logging.getLogger(__name__)

# Redis connections per process (and event loop). Thousands of sockets opening or closing at
# once each join or leave a group: past this many at a time they wait for a connection,
# where a plain redis-py pool (100 at most) would fail them with MaxConnectionsError.
POOL_SIZE = 64
# The inbox reader's call: it takes this many messages at most, and waits this long for one when none
# waits (then calls again).
READ_AT_ONCE = 100
READ_WAIT = 5
LOSS_MARK_EXPIRY = 3600  # seconds a loss stays marked for a channel nobody reads any more
# The loss mark of a message whose groups are unknown (one that expired unread, or had no groups):
# every group of the channel may have missed it. Not a group name the layer takes, so never a group's.
UNKNOWN_GROUPS = "*"

# Live events that did not reach a socket, by where they were lost: "channel_full" (a
# process's inbox in Redis), "buffer_full" (a process's buffer), "slow_client" (a socket
# that is not reading). Each such socket is given the current state when it can take it.
WS_DROPPED = Counter("darkroom_ws_dropped", "Live job events that did not reach a socket", ["reason"])

# Counts a loss in an inbox's loss marks (a hash: group, or UNKNOWN_GROUPS, -> messages lost) and
# keeps them LOSS_MARK_EXPIRY seconds; part of both sending scripts.
MARK_LOSS_LUA = (
    f"local UNKNOWN_GROUPS = '{UNKNOWN_GROUPS}'\n"
    + """
local function mark_loss(inbox, groups, count, loss_expiry)
    for _, group in ipairs(groups) do
        redis.call('HINCRBY', inbox .. ':losses', group, count)
    end
    redis.call('EXPIRE', inbox .. ':losses', loss_expiry)
end
"""
)

# Puts each channel key's message in its inbox unless that holds `capacity` already; drops
# what outlived the layer's expiry first. A refused message is marked lost for its groups, an
# expired one for UNKNOWN_GROUPS (reading its groups would cost more than telling everyone).
# KEYS: inbox keys. ARGV: a message per key, a capacity per key, the groups of each key's message
# (a msgpack list), now, expiry, loss expiry.
SEND_LUA = (
    MARK_LOSS_LUA
    + """
local keys, now = #KEYS, tonumber(ARGV[#ARGV - 2])
local expiry, loss_expiry = tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV])
local full = 0
for i = 1, keys do
    local expired = redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, now - expiry)
    if expired > 0 then
        mark_loss(KEYS[i], {UNKNOWN_GROUPS}, expired, loss_expiry)
    end
    if redis.call('ZCARD', KEYS[i]) < tonumber(ARGV[keys + i]) then
        redis.call('ZADD', KEYS[i], now, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        full = full + 1
        mark_loss(KEYS[i], cmsgpack.unpack(ARGV[2 * keys + i]), 1, loss_expiry)
    end
end
return full
"""
)


# group_send_many in one round trip (one Redis host, messages in msgpack, not encrypted): finds each
# group's live members, makes one copy of the message per process inbox, with the channels it is
# for and the groups they came through, and delivers it (and marks its losses) as SEND_LUA does.
# KEYS: group keys. ARGV: the message's msgpack map, declared with two entries more than it holds
# (the copy's "__asgi_channel__" and "groups"), the serializer's random prefix, now, group expiry,
# expiry, loss expiry, the capacity of process channels ("specific.…!…") and of others, the key
# prefix, then each group's name.
SEND_TO_GROUPS_LUA = (
    MARK_LOSS_LUA
    + """
local body, random_prefix, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local group_expiry, expiry, loss_expiry = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local process_capacity, other_capacity, prefix = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local copies, inboxes = {}, {}
for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, now - group_expiry)
    local group = ARGV[9 + i]
    for _, channel in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do
        local local_part = string.match(channel, '^[^!]*!')
        local inbox = prefix .. (local_part or channel)
        local copy = copies[inbox]
        if copy == nil then
            local capacity = local_part and process_capacity or other_capacity
            copy = {channels = {}, channel_set = {}, groups = {}, group_set = {}, capacity = capacity}
            copies[inbox] = copy
            table.insert(inboxes, inbox)
        end
        if not copy.channel_set[channel] then
            copy.channel_set[channel] = true
            table.insert(copy.channels, channel)
        end
        if not copy.group_set[group] then
            copy.group_set[group] = true
            table.insert(copy.groups, group)
        end
    end
end
local full = 0
for _, inbox in ipairs(inboxes) do
    local copy = copies[inbox]
    local message = random_prefix .. body .. cmsgpack.pack('__asgi_channel__') .. cmsgpack.pack(copy.channels)
        .. cmsgpack.pack('groups') .. cmsgpack.pack(copy.groups)
    local expired = redis.call('ZREMRANGEBYSCORE', inbox, 0, now - expiry)
    if expired > 0 then
        mark_loss(inbox, {UNKNOWN_GROUPS}, expired, loss_expiry)
    end
    if redis.call('ZCARD', inbox) < copy.capacity then
        redis.call('ZADD', inbox, now, message)
        redis.call('EXPIRE', inbox, expiry)
    else
        full = full + 1
        mark_loss(inbox, copy.groups, 1, loss_expiry)
    end
end
return full
"""
)

# Forgets losses a receiver has acted on: takes each group's count read (losses_of) off its mark,
# and drops the marks that reach nothing, so a loss marked since the read stays marked.
# KEYS: the loss marks. ARGV: group, count, group, count...
FORGET_LOSSES_LUA = """
for i = 1, #ARGV, 2 do
    if redis.call('HINCRBY', KEYS[1], ARGV[i], -tonumber(ARGV[i + 1])) <= 0 then
        redis.call('HDEL', KEYS[1], ARGV[i])
    end
end
"""


@dataclasses.dataclass(frozen=True)
class Losses:
    """What a channel lost since its losses were last forgotten: the groups the lost messages were
    for, or `everyone` when some lost message's groups are unknown; `marks`, what of it Redis holds
    (group -> messages), for forget_losses. False when nothing was lost."""

    groups: frozenset[str] = frozenset()
    everyone: bool = False
    marks: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.everyone or bool(self.groups)


class LayerDown:
    """Put in every buffer when the inbox can't be read: each waiting receive raises `error`."""

    def __init__(self, error: Exception):
        self.error = error


class RedisChannelLayer(ChannelsRedisLayer):  # type: ignore[misc]  # channels-redis ships no types
    """channels-redis, for one subscribing channel per process (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inbox = f"specific.{self.client_prefix}!"  # the non-local part of new_channel()'s names
        self.reader: asyncio.Task[None] | None = None
        # Channel -> the groups of the messages its full buffer dropped, not yet told (losses_of).
        self.overflowed: dict[str, set[str]] = {}
        self.pops_many = True  # BZMPOP, Redis 7.0 on; before, BZPOPMIN (pop_inbox)

    def create_pool(self, index: int) -> ConnectionPool:
        host = dict(self.hosts[index])
        if "address" not in host:  # sentinels, or host and port: as channels-redis makes them
            pool: ConnectionPool = super().create_pool(index)
            return pool
        return BlockingConnectionPool.from_url(
            host.pop("address"), max_connections=POOL_SIZE, timeout=None, **host
        )

    # --- Sending ---------------------------------------------------------------------------

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self.group_send_many([group], message)

    async def group_send_many(self, groups: list[str], message: dict[str, Any]) -> None:
        """Send `message` to every channel in any of `groups`, once each, with the groups its
        process's channels are in as `message["groups"]`: in one round trip (SEND_TO_GROUPS_LUA) on
        one Redis host, else one to find the members and one to deliver."""
        if self.sends_in_one_trip:
            await self.send_in_one_trip(groups, message)
            return
        by_key: dict[bytes, dict[str, Any]] = {}  # a process's inbox -> the one copy it gets
        for group, channels in (await self.members_of(groups)).items():
            for channel in channels:
                key = self.channel_key(channel)
                if key not in by_key:
                    by_key[key] = {**message, "groups": [], "__asgi_channel__": []}
                copy = by_key[key]
                if channel not in copy["__asgi_channel__"]:
                    copy["__asgi_channel__"].append(channel)
                if group not in copy["groups"]:
                    copy["groups"].append(group)
        if by_key:
            await self.deliver(by_key)

    @functools.cached_property
    def sends_in_one_trip(self) -> bool:
        """One Redis host (the groups and inboxes all in it), and messages as plain msgpack, which
        the script can add the copy's fields to."""
        serializer = self._serializer
        plain = getattr(serializer, "crypter", None) is None and serializer.as_bytes is msgpack.packb
        return self.ring_size == 1 and plain

    async def send_in_one_trip(self, groups: list[str], message: dict[str, Any]) -> None:
        self.count_full(await self.connection(0).eval(SEND_TO_GROUPS_LUA, *self.script_args(groups, message)))

    @functools.cached_property
    def sends_blocking(self) -> bool:
        """Whether `send_blocking` can send (one Redis host given by its address)."""
        return self.sends_in_one_trip and "address" in self.hosts[0]

    def send_blocking(self, groups: list[str], message: dict[str, Any], timeout: float) -> None:
        """group_send_many from a thread that may block (the job-event sender's own): the same script
        through a synchronous client, at a fraction of the asyncio client's CPU; each Redis call
        gives up after `timeout` seconds."""
        client = self.blocking_client(os.getpid(), timeout)
        self.count_full(client.eval(SEND_TO_GROUPS_LUA, *self.script_args(groups, message)))

    @functools.lru_cache(maxsize=2)  # noqa: B019  # one layer per process, kept for its life
    def blocking_client(self, pid: int, timeout: float) -> redis.Redis:
        """A client per process (`pid`: a forked worker must not share its parent's socket)."""
        host = self.hosts[0]
        return redis.Redis.from_url(
            host["address"],
            socket_timeout=timeout,
            socket_connect_timeout=host.get("socket_connect_timeout") or timeout,
        )

    def script_args(self, groups: list[str], message: dict[str, Any]) -> list[Any]:
        """SEND_TO_GROUPS_LUA's key count, keys and arguments for sending `message` to `groups`."""
        packer = msgpack.Packer()
        body = packer.pack_map_header(len(message) + 2) + b"".join(
            packer.pack(key) + packer.pack(value) for key, value in message.items()
        )
        times = [time.time(), self.group_expiry, self.expiry, LOSS_MARK_EXPIRY]
        capacities = [self.get_capacity(self.inbox), self.capacity]
        return [
            len(groups),
            *(self._group_key(group) for group in groups),
            body,
            os.urandom(self._serializer.random_prefix_length),
            *times,
            *capacities,
            self.prefix,
            *groups,
        ]

    def count_full(self, full: int) -> None:
        if full:
            WS_DROPPED.labels("channel_full").inc(full)
            logger.warning("%d server processes are not reading their live events", full)

    def channel_key(self, channel: str) -> bytes:
        key: str = self.prefix + self.non_local_name(channel)
        return key.encode()

    def inbox_host(self, channel: str) -> int:
        index: int = self.consistent_hash(self.non_local_name(channel))
        return index

    async def members_of(self, groups: list[str]) -> dict[str, list[str]]:
        """Each group's live members (expired ones dropped first); one round trip per Redis host."""
        found = {}
        for index, names in self.by_host(groups).items():
            async with self.connection(index).pipeline(transaction=False) as pipe:
                for name in names:
                    key = self._group_key(name)
                    pipe.zremrangebyscore(key, min=0, max=int(time.time()) - self.group_expiry)
                    pipe.zrange(key, 0, -1)
                replies = await pipe.execute()
            for name, channels in zip(names, replies[1::2], strict=True):
                if channels:
                    found[name] = [channel.decode() for channel in channels]
        return found

    async def deliver(self, by_key: dict[bytes, dict[str, Any]]) -> None:
        """Each key's message into its inbox, one script per Redis host; losses counted."""
        by_host: dict[int, list[bytes]] = {}
        for key, copy in by_key.items():
            by_host.setdefault(self.inbox_host(copy["__asgi_channel__"][0]), []).append(key)
        for index, keys in by_host.items():
            messages = [self.serialize(by_key[key]) for key in keys]
            capacities = [self.get_capacity(by_key[key]["__asgi_channel__"][0]) for key in keys]
            groups = [msgpack.packb(by_key[key]["groups"]) for key in keys]
            times = [time.time(), self.expiry, LOSS_MARK_EXPIRY]
            full = await self.connection(index).eval(
                SEND_LUA, len(keys), *keys, *messages, *capacities, *groups, *times
            )
            self.count_full(full)

    # --- Membership ------------------------------------------------------------------------

    def by_host(self, groups: Iterable[str]) -> dict[int, list[str]]:
        hosts: dict[int, list[str]] = {}
        for group in groups:
            hosts.setdefault(self.consistent_hash(group), []).append(group)
        return hosts

    async def group_add_many(self, groups: Iterable[str], channel: str) -> None:
        """`channel` joins (or, already in, renews its place in) every group; a round trip per host."""
        for index, names in self.by_host(groups).items():
            async with self.connection(index).pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.zadd(self._group_key(name), {channel: time.time()})
                    pipe.expire(self._group_key(name), self.group_expiry)
                await pipe.execute()

    async def group_discard_many(self, groups: Iterable[str], channel: str) -> None:
        for index, names in self.by_host(groups).items():
            async with self.connection(index).pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.zrem(self._group_key(name), channel)
                await pipe.execute()

    # --- Losses --------------------------------------------------------------------------

    def loss_key(self, channel: str) -> bytes:
        """Where the scripts mark what `channel`'s inbox lost (a hash: group -> messages)."""
        return self.channel_key(channel) + b":losses"

    async def losses_of(self, channel: str) -> Losses:
        """What `channel` lost since its losses were last forgotten: marked in Redis (kept until
        forget_losses) or dropped by its full buffer (told once, here)."""
        found = await self.connection(self.inbox_host(channel)).hgetall(self.loss_key(channel))
        marks = {group.decode(): int(count) for group, count in found.items()}
        groups = set(marks) | self.overflowed.pop(channel, set())
        everyone = UNKNOWN_GROUPS in groups
        return Losses(frozenset(groups - {UNKNOWN_GROUPS}), everyone, marks)

    async def forget_losses(self, channel: str, losses: Losses) -> None:
        """Clear the marks `losses` read; what was lost since stays marked."""
        if not losses.marks:
            return
        counts = [part for group, count in losses.marks.items() for part in (group, count)]
        await self.connection(self.inbox_host(channel)).eval(
            FORGET_LOSSES_LUA, 1, self.loss_key(channel), *counts
        )

    # --- Receiving -------------------------------------------------------------------------

    async def new_channel(self, prefix: str = "specific") -> str:
        channel: str = await super().new_channel(prefix)
        # Registered at once, so that events for it are kept from its first group_add on.
        self.receive_buffer[channel] = BoundedQueue(self.capacity)
        return channel

    async def receive(self, channel: str) -> dict[str, Any]:
        if not channel.startswith(self.inbox):
            received: dict[str, Any] = await super().receive(channel)
            return received
        self.start_reader()
        buffer = self.receive_buffer.setdefault(channel, BoundedQueue(self.capacity))
        try:
            message: dict[str, Any] | LayerDown = await buffer.get()
        except asyncio.CancelledError:
            self.receive_buffer.pop(channel, None)  # its consumer has stopped: keep nothing for it
            raise
        if isinstance(message, LayerDown):
            self.receive_buffer.pop(channel, None)
            raise message.error
        return message

    def start_reader(self) -> None:
        if self.reader is None or self.reader.done():
            self.reader = asyncio.get_running_loop().create_task(
                self.read_inbox(), name="channel-layer-inbox"
            )
        elif self.reader.get_loop() is not asyncio.get_running_loop():
            raise RuntimeError("two event loops are trying to receive() on one channel layer")

    def overflow(self, channel: str, dropped: Any) -> None:
        WS_DROPPED.labels("buffer_full").inc()
        groups = dropped.get("groups") if isinstance(dropped, dict) else None
        self.overflowed.setdefault(channel, set()).update(groups or [UNKNOWN_GROUPS])

    async def read_inbox(self) -> None:
        """Deliver the inbox's messages to their channels' buffers until Redis fails."""
        try:
            while True:
                for content in await self.pop_inbox():
                    self.hand_over(self.deserialize(content))
        except (RedisError, OSError) as error:
            logger.warning("channel layer inbox unreadable: %s: %s", type(error).__name__, error)
            for buffer in list(self.receive_buffer.values()):
                buffer.put_nowait(LayerDown(error))

    async def pop_inbox(self) -> list[bytes]:
        """What waits in the inbox, oldest first, up to READ_AT_ONCE; when nothing does, the first
        message to come (none after READ_WAIT seconds). One Redis call where channels-redis's
        receive makes four a message (a script putting back what a cancelled receive popped, the pop,
        a backup copy of the message and its removal): this reader is cancelled only as its process
        stops, and what a failing call may lose, every socket re-reads (LayerDown). A message took
        0.6 ms of the reading process's CPU that way; a batch of them takes one call here."""
        key = self.channel_key(self.inbox)
        connection = self.connection(self.inbox_host(self.inbox))
        if self.pops_many:
            try:
                popped = await connection.bzmpop(READ_WAIT, 1, [key], min=True, count=READ_AT_ONCE)
                return [content for content, _ in popped[1]] if popped else []
            except ResponseError as error:
                if "unknown command" not in str(error).lower():
                    raise
                logger.info("Redis before 7.0 (no BZMPOP): the inbox is read a message a call")
                self.pops_many = False
        one = await connection.bzpopmin(key, timeout=READ_WAIT)
        return [one[1]] if one else []

    def hand_over(self, message: dict[str, Any]) -> None:
        """`message` into the buffer of each channel it is for that still has a receiver."""
        channels = message.pop("__asgi_channel__", [])
        for channel in channels if isinstance(channels, list) else [channels]:
            buffer = self.receive_buffer.get(channel)
            if buffer is None:  # its receiver has gone: nobody to give it to
                continue
            if buffer.full():  # the oldest makes room; its groups missed it
                self.overflow(channel, buffer.get_nowait())
            buffer.put_nowait(message)


def check_channel_layer(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """gateway.E001: every Redis channel-layer host sets "socket_timeout": None.

    The inbox reader waits for events in READ_WAIT (5 s) blocking calls, and redis-py's default
    socket timeout is 5 s too: idle WebSockets would break every 5 s. Any socket timeout also
    makes redis-py wrap its writes in asyncio.wait_for, which on Python 3.11 can swallow a
    cancellation (CPython gh-86296): a closed socket's receive then never ends, and its
    consumer stays in memory. Hung Redis calls are bounded by the timeouts of
    processing.events.sender (LAYER_TIMEOUT), which the gateway's subscribers use too.
    """
    errors: list[checks.CheckMessage] = []
    layers: Mapping[str, Mapping[str, Any]] = settings.CHANNEL_LAYERS
    for alias, layer in layers.items():
        if not issubclass(import_string(layer["BACKEND"]), ChannelsRedisLayer):
            continue
        for host in layer.get("CONFIG", {}).get("hosts", []):
            if not (isinstance(host, dict) and "socket_timeout" in host and host["socket_timeout"] is None):
                errors.append(
                    checks.Error(
                        f'CHANNEL_LAYERS[{alias!r}]: a Redis host without "socket_timeout": None',
                        hint='Give each host as {"address": REDIS_URL, "socket_timeout": None, '
                        '"socket_connect_timeout": 1}; see processing.events.layer.check_channel_layer.',
                        id="gateway.E001",
                    )
                )
    return errors
