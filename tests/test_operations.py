import json

import numpy as np
import pytest
from PIL import Image, ImageFilter
from pydantic import ValidationError

from processing.errors import Cancelled, InvalidParameters, OutputTooLarge
from processing.imaging.codecs import DecodeHint, encode_image, load_image
from processing.imaging.formats import OUTPUT_FORMATS
from processing.imaging.operations import OPERATIONS, Operation, OperationResult, OutputLimits, get_operation
from processing.imaging.operations import grayscale as grayscale_module
from tests import images

# Parameters that every operation accepts, for tests that run all of them.
SAMPLE_PARAMS = {
    "grayscale": {"threads": 3, "runs": 2},
    "sobel": {},
    "resize": {"width": 20, "height": 20, "fit": "cover"},
    "crop": {"x": 2, "y": 3, "width": 10, "height": 8},
    "thumbnail": {"size": 16},
    "blur": {"radius": 1.5},
    "sharpen": {},
    "rotate": {"angle": 30},
    "convert": {"format": "webp"},
    "watermark": {"text": "Darkroom", "tile": True, "angle": 30},
    "analyze": {},
}


def no_progress(fraction: float) -> None:
    pass


def run(name: str, image: Image.Image, **raw) -> OperationResult:
    operation = get_operation(name)
    return operation.apply(image, operation.parse(raw), no_progress)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# The registry


def test_the_registry_offers_every_service_in_the_design():
    assert set(OPERATIONS) == set(SAMPLE_PARAMS)
    assert all(isinstance(operation, Operation) for operation in OPERATIONS.values())


def test_an_unknown_service_is_a_key_error():
    with pytest.raises(KeyError):
        get_operation("posterize")


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_every_service_describes_itself_and_its_parameters(name):
    operation = OPERATIONS[name]
    assert operation.name == name
    assert operation.description.endswith(".")
    schema = json.loads(json.dumps(operation.json_schema()))
    if operation.produces == "image":
        assert {"format", "quality"} <= set(schema["properties"])
    else:
        assert "format" not in schema.get("properties", {})


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_stored_parameters_parse_back_to_the_same_values(name):
    # The gateway stores model_dump(mode="json"); the worker parses it again.
    operation = OPERATIONS[name]
    params = operation.parse(SAMPLE_PARAMS[name])
    assert operation.parse(params.model_dump(mode="json")) == params


# Parameter validation


@pytest.mark.parametrize(
    "name, raw",
    [
        ("grayscale", {"threads": 0}),
        ("grayscale", {"threads": 17}),
        ("grayscale", {"runs": 11}),
        ("resize", {"width": 0}),
        ("resize", {"width": 10001}),
        ("resize", {"width": 10, "fit": "stretch"}),
        ("crop", {"x": -1, "y": 0, "width": 1, "height": 1}),
        ("crop", {"x": 0, "y": 0, "width": 0, "height": 1}),
        ("thumbnail", {"size": 2049}),
        ("blur", {"radius": 0}),
        ("blur", {"radius": 101}),
        ("sharpen", {"percent": 0}),
        ("sharpen", {"threshold": 256}),
        ("rotate", {"angle": 361}),
        ("rotate", {"angle": 10, "fill": "red"}),
        ("convert", {"format": "bmp"}),
        ("blur", {"quality": 0}),
        ("blur", {"quality": 101}),
        ("sobel", {"format": "tiff"}),
    ],
)
def test_out_of_range_parameters_are_rejected(name, raw):
    with pytest.raises(ValidationError):
        get_operation(name).parse(raw)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_unknown_parameters_are_rejected(name):
    with pytest.raises(ValidationError) as caught:
        get_operation(name).parse({**SAMPLE_PARAMS[name], "colour": "blue"})
    assert caught.value.errors()[0]["loc"] == ("colour",)


@pytest.mark.parametrize(
    "name, raw",
    [("resize", {"fit": "cover"}), ("crop", {"x": 0, "y": 0, "width": 5}), ("rotate", {}), ("convert", {})],
)
def test_required_parameters_must_be_given(name, raw):
    with pytest.raises(ValidationError):
        get_operation(name).parse(raw)


def test_form_strings_are_accepted():
    assert get_operation("grayscale").parse({"threads": "4", "runs": "2"}).threads == 4
    rotate = get_operation("rotate").parse({"angle": "-45.5", "expand": "false", "quality": "70"})
    assert (rotate.angle, rotate.expand, rotate.quality) == (-45.5, False, 70)
    crop = get_operation("crop").parse({"x": "1", "y": "2", "width": "3", "height": "4"})
    assert (crop.x, crop.y, crop.width, crop.height) == (1, 2, 3, 4)


