"""WebSocket consumers: one job's live status, and the stream of all the caller's jobs.

`WS /ws/jobs/{id}/` sends `{"type": "job.state", "job": {...}}` on connect, then every
change as `{"type": "job.processing" | "job.progress" | "job.completed" | ..., "job": {...}}`
(the API's job shape: status, progress, and `result.url` to download once completed).
After the job's last event it closes with 1000: a finished job changes no more, and an
open socket per finished job would hold server memory for nothing.

`WS /ws/jobs/` sends `{"type": "jobs.state", "jobs": [...]}` (the caller's most recent
jobs) on connect, then every change to any of the caller's jobs (every job, for staff),
and stays open. A client that reconnects gets the state again, so it misses nothing.

Who may subscribe: the job's owner, as for the API.
- A browser session: its cookie (same-origin pages).
- An API key as a subprotocol, which browsers can send:
  `new WebSocket(url, ["darkroom", "darkroom.key." + key])`; the server answers
  "darkroom" and never echoes the key. Not in the query string: URLs end up in logs.
- From scripts, the API's headers also work: `X-API-Key` or `Authorization: Bearer`.

Close codes, sent after the handshake so that browsers can read them (code and reason):
- 1000: the job finished.
- 1001: a stream reached its 12-hour lifetime; reconnect (see STREAM_LIFETIME).
- 1013: live updates are unavailable (the channel layer is down); reconnect later, or poll.
- 4401: bad or missing credentials.
- 4404: no such job, or another owner's (the same answer: existence isn't revealed).
A browser page from another origin is refused at the handshake (HTTP 403, `gateway.routing`).
"""

import asyncio
import json
import logging
import uuid
from collections import OrderedDict
from importlib import import_module
from types import SimpleNamespace

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib import auth
from django.contrib.sessions.backends.base import SessionBase
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError
from django.http.cookie import parse_cookie
from redis.exceptions import RedisError

from gateway import events, owners
from gateway.serialize import job_json
from processing.job_metrics import WEBSOCKET_CONNECTIONS
from processing.models import Job

logger = logging.getLogger(__name__)

SUBPROTOCOL = "darkroom"
KEY_SUBPROTOCOL_PREFIX = "darkroom.key."
RECENT_JOBS = 50  # jobs in the stream's state on connect
# channels-redis forgets a group's member a day after it joined (its group_expiry): a stream
# ends before that, so that its client reconnects and joins again instead of silently starving.
STREAM_LIFETIME = 12 * 3600  # seconds
REMEMBERED_JOBS = 128  # jobs whose latest status a stream remembers, to drop late events

# Events reach a socket by different paths (the gateway announces "queued", a worker then
# "processing"), so a late one may arrive after a newer one. Statuses only move forward.
STATUS_RANK = {Job.QUEUED: 0, Job.PROCESSING: 1, **{status: 2 for status in Job.FINISHED}}
FINISHED_RANK = 2


class Close:
    """Close codes, as plain ints: Daphne closes with 1011 for a code whose type isn't exactly int."""

    JOB_FINISHED = 1000
    RECONNECT = 1001
    TRY_AGAIN_LATER = 1013
    BAD_CREDENTIALS = 4401
    NOT_FOUND = 4404


class InvalidKey(Exception):
    """An API key was presented and matches no live key."""


# --- Who is connecting ----------------------------------------------------------------


def presented_key(scope) -> str | None:
    """The API key from the subprotocols (browsers) or the API's headers (scripts), if any."""
    for protocol in scope.get("subprotocols") or ():
        if protocol.startswith(KEY_SUBPROTOCOL_PREFIX):
            return protocol.removeprefix(KEY_SUBPROTOCOL_PREFIX)
    headers = dict(scope.get("headers") or ())
    if b"x-api-key" in headers:
        return headers[b"x-api-key"].decode("latin-1").strip()
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer":
        return token.strip()
    return None


def browser_session(scope) -> tuple[SessionBase, object] | None:
    """The session and user named by the handshake's session cookie; None without the cookie.

    Read once here rather than by channels' AuthMiddlewareStack, which keeps a session, a
    user and three more copies of the scope in memory for as long as each socket is open.
    """
    cookies = parse_cookie(dict(scope.get("headers") or ()).get(b"cookie", b"").decode("latin-1"))
    if settings.SESSION_COOKIE_NAME not in cookies:
        return None
    session = import_module(settings.SESSION_ENGINE).SessionStore(cookies[settings.SESSION_COOKIE_NAME])
    return session, auth.get_user(SimpleNamespace(session=session))


@database_sync_to_async
def authenticate(scope) -> owners.Caller | None:
    """The caller behind a handshake, as the API would see it; None when credentials are required
    and there are none. Raises InvalidKey for a key that matches no live key."""
    key = presented_key(scope)
    if key is not None:
        caller = owners.from_key(key)
        if caller is None:
            raise InvalidKey
        return caller
    session = browser_session(scope)
    if session is not None:
        return owners.from_session(*session)
    if getattr(settings, "API_KEYS_REQUIRED", False):
        return None
    return owners.Caller()


@database_sync_to_async
def visible_job(caller: owners.Caller, job_id: uuid.UUID) -> Job | None:
    return caller.visible_jobs().filter(id=job_id).first()


@database_sync_to_async
def recent_jobs(caller: owners.Caller) -> list[Job]:
    return list(caller.visible_jobs()[:RECENT_JOBS])


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


# --- Consumers -----------------------------------------------------------------------


