"""processing.imaging.recipes: several steps on one decode, their pixels, their checks and their canonical
chain; each refusal names its step."""

import json
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image, ImageFilter

from processing.errors import InvalidParameters, OutputTooLarge, StepRefused, UnknownOperation
from processing.imaging import recipes
from processing.imaging.codecs import load_image
from processing.imaging.operations import OPERATIONS, Operation, OutputLimits, get_operation
from tests import images

LIMITS = OutputLimits(max_pixels=1_000_000, max_enlargement=16, max_avif_pixels=250_000)


def steps(*written: tuple[str, dict]) -> list[dict]:
    return [{"service": service, "parameters": parameters} for service, parameters in written]


def recipe(*written: tuple[str, dict], **output) -> recipes.Recipe:
    return recipes.from_steps(steps(*written), output, max_steps=10)


def refusal(*written: tuple[str, dict], width: int = 64, height: int = 48, **output) -> StepRefused:
    """The StepRefused a recipe meets, parsing it or checking it against a width x height upload."""
    with pytest.raises(StepRefused) as raised:
        recipe(*written, **output).check_job(width, height, "jpeg", LIMITS)
    return raised.value


def difference(first: Image.Image, second: Image.Image) -> float:
    assert first.size == second.size and first.mode == second.mode
    return float(np.abs(np.asarray(first, dtype=float) - np.asarray(second, dtype=float)).mean())


# --- the pixels ----------------------------------------------------------------------------------
def test_resize_then_grayscale_makes_what_pillow_makes_doing_one_after_the_other():
    source = images.photo(320, 240)
    made = recipe(("resize", {"width": 160}), ("grayscale", {})).apply(source, lambda done: None).image

    by_hand = source.resize((160, 120), Image.Resampling.LANCZOS).convert("L")
    assert made.size == (160, 120) and made.mode == "L"
    assert difference(made, by_hand) < 1


def test_four_steps_make_what_the_four_operations_make_one_after_the_other():
    source = images.photo(320, 240)
    chain = recipe(
        ("crop", {"x": 10, "y": 20, "width": 300, "height": 200}),
        ("sharpen", {"radius": 1.5}),
        ("rotate", {"angle": 90}),
        ("blur", {"radius": 1}),
    )
    made = chain.apply(source, lambda done: None).image

    by_hand = source.crop((10, 20, 310, 220)).filter(ImageFilter.UnsharpMask(1.5, 150, 3))
    by_hand = by_hand.transpose(Image.Transpose.ROTATE_90).filter(ImageFilter.GaussianBlur(1))
    assert made.size == (200, 300)
    assert difference(made, by_hand) == 0


def test_a_step_after_a_reduced_decode_is_given_the_size_of_the_image_before_it(tmp_path):
    # The first step's hint decodes the JPEG at a quarter; "inside" never enlarges what it is given,
    # the 200-pixel result, not the 1600-pixel upload.
    path = tmp_path / "large.jpg"
    path.write_bytes(images.jpeg_bytes(images.photo(1600, 1200)))
    chain = recipe(("resize", {"width": 200}), ("resize", {"width": 400, "height": 400, "fit": "inside"}))
    image, _ = load_image(path, 50_000_000, chain.decode_hint(1600, 1200))
    assert image.size == (400, 300)  # reduced by 4: at least twice the first step's result

    assert chain.apply(image, lambda done: None).image.size == (200, 150)


def test_only_the_first_steps_decode_hint_is_taken():
    assert recipe(("grayscale", {}), ("resize", {"width": 10})).decode_hint(1600, 1200).mode == "L"
    assert recipe(("sharpen", {}), ("resize", {"width": 10})).decode_hint(1600, 1200) is None


def test_progress_is_each_steps_share_in_turn():
    seen: list[float] = []
    chain = recipe(("grayscale", {"runs": 2}), ("sharpen", {}))
    chain.apply(images.gradient(), seen.append)
    assert seen == [0.25, 0.5, 1.0]