def test_blank_form_fields_mean_the_default():
    params = get_operation("resize").parse({"width": "100", "height": "", "format": "", "quality": ""})
    assert (params.width, params.height, params.format, params.quality) == (100, None, None, 85)


def test_format_names_are_case_insensitive_and_jpg_means_jpeg():
    assert get_operation("blur").parse({"format": "JPG"}).format == "jpeg"
    assert get_operation("convert").parse({"format": "WebP"}).format == "webp"


def test_analyze_takes_no_output_options():
    with pytest.raises(ValidationError):
        get_operation("analyze").parse({"format": "png"})


# Parameters that must fit the image


@pytest.mark.parametrize(
    "box, field",
    [
        ({"x": 40, "y": 0, "width": 1, "height": 1}, "x"),
        ({"x": 0, "y": 30, "width": 1, "height": 1}, "y"),
        ({"x": 30, "y": 0, "width": 11, "height": 1}, "width"),
        ({"x": 0, "y": 20, "width": 1, "height": 11}, "height"),
    ],
)
def test_a_crop_box_outside_the_image_names_the_field(box, field):
    operation = get_operation("crop")
    with pytest.raises(InvalidParameters) as caught:
        operation.check_fits(operation.parse(box), 40, 30)
    assert caught.value.field == field
    assert "40x30" in caught.value.message


def test_a_crop_box_outside_the_image_is_refused_by_the_operation_too():
    with pytest.raises(InvalidParameters):
        run("crop", images.gradient(40, 30), x=30, y=0, width=11, height=1)


def test_a_crop_box_covering_the_whole_image_fits():
    operation = get_operation("crop")
    operation.check_fits(operation.parse({"x": 0, "y": 0, "width": 40, "height": 30}), 40, 30)


# Output sizes: known before any pixel is made, and bounded by MAX_OUTPUT_PIXELS

# (service, parameters, input size, the size of the image it makes); None: a report, no image.
OUTPUT_SIZES = [
    ("grayscale", {"threads": 3}, (64, 48), (64, 48)),
    ("sobel", {}, (64, 48), (64, 48)),
    ("blur", {"radius": 3}, (64, 48), (64, 48)),
    ("sharpen", {}, (64, 48), (64, 48)),
    ("convert", {"format": "png"}, (64, 48), (64, 48)),
    ("crop", {"x": 2, "y": 3, "width": 10, "height": 8}, (64, 48), (10, 8)),
    ("thumbnail", {"size": 16}, (64, 48), (16, 12)),
    ("thumbnail", {"size": 16}, (1, 64), (1, 16)),
    ("thumbnail", {"size": 100}, (64, 48), (64, 48)),  # never enlarged
    ("resize", {"width": 32}, (64, 48), (32, 24)),
    ("resize", {"height": 96}, (64, 48), (128, 96)),
    ("resize", {"width": 20, "height": 20, "fit": "contain"}, (64, 48), (20, 15)),
    ("resize", {"width": 20, "height": 20, "fit": "cover"}, (64, 48), (20, 20)),
    ("resize", {"width": 90, "height": 10, "fit": "fill"}, (64, 48), (90, 10)),
    ("resize", {"width": 128, "fit": "inside"}, (64, 48), (64, 48)),
    ("rotate", {"angle": 90}, (64, 48), (48, 64)),
    ("rotate", {"angle": -90, "expand": False}, (64, 48), (64, 48)),
    ("rotate", {"angle": 180}, (64, 48), (64, 48)),
    ("rotate", {"angle": 45}, (64, 48), (80, 80)),
    ("rotate", {"angle": 30}, (64, 48), (80, 74)),
    ("rotate", {"angle": 30, "expand": False}, (64, 48), (64, 48)),
    ("watermark", {"text": "©"}, (64, 48), (64, 48)),
    ("analyze", {}, (64, 48), None),
]


def test_every_service_has_its_output_size_checked():
    assert {service for service, *_ in OUTPUT_SIZES} == set(OPERATIONS)


