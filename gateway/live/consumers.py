"""WebSocket consumers: one job's live status, and the stream of all the caller's jobs.

`WS /ws/jobs/{id}/` sends `{"type": "job.state", "job": {...}}` on connect, then every
change as `{"type": "job.processing" | "job.progress" | "job.completed" | ..., "job": {...}}`
(the API's job shape: status, progress, and `result.url` to download once completed).
After the job's last event it closes with 1000: a finished job changes no more, and an
open socket per finished job would hold server memory for nothing.

`WS /ws/jobs/` sends `{"type": "jobs.state", "jobs": [...]}` (the caller's most recent
jobs) on connect, then every change to any of the caller's jobs (every job, for staff),
and stays open. A client that reconnects gets the state again, so it misses nothing.

A view is never silently stale: when events for a socket were lost (it read too slowly and
SEND_BACKLOG filled up, or the channel layer lost them: processing.events.layer counts each in
`darkroom_ws_dropped_total{reason}`), the socket gets the current state (`job.state` or
`jobs.state`) in their place. A client may also ask for it: any message it sends is
answered with the current state.

Who may subscribe: the job's owner, as for the API.
- A browser session: its cookie (same-origin pages).
- An API key as a subprotocol, which browsers can send:
  `new WebSocket(url, ["darkroom", "darkroom.key." + key])`; the server answers
  "darkroom" and never echoes the key. Not in the query string: URLs end up in logs.
- From scripts, the API's headers also work: `Authorization: Bearer` or `X-API-Key`. The same
  credentials make the same caller as for the API (gateway.auth.callers).
- A bearer token (JWT) from the identity provider, wherever an API key goes (gateway/auth/tokens.py).

Close codes, sent after the handshake so that browsers can read them (code and reason):
- 1000: the job finished.
- 1013: live updates are unavailable (the channel layer is down); reconnect later, or poll.
- 4401: bad or missing credentials; or, on an open socket, its API key has been revoked or its token
  has expired since the handshake (checked every RECHECK_SECONDS, gateway.live.reauthentication).
- 4404: no such job, or another owner's (the same answer: existence isn't revealed).
A browser page from another origin is refused at the handshake (HTTP 403, `gateway.live.routing`).
"""

import asyncio
import json
import logging
import os
import uuid
from collections import OrderedDict, deque
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError

from gateway.auth import callers, tokens
from gateway.live.asgi import Message as Frame
from gateway.live.asgi import Receive, Scope, Send
from gateway.live.reauthentication import CredentialWatch
from gateway.live.subscriptions import Subscriptions
from processing.events import messages
from processing.events.layer import WS_DROPPED
from processing.jobs.prometheus import WEBSOCKET_CONNECTIONS
from processing.jobs.public import job_json
from processing.models import Job, find_job
from processing.owners import Owner

logger = logging.getLogger(__name__)

SUBPROTOCOL = "darkroom"
PROCESS_HEADER = b"x-gateway-process"
REMEMBERED_JOBS = 128  # jobs whose latest status a stream remembers, to drop late events
# Frames waiting for a socket whose client reads slowly; past this it gets the state instead.
SEND_BACKLOG = 32

# Events reach a socket by different paths (the gateway announces "queued", a worker then
# "processing"), so a late one may arrive after a newer one. Statuses only move forward.
STATUS_RANK = {Job.QUEUED: 0, Job.PROCESSING: 1, **{status: 2 for status in Job.FINISHED}}


class Close:
    """Close codes, as plain ints: Daphne closes with 1011 for a code whose type isn't exactly int."""

    JOB_FINISHED = 1000
    TRY_AGAIN_LATER = 1013
    BAD_CREDENTIALS = 4401
    NOT_FOUND = 4404


# --- Who is connecting ----------------------------------------------------------------


@database_sync_to_async
def authenticate(scope: Scope) -> callers.Caller | None:
    """The caller behind a handshake, as the API would see the same credentials (gateway.auth.callers)."""
    return callers.of_handshake(scope)


