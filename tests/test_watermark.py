"""The watermark operation, by its pixels: text or an asset, where gravity puts it, how opaque, tiled,
turned, and every bound. Assets come from a stand-in source here (tests/test_api_assets.py uses the
stored ones, through the API and a worker)."""

import uuid

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from processing.errors import AssetNotFound, InvalidParameters
from processing.imaging.operations import get_operation, watermark
from tests import images

OPERATION = get_operation("watermark")
BLOCK = "\u2588"  # a full block: its inside is wholly covered, so its pixels are exactly the colour
LOGO = uuid.UUID(int=1)
TALL_STRIP = uuid.UUID(int=2)


class StandInAssets:
    """An AssetSource over images held in memory, for the operation alone."""

    def __init__(self, found: dict[uuid.UUID, Image.Image]):
        self.found = found

    def check_owned(self, asset_id, owner):
        self.image(asset_id)

    def size(self, asset_id):
        return self.image(asset_id).size

    def image(self, asset_id):
        if asset_id not in self.found:
            raise AssetNotFound(asset_id)
        return self.found[asset_id]


@pytest.fixture(autouse=True)
def assets(monkeypatch):
    source = StandInAssets({LOGO: images.logo(40, 20), TALL_STRIP: Image.new("RGBA", (1, 100), "red")})
    monkeypatch.setattr(watermark, "_asset_source", source)
    return source


def marked(image: Image.Image, **raw) -> Image.Image:
    result = OPERATION.apply(image, OPERATION.parse(raw), lambda fraction: None).image
    assert result is not None
    return result


def changed(before: Image.Image, after: Image.Image) -> np.ndarray:
    """Where any channel differs: a boolean array, rows by columns."""
    old = np.asarray(before.convert(after.mode), dtype=np.int16)
    return np.any(np.asarray(after, dtype=np.int16) != old, axis=-1)


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the True pixels, right and bottom exclusive."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# --- Text ---------------------------------------------------------------------------------------


def test_text_changes_the_corner_it_is_placed_in_and_nothing_else():
    image = images.gradient(160, 100)
    params = {"text": "Darkroom", "font_size": 18, "opacity": 1, "offset_x": 6, "offset_y": 5}
    width, height = OPERATION.parse(params).overlay_size(160)

    result = marked(image, **params)

    left, top, right, bottom = box_of(changed(image, result))
    assert (160 - 6 - width, 100 - 5 - height) <= (left, top)  # in the box, 6 and 5 pixels in
    assert (right, bottom) <= (160 - 6, 100 - 5)
    assert right >= 160 - 6 - 2 and bottom >= 100 - 5 - 2  # and reaching its corner
    assert result.size == image.size


