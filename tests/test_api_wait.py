"""GET /api/v1/jobs/{id}?wait=N: one request that answers the moment the job ends.

The ASGI entry point (project.asgi) sends such a request to the async view at
/api/v1/jobs/{id}/wait; here that view runs in the test's event loop with the in-memory
channel layer, as in the embedded default, and the job changes through processing.jobs,
as a worker changes it.
"""

import asyncio
import time

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from gateway import events
from gateway.middleware import WaitsOnTheLoop
from processing import jobs, lease
from processing.models import Job
from tests.factories import stored_job

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]

WORKER = "test-host:1:worker"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


in_thread = database_sync_to_async


async def until_someone_waits_on(job: Job) -> None:
    """Arrange, don't guess: the long poll has joined the job's event group."""
    layer = get_channel_layer()
    for _ in range(500):
        if layer.groups.get(events.job_group(job.id)):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the long poll never subscribed to the job's events")


async def test_a_finished_job_is_answered_at_once(async_client):
    job = await in_thread(stored_job)(status=Job.COMPLETED)
    started = time.monotonic()
    response = await async_client.get(f"/api/v1/jobs/{job.id}/wait?wait=30")
    assert response.status_code == 200 and response.json()["status"] == "completed"
    assert time.monotonic() - started < 30  # it did not sit out the wait


async def test_a_running_job_is_answered_when_it_completes(async_client):
    job = await in_thread(stored_job)()
    claimed = await in_thread(lease.claim)(job.id, WORKER)
    polling = asyncio.create_task(async_client.get(f"/api/v1/jobs/{job.id}/wait?wait=30"))
    await until_someone_waits_on(job)

    assert await in_thread(jobs.complete)(claimed, WORKER, processing_ms=1.0)
    response = await asyncio.wait_for(polling, 30)

    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "completed" and body["result"]["url"] == f"/api/v1/download/{job.id}"
    assert not get_channel_layer().groups.get(events.job_group(job.id))  # it left the group


async def test_a_job_still_running_after_the_wait_is_answered_as_it_is(async_client):
    job = await in_thread(stored_job)()
    await in_thread(lease.claim)(job.id, WORKER)
    started = time.monotonic()
    response = await async_client.get(f"/api/v1/jobs/{job.id}/wait?wait=0.5")
    assert response.status_code == 200 and response.json()["status"] == "processing"
    assert time.monotonic() - started >= 0.5  # it waited the whole time it was given


async def test_a_wait_out_of_range_is_refused(async_client):
    job = await in_thread(stored_job)()
    response = await async_client.get(f"/api/v1/jobs/{job.id}/wait?wait=3600")
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "wait"


async def test_someone_elses_job_is_not_found_however_long_one_waits(async_client, api_key):
    job = await in_thread(stored_job)()  # the anonymous owner's
    headers = await in_thread(api_key)("mallory")
    response = await async_client.get(f"/api/v1/jobs/{job.id}/wait?wait=5", headers=headers)
    assert response.status_code == 404


# --- the routing of project.asgi, and the synchronous view ---


async def test_the_asgi_entry_sends_long_polls_to_the_async_view_and_the_rest_to_the_thread_pool():
    seen = []

    def app(name):
        async def handle(scope, receive, send):
            seen.append((name, scope["path"]))

        return handle

    router = WaitsOnTheLoop(app("threads"), app("loop"))
    job = "0b5f0a9e-5b8e-4a43-9d3c-0c8f8d1b2a11"
    for method, path, query in [
        ("GET", f"/api/v1/jobs/{job}", b"wait=30"),
        ("GET", f"/api/v1/jobs/{job}", b"x=1&wait=5"),
        ("GET", f"/api/v1/jobs/{job}", b""),
        ("GET", f"/api/v1/status/{job}", b"wait=30"),
        ("POST", "/api/v1/process/grayscale", b""),
    ]:
        await router({"type": "http", "method": method, "path": path, "query_string": query}, None, None)

    assert seen == [
        ("loop", f"/api/v1/jobs/{job}/wait"),
        ("loop", f"/api/v1/jobs/{job}/wait"),
        ("threads", f"/api/v1/jobs/{job}"),
        ("threads", f"/api/v1/status/{job}"),
        ("threads", "/api/v1/process/grayscale"),
    ]
