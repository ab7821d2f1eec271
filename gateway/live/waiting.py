"""Long polls: `GET /api/v1/jobs/{id}?wait=N` holds the request until its job ends.

Under the ASGI entry point (project.asgi) `LongPolls` serves them with one pass of the
ordinary synchronous view and the wait after it on the event loop: the view authenticates,
counts the request, finds the job and, when it has not ended, marks its answer with
WAIT_HEADER instead of waiting; `LongPolls` then holds that answer, holding no thread,
until the job's end is heard (or the wait runs out), and sends it with the job as it is
then (the view's own body for it, `answer`) in place of the job as it was.
A request thread never waits: a wait that `LongPolls` did not take (a WSGI server, the
test client) is answered at once with the job as it is. Which request is a long poll is
decided once, by `requested_wait`, the way Django will route and parse it.

Ends are heard by one `EndListener` per event loop: a subscriber of the group that hears
every job's end (ENDED_GROUP, through gateway.live.subscriptions), and a future per
waiting request. A wait then costs a dictionary entry, not a channel of its own, two group
changes in Redis and a database read. Where the listener can't hear (the channel layer is
down) a wait looks at the job every FALLBACK_INTERVAL seconds instead.
"""

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable
from typing import Annotated, Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer
from django.core.exceptions import TooManyFieldsSent
from django.db import connection
from django.http import HttpRequest, QueryDict
from django.urls import Resolver404, resolve
from pydantic import Field, TypeAdapter, ValidationError

from gateway.live.asgi import App, Message, Receive, Scope, Send
from gateway.live.subscriptions import OnePerLoop, Subscriptions
from processing.events.messages import ENDED_GROUP
from processing.events.sender import COOLDOWN
from processing.models import Job, JobId

logger = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 60
FALLBACK_INTERVAL = 0.25
WAIT_HEADER = "Darkroom-Wait"  # the view's mark on its answer: the job to wait for
DEFERRED = "darkroom.long_poll"  # scope key: LongPolls waits for this request (clients can't set scope keys)

LONG_POLL_VIEW = "job_detail"  # the URL name of the view a long poll asks (gateway.api.jobs)
WaitSeconds = Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS)]  # `?wait=`: the view's type, and ours
wait_seconds = TypeAdapter(WaitSeconds)

REMEMBERED_ENDS = 10_000  # the latest ends a listener keeps: a wait starting just after one ends at once
RECHECK_EVERY = 5.0  # seconds between reads of a job while its end is awaited (see until_ended)
LISTEN_AGAIN_AFTER = COOLDOWN  # seconds after the channel layer failed

P = ParamSpec("P")
R = TypeVar("R")


# --- Hearing ends ------------------------------------------------------------------------


class NotListening(Exception):
    """The listener stopped hearing (the channel layer failed): a waiter must look for itself."""


class EndListener(OnePerLoop):
    """Which jobs ended, as this event loop hears it (see the module's docstring)."""

    def __init__(self, layer: BaseChannelLayer) -> None:
        self.layer = layer
        self.loop = asyncio.get_running_loop()
        self.waiters: dict[str, set[asyncio.Future[bool]]] = {}
        self.ended: OrderedDict[str, None] = OrderedDict()
        self.hearing_since: float | None = None  # loop time since when no end has gone unheard
        self.down = False  # the channel layer failed, and the listener has not heard since
        self.task = self.loop.create_task(self.listen(), name="long-poll-ends")

    def heard_everything_since(self, moment: float | None) -> bool:
        return moment is not None and self.hearing_since is not None and self.hearing_since <= moment

    def expect(self, job_id: str) -> asyncio.Future[bool]:
        """A future that resolves when the job's end is heard (at once if it was already)."""
        future = self.loop.create_future()
        if job_id in self.ended:
            future.set_result(True)
        elif self.down:
            future.set_exception(NotListening())
        else:  # hearing, or about to: an end before it started is found by until_ended's reads
            self.waiters.setdefault(job_id, set()).add(future)
        return future

    def forget(self, job_id: str, future: asyncio.Future[bool]) -> None:
        waiting = self.waiters.get(job_id)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self.waiters[job_id]
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()  # retrieved: a NotListening nobody awaited is no error to report

    def heard_end(self, job_id: str) -> None:
        self.ended[job_id] = None
        if len(self.ended) > REMEMBERED_ENDS:
            self.ended.popitem(last=False)
        for future in self.waiters.pop(job_id, ()):
            if not future.done():
                future.set_result(True)

    def stopped_hearing(self) -> None:
        self.hearing_since, self.down = None, True
        waiting, self.waiters = self.waiters, {}
        for future in (future for futures in waiting.values() for future in futures):
            if not future.done():
                future.set_exception(NotListening())

    async def listen(self) -> None:
        subscriptions = Subscriptions.of_running_loop()
        while True:
            self.interrupted: asyncio.Future[None] = self.loop.create_future()
            if await subscriptions.subscribe(ENDED_GROUP, self):
                self.hearing_since, self.down = self.loop.time(), False
                await self.interrupted
                logger.warning("long polls fall back to reading their jobs: live events interrupted")
            self.stopped_hearing()
            await asyncio.sleep(LISTEN_AGAIN_AFTER)

    # What Subscriptions call (gateway.live.subscriptions).

    def deliver(self, message: dict[str, Any]) -> None:
        if message.get("status") in Job.FINISHED:
            self.heard_end(message["job_id"])

    def missed(self) -> None:
        """Ends may have gone unheard: every waiter reads its job again, and later ones will too."""
        self.hearing_since = self.loop.time()
        waiting, self.waiters = self.waiters, {}
        for future in (future for futures in waiting.values() for future in futures):
            if not future.done():
                future.set_result(False)

    def lost(self) -> None:
        if not self.interrupted.done():
            self.interrupted.set_result(None)