@pytest.mark.parametrize(
    ("gravity", "third"),
    [
        ("north-west", (0, 0)),
        ("north", (1, 0)),
        ("north-east", (2, 0)),
        ("west", (0, 1)),
        ("center", (1, 1)),
        ("east", (2, 1)),
        ("south-west", (0, 2)),
        ("south", (1, 2)),
        ("south-east", (2, 2)),
    ],
)
def test_gravity_puts_the_text_in_its_part_of_the_image(gravity, third):
    image = images.solid(300, 300, images.BLACK)
    result = marked(image, text="X", font_size=40, gravity=gravity, opacity=1)
    ys, xs = np.nonzero(changed(image, result))
    assert (int(xs.mean()) // 100, int(ys.mean()) // 100) == third


def test_the_colour_is_the_texts_and_opacity_mixes_it_with_the_image():
    image = images.solid(120, 80, images.WHITE)
    full = np.asarray(marked(image, text=BLOCK, font_size=60, color="#ff0000", opacity=1, gravity="center"))
    half = np.asarray(marked(image, text=BLOCK, font_size=60, color="#ff0000", opacity=0.5, gravity="center"))
    assert tuple(full[40, 60]) == (255, 0, 0)
    assert np.abs(half[40, 60].astype(int) - (255, 128, 128)).max() <= 1
    assert marked(image, text=BLOCK, opacity=0).tobytes() == image.tobytes()


def test_a_tiled_watermark_covers_the_whole_image_and_a_placed_one_does_not():
    image = images.solid(400, 300, images.BLACK)
    tiled = changed(image, marked(image, text=BLOCK, font_size=20, spacing=20, tile=True))
    once = changed(image, marked(image, text=BLOCK, font_size=20))

    def cells_marked(mask: np.ndarray) -> int:
        return sum(mask[y : y + 50, x : x + 50].any() for y in range(0, 300, 50) for x in range(0, 400, 50))

    assert cells_marked(tiled) == 48  # every 50-pixel square: tiles are at most 44 apart
    assert cells_marked(once) == 1
    assert tiled[0:10, 0:10].any()  # offset 0: the grid starts at the very corner


def test_offsets_shift_the_tile_grid():
    image = images.solid(200, 100, images.BLACK)
    params = {"text": BLOCK, "font_size": 20, "spacing": 30, "tile": True}
    plain = changed(image, marked(image, **params))
    shifted = changed(image, marked(image, **params, offset_x=7, offset_y=3))
    assert np.array_equal(shifted[3:, 7:], plain[:-3, :-7])


def test_an_angle_turns_the_text():
    image = images.solid(200, 200, images.BLACK)
    flat = box_of(changed(image, marked(image, text=BLOCK * 6, font_size=20, gravity="center")))
    upright = box_of(changed(image, marked(image, text=BLOCK * 6, font_size=20, gravity="center", angle=90)))
    assert flat[2] - flat[0] > 3 * (flat[3] - flat[1])  # wide
    assert upright[3] - upright[1] > 3 * (upright[2] - upright[0])  # tall


def test_grey_images_take_coloured_text_and_the_input_is_left_as_it_was():
    image = images.gradient(80, 60, mode="L")
    before = image.tobytes()
    result = marked(image, text=BLOCK, font_size=40, color="#00ff00", opacity=1, gravity="center")
    assert result.mode == "RGB" and tuple(result.getpixel((40, 30))) == (0, 255, 0)
    assert image.tobytes() == before  # the worker still makes the input's thumbnail from it


def test_an_opaque_image_with_an_alpha_channel_stays_opaque_under_the_watermark():
    image = images.with_alpha(images.gradient(80, 60), alpha=255)
    result = marked(image, text=BLOCK, font_size=40, opacity=0.5, gravity="center")
    assert result.mode == "RGBA" and result.getchannel("A").getextrema() == (255, 255)
    assert changed(image, result).any()


# --- An image (an asset) ------------------------------------------------------------------------


def test_an_images_transparent_part_leaves_the_pixels_under_it_alone():
    image = images.solid(200, 100, images.WHITE)
    # scale 0.2 of 200 pixels: the 40 x 20 logo at its own size, nothing resampled.
    result = np.asarray(marked(image, asset_id=str(LOGO), scale=0.2, gravity="north-west", opacity=1))
    assert (result[0:20, 0:20] == (0, 0, 255)).all()  # the opaque half, whole
    assert (result[0:20, 20:] == 255).all() and (result[20:] == 255).all()  # the rest as it was


def test_opacity_mixes_an_image_with_what_is_under_it():
    image = images.solid(200, 100, images.WHITE)
    result = np.asarray(marked(image, asset_id=str(LOGO), scale=0.2, gravity="north-west", opacity=0.5))
    assert np.abs(result[10, 10].astype(int) - (128, 128, 255)).max() <= 1
    assert (result[0:20, 20:40] == 255).all()


@pytest.mark.parametrize("width", [100, 400])
def test_an_image_is_scaled_to_a_share_of_the_images_width_so_one_logo_suits_every_size(width):
    image = images.solid(width, 200, images.WHITE)
    result = np.asarray(marked(image, asset_id=str(LOGO), scale=0.5, gravity="north-west", opacity=1))
    mostly_blue = result[..., 2].astype(int) - result[..., 0] > 128  # past the resampling's soft edge
    left, top, right, bottom = box_of(mostly_blue)
    # Half the image's width, half of it opaque; the height by the logo's own 2:1 ratio.
    assert (left, top) == (0, 0)
    assert abs(right - width / 4) <= 1 and abs(bottom - width / 4) <= 1


def test_an_asset_that_is_gone_fails_the_operation_with_its_id():
    missing = uuid.UUID(int=99)
    with pytest.raises(AssetNotFound) as caught:
        marked(images.gradient(), asset_id=str(missing))
    assert caught.value.code == "asset_not_found" and str(missing) in caught.value.message


# --- Bounds -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"text": "both", "asset_id": str(LOGO)},
        {"text": ""},
        {"text": "   "},
        {"text": "two\nlines"},
        {"text": "x" * (watermark.MAX_TEXT_LENGTH + 1)},
        {"text": "x", "font_size": watermark.MAX_FONT_SIZE + 1},
        {"text": "x", "font_size": 1},
        {"text": "x", "color": "red"},
        {"text": "x", "opacity": 1.5},
        {"text": "x", "gravity": "top-left"},
        {"text": "x", "spacing": -1},
        {"text": "x", "offset_x": 100_000},
        {"asset_id": "not-an-id"},
        {"asset_id": str(LOGO), "scale": 0},
        {"asset_id": str(LOGO), "scale": 1.5},
    ],
)
def test_parameters_out_of_bounds_are_refused(raw):
    with pytest.raises(ValidationError):
        OPERATION.parse(raw)


def test_too_many_tiles_are_refused_before_any_is_drawn_naming_what_to_change():
    params = OPERATION.parse({"text": ".", "font_size": 4, "spacing": 0, "tile": True})
    with pytest.raises(InvalidParameters) as caught:
        OPERATION.check_fits(params, 4000, 3000)
    assert caught.value.field == "spacing"
    assert f"at most {watermark.MAX_TILES}" in caught.value.message
    OPERATION.check_fits(OPERATION.parse({"text": ".", "font_size": 4, "tile": True}), 4000, 3000)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"text": "W" * 60, "font_size": 1000}, "font_size"),
        ({"asset_id": str(TALL_STRIP), "scale": 1}, "scale"),  # 1 x 100: at 1000 wide, 100,000 high
    ],
)
def test_an_overlay_far_larger_than_the_image_is_refused(raw, field):
    params = OPERATION.parse(raw)
    with pytest.raises(InvalidParameters) as caught:
        OPERATION.check_fits(params, 1000, 1000)
    assert caught.value.field == field


def test_text_a_little_larger_than_a_small_image_is_drawn_cut_at_its_edge():
    image = images.solid(16, 16, images.BLACK)
    result = marked(image, text="Darkroom", font_size=32, opacity=1)
    assert result.size == (16, 16) and changed(image, result).any()
