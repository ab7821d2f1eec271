"""uvicorn's sans-I/O WebSocket protocol, holding less for each open connection.

Every gateway runs uvicorn with this protocol (`--ws`, among project/serving.py's UVICORN_FLAGS).
Measured with `make bench-ws` and tracemalloc at 3,000 sockets, uvicorn's own protocol kept, for
as long as each socket stayed open:

- the handshake's request and response, with their headers: about 4.5 KiB. Dropped once the
  handshake is answered: nothing reads them again.
- an asyncio.Queue of events for the application: three deques, about 2.2 KiB, where one
  reader takes one event at a time. A list and a future here (`Mailbox`).
- an asyncio.Event saying whether the client reads fast enough: a deque of waiters, about
  0.75 KiB, for a wait that happens only when a client falls behind. `Writable` makes the
  list of waiters when someone waits.

Everything else is uvicorn's, unchanged. Every live test's server runs it (tests/stack.py).
"""

import asyncio
from typing import Any, Generic, TypeVar

from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

T = TypeVar("T")


class Mailbox(Generic[T]):
    """What the protocol needs of asyncio.Queue: put_nowait, get (one reader) and empty."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: list[T] = []
        self.waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: T) -> None:
        self.items.append(item)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def get(self) -> T:
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.items.pop(0)

    def empty(self) -> bool:
        return not self.items


class Writable:
    """What the protocol needs of asyncio.Event: set, clear and wait, with no deque until a wait."""

    __slots__ = ("value", "waiters")

    def __init__(self) -> None:
        self.value = True
        self.waiters: list[asyncio.Future[None]] | None = None

    def set(self) -> None:
        self.value = True
        waiters, self.waiters = self.waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self.value = False

    async def wait(self) -> None:
        if self.value:
            return
        if self.waiters is None:
            self.waiters = []
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        await waiter


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, less what an open socket does not need (see above)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn annotates these as asyncio.Queue and asyncio.Event; it calls only what these have.
        self.queue = Mailbox[ASGIReceiveEvent]()  # type: ignore[assignment]
        self.writable = Writable()  # type: ignore[assignment]

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            # uvicorn annotates them as always set; nothing reads them after the handshake.
            self.request = self.response = None  # type: ignore[assignment]
