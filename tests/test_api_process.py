"""POST /api/v1/process/{service} (and /resize, /crop): what a client sees, in-process with a real worker."""

import hashlib
import io

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from processing.models import Job
from tests import images

pytestmark = pytest.mark.django_db(transaction=True)


def upload(client, service="grayscale", data: bytes | None = None, filename="photo.jpg", **params):
    payload = {k: str(v) for k, v in params.items()}
    if data is not None:
        payload["image"] = SimpleUploadedFile(filename, data)
    return client.post(f"/api/v1/process/{service}", payload)


def error_of(response) -> dict:
    assert response["Content-Type"] == "application/json"
    return response.json()["error"]


def download_image(client, job_id) -> Image.Image:
    response = client.get(f"/api/v1/download/{job_id}")
    assert response.status_code == 200
    return Image.open(io.BytesIO(b"".join(response.streaming_content)))


def test_it_answers_202_with_the_job_and_where_to_poll(client, stub_broker):
    response = upload(client, data=images.jpeg_bytes(images.gradient()), threads=4, runs=1)

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["service"] == "grayscale"
    assert body["parameters"]["threads"] == 4 and body["parameters"]["runs"] == 1
    assert body["request_id"] == response["X-Request-ID"]
    assert body["poll_url"] == f"/api/v1/status/{body['job_id']}"
    assert body["ws_url"] == f"/ws/jobs/{body['job_id']}/"
    assert stub_broker.queues["images"].qsize() == 1


def test_polling_reaches_completed_and_the_download_is_a_grayscale_jpeg(client, run_jobs):
    source = images.gradient(64, 48)
    job_id = upload(client, data=images.jpeg_bytes(source), threads=4, runs=2).json()["job_id"]
    run_jobs()

    status = client.get(f"/api/v1/status/{job_id}").json()
    assert status["status"] == "completed"
    assert status["download_url"] == f"/api/v1/download/{job_id}"

    result = download_image(client, job_id)
    assert result.format == "JPEG" and result.mode == "L" and result.size == (64, 48)
    expected = np.asarray(Image.open(io.BytesIO(images.jpeg_bytes(source))).convert("L"), dtype=float)
    assert np.abs(np.asarray(result, dtype=float) - expected).mean() < 3

    metrics = client.get(f"/api/v1/result/{job_id}").json()
    assert len(metrics["metrics"]["run_ms"]) == 2
    assert metrics["input"]["width"] == 64 and metrics["output"]["format"] == "jpeg"


def test_a_download_is_the_file_itself_with_its_type_and_name(client, run_jobs):
    job_id = upload(client, data=images.jpeg_bytes(images.gradient(32, 24))).json()["job_id"]
    run_jobs()

    response = client.get(f"/api/v1/download/{job_id}")

    assert response.status_code == 200 and "X-Accel-Redirect" not in response
    assert b"".join(response.streaming_content) == stored_result(job_id)
    assert response["Content-Type"] == "image/jpeg"
    assert response["Content-Disposition"] == f'attachment; filename="{job_id}.jpg"'


def test_behind_nginx_a_download_names_the_file_for_nginx_to_send_and_carries_none_of_it(
    client, run_jobs, settings
):
    job_id = upload(client, data=images.jpeg_bytes(images.gradient(32, 24))).json()["job_id"]
    run_jobs()
    settings.DOWNLOAD_ACCEL_PREFIX = "/_darkroom/media/"

    response = client.get(f"/api/v1/download/{job_id}")

    assert response.status_code == 200 and response.content == b""
    key = Job.objects.get(id=job_id).output_key
    assert response["X-Accel-Redirect"] == f"/_darkroom/media/{key}"
    assert response["Content-Type"] == "image/jpeg"
    assert response["Content-Disposition"] == f'attachment; filename="{job_id}.jpg"'


def test_behind_nginx_a_format_auto_download_still_varies_with_accept(client, run_jobs, settings):
    job_id = upload(client, data=images.jpeg_bytes(images.gradient(32, 24)), format="auto").json()["job_id"]
    run_jobs()
    settings.DOWNLOAD_ACCEL_PREFIX = "/_darkroom/media/"

    response = client.get(f"/api/v1/download/{job_id}", headers={"Accept": "image/webp"})

    assert response["X-Accel-Redirect"].endswith(".jpg") and response["Content-Type"] == "image/jpeg"
    assert "Accept" in response["Vary"]  # a cache must not give this answer to another Accept