@pytest.mark.parametrize("service, raw, size, expected", OUTPUT_SIZES)
def test_each_operation_knows_its_output_size_from_the_input_size(service, raw, size, expected):
    operation = get_operation(service)
    params = operation.parse(raw)
    assert operation.output_size(params, *size) == expected
    result = operation.apply(images.gradient(*size), params, no_progress)
    made = result.image.size if result.image is not None else None
    assert made == expected  # the prediction is what the operation then makes


@pytest.mark.parametrize("angle", [1, 7.5, 33, 45, 60, 89.9, 135, 200, 271, 333.3, -45, -170])
@pytest.mark.parametrize("size", [(1, 1), (3, 700), (640, 480), (99, 101)])
def test_the_rotated_size_agrees_with_pillow_to_the_pixel(angle, size):
    operation = get_operation("rotate")
    params = operation.parse({"angle": angle})
    made = Image.new("L", size).rotate(angle, expand=True).size
    assert operation.output_size(params, *size) == made


@pytest.mark.parametrize(
    "service, raw, size, fields",
    [
        ("resize", {"width": 10000, "height": 10000, "fit": "fill"}, (10, 10), ("width", "height")),
        ("resize", {"width": 10000}, (1000, 1000), ("width",)),
        ("rotate", {"angle": 45}, (20000, 200), ("angle", "expand")),
        ("crop", {"x": 0, "y": 0, "width": 9000, "height": 9000}, (9000, 9000), ("width", "height")),
        ("blur", {}, (9000, 9000), ()),
    ],
)
def test_a_result_over_the_output_limit_is_refused_naming_the_parameters(service, raw, size, fields):
    operation = get_operation(service)
    with pytest.raises(OutputTooLarge) as caught:
        operation.check_output(operation.parse(raw), *size, max_pixels=50_000_000)
    assert caught.value.code == "output_too_large" and caught.value.fields == fields
    assert "exceeds MAX_OUTPUT_PIXELS (50000000)" in caught.value.message
    for name in fields:
        assert f"{name}=" in caught.value.message


def test_the_output_limit_names_the_values_as_a_client_writes_them():
    operation = get_operation("rotate")
    with pytest.raises(OutputTooLarge) as caught:
        operation.check_output(operation.parse({"angle": "45"}), 20000, 200, max_pixels=50_000_000)
    assert caught.value.message == (
        "angle=45, expand=true: the result would be 14284 × 14284 = 204032656 pixels, "
        "which exceeds MAX_OUTPUT_PIXELS (50000000)"
    )


def test_a_result_of_exactly_the_output_limit_is_allowed():
    operation = get_operation("resize")
    params = operation.parse({"width": 10000})
    operation.check_output(params, 1000, 1000, max_pixels=100_000_000)  # 10000 x 10000
    with pytest.raises(OutputTooLarge):
        operation.check_output(params, 100, 101, max_pixels=100_000_000)


def test_a_report_makes_no_image_so_has_no_output_limit():
    operation = get_operation("analyze")
    operation.check_output(operation.parse({}), 7000, 7000, max_pixels=1)


# Work bounded by its cost: enlargement, AVIF's pixels, grayscale's runs (issue 24)

LIMITS = OutputLimits(max_pixels=50_000_000, max_enlargement=16, max_avif_pixels=4_000_000)


def test_the_budget_attack_is_refused_for_its_enlargement_naming_the_size():
    operation = get_operation("resize")
    attack = {"width": 7000, "height": 7000, "fit": "fill", "format": "avif", "max_bytes": 1024}
    with pytest.raises(OutputTooLarge) as caught:
        operation.check_job(operation.parse(attack), 64, 64, "avif", LIMITS)
    assert caught.value.limit == "MAX_ENLARGEMENT" and caught.value.fields == ("width", "height")
    assert caught.value.message == (
        "width=7000, height=7000: the result would be 7000 × 7000 = 49000000 pixels, "
        "which exceeds MAX_ENLARGEMENT (16) times the input's 4096 pixels"
    )


@pytest.mark.parametrize(("width", "allowed"), [(256, True), (257, False)])
def test_a_result_may_have_max_enlargement_times_the_inputs_pixels(width, allowed):
    operation = get_operation("resize")
    params = operation.parse({"width": width, "height": 256, "fit": "fill"})
    if allowed:
        operation.check_job(params, 64, 64, "png", LIMITS)
    else:
        with pytest.raises(OutputTooLarge):
            operation.check_job(params, 64, 64, "png", LIMITS)


