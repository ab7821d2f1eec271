"""Open sockets re-checked against their credentials: a revoked API key or an expired token stops
streaming.

A socket is authenticated at its handshake (gateway.auth.callers), and may stay open for hours.
Every RECHECK_SECONDS, one task per event loop closes with 4401 the sockets whose token has expired
(from its claims, kept at the handshake: no I/O) and those whose API key has been revoked (one query
for the keys of all the loop's sockets, through gateway.auth.callers). At 10,000 sockets a process,
that is one query and one pass over a dict every RECHECK_SECONDS. The task runs only while there
are sockets to watch. Sockets of a browser session or of the anonymous owner are not watched.
"""

import asyncio
import logging
import time
import weakref
from typing import ClassVar, Protocol

from channels.db import database_sync_to_async
from django.db import DatabaseError

from gateway.auth import callers

logger = logging.getLogger(__name__)

# How long a revoked key or an expired token may go on streaming, at most.
RECHECK_SECONDS = 10.0

clock = time.time  # what tokens' `exp` is counted by


class Watched(Protocol):
    def credentials_ended(self, reason: str) -> None:
        """Close, saying why: the socket's credential is no longer accepted."""


class CredentialWatch:
    """The watched sockets of one event loop, and the task that re-checks them: `of_running_loop()`."""

    _by_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, "CredentialWatch"]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self) -> None:
        self.watched: dict[Watched, tuple[str, float | None]] = {}  # socket -> (its key, its expiry)
        self.task: asyncio.Task[None] | None = None

    @classmethod
    def of_running_loop(cls) -> "CredentialWatch":
        loop = asyncio.get_running_loop()
        found = cls._by_loop.get(loop)
        if found is None:
            found = cls._by_loop[loop] = cls()
        return found

    def watch(self, socket: Watched, caller: callers.Caller) -> None:
        """Re-check `socket` while it is open, if its caller's credential can end (a key, a token)."""
        if not caller.owner.key and caller.expires_at is None:
            return
        self.watched[socket] = (caller.owner.key, caller.expires_at)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.run())

    def forget(self, socket: Watched) -> None:
        self.watched.pop(socket, None)

    async def run(self) -> None:
        try:
            while self.watched:
                await asyncio.sleep(RECHECK_SECONDS)
                await self.recheck()
        finally:
            self.task = None

    async def recheck(self) -> None:
        keys = {key for key, _ in self.watched.values() if key}
        revoked = await revoked_among(keys) if keys else set()
        now = clock()
        for socket, (key, expires_at) in list(self.watched.items()):
            if key in revoked:
                self.end(socket, "the API key has been revoked")
            elif expires_at is not None and expires_at <= now:
                self.end(socket, "the token has expired")

    def end(self, socket: Watched, reason: str) -> None:
        self.forget(socket)
        socket.credentials_ended(reason)


@database_sync_to_async
def revoked_among(keys: set[str]) -> set[str]:
    """The revoked ones among `keys`; none while the database can't say (they are checked again
    next time: an outage doesn't close every socket)."""
    try:
        return callers.revoked_keys(keys)
    except DatabaseError as exc:
        logger.warning("could not re-check the API keys of open sockets: %s", exc)
        return set()
