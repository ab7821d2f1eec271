"""JPEG XL in and out: format=jxl, format=auto for clients that name image/jxl, JXL uploads read from
their header, and a JPEG recompressed losslessly that decodes back to the very same file."""

import io
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pillow_jxl
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, ImageFilter
from pillow_jxl import JpegXLImagePlugin

from processing import storage
from processing.imaging import admin_thumbnails, codecs, jxl, recipes
from processing.imaging.animation import STILL
from processing.imaging.codecs import encode_image, load_image, probe
from processing.imaging.operations import get_operation
from processing.models import Job
from processing.worker import actors, admission
from tests import images
from tests.uploads import submit

through_the_api = pytest.mark.django_db(transaction=True)

LIMIT = 50_000_000
# What Safari 17 sends for an image: it shows JPEG XL, and names AVIF and WebP too.
SAFARI_IMAGE_ACCEPT = (
    "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,"
    "image/svg+xml,image/*;q=0.8,*/*;q=0.5"
)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data)


def download(client, job_id: str, accept: str = "*/*"):
    response = client.get(f"/api/v1/download/{job_id}", headers={"Accept": accept})
    assert response.status_code == 200
    return response, b"".join(response.streaming_content)


@pytest.fixture
def upload_path(tmp_path):
    """Write bytes to a file and return its path, as the gateway's temporary upload would be."""

    def write(data: bytes):
        path = tmp_path / "upload"
        path.write_bytes(data)
        return path

    return write


def jxl_bytes(image: Image.Image, **params) -> bytes:
    return images.encode(image, "JXL", **params)


def header_claiming(width: int, height: int) -> bytes:
    """A bare codestream's signature and a SizeHeader of any size (30-bit sides), then nothing: a
    file whose header says one thing and which holds no image at all."""
    fields = [(0, 1), (3, 2), (height - 1, 30), (0, 3), (3, 2), (width - 1, 30), (1, 1)]
    bits = "".join(format(value, f"0{count}b")[::-1] for value, count in fields)  # least significant first
    bits += "0" * (-len(bits) % 8)
    return jxl.CODESTREAM_SIGNATURE + bytes(int(bits[i : i + 8][::-1], 2) for i in range(0, len(bits), 8))


def reconstructed_jpeg(data: bytes) -> bytes:
    """The JPEG a JPEG XL decodes back to (the plugin's own reconstruction); fails for a JPEG XL of pixels."""
    is_jpeg, _, jpeg, *_ = pillow_jxl.Decoder()(data)
    assert is_jpeg, "the JPEG XL holds pixels, not a recompressed JPEG"
    return bytes(jpeg)


# --- JPEG XL out ----------------------------------------------------------------------------


@through_the_api
def test_format_jxl_makes_a_jpeg_xl_of_the_size_asked_for(client, run_jobs):
    photo = upload("photo.jpg", images.jpeg_bytes(images.photo(96, 64)))
    job_id = client.post(
        "/api/v1/resize", {"image": photo, "width": 48, "format": "jxl", "quality": 80}
    ).json()["job_id"]
    run_jobs()

    result = client.get(f"/api/v1/jobs/{job_id}").json()["result"]
    assert (result["format"], result["content_type"], result["width"], result["height"]) == (
        "jxl",
        "image/jxl",
        48,
        32,
    )
    response, data = download(client, job_id)
    made = decoded(data)
    assert response["Content-Type"] == "image/jxl" and ".jxl" in response["Content-Disposition"]
    assert made.format == "JXL" and made.size == (48, 32)
    assert images.ssim(images.photo(96, 64).resize((48, 32), Image.Resampling.LANCZOS), made) > 0.8


def test_a_jpeg_xl_is_about_half_the_jpeg_at_the_same_quality_and_as_alike():
    # Softened, as photos mostly are: on sensor noise it is 0.7 of the JPEG (`python -m bench.formats`).
    photo = images.photo(640, 480).filter(ImageFilter.GaussianBlur(1.5))
    jpeg, jpeg_xl = encode_image(photo, "jpeg", 85), encode_image(photo, "jxl", 85)

    assert len(jpeg_xl) < 0.6 * len(jpeg)
    assert images.ssim(photo, decoded(jpeg_xl)) >= images.ssim(photo, decoded(jpeg)) - 0.01