class JobEventsConsumer(AsyncWebsocketConsumer):
    """What both endpoints share: the handshake, authentication, group membership, closing.

    Subclasses implement `start(caller)` (subscribe, then send the state) and `job_event`.
    """

    closed = False
    counted = False
    lifetime: asyncio.TimerHandle | None = None  # when a long-lived socket must end

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        except RedisError as exc:
            # Redis went away while this socket waited for events: it will get no more.
            # Close cleanly, so that the client reconnects (and gets the state) or polls.
            logger.warning("live job events interrupted: %s: %s", type(exc).__name__, exc)
            await self.close(Close.TRY_AGAIN_LATER, "live updates interrupted; reconnect or poll")
        finally:
            if self.lifetime is not None:
                self.lifetime.cancel()
            await events.leave(self.channel_layer, self.groups, self.channel_name)
            if self.counted:
                WEBSOCKET_CONNECTIONS.dec()

    async def connect(self):
        events.serve_from_running_loop()
        await self.accept(SUBPROTOCOL if SUBPROTOCOL in (self.scope.get("subprotocols") or ()) else None)
        WEBSOCKET_CONNECTIONS.inc()
        self.counted = True
        try:
            caller = await authenticate(self.scope)
        except InvalidKey:
            return await self.close(Close.BAD_CREDENTIALS, "the API key is unknown or revoked")
        except DatabaseError:
            logger.exception("could not authenticate a WebSocket: the database failed")
            return await self.close(Close.TRY_AGAIN_LATER, "service unavailable; try again later")
        if caller is None:
            return await self.close(Close.BAD_CREDENTIALS, "authentication required: a session or an API key")
        try:
            await self.start(caller)
        except DatabaseError:
            logger.exception("could not start a WebSocket: the database failed")
            await self.close(Close.TRY_AGAIN_LATER, "service unavailable; try again later")

    async def start(self, caller: owners.Caller) -> None:
        raise NotImplementedError

    async def subscribe(self, groups: list[str]) -> bool:
        """Join the groups; False when the channel layer is down (the socket can't be live)."""
        self.groups = await events.join(self.channel_layer, groups, self.channel_name)
        return bool(self.groups)

    async def dispatch(self, message):
        # Channels closes stale database connections before every handler, a hop to the
        # database thread behind every other socket's queries; job events need no database.
        if message["type"] == events.MESSAGE_TYPE:
            await self.job_event(message)
        else:
            await super().dispatch(message)

    async def job_event(self, message: dict) -> None:
        raise NotImplementedError

    async def close_unavailable(self) -> None:
        await self.close(Close.TRY_AGAIN_LATER, "live updates unavailable; poll the API")

    async def close(self, code=None, reason=None):
        if not self.closed:
            self.closed = True
            await super().close(code, reason)

    async def websocket_disconnect(self, message):
        raise StopConsumer()  # groups are left in __call__, however the connection ends


class JobConsumer(JobEventsConsumer):
    """`WS /ws/jobs/{id}/`: the job's state on connect, each change, then a close with 1000."""

    rank = 0  # how far the client has seen the job go (STATUS_RANK)

    async def start(self, caller: owners.Caller) -> None:
        job_id = parse_uuid(self.scope["url_route"]["kwargs"]["job_id"])
        if job_id is None:
            return await self.close(Close.NOT_FOUND, "no such job")
        # Subscribe before reading, so that no change slips between the read and the
        # subscription; nothing is forwarded unless the job turns out to be the caller's.
        live = await self.subscribe([events.job_group(job_id)])
        job = await visible_job(caller, job_id)
        if job is None:
            return await self.close(Close.NOT_FOUND, "no such job")
        self.rank = STATUS_RANK[job.status]
        await self.send(text_data=events.event_text("job.state", job))
        if job.is_finished:
            await self.close(Close.JOB_FINISHED, "job finished")
        elif not live:
            await self.close_unavailable()

    async def job_event(self, message: dict) -> None:
        rank = STATUS_RANK[message["status"]]
        if self.closed or rank < self.rank:
            return
        self.rank = rank
        await self.send(text_data=message["text"])
        if rank == FINISHED_RANK:
            await self.close(Close.JOB_FINISHED, "job finished")


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


class CallerJobsConsumer(JobEventsConsumer):
    """`WS /ws/jobs/`: the caller's recent jobs on connect, then every change to their jobs."""

    async def start(self, caller: owners.Caller) -> None:
        group = events.STAFF_GROUP if caller.is_staff else events.owner_group(caller.identity)
        live = await self.subscribe([group])
        jobs = await recent_jobs(caller)
        self.latest = LatestStatuses()
        for job in reversed(jobs):  # oldest first, so that the newest are remembered longest
            self.latest.is_news(str(job.id), job.status)
        state = {"type": "jobs.state", "jobs": [job_json(job) for job in jobs]}
        await self.send(text_data=json.dumps(state, cls=DjangoJSONEncoder))
        if not live:
            return await self.close_unavailable()
        self.lifetime = asyncio.get_running_loop().call_later(STREAM_LIFETIME, self.end_of_lifetime)

    def end_of_lifetime(self) -> None:
        self.ending = asyncio.ensure_future(
            self.close(Close.RECONNECT, "reconnect to renew the subscription")
        )

    async def job_event(self, message: dict) -> None:
        if not self.closed and self.latest.is_news(message["job_id"], message["status"]):
            await self.send(text_data=message["text"])


class UnknownEndpointConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path: a readable close rather than a failed handshake."""

    channel_layer_alias = None  # needs no channel

    async def connect(self):
        await self.accept()
        await self.close(Close.NOT_FOUND, "no such endpoint")
