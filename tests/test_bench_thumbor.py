"""bench.thumbor: the thumbor URLs and config, the Darkroom client, the references, the report;
thumbor not needed."""

import io
import threading
from functools import partial
from pathlib import Path

import pytest
from django.test import RequestFactory
from PIL import Image, ImageFilter

from bench.http_client import Client
from bench.images import photo_jpeg
from bench.pipeline import Waiting
from bench.thumbor import (
    COMPARISONS,
    RESIZE_PARAMS,
    Comparison,
    Figures,
    Outcome,
    darkroom_job,
    darkroom_uploads,
    likeness,
    parse_args,
    report,
    run_concurrently,
    summarise,
    thumbor_config,
    thumbor_path,
    thumbor_request,
)
from processing.imaging.operations import OPERATIONS
from tests import images
from tests.scripted_server import Answer, ScriptedServer, Seen

BY_SERVICE = {comparison.service: comparison for comparison in COMPARISONS}


def test_thumbor_fits_the_image_inside_the_box_that_darkroom_resizes_into():
    resize = BY_SERVICE["resize"]
    assert thumbor_path(resize, "run-0001.jpg") == "/unsafe/fit-in/400x300/run-0001.jpg"
    assert resize.params == {"width": "400", "height": "300", "fit": "contain"}


def test_thumbor_grayscale_is_its_filter_alone_with_no_resize():
    assert thumbor_path(BY_SERVICE["grayscale"], "run-0001.jpg") == "/unsafe/filters:grayscale()/run-0001.jpg"


def test_the_issue_targets_are_0_6x_for_resize_and_2x_for_grayscale():
    assert {c.service: c.target for c in COMPARISONS} == {"resize": 0.6, "grayscale": 2.0}


def test_the_references_are_the_full_decode_resized_with_lanczos_and_its_luma():
    photo = images.gradient(1920, 1080)
    jpeg = images.jpeg_bytes(photo)
    resized, gray = (BY_SERVICE[service].reference(jpeg) for service in ("resize", "grayscale"))
    assert resized.size == (400, 225) and resized.mode == "RGB"
    assert (gray.size, gray.mode) == ((1920, 1080), "L")
    decoded = Image.open(io.BytesIO(jpeg)).convert("RGB")
    assert images.ssim(resized, decoded.resize((400, 225), Image.Resampling.LANCZOS)) == pytest.approx(1.0)


def test_a_blurred_result_scores_lower_against_the_reference_than_a_faithful_one():
    reference = Image.open(io.BytesIO(photo_jpeg(400, 225)))
    assert likeness(images.jpeg_bytes(reference), reference) > 0.99
    assert likeness(images.jpeg_bytes(reference.filter(ImageFilter.GaussianBlur(3))), reference) < 0.8


def test_a_result_of_another_size_is_brought_to_the_references_before_it_is_scored():
    reference = images.gradient(400, 225)
    assert likeness(images.jpeg_bytes(images.gradient(800, 450)), reference) > 0.95


@pytest.mark.parametrize("comparison", COMPARISONS, ids=lambda c: c.service)
def test_each_comparison_sends_darkroom_parameters_its_service_accepts(comparison):
    params = OPERATIONS[comparison.service].parse(comparison.params)
    assert params.quality == 85 and params.format is None  # Darkroom's default JPEG, as thumbor is told


def test_thumbor_reads_the_folder_and_keeps_no_original_or_result():
    settings = {}
    exec(thumbor_config(Path("/images"), 85), settings)  # thumbor.conf is Python
    assert settings["LOADER"] == "thumbor.loaders.file_loader"
    assert settings["FILE_LOADER_ROOT_PATH"] == "/images"
    assert settings["STORAGE"] == "thumbor.storages.no_storage"
    assert settings["RESULT_STORAGE"] is None
    assert settings["ALLOW_UNSAFE_URL"] is True
    assert settings["QUALITY"] == 85
    assert settings["PROGRESSIVE_JPEG"] is False