def test_a_jpeg_xl_at_quality_100_is_lossless():
    noise = images.with_alpha(images.noise(32, 24), alpha=200)
    assert np.array_equal(np.asarray(decoded(encode_image(noise, "jxl", 100))), np.asarray(noise))


def test_a_jpeg_xl_keeps_transparency_and_grayscale_and_carries_no_metadata():
    transparent = images.with_alpha(images.gradient(), alpha=0)
    transparent.paste((0, 0, 255, 255), (0, 0, 8, 8))
    made = decoded(encode_image(transparent, "jxl", 90))
    assert made.mode == "RGBA" and made.getpixel((20, 20))[3] == 0 and made.getpixel((2, 2))[3] == 255
    assert decoded(encode_image(images.gradient(mode="L"), "jxl", 90)).mode == "L"

    tagged = images.gradient()
    tagged.info.update(exif=images.camera_exif().tobytes(), xmp=images.XMP)
    data = encode_image(tagged, "jxl", 85)
    assert b"Leaky" not in data and b"rdf:" not in data and not decoded(data).getexif()


# --- format=auto ----------------------------------------------------------------------------


@through_the_api
def test_auto_makes_jpeg_xl_for_a_client_that_names_it_and_a_jpeg_for_downloads_that_do_not(client, run_jobs):
    photo = upload("photo.jpg", images.jpeg_bytes(images.photo(96, 64)))
    response = submit(client, "blur", headers={"Accept": SAFARI_IMAGE_ACCEPT}, image=photo, format="auto")
    job_id = response.json()["job_id"]
    run_jobs()

    job = Job.objects.get(id=job_id)
    assert (job.negotiated_format, job.output_format, job.fallback_format) == ("jxl", "jxl", "jpeg")
    as_safari, data = download(client, job_id, SAFARI_IMAGE_ACCEPT)
    assert as_safari["Content-Type"] == "image/jxl" and decoded(data).format == "JXL"
    assert "Accept" in as_safari["Vary"]
    as_chrome, data = download(client, job_id, "image/avif,image/webp,image/apng,image/*,*/*;q=0.8")
    assert as_chrome["Content-Type"] == "image/jpeg" and decoded(data).size == (96, 64)


# --- JPEG XL in -----------------------------------------------------------------------------


def test_a_jpeg_xl_upload_is_identified_from_its_header_without_being_decoded(upload_path, monkeypatch):
    path = upload_path(jxl_bytes(images.gradient(64, 48), quality=90))

    def decoding(self):
        raise AssertionError("the whole image was decoded")

    with monkeypatch.context() as patched:
        patched.setattr(JpegXLImagePlugin.JXLImageFile, "_open", decoding)
        info = probe(path, LIMIT)
    assert (info.format, info.width, info.height, info.mime_type, info.extension) == (
        "JXL",
        64,
        48,
        "image/jxl",
        "jxl",
    )
    image, _ = load_image(path, LIMIT)
    assert image.size == (64, 48) and image.mode == "RGB"


@pytest.mark.parametrize(
    "width, height", [(1, 1), (8, 8), (64, 48), (1200, 1000), (1920, 1080), (3, 70_000), (70_001, 5)]
)
def test_the_header_gives_every_size_as_the_encoder_wrote_it(width, height):
    # Small multiples of 8, aspect ratios (1200 x 1000 is 6:5) and sides of every bit width.
    data = jxl_bytes(Image.new("L", (width, height)), quality=50, effort=1)
    assert jxl.read_header(io.BytesIO(data)) == jxl.Header(width, height, 1)
    assert jxl.read_header(
        io.BytesIO(jxl_bytes(images.gradient(), quality=50, use_container=True))
    ) == jxl.Header(64, 48, 1)


