"""HEIC and AVIF in, AVIF out, format=auto by the Accept header (processing.imaging.formats decides), and
the placeholder of each result. JPEG XL in and out: tests/test_jpeg_xl.py."""

import base64
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta

import blurhash
import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import RequestFactory
from django.utils import timezone
from PIL import ExifTags, Image, ImageFilter

from gateway.http.negotiation import accepted_image_types
from processing.imaging import formats, placeholders
from processing.imaging.codecs import encode_image, load_image, probe
from processing.imaging.formats import ResultFormats, default_output_format
from processing.imaging.operations.base import OutputOptions
from processing.models import Job
from tests import images
from tests.uploads import submit

# Only the tests that go through the API and the worker; the format decisions are pure.
through_the_api = pytest.mark.django_db(transaction=True)

LIMIT = 50_000_000
# What Chrome sends for an image, and for a page (a form's POST).
CHROME_IMAGE_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
CHROME_PAGE_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8"
)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def downloaded(client, job_id: str, accept: str):
    response = client.get(f"/api/v1/download/{job_id}", headers={"Accept": accept})
    assert response.status_code == 200
    return response, decoded(b"".join(response.streaming_content))


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data)


# --- HEIC and AVIF in ----------------------------------------------------------------


def iphone_heic(orientation: int = 6) -> bytes:
    """A HEIC as a phone stores a portrait shot: landscape pixels, turned by its orientation; with GPS."""
    exif = images.camera_exif()
    exif[ExifTags.Base.Orientation] = orientation
    return images.encode(images.marked(40, 20), "HEIF", exif=exif.tobytes(), quality=95)


def test_a_heic_photo_is_probed_and_decoded_upright(tmp_path):
    path = tmp_path / "photo.heic"
    path.write_bytes(iphone_heic(orientation=6))

    info = probe(path, LIMIT)
    image, _ = load_image(path, LIMIT)

    assert (info.format, info.mime_type, info.extension) == ("HEIF", "image/heic", "heic")
    assert (info.width, info.height) == (20, 40) == image.size
    # Turned a quarter clockwise: the red corner is now top right.
    assert image.getpixel((17, 2))[0] > 200 and image.getpixel((2, 2))[1] > 200


@through_the_api
def test_a_heic_upload_becomes_a_jpeg_without_its_gps(client, run_jobs):
    job_id = submit(client, "blur", image=upload("IMG_0001.HEIC", iphone_heic())).json()["job_id"]
    run_jobs()

    job = Job.objects.get(id=job_id)
    assert (job.status, job.input_format, job.output_format) == ("completed", "heif", "jpeg")
    _, result = downloaded(client, job_id, "*/*")
    assert result.format == "JPEG" and result.size == (20, 40)
    assert not result.getexif()
    assert default_output_format("HEIF") == "jpeg"


@through_the_api
def test_an_avif_upload_is_processed_and_stays_avif(client, run_jobs):
    data = images.encode(images.photo(64, 48), "AVIF", quality=90)
    job_id = submit(client, "grayscale", image=upload("photo.avif", data)).json()["job_id"]
    run_jobs()

    job = Job.objects.get(id=job_id)
    assert (job.status, job.input_format, job.output_format) == ("completed", "avif", "avif")
    _, result = downloaded(client, job_id, "image/avif")
    assert result.format == "AVIF" and result.size == (64, 48)


# --- AVIF out ------------------------------------------------------------------------


def test_avif_output_is_under_half_the_jpeg_at_the_same_quality_and_as_alike():
    # Softened: on sensor noise AVIF spends more bytes than JPEG (`python -m bench.formats`).
    photo = images.photo(640, 480, seed=3).filter(ImageFilter.GaussianBlur(1.5))
    jpeg, avif = encode_image(photo, "jpeg", 85), encode_image(photo, "avif", 85)

    assert len(avif) < 0.5 * len(jpeg)
    assert images.ssim(photo, decoded(avif)) >= images.ssim(photo, decoded(jpeg)) - 0.01