def test_the_metrics_name_each_step_with_its_time_and_its_own_figures():
    result = recipe(("grayscale", {"runs": 2}), ("sharpen", {})).apply(images.gradient(), lambda done: None)
    grayscale, sharpen = result.metrics["steps"]
    assert grayscale["service"] == "grayscale" and len(grayscale["run_ms"]) == 2
    assert sharpen["service"] == "sharpen" and sharpen["ms"] >= 0


# --- the canonical chain -------------------------------------------------------------------------
def test_the_same_recipe_written_two_ways_is_the_same_chain():
    in_form = recipes.from_steps(
        json.dumps(steps(("resize", {"width": "100"}), ("sharpen", {"radius": "2"}))), {"quality": "80"}, 10
    )
    in_json = recipe(("resize", {"width": 100, "fit": "contain"}), ("sharpen", {"quality": 80}))

    assert in_form.parameters() == in_json.parameters()
    assert in_json.service == "steps"
    assert in_json.parameters() == {
        "steps": [
            {
                "service": "resize",
                "parameters": {"width": 100, "height": None, "fit": "contain", "gravity": "center"},
            },
            {"service": "sharpen", "parameters": {"radius": 2.0, "percent": 150, "threshold": 3}},
        ],
        "format": None,
        "quality": 80,
        "max_bytes": None,
    }


def test_a_recipe_of_one_step_is_that_services_job():
    one = recipe(("resize", {"width": 100}), format="png")
    assert one.service == "resize"
    assert (
        one.parameters()
        == recipes.single(get_operation("resize"), {"width": 100, "format": "png"}).parameters()
    )


def test_a_stored_chain_is_the_recipe_it_was_made_from():
    chain = recipe(("thumbnail", {"size": 64}), ("grayscale", {}), format="webp", max_bytes=5000)
    again = recipes.stored(chain.service, json.loads(json.dumps(chain.parameters())))
    assert again.parameters() == chain.parameters()
    assert (again.output.format, again.output.max_bytes) == ("webp", 5000)


# --- the refusals, each naming its step ------------------------------------------------------------
def test_an_unknown_service_names_its_step():
    refused = refusal(("resize", {"width": 10}), ("sepia", {}))
    assert refused.step == "steps[1] (sepia)" and isinstance(refused.cause, UnknownOperation)


def test_a_bad_parameter_names_its_step_and_the_parameter():
    refused = refusal(("resize", {"width": 10}), ("grayscale", {}), ("sharpen", {"radius": 500}))
    assert refused.step == "steps[2] (sharpen)"
    assert [error["loc"] for error in refused.cause.errors()] == [("radius",)]


def test_a_result_too_large_anywhere_in_the_chain_names_its_step_from_the_header_size_alone():
    # 640x480 enlarged to 1000 wide is 750,000 pixels, within the limit; rotated by 45 degrees with
    # expand, over it, though the last step would make it small again.
    written = ("resize", {"width": 1000}), ("rotate", {"angle": 45}), ("resize", {"width": 50})
    refused = refusal(*written, width=640, height=480)
    assert refused.step == "steps[1] (rotate)"
    assert isinstance(refused.cause, OutputTooLarge) and refused.cause.fields == ("angle", "expand")


def test_enlargement_is_counted_from_the_upload_so_steps_cannot_enlarge_one_after_another():
    # The first step makes 16 times the upload's pixels, the most there may be; the second, 4 times
    # what the first made, which alone would be fine.
    refused = refusal(("resize", {"width": 256}), ("resize", {"width": 512}), width=64, height=64)
    assert refused.step == "steps[1] (resize)"
    assert refused.cause.limit == "MAX_ENLARGEMENT"


