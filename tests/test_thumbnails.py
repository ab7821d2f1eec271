"""The admin's thumbnails: small, never enlarged, and a faithful preview of the image."""

import io

import pytest
from PIL import Image

from processing.imaging import admin_thumbnails
from tests import images


def thumbnail_of(image: Image.Image) -> Image.Image:
    return Image.open(io.BytesIO(admin_thumbnails.thumbnail_bytes(image)))


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_a_thumbnail_is_a_webp_that_fits_the_edge_and_keeps_the_ratio(mode):
    thumbnail = thumbnail_of(images.photo(1920, 1080).convert(mode))
    assert thumbnail.format == "WEBP"
    assert thumbnail.size == (160, 90)


def test_a_small_image_is_never_enlarged():
    assert thumbnail_of(images.photo(120, 80)).size == (120, 80)


def test_a_sampled_thumbnail_looks_like_one_that_averages_every_pixel():
    photo = images.photo(1920, 1080)
    averaged = photo.resize((160, 90), Image.Resampling.BOX)  # every pixel counted: slow, and the reference
    assert images.ssim(admin_thumbnails.shrink(photo, (160, 90)), averaged) >= 0.97


@pytest.mark.parametrize(
    ("format", "size", "pixels"),
    [
        ("JPEG", (4000, 3000), 500 * 375),  # an eighth of each side covers the thumbnail twice over
        ("JPEG", (1000, 700), 500 * 350),  # a half is all that still covers it
        ("JPEG", (30000, 300), 30000 * 300),  # a panorama too thin for any DCT scale
        ("PNG", (4000, 3000), 4000 * 3000),  # no reduced decode for anything else
    ],
)
def test_the_admin_decodes_a_jpeg_at_the_smallest_scale_that_covers_the_thumbnail(format, size, pixels):
    assert admin_thumbnails.decoded_pixels(format, *size) == pixels


def test_the_admin_makes_the_thumbnails_that_fit_its_bound_and_the_worker_the_rest():
    assert admin_thumbnails.made_later("JPEG", 12000, 8000)  # 96 MP, decoded as 1.5
    assert admin_thumbnails.made_later("PNG", 1920, 1080)
    assert not admin_thumbnails.made_later("PNG", 4000, 3000)
    assert not admin_thumbnails.made_later("WEBP", 4000, 3000)