@through_the_api
def test_a_jpeg_xl_upload_is_processed_and_stays_jpeg_xl(client, run_jobs):
    data = jxl_bytes(images.photo(64, 48), quality=90)
    job_id = submit(client, "grayscale", image=upload("photo.jxl", data)).json()["job_id"]
    run_jobs()

    job = Job.objects.get(id=job_id)
    assert (job.status, job.input_format, job.output_format) == ("completed", "jxl", "jxl")
    made = decoded(download(client, job_id)[1])
    assert made.format == "JXL" and made.size == (64, 48) and made.mode == "L"


@through_the_api
@pytest.mark.parametrize(
    "data, status, code",
    [
        (header_claiming(60_000, 60_000), 422, "image_too_large"),
        (jxl.CODESTREAM_SIGNATURE + b"\x00", 422, "corrupt_image"),
    ],
    ids=["3.6-gigapixel header", "truncated header"],
)
def test_a_jpeg_xl_is_refused_from_its_header_before_a_pixel_is_decoded(
    client, stub_broker, data, status, code
):
    response = submit(client, "grayscale", image=upload("bomb.jxl", data))

    assert response.status_code == status and response.json()["error"]["code"] == code
    assert not Job.objects.exists()


def test_a_jpeg_xl_over_the_pixel_limit_is_refused_by_the_worker_before_it_decodes(upload_path):
    with pytest.raises(codecs.ImageTooLarge):
        load_image(upload_path(header_claiming(20_000, 20_000)), LIMIT)


def test_the_admin_makes_a_small_jpeg_xl_s_thumbnail_and_never_decodes_a_large_one(monkeypatch):
    small = storage.save_output("inputs/small.jxl", jxl_bytes(images.photo(320, 240), quality=80))
    assert decoded(admin_thumbnails.make_later(small, LIMIT, None)).size == (160, 120)

    large = storage.save_output("inputs/large.jxl", header_claiming(4000, 3000))
    monkeypatch.setattr(JpegXLImagePlugin.JXLImageFile, "_open", lambda self: pytest.fail("decoded"))
    assert admin_thumbnails.make_later(large, LIMIT, None) is None  # the worker stores those


def test_a_jpeg_xl_is_shown_upright_by_its_codestream_orientation_never_again_by_its_exif(upload_path):
    # The EXIF box says "turn clockwise"; the codestream does not: viewers show the pixels as stored.
    exif = Image.Exif()
    exif[274] = images.ROTATE_CLOCKWISE
    pixels = upload_path(jxl_bytes(images.marked(), quality=95, exif=exif.tobytes()))
    assert probe(pixels, LIMIT).width == 40
    image, _ = load_image(pixels, LIMIT)
    assert image.size == (40, 20) and image.getpixel((2, 2))[0] > 200  # the red corner top left

    # A JPEG recompressed keeps its EXIF orientation, which libjxl copies into the codestream.
    recompressed = upload_path(jxl.recompress_jpeg(images.oriented_jpeg_bytes()))
    assert (probe(recompressed, LIMIT).width, probe(recompressed, LIMIT).height) == (20, 40)
    image, _ = load_image(recompressed, LIMIT)
    assert image.size == (20, 40) and image.getpixel((17, 2))[0] > 200  # turned: top right


# --- Lossless -------------------------------------------------------------------------------


@through_the_api
@pytest.mark.parametrize(
    "jpeg",
    [
        images.with_metadata_bytes("JPEG", images.photo(320, 240)),
        images.encode(images.photo(320, 240).convert("L"), "JPEG", quality=80, progressive=True),
    ],
    ids=["baseline with EXIF, GPS and XMP", "progressive grayscale"],
)
def test_a_jpeg_made_lossless_jpeg_xl_decodes_back_to_the_very_same_jpeg(client, run_jobs, jpeg):
    job_id = client.post(
        "/api/v1/convert", {"image": upload("photo.jpg", jpeg), "format": "jxl", "lossless": "true"}
    ).json()["job_id"]
    run_jobs()

    job = Job.objects.get(id=job_id)
    assert (job.status, job.output_format, job.output_width, job.output_height) == (
        "completed",
        "jxl",
        320,
        240,
    )
    data = download(client, job_id)[1]
    assert reconstructed_jpeg(data) == jpeg
    assert len(data) < len(jpeg)


