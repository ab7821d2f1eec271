"""`Prefer: wait=N` on a submission: one request per job, answered when the job ends.

Through the server's HTTP stack (tests.waits), with Dramatiq's stub broker and a worker of
real threads processing each job as it is published; the in-memory channel layer tells the
waiting request of the job's end.
"""

import asyncio
import io

import pytest
from PIL import Image

from gateway.http import preferences
from gateway.live import waiting
from processing.models import Job
from tests import images
from tests.waits import THREADS, client_of_the_server, in_thread, until, until_someone_waits_on

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("in_memory_layer"),
]

PNG = images.png_bytes(images.gradient(64, 48))


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def server():
    async with client_of_the_server() as client:
        yield client


def upload(data: bytes = PNG, name: str = "photo.png") -> dict:
    return {"image": (name, data, "application/octet-stream")}


async def submit(
    server, prefer: str | None, service: str = "grayscale", headers: dict | None = None, **params
):
    headers = {**({"Prefer": prefer} if prefer else {}), **(headers or {})}
    data = {name: str(value) for name, value in params.items()}
    return await asyncio.wait_for(
        server.post(f"/api/v1/process/{service}", files=upload(), data=data, headers=headers), 30
    )


def vary(response) -> set[str]:
    return {name.strip().lower() for name in response.headers.get("vary", "").split(",")}


# --- A job that ends in time ------------------------------------------------------------------


async def test_a_job_that_ends_in_time_is_answered_with_its_final_json(server, stub_worker):
    response = await submit(server, "wait=30")

    assert response.status_code == 200
    job = response.json()
    assert job["status"] == "completed" and job["result"]["url"] == f"/api/v1/download/{job['job_id']}"
    assert response.headers["preference-applied"] == "wait=30"
    assert response.headers["location"] == f"/api/v1/jobs/{job['job_id']}"
    assert {"prefer", "accept"} <= vary(response)
    assert "retry-after" not in response.headers  # it has ended: there is nothing to come back for
    read = await server.get(f"/api/v1/jobs/{job['job_id']}")
    assert response.content == read.content  # the same JSON as a read of the job, byte for byte


async def test_with_return_representation_the_answer_is_the_result_itself(server, stub_worker):
    response = await submit(server, "wait=30, return=representation", headers={"Accept": "image/*"})

    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    job_id = response.headers["job-id"]
    assert response.headers["job-status"] == "completed"
    assert response.headers["location"] == f"/api/v1/jobs/{job_id}"
    assert response.headers["preference-applied"] == "wait=30, return=representation"
    assert {"queue", "work", "total"} == {
        part.split(";")[0] for part in response.headers["server-timing"].split(", ")
    }
    assert {"prefer", "accept"} <= vary(response)
    download = await server.get(f"/api/v1/download/{job_id}")
    assert response.content == download.content  # the exact bytes a download gets
    assert Image.open(io.BytesIO(response.content)).mode == "L"  # and they are the grayscale result


async def test_the_representation_is_the_format_the_accept_header_names(server, stub_worker):
    response = await submit(
        server, "wait=30; x=1, return=representation", headers={"Accept": "image/webp"}, format="auto"
    )

    assert response.status_code == 200 and response.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(response.content)).format == "WEBP"


async def test_without_an_image_accept_the_representation_is_the_json(server, stub_worker):
    response = await submit(server, "return=representation, wait=30", headers={"Accept": "application/json"})

    assert response.status_code == 200 and response.json()["status"] == "completed"
    assert response.headers["preference-applied"] == "wait=30"  # the representation was not given


async def test_a_job_that_fails_is_answered_with_its_reason_not_an_image(server, stub_worker):
    truncated = images.png_bytes(images.noise(256, 256))[:4000]  # its header is whole; its pixels are not
    response = await asyncio.wait_for(
        server.post(
            "/api/v1/process/grayscale",
            files=upload(truncated),
            headers={"Prefer": "wait=30, return=representation", "Accept": "image/*"},
        ),
        30,
    )

    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    job = response.json()
    assert job["status"] == "failed" and job["error"]["code"]
    assert response.headers["preference-applied"] == "wait=30"


async def test_a_batch_is_answered_when_every_job_has_ended(server, stub_worker):
    files = [("image", (f"{n}.png", PNG, "image/png")) for n in range(3)]
    response = await asyncio.wait_for(
        server.post(
            "/api/v1/jobs/batch",
            files=files,
            data={"service": "grayscale"},
            headers={"Prefer": "wait=30, return=representation", "Accept": "image/*"},
        ),
        30,
    )

    assert response.status_code == 200
    assert [job["status"] for job in response.json()["jobs"]] == ["completed"] * 3
    assert response.headers["preference-applied"] == "wait=30"  # several results have no one representation


# --- A job that doesn't end in time, and preferences that don't apply ---------------------------


async def test_a_job_still_queued_after_the_wait_is_answered_202_where_to_look(server, stub_broker):
    response = await submit(server, "wait=1")  # no worker: the job stays queued

    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "queued"
    assert response.headers["location"] == f"/api/v1/jobs/{job['job_id']}"
    assert response.headers["retry-after"] == "1"
    assert response.headers["preference-applied"] == "wait=1"


