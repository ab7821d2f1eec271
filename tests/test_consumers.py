"""WS /ws/jobs/{id}/ and WS /ws/jobs/: state on connect, every change, owners only.

The consumers run in the test's event loop with the in-memory channel layer; job changes
go through processing.jobs.lifecycle, as a worker makes them, and reach the sockets through
processing.events, as they do in the server.
"""

import asyncio
import json
import socket
import uuid
from unittest import mock

import pytest
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore
from django.utils import timezone

from gateway.auth import callers
from gateway.live import consumers, reauthentication, routing
from gateway.live.subscriptions import Subscriptions
from gateway.models import ApiKey
from processing.events import messages, sender
from processing.events.layer import WS_DROPPED
from processing.jobs import lifecycle
from processing.models import Job
from processing.owners import Owner
from tests.stack import refused_port

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("in_memory_layer"),
]

WORKER = "test-host:1:worker"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def alice():
    key, presented = ApiKey.issue("alice")
    return presented, callers.key_caller(key)


@pytest.fixture
def bob():
    key, presented = ApiKey.issue("bob")
    return presented, callers.key_caller(key)


def make_job(caller: callers.Caller, status: str = Job.QUEUED) -> Job:
    return Job.objects.create(
        service="grayscale",
        status=status,
        input_key="uploads/test.png",
        input_sha256="0" * 64,
        input_format="png",
        input_bytes=100,
        input_width=64,
        input_height=48,
        **caller.owner.fields(),
    )


def in_thread(function):
    """Run processing code as a worker does: synchronously, off the event loop."""
    return database_sync_to_async(function)


async def watch(path: str, key: str | None = None, headers=()) -> WebsocketCommunicator:
    """A connected ws; the key goes as a subprotocol, the way browsers send it."""
    subprotocols = ["darkroom", f"darkroom.key.{key}"] if key else []
    ws = WebsocketCommunicator(routing.application, path, headers=list(headers), subprotocols=subprotocols)
    connected, _ = await ws.connect()
    assert connected
    return ws


async def closed_with(ws: WebsocketCommunicator) -> tuple[int, str]:
    message = await ws.receive_output(timeout=1)
    assert message["type"] == "websocket.close", message
    return message["code"], message.get("reason", "")


