"""GET /api/v1/jobs/{id}?wait=N: one request that answers the moment the job ends.

The requests go through the ASGI entry point's HTTP stack as the server runs it (tests.waits)
in the test's event loop, with the in-memory channel layer of the embedded default; the job
changes through processing.jobs.lifecycle, as a worker changes it.
"""

import asyncio
import time

import httpx
import pytest
from django.core.wsgi import get_wsgi_application
from django.db.models import QuerySet

from gateway.http.wsgi_threads import ThreadedWsgi
from gateway.live import waiting
from processing.jobs import lease, lifecycle
from processing.models import Job
from tests.factories import stored_job
from tests.waits import THREADS, client_of_the_server, in_thread, until, until_someone_waits_on, waiting_on

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
def views() -> list:
    """The requests that reach Django behind LongPolls, in order."""
    return []


@pytest.fixture
async def server(views):
    async with client_of_the_server(views) as client:
        yield client


def waiters_on(job: Job) -> set:
    return waiting_on(job.id)


async def test_a_finished_job_is_answered_at_once(server):
    job = await in_thread(stored_job)(status=Job.COMPLETED)
    response = await asyncio.wait_for(server.get(f"/api/v1/jobs/{job.id}?wait=30"), 20)
    assert response.status_code == 200 and response.json()["status"] == "completed"


async def test_a_running_job_is_answered_when_it_completes(server):
    job = await in_thread(stored_job)()
    claimed = await in_thread(lease.claim)(job.id, WORKER)
    polling = asyncio.create_task(server.get(f"/api/v1/jobs/{job.id}?wait=30"))
    await until_someone_waits_on(job.id)

    assert await in_thread(lifecycle.complete)(claimed, WORKER, processing_ms=1.0)
    response = await asyncio.wait_for(polling, 20)

    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "completed" and body["result"]["url"] == f"/api/v1/download/{job.id}"
    assert not waiters_on(job)  # nothing is left waiting


async def test_a_long_poll_runs_the_view_once_and_is_answered_as_a_read_after_the_end(
    server, views, monkeypatch
):
    reads = []
    in_bulk = QuerySet.in_bulk
    monkeypatch.setattr(
        QuerySet, "in_bulk", lambda *args, **kwargs: reads.append(args) or in_bulk(*args, **kwargs)
    )
    job = await in_thread(stored_job)()
    claimed = await in_thread(lease.claim)(job.id, WORKER)
    polling = asyncio.create_task(server.get(f"/api/v1/jobs/{job.id}?wait=30"))
    await until_someone_waits_on(job.id)
    await in_thread(lifecycle.complete)(claimed, WORKER, processing_ms=1.0)
    answer = await asyncio.wait_for(polling, 20)

    assert views == [f"/api/v1/jobs/{job.id}"], "the view ran once; the wait and the answer were LongPolls'"
    assert reads == [], "the answer is the ended event's JSON: the job was not read again"
    read = await server.get(f"/api/v1/jobs/{job.id}")
    assert answer.content == read.content  # the same JSON, byte for byte
    assert answer.headers.keys() == read.headers.keys()
    assert answer.headers["content-length"] == str(len(answer.content))


async def test_a_job_deleted_during_the_wait_is_answered_as_the_view_saw_it(server):
    job = await in_thread(stored_job)()
    await in_thread(lease.claim)(job.id, WORKER)
    polling = asyncio.create_task(server.get(f"/api/v1/jobs/{job.id}?wait=0.5"))
    await until_someone_waits_on(job.id)
    await in_thread(Job.objects.filter(id=job.id).delete)()

    response = await asyncio.wait_for(polling, 20)
    assert response.status_code == 200 and response.json()["status"] == "processing"


async def test_a_long_poll_counts_once_against_the_read_limit(server, settings, fresh_rate_limits):
    settings.RATE_LIMIT_READ = "1/d"
    job = await in_thread(stored_job)()
    claimed = await in_thread(lease.claim)(job.id, WORKER)
    polling = asyncio.create_task(server.get(f"/api/v1/jobs/{job.id}?wait=30"))
    await until_someone_waits_on(job.id)
    await in_thread(lifecycle.complete)(claimed, WORKER, processing_ms=1.0)

    assert (await asyncio.wait_for(polling, 20)).status_code == 200  # its answer is not a second read
    assert (await server.get(f"/api/v1/jobs/{job.id}")).status_code == 429  # the next read is


async def test_a_job_still_running_after_the_wait_is_answered_as_it_is(server):
    job = await in_thread(stored_job)()
    await in_thread(lease.claim)(job.id, WORKER)
    started = time.monotonic()
    response = await server.get(f"/api/v1/jobs/{job.id}?wait=0.5")
    assert response.status_code == 200 and response.json()["status"] == "processing"
    assert time.monotonic() - started >= 0.5  # it waited the whole time it was given