@through_the_api
def test_lossless_jpeg_xl_of_a_png_is_its_pixels_exactly(client, run_jobs):
    noise = images.noise(48, 32)
    job_id = submit(
        client, "convert", image=upload("noise.png", images.png_bytes(noise)), format="jxl", lossless="true"
    ).json()["job_id"]
    run_jobs()

    made = decoded(download(client, job_id)[1])
    assert made.format == "JXL" and np.array_equal(np.asarray(made), np.asarray(noise))


@through_the_api
def test_a_jpeg_libjxl_cannot_recompress_fails_saying_so(client, run_jobs):
    cmyk = images.encode(images.photo(32, 32).convert("CMYK"), "JPEG", quality=90)
    job_id = submit(client, "convert", image=upload("print.jpg", cmyk), format="jxl", lossless="true").json()[
        "job_id"
    ]
    run_jobs()

    job = client.get(f"/api/v1/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["error"]["code"] == "not_recompressible"
    assert "without lossless" in job["error"]["message"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params, field_message",
    [
        ({"format": "png", "lossless": "true"}, "lossless is for format=jxl"),
        ({"format": "auto", "lossless": "true"}, "lossless is for format=jxl"),
        ({"format": "jxl", "lossless": "true", "max_bytes": "5000"}, "max_bytes"),
    ],
)
def test_lossless_is_for_format_jxl_without_a_byte_budget(client, stub_broker, params, field_message):
    response = submit(client, "convert", **params)

    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_parameters"
    assert field_message in response.json()["error"]["message"]


def test_a_lossless_job_counts_the_recompression_against_the_machines_pixel_budget():
    convert = get_operation("convert")
    job = SimpleNamespace(input_width=4000, input_height=3000)
    lossy = actors.pixels_of(job, recipes.single(convert, {"format": "jxl"}), None, STILL)
    lossless = actors.pixels_of(
        job, recipes.single(convert, {"format": "jxl", "lossless": True}), None, STILL
    )

    assert lossy == math.ceil(12_000_000 * 4.5 / admission.BYTES_PER_PIXEL)
    assert lossless == 12_000_000 * 29 // admission.BYTES_PER_PIXEL  # six times as many


# --- Where clients see it -------------------------------------------------------------------


def test_the_openapi_document_offers_jxl_and_convert_documents_lossless(client):
    spec = client.get("/api/v1/openapi.json").json()
    form = spec["paths"]["/api/v1/convert"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]

    assert "jxl" in form["properties"]["format"]["enum"]
    assert "JPEG XL" in form["properties"]["format"]["description"]
    assert form["properties"]["lossless"]["type"] == "boolean"
    assert "the very same JPEG" in form["properties"]["lossless"]["description"]
    resize = spec["paths"]["/api/v1/resize"]["post"]["requestBody"]["content"]["multipart/form-data"][
        "schema"
    ]
    assert "jxl" in resize["properties"]["format"]["anyOf"][0]["enum"]


@pytest.mark.django_db
def test_the_upload_forms_offer_jpeg_xl(client):
    lite = client.get("/?ui=lite&service=convert").content.decode()
    assert '<option value="jxl">JPEG XL</option>' in lite and 'name="convert.lossless"' in lite
    desktop = client.get("/?ui=desktop").content.decode()
    assert "JPEG XL" in desktop  # the formats an upload may be in
    # The desktop and mobile forms are built from the services' parameters.
    services = client.get("/api/v1/services").json()["services"]
    resize = next(service for service in services if service["name"] == "resize")
    assert "jxl" in resize["parameters"]["properties"]["format"]["anyOf"][0]["enum"]


def test_the_jpeg_xl_effort_is_a_setting_the_worker_applies():
    effort_at_start = (
        "import django; django.setup(); from processing.imaging import jxl; print(jxl.OPTIONS['effort'])"
    )
    applied = subprocess.run(
        [sys.executable, "-c", effort_at_start],
        env={**os.environ, "JXL_EFFORT": "7", "DJANGO_SETTINGS_MODULE": "project.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert applied.stdout.strip() == "7", applied.stderr[-2000:]
    # Out of bounds (JXL_EFFORT=10) is refused at start: tests/test_settings.py.