# --- format=auto ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "accept, named, negotiated",
    [
        (CHROME_IMAGE_ACCEPT, ("avif", "webp"), "avif"),
        (CHROME_PAGE_ACCEPT, ("avif", "webp"), "avif"),
        ("image/webp,*/*", ("webp",), "webp"),
        ("image/webp, image/avif", ("avif", "webp"), "avif"),
        ("image/avif;q=0, image/webp;q=0.5", ("webp",), "webp"),
        # Safari 17 names all three: JPEG XL first (formats.MODERN_FORMATS says why).
        ("image/webp,image/avif,image/jxl,image/*;q=0.8", ("jxl", "avif", "webp"), "jxl"),
        ("image/jxl;q=0, image/avif", ("avif",), "avif"),
        ("*/*", (), ""),
        ("image/*", (), ""),
        ("application/json", (), ""),
    ],
)
def test_only_formats_the_accept_header_names_count(accept, named, negotiated):
    accepted = accepted_image_types(RequestFactory().get("/", headers={"Accept": accept}))

    assert tuple(name for name in formats.MODERN_FORMATS if name in accepted) == named
    assert formats.negotiated_format("auto", accepted) == negotiated


def transparent_palette() -> Image.Image:
    image = Image.new("P", (4, 4))
    image.info["transparency"] = 0
    return image


CHROME = {"avif", "webp", "apng", "svg+xml", "*"}


@pytest.mark.parametrize(
    "accepted, requested, image, input_format, expected",
    [
        # format=auto: the best modern format named, with a JPEG or PNG fallback by content.
        (CHROME, "auto", Image.new("RGB", (4, 4)), "JPEG", ResultFormats("avif", fallback="jpeg")),
        (CHROME, "auto", Image.new("RGBA", (4, 4)), "PNG", ResultFormats("avif", fallback="png")),
        (CHROME, "auto", Image.new("L", (4, 4)), "JPEG", ResultFormats("avif", fallback="jpeg")),
        ({"webp"}, "auto", Image.new("LA", (4, 4)), "PNG", ResultFormats("webp", fallback="png")),
        ({"webp"}, "auto", transparent_palette(), "GIF", ResultFormats("webp", fallback="png")),
        # format=auto with nothing modern named: JPEG or PNG by content, and no fallback.
        ({"*"}, "auto", Image.new("RGB", (4, 4)), "WEBP", ResultFormats("jpeg")),
        (set(), "auto", Image.new("RGBA", (4, 4)), "JPEG", ResultFormats("png")),
        ({"png", "jpeg"}, "auto", Image.new("L", (4, 4)), "PNG", ResultFormats("jpeg")),
        # A format asked for is the format made, whatever the client accepts.
        (CHROME, "png", Image.new("RGB", (4, 4)), "JPEG", ResultFormats("png")),
        (set(), "avif", Image.new("RGBA", (4, 4)), "PNG", ResultFormats("avif")),
        (CHROME, "jpeg", Image.new("RGBA", (4, 4)), "PNG", ResultFormats("jpeg")),
        # None asked for: the input's own format, or the default for it.
        (CHROME, None, Image.new("RGB", (4, 4)), "JPEG", ResultFormats("jpeg")),
        (CHROME, None, Image.new("RGBA", (4, 4)), "WEBP", ResultFormats("webp")),
        (CHROME, None, Image.new("RGB", (4, 4)), "HEIF", ResultFormats("jpeg")),
        (set(), None, transparent_palette(), "GIF", ResultFormats("png")),
    ],
)
def test_the_result_format_and_its_fallback(accepted, requested, image, input_format, expected):
    negotiated = formats.negotiated_format(requested, accepted)

    assert formats.result_formats(requested, negotiated, input_format, image) == expected


@dataclass
class Stored:
    output_format: str
    fallback_format: str = ""
    output_key: str = "result"
    fallback_key: str = ""

    def __post_init__(self):
        self.fallback_key = "fallback" if self.fallback_format else ""


@pytest.mark.parametrize(
    "stored, accepted, served",
    [
        (Stored("avif", "jpeg"), CHROME, ("result", "avif")),
        (Stored("jxl", "jpeg"), {"jxl", "avif", "webp"}, ("result", "jxl")),
        (Stored("jxl", "png"), CHROME, ("fallback", "png")),
        (Stored("avif", "jpeg"), {"webp"}, ("fallback", "jpeg")),
        (Stored("avif", "jpeg"), {"*"}, ("fallback", "jpeg")),
        (Stored("webp", "png"), {"webp"}, ("result", "webp")),
        (Stored("webp", "png"), {"avif", "png"}, ("fallback", "png")),
        (Stored("jpeg"), {"avif"}, ("result", "jpeg")),
        (Stored("png"), set(), ("result", "png")),
    ],
)
def test_a_download_gets_the_result_only_when_the_client_names_its_format(stored, accepted, served):
    assert formats.download_for(stored, accepted) == served


