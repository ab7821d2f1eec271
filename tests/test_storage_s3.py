"""Files in S3: a job's input, output and admin thumbnails in the bucket, downloads by signed URL, the admin's
thumbnails, reused results and clean-up, against a real S3 server (SeaweedFS, bench/s3.py).

The requests go through Django's test client and the jobs through a real Dramatiq worker on the stub
broker; tests/test_storage_s3_live.py runs the whole stack as processes, outages included.
"""

import io
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from PIL import Image

from processing import storage
from processing.jobs import cleanup
from processing.models import Job
from tests import images
from tests.uploads import png, submit

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

ADMIN_JOBS = "/admin/processing/job/"


@pytest.fixture
def bucket(s3_server):
    """A bucket of each test's own: what is in it is what the test did."""
    return s3_server.new_bucket("storage")


@pytest.fixture(autouse=True)
def s3_storage(settings, s3_server, bucket):
    """The default storage is the bucket, configured as project/settings.py does from AWS_*."""
    env = s3_server.settings(bucket)
    options = {
        "bucket_name": env["AWS_STORAGE_BUCKET_NAME"],
        "endpoint_url": env["AWS_S3_ENDPOINT_URL"],
        "access_key": env["AWS_ACCESS_KEY_ID"],
        "secret_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_S3_REGION_NAME"],
        "querystring_expire": 600,
        "file_overwrite": True,
    }
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options},
    }


def job_keys(s3_server, bucket: str, job_id: str) -> list[str]:
    return [key for key in s3_server.keys(bucket) if job_id in key]


def create_job(client, service: str = "grayscale", seed: int = 0, **params) -> str:
    """A job from an image of its own (so that no result is reused unless a test means it to be)."""
    response = submit(client, service, image=png(image=images.noise(64, 48, seed=seed)), **params)
    assert response.status_code == 202, response.content
    return response.json()["job_id"]


def test_a_job_keeps_its_input_output_and_thumbnails_in_the_bucket(
    admin_client, client, run_jobs, s3_server, bucket
):
    job_id = create_job(client, seed=1)
    run_jobs()

    assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "completed"
    assert job_keys(s3_server, bucket, job_id) == [
        f"results/{job_id}/output.png",
        f"uploads/{job_id}/input.png",
    ]
    show_thumbnails(admin_client, job_id)  # made on their first view, and kept
    assert job_keys(s3_server, bucket, job_id) == [
        f"results/{job_id}/output.png",
        f"thumbnails/results/{job_id}/output.png.webp",
        f"thumbnails/uploads/{job_id}/input.png.webp",
        f"uploads/{job_id}/input.png",
    ]
    output = Image.open(io.BytesIO(s3_server.read(bucket, f"results/{job_id}/output.png")))
    assert (output.format, output.mode, output.size) == ("PNG", "L", (64, 48))


def test_a_download_redirects_to_a_signed_url_that_serves_the_result(client, run_jobs, s3_server, bucket):
    job_id = create_job(client, seed=2)
    run_jobs()

    response = client.get(f"/api/v1/download/{job_id}")

    assert response.status_code == 302
    signed = httpx.get(response["Location"])
    assert signed.status_code == 200
    assert signed.content == s3_server.read(bucket, f"results/{job_id}/output.png")
    unsigned = urlunsplit(urlsplit(response["Location"])._replace(query=""))
    assert httpx.get(unsigned).status_code == 403  # the bucket is private: the signature is the key


def test_a_download_from_the_bucket_redirects_even_behind_an_nginx_that_sends_local_files(
    client, run_jobs, settings
):
    """DOWNLOAD_ACCEL_PREFIX names files on local disk: nginx has no file to send for a bucket's key."""
    settings.DOWNLOAD_ACCEL_PREFIX = "/_darkroom/media/"
    job_id = create_job(client, seed=15)
    run_jobs()

    response = client.get(f"/api/v1/download/{job_id}")

    assert response.status_code == 302 and "X-Accel-Redirect" not in response
    assert httpx.get(response["Location"]).status_code == 200


def test_the_admin_shows_thumbnails_of_the_files_in_the_bucket(admin_client, client, run_jobs):
    job_id = create_job(client, "rotate", seed=3, angle="90")
    run_jobs()

    thumbnails = show_thumbnails(admin_client, job_id)
    sizes = {side: Image.open(io.BytesIO(data)).size for side, data in thumbnails.items()}
    assert sizes == {"input": (64, 48), "output": (48, 64)}
    assert show_thumbnails(admin_client, job_id) == thumbnails  # the kept ones