async def test_a_job_still_running_is_waited_for_once(server, monkeypatch):
    waits = []

    async def counted(job_id, timeout, read_at=None):
        waits.append(timeout)
        return await until_ended(job_id, timeout, read_at)

    until_ended = waiting.until_ended
    monkeypatch.setattr(waiting, "until_ended", counted)
    job = await in_thread(stored_job)()
    await in_thread(lease.claim)(job.id, WORKER)

    response = await server.get(f"/api/v1/jobs/{job.id}?wait=0.2")

    assert response.json()["status"] == "processing"
    assert len(waits) == 1, "the client asked to wait once, and was kept for each wait listed"
    assert 0 < waits[0] <= 0.2, "the wait counts from the request's arrival: less what the view took"


async def test_an_end_heard_before_the_wait_began_answers_it_without_a_read(server, monkeypatch):
    job = await in_thread(stored_job)()
    claimed = await in_thread(lease.claim)(job.id, WORKER)
    listener = waiting.EndListener.of_running_loop()
    await until(lambda: listener.hearing_since is not None, "the listener joins the group of ends")
    read_at = asyncio.get_running_loop().time()  # as the view reads the job: still running
    await in_thread(lifecycle.complete)(claimed, WORKER, processing_ms=1.0)
    await until(lambda: str(job.id) in listener.ended, "the listener hears the job's end")
    reads = count_reads(monkeypatch)

    assert await asyncio.wait_for(waiting.until_ended(job.id, 30, read_at), 10)
    assert reads == [], "the listener had heard the end: no database read was needed"


async def test_an_end_that_went_unheard_is_found_by_reading_the_job_again(server, monkeypatch):
    monkeypatch.setattr(waiting, "RECHECK_EVERY", 0.2)
    job = await in_thread(stored_job)()
    await in_thread(lease.claim)(job.id, WORKER)
    polling = asyncio.create_task(server.get(f"/api/v1/jobs/{job.id}?wait=30"))
    await until_someone_waits_on(job.id)

    # Completed with no event at all, as when the channel layer dropped it on the way.
    await in_thread(Job.objects.filter(id=job.id).update)(status=Job.COMPLETED)

    response = await asyncio.wait_for(polling, 10)  # long before the 30 s the client allowed
    assert response.json()["status"] == "completed"


async def test_with_the_channel_layer_down_a_long_poll_reads_the_job_until_it_ends(server, settings):
    unreachable = {"address": "redis://127.0.0.1:1/0", "socket_timeout": None, "socket_connect_timeout": 1}
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "processing.events.layer.RedisChannelLayer",
            "CONFIG": {"hosts": [unreachable]},
        }
    }
    job = await in_thread(stored_job)()
    claimed = await in_thread(lease.claim)(job.id, WORKER)
    polling = asyncio.create_task(server.get(f"/api/v1/jobs/{job.id}?wait=30"))
    listener = waiting.EndListener.of_running_loop()
    # Its first try ends in a connect timeout at most.
    await until(lambda: listener.down, "the listener finds the channel layer down")

    await in_thread(lifecycle.complete)(claimed, WORKER, processing_ms=1.0)

    response = await asyncio.wait_for(polling, 10)
    assert response.status_code == 200 and response.json()["status"] == "completed"


def count_reads(monkeypatch) -> list:
    reads = []
    has_ended = waiting.has_ended

    async def counted(job_id):
        reads.append(job_id)
        return await has_ended(job_id)

    monkeypatch.setattr(waiting, "has_ended", counted)
    return reads


async def test_a_wait_out_of_range_is_refused(server):
    job = await in_thread(stored_job)()
    response = await server.get(f"/api/v1/jobs/{job.id}?wait=3600")
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "wait"


async def test_someone_elses_job_is_not_found_however_long_one_waits(server, api_key):
    job = await in_thread(stored_job)()  # the anonymous owner's
    headers = await in_thread(api_key)("mallory")
    response = await asyncio.wait_for(server.get(f"/api/v1/jobs/{job.id}?wait=30", headers=headers), 20)
    assert response.status_code == 404


# --- One decision: which request is a long poll, read as Django reads it ----------------------

JOB = "0b5f0a9e-5b8e-4a43-9d3c-0c8f8d1b2a11"


def scope(method: str, path: str, query: bytes = b"", root_path: str = "") -> dict:
    return {"type": "http", "method": method, "path": path, "query_string": query, "root_path": root_path}


WAITS = [  # the query, the seconds LongPolls waits (None: none) and the view's answer to a finished job
    (b"wait=30", 30, 200),
    (b"x=1&wait=2.5", 2.5, 200),
    (b"wait=%36%30", 60, 200),  # percent-encoded digits
    (b"w%61it=5", 5, 200),  # and a percent-encoded name
    (b"wait=+60", 60, 200),  # "+" is a space, and a number may have spaces around it
    (b"wait=%2060%20", 60, 200),
    (b"wait=60.0", 60, 200),
    (b"wait=1e1", 10, 200),
    (b"wait=50&wait=2", 2, 200),  # the last one counts, as in request.GET["wait"]
    (b"wait=0", None, 200),  # no wait
    (b"", None, 200),
    (b"waiting=30", None, 200),
    (b"wait=", None, 422),  # refused by the view, at once
    (b"wait=60.5", None, 422),
    (b"wait=3600", None, 422),
    (b"wait=-1", None, 422),
    (b"wait=nan", None, 422),
    (b"wait=inf", None, 422),
    (b"wait=0x10", None, 422),
    (b"wait=30%00", None, 422),
]