def stored_result(job_id: str) -> bytes:
    with default_storage.open(Job.objects.get(id=job_id).output_key) as stored:
        return stored.read()


def test_a_client_request_id_is_kept_and_the_job_id_is_fresh(client, stub_broker):
    response = client.post(
        "/api/v1/process/blur",
        {"image": SimpleUploadedFile("a.png", images.png_bytes())},
        headers={"X-Request-ID": "trace-abc-123"},
    )
    body = response.json()
    assert response["X-Request-ID"] == "trace-abc-123"
    assert body["request_id"] == "trace-abc-123" and body["job_id"] != "trace-abc-123"


def test_without_a_client_request_id_the_status_url_works_with_the_request_id(client, stub_broker):
    body = upload(client, data=images.png_bytes()).json()
    assert client.get(f"/api/v1/status/{body['request_id']}").status_code == 200


def test_resize_and_crop_have_their_own_urls(client, run_jobs):
    png = images.png_bytes(images.gradient(80, 60))
    resized = client.post(
        "/api/v1/resize",
        {"image": SimpleUploadedFile("a.png", png), "width": 40, "fit": "fill", "height": 10},
    )
    cropped = client.post(
        "/api/v1/crop", {"image": SimpleUploadedFile("a.png", png), "x": 5, "y": 6, "width": 20, "height": 10}
    )
    assert resized.status_code == cropped.status_code == 202
    run_jobs()
    assert download_image(client, resized.json()["job_id"]).size == (40, 10)
    crop = download_image(client, cropped.json()["job_id"])
    assert crop.size == (20, 10)
    assert np.array_equal(np.asarray(crop), np.asarray(images.gradient(80, 60).crop((5, 6, 25, 16))))


def test_every_service_listed_completes_on_a_small_image(client, run_jobs):
    services = client.get("/api/v1/services").json()["services"]
    assert {s["name"] for s in services} >= {
        "grayscale",
        "sobel",
        "resize",
        "crop",
        "thumbnail",
        "blur",
        "sharpen",
        "rotate",
        "convert",
        "watermark",
        "analyze",
    }
    required = {
        "resize": {"width": 10},
        "crop": {"x": 0, "y": 0, "width": 5, "height": 5},
        "rotate": {"angle": 90},
        "convert": {"format": "webp"},
        "watermark": {"text": "©"},
    }
    job_ids = {}
    for service in services:
        response = upload(
            client, service["name"], images.png_bytes(images.gradient()), **required.get(service["name"], {})
        )
        assert response.status_code == 202, (service["name"], response.content)
        job_ids[service["name"]] = response.json()["job_id"]
    run_jobs()
    for name, job_id in job_ids.items():
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        assert job["status"] == "completed", (name, job["error"])
    report = client.get(f"/api/v1/jobs/{job_ids['analyze']}").json()["result"]["report"]
    assert report["width"] == 64 and report["height"] == 48


def test_outputs_carry_no_exif_or_gps_from_the_input(client, run_jobs):
    source = images.with_metadata_bytes("JPEG")
    assert Image.open(io.BytesIO(source)).getexif()  # the input has EXIF, GPS included
    job_id = upload(client, "blur", source).json()["job_id"]
    run_jobs()
    result = download_image(client, job_id)
    assert not result.getexif()
    assert "icc_profile" not in result.info and "comment" not in result.info


# --- Bad input: a 4xx before anything is queued, or a job that fails with a reason ---


@pytest.mark.parametrize(
    ("data", "filename", "status", "code"),
    [
        (b"", "empty.jpg", 400, "empty_image"),
        (b"just some text, not a picture\n" * 10, "notes.jpg", 415, "unsupported_image"),
        (images.eps_bytes(), "drawing.eps", 415, "unsupported_image"),
        (images.pdf_bytes(), "paper.pdf", 415, "unsupported_image"),
        (images.svg_bytes(), "logo.svg", 415, "unsupported_image"),
        (images.png_header_bytes(30000, 30000), "huge.png", 422, "image_too_large"),
    ],
    ids=["empty", "text-named-jpg", "eps", "pdf", "svg", "png-claiming-30000x30000"],
)
def test_it_rejects_a_bad_upload_before_queueing(client, stub_broker, data, filename, status, code):
    response = upload(client, data=data, filename=filename)
    assert response.status_code == status
    assert error_of(response)["code"] == code
    assert Job.objects.count() == 0
    assert stub_broker.queues.get("images") is None or stub_broker.queues["images"].qsize() == 0