def test_figures_count_only_completed_images_over_the_whole_run():
    reference = images.gradient(400, 225)
    result = images.jpeg_bytes(reference)
    outcomes = [
        Outcome(started=0.0, finished=1.0, size=(400, 225), result_bytes=1024, content=result, requests=1),
        Outcome(started=0.0, finished=2.0, size=(400, 225), result_bytes=3072, content=result, requests=1),
        Outcome(started=1.0, finished=4.0, size=(400, 225), result_bytes=2048, content=result, requests=4),
        Outcome(started=0.5, finished=0.6, error="submit answered 503"),
    ]
    figures = summarise(outcomes, other_load=0.25, reference=reference)
    assert (figures.requested, figures.completed) == (4, 3)
    assert figures.per_s == pytest.approx(3 / 4)  # from the first start to the last finish
    assert figures.p50_ms == pytest.approx(2000)
    assert figures.result_kib == pytest.approx(2.0)
    assert figures.requests_per_job == pytest.approx(2.0)
    assert figures.ssim > 0.99
    assert figures.sizes == [(400, 225)]
    assert figures.errors == ["submit answered 503"]


def figures(per_s: float, ssim: float = 0.98) -> Figures:
    return Figures(
        requested=40, completed=40, per_s=per_s, p50_ms=120, p99_ms=300, ssim=ssim, sizes=[(400, 225)]
    )


def test_the_report_gives_darkroom_over_thumbor_and_whether_each_target_is_met():
    results = [
        (BY_SERVICE["resize"], figures(20.0), figures(15.0, ssim=0.985)),
        (BY_SERVICE["grayscale"], figures(10.0), figures(15.0)),
    ]
    text = report(["header"], results)
    assert (
        "resize: 0.75x thumbor (target >= 0.6x), SSIM 0.9850 vs thumbor's 0.9800 (target: at least "
        "thumbor's): met" in text
    )
    assert "grayscale: 1.50x thumbor (target >= 2x), SSIM 0.9800 vs thumbor's 0.9800" in text
    assert text.rstrip().endswith("missed")
    assert "20.0 req/s" in text and "15.0 jobs/s" in text and " 0.9850 " in text


def test_a_faster_result_further_from_the_reference_than_thumbors_misses_the_target():
    results = [(BY_SERVICE["resize"], figures(20.0, ssim=0.99), figures(30.0, ssim=0.97))]
    assert "1.50x thumbor" in report([], results) and report([], results).endswith("missed")


def test_the_report_has_no_ratio_when_thumbor_completed_nothing():
    results = [(BY_SERVICE["resize"], Figures(requested=40, completed=0), figures(25.0))]
    assert "resize: no figure for one side (target >= 0.6x)" in report([], results)


def test_darkrooms_client_asks_for_one_request_per_job_by_default():
    assert parse_args([]).waiting == Waiting("one-request")
    assert parse_args(["--mode", "long-poll"]).waiting == Waiting("long-poll")
    assert parse_args(["--poll", "0.1"]).waiting == Waiting("poll", poll_every=0.1)


# --- the Darkroom client against a server that answers in one request, or long-polls --------------
RESULT = images.jpeg_bytes(images.gradient(400, 225))


def fake_darkroom(answers_before_done: int, one_request: bool = False):
    """Answers `processing` to the first waits, then `completed`; the result is a 400x225 JPEG.
    With `one_request`, the submit's answer is the result itself, as the one-request contract says."""

    def answer(request: Seen, seen: list[Seen]) -> Answer:
        if request.method == "POST" and one_request:
            headers = {"Content-Type": "image/jpeg", "Job-Id": "j1", "Job-Status": "completed"}
            return Answer(200, headers, RESULT)
        if request.method == "POST":
            return Answer.of_json({"job_id": "j1", "status": "queued"}, status=202)
        if request.path == "/api/v1/jobs/j1":
            waits = sum(1 for r in seen if r.path == "/api/v1/jobs/j1")
            return Answer.of_json(
                {"job_id": "j1", "status": "completed" if waits > answers_before_done else "processing"}
            )
        if request.path == "/api/v1/download/j1":
            return Answer(200, {"Content-Type": "image/jpeg"}, RESULT)
        return Answer(404)

    return answer


def job_against(answer, comparison: Comparison, image: bytes) -> tuple[Outcome, list[Seen]]:
    uploads = darkroom_uploads(comparison, {"run-0001.jpg": image})
    with ScriptedServer(answer) as server, Client(server.url, timeout=10) as client:
        outcome = darkroom_job(
            client,
            "run-0001.jpg",
            threading.Event(),
            comparison=comparison,
            uploads=uploads,
            waiting=Waiting("one-request"),
        )
    return outcome, server.seen


def run_job(answers_before_done: int, one_request: bool = False) -> tuple[Outcome, list[Seen]]:
    image = images.jpeg_bytes(images.gradient(64, 48))
    return job_against(fake_darkroom(answers_before_done, one_request), BY_SERVICE["resize"], image)


