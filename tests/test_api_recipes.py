"""POST /api/v1/process with steps or a preset, GET /api/v1/presets, and a recipe in the admin: what a
client and an operator see, in-process with a real worker."""

import io
import json

import numpy as np
import pytest
from django.core import checks
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, ImageFilter

from processing.models import Job, Preset
from tests import images
from tests.factories import process_queued

pytestmark = pytest.mark.django_db(transaction=True)

RESIZE_THEN_GRAY = [{"service": "resize", "parameters": {"width": 40}}, {"service": "grayscale"}]


def image_file(source: Image.Image | None = None, name: str = "photo.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, images.png_bytes(source if source is not None else images.photo(80, 60)))


def process(client, steps=None, image=None, headers=None, **fields):
    """POST /api/v1/process: `steps` as a form field of JSON text, as curl -F sends it."""
    data = {"image": image or image_file(), **{name: str(value) for name, value in fields.items()}}
    if steps is not None:
        data["steps"] = steps if isinstance(steps, str) else json.dumps(steps)
    return client.post("/api/v1/process", data, headers=headers or {})


def download_image(client, job_id) -> Image.Image:
    response = client.get(f"/api/v1/download/{job_id}")
    assert response.status_code == 200
    return Image.open(io.BytesIO(b"".join(response.streaming_content)))


def refusal(response) -> dict:
    assert response.status_code == 422, response.content
    return response.json()["error"]


# --- steps ---------------------------------------------------------------------------------
def test_a_recipe_runs_its_steps_on_one_image_and_the_result_is_what_pillow_makes_of_them_in_turn(
    client, run_jobs
):
    source = images.photo(80, 60)
    response = process(client, RESIZE_THEN_GRAY, image_file(source), format="png")
    assert response.status_code == 202, response.content
    job = response.json()
    assert job["service"] == "steps" and job["preset"] is None
    assert [step["service"] for step in job["parameters"]["steps"]] == ["resize", "grayscale"]
    assert job["parameters"]["format"] == "png"
    run_jobs()

    result = download_image(client, job["job_id"])
    expected = source.resize((40, 30), Image.Resampling.LANCZOS).convert("L")
    assert result.format == "PNG" and result.mode == "L" and result.size == (40, 30)
    assert np.abs(np.asarray(result, dtype=float) - np.asarray(expected, dtype=float)).max() <= 1

    metrics = client.get(f"/api/v1/result/{job['job_id']}").json()["metrics"]
    assert [step["service"] for step in metrics["steps"]] == ["resize", "grayscale"]
    assert "decode_ms" in metrics and "encode_ms" in metrics  # one decode, one encode


def test_the_output_options_may_be_given_on_the_last_step(client, run_jobs):
    steps = [{"service": "sharpen"}, {"service": "blur", "parameters": {"radius": 1, "format": "png"}}]
    job_id = process(client, steps).json()["job_id"]
    run_jobs()

    source = images.photo(80, 60)
    expected = source.filter(ImageFilter.UnsharpMask(2, 150, 3)).filter(ImageFilter.GaussianBlur(1))
    result = download_image(client, job_id)
    assert result.format == "PNG"
    assert np.abs(np.asarray(result, dtype=float) - np.asarray(expected, dtype=float)).max() <= 1


@pytest.mark.parametrize(
    ("steps", "fields", "message", "field"),
    [
        (
            [{"service": "resize", "parameters": {"width": 40}}, {"service": "sepia"}],
            {},
            "steps[1] (sepia): there is no service named 'sepia'",
            "steps[1]",
        ),
        (
            [{"service": "grayscale"}, {"service": "sharpen", "parameters": {"radius": 500}}],
            {},
            "steps[1] (sharpen): radius: Input should be less than or equal to 50",
            "steps[1].radius",
        ),
        (  # 80 x 60 made 2,400 wide is 1.3 megapixels, over MAX_OUTPUT_PIXELS (set to 1,000,000)
            [
                {"service": "grayscale"},
                {"service": "resize", "parameters": {"width": 2400}},
                {"service": "blur"},
            ],
            {},
            "steps[1] (resize): width=2400: the result would be 2400 × 1800",
            "steps[1].width",
        ),
        (  # what the resize makes is 40 wide: the crop's box is outside it
            [
                {"service": "resize", "parameters": {"width": 40}},
                {"service": "crop", "parameters": {"x": 30, "y": 0, "width": 20, "height": 10}},
            ],
            {},
            "steps[1] (crop): width: the box ends at x=50, past the right edge; the image is 40x30",
            "steps[1].width",
        ),
        (
            [{"service": "resize", "parameters": {"width": 40, "format": "png"}}, {"service": "grayscale"}],
            {},
            "steps[0] (resize): format: an output option belongs to the last step",
            "steps[0].format",
        ),
        (
            [{"service": "grayscale"}, {"service": "analyze"}],
            {},
            "steps[1] (analyze): service: analyze makes a report",
            "steps[1].service",
        ),
        ([{"service": "grayscale"}, "blur"], {}, "steps[1]: a step is", "steps[1]"),
        ("[{not json", {}, "steps: not JSON", "steps"),
        ([{"service": "grayscale"}], {"width": 10}, "width: beside steps, only the output options", "width"),
        (
            [{"service": "grayscale"}],
            {"quality": 500},
            "quality: Input should be less than or equal to 100",
            "quality",
        ),
    ],
)
def test_a_recipe_is_refused_whole_before_it_is_queued_naming_the_step(
    client, stub_broker, settings, steps, fields, message, field
):
    settings.MAX_OUTPUT_PIXELS = 1_000_000
    error = refusal(process(client, steps, **fields))

    assert error["message"].startswith(message), error["message"]
    assert field in [problem["field"] for problem in error["fields"]]
    assert stub_broker.queues["images"].qsize() == 0 and not Job.objects.exists()


def test_a_recipe_may_have_at_most_max_steps(client, stub_broker, settings):
    settings.MAX_STEPS = 3
    error = refusal(process(client, [{"service": "grayscale"}] * 4))
    assert error["message"] == "steps: 4 steps; a recipe may have at most 3 (MAX_STEPS)"


def test_a_recipe_of_one_step_is_the_same_job_as_that_services_endpoint(client, run_jobs):
    source = images.photo(80, 60, seed=3)
    first = client.post("/api/v1/resize", {"image": image_file(source), "width": "40"}).json()
    run_jobs()

    again = process(client, [{"service": "resize", "parameters": {"width": 40}}], image_file(source)).json()

    assert again["service"] == "resize" and again["parameters"] == first["parameters"]
    assert again["status"] == "completed"  # the first one's result, reused
    assert (
        client.get(f"/api/v1/result/{again['job_id']}").json()["metrics"]["reused_job_id"] == first["job_id"]
    )


def test_the_same_chain_written_another_way_reuses_the_result(client, run_jobs):
    source = images.photo(80, 60, seed=4)
    first = process(client, RESIZE_THEN_GRAY, image_file(source)).json()
    run_jobs()
    written_out = [
        {"service": "resize", "parameters": {"fit": "contain", "width": "40", "height": ""}},
        {"service": "grayscale", "parameters": {"threads": 1}},
    ]
    again = process(client, written_out, image_file(source), quality=85).json()
    other = process(client, [*RESIZE_THEN_GRAY, {"service": "blur"}], image_file(source)).json()

    assert again["status"] == "completed" and again["parameters"] == first["parameters"]
    assert other["status"] == "queued"  # another chain: computed afresh


def test_an_idempotency_key_replays_the_same_chain_and_refuses_another(client, stub_broker):
    source = images.png_bytes(images.photo(80, 60))
    headers = {"Idempotency-Key": "recipe-1"}
    first = process(client, RESIZE_THEN_GRAY, SimpleUploadedFile("a.png", source), headers=headers)
    written_out = [
        {"service": "resize", "parameters": {"width": "40", "fit": "contain"}},
        {"service": "grayscale"},
    ]
    replay = process(client, written_out, SimpleUploadedFile("a.png", source), headers=headers)
    other = process(client, RESIZE_THEN_GRAY[::-1], SimpleUploadedFile("a.png", source), headers=headers)

    assert replay.status_code == 202 and replay["Idempotent-Replayed"] == "true"
    assert replay.json()["job_id"] == first.json()["job_id"]
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_mismatch"
    assert Job.objects.count() == 1


def test_a_batch_runs_one_recipe_on_every_image(client, run_jobs):
    files = [image_file(images.photo(80, 60, seed=seed), f"{seed}.png") for seed in range(2)]
    response = client.post("/api/v1/jobs/batch", {"image": files, "steps": json.dumps(RESIZE_THEN_GRAY)})
    assert response.status_code == 202, response.content
    run_jobs()

    for job in response.json()["jobs"]:
        result = download_image(client, job["job_id"])
        assert result.size == (40, 30) and result.mode == "L"


def test_a_job_of_several_steps_that_the_worker_refuses_fails_naming_its_step(client, stub_broker, settings):
    # Accepted, then the limit is lowered before a worker takes it: the worker checks again.
    steps = [{"service": "grayscale"}, {"service": "resize", "parameters": {"width": 160}}]
    job_id = process(client, steps).json()["job_id"]
    settings.MAX_OUTPUT_PIXELS = 10_000
    process_queued(stub_broker)  # only now: the worker finds the lowered limit

    job = client.get(f"/api/v1/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["error"]["code"] == "output_too_large"
    assert job["error"]["message"].startswith("steps[1] (resize): width=160: the result would be 160 × 120")


# --- presets ---------------------------------------------------------------------------------
def test_the_presets_are_listed_with_their_recipes_as_jobs_run_them(client):
    listed = client.get("/api/v1/presets").json()
    web = next(preset for preset in listed["presets"] if preset["name"] == "web")

    assert listed["submit_url"] == "/api/v1/process"
    assert web["source"] == "settings" and web["description"]
    assert [step["service"] for step in web["steps"]] == ["resize", "sharpen"]
    assert web["steps"][0]["parameters"] == {
        "width": 1600,
        "height": None,
        "fit": "inside",
        "gravity": "center",
    }
    assert web["output"] == {"format": "auto", "quality": 80, "max_bytes": None}


def test_a_preset_made_in_the_admin_replaces_the_one_of_the_same_name_in_settings(client):
    Preset.objects.create(
        name="web", description="Ours", steps=[{"service": "thumbnail", "parameters": {"size": 300}}]
    )
    Preset.objects.create(name="mono", steps=[{"service": "grayscale"}], output={"format": "png"})

    presets = {preset["name"]: preset for preset in client.get("/api/v1/presets").json()["presets"]}

    assert presets["web"]["source"] == "admin" and presets["web"]["description"] == "Ours"
    assert [step["service"] for step in presets["web"]["steps"]] == ["thumbnail"]
    assert presets["mono"]["output"]["format"] == "png"
    assert {"avatar", "small"} <= set(presets)  # the other settings presets are still there


def test_a_client_sends_a_presets_name_and_gets_its_recipe(client, run_jobs, settings):
    settings.PRESETS = {
        "mono-thumb": {
            "description": "A gray 32-pixel thumbnail",
            "steps": [{"service": "thumbnail", "parameters": {"size": 32}}, {"service": "grayscale"}],
            "format": "png",
        }
    }
    job = process(client, preset="mono-thumb").json()
    assert job["preset"] == "mono-thumb" and job["service"] == "steps"
    assert job["parameters"]["format"] == "png"
    run_jobs()

    result = download_image(client, job["job_id"])
    assert result.size == (32, 24) and result.mode == "L" and result.format == "PNG"
    assert Job.objects.get(id=job["job_id"]).preset == "mono-thumb"


def test_a_preset_of_one_step_is_that_services_job(client, stub_broker):
    job = process(client, preset="avatar").json()
    assert job["service"] == "thumbnail" and job["preset"] == "avatar"
    assert job["parameters"]["square"] is True and job["parameters"]["format"] == "webp"


def test_an_unknown_preset_is_refused_naming_those_there_are(client, stub_broker):
    Preset.objects.create(name="mono", steps=[{"service": "grayscale"}])
    error = refusal(process(client, preset="sepia"))
    assert error["code"] == "unknown_preset"
    assert error["message"] == "there is no preset named 'sepia'; the presets: avatar, mono, small, web"


def test_a_preset_takes_no_parameters_beside_its_name(client, stub_broker):
    error = refusal(process(client, preset="web", quality=50))
    assert error["message"] == "quality: a preset carries its own parameters: send the preset's name alone"
    error = refusal(process(client, RESIZE_THEN_GRAY, preset="web"))
    assert error["fields"][0]["field"] == "steps"


def test_neither_steps_nor_a_preset_is_refused_saying_what_to_send(client, stub_broker):
    error = refusal(process(client, format="png"))
    assert error["message"].startswith("steps: send steps (a list of")


def test_a_preset_that_no_longer_fits_names_its_step_when_used(client, stub_broker):
    Preset.objects.create(
        name="broken", steps=[{"service": "grayscale"}, {"service": "blur", "parameters": {"radius": 999}}]
    )
    error = refusal(process(client, preset="broken"))
    assert error["message"].startswith("steps[1] (blur): radius:")
    assert "broken" not in [preset["name"] for preset in client.get("/api/v1/presets").json()["presets"]]


def test_presets_declared_in_settings_that_the_operations_refuse_fail_the_system_check(settings):
    settings.PRESETS = {
        "fine": {"steps": [{"service": "grayscale"}]},
        "bad name": {"steps": [{"service": "grayscale"}]},
        "typo": {"steps": [{"service": "grayscale"}], "qualty": 80},
        "unknown": {"steps": [{"service": "sepia"}]},
    }
    found = [problem for problem in checks.run_checks() if problem.id == "darkroom.E007"]
    assert sorted(problem.msg for problem in found) == [
        "PRESETS: 'bad name' is no preset name (1 to 64 letters, digits, - and _)",
        "PRESETS: typo: beside steps, only the output options (format, quality, max_bytes) are given",
        "PRESETS: unknown: steps[0] (sepia): there is no service named 'sepia'",
    ]


# --- the documents: OpenAPI and /api/v1/services ------------------------------------------------
def test_the_openapi_document_gives_steps_with_each_services_parameters(client):
    spec = client.get("/api/v1/openapi.json").json()
    operation = spec["paths"]["/api/v1/process"]["post"]
    body = operation["requestBody"]["content"]["multipart/form-data"]
    steps = body["schema"]["properties"]["steps"]
    by_service = {step["properties"]["service"]["const"]: step for step in steps["items"]["oneOf"]}

    assert body["encoding"]["steps"]["contentType"] == "application/json"
    assert set(by_service) >= {"resize", "crop", "sharpen", "grayscale", "analyze"}
    assert by_service["crop"]["properties"]["parameters"]["required"] == ["width", "height"]
    assert "format" not in by_service["resize"]["properties"]["parameters"]["properties"]
    assert {"preset", "format", "quality", "max_bytes"} <= set(body["schema"]["properties"])
    assert "422" in operation["responses"]
    assert "/api/v1/presets" in spec["paths"]
    assert "preset" in spec["components"]["schemas"]["JobOut"]["properties"]


def test_the_services_say_how_to_run_several_as_steps(client, settings):
    settings.MAX_STEPS = 7
    recipes = client.get("/api/v1/services").json()["recipes"]
    assert recipes == {
        "submit_url": "/api/v1/process",
        "output_options": ["format", "quality", "max_bytes"],
        "max_steps": 7,
        "presets_url": "/api/v1/presets",
    }


# --- the admin -----------------------------------------------------------------------------------
def test_the_admin_shows_a_jobs_recipe_step_by_step(admin_client, client, stub_broker):
    Preset.objects.create(
        name="hero",
        steps=[{"service": "resize", "parameters": {"width": 40}}, {"service": "sharpen"}],
        output={"format": "webp", "quality": 70},
    )
    job_id = process(client, preset="hero").json()["job_id"]

    page = admin_client.get(f"/admin/processing/job/{job_id}/change/").content.decode()
    listing = admin_client.get("/admin/processing/job/").content.decode()

    assert "<li><strong>resize</strong> width=40, fit=contain, gravity=center</li>" in page
    assert "<li><strong>sharpen</strong> radius=2, percent=150, threshold=3</li>" in page
    assert "then encoded with format=webp, quality=70" in page
    assert "hero: resize → sharpen" in listing


def test_the_admin_shows_a_single_services_job_as_a_recipe_of_one_step(admin_client, client, stub_broker):
    job_id = client.post("/api/v1/process/blur", {"image": image_file(), "radius": "3"}).json()["job_id"]
    page = admin_client.get(f"/admin/processing/job/{job_id}/change/").content.decode()
    assert "<li><strong>blur</strong> radius=3</li>" in page and "then encoded with quality=85" in page


def test_a_preset_is_saved_in_the_admin_only_when_its_recipe_is_one_a_client_could_send(admin_client):
    form = {"name": "bad", "description": "", "output": "{}"}
    form["steps"] = json.dumps([{"service": "grayscale"}, {"service": "crop", "parameters": {"x": 0}}])
    refused = admin_client.post("/admin/processing/preset/add/", form)
    assert refused.status_code == 200 and "steps[1] (crop)" in refused.content.decode()
    assert not Preset.objects.exists()

    form["steps"], form["output"] = json.dumps(RESIZE_THEN_GRAY), ""  # no output options: the defaults
    saved = admin_client.post("/admin/processing/preset/add/", form)
    assert saved.status_code == 302 and Preset.objects.get(name="bad").steps == RESIZE_THEN_GRAY
    assert Preset.objects.get(name="bad").output == {}


def test_a_settings_preset_is_edited_in_the_admin_by_making_one_of_its_name(admin_client):
    listing = admin_client.get("/admin/processing/preset/").content.decode()
    assert 'href="/admin/processing/preset/add/?name=web"' in listing

    form = admin_client.get("/admin/processing/preset/add/?name=web").content.decode()
    assert "sharpen" in form and "At most 1600 pixels wide" in form