@pytest.mark.parametrize(
    "input_format, output_format",
    [
        ("JPEG", "jpeg"),
        ("PNG", "png"),
        ("WEBP", "webp"),
        ("AVIF", "avif"),
        ("JXL", "jxl"),
        ("HEIF", "jpeg"),
        ("GIF", "png"),
        ("BMP", "png"),
        ("TIFF", "png"),
    ],
)
def test_the_default_output_format_follows_the_input(input_format, output_format):
    assert default_output_format(input_format) == output_format


@pytest.mark.parametrize(
    "format_name, mime_type, extension",
    [
        ("jpeg", "image/jpeg", "jpg"),
        ("png", "image/png", "png"),
        ("webp", "image/webp", "webp"),
        ("avif", "image/avif", "avif"),
        ("jxl", "image/jxl", "jxl"),
        ("HEIF", "image/heic", "heic"),
        ("TIFF", "image/tiff", "tiff"),
    ],
)
def test_each_format_has_its_mime_type_and_extension(format_name, mime_type, extension):
    assert (formats.mime_type_for(format_name), formats.extension_for(format_name)) == (mime_type, extension)


def test_the_format_parameter_offers_every_output_format_and_auto():
    offered = OutputOptions.model_json_schema()["properties"]["format"]["anyOf"][0]["enum"]
    assert offered == [*formats.OUTPUT_FORMATS, formats.AUTO]


@through_the_api
def test_auto_makes_avif_for_chrome_with_a_jpeg_for_downloads_that_do_not_name_avif(client, run_jobs):
    photo = upload("photo.jpg", images.jpeg_bytes(images.photo(96, 64)))
    response = submit(client, "grayscale", headers={"Accept": CHROME_PAGE_ACCEPT}, image=photo, format="auto")
    job_id = response.json()["job_id"]
    run_jobs()

    result = client.get(f"/api/v1/jobs/{job_id}").json()["result"]
    assert (result["format"], result["fallback_format"]) == ("avif", "jpeg")
    assert result["content_type"] == "image/avif"

    as_image, avif = downloaded(client, job_id, CHROME_IMAGE_ACCEPT)
    assert as_image["Content-Type"] == "image/avif" and avif.format == "AVIF"
    assert "Accept" in as_image["Vary"]
    as_anything, jpeg = downloaded(client, job_id, "*/*")
    assert as_anything["Content-Type"] == "image/jpeg" and jpeg.format == "JPEG"
    assert "Accept" in as_anything["Vary"]
    assert jpeg.size == avif.size == (96, 64)


@through_the_api
def test_auto_makes_a_jpeg_for_a_client_that_names_no_image_format(client, run_jobs):
    job_id = submit(client, "blur", headers={"Accept": "*/*"}, format="auto").json()["job_id"]
    run_jobs()

    job = Job.objects.get(id=job_id)
    assert (job.output_format, job.fallback_key) == ("jpeg", "")
    response, result = downloaded(client, job_id, CHROME_IMAGE_ACCEPT)
    assert result.format == "JPEG" and "Accept" in response["Vary"]


@through_the_api
def test_auto_keeps_transparency_in_png_or_webp(client, run_jobs):
    transparent = upload("logo.png", images.png_bytes(images.with_alpha(images.gradient(), alpha=0)))
    webp_client = {"Accept": "image/webp,*/*"}
    job_id = submit(client, "blur", headers=webp_client, image=transparent, format="auto").json()["job_id"]
    run_jobs()

    job = Job.objects.get(id=job_id)
    assert (job.output_format, job.fallback_format) == ("webp", "png")
    assert downloaded(client, job_id, "image/webp")[1].mode == "RGBA"
    assert downloaded(client, job_id, "image/png")[1].mode == "RGBA"