# --- Waiting ---------------------------------------------------------------------------


async def until_ended(job_id: JobId, timeout: float, read_at: float | None = None) -> bool:
    """Wait until the job has ended, `timeout` seconds at most; True if it has.

    `read_at` is the loop time at which the caller saw the job unfinished: an end since then that
    the listener heard is known at once. Without it, or with a listener that started hearing
    later, the job is read once more after the wait is registered. Every RECHECK_EVERY seconds it
    is read again, so an end that went unheard (an event dropped on the way) costs that, not the wait.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    listener = EndListener.of_running_loop()
    job_id = str(job_id)
    heard = listener.expect(job_id)
    try:
        if not listener.heard_everything_since(read_at) and await has_ended(job_id):
            return True
        while loop.time() < deadline:
            try:
                async with asyncio.timeout(min(RECHECK_EVERY, deadline - loop.time())):
                    if await asyncio.shield(heard):
                        return True
                listener.forget(job_id, heard)  # ends may have gone unheard: look, and wait again
                heard = listener.expect(job_id)
                if await has_ended(job_id):
                    return True
            except TimeoutError:
                if loop.time() < deadline and await has_ended(job_id):
                    return True
            except NotListening:
                return await poll(job_id, deadline)
        return False
    finally:
        listener.forget(job_id, heard)


async def poll(job_id: str, deadline: float) -> bool:
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        await asyncio.sleep(min(FALLBACK_INTERVAL, max(0.0, deadline - loop.time())))
        if await has_ended(job_id):
            return True
    return False


def read_off_the_loop(read: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """A short database read for the event loop, in a thread that serves no request."""

    @functools.wraps(read)
    def closing(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return read(*args, **kwargs)
        finally:
            connection.close()  # no request would give this thread's connection back to the pool

    return sync_to_async(closing, thread_sensitive=False)


@read_off_the_loop
def has_ended(job_id: str) -> bool:
    return Job.objects.filter(id=job_id, status__in=Job.FINISHED).exists()


# --- One pass of the view, and the wait after it, under ASGI ---------------------------------------


def deferred_by_the_server(request: HttpRequest) -> bool:
    """True under `LongPolls`: the view marks its answer and `LongPolls` waits, not the view."""
    deferred: bool = request.META.get("asgi.scope", {}).get(DEFERRED, False)
    return deferred


class LongPolls:
    """ASGI middleware in front of the synchronous Django app (see the module's docstring).

    `answer(job_id)` is the view's body for the job as it is now (None if it is gone): what a
    long poll gets once its wait is over, with the headers of the view's answer.
    """

    def __init__(self, app: App, answer: Callable[[str], bytes | None]) -> None:
        self.app = app
        self.answer = read_off_the_loop(answer)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        wait = requested_wait(scope)
        if not wait:
            return await self.app(scope, receive, send)
        read_at = asyncio.get_running_loop().time()
        viewed = await Captured.from_app(self.app, {**scope, DEFERRED: True})
        job_id = viewed.header(WAIT_HEADER)  # None: ended already, not found or refused; sent as it is
        if job_id is not None:
            await until_ended(job_id, wait, read_at)
            now = await self.answer(job_id)
            if now is not None:  # else deleted meanwhile: the caller gets the job as the view saw it
                viewed.replace_body(now)
        await viewed.replay(send)


def requested_wait(scope: Scope) -> float | None:
    """The seconds a long poll asks to wait; None for any other request, and for a wait the view
    refuses (it answers that one at once, with a 422).

    A long poll is what Django will take for one: a GET that the URL conf routes to the job's
    view (whatever form of its id that route accepts), with `wait` read from the query as
    `request.GET` reads it (percent-decoding, `+` a space, the last of repeated values, as ninja
    takes it) and checked by the view's own type, WaitSeconds.
    """
    if scope["type"] != "http" or scope["method"] != "GET":
        return None
    try:
        wait = QueryDict(scope.get("query_string", b"")).get("wait")
        seconds = None if wait is None else wait_seconds.validate_python(wait)
        if seconds and resolve(path_info(scope)).url_name == LONG_POLL_VIEW:
            return seconds
    except (TooManyFieldsSent, ValidationError, Resolver404):
        pass  # the view answers at once: 400, 422 or 404
    return None


def path_info(scope: Scope) -> str:
    """The path Django resolves: the scope's, less the prefix the application is mounted at (as a2wsgi)."""
    path: str = scope["path"]
    return path.removeprefix(scope.get("root_path", ""))


class Captured:
    """One pass's whole answer, held back so that `LongPolls` decides what the client gets."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    @classmethod
    async def from_app(cls, app: App, scope: Scope) -> "Captured":
        captured = cls()

        async def receive() -> Message:  # a GET: no body, and the client's own disconnect is not ours to see
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            captured.messages.append(message)

        await app(scope, receive, send)
        return captured

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        headers: Iterable[tuple[bytes, bytes]] = self.messages[0].get("headers", [])
        for key, value in headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def replace_body(self, body: bytes) -> None:
        start = self.messages[0]
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        self.messages = [{**start, "headers": headers}, {"type": "http.response.body", "body": body}]

    async def replay(self, send: Send) -> None:
        start, *body = self.messages
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != WAIT_HEADER.lower().encode()]
        await send({**start, "headers": headers})
        for message in body:
            await send(message)
