"""max_bytes: a result that fits a byte budget, by quality first and pixels after; and the pages
that fill in a budget for a visitor saving data."""

import io
import re

import pytest
from PIL import Image

from processing.errors import UnprocessableImage
from processing.imaging import byte_budget
from processing.imaging.byte_budget import MAX_ENCODES, MAX_SHRINKS, MIN_QUALITY, encode_within
from processing.imaging.codecs import encode_image
from processing.models import Job
from tests import images
from tests.uploads import png, submit

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_without_a_budget_or_within_it_the_encoding_is_the_plain_one():
    photo = images.photo(320, 240)
    plain = encode_image(photo, "jpeg", 85)

    assert encode_within(photo, "jpeg", 85, None).data == plain
    assert encode_within(photo, "jpeg", 85, len(plain)).data == plain


@pytest.mark.parametrize("format", ["jpeg", "webp", "avif", "jxl"])
def test_over_budget_the_highest_quality_that_fits_is_chosen_at_full_size(format):
    photo = images.photo(320, 240)
    budget = len(encode_image(photo, format, 60))

    fitted = encode_within(photo, format, 85, budget)

    assert len(fitted.data) <= budget and decoded(fitted.data).size == (320, 240)
    assert 60 <= fitted.quality < 85
    assert len(encode_image(photo, format, fitted.quality + 1)) > budget  # the highest that fits


@pytest.mark.parametrize("format", ["jpeg", "png", "avif", "jxl"])
def test_a_budget_even_the_lowest_quality_misses_costs_pixels_not_more_quality(format):
    noise = images.noise(400, 300)
    budget = 4096
    assert len(encode_image(noise, format, MIN_QUALITY)) > budget

    fitted = encode_within(noise, format, 85, budget)

    result = decoded(fitted.data)
    assert len(fitted.data) <= budget
    assert result.size == fitted.image.size and result.width < 400
    assert abs(result.width / result.height - 400 / 300) < 0.05  # the shape is kept


@pytest.fixture
def encoded(monkeypatch):
    """The size of every image the byte budget encodes, in order."""
    sizes: list[tuple[int, int]] = []
    real = byte_budget.encode

    def counting(image: Image.Image, format: str, quality: int, progress=None) -> bytes:
        sizes.append(image.size)
        return real(image, format, quality, progress)

    monkeypatch.setattr(byte_budget, "encode", counting)
    return sizes


@pytest.mark.parametrize(("format", "side"), [("jpeg", 1000), ("avif", 300), ("png", 500)])
def test_a_result_far_over_its_budget_is_encoded_whole_once_then_shrunk(encoded, format, side):
    # Issue 24: noise asked to fit a kilobyte took 30 AVIF encodes, 7 of them of the whole image.
    noise = images.noise(side, side)

    fitted = encode_within(noise, format, 85, 1024)

    assert len(fitted.data) <= 1024 and decoded(fitted.data).size == fitted.image.size
    assert encoded.count(noise.size) == 1
    assert fitted.encodes == len(encoded) <= MAX_ENCODES


def test_the_search_gives_up_after_a_bounded_number_of_encodes(monkeypatch):
    encodes = []

    def never_small_enough(image: Image.Image, format: str, quality: int, progress=None) -> bytes:
        encodes.append(image.size)
        return bytes(4096)

    monkeypatch.setattr(byte_budget, "encode", never_small_enough)
    with pytest.raises(UnprocessableImage) as caught:
        encode_within(images.photo(320, 240), "jpeg", 85, 1024)

    assert caught.value.code == "over_budget"
    assert len(encodes) == 1 + MAX_SHRINKS + 1 <= MAX_ENCODES


@pytest.mark.django_db(transaction=True)
def test_a_job_with_max_bytes_gets_a_result_within_it_and_says_what_it_made(client, run_jobs):
    noisy = png("noise.png", images.noise(600, 400))
    job_id = submit(client, "blur", image=noisy, format="jpeg", max_bytes=8000).json()["job_id"]
    run_jobs()

    job = Job.objects.get(id=job_id)
    assert job.status == "completed" and job.output_bytes <= 8000
    result = client.get(f"/api/v1/jobs/{job_id}").json()["result"]
    assert (result["width"], result["height"]) == (job.output_width, job.output_height)
    download = client.get(f"/api/v1/download/{job_id}")
    assert decoded(b"".join(download.streaming_content)).size == (job.output_width, job.output_height)
    assert job.metrics["budget_encodes"] > 1 and job.metrics["budget_quality"] >= MIN_QUALITY


@pytest.mark.django_db
def test_a_budget_under_a_kilobyte_is_refused_naming_max_bytes(client):
    response = submit(client, "blur", max_bytes=100)

    assert response.status_code == 422
    assert "max_bytes" in str(response.json()["error"])


def form_value(html: str, name: str) -> str | None:
    found = re.search(rf'name="{name}" type="number" value="([^"]*)"', html)
    return found.group(1) if found else None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("headers", "budget"),
    [
        ({"User-Agent": IPHONE, "Save-Data": "on"}, 150_000),
        ({"User-Agent": IPHONE}, None),
        ({"Save-Data": "on"}, 150_000),  # a desktop saving data gets the lite page
        ({}, None),
    ],
)
def test_the_pages_offer_a_byte_budget_to_visitors_saving_data(client, headers, budget):
    config = client.get("/api/v1/frontend/config", headers=headers).json()
    assert config["save_data_max_bytes"] == budget

    page = client.get("/", headers=headers).content.decode()
    if config["ui_mode"] == "lite":
        assert form_value(page, "output.max_bytes") == (str(budget) if budget else "")


@pytest.mark.django_db
def test_no_budget_is_offered_when_it_is_set_to_zero(client, settings):
    settings.SAVE_DATA_MAX_BYTES = 0
    assert (
        client.get("/api/v1/frontend/config", headers={"Save-Data": "on"}).json()["save_data_max_bytes"]
        is None
    )
