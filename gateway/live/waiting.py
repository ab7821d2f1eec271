"""Waits: `GET /api/v1/jobs/{id}?wait=N` and a submission with `Prefer: wait=N` answer when their
jobs end.

Under the ASGI entry point (project.asgi) `LongPolls` serves them with one pass of the
ordinary synchronous view and the wait after it on the event loop: the view authenticates,
counts the request, finds or creates the jobs and, when they have not ended, asks for the
wait (`wait_after_view`) instead of waiting; `LongPolls` then holds the view's answer,
holding no thread, until the jobs' ends are heard (or the wait runs out), and sends in its
place what the view said to send then (`WaitFor.answer`: the jobs as they are then, or a
result's bytes). A request thread never waits: a wait that `LongPolls` did not take (a WSGI
server, the test client) is answered at once with the jobs as they are. Which GET is a long
poll is decided once, by `requested_wait`, the way Django will route and parse it.

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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer
from django.core.exceptions import TooManyFieldsSent
from django.db import connection
from django.http import HttpRequest, QueryDict
from django.urls import Resolver404, resolve
from pydantic import Field, TypeAdapter, ValidationError

from gateway.http import preferences
from gateway.live.asgi import App, Message, Receive, Scope, Send
from gateway.live.subscriptions import OnePerLoop, Subscriptions
from processing.events.messages import ENDED_GROUP
from processing.events.sender import COOLDOWN
from processing.models import Job, JobId

logger = logging.getLogger(__name__)

MAX_WAIT_SECONDS = preferences.MAX_WAIT_SECONDS  # a long poll's, as a submission's
FALLBACK_INTERVAL = 0.25
# Scope keys (clients can't set scope keys): LongPolls takes this request's wait, and what for.
DEFERRED = "darkroom.may_wait"
WAIT_FOR = "darkroom.wait_for"

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
        # The latest ends, with the event's text where someone waited for it (see final_texts).
        self.ended: OrderedDict[str, str | None] = OrderedDict()
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

    def heard_end(self, job_id: str, text: str | None = None) -> None:
        waiting = self.waiters.pop(job_id, ())
        self.ended[job_id] = text if waiting else None  # only a waiter reads it: a few at a time
        if len(self.ended) > REMEMBERED_ENDS:
            self.ended.popitem(last=False)
        for future in waiting:
            if not future.done():
                future.set_result(True)

    def final_texts(self, job_ids: list[str]) -> dict[str, str]:
        """The ended event's text (processing.events.messages.event_text) of those of the jobs whose
        end was heard while someone waited for it: the job's final JSON, with no read of the job."""
        texts = {job_id: self.ended.get(job_id) for job_id in job_ids}
        return {job_id: text for job_id, text in texts.items() if text is not None}

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
            self.heard_end(message["job_id"], message.get("text"))

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


@dataclass(frozen=True)
class Answer:
    """What a request gets once its wait is over, in place of the view's own answer: this body, these
    headers over the view's, and the view's status unless `status`."""

    body: bytes
    status: int | None = None
    headers: dict[str, str | None] = field(default_factory=dict)  # None: drop the view's header


@dataclass(frozen=True)
class WaitFor:
    """A view's request to `LongPolls`: wait until these jobs end (`seconds` from the request's
    arrival at most), then answer with `answer(final_texts)`, synchronous and short, given the
    ended events' texts of the jobs whose end was heard (EndListener.final_texts), so that it
    reads only what they don't tell (None: the view's own answer stands, e.g. a job was deleted)."""

    job_ids: list[str]
    seconds: float
    answer: Callable[[dict[str, str]], Answer | None]


def wait_after_view(request: HttpRequest, wait_for: WaitFor) -> bool:
    """Hand the wait to `LongPolls`, which holds no thread for it; False where no `LongPolls` is in
    front (a WSGI server, the test client): the view then answers at once, with the jobs as they are."""
    scope = request.META.get("asgi.scope", {})
    if not scope.get(DEFERRED):
        return False
    scope[WAIT_FOR] = wait_for  # the scope LongPolls made for this request, and reads after the view
    return True


class LongPolls:
    """ASGI middleware in front of the synchronous Django app (see the module's docstring).

    A request that may wait — a long poll (`requested_wait`) or a submission with `Prefer: wait`
    (gateway.http.preferences) — passes the view once, marked as one whose wait the server takes;
    when the view asked for a wait (`wait_after_view`), its answer is held until the jobs end or
    the time runs out, and then replaced by the view's `answer()`.
    """

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not may_wait(scope):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        scope = {**scope, DEFERRED: True}
        viewed = await Captured.from_app(self.app, scope, receive if scope["method"] == "POST" else no_body)
        wait_for: WaitFor | None = scope.get(WAIT_FOR)
        if wait_for is not None:
            deadline = arrived + wait_for.seconds
            await all_ended(wait_for.job_ids, deadline - loop.time(), arrived)
            final_texts = EndListener.of_running_loop().final_texts(wait_for.job_ids)
            answer = await read_off_the_loop(wait_for.answer)(final_texts)
            if answer is not None:
                viewed.replace(answer)
        await viewed.replay(send)


def may_wait(scope: Scope) -> bool:
    if scope["type"] != "http":
        return False
    if scope["method"] == "POST":
        return preferences.of_scope(scope).wait is not None
    return requested_wait(scope) is not None


async def all_ended(job_ids: list[str], timeout: float, read_at: float) -> bool:
    """Wait until every job has ended, `timeout` seconds at most (see until_ended); True if they have."""
    if len(job_ids) == 1:
        return await until_ended(job_ids[0], timeout, read_at)
    ended = await asyncio.gather(*(until_ended(job_id, timeout, read_at) for job_id in job_ids))
    return all(ended)


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


async def no_body() -> Message:
    """A GET's receive: no body, and the client's own disconnect is not the view's to see."""
    return {"type": "http.request", "body": b"", "more_body": False}


class Captured:
    """One pass's whole answer, held back so that `LongPolls` decides what the client gets."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    @classmethod
    async def from_app(cls, app: App, scope: Scope, receive: Receive) -> "Captured":
        captured = cls()

        async def send(message: Message) -> None:
            captured.messages.append(message)

        await app(scope, receive, send)
        return captured

    def replace(self, answer: Answer) -> None:
        start = self.messages[0]
        replaced = {name.lower().encode() for name in answer.headers} | {b"content-length"}
        headers: list[tuple[bytes, bytes]] = [
            (key, value) for key, value in start.get("headers", []) if key.lower() not in replaced
        ]
        headers += [
            (name.lower().encode(), value.encode("latin-1"))
            for name, value in answer.headers.items()
            if value is not None
        ]
        headers.append((b"content-length", str(len(answer.body)).encode()))
        start = {**start, "headers": headers, "status": answer.status or start["status"]}
        self.messages = [start, {"type": "http.response.body", "body": answer.body}]

    async def replay(self, send: Send) -> None:
        for message in self.messages:
            await send(message)
