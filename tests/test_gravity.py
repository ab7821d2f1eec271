"""gravity=center|entropy|attention: a square thumbnail or a crop keeps the subject, on generated
scenes where the subject's place is known."""

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pydantic import ValidationError

from processing.errors import InvalidParameters
from processing.imaging.codecs import DecodeHint
from processing.imaging.operations import get_operation
from processing.imaging.operations.gravity import anchored, place

WIDTH, HEIGHT = 1200, 600
SKIN, EYE, RED = (224, 172, 140), (40, 30, 30), (220, 30, 40)


def backdrop(seed: int = 0) -> Image.Image:
    """A plain grey wall with a little sensor noise."""
    noise = np.random.default_rng(seed).normal(0, 3, (HEIGHT, WIDTH, 3))
    return Image.fromarray(np.clip(128 + noise, 0, 255).astype(np.uint8))


def with_gravel(image: Image.Image, box: tuple[int, int, int, int], colour: bool = True) -> Image.Image:
    """Busy detail in `box`: random pixels, in colour or grey."""
    left, top, right, bottom = box
    rng = np.random.default_rng(1)
    patch = rng.integers(0, 256, (bottom - top, right - left, 3 if colour else 1), dtype=np.uint8)
    image.paste(Image.fromarray(patch if colour else patch[..., 0]).convert("RGB"), (left, top))
    return image


def with_face(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    left, top, right, bottom = box
    drawing = ImageDraw.Draw(image)
    drawing.ellipse(box, fill=SKIN)
    drawing.ellipse((left + 60, top + 90, left + 90, top + 120), fill=EYE)
    return image


def keeps(left: int, size: int, subject: tuple[int, int, int, int]) -> bool:
    return left <= subject[0] and subject[2] <= left + size


def run(service: str, image: Image.Image, **params):
    operation = get_operation(service)
    return operation.apply(image, operation.parse(params), lambda fraction: None).image


FACE = (40, 160, 320, 480)
GRAVEL = (840, 120, 1160, 480)
RED_BOX = (940, 200, 1120, 400)


@pytest.mark.parametrize(
    ("scene", "subject"),
    [
        (lambda: with_face(backdrop(), FACE), FACE),
        (lambda: with_gravel(backdrop(), GRAVEL), GRAVEL),
        (lambda: ImageDraw.Draw(image := backdrop()).rectangle(RED_BOX, fill=RED) or image, RED_BOX),
    ],
    ids=["face-on-the-left", "detail-on-the-right", "red-on-the-right"],
)
@pytest.mark.parametrize("gravity", ["entropy", "attention"])
def test_a_square_keeps_a_subject_away_from_the_centre_where_center_loses_it(scene, subject, gravity):
    image = scene()
    assert not keeps(place(image, HEIGHT, HEIGHT, "center")[0], HEIGHT, subject)

    left, top = place(image, HEIGHT, HEIGHT, gravity)

    assert top == 0 and keeps(left, HEIGHT, subject)


def test_attention_prefers_a_face_to_grey_detail_where_entropy_prefers_the_detail():
    image = with_gravel(with_face(backdrop(), FACE), GRAVEL, colour=False)

    assert keeps(place(image, HEIGHT, HEIGHT, "attention")[0], HEIGHT, FACE)
    assert keeps(place(image, HEIGHT, HEIGHT, "entropy")[0], HEIGHT, GRAVEL)


def test_a_square_thumbnail_with_attention_shows_the_face():
    image = with_face(backdrop(), FACE)

    thumbnail = run("thumbnail", image, size=120, square=True, gravity="attention")
    centred = run("thumbnail", image, size=120, square=True, gravity="center")

    assert thumbnail.size == (120, 120)
    assert skin_share(thumbnail) > 0.1 and skin_share(centred) < 0.02  # a good part of it is the face


def test_a_square_is_never_larger_than_the_shorter_side_and_plain_thumbnails_are_unchanged():
    image = backdrop()
    assert run("thumbnail", image, size=2000, square=True).size == (HEIGHT, HEIGHT)
    assert run("thumbnail", image, size=120).size == (120, 60)
    assert get_operation("thumbnail").output_size(
        get_operation("thumbnail").parse({"size": 120, "square": True}), 1200, 600
    ) == (120, 120)


def test_a_square_thumbnail_may_decode_reduced_to_its_shorter_side():
    thumbnail = get_operation("thumbnail")
    hint = thumbnail.decode_hint(thumbnail.parse({"size": 100, "square": True}), 4000, 2000)
    assert hint == DecodeHint(size=(400, 200))  # twice the result on the shorter side, as for plain ones


def test_a_resize_that_covers_its_box_keeps_the_face_with_attention():
    image = with_face(backdrop(), FACE)

    covered = run("resize", image, width=200, height=200, fit="cover", gravity="attention")
    centred = run("resize", image, width=200, height=200, fit="cover")

    assert covered.size == centred.size == (200, 200)
    assert skin_share(covered) > 0.1 and skin_share(centred) < 0.02


def skin_share(image: Image.Image) -> float:
    return float((np.abs(np.asarray(image, dtype=float) - SKIN).sum(axis=2) < 30).mean())


def test_a_crop_with_gravity_places_its_box_on_the_subject():
    image = ImageDraw.Draw(image := backdrop()).rectangle(RED_BOX, fill=RED) or image

    cropped = run("crop", image, width=300, height=300, gravity="attention")

    assert cropped.size == (300, 300)
    red = (np.abs(np.asarray(cropped, dtype=float) - RED).sum(axis=2) < 30).mean()
    assert red > 0.3


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"x": 0, "y": 0, "width": 10, "height": 10, "gravity": "entropy"}, "not both"),
        ({"x": 0, "width": 10, "height": 10}, "both x and y"),
        ({"width": 10, "height": 10}, "both x and y"),
        ({"width": 10, "height": 10, "gravity": "somewhere"}, "gravity"),
    ],
)
def test_a_crop_is_placed_one_way_or_refused_saying_how(params, message):
    with pytest.raises(ValidationError, match=message):
        get_operation("crop").parse(params)


def test_a_gravity_box_larger_than_the_image_names_the_side():
    crop = get_operation("crop")
    with pytest.raises(InvalidParameters) as caught:
        crop.check_fits(crop.parse({"width": 1300, "height": 10, "gravity": "attention"}), WIDTH, HEIGHT)
    assert caught.value.field == "width"


@pytest.mark.parametrize(
    ("compass", "expected"),
    [
        ("north-west", (3, 4)),
        ("north", (43, 4)),
        ("north-east", (77, 4)),
        ("west", (3, 24)),
        ("center", (43, 24)),
        ("east", (77, 24)),
        ("south-west", (3, 36)),
        ("south", (43, 36)),
        ("south-east", (77, 36)),
    ],
)
def test_an_anchored_box_is_offset_in_from_the_edges_its_compass_names(compass, expected):
    # A 20 x 10 box in a 100 x 50 image, 3 and 4 pixels in (right and down along a side it names no edge of).
    assert anchored((100, 50), (20, 10), compass, (3, 4)) == expected
