"""bench.thumbor: the thumbor URLs and config, the Darkroom client, and the report; thumbor not needed."""

import threading
from pathlib import Path

import httpx
import pytest

from bench.thumbor import (
    COMPARISONS,
    Figures,
    Outcome,
    darkroom_job,
    report,
    summarise,
    thumbor_config,
    thumbor_path,
)
from processing.imaging.operations import OPERATIONS
from tests import images

BY_SERVICE = {comparison.service: comparison for comparison in COMPARISONS}


def test_thumbor_fits_the_image_inside_the_box_that_darkroom_resizes_into():
    resize = BY_SERVICE["resize"]
    assert thumbor_path(resize, "run-0001.jpg") == "/unsafe/fit-in/400x300/run-0001.jpg"
    assert resize.params == {"width": "400", "height": "300", "fit": "contain"}


def test_thumbor_grayscale_is_its_filter_alone_with_no_resize():
    assert thumbor_path(BY_SERVICE["grayscale"], "run-0001.jpg") == "/unsafe/filters:grayscale()/run-0001.jpg"


def test_the_issue_targets_are_1x_for_resize_and_2x_for_grayscale():
    assert {c.service: c.target for c in COMPARISONS} == {"resize": 1.0, "grayscale": 2.0}


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
    outcomes = [
        Outcome(started=0.0, finished=1.0, size=(400, 225), result_bytes=1024),
        Outcome(started=0.0, finished=2.0, size=(400, 225), result_bytes=3072),
        Outcome(started=1.0, finished=4.0, size=(400, 225), result_bytes=2048),
        Outcome(started=0.5, finished=0.6, error="submit answered 503"),
    ]
    figures = summarise(outcomes, other_load=0.25)
    assert (figures.requested, figures.completed) == (4, 3)
    assert figures.per_s == pytest.approx(3 / 4)  # from the first start to the last finish
    assert figures.p50_ms == pytest.approx(2000)
    assert figures.result_kib == pytest.approx(2.0)
    assert figures.sizes == [(400, 225)]
    assert figures.errors == ["submit answered 503"]


def figures(per_s: float) -> Figures:
    return Figures(requested=40, completed=40, per_s=per_s, p50_ms=120, p99_ms=300, sizes=[(400, 225)])


def test_the_report_gives_darkroom_over_thumbor_and_whether_each_target_is_met():
    results = [
        (BY_SERVICE["resize"], figures(20.0), figures(25.0)),
        (BY_SERVICE["grayscale"], figures(10.0), figures(15.0)),
    ]
    text = report(["header"], results)
    assert "resize: 1.25x thumbor, target >= 1x: met" in text
    assert "grayscale: 1.50x thumbor, target >= 2x: missed" in text
    assert "20.0 req/s" in text and "25.0 jobs/s" in text


def test_the_report_has_no_ratio_when_thumbor_completed_nothing():
    results = [(BY_SERVICE["resize"], Figures(requested=40, completed=0), figures(25.0))]
    assert "resize: no thumbor figure (target >= 1x)" in report([], results)


# --- the Darkroom client against a server that does or does not long-poll ---------------
def fake_darkroom(answers_before_done: int, seen: list[httpx.Request]) -> httpx.MockTransport:
    """Answers `processing` to the first waits, then `completed`; the result is a 400x225 JPEG."""
    result = images.jpeg_bytes(images.gradient(400, 225))

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(202, json={"job_id": "j1", "status": "queued"})
        if request.url.path == "/api/v1/jobs/j1":
            waits = sum(1 for r in seen if r.url.path == "/api/v1/jobs/j1")
            status = "completed" if waits > answers_before_done else "processing"
            return httpx.Response(200, json={"job_id": "j1", "status": status})
        if request.url.path == "/api/v1/download/j1":
            return httpx.Response(200, content=result, headers={"Content-Type": "image/jpeg"})
        return httpx.Response(404)

    return httpx.MockTransport(handle)


def run_job(answers_before_done: int, seen: list[httpx.Request]) -> Outcome:
    upload = {"run-0001.jpg": images.jpeg_bytes(images.gradient(64, 48))}
    transport = fake_darkroom(answers_before_done, seen)
    with httpx.Client(base_url="http://darkroom", transport=transport) as client:
        return darkroom_job(
            client, "run-0001.jpg", threading.Event(), comparison=BY_SERVICE["resize"], images=upload, poll=0
        )


def test_a_server_that_long_polls_answers_the_first_wait_and_the_result_is_downloaded():
    seen = []
    outcome = run_job(answers_before_done=0, seen=seen)
    assert outcome.error is None and outcome.size == (400, 225)
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", "/api/v1/process/resize"),
        ("GET", "/api/v1/jobs/j1"),
        ("GET", "/api/v1/download/j1"),
    ]
    assert seen[1].url.params["wait"] == "30"


def test_a_server_that_ignores_wait_is_polled_until_the_job_finishes():
    seen = []
    outcome = run_job(answers_before_done=3, seen=seen)
    assert outcome.error is None and outcome.size == (400, 225)
    assert [r.url.path for r in seen].count("/api/v1/jobs/j1") == 4


def test_a_failed_job_is_counted_as_failed_and_nothing_is_downloaded():
    seen = []

    def failing(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(202, json={"job_id": "j1"})
        return httpx.Response(200, json={"status": "failed", "error": {"code": "unprocessable_image"}})

    with httpx.Client(base_url="http://darkroom", transport=httpx.MockTransport(failing)) as client:
        outcome = darkroom_job(
            client,
            "a.jpg",
            threading.Event(),
            comparison=BY_SERVICE["grayscale"],
            images={"a.jpg": b"jpeg"},
            poll=0,
        )
    assert outcome.error.startswith("failed:")
    assert "/api/v1/download/j1" not in [r.url.path for r in seen]


# --- the same client against the real stack ----------------------------------------------
@pytest.fixture(scope="module")
def worker(live_stack):
    live_stack.start_worker("worker")
    yield
    live_stack.stop("worker")


@pytest.mark.services
@pytest.mark.parametrize("comparison", COMPARISONS, ids=lambda c: c.service)
def test_the_darkroom_client_gets_the_result_thumbor_would_give(live_stack, worker, comparison):
    upload = {"photo.jpg": images.jpeg_bytes(images.gradient(1920, 1080))}
    with httpx.Client(base_url=live_stack.base_url, timeout=60) as client:
        outcome = darkroom_job(
            client, "photo.jpg", threading.Event(), comparison=comparison, images=upload, poll=0.05
        )
    assert outcome.error is None
    # thumbor's fit-in/400x300 of 1920x1080 is 400x225; its grayscale keeps the size.
    assert outcome.size == {"resize": (400, 225), "grayscale": (1920, 1080)}[comparison.service]
