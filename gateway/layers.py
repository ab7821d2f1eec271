"""The Redis channel layer, receiving for the whole process in one task.

channels-redis has every waiting consumer compete for a lock, with two tasks, a queue
and several futures each, and the winner reads the process's inbox in Redis for all of
them. With ten thousand sockets that is ten thousand lock waiters to hand the lock along
after every event, and a few KiB of memory per socket. Here one reader task per process
pops the inbox and puts each message in its channel's bounded buffer; a consumer's
receive only waits on its own buffer, and can be cancelled at any point (channels cancels
it when a socket closes) without a Redis command in flight.
"""

import asyncio
import logging
import time

from channels_redis.core import BoundedQueue
from channels_redis.core import RedisChannelLayer as ChannelsRedisLayer
from redis.asyncio import BlockingConnectionPool
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# Redis connections per process (and event loop). Thousands of sockets opening or closing at
# once each join or leave a group: past this many at a time they wait for a connection,
# where a plain redis-py pool (100 at most) would fail them with MaxConnectionsError.
POOL_SIZE = 64


class LayerDown:
    """Put in every buffer when the inbox can't be read: each waiting receive raises `error`."""

    def __init__(self, error: Exception):
        self.error = error


class RedisChannelLayer(ChannelsRedisLayer):
    """channels-redis, with one reader of the process's inbox (see the module's docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inbox = f"specific.{self.client_prefix}!"  # the non-local part of new_channel()'s names
        self.reader: asyncio.Task | None = None

    def create_pool(self, index: int):
        host = dict(self.hosts[index])
        if "address" not in host:  # sentinels, or host and port: as channels-redis makes them
            return super().create_pool(index)
        return BlockingConnectionPool.from_url(
            host.pop("address"), max_connections=POOL_SIZE, timeout=None, **host
        )

    async def group_send(self, group: str, message: dict) -> None:
        await self.group_send_many([group], message)

    async def group_send_many(self, groups: list[str], message: dict) -> None:
        """channels-redis' group_send to each group that anyone is in, found in one round trip.

        Most jobs have nobody watching them live: an event for their three groups then
        costs one round trip, not six (channels-redis expires a group, then lists it).
        """
        for group in await self.groups_with_members(groups):
            await super().group_send(group, message)

    async def groups_with_members(self, groups: list[str]) -> list[str]:
        """The groups with members, expired ones dropped first; one round trip per Redis host."""
        by_host: dict[int, list[str]] = {}
        for group in groups:
            by_host.setdefault(self.consistent_hash(group), []).append(group)
        found = []
        for index, names in by_host.items():
            async with self.connection(index).pipeline(transaction=False) as pipe:
                for name in names:
                    key = self._group_key(name)
                    pipe.zremrangebyscore(key, min=0, max=int(time.time()) - self.group_expiry)
                    pipe.zcard(key)
                replies = await pipe.execute()
            found += [name for name, members in zip(names, replies[1::2], strict=True) if members]
        return found

    async def new_channel(self, prefix: str = "specific") -> str:
        channel = await super().new_channel(prefix)
        # Registered at once, so that events for it are kept from its first group_add on.
        self.receive_buffer[channel] = BoundedQueue(self.capacity)
        return channel

    async def receive(self, channel: str) -> dict:
        if not channel.startswith(self.inbox):
            return await super().receive(channel)
        self.start_reader()
        buffer = self.receive_buffer.setdefault(channel, BoundedQueue(self.capacity))
        try:
            message = await buffer.get()
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

    async def read_inbox(self) -> None:
        """Deliver the inbox's messages to their channels' buffers until Redis fails."""
        try:
            while True:
                channels, message = await self.receive_single(self.inbox)
                for channel in channels if isinstance(channels, list) else [channels]:
                    buffer = self.receive_buffer.get(channel)
                    if buffer is not None:  # else its consumer has gone: nobody to give it to
                        buffer.put_nowait(message)
        except (RedisError, OSError) as error:
            logger.warning("channel layer inbox unreadable: %s: %s", type(error).__name__, error)
            for buffer in list(self.receive_buffer.values()):
                buffer.put_nowait(LayerDown(error))