async def wait_for(condition, what: str, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def complete(job: Job) -> None:
    claimed = await in_thread(lifecycle.claim)(job.id, WORKER)
    await finish(claimed)


async def finish(claimed: Job) -> None:
    """What a worker records when it has stored a 64x48 PNG result."""
    await in_thread(lifecycle.complete)(
        claimed,
        WORKER,
        output_key=f"results/{claimed.id}/output.png",
        output_format="png",
        output_content_type="image/png",
        output_bytes=10,
        output_width=64,
        output_height=48,
    )


# --- WS /ws/jobs/{id}/ ---------------------------------------------------------------


async def test_a_job_socket_sends_the_current_state_on_connect(alice):
    key, caller = alice
    job = await in_thread(make_job)(caller)

    ws = await watch(f"/ws/jobs/{job.id}/", key)
    state = await ws.receive_json_from()

    assert state["type"] == "job.state"
    assert state["job"]["job_id"] == str(job.id)
    assert state["job"]["status"] == "queued"
    assert state["job"]["poll_url"] == f"/api/v1/status/{job.id}"
    await ws.disconnect()


async def test_it_sends_each_change_with_progress_then_the_download_url_and_closes(alice):
    key, caller = alice
    job = await in_thread(make_job)(caller)
    ws = await watch(f"/ws/jobs/{job.id}/", key)
    await ws.receive_json_from()

    claimed = await in_thread(lifecycle.claim)(job.id, WORKER)
    processing = await ws.receive_json_from()
    await in_thread(lifecycle.ProgressReporter(claimed, WORKER, interval=0))(0.5)
    progress = await ws.receive_json_from()
    await finish(claimed)
    completed = await ws.receive_json_from()

    assert (processing["type"], processing["job"]["status"]) == ("job.processing", "processing")
    assert (progress["type"], progress["job"]["progress"]) == ("job.progress", 0.5)
    assert completed["type"] == "job.completed"
    assert completed["job"]["progress"] == 1.0
    assert completed["job"]["result"]["url"] == f"/api/v1/download/{job.id}"
    assert completed["job"]["download_url"] == f"/api/v1/download/{job.id}"
    assert await closed_with(ws) == (1000, "job finished")


async def test_a_failed_job_arrives_with_its_reason_then_the_socket_closes(alice):
    key, caller = alice
    job = await in_thread(make_job)(caller)
    ws = await watch(f"/ws/jobs/{job.id}/", key)
    await ws.receive_json_from()

    await in_thread(lifecycle.claim)(job.id, WORKER)
    await ws.receive_json_from()
    await in_thread(lifecycle.fail)(job.id, "unsupported_image", "not an image", WORKER)
    failed = await ws.receive_json_from()

    assert failed["type"] == "job.failed"
    assert failed["job"]["error"] == {"code": "unsupported_image", "message": "not an image"}
    assert failed["job"]["result"] is None
    assert (await closed_with(ws))[0] == 1000


async def test_a_cancelled_job_arrives_then_the_socket_closes(alice):
    key, caller = alice
    job = await in_thread(make_job)(caller)
    ws = await watch(f"/ws/jobs/{job.id}/", key)
    await ws.receive_json_from()

    await in_thread(lifecycle.cancel)(job.id)
    cancelled = await ws.receive_json_from()

    assert (cancelled["type"], cancelled["job"]["status"]) == ("job.cancelled", "cancelled")
    assert (await closed_with(ws))[0] == 1000


async def test_a_client_that_connects_after_the_end_gets_the_result_and_a_close(alice):
    key, caller = alice
    job = await in_thread(make_job)(caller)
    await complete(job)

    ws = await watch(f"/ws/jobs/{job.id}/", key)
    state = await ws.receive_json_from()

    assert state["job"]["status"] == "completed"
    assert state["job"]["result"]["url"] == f"/api/v1/download/{job.id}"
    assert await closed_with(ws) == (1000, "job finished")


async def test_any_message_from_the_client_is_answered_with_the_current_state(alice):
    key, caller = alice
    job = await in_thread(make_job)(caller)
    ws = await watch(f"/ws/jobs/{job.id}/", key)
    assert (await ws.receive_json_from())["job"]["status"] == "queued"
    await in_thread(Job.objects.filter(id=job.id).update)(progress=0.25)  # a change with no event

    await ws.send_to(text_data="state?")

    state = await ws.receive_json_from()
    assert (state["type"], state["job"]["progress"]) == ("job.state", 0.25)
    await ws.disconnect()


class SlowClient:
    """The server's side of a client that stops reading: `send` waits while `reading` is clear."""

    def __init__(self):
        self.frames: list[dict] = []
        self.reading = asyncio.Event()
        self.reading.set()
        self.incoming: asyncio.Queue = asyncio.Queue()

    async def send(self, frame: dict) -> None:
        await self.reading.wait()
        self.frames.append(frame)

    async def receive(self) -> dict:
        return await self.incoming.get()

    def texts(self) -> list[dict]:
        return [json.loads(frame["text"]) for frame in self.frames if frame["type"] == "websocket.send"]


async def test_a_client_that_falls_behind_gets_the_current_state_instead_of_what_it_missed(alice):
    key, caller = alice
    job = await in_thread(make_job)(caller)
    client = SlowClient()
    socket_ = consumers.JobSocket(client.send)
    scope = {"type": "websocket", "headers": [(b"x-api-key", key.encode())], "subprotocols": []}
    await client.incoming.put({"type": "websocket.connect"})
    serving = asyncio.create_task(socket_.serve(scope, client.receive, job_id=str(job.id)))
    await wait_for(lambda: len(client.texts()) == 1, "the state on connect")
    claimed = await in_thread(lifecycle.claim)(job.id, WORKER)  # sends job.processing, read in time
    await wait_for(lambda: len(client.texts()) == 2, "job.processing")
    dropped_before = WS_DROPPED.labels("slow_client")._value.get()

    client.reading.clear()
    report = lifecycle.ProgressReporter(claimed, WORKER, interval=0)
    for step in range(1, consumers.SEND_BACKLOG + 3):  # more progress than the socket may hold
        await in_thread(report)(step / 100)
    await finish(claimed)
    await wait_for(lambda: socket_.stale or socket_.closed, "the socket to give up on the backlog")
    client.reading.set()
    await wait_for(lambda: socket_.closed, "the close")

    texts = client.texts()
    assert [text["type"] for text in texts[:3]] == ["job.state", "job.processing", "job.progress"]
    assert texts[-1]["type"] == "job.state" and texts[-1]["job"]["status"] == "completed"
    assert len(texts) < consumers.SEND_BACKLOG, "the missed events were not all sent"
    assert client.frames[-1] == {"type": "websocket.close", "code": 1000, "reason": "job finished"}
    assert WS_DROPPED.labels("slow_client")._value.get() > dropped_before
    await client.incoming.put({"type": "websocket.disconnect", "code": 1000})
    await serving


async def test_a_late_event_does_not_take_the_client_back_to_an_older_status(alice):
    key, caller = alice
    job = await in_thread(make_job)(caller)
    claimed = await in_thread(lifecycle.claim)(job.id, WORKER)
    ws = await watch(f"/ws/jobs/{job.id}/", key)
    assert (await ws.receive_json_from())["job"]["status"] == "processing"

    # The gateway's "queued" can reach the layer after the worker's "processing".
    stale = await in_thread(Job.objects.get)(id=job.id)
    stale.status = Job.QUEUED
    group = messages.job_group(job.id)
    await get_channel_layer().group_send(
        group, {**messages.event_message("job.queued", stale), "groups": [group]}
    )

    # Events reach a socket in the order they were sent: had the stale one been forwarded, it
    # would come before this one.
    await in_thread(lifecycle.complete)(claimed, WORKER)
    assert (await ws.receive_json_from())["type"] == "job.completed"


async def test_a_queued_event_after_a_queued_state_is_not_sent_again(alice):
    key, caller = alice
    job = await in_thread(make_job)(caller)
    ws = await watch(f"/ws/jobs/{job.id}/", key)
    assert (await ws.receive_json_from())["job"]["status"] == "queued"

    # The gateway's "queued" is sent after the submit's answer: a quick client's socket may have
    # read the queued state first.
    group = messages.job_group(job.id)
    queued = {**messages.event_message("job.queued", job), "groups": [group]}
    await get_channel_layer().group_send(group, queued)

    await in_thread(lifecycle.claim)(job.id, WORKER)
    assert (await ws.receive_json_from())["type"] == "job.processing"
    await ws.disconnect()


async def test_a_browser_session_watches_the_jobs_it_created():
    session = SessionStore()
    caller = await in_thread(callers.issue_session)(session, None)
    await in_thread(session.save)()
    job = await in_thread(make_job)(caller)

    cookie = (b"cookie", f"sessionid={session.session_key}".encode())
    ws = await watch(f"/ws/jobs/{job.id}/", headers=[cookie])

    assert (await ws.receive_json_from())["job"]["job_id"] == str(job.id)
    await ws.disconnect()


async def test_a_script_may_send_its_key_in_the_api_header(alice):
    key, caller = alice
    job = await in_thread(make_job)(caller)

    ws = await watch(f"/ws/jobs/{job.id}/", headers=[(b"x-api-key", key.encode())])

    assert (await ws.receive_json_from())["job"]["job_id"] == str(job.id)
    await ws.disconnect()


async def test_a_key_sent_as_a_subprotocol_is_answered_with_the_darkroom_subprotocol(alice):
    key, caller = alice
    job = await in_thread(make_job)(caller)
    ws = WebsocketCommunicator(
        routing.application, f"/ws/jobs/{job.id}/", subprotocols=["darkroom", f"darkroom.key.{key}"]
    )

    assert await ws.connect() == (True, "darkroom")  # a browser fails a ws without it
    await ws.disconnect()


# --- Refusals ----------------------------------------------------------------------


async def test_another_owners_job_is_refused_exactly_like_a_job_that_does_not_exist(alice, bob):
    alice_key, _ = alice
    _, bob_caller = bob
    bobs_job = await in_thread(make_job)(bob_caller)

    foreign = await watch(f"/ws/jobs/{bobs_job.id}/", alice_key)
    unknown = await watch("/ws/jobs/00000000-0000-4000-8000-000000000000/", alice_key)
    malformed = await watch("/ws/jobs/not-a-job/", alice_key)

    assert await closed_with(foreign) == (4404, "no such job")
    assert await closed_with(unknown) == (4404, "no such job")
    assert await closed_with(malformed) == (4404, "no such job")


async def test_the_owner_of_a_foreign_job_gets_no_events_through_a_refused_socket(alice, bob):
    alice_key, _ = alice
    bob_key, bob_caller = bob
    bobs_job = await in_thread(make_job)(bob_caller)
    foreign = await watch(f"/ws/jobs/{bobs_job.id}/", alice_key)
    await closed_with(foreign)
    layer = get_channel_layer()
    [foreign_channel] = layer.groups[messages.job_group(bobs_job.id)]
    own = await watch(f"/ws/jobs/{bobs_job.id}/", bob_key)  # the owner's: it gets the event
    await own.receive_json_from()

    await in_thread(lifecycle.claim)(bobs_job.id, WORKER)
    assert (await own.receive_json_from())["type"] == "job.processing"
    # The event was sent to the group, so to the refused socket's channel too: once its consumer
    # has taken it from there, whatever it would send for it is on its way.
    await wait_for(lambda: layer.channels[foreign_channel].empty(), "the refused socket to take the event")

    assert await foreign.receive_nothing(timeout=0.2)
    await own.disconnect()


async def test_a_bad_key_is_refused_with_4401(alice):
    _, caller = alice
    job = await in_thread(make_job)(caller)

    as_subprotocol = await watch(f"/ws/jobs/{job.id}/", "dk_000000000000_wrong")
    as_header = await watch("/ws/jobs/", headers=[(b"authorization", b"Bearer dk_000000000000_wrong")])

    assert await closed_with(as_subprotocol) == (4401, "the API key is unknown or revoked")
    assert await closed_with(as_header) == (4401, "the API key is unknown or revoked")


async def test_an_open_socket_whose_key_is_revoked_is_closed_with_4401_within_the_check_period(
    alice, bob, monkeypatch
):
    monkeypatch.setattr(reauthentication, "RECHECK_SECONDS", 0.05)
    (key, caller), (bobs_key, _) = alice, bob
    job = await in_thread(make_job)(caller)
    job_socket, stream, bobs_stream = (
        await watch(f"/ws/jobs/{job.id}/", key),
        await watch("/ws/jobs/", key),
        await watch("/ws/jobs/", bobs_key),
    )
    for ws in (job_socket, stream, bobs_stream):
        await ws.receive_json_from()  # the state on connect

    await in_thread(ApiKey.objects.filter(pk=caller.owner.key).update)(revoked_at=timezone.now())

    assert await closed_with(job_socket) == (4401, "the API key has been revoked")
    assert await closed_with(stream) == (4401, "the API key has been revoked")
    assert await bobs_stream.receive_nothing(timeout=0.2)  # his key stands
    await bobs_stream.disconnect()


async def test_sockets_are_rechecked_with_one_query_for_all_their_keys(alice, bob, monkeypatch):
    monkeypatch.setattr(reauthentication, "RECHECK_SECONDS", 3600)  # the test calls recheck itself
    asked = []
    monkeypatch.setattr(callers, "revoked_keys", lambda keys: asked.append(set(keys)) or set())
    sockets = [await watch("/ws/jobs/", key) for key, _ in (alice, bob, alice, alice)]
    for ws in sockets:
        await ws.receive_json_from()  # the state on connect: authenticated

    await reauthentication.CredentialWatch.of_running_loop().recheck()

    assert asked == [{alice[1].owner.key, bob[1].owner.key}]
    for ws in sockets:
        await ws.disconnect()


async def test_without_credentials_the_socket_is_refused_when_keys_are_required(settings):
    settings.API_KEYS_REQUIRED = True
    ws = await watch("/ws/jobs/")

    code, reason = await closed_with(ws)

    assert code == 4401 and "authentication required" in reason


async def test_a_session_from_visiting_a_page_opens_no_socket_when_keys_are_required(settings):
    session = SessionStore()
    await in_thread(callers.issue_session)(session, None)  # a visit to a page, as `curl -c j /` makes
    await in_thread(session.save)()
    settings.API_KEYS_REQUIRED = True

    ws = await watch("/ws/jobs/", headers=[(b"cookie", f"sessionid={session.session_key}".encode())])

    code, reason = await closed_with(ws)
    assert code == 4401 and "authentication required" in reason


async def test_a_page_from_another_site_is_refused_at_the_handshake(alice):
    key, caller = alice
    job = await in_thread(make_job)(caller)
    path = f"/ws/jobs/{job.id}/"

    async def handshake(origin: bytes, host: bytes = b"localhost:8000", **scope) -> bool:
        headers = [(b"origin", origin), (b"host", host), (b"x-api-key", key.encode())]
        ws = WebsocketCommunicator(routing.application, path, headers=headers)
        ws.scope.update(scope)
        connected, _ = await ws.connect()
        if connected:
            await ws.disconnect()
        return connected

    assert await handshake(b"http://localhost:8000")
    assert not await handshake(b"https://evil.example")
    # The same host is not enough: another port, or plain HTTP for an HTTPS site, is another origin.
    assert not await handshake(b"http://localhost:9999")
    assert not await handshake(b"http://localhost:8000", scheme="wss")
    assert await handshake(b"https://localhost:8000", scheme="wss")
    assert not await handshake(b"https://localhost:8000")  # a page on HTTPS, the socket on plain ws
    assert not await handshake(b"http://evil.example", host=b"evil.example")  # not in ALLOWED_HOSTS


async def test_an_origin_in_csrf_trusted_origins_may_connect_and_one_behind_a_tls_proxy(alice, settings):
    key, caller = alice
    job = await in_thread(make_job)(caller)
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

    async def handshake(*headers) -> bool:
        ws = WebsocketCommunicator(routing.application, f"/ws/jobs/{job.id}/", headers=list(headers))
        connected, _ = await ws.connect()
        if connected:
            await ws.disconnect()
        return connected

    key_header = (b"x-api-key", key.encode())
    assert await handshake((b"origin", b"https://app.example.com"), (b"host", b"localhost"), key_header)
    assert not await handshake((b"origin", b"http://app.example.com"), (b"host", b"localhost"), key_header)
    proxied = [(b"host", b"localhost"), (b"x-forwarded-proto", b"https"), key_header]
    assert await handshake((b"origin", b"https://localhost"), *proxied)


async def test_close_codes_are_plain_ints_as_servers_require(alice):
    """Daphne turns a close code that is not exactly an int (an IntEnum) into 1011."""
    key, caller = alice
    ws = WebsocketCommunicator(
        routing.application, f"/ws/jobs/{uuid.uuid4()}/", headers=[(b"x-api-key", key.encode())]
    )
    await ws.connect()
    message = await ws.receive_output(timeout=1)
    assert message["type"] == "websocket.close" and message["code"] == 4404
    assert type(message["code"]) is int


async def test_an_unknown_websocket_path_is_closed_with_4404():
    ws = await watch("/ws/nothing-here/")

    assert await closed_with(ws) == (4404, "no such endpoint")


# --- WS /ws/jobs/ ----------------------------------------------------------------------


async def test_the_callers_stream_has_their_jobs_and_never_anyone_elses(alice, bob):
    key, caller = alice
    _, bob_caller = bob
    earlier = await in_thread(make_job)(caller)
    theirs = await in_thread(make_job)(bob_caller)
    stream = await watch("/ws/jobs/", key)
    state = await stream.receive_json_from()

    mine = await in_thread(make_job)(caller)
    await in_thread(lifecycle.claim)(theirs.id, WORKER)
    await in_thread(lifecycle.claim)(mine.id, WORKER)
    await in_thread(lifecycle.cancel)(earlier.id)
    seen = [await stream.receive_json_from() for _ in range(2)]

    assert state["type"] == "jobs.state"
    assert [job["job_id"] for job in state["jobs"]] == [str(earlier.id)]
    assert [(e["type"], e["job"]["job_id"]) for e in seen] == [
        ("job.processing", str(mine.id)),
        ("job.cancelled", str(earlier.id)),
    ]
    # Bob's event was sent before hers (it would have come first); nothing follows hers but the next.
    last = await in_thread(make_job)(caller)
    await in_thread(lifecycle.claim)(last.id, WORKER)
    assert (await stream.receive_json_from())["job"]["job_id"] == str(last.id)
    await stream.disconnect()


async def test_a_staff_stream_sees_every_owners_jobs(alice):
    key, staff = await in_thread(ApiKey.issue)("ops", is_staff=True)
    _, caller = alice
    job = await in_thread(make_job)(caller)
    stream = await watch("/ws/jobs/", staff)
    await stream.receive_json_from()

    await in_thread(lifecycle.claim)(job.id, WORKER)

    assert (await stream.receive_json_from())["job"]["job_id"] == str(job.id)
    await stream.disconnect()


async def test_the_stream_drops_a_late_event_for_a_job_that_has_moved_on(alice):
    key, caller = alice
    job = await in_thread(make_job)(caller)
    stream = await watch("/ws/jobs/", key)
    await stream.receive_json_from()
    await complete(job)
    seen = [(await stream.receive_json_from())["type"] for _ in range(2)]
    assert seen == ["job.processing", "job.completed"]

    late = await in_thread(Job.objects.get)(id=job.id)
    late.status = Job.QUEUED
    await get_channel_layer().group_send(
        messages.owner_group(caller.owner.identity), messages.event_message("job.queued", late)
    )
    later = await in_thread(make_job)(caller)
    await in_thread(lifecycle.claim)(later.id, WORKER)

    # Sent after the late event: the next thing the stream says, so the late one was dropped.
    assert (await stream.receive_json_from())["job"]["job_id"] == str(later.id)
    await stream.disconnect()


async def test_a_disconnected_socket_leaves_its_groups(alice):
    key, caller = alice
    job = await in_thread(make_job)(caller)
    ws = await watch(f"/ws/jobs/{job.id}/", key)
    stream = await watch("/ws/jobs/", key)
    for socket_ in (ws, stream):
        await socket_.receive_json_from()  # the state: sent once subscribed
    layer = get_channel_layer()
    assert {messages.job_group(job.id), messages.owner_group(caller.owner.identity)} <= set(layer.groups)

    await ws.disconnect()
    await stream.disconnect()

    await Subscriptions.of_running_loop().settled()
    assert set(layer.groups) == {messages.LISTENERS_GROUP}  # the process's channel listens, sockets or not


async def test_a_group_name_the_layer_refuses_fails_its_subscriber_and_closes_no_other_socket(alice):
    """Joined in a batch with the others, one bad name once failed the process's channel: every
    socket on it was closed with 1013."""
    key, caller = alice
    job = await in_thread(make_job)(caller)
    stream = await watch("/ws/jobs/", key)
    await stream.receive_json_from()

    with pytest.raises(TypeError):
        await Subscriptions.of_running_loop().subscribe("owner.token.auth0|alice", mock.Mock())
    await in_thread(lifecycle.claim)(job.id, WORKER)

    assert (await stream.receive_json_from())["type"] == "job.processing"
    await stream.disconnect()


# --- Without Redis ---------------------------------------------------------------------


def redis_layer(address: str) -> dict:
    return {
        "default": {
            "BACKEND": "processing.events.layer.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": address, "socket_connect_timeout": 0.5, "socket_timeout": None}]
            },
        }
    }