def show_thumbnails(admin_client, job_id: str) -> dict[str, bytes]:
    shown = {}
    for side in ("input", "output"):
        response = admin_client.get(f"{ADMIN_JOBS}{job_id}/thumbnail/{side}/")
        assert response.status_code == 200 and response["Content-Type"] == "image/webp"
        shown[side] = response.content
    return shown


def test_a_reused_result_is_copied_within_the_bucket(client, run_jobs, s3_server, bucket):
    first = create_job(client, seed=4)
    run_jobs()
    second = create_job(client, seed=4)  # the same owner, image, service and parameters

    assert client.get(f"/api/v1/jobs/{second}").json()["status"] == "completed"  # no worker involved
    copied = s3_server.read(bucket, f"results/{second}/output.png")
    assert copied == s3_server.read(bucket, f"results/{first}/output.png")


def test_deleting_a_job_removes_its_files_and_thumbnails_from_the_bucket(
    admin_client, client, run_jobs, s3_server, bucket
):
    job_id = create_job(client, seed=5)
    run_jobs()
    show_thumbnails(admin_client, job_id)
    assert len(job_keys(s3_server, bucket, job_id)) == 4

    Job.objects.filter(id=job_id).delete()

    assert job_keys(s3_server, bucket, job_id) == []


def test_cleanup_empties_the_bucket_of_expired_jobs_and_keeps_the_rest(
    client, run_jobs, s3_server, bucket, api_key, settings
):
    expired, kept = create_job(client, seed=6), create_job(client, seed=7)
    run_jobs()
    Job.objects.filter(id=expired).update(finished_at=timezone.now() - timedelta(days=30))
    settings.FILE_TTL_SECONDS = 7 * 24 * 3600
    staff = api_key("operator", staff=True)
    stats = client.get("/api/v1/files/stats", headers=staff).json()
    assert stats["expired"]["files"] == 2

    response = client.post("/api/v1/files/cleanup", headers=staff)

    assert response.status_code == 200 and response.json()["files_removed"] == 2
    assert job_keys(s3_server, bucket, expired) == []
    assert len(job_keys(s3_server, bucket, kept)) == 2  # input and output
    assert client.get(f"/api/v1/download/{expired}").status_code == 410
    assert client.get("/api/v1/files/stats", headers=staff).json()["expired"]["files"] == 0


def test_cleanup_finds_files_in_the_bucket_whose_job_is_gone(client, run_jobs, s3_server, bucket):
    """Object storage has no folders to test for: the orphans are found by listing the keys."""
    job_id = create_job(client, seed=8)
    run_jobs()
    orphan = default_storage.save("uploads/0b7f5a52-7c1e-4d55-9a6e-2f3c1d9e8a01/input.png", ContentFile(b"x"))

    removed = cleanup.remove_orphaned_files(now=timezone.now() + timedelta(hours=2))

    assert removed == 1
    assert orphan not in s3_server.keys(bucket)
    assert len(job_keys(s3_server, bucket, job_id)) == 2  # its job still exists


def test_a_worker_whose_output_write_fails_retries_and_completes(
    client, run_jobs, s3_server, bucket, monkeypatch
):
    """S3 goes away between reading the input and writing the output: the job is retried, not failed."""
    save_output = storage.save_output
    outages = []

    def s3_gone_for_the_first_output(key: str, data: bytes) -> str:
        if outages or not key.startswith("results/"):
            return save_output(key, data)
        outages.append(key)
        s3_server.stop()
        try:
            return save_output(key, data)  # against a server that is not there
        finally:
            s3_server.restart()  # back before the retry

    monkeypatch.setattr(storage, "save_output", s3_gone_for_the_first_output)
    job_id = create_job(client, seed=9)
    run_jobs()

    job = Job.objects.get(id=job_id)
    assert outages and (job.status, job.attempts) == (Job.COMPLETED, 2)
    assert f"results/{job_id}/output.png" in s3_server.keys(bucket)


def test_a_cleanup_with_s3_down_answers_503_and_removes_nothing(
    client, run_jobs, s3_server, bucket, api_key, settings
):
    expired = create_job(client, seed=10)
    run_jobs()
    Job.objects.filter(id=expired).update(finished_at=timezone.now() - timedelta(days=30))
    settings.FILE_TTL_SECONDS = 7 * 24 * 3600
    staff = api_key("operator", staff=True)
    s3_server.stop()
    try:
        response = client.post("/api/v1/files/cleanup", headers=staff)
    finally:
        s3_server.restart()

    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "storage_unavailable"
    assert int(response["Retry-After"]) > 0
    assert len(job_keys(s3_server, bucket, expired)) == 2  # nothing was marked removed: the next run does it
    assert client.post("/api/v1/files/cleanup", headers=staff).json()["files_removed"] == 2