@pytest.mark.parametrize(
    ("output_format", "width", "allowed"),
    [("avif", 2000, True), ("avif", 2001, False), ("jpeg", 2001, True), ("", 2001, True)],
)
def test_an_avif_result_has_a_pixel_ceiling_of_its_own(output_format, width, allowed):
    operation = get_operation("resize")
    params = operation.parse({"width": width, "height": 2000, "fit": "fill"})
    if allowed:
        operation.check_job(params, 1000, 1000, output_format, LIMITS)
        return
    with pytest.raises(OutputTooLarge) as caught:
        operation.check_job(params, 1000, 1000, output_format, LIMITS)
    assert caught.value.limit == "MAX_AVIF_OUTPUT_PIXELS"
    assert caught.value.fields == ("width", "height", "format")
    assert "MAX_AVIF_OUTPUT_PIXELS (4000000)" in caught.value.message


def test_an_avif_input_kept_as_avif_is_refused_naming_the_format():
    operation = get_operation("blur")
    with pytest.raises(OutputTooLarge) as caught:
        operation.check_job(operation.parse({}), 3000, 3000, "avif", LIMITS)
    assert caught.value.fields == ("format",)


@pytest.mark.parametrize(
    ("runs", "size", "allowed"),
    [(1, (7000, 7000), True), (2, (7000, 7000), True), (3, (7000, 7000), False), (10, (3162, 3162), True)],
)
def test_grayscale_runs_times_pixels_is_bounded(runs, size, allowed):
    operation = get_operation("grayscale")
    params = operation.parse({"runs": runs, "threads": 16})
    if allowed:
        operation.check_job(params, *size, "jpeg", LIMITS)
        return
    with pytest.raises(InvalidParameters) as caught:
        operation.check_job(params, *size, "jpeg", LIMITS)
    assert caught.value.field == "runs"
    assert f"at most {grayscale_module.MAX_CONVERTED_PIXELS}" in caught.value.message


def test_operations_without_a_size_rule_fit_any_image():
    operation = get_operation("blur")
    operation.check_fits(operation.parse({}), 1, 1)


# Grayscale


@pytest.mark.parametrize("threads", [1, 3, 16])
@pytest.mark.parametrize("size", [(37, 23), (8, 5)])
def test_grayscale_matches_pillow_convert_pixel_for_pixel(threads, size):
    image = images.noise(*size)
    result = run("grayscale", image, threads=threads)
    assert result.image.mode == "L"
    assert np.array_equal(pixels(result.image), pixels(image.convert("L")))


def test_grayscale_on_one_thread_starts_no_pool(monkeypatch):
    def no_pool(*args, **kwargs):
        raise AssertionError("one thread needs no pool")

    monkeypatch.setattr(grayscale_module, "ThreadPoolExecutor", no_pool)
    image = images.noise(37, 23)
    result = run("grayscale", image, runs=2)
    assert np.array_equal(pixels(result.image), pixels(image.convert("L")))


def test_grayscale_times_each_run():
    result = run("grayscale", images.gradient(), threads=2, runs=3)
    assert result.metrics["threads"] == 2
    assert result.metrics["runs"] == 3
    assert len(result.metrics["run_ms"]) == 3
    assert all(ms >= 0 for ms in result.metrics["run_ms"])


def test_grayscale_keeps_transparency():
    image = images.with_alpha(images.gradient(), alpha=100)
    result = run("grayscale", image)
    assert result.image.mode == "LA"
    assert np.array_equal(pixels(result.image.getchannel("L")), pixels(image.convert("L")))
    assert np.all(pixels(result.image.getchannel("A")) == 100)


def test_grayscale_reports_progress_after_each_run():
    operation = get_operation("grayscale")
    seen = []
    operation.apply(images.gradient(), operation.parse({"runs": 4}), seen.append)
    assert seen == [0.25, 0.5, 0.75, 1.0]


def test_a_cancelled_progress_callback_stops_grayscale_between_runs(monkeypatch):
    conversions = []
    convert = grayscale_module.to_gray

    def counting(*args):
        conversions.append(1)
        return convert(*args)

    def cancel_at_the_second_checkpoint(fraction):
        if fraction >= 0.2:
            raise Cancelled("the job was cancelled")

    monkeypatch.setattr(grayscale_module, "to_gray", counting)
    operation = get_operation("grayscale")
    with pytest.raises(Cancelled):
        operation.apply(images.gradient(), operation.parse({"runs": 10}), cancel_at_the_second_checkpoint)
    assert len(conversions) == 2