def test_a_server_that_answers_with_the_result_takes_one_request_per_job():
    outcome, seen = run_job(answers_before_done=0, one_request=True)
    assert outcome.error is None and outcome.size == (400, 225) and outcome.requests == 1
    assert outcome.content == RESULT
    assert [(r.method, r.path) for r in seen] == [("POST", "/api/v1/process/resize")]
    assert seen[0].headers["Prefer"] == "wait=30, return=representation"


def test_the_upload_carries_the_comparisons_parameters_and_the_image():
    image = images.jpeg_bytes(images.gradient(64, 48))
    _, seen = job_against(fake_darkroom(0, one_request=True), BY_SERVICE["resize"], image)
    request = RequestFactory().generic(
        "POST", "/", seen[0].body, content_type=seen[0].headers["Content-Type"]
    )
    assert request.POST.dict() == RESIZE_PARAMS
    assert request.FILES["image"].read() == image


def test_a_server_that_answers_202_is_long_polled_and_the_result_is_downloaded():
    outcome, seen = run_job(answers_before_done=0)
    assert outcome.error is None and outcome.size == (400, 225) and outcome.requests == 3
    assert [(r.method, r.path) for r in seen] == [
        ("POST", "/api/v1/process/resize"),
        ("GET", "/api/v1/jobs/j1"),
        ("GET", "/api/v1/download/j1"),
    ]
    assert seen[1].params["wait"] == "30"


def test_a_long_poll_that_runs_out_is_asked_again_until_the_job_finishes():
    outcome, seen = run_job(answers_before_done=3)
    assert outcome.error is None and outcome.size == (400, 225)
    assert [r.path for r in seen].count("/api/v1/jobs/j1") == 4


def test_a_failed_job_is_counted_as_failed_and_nothing_is_downloaded():
    def failing(request: Seen, seen: list[Seen]) -> Answer:
        if request.method == "POST":
            return Answer.of_json({"job_id": "j1", "status": "queued"}, status=202)
        return Answer.of_json({"status": "failed", "error": {"code": "unprocessable_image"}})

    outcome, seen = job_against(failing, BY_SERVICE["grayscale"], b"jpeg")
    assert outcome.error.startswith("failed:")
    assert "/api/v1/download/j1" not in [r.path for r in seen]


# --- thumbor's side, with the same client ---------------------------------------------------
def test_thumbor_is_asked_on_the_same_kept_alive_client_and_its_image_is_measured():
    def thumbor(request: Seen, seen: list[Seen]) -> Answer:
        return Answer(200, {"Content-Type": "image/jpeg"}, RESULT)

    with ScriptedServer(thumbor) as server:
        outcomes = run_concurrently(
            server.url,
            ["a.jpg", "b.jpg", "c.jpg"],
            1,
            partial(thumbor_request, comparison=BY_SERVICE["resize"]),
        )
    assert [(o.error, o.size) for o in outcomes] == [(None, (400, 225))] * 3
    assert [r.path for r in server.seen] == [
        f"/unsafe/fit-in/400x300/{name}" for name in ("a.jpg", "b.jpg", "c.jpg")
    ]
    assert {r.connection for r in server.seen} == {1}


def test_a_thumbor_error_names_the_request_that_answered():
    with (
        ScriptedServer(lambda request, seen: Answer(404)) as server,
        Client(server.url, timeout=10) as client,
    ):
        outcome = thumbor_request(client, "a.jpg", threading.Event(), comparison=BY_SERVICE["grayscale"])
    assert outcome.error == "GET /unsafe/filters:grayscale()/a.jpg answered 404"


# --- the same client against the real stack ----------------------------------------------
@pytest.mark.services
@pytest.mark.parametrize("comparison", COMPARISONS, ids=lambda c: c.service)
def test_the_darkroom_client_gets_the_result_thumbor_would_give(live_stack, worker, comparison):
    image = images.jpeg_bytes(images.gradient(1920, 1080))
    uploads = darkroom_uploads(comparison, {"photo.jpg": image})
    with Client(live_stack.base_url, timeout=60) as client:
        outcome = darkroom_job(
            client, "photo.jpg", threading.Event(), comparison=comparison, uploads=uploads, waiting=Waiting()
        )
    assert outcome.error is None
    # thumbor's fit-in/400x300 of 1920x1080 is 400x225; its grayscale keeps the size.
    assert outcome.size == {"resize": (400, 225), "grayscale": (1920, 1080)}[comparison.service]
    assert likeness(outcome.content, comparison.reference(image)) > 0.9
