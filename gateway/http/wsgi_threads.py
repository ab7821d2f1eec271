"""Django's synchronous handler as an ASGI app, on a pool of reused threads (project.asgi).

a2wsgi's adapter (its request body and environ are used as they are), with one change that counts:
a response the app holds whole in memory (Django's HttpResponse: every API answer, every page) goes
back to the event loop once, as the thread's result, and is sent from there. a2wsgi hands each of
its messages over on its own (the start, the body, the end), each a round trip from the thread to
the event loop and back: a third of a bare request's server CPU (`make bench-api`). A streamed
response is sent piece by piece, each piece one such round trip, as with a2wsgi. A file (Django's
FileResponse: a download, a static file) is offered `wsgi.file_wrapper` and read in pieces of up to
FILE_PIECE bytes rather than FileResponse's 4 KiB blocks: a result of a few hundred KB goes back
whole, in one hop, instead of in a round trip for every 4 KiB.
"""

import asyncio
import contextvars
import functools
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from types import TracebackType
from typing import Any

from a2wsgi.wsgi import Body, build_environ

from gateway.live.asgi import Message, Receive, Scope, Send

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
Write = Callable[[bytes], None]
StartResponse = Callable[..., Write]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

FILE_PIECE = 1024 * 1024  # a file is read and sent in pieces of this size at most, as request bodies come


class ThreadedWsgi:
    """ASGI app (HTTP only): the WSGI `app` on `workers` reused threads."""

    def __init__(self, app: WsgiApp, workers: int):
        self.app = app
        self.executor = ThreadPoolExecutor(thread_name_prefix="WSGI", max_workers=workers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"no WSGI application for {scope['type']!r} connections")
        loop = asyncio.get_running_loop()
        exchange = Exchange(self.app, loop, send)
        environ: dict[str, Any] = build_environ(scope, Body(loop, receive))  # type: ignore[arg-type, assignment]
        environ["wsgi.file_wrapper"] = FileWrapper
        # In the request's context (its context vars), as a2wsgi runs the app.
        in_context = functools.partial(contextvars.copy_context().run, exchange.run, environ)
        for message in await loop.run_in_executor(self.executor, in_context):
            await send(message)


class Exchange:
    """One request's pass through the WSGI app, on a thread of the pool."""

    def __init__(self, app: WsgiApp, loop: asyncio.AbstractEventLoop, send: Send):
        self.app, self.loop, self.send = app, loop, send
        self.start: Message | None = None  # the response's start, held until its body is known
        self.started = False  # the start has gone to the client: the response is streamed

    def run(self, environ: dict[str, Any]) -> list[Message]:
        """The messages left for the event loop to send: the whole response, if the app held it whole;
        none if it was streamed (sent from here, as it came)."""
        response = self.app(environ, self.start_response)
        try:
            body = response.pieces() if isinstance(response, FileWrapper) else response
            if is_whole(body) and not self.started:
                return [self.start_message(), {"type": "http.response.body", "body": b"".join(body)}]
            for piece in body:
                self.stream(piece)
            self.send_now({"type": "http.response.body", "body": b""})
            return []
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Write:
        if exc_info is not None and self.started:
            raise exc_info[1].with_traceback(exc_info[2])  # too late to answer otherwise (PEP 3333)
        self.start = {
            "type": "http.response.start",
            "status": int(status.split(" ", 1)[0]),
            "headers": [
                (name.strip().encode("latin-1").lower(), value.strip().encode("latin-1"))
                for name, value in headers
            ],
        }
        return self.stream  # WSGI's write(), which nothing of ours calls: a streamed response

    def start_message(self) -> Message:
        if self.start is None:
            raise RuntimeError("the WSGI app returned without calling start_response")
        return self.start

    def stream(self, piece: bytes) -> None:
        if piece:
            self.send_now({"type": "http.response.body", "body": piece, "more_body": True})

    def send_now(self, message: Message) -> None:
        """Send from this thread: a round trip to the event loop, which also paces the app to the client."""
        if not self.started:
            self.started = True
            self.send_now(self.start_message())
        asyncio.run_coroutine_threadsafe(sent(self.send, message), self.loop).result()


async def sent(send: Send, message: Message) -> None:
    await send(message)


def is_whole(body: Iterable[bytes]) -> bool:
    """A response body already in memory: a list or a tuple, or Django's HttpResponse (not streaming)."""
    return isinstance(body, list | tuple) or getattr(body, "streaming", None) is False


class FileWrapper:
    """`wsgi.file_wrapper` (PEP 3333): a response that is a file, which Exchange reads in large pieces."""

    def __init__(self, file: Any, block_size: int = FILE_PIECE):
        self.file = file  # read in FILE_PIECE pieces, whatever `block_size` (PEP 3333's signature) asks

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.pieces())

    def pieces(self) -> list[bytes] | Iterator[bytes]:
        """The file whole, if it fits in one piece (so the response goes back in one hop), else its pieces."""
        first = self.file.read(FILE_PIECE)
        second = self.file.read(FILE_PIECE) if first else b""
        if not second:
            return [first]
        return chain([first, second], iter(lambda: self.file.read(FILE_PIECE), b""))

    def close(self) -> None:
        self.file.close()  # Django makes it the response's close: files closed, request_finished sent