# Sobel


def test_sobel_of_a_flat_image_is_black():
    result = run("sobel", images.solid(20, 10, (90, 120, 200)))
    assert result.image.mode == "L"
    assert result.image.size == (20, 10)
    assert not pixels(result.image).any()


def test_sobel_of_a_vertical_step_is_bright_exactly_along_the_edge():
    result = run("sobel", images.step_edge(width=32, height=16, at=16))
    edges = pixels(result.image)
    assert np.all(edges[:, 15:17] == 255)
    assert not edges[:, :15].any()
    assert not edges[:, 17:].any()


def test_sobel_finds_horizontal_edges_too():
    result = run("sobel", images.step_edge(width=32, height=16, at=16).transpose(Image.Transpose.TRANSPOSE))
    edges = pixels(result.image)
    assert np.all(edges[15:17] == 255)
    assert not edges[:15].any() and not edges[17:].any()


def sobel_with_pillow_kernels(image: Image.Image) -> np.ndarray:
    """An independent reference: 3x3 Kernels in Pillow on an edge-padded copy, the magnitude in integers."""
    gray = np.asarray(image.convert("L"))
    padded = Image.fromarray(np.pad(gray, 1, mode="edge")).convert("I")
    # Pillow clips a filtered I image at 0: an offset keeps the negative gradients.
    gx, gy = (
        np.asarray(padded.filter(ImageFilter.Kernel((3, 3), weights, 1, 1024)))[1:-1, 1:-1] - 1024
        for weights in ([-1, 0, 1, -2, 0, 2, -1, 0, 1], [-1, -2, -1, 0, 0, 0, 1, 2, 1])
    )
    squares = gx.astype(np.int64) ** 2 + gy.astype(np.int64) ** 2
    return np.minimum(np.floor(np.sqrt(squares)), 255).astype(np.int16)


@pytest.mark.parametrize(
    "image",
    [images.noise(37, 23), images.photo(64, 48), images.checkerboard(16, 10, square=3), images.solid(3, 3)],
    ids=["noise", "photo", "checkerboard", "tiny"],
)
def test_sobel_matches_pillows_kernels_pixel_for_pixel_borders_included(image):
    assert np.array_equal(pixels(run("sobel", image).image), sobel_with_pillow_kernels(image))


def test_sobel_reports_progress_band_by_band(monkeypatch):
    from processing.imaging.operations import sobel

    monkeypatch.setattr(sobel, "BAND_ROWS", 4)
    operation = get_operation("sobel")
    seen = []
    result = operation.apply(images.checkerboard(16, 10, square=3), operation.parse({}), seen.append)
    assert seen == [0.4, 0.8, 1.0]
    unbanded = run("sobel", images.checkerboard(16, 10, square=3))
    assert np.array_equal(pixels(result.image), pixels(unbanded.image))


# Resize


@pytest.mark.parametrize(
    "raw, size",
    [
        ({"width": 50, "height": 50}, (50, 25)),
        ({"width": 400, "height": 400}, (400, 200)),
        ({"width": 50, "height": 50, "fit": "cover"}, (50, 50)),
        ({"width": 50, "height": 80, "fit": "fill"}, (50, 80)),
        ({"width": 50, "height": 50, "fit": "inside"}, (50, 25)),
        ({"width": 400, "height": 400, "fit": "inside"}, (200, 100)),
        ({"width": 100}, (100, 50)),
        ({"height": 20}, (40, 20)),
        ({"width": 400, "fit": "inside"}, (200, 100)),
        ({"width": 100, "fit": "fill"}, (100, 50)),
    ],
)
def test_resize_fit_modes_give_the_expected_size(raw, size):
    image = images.gradient(200, 100)
    operation = get_operation("resize")
    params = operation.parse(raw)
    assert params.output_size(200, 100) == size
    assert operation.apply(image, params, no_progress).image.size == size


def test_resize_keeps_the_picture():
    image = images.two_colors(200, 100, left_fraction=0.5)
    result = pixels(run("resize", image, width=50).image)
    assert np.array_equal(result[12, 5], images.RED)
    assert np.array_equal(result[12, 45], images.BLUE)


def test_resize_cover_keeps_the_centre():
    image = images.color_blocks((images.RED, images.GREEN, images.BLUE), block=16)
    result = pixels(run("resize", image, width=8, height=8, fit="cover").image)
    assert np.allclose(result, images.GREEN, atol=16)  # Lanczos borrows a little from the neighbours