@database_sync_to_async
def visible_job(owner: Owner | None, job_id: uuid.UUID) -> Job | None:
    return find_job(job_id, owner)


@database_sync_to_async
def recent_jobs(owner: Owner | None) -> list[Job]:
    return callers.recent_jobs(owner, callers.RECENT_JOBS_ON_STREAM)


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


# --- Sockets ---------------------------------------------------------------------------


def text_frame(text: str) -> Frame:
    return {"type": "websocket.send", "text": text}


def close_frame(code: int, reason: str) -> Frame:
    return {"type": "websocket.close", "code": code, "reason": reason}


class LiveSocket:
    """What both endpoints share: the handshake, authentication, subscriptions, sending, closing.

    A plain ASGI application rather than a channels consumer: a socket then costs the
    server's own task and this small object, not two more tasks, a channel and a buffer.
    Frames go out in order: the state first (events that come meanwhile are held, then sent
    if they are news), then events through `outbox`, drained by a task that lives only while
    there is something to send. Subclasses implement `start()` (subscribe, then send the state),
    `wants(message)` and `current_state()`.
    """

    __slots__ = ("send_asgi", "sees_jobs_of", "groups", "closed", "held", "outbox", "sender", "stale")

    def __init__(self, send: Send) -> None:
        self.send_asgi = send
        self.sees_jobs_of: Owner | None = None  # None: every owner's (staff)
        self.groups: tuple[str, ...] = ()
        self.closed = False
        self.held: list[dict[str, Any]] | None = []  # events that came before the state went out
        self.outbox: deque[Frame] | None = None  # frames not yet sent, while a sender drains them
        self.sender: asyncio.Task[None] | None = None
        self.stale = False  # events were lost: send the current state before anything else

    async def serve(self, scope: Scope, receive: Receive, **route: str) -> None:
        """The whole life of the socket; `route` is what its path says (gateway.live.routing)."""
        if (await receive())["type"] != "websocket.connect":
            return
        accept = {"type": "websocket.accept", "subprotocol": accepted_subprotocol(scope)}
        await self.send_asgi({**accept, "headers": process_header()})
        WEBSOCKET_CONNECTIONS.inc()
        try:
            await self.open(scope, route)
            forget_handshake(scope)
            while (await receive())["type"] == "websocket.receive":
                self.refresh()  # the client asks for the current state
        finally:
            self.closed = True
            for group in self.groups:
                Subscriptions.of_running_loop().unsubscribe(group, self)
            CredentialWatch.of_running_loop().forget(self)
            WEBSOCKET_CONNECTIONS.dec()

    async def open(self, scope: Scope, route: dict[str, str]) -> None:
        try:
            caller = await authenticate(scope)
        except (callers.InvalidKey, tokens.InvalidToken) as exc:
            return await self.close(
                Close.BAD_CREDENTIALS, str(exc)[:120]
            )  # a close reason: 123 bytes at most
        except tokens.KeysUnavailable:
            return await self.close(Close.TRY_AGAIN_LATER, "the identity provider's keys can't be fetched")
        except DatabaseError:
            logger.exception("could not authenticate a WebSocket: the database failed")
            return await self.close(Close.TRY_AGAIN_LATER, "service unavailable; try again later")
        if caller is None:
            return await self.close(Close.BAD_CREDENTIALS, "authentication required: a session or an API key")
        self.sees_jobs_of = caller.sees_jobs_of
        CredentialWatch.of_running_loop().watch(self, caller)
        try:
            await self.start(caller, **route)
            self.state_sent()
        except DatabaseError:
            logger.exception("could not start a WebSocket: the database failed")
            await self.close(Close.TRY_AGAIN_LATER, "service unavailable; try again later")

    async def start(self, caller: callers.Caller, *args: Any, **route: Any) -> None:
        """Subscribe, then send the state. Each socket takes the parts of its path by name (its `route`)."""
        raise NotImplementedError

    async def subscribe(self, group: str) -> bool:
        """Follow the group; False when the channel layer is down (the socket can't be live)."""
        if not await Subscriptions.of_running_loop().subscribe(group, self):
            return False
        self.groups = (group,)
        return True

    async def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            await self.send_asgi(close_frame(code, reason))

    # --- What Subscriptions call, on the loop ---

    def deliver(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        if self.held is not None:
            self.held.append(message)
            return
        if self.stale or not self.wants(message):
            return
        if self.outbox is not None and len(self.outbox) >= SEND_BACKLOG:
            WS_DROPPED.labels("slow_client").inc()
            return self.refresh()
        self.queue(text_frame(message["text"]))
        if message["status"] in Job.FINISHED and self.closes_when_finished():
            self.queue(close_frame(Close.JOB_FINISHED, "job finished"))

    def state_sent(self) -> None:
        """Now the events that came while the state was read and sent: those that are news."""
        held, self.held = self.held, None
        for message in held or ():
            self.deliver(message)

    def missed(self) -> None:
        self.refresh()

    def credentials_ended(self, reason: str) -> None:
        """What CredentialWatch calls when the key is revoked or the token has expired."""
        self.queue(close_frame(Close.BAD_CREDENTIALS, reason))

    def lost(self) -> None:
        self.groups = ()
        self.queue(close_frame(Close.TRY_AGAIN_LATER, "live updates interrupted; reconnect or poll"))

    # --- Sending, in order ---

    def refresh(self) -> None:
        """Send the current state next, in place of whatever is waiting."""
        self.stale = True
        if self.outbox:
            self.outbox.clear()
        self.queue(None)

    def queue(self, frame: Frame | None) -> None:
        if self.closed:
            return
        if self.outbox is None:
            self.outbox = deque()
        if frame is not None:
            self.outbox.append(frame)
        if self.sender is None:
            self.sender = asyncio.get_running_loop().create_task(self.send_queued())

    async def send_queued(self) -> None:
        try:
            while not self.closed:
                if self.stale:
                    self.stale = False
                    frames = await self.current_state()
                elif self.outbox:
                    frames = [self.outbox.popleft()]
                else:
                    break
                for frame in frames:
                    await self.send_frame(frame)
        except OSError:  # the client has gone; the server tells serve() so
            pass
        except DatabaseError:
            logger.exception("could not send a WebSocket its state: the database failed")
            await self.send_frame(close_frame(Close.TRY_AGAIN_LATER, "service unavailable; try again later"))
        finally:
            self.sender, self.outbox = None, None

    async def send_frame(self, frame: Frame) -> None:
        if frame["type"] == "websocket.close":
            await self.close(frame["code"], frame["reason"])
        elif not self.closed:
            await self.send_asgi(frame)

    def wants(self, message: dict[str, Any]) -> bool:
        raise NotImplementedError

    def closes_when_finished(self) -> bool:
        return False

    async def current_state(self) -> list[Frame]:
        raise NotImplementedError


def forget_handshake(scope: Scope) -> None:
    """Drop what the handshake brought and nothing reads again: the server keeps the scope for
    as long as the socket is open (about 1.5 KiB a socket; see gateway.live.ws_protocol)."""
    for key in ("headers", "subprotocols", "state", "extensions"):
        scope.pop(key, None)


def process_header() -> list[tuple[bytes, bytes]]:
    """With GATEWAY_PROCESS_HEADER, which gateway process holds the socket: several processes share
    one port (uvicorn's workers), and a test or benchmark of them needs to know whose socket is whose."""
    if not settings.GATEWAY_PROCESS_HEADER:
        return []
    return [(PROCESS_HEADER, str(os.getpid()).encode())]


def accepted_subprotocol(scope: Scope) -> str | None:
    return SUBPROTOCOL if SUBPROTOCOL in (scope.get("subprotocols") or ()) else None


class JobSocket(LiveSocket):
    """`WS /ws/jobs/{id}/`: the job's state on connect, each change, then a close with 1000."""

    __slots__ = ("job_id", "rank")

    async def start(self, caller: callers.Caller, job_id: str) -> None:
        self.rank = 0  # how far the client has seen the job go (STATUS_RANK)
        parsed = parse_uuid(job_id)
        if parsed is None:
            return await self.close(Close.NOT_FOUND, "no such job")
        self.job_id = parsed
        # Subscribe before reading, so that no change slips between the read and the
        # subscription; nothing is forwarded unless the job turns out to be the caller's.
        live = await self.subscribe(messages.job_group(self.job_id))
        job = await visible_job(self.sees_jobs_of, self.job_id)
        if job is None:
            return await self.close(Close.NOT_FOUND, "no such job")
        for frame in self.state_of(job):
            await self.send_frame(frame)
        if not live:
            await self.close(Close.TRY_AGAIN_LATER, "live updates unavailable; poll the API")

    def state_of(self, job: Job) -> list[Frame]:
        self.rank = max(self.rank, STATUS_RANK[job.status])
        frames = [text_frame(messages.event_text("job.state", job))]
        if job.is_finished:
            frames.append(close_frame(Close.JOB_FINISHED, "job finished"))
        return frames

    def wants(self, message: dict[str, Any]) -> bool:
        """Only what takes the client further: a later status, or more progress while processing. The
        gateway's "queued" may reach the layer after the socket sent a queued job's state: it is the
        same news again."""
        rank = STATUS_RANK[message["status"]]
        if rank < self.rank or (rank == self.rank and message["status"] != Job.PROCESSING):
            return False
        self.rank = rank
        return True

    def closes_when_finished(self) -> bool:
        return True

    async def current_state(self) -> list[Frame]:
        job = await visible_job(self.sees_jobs_of, self.job_id)
        if job is None:  # deleted since (cleanup)
            return [close_frame(Close.NOT_FOUND, "no such job")]
        return self.state_of(job)


class LatestStatuses:
    """The furthest status seen of the most recent jobs, to tell a late event from news."""

    def __init__(self, size: int = REMEMBERED_JOBS):
        self.size = size
        self.ranks: OrderedDict[str, int] = OrderedDict()

    def is_news(self, job_id: str, status: str) -> bool:
        """Record `status` for the job unless it would move the job backwards (then False)."""
        rank = STATUS_RANK[status]
        if rank < self.ranks.get(job_id, rank):
            return False
        self.ranks[job_id] = rank
        self.ranks.move_to_end(job_id)
        if len(self.ranks) > self.size:
            self.ranks.popitem(last=False)
        return True


class CallerJobsSocket(LiveSocket):
    """`WS /ws/jobs/`: the caller's recent jobs on connect, then every change to their jobs."""

    __slots__ = ("latest",)

    async def start(self, caller: callers.Caller) -> None:
        self.latest = LatestStatuses()
        group = messages.STAFF_GROUP if caller.is_staff else messages.owner_group(caller.owner.identity)
        live = await self.subscribe(group)
        for frame in await self.current_state():
            await self.send_frame(frame)
        if not live:
            await self.close(Close.TRY_AGAIN_LATER, "live updates unavailable; poll the API")

    def wants(self, message: dict[str, Any]) -> bool:
        return self.latest.is_news(message["job_id"], message["status"])

    async def current_state(self) -> list[Frame]:
        jobs = await recent_jobs(self.sees_jobs_of)
        for job in reversed(jobs):  # oldest first, so that the newest are remembered longest
            self.latest.is_news(str(job.id), job.status)
        state = {"type": "jobs.state", "jobs": [job_json(job) for job in jobs]}
        return [text_frame(json.dumps(state, cls=DjangoJSONEncoder))]


async def unknown_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """Any other WebSocket path: a readable close rather than a failed handshake."""
    if (await receive())["type"] == "websocket.connect":
        await send({"type": "websocket.accept"})
        await send(close_frame(Close.NOT_FOUND, "no such endpoint"))