def test_parameters_that_do_not_fit_what_the_step_before_made_name_the_step():
    refused = refusal(("resize", {"width": 32}), ("crop", {"x": 0, "y": 0, "width": 40, "height": 10}))
    assert refused.step == "steps[1] (crop)"
    assert isinstance(refused.cause, InvalidParameters) and refused.cause.field == "width"


def test_avifs_own_limit_applies_to_the_result_not_to_a_step_before_it():
    chain = recipe(("resize", {"width": 1000}), ("resize", {"width": 100}))
    chain.check_job(640, 480, "avif", LIMITS)  # 750,000 pixels in the middle, over AVIF's 250,000: fine

    chain = recipe(("resize", {"width": 100}), ("resize", {"width": 1000}))
    with pytest.raises(StepRefused) as raised:
        chain.check_job(640, 480, "avif", LIMITS)
    assert raised.value.step == "steps[1] (resize)"
    assert raised.value.cause.limit == "MAX_AVIF_OUTPUT_PIXELS"


def test_an_output_option_on_a_step_before_the_last_names_that_step():
    refused = refusal(("resize", {"width": 10, "format": "png"}), ("grayscale", {}))
    assert refused.step == "steps[0] (resize)" and refused.cause.field == "format"


def test_output_options_on_the_last_step_and_beside_the_steps_are_refused_as_given_twice():
    refused = refusal(("resize", {"width": 10}), ("grayscale", {"quality": 50}), quality=60)
    assert refused.step == "steps[1] (grayscale)" and "in one place" in refused.cause.message


def test_output_options_may_be_on_the_last_step():
    assert recipe(("resize", {"width": 10}), ("grayscale", {"format": "png"})).output.format == "png"


def test_a_report_is_no_step_of_a_recipe_of_several():
    refused = refusal(("resize", {"width": 10}), ("analyze", {}))
    assert refused.step == "steps[1] (analyze)" and "report" in str(refused.cause)
    assert recipe(("analyze", {})).produces == "report"  # alone, it is the analyze service's job


def test_a_malformed_step_names_its_place():
    for malformed in ("resize", {"name": "resize"}, {"service": "resize", "parameters": [], "extra": 1}):
        with pytest.raises(StepRefused) as raised:
            recipes.from_steps([{"service": "grayscale"}, malformed], {}, 10)
        assert raised.value.path == "steps[1]"


@pytest.mark.parametrize(
    "written", ["[", "{}", "[]", '"resize"', json.dumps([{"service": "grayscale"}] * 11), "[" * 100_000]
)
def test_steps_that_are_not_a_list_of_one_to_max_steps_are_refused(written):
    with pytest.raises(InvalidParameters) as raised:
        recipes.from_steps(written, {}, max_steps=10)
    assert raised.value.field == "steps"


def test_beside_the_steps_only_output_options_are_given():
    with pytest.raises(InvalidParameters) as raised:
        recipes.from_steps(steps(("grayscale", {})), {"width": 10}, 10)
    assert raised.value.field == "width"


# --- an operation's own checks at submit ------------------------------------------------------------
@dataclass(frozen=True)
class CheckingOperation(Operation):
    """An operation with the optional hook that checks what its parameters refer to (e.g. an asset)."""

    def check_references(self, params, owner) -> None:
        if params.radius > 5:
            raise InvalidParameters("radius", f"{owner} has no asset {params.radius:g}")


def test_each_steps_own_check_of_what_it_refers_to_is_run_at_submit_naming_the_step(monkeypatch):
    blur = get_operation("blur")
    checking = CheckingOperation(blur.name, blur.description, blur.params, blur.apply)
    monkeypatch.setitem(OPERATIONS, "blur", checking)

    recipe(("grayscale", {}), ("blur", {"radius": 2})).check_references("alice")
    with pytest.raises(StepRefused) as raised:
        recipe(("grayscale", {}), ("blur", {"radius": 9})).check_references("alice")
    assert str(raised.value) == "steps[1] (blur): alice has no asset 9"