def test_resize_keeps_transparency():
    result = run("resize", images.with_alpha(images.gradient(), alpha=60), width=16).image
    assert result.mode == "RGBA"
    assert np.all(pixels(result.getchannel("A")) == 60)


# Reduced decodes


@pytest.mark.parametrize(
    "name, raw, hint",
    [
        ("grayscale", {}, DecodeHint(mode="L")),
        ("grayscale", {"threads": 2}, None),  # asks to time the conversion: give it one to do
        ("grayscale", {"runs": 3}, None),
        ("resize", {"width": 400, "height": 300}, DecodeHint(size=(800, 450))),
        ("resize", {"height": 100}, DecodeHint(size=(356, 200))),
        ("resize", {"width": 400, "height": 400, "fit": "cover"}, DecodeHint(size=(1423, 800))),
        ("resize", {"width": 400, "height": 100, "fit": "fill"}, DecodeHint(size=(800, 200))),
        ("resize", {"width": 1000}, None),  # twice the result is more than the image
        ("resize", {"width": 4000}, None),
        ("thumbnail", {"size": 256}, DecodeHint(size=(512, 288))),
        ("thumbnail", {"size": 2048}, None),
        ("sobel", {}, None),  # luma edges from a reduced decode differ by up to 17 levels
        ("crop", SAMPLE_PARAMS["crop"], None),
        ("analyze", {}, None),  # reports the full image's size and statistics
    ],
)
def test_operations_ask_the_decoder_only_for_what_they_need(name, raw, hint):
    operation = get_operation(name)
    assert operation.decode_hint(operation.parse(raw), 1920, 1080) == hint