# A request up to FILE_UPLOAD_MAX_MEMORY_SIZE holds its upload in memory, a larger one streams it to disk
# (gateway.http.uploads): either way the same job, the same stored bytes, the same limit.
HELD_IN_MEMORY, STREAMED_TO_DISK = 10 * 1024 * 1024, 0


@pytest.mark.parametrize("memory_size", [HELD_IN_MEMORY, STREAMED_TO_DISK], ids=["in-memory", "on-disk"])
def test_an_upload_is_stored_whole_and_hashed_whether_held_in_memory_or_on_disk(
    client, run_jobs, settings, memory_size
):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = memory_size
    data = images.jpeg_bytes(images.noise(300, 200))
    job_id = upload(client, data=data).json()["job_id"]
    job = Job.objects.get(id=job_id)

    with default_storage.open(job.input_key, "rb") as stored:
        assert stored.read() == data
    assert job.input_sha256 == hashlib.sha256(data).hexdigest()
    assert (job.input_width, job.input_height) == (300, 200)
    run_jobs()
    assert download_image(client, job_id).size == (300, 200)


@pytest.mark.parametrize("memory_size", [HELD_IN_MEMORY, STREAMED_TO_DISK], ids=["in-memory", "on-disk"])
def test_the_size_limit_holds_whether_held_in_memory_or_on_disk(client, stub_broker, settings, memory_size):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = memory_size
    settings.MAX_UPLOAD_BYTES = 1000
    response = upload(client, data=images.png_bytes(images.noise(100, 100)))
    assert response.status_code == 413
    assert error_of(response)["code"] == "upload_too_large"
    assert Job.objects.count() == 0


def test_a_missing_image_field_is_a_bad_request(client, stub_broker):
    response = client.post("/api/v1/process/grayscale", {"threads": "2"})
    assert response.status_code == 400
    assert error_of(response)["code"] == "missing_image"


def test_an_unknown_service_is_not_found(client, stub_broker):
    response = upload(client, "posterize", images.png_bytes())
    assert response.status_code == 404
    assert error_of(response)["code"] == "unknown_service"


@pytest.mark.parametrize(
    ("service", "params", "field"),
    [
        ("grayscale", {"threads": 0}, "threads"),
        ("grayscale", {"runs": 1000}, "runs"),
        ("grayscale", {"threads": "many"}, "threads"),
        ("blur", {"radius": -1}, "radius"),
        ("resize", {"width": 10**9}, "width"),
        ("blur", {"quality": 101}, "quality"),
        ("blur", {"format": "bmp"}, "format"),
        ("blur", {"colour": "red"}, "colour"),
        ("crop", {"x": 60, "y": 0, "width": 10, "height": 10}, None),  # outside a 64x48 image
    ],
)
def test_out_of_range_parameters_are_422_naming_the_field(client, stub_broker, service, params, field):
    response = upload(client, service, images.png_bytes(images.gradient(64, 48)), **params)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_parameters"
    if field:
        assert field in [problem["field"] for problem in error["fields"]]
    assert Job.objects.count() == 0


def test_a_truncated_jpeg_is_accepted_then_fails_with_a_reason(client, run_jobs):
    job_id = upload(client, data=images.truncated_jpeg_bytes()).json()["job_id"]
    run_jobs()
    job = client.get(f"/api/v1/jobs/{job_id}").json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "corrupt_image"
    assert job["error"]["message"]


def test_a_client_filename_never_becomes_a_path(client, stub_broker):
    job_id = upload(client, data=images.png_bytes(), filename="../../etc/passwd.png").json()["job_id"]
    job = Job.objects.get(id=job_id)
    assert job.input_key == f"uploads/{job_id}/input.png"


def test_unknown_jobs_are_404_on_every_read(client, db):
    for path in ("jobs", "status", "download", "result"):
        assert client.get(f"/api/v1/{path}/00000000-0000-0000-0000-000000000000").status_code == 404
        assert client.get(f"/api/v1/{path}/not-a-uuid").status_code == 404


def test_downloading_an_unfinished_job_is_a_conflict(client, stub_broker):
    job_id = upload(client, data=images.png_bytes()).json()["job_id"]
    response = client.get(f"/api/v1/download/{job_id}")
    assert response.status_code == 409
    assert error_of(response)["code"] == "not_ready"
