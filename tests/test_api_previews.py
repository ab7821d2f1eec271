"""GET /api/v1/preview/{id}?size=N: a completed result, smaller, for a page to show; made once, then kept."""

import io

import pytest
from django.utils import timezone
from PIL import Image

from processing import storage
from processing.imaging import admin_thumbnails
from processing.models import Job
from tests import images
from tests.uploads import png, submit

pytestmark = pytest.mark.django_db(transaction=True)


def completed(client, run_jobs, image=None, service="blur", **params) -> Job:
    job_id = submit(client, service, image=png(image=image or images.photo(1600, 900)), **params).json()[
        "job_id"
    ]
    run_jobs()
    return Job.objects.get(id=job_id)


def preview_of(client, job: Job, size: int) -> Image.Image:
    """The preview, from the URL the job's JSON gives."""
    url = client.get(f"/api/v1/jobs/{job.id}").json()["result"]["preview_url"]
    response = client.get(f"{url}?size={size}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "image/webp"
    assert response["Cache-Control"] == "private, max-age=86400"
    return Image.open(io.BytesIO(response.content))


def result_of(client, job: Job) -> Image.Image:
    return Image.open(io.BytesIO(b"".join(client.get(f"/api/v1/download/{job.id}").streaming_content)))


def test_a_preview_fits_its_size_keeps_the_ratio_and_looks_like_the_result(client, run_jobs):
    job = completed(client, run_jobs, image=images.photo(1600, 900), format="jpeg")
    result = result_of(client, job).convert("RGB")

    for size, expected in ((320, (320, 180)), (640, (640, 360)), (1280, (1280, 720))):
        preview = preview_of(client, job, size)
        assert (preview.format, preview.size) == ("WEBP", expected)
        assert images.ssim(preview.convert("RGB"), result.resize(expected, Image.Resampling.BOX)) >= 0.9


def test_a_preview_is_never_larger_than_the_result_and_is_kept_for_the_next_request(client, run_jobs):
    job = completed(client, run_jobs, image=images.photo(200, 100))
    assert preview_of(client, job, 640).size == (200, 100)

    key = storage.preview_key(job.output_key, 640)
    assert storage.default_storage.exists(key)
    storage.save_output(key, admin_thumbnails.thumbnail_bytes(images.solid(20, 10)))  # as if kept from before
    assert preview_of(client, job, 640).size == (20, 10)


def test_the_worker_keeps_the_largest_preview_of_a_result_too_large_to_decode_in_a_request(
    client, run_jobs, monkeypatch
):
    monkeypatch.setattr(admin_thumbnails, "MAX_LATER_PIXELS", 100_000)  # as a 12 MP result is to 4 MP
    job = completed(client, run_jobs)  # 640 x 360

    assert storage.default_storage.exists(storage.preview_key(job.output_key, 1280))
    assert preview_of(client, job, 320).size == (320, 180)  # made from the largest, not the result

    storage.delete_job_files(storage.preview_key(job.output_key, 1280))  # as for a job done before previews
    gone = client.get(f"/api/v1/preview/{job.id}?size=640")
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "no_preview")


def test_a_preview_keeps_transparency(client, run_jobs):
    job = completed(client, run_jobs, image=images.with_alpha(images.gradient(64, 48), alpha=100))
    preview = preview_of(client, job, 320)
    assert preview.mode == "RGBA" and preview.getpixel((10, 10))[3] == 100


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("report", 409, "no_image"),
        ("expired", 410, "expired"),
        ("another owner", 404, "not_found"),
        ("a size not offered", 422, None),
    ],
)
def test_what_has_no_preview_says_why(client, run_jobs, api_key, case, status, code):
    job = completed(client, run_jobs, service="analyze" if case == "report" else "blur")
    job_id = str(job.id)
    if case == "expired":
        Job.objects.filter(id=job_id).update(files_removed_at=timezone.now())
    headers = api_key("someone else") if case == "another owner" else {}
    size = 500 if case == "a size not offered" else 640

    answer = client.get(f"/api/v1/preview/{job_id}?size={size}", headers=headers)
    assert answer.status_code == status
    error = answer.json()["error"]
    if code:
        assert error["code"] == code
    else:
        assert "320, 640, 1280" in error["message"]


def test_a_job_not_yet_done_has_no_preview_yet(client, stub_broker):
    job_id = submit(client).json()["job_id"]  # no worker runs in this test: the job stays queued

    answer = client.get(f"/api/v1/preview/{job_id}?size=640")
    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "not_ready")
    assert answer.json()["error"]["job_status"] == "queued"


def test_deleting_a_jobs_files_deletes_its_previews(client, run_jobs):
    job = completed(client, run_jobs)
    preview_of(client, job, 320)
    storage.delete_job_files(*job.file_keys)
    assert not storage.default_storage.exists(storage.preview_key(job.output_key, 320))