@pytest.fixture
def photo_jpeg(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(images.jpeg_bytes(images.photo(1600, 1200), quality=90))
    return path


def reduced_and_full(name: str, path, **raw) -> tuple[Image.Image, Image.Image, Image.Image]:
    """The operation's result from a load with its hint, from a full load, and that full load."""
    operation = get_operation(name)
    params = operation.parse(raw)
    full, info = load_image(path, 10_000_000)
    reduced, _ = load_image(path, 10_000_000, operation.decode_hint(params, info.width, info.height))
    assert reduced.size != full.size or name == "grayscale"
    return run(name, reduced, **raw).image, run(name, full, **raw).image, full


def test_a_resize_from_a_reduced_decode_looks_like_a_full_lanczos_resize(photo_jpeg):
    from_reduced, from_full, full = reduced_and_full("resize", photo_jpeg, width=400, height=300)
    naive = full.resize((400, 300), Image.Resampling.LANCZOS)
    assert from_reduced.size == from_full.size == (400, 300)
    assert images.ssim(from_reduced, naive) >= 0.97
    assert np.abs(pixels(from_reduced) - pixels(naive)).mean() < 2


@pytest.mark.parametrize(
    "raw",
    [
        {"width": 333},
        {"height": 97},
        {"width": 300, "height": 300, "fit": "cover"},
        {"width": 90, "fit": "fill"},
    ],
)
def test_a_resize_from_a_reduced_decode_has_the_size_of_one_from_the_full_image(photo_jpeg, raw):
    from_reduced, from_full, _ = reduced_and_full("resize", photo_jpeg, **raw)
    assert from_reduced.size == from_full.size
    assert images.ssim(from_reduced, from_full) >= 0.97


def test_a_thumbnail_from_a_reduced_decode_matches_one_from_the_full_image(photo_jpeg):
    from_reduced, from_full, _ = reduced_and_full("thumbnail", photo_jpeg, size=100)
    assert from_reduced.size == from_full.size == (100, 75)
    assert images.ssim(from_reduced, from_full) >= 0.97


@pytest.mark.parametrize("gravity", ["center", "entropy", "attention"])
def test_a_square_thumbnail_from_a_reduced_decode_matches_one_from_the_full_image(photo_jpeg, gravity):
    from_reduced, from_full, _ = reduced_and_full(
        "thumbnail", photo_jpeg, size=60, square=True, gravity=gravity
    )
    assert from_reduced.size == from_full.size == (60, 60)
    assert images.ssim(from_reduced, from_full) >= 0.9


def test_grayscale_from_the_luma_alone_is_within_two_levels_of_converting(photo_jpeg):
    from_luma, from_colour, _ = reduced_and_full("grayscale", photo_jpeg)
    difference = np.abs(pixels(from_luma) - pixels(from_colour))
    assert from_luma.mode == "L"
    assert difference.mean() < 0.25
    # Only colours that the RGB decode clips (out of gamut) differ by more than two levels.
    assert np.mean(difference > 2) < 0.005
    assert difference.max() <= 10


# Crop, thumbnail, rotate, convert


def test_crop_returns_exactly_the_box():
    image = images.noise(40, 30)
    result = run("crop", image, x=5, y=7, width=20, height=10).image
    assert result.size == (20, 10)
    assert np.array_equal(pixels(result), pixels(image)[7:17, 5:25])


@pytest.mark.parametrize(
    "size, expected", [((300, 150), (64, 32)), ((150, 300), (32, 64)), ((30, 20), (30, 20))]
)
def test_thumbnail_fits_the_longest_edge_and_never_upscales(size, expected):
    assert run("thumbnail", images.gradient(*size), size=64).image.size == expected


def test_thumbnail_does_not_change_the_input():
    image = images.gradient(300, 150)
    run("thumbnail", image, size=64)
    assert image.size == (300, 150)


@pytest.mark.parametrize("angle, turns", [(90, 1), (-90, -1), (180, 2), (270, 3), (-270, 1), (360, 0)])
def test_rotating_by_right_angles_is_an_exact_transpose(angle, turns):
    image = images.noise(20, 12)
    result = run("rotate", image, angle=angle).image
    assert np.array_equal(pixels(result), np.rot90(pixels(image), k=turns))


def test_rotating_90_degrees_without_expand_keeps_the_canvas():
    assert run("rotate", images.gradient(40, 20), angle=90, expand=False).image.size == (40, 20)


def test_rotating_45_degrees_grows_the_canvas_and_fills_the_corners():
    result = run("rotate", images.solid(40, 40, images.BLUE), angle=45, fill="#00ff00").image
    assert result.width > 40 and result.height > 40
    assert result.getpixel((0, 0)) == images.GREEN
    assert result.getpixel((result.width // 2, result.height // 2)) == images.BLUE


def test_convert_leaves_the_pixels_alone():
    image = images.noise(16, 16)
    assert np.array_equal(pixels(run("convert", image, format="png").image), pixels(image))


# Blur and sharpen


def test_blur_reduces_variance():
    image = images.checkerboard(32, 32, square=4)
    assert pixels(run("blur", image, radius=2).image).var() < 0.5 * pixels(image).var()


def test_a_larger_blur_radius_blurs_more():
    image = images.checkerboard(32, 32, square=4)
    light, heavy = run("blur", image, radius=0.5).image, run("blur", image, radius=4).image
    assert pixels(heavy).var() < pixels(light).var()


def test_sharpen_increases_variance():
    soft = images.checkerboard(32, 32, square=8).filter(ImageFilter.GaussianBlur(1.5))
    assert pixels(run("sharpen", soft).image).var() > pixels(soft).var()


def test_sharpen_leaves_flat_areas_alone():
    image = images.solid(16, 16, (10, 200, 30))
    assert np.array_equal(pixels(run("sharpen", image, percent=500).image), pixels(image))


def reported(service: str, image: Image.Image, **raw) -> tuple[Image.Image, list[float]]:
    operation = get_operation(service)
    seen: list[float] = []
    return operation.apply(image, operation.parse(raw), seen.append).image, seen


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
@pytest.mark.parametrize(
    ("service", "image_filter"),
    [
        ("blur", lambda r: ImageFilter.GaussianBlur(r)),
        ("sharpen", lambda r: ImageFilter.UnsharpMask(r, 150, 3)),
    ],
)
@pytest.mark.parametrize("radius", [0.1, 0.5, 1, 2, 2.5, 7.3, 20])
def test_blur_and_sharpen_in_bands_match_the_whole_filter_pixel_for_pixel(
    service, image_filter, radius, mode
):
    image = images.noise(60, 900, seed=4).convert(mode)
    result, seen = reported(service, image, radius=radius)
    assert np.array_equal(pixels(result), pixels(image.filter(image_filter(radius))))
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert len(seen) > 1 if radius <= 7.3 else True  # a band is at least eight times the filter's reach


def test_a_blur_reports_each_tenth_and_stops_at_a_cancel_between_bands():
    _, seen = reported("blur", images.noise(20, 1000), radius=2)
    assert seen == [n / 10 for n in range(1, 11)]

    def cancel_at_the_third_band(fraction):
        if fraction >= 0.3:
            raise Cancelled("the job was cancelled")

    operation = get_operation("blur")
    with pytest.raises(Cancelled):
        operation.apply(images.noise(20, 1000), operation.parse({"radius": 2}), cancel_at_the_third_band)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
@pytest.mark.parametrize(
    ("angle", "expand"), [(30, True), (-45, True), (123.456, True), (17.3, False), (90, False)]
)
def test_a_rotation_in_bands_matches_pillows_whole_rotation(angle, expand, mode):
    image = images.photo(301, 203, seed=2).convert(mode)
    if mode == "RGBA":
        image.putalpha(images.noise(301, 203, seed=5).convert("L"))
    result, seen = reported("rotate", image, angle=angle, expand=expand, fill="#336699")
    fill = (0x33, 0x66, 0x99) if mode != "L" else "#336699"
    whole = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=expand, fillcolor=fill)

    assert result.size == whole.size and result.mode == mode
    difference = np.abs(pixels(result) - pixels(whole))
    assert difference.max() <= 1 and np.mean(difference > 0) < 0.001  # the same sums, in another order
    assert len(seen) == 11 and seen[-1] == 1.0  # each tenth, and the end


# Analyze


def test_analyze_reports_the_brightness_and_contrast_of_a_known_image():
    half_and_half = images.two_colors(20, 10, left=images.BLACK, right=images.WHITE, left_fraction=0.5)
    report = run("analyze", half_and_half).report
    assert report["brightness"] == 127.5
    assert report["contrast"] == 127.5
    assert report["histogram"]["luma"] == [0.5] + [0.0] * 14 + [0.5]


def test_analyze_of_a_flat_grey_image():
    report = run("analyze", images.solid(1000, 500, (100, 100, 100))).report
    assert report["megapixels"] == 0.5
    assert report["brightness"] == 100
    assert report["contrast"] == 0
    assert report["sharpness"] == 0
    assert report["histogram"]["luma"][100 // 16] == 1.0
    assert set(report["histogram"]) == {"luma", "red", "green", "blue"}


def test_analyze_finds_the_dominant_colours_of_a_two_colour_image():
    report = run("analyze", images.two_colors(40, 10, left=images.RED, right=images.BLUE)).report
    assert report["dominant_colors"] == [
        {"hex": "#ff0000", "fraction": 0.75},
        {"hex": "#0000ff", "fraction": 0.25},
    ]


def test_analyze_rates_crisp_detail_sharper_than_a_blur():
    crisp = images.checkerboard(64, 64, square=2)
    blurred = crisp.filter(ImageFilter.GaussianBlur(2))
    assert run("analyze", crisp).report["sharpness"] > 10 * run("analyze", blurred).report["sharpness"]


def test_analyze_report_is_json_and_describes_the_image():
    image = images.with_alpha(images.gradient(64, 48))
    image.info["source_format"] = "PNG"
    report = json.loads(json.dumps(run("analyze", image).report))
    assert report["format"] == "PNG"
    assert (report["mode"], report["width"], report["height"]) == ("RGBA", 64, 48)
    assert report["has_alpha"] is True
    assert len(report["histogram"]["luma"]) == 16
    assert 1 <= len(report["dominant_colors"]) <= 5


def test_analyze_describes_the_upload_as_loaded(tmp_path):
    # Orientation 6: stored 40x20, displayed 20x40. The report describes what the user sees.
    path = tmp_path / "photo.jpg"
    path.write_bytes(images.oriented_jpeg_bytes())
    image, _ = load_image(path, max_pixels=10_000)
    report = run("analyze", image).report
    assert (report["format"], report["width"], report["height"]) == ("JPEG", 20, 40)


# Every operation, every working mode


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_every_operation_handles_every_mode_load_image_returns(name, mode):
    image = images.gradient(32, 24, mode=mode)
    operation = OPERATIONS[name]
    seen = []
    result = operation.apply(image, operation.parse(SAMPLE_PARAMS[name]), seen.append)
    assert seen and seen[-1] == 1.0
    if operation.produces == "report":
        assert result.image is None
        json.dumps(result.report)
        return
    assert result.image.mode in ("L", "LA", "RGB", "RGBA")
    for output_format in OUTPUT_FORMATS:
        assert encode_image(result.image, output_format, 80)
