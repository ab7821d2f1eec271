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


def test_the_admin_makes_the_thumbnails_of_images_up_to_its_bound_and_the_worker_the_rest():
    assert admin_thumbnails.made_later(1920, 1080)
    assert admin_thumbnails.made_later(2000, 2000)
    assert not admin_thumbnails.made_later(4000, 3000)  # a phone's photo: its job makes it
