"""The full stack with its files in S3: uvicorn, Dramatiq workers, PostgreSQL, RabbitMQ, Redis and a
SeaweedFS S3 server of this module's own, which the outage tests stop, freeze and bring back."""

import io

import httpx
import psycopg
import pytest
from PIL import Image

from bench.s3 import SeaweedServer
from tests import images
from tests.services import require
from tests.stack import LiveStack

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A server of this module's own: stopping it disturbs no other test."""
    require("s3")
    with SeaweedServer(tmp_path_factory.mktemp("s3-outages")) as server:
        yield server


@pytest.fixture(scope="module")
def bucket(s3):
    return s3.new_bucket("live")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3, bucket):
    require("postgres", "rabbitmq", "redis")
    # Retries enough to outlast a restart of the S3 server, whatever the machine's speed.
    settings = {**s3.settings(bucket), "JOB_MAX_RETRIES": "30"}
    with LiveStack(tmp_path_factory.mktemp("stack-s3"), **settings) as live:
        live.start_server()
        yield live


@pytest.fixture(autouse=True)
def s3_running(s3):
    """Whatever a test did to the server, the next one finds it up."""
    yield
    if s3.process.poll() is None:
        s3.resume()
    else:
        s3.restart()


@pytest.fixture
def worker(stack):
    stack.start_worker("worker")
    yield
    stack.stop("worker")


def job_keys(s3, bucket: str, job_id: str) -> list[str]:
    return [key for key in s3.keys(bucket) if job_id in key]


def upload(stack, seed: int, timeout: float = 60) -> httpx.Response:
    """A grayscale job from an image of its own; the raw answer, whatever it is."""
    image = images.jpeg_bytes(images.noise(96, 64, seed=seed))
    with httpx.Client(base_url=stack.base_url, timeout=timeout) as client:
        return client.post("/api/v1/process/grayscale", files={"image": ("photo.jpg", image)})


EXPIRE_JOB = "UPDATE processing_job SET finished_at = now() - interval '30 days' WHERE id = %s"


def staff_headers(stack) -> dict:
    return {"X-API-Key": stack.manage("create_api_key", "operator", "--staff")}


def test_a_job_goes_through_the_bucket_and_downloads_by_signed_url(stack, worker, s3, bucket):
    job_id = stack.submit("grayscale", images.jpeg_bytes(images.noise(96, 64, seed=1)))["job_id"]
    assert stack.wait_for_status(job_id)["status"] == "completed"

    # The admin's thumbnails are made when it first shows them.
    assert job_keys(s3, bucket, job_id) == [f"results/{job_id}/output.jpg", f"uploads/{job_id}/input.jpg"]
    with stack.client() as client:
        download = client.get(f"/api/v1/download/{job_id}")
    assert download.status_code == 302
    signed = httpx.get(download.headers["Location"], timeout=30)
    assert signed.status_code == 200
    assert signed.content == s3.read(bucket, f"results/{job_id}/output.jpg")
    result = Image.open(io.BytesIO(signed.content))
    assert (result.format, result.mode, result.size) == ("JPEG", "L", (96, 64))
    assert not (stack.workdir / "media").exists()  # nothing went to the local disk


def test_file_stats_count_the_bucket_and_cleanup_empties_it(stack, worker, s3, bucket):
    job_id = stack.submit("grayscale", images.jpeg_bytes(images.noise(96, 64, seed=2)))["job_id"]
    assert stack.wait_for_status(job_id)["status"] == "completed"
    staff = staff_headers(stack)
    with psycopg.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:
        # Finished a month ago: past FILE_TTL_SECONDS (a day by default).
        conn.execute(EXPIRE_JOB, [job_id])

    with stack.client() as client:
        before = client.get("/api/v1/files/stats", headers=staff).json()
        cleanup = client.post("/api/v1/files/cleanup", headers=staff)
        after = client.get("/api/v1/files/stats", headers=staff).json()
        download = client.get(f"/api/v1/download/{job_id}")

    assert before["expired"]["files"] == 2 and before["expired"]["bytes"] > 0
    assert cleanup.status_code == 200 and cleanup.json()["files_removed"] == 2
    assert job_keys(s3, bucket, job_id) == []
    assert after["expired"] == {"files": 0, "bytes": 0}
    assert download.status_code == 410


def job_ids(stack) -> set[str]:
    with stack.client() as client:
        return {job["job_id"] for job in client.get("/api/v1/jobs?limit=100").json()["jobs"]}


def test_an_upload_while_s3_is_down_gets_a_503_and_leaves_no_job(stack, s3):
    jobs_before = job_ids(stack)
    s3.stop()

    response = upload(stack, seed=3)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "storage_unavailable"
    assert response.headers["Retry-After"]
    assert job_ids(stack) == jobs_before  # nothing half-made for a worker to trip on
    s3.restart()
    assert upload(stack, seed=3).status_code == 202  # the client's retry


def test_an_upload_while_s3_hangs_gets_a_503_instead_of_hanging(stack, s3):
    """A frozen server accepts connections and never answers: the storage's timeouts end the wait
    (with botocore's defaults this request would hang for minutes and the client give up first)."""
    s3.pause()

    response = upload(stack, seed=4, timeout=120)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "storage_unavailable"


def attempts(stack, job_id: str) -> int:
    """How many times a worker has claimed the job (0 while the gateway can't say: a database blip)."""
    with stack.client() as client:
        response = client.get(f"/api/v1/result/{job_id}")
    return response.json()["attempts"] if response.status_code == 200 else 0


def test_a_worker_that_cannot_read_the_input_retries_until_s3_is_back(stack, s3, bucket):
    job_id = stack.submit("grayscale", images.jpeg_bytes(images.noise(96, 64, seed=5)))["job_id"]
    s3.stop()  # the input is stored; now the worker can't fetch it
    stack.start_worker("patient-worker")
    try:
        # A second claim means the first attempt failed and was retried rather than failing the job.
        stack.wait_until(lambda: attempts(stack, job_id) >= 2, timeout=120, what="a retry")
        assert stack.job(job_id)["status"] == "processing"
        s3.restart()

        job = stack.wait_for_status(job_id, timeout=180)
    finally:
        stack.stop("patient-worker")

    assert job["status"] == "completed", job["error"]
    assert f"uploads/{job_id}/input.jpg" in s3.keys(bucket)  # never lost
    assert f"results/{job_id}/output.jpg" in s3.keys(bucket)