@through_the_api
def test_a_result_is_reused_only_for_a_client_that_named_the_same_formats(client, run_jobs, settings):
    settings.RESULT_REUSE = True
    photo = images.jpeg_bytes(images.photo(64, 48))

    def auto_job(accept: str) -> Job:
        job_id = submit(
            client, "blur", headers={"Accept": accept}, image=upload("p.jpg", photo), format="auto"
        ).json()["job_id"]
        run_jobs()
        return Job.objects.get(id=job_id)

    first, same, other = auto_job(CHROME_IMAGE_ACCEPT), auto_job(CHROME_IMAGE_ACCEPT), auto_job("*/*")

    assert same.metrics.get("reused_job_id") == str(first.id)
    assert same.fallback_key and default_storage.exists(same.fallback_key)
    assert "reused_job_id" not in other.metrics and other.output_format == "jpeg"


@through_the_api
def test_cleanup_removes_the_fallback_with_the_result(client, run_jobs, settings):
    settings.FILE_TTL_SECONDS = 60
    job_id = submit(client, "blur", headers={"Accept": "image/avif"}, format="auto").json()["job_id"]
    run_jobs()
    Job.objects.filter(id=job_id).update(finished_at=timezone.now() - timedelta(minutes=5))
    job = Job.objects.get(id=job_id)
    assert default_storage.exists(job.fallback_key)

    call_command("cleanup_files")

    assert not default_storage.exists(job.fallback_key) and not default_storage.exists(job.output_key)


# --- placeholders --------------------------------------------------------------------


def red_left_blue_right(width: int = 1920, height: int = 1080) -> Image.Image:
    image = Image.new("RGB", (width, height), (220, 20, 20))
    image.paste((20, 20, 220), (width // 2, 0, width, height))
    return image


def test_the_blurhash_shows_the_result_in_the_large():
    placeholder = placeholders.make(red_left_blue_right())

    assert blurhash.is_valid_blurhash(placeholder.blurhash) and len(placeholder.blurhash) == 28
    seen = np.asarray(blurhash.decode(placeholder.blurhash, 32, 18), dtype=float)
    left, right = seen[9, 2], seen[9, 29]
    assert left[0] > 150 > left[2] and right[2] > 150 > right[0]


def test_the_preview_is_a_data_url_of_at_most_a_kilobyte_that_looks_like_the_result():
    preview = placeholders.make(red_left_blue_right()).preview

    assert preview.startswith("data:image/webp;base64,") and len(preview) <= 1024
    tiny = decoded(base64.b64decode(preview.split(",", 1)[1])).convert("RGB")
    assert max(tiny.size) <= placeholders.PREVIEW_EDGE and tiny.width > tiny.height
    assert tiny.getpixel((1, tiny.height // 2))[0] > 150 and tiny.getpixel((tiny.width - 2, 1))[2] > 150


def test_a_noisy_image_still_gets_a_preview_under_a_kilobyte():
    assert len(placeholders.make(images.noise(800, 800)).preview) <= 1024


@through_the_api
def test_a_completed_image_job_carries_its_placeholder_and_a_report_none(client, run_jobs):
    image_job = submit(client, "blur").json()["job_id"]
    report_job = submit(client, "analyze").json()["job_id"]
    run_jobs()

    placeholder = client.get(f"/api/v1/jobs/{image_job}").json()["result"]["placeholder"]
    assert blurhash.is_valid_blurhash(placeholder["blurhash"])
    assert placeholder["preview"].startswith("data:image/webp;base64,")
    assert client.get(f"/api/v1/jobs/{report_job}").json()["result"]["placeholder"] is None


def test_the_avif_speed_is_a_setting_the_worker_applies_within_its_bounds():
    speed_at_start = (
        "import django; django.setup(); from processing.imaging import codecs; "
        "print(codecs.AVIF_OPTIONS['speed'])"
    )
    applied = subprocess.run(
        [sys.executable, "-c", speed_at_start],
        env={**os.environ, "AVIF_SPEED": "9", "DJANGO_SETTINGS_MODULE": "project.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert applied.stdout.strip() == "9", applied.stderr[-2000:]
    # Out of bounds (AVIF_SPEED=11) is refused at start: tests/test_settings.py.