@pytest.mark.parametrize(
    "prefer", ["handling=lenient", "wait=soon", "wait=0", "wait=-3", "respond-async", None]
)
async def test_a_submission_without_a_wait_is_answered_at_once(server, stub_broker, prefer):
    response = await submit(server, prefer)

    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert "preference-applied" not in response.headers
    assert {"prefer", "accept"} <= vary(response)


def test_without_the_server_in_front_the_view_answers_at_once(client, stub_broker):
    """A WSGI server (here Django's test client) can't wait without holding a thread: it doesn't."""
    response = client.post(
        "/api/v1/process/grayscale",
        {"image": io.BytesIO(PNG)},
        headers={"Prefer": "wait=30"},
    )
    assert response.status_code == 202 and "Preference-Applied" not in response


# --- Waiting holds no thread; limits and owners as everywhere -----------------------------------


async def test_more_waiting_submissions_than_request_threads_are_all_answered(
    server, stub_broker, stub_worker
):
    stub_worker.pause()  # the jobs wait in their queue until every submission waits on one
    submissions = [asyncio.create_task(submit(server, "wait=30")) for _ in range(THREADS * 2)]
    await until(lambda: len(waiting.EndListener.of_running_loop().waiters) == len(submissions), "all wait")
    health = await asyncio.wait_for(server.get("/health/live"), 20)
    assert health.status_code == 200  # no request thread is held by a wait

    stub_worker.resume()
    answers = await asyncio.wait_for(asyncio.gather(*submissions), 30)
    assert {(answer.status_code, answer.json()["status"]) for answer in answers} == {(200, "completed")}


async def test_a_waiting_submission_counts_once_against_the_submit_limit(
    server, stub_worker, settings, fresh_rate_limits
):
    settings.RATE_LIMIT_SUBMIT = "1/d"
    assert (await submit(server, "wait=30")).status_code == 200
    refused = await submit(server, "wait=30")
    assert refused.status_code == 429 and "preference-applied" not in refused.headers


async def test_a_waited_for_result_is_its_owners_alone(server, stub_worker, api_key):
    alice, mallory = await in_thread(api_key)("alice"), await in_thread(api_key)("mallory")
    response = await submit(server, "wait=30, return=representation", headers={"Accept": "image/*", **alice})
    job_id = response.headers["job-id"]

    assert (await server.get(f"/api/v1/download/{job_id}", headers=alice)).content == response.content
    assert (await server.get(f"/api/v1/download/{job_id}", headers=mallory)).status_code == 404
    assert (await server.get(f"/api/v1/jobs/{job_id}?wait=5", headers=mallory)).status_code == 404


async def test_a_job_deleted_during_the_wait_is_answered_as_it_was_accepted(server, stub_broker):
    submitting = asyncio.create_task(submit(server, "wait=30"))
    await until(lambda: waiting.EndListener.of_running_loop().waiters, "the submission waits")
    (job_id,) = waiting.EndListener.of_running_loop().waiters
    await until_someone_waits_on(job_id)
    await in_thread(Job.objects.filter(id=job_id).delete)()
    await in_thread(waiting.EndListener.of_running_loop().heard_end)(job_id)

    response = await asyncio.wait_for(submitting, 20)
    assert response.status_code == 202 and response.json()["job_id"] == job_id


# --- Downloads: whole files, exact bytes -------------------------------------------------------


async def test_a_result_larger_than_a_piece_downloads_whole(server, stub_worker):
    large = images.png_bytes(images.noise(400, 400))  # a PNG of noise: about 470 KiB, two pieces
    response = await asyncio.wait_for(
        server.post(
            "/api/v1/process/rotate",
            files=upload(large),
            data={"angle": "90"},
            headers={"Prefer": "wait=30"},
        ),
        30,
    )
    job = response.json()
    assert job["status"] == "completed", job

    download = await server.get(f"/api/v1/download/{job['job_id']}")
    assert len(download.content) > 256 * 1024
    expected = Image.open(io.BytesIO(large)).rotate(90, expand=True)
    assert Image.open(io.BytesIO(download.content)).tobytes() == expected.tobytes()


# --- The header, read as RFC 7240 says -------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "wait", "representation"),
    [
        (["wait=10"], 10, False),
        (["WAIT=10"], 10, False),
        (['wait="10"'], 10, False),
        (["wait=10;foo=bar, return=representation"], 10, True),
        (["return=minimal, wait=5"], 5, False),
        (["wait=5", "wait=50"], 5, False),  # the first of a preference counts
        (["wait=3600"], preferences.MAX_WAIT_SECONDS, False),  # honoured for as long as the server waits
        (["wait=1.5"], None, False),  # delta-seconds are whole
        (["wait"], None, False),
        ([""], None, False),
        (["return=representation"], None, True),
    ],
)
def test_preferences_are_read_as_the_rfc_says(values, wait, representation):
    assert preferences.parse(values) == preferences.Preferences(wait=wait, representation=representation)