@pytest.fixture
def redis_down(settings):
    """The Redis channel layer, pointing where no Redis listens."""
    with refused_port() as port:
        settings.CHANNEL_LAYERS = redis_layer(f"redis://127.0.0.1:{port}/0")
        yield


@pytest.fixture
def redis_hung(settings):
    """A "Redis" that takes connections and never answers: the worst case for a sender."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(100)
        settings.CHANNEL_LAYERS = redis_layer(f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
        yield


async def test_with_redis_down_a_socket_gets_the_state_then_a_clean_close(alice, redis_down):
    key, caller = alice
    job = await in_thread(make_job)(caller)

    ws = await watch(f"/ws/jobs/{job.id}/", key)

    assert (await ws.receive_json_from())["job"]["status"] == "queued"
    assert await closed_with(ws) == (1013, "live updates unavailable; poll the API")


@pytest.mark.parametrize("layer", ["redis_down", "redis_hung"])
async def test_a_worker_finishes_its_job_without_waiting_for_a_failing_channel_layer(
    alice, layer, request, monkeypatch
):
    request.getfixturevalue(layer)
    # A send to the layer would now hang for an hour: a worker that waited for it would never finish.
    monkeypatch.setattr(sender, "LAYER_TIMEOUT", 3600)
    _, caller = alice
    job = await in_thread(make_job)(caller)

    try:
        await asyncio.wait_for(complete(job), timeout=60)
    finally:
        stop_sender()

    assert (await in_thread(Job.objects.get)(id=job.id)).status == Job.COMPLETED


def stop_sender() -> None:
    """Stop this process's sender thread (it may be stuck on the failing layer for an hour)."""
    running = sender.current_sender()
    if isinstance(running, sender.BlockingSender):
        running.stop()
    elif running is not None and not isinstance(get_channel_layer(), InMemoryChannelLayer):
        # On the loop, after the sender's start (callbacks run in order): it may not have run yet.
        running.loop.call_soon_threadsafe(lambda: running.task.cancel())
        running.loop.call_soon_threadsafe(running.loop.stop)


def test_events_reach_the_group_of_the_owner_the_api_knows(alice):
    _, by_key = alice
    by_session = callers.Caller(Owner(session="5f0c2d0e9b7a4e34a3f1d6c8b2e4a7d9"))
    anonymous = callers.Caller()

    for caller in (by_key, by_session, anonymous):
        job = make_job(caller)
        assert messages.owner_group(job.owner.identity) == messages.owner_group(caller.owner.identity)
        assert messages.owner_group(caller.owner.identity) in messages.groups_for(job)