def test_the_wait_is_read_from_the_query_as_django_reads_it():
    read = {query: waiting.requested_wait(scope("GET", f"/api/v1/jobs/{JOB}", query)) for query, *_ in WAITS}
    assert read == {query: seconds for query, seconds, _ in WAITS}


async def test_the_view_refuses_exactly_the_waits_that_are_not_taken(server):
    job = await in_thread(stored_job)(id=JOB, status=Job.COMPLETED)  # answered at once, waits or not
    answers = {
        query: (await server.get(f"/api/v1/jobs/{job.id}?{query.decode()}")).status_code
        for query, *_ in WAITS
    }
    assert answers == {query: status for query, _, status in WAITS}


JOB_PATHS = [
    f"/api/v1/jobs/{JOB}",
    f"/api/v1/jobs/{JOB.upper()}",
    f"/api/v1/jobs/urn:uuid:{JOB}",  # the job's route takes any id uuid.UUID reads
    f"/api/v1/jobs/{{{JOB}}}",
    f"/api/v1/jobs/{JOB.replace('-', '')}",
]


def test_every_path_the_url_conf_routes_to_the_job_is_a_long_poll():
    for path in JOB_PATHS:
        assert waiting.requested_wait(scope("GET", path, b"wait=30")) == 30, path


NOT_LONG_POLLS = [
    ("POST", f"/api/v1/jobs/{JOB}"),
    ("HEAD", f"/api/v1/jobs/{JOB}"),
    ("GET", f"/api/v1/jobs/{JOB}/"),  # not routed: a 404 at once
    ("GET", f"/api/v1/jobs/{JOB}/cancel"),
    ("GET", f"/api/v1/status/{JOB}"),
    ("GET", "/api/v1/jobs/batch"),
    ("GET", "/api/v1/jobs"),
    ("GET", f"/jobs/{JOB}/"),  # the HTML page has a `wait` of its own
    ("GET", "/health/live"),
]


def test_only_a_job_read_with_a_wait_is_a_long_poll():
    for method, path in NOT_LONG_POLLS:
        assert waiting.requested_wait(scope(method, path, b"wait=30")) is None, (method, path)


def test_the_path_is_routed_as_mounted():
    mounted = scope("GET", f"/darkroom/api/v1/jobs/{JOB}", b"wait=30", root_path="/darkroom")
    assert waiting.requested_wait(mounted) == 30


# --- No request thread ever waits --------------------------------------------------------------

ENCODED_WAITS = [
    f"/api/v1/jobs/{JOB}?wait=%36%30",
    f"/api/v1/jobs/{JOB}?wait=+60",
    f"/api/v1/jobs/{JOB}?wait=60.0",
    f"/api/v1/jobs/{JOB}?wait=1&wait=60",
    f"/api/v1/jobs/urn:uuid:{JOB}?wait=60",
    f"/api/v1/jobs/{JOB.upper()}?w%61it=60",
]


async def test_long_polls_however_encoded_hold_no_thread_and_other_requests_are_served(server):
    assert len(ENCODED_WAITS) > THREADS  # more than every thread, were each to hold one
    job = await in_thread(stored_job)(id=JOB)  # queued: it ends when the test says
    polls = [asyncio.create_task(server.get(url)) for url in ENCODED_WAITS]

    await until(lambda: len(waiters_on(job)) == len(polls), "every long poll waits on the event loop")
    health = await asyncio.wait_for(server.get("/health/live"), 20)
    assert health.status_code == 200
    assert not any(poll.done() for poll in polls)

    assert await in_thread(lifecycle.cancel)(job.id)
    answers = await asyncio.wait_for(asyncio.gather(*polls), 20)
    assert {(answer.status_code, answer.json()["status"]) for answer in answers} == {(200, "cancelled")}


async def test_a_wait_that_reaches_the_view_is_answered_at_once_with_the_job_as_it_is():
    """Without LongPolls in front (a WSGI server), the view never waits: the job's state, now."""
    app = ThreadedWsgi(get_wsgi_application(), workers=1)
    job = await in_thread(stored_job)()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        response = await asyncio.wait_for(client.get(f"/api/v1/jobs/{job.id}?wait=60"), 20)
        assert response.status_code == 200 and response.json()["status"] == "queued"
        # The only thread there is was given back: it serves the next request.
        assert (await asyncio.wait_for(client.get("/health/live"), 20)).status_code == 200
