"""The hostile corpus: small generated files that would cost a careless server dearly, and what each gets.

At the gateway, the API and the HTML upload form answer each with a 4xx and a code before anything is
queued; what only decoding can reveal ends as a `failed` job with its reason. The worker's memory stays
bounded on the cases that used to make gigabytes of pixels. Not-an-image files (text, EPS, PDF, SVG,
empty) are in test_api_process.py and test_imaging.py; every file here is a few hundred KB at most.
"""

import json
import subprocess
import sys

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from processing.imaging import codecs
from processing.jobs import publishing
from processing.models import Job
from processing.worker import actors
from processing.worker.actors import process_job
from tests import images
from tests.factories import stored_job

pytestmark = pytest.mark.django_db(transaction=True)

WIDE_PNG = images.png_bytes(images.solid(20000, 200))  # 12 KB; rotated 45 degrees, 14284 x 14284
TINY_PNG = images.png_bytes(images.solid(1, 1))  # under 100 bytes
NOISE_PNG = images.png_bytes(images.noise(64, 64))  # 12 KB
# Issue 24: a 49-megapixel AVIF squeezed into a kilobyte took 30 encodes (40 s) to end at 55 x 55.
BUDGET_ATTACK = {"width": 7000, "height": 7000, "fit": "fill", "format": "avif", "max_bytes": 1024}
AVIF_OVER_ITS_CEILING = {"width": 2100, "format": "avif"}  # 4.4 megapixels from 600 x 600
SMOOTH_PNG = images.png_bytes(images.gradient(600, 600))
HEADER_OF_16_MP = images.png_header_bytes(4000, 4000)  # ten grayscale runs over it: 160 megapixels
# Issue 24: a megabyte of empty JPEG segments cost 0.38 s of the gateway's CPU for Pillow to walk.
EMPTY_SEGMENTS_JPEG = images.jpeg_with_empty_segments(250_000)
# Pillow steps over junk between segments a byte at a time.
STRAY_BYTES_JPEG = images.jpeg_with_empty_segments(1, bytes(100_000))

# (id, file, service, parameters, status, code): refused at upload, before a job exists.
REFUSED_AT_UPLOAD = [
    ("jpeg-cut-at-200", images.cut_jpeg_bytes(200), "grayscale", {}, 422, "corrupt_image"),
    ("jpeg-cut-at-250", images.cut_jpeg_bytes(250), "grayscale", {}, 422, "corrupt_image"),
    ("jpeg-cut-at-300", images.cut_jpeg_bytes(300), "grayscale", {}, 422, "corrupt_image"),
    ("png-cut-in-its-header", images.cut_png_bytes(20), "grayscale", {}, 422, "corrupt_image"),
    ("png-ztxt-bomb", images.png_bomb_bytes(b"zTXt"), "grayscale", {}, 422, "corrupt_image"),
    ("png-itxt-bomb", images.png_bomb_bytes(b"iTXt"), "grayscale", {}, 422, "corrupt_image"),
    ("png-icc-bomb", images.png_bomb_bytes(b"iCCP"), "grayscale", {}, 422, "corrupt_image"),
    ("png-claiming-30000x30000", images.png_header_bytes(), "grayscale", {}, 422, "image_too_large"),
    ("gif-claiming-65535x65535", images.gif_header_bytes(), "grayscale", {}, 422, "image_too_large"),
    ("bmp-claiming-30000x30000", images.bmp_header_bytes(), "grayscale", {}, 422, "image_too_large"),
    ("tiff-claiming-30000x30000", images.tiff_header_bytes(), "grayscale", {}, 422, "image_too_large"),
    ("jpeg-with-20000-scans", images.many_scans_jpeg_bytes(20_000), "grayscale", {}, 422, "too_many_scans"),
    ("rotate-45-of-20000x200", WIDE_PNG, "rotate", {"angle": 45}, 422, "output_too_large"),
    (
        "resize-1x1-to-10000x10000",
        TINY_PNG,
        "resize",
        {"width": 10000, "height": 10000, "fit": "fill"},
        422,
        "output_too_large",
    ),
    ("resize-one-side-to-10000", WIDE_PNG, "resize", {"height": 10000}, 422, "output_too_large"),
    ("avif-budget-of-64x64-noise-to-7000", NOISE_PNG, "resize", BUDGET_ATTACK, 422, "output_too_large"),
    ("avif-over-its-own-ceiling", SMOOTH_PNG, "resize", AVIF_OVER_ITS_CEILING, 422, "output_too_large"),
    ("grayscale-10-runs-of-16-mp", HEADER_OF_16_MP, "grayscale", {"runs": 10}, 422, "invalid_parameters"),
    ("jpeg-of-a-megabyte-of-empty-segments", EMPTY_SEGMENTS_JPEG, "grayscale", {}, 422, "corrupt_image"),
    ("jpeg-of-stray-bytes", STRAY_BYTES_JPEG, "grayscale", {}, 422, "corrupt_image"),
]

# (id, file, service, parameters, code): accepted (the header is fine), then failed by the worker.
FAILED_BY_THE_WORKER = [
    ("png-cut-in-its-pixels", images.cut_png_bytes(60), "grayscale", {}, "corrupt_image"),
    (
        "png-ztxt-bomb-after-the-pixels",
        images.png_bomb_bytes(b"zTXt", after_pixels=True),
        "grayscale",
        {},
        "corrupt_image",
    ),
    (
        "png-icc-bomb-after-the-pixels",
        images.png_bomb_bytes(b"iCCP", after_pixels=True),
        "blur",
        {},
        "corrupt_image",
    ),
    ("jpeg-cut-in-its-scan", images.truncated_jpeg_bytes(), "sobel", {}, "corrupt_image"),
]

# The same files stored as jobs without the gateway's checks (a job accepted before a limit was
# lowered, or requeued by staff): the worker refuses them before it decodes or makes the pixels.
FAILED_WITHOUT_THE_GATEWAY = [
    ("jpeg-with-20000-scans", images.many_scans_jpeg_bytes(20_000), "grayscale", {}, "too_many_scans"),
    ("rotate-45-of-20000x200", WIDE_PNG, "rotate", {"angle": 45}, "output_too_large"),
    (
        "resize-1x1-to-10000x10000",
        TINY_PNG,
        "resize",
        {"width": 10000, "height": 10000, "fit": "fill"},
        "output_too_large",
    ),
    ("avif-budget-of-64x64-noise-to-7000", NOISE_PNG, "resize", BUDGET_ATTACK, "output_too_large"),
    ("avif-over-its-own-ceiling", SMOOTH_PNG, "resize", AVIF_OVER_ITS_CEILING, "output_too_large"),
]


def cases(table):
    return [pytest.param(*case[1:], id=case[0]) for case in table]


def api_upload(client, service: str, data: bytes, parameters: dict):
    payload = {"image": SimpleUploadedFile("hostile.img", data), **{k: str(v) for k, v in parameters.items()}}
    return client.post(f"/api/v1/process/{service}", payload)


def form_upload(client, service: str, data: bytes, parameters: dict):
    client.get("/")  # a session, as a browser has before it posts the form
    payload = {"service": service, "image": SimpleUploadedFile("hostile.img", data), **parameters}
    return client.post("/upload", {k: v if k == "image" else str(v) for k, v in payload.items()})


# --- At the gateway ----------------------------------------------------------------------------


@pytest.mark.parametrize("data, service, parameters, status, code", cases(REFUSED_AT_UPLOAD))
def test_the_api_refuses_a_hostile_upload_with_a_4xx_and_its_code(
    client, stub_broker, data, service, parameters, status, code
):
    response = api_upload(client, service, data, parameters)

    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert response.json()["error"]["message"]
    assert Job.objects.count() == 0


@pytest.mark.parametrize("data, service, parameters, status, code", cases(REFUSED_AT_UPLOAD))
def test_the_upload_form_shows_why_a_hostile_upload_was_refused(
    client, stub_broker, data, service, parameters, status, code
):
    api_message = api_upload(client, service, data, parameters).json()["error"]["message"]
    response = form_upload(client, service, data, parameters)

    assert response.status_code == status
    assert response["Content-Type"].startswith("text/html")
    assert api_message.split(": ", 1)[1].replace("'", "&#x27;") in response.content.decode()
    assert Job.objects.count() == 0


def test_a_result_too_large_names_the_parameters_and_the_limit(client, stub_broker):
    error = api_upload(client, "rotate", WIDE_PNG, {"angle": 45}).json()["error"]

    assert error["message"] == (
        "angle=45, expand=true: the result would be 14284 × 14284 = 204032656 pixels, "
        "which exceeds MAX_OUTPUT_PIXELS (50000000)"
    )
    assert [problem["field"] for problem in error["fields"]] == ["angle", "expand"]


@pytest.mark.parametrize(
    ("data", "parameters", "fields", "rule"),
    [
        (NOISE_PNG, BUDGET_ATTACK, ["width", "height"], "max_enlargement"),
        (SMOOTH_PNG, AVIF_OVER_ITS_CEILING, ["width", "format"], "max_avif_output_pixels"),
    ],
    ids=["enlargement", "avif"],
)
def test_a_result_costlier_than_its_limits_names_the_parameters_and_the_rule(
    client, stub_broker, data, parameters, fields, rule
):
    error = api_upload(client, "resize", data, parameters).json()["error"]

    assert [(problem["field"], problem["rule"]) for problem in error["fields"]] == [
        (field, rule) for field in fields
    ]
    assert rule.upper() in error["message"]
    assert Job.objects.count() == 0


def test_the_enlargement_and_avif_limits_are_settings(client, stub_broker, settings):
    settings.MAX_ENLARGEMENT = 20_000
    settings.MAX_AVIF_OUTPUT_PIXELS = 50_000_000
    assert api_upload(client, "resize", NOISE_PNG, BUDGET_ATTACK).status_code == 202
    assert api_upload(client, "resize", SMOOTH_PNG, AVIF_OVER_ITS_CEILING).status_code == 202


def test_the_output_limit_is_a_setting(client, stub_broker, settings):
    settings.MAX_OUTPUT_PIXELS = 1000
    settings.MAX_ENLARGEMENT = 10_000  # a 1 x 1 upload: only the output limit is tried here
    refused = api_upload(client, "resize", TINY_PNG, {"width": 40, "height": 40, "fit": "fill"})
    assert refused.status_code == 422 and "MAX_OUTPUT_PIXELS (1000)" in refused.json()["error"]["message"]
    assert (
        api_upload(client, "resize", TINY_PNG, {"width": 30, "height": 30, "fit": "fill"}).status_code == 202
    )


def test_the_scan_limit_is_a_setting(client, stub_broker, settings):
    ordinary = images.encode(images.photo(64, 64), "JPEG", progressive=True)  # about ten scans
    assert api_upload(client, "grayscale", ordinary, {}).status_code == 202
    settings.MAX_JPEG_SCANS = 3
    assert api_upload(client, "grayscale", ordinary, {}).json()["error"]["code"] == "too_many_scans"


# --- In the worker -----------------------------------------------------------------------------


@pytest.mark.parametrize("data, service, parameters, code", cases(FAILED_BY_THE_WORKER))
def test_a_file_damaged_past_its_header_is_accepted_then_fails_with_a_reason(
    client, run_jobs, data, service, parameters, code
):
    response = api_upload(client, service, data, parameters)
    assert response.status_code == 202
    run_jobs()

    job = client.get(f"/api/v1/jobs/{response.json()['job_id']}").json()
    assert job["status"] == "failed" and job["error"]["code"] == code


@pytest.mark.parametrize("data, service, parameters, code", cases(FAILED_WITHOUT_THE_GATEWAY))
def test_the_worker_refuses_what_the_gateway_would_have(run_jobs, data, service, parameters, code):
    job = stored_job(service, data, parameters=parameters)
    publishing.publish(job)
    run_jobs()

    job.refresh_from_db()
    assert (job.status, job.error_code) == (Job.FAILED, code)
    assert not job.output_key


def test_a_decode_that_never_ends_fails_the_job_at_the_time_limit(run_jobs, monkeypatch):
    """Pillow feeds its decoders from Python a block at a time, so the time limit's exception
    lands between two blocks of a slow decode: here, one that would otherwise never end."""

    def decode_forever(path, *args, **kwargs):
        while True:
            codecs.load_image(path, *args, **kwargs)

    monkeypatch.setattr(actors, "load_image", decode_forever)
    monkeypatch.setitem(process_job.options, "time_limit", 200)
    job = stored_job("grayscale")
    publishing.publish(job)
    run_jobs()

    job.refresh_from_db()
    assert (job.status, job.error_code) == (Job.FAILED, "time_limit_exceeded")


# --- The worker's memory -----------------------------------------------------------------------

# What a worker does with a job, in a process of its own: decode with the limits, check the
# output's size, apply the operation. It prints the outcome and its peak RSS.
WORKER_STEPS = """
import json, re, sys
from processing.errors import UnprocessableImage
from processing.imaging.codecs import load_image
from processing.imaging.operations import get_operation

path, service, parameters = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
operation = get_operation(service)
params = operation.parse(parameters)
try:
    image, info = load_image(path, 50_000_000, None, max_jpeg_scans=100)
    operation.check_output(params, info.width, info.height, max_pixels=50_000_000)
    result = operation.apply(image, params, lambda fraction: None)
    outcome = "made {}x{}".format(*result.image.size)
except UnprocessableImage as exc:
    outcome = exc.code
# VmHWM, not getrusage's ru_maxrss: that one keeps, across the exec, the RSS of the parent it was forked from.
with open("/proc/self/status") as status:
    peak_rss_kb = int(re.search(r"^VmHWM:\\s+(\\d+) kB", status.read(), re.M).group(1))
print(json.dumps({"outcome": outcome, "peak_rss_kb": peak_rss_kb}))
"""
PEAK_RSS_BOUND_MB = 300  # unbounded, the rotation alone made 612 MB of pixels


@pytest.mark.parametrize(
    "data, service, parameters, outcome",
    [
        pytest.param(WIDE_PNG, "rotate", {"angle": 45}, "output_too_large", id="rotate-45-of-20000x200"),
        pytest.param(
            TINY_PNG,
            "resize",
            {"width": 10000, "height": 10000, "fit": "fill"},
            "output_too_large",
            id="resize",
        ),
        pytest.param(
            images.many_scans_jpeg_bytes(20_000, 4000, 4000),
            "grayscale",
            {},
            "too_many_scans",
            id="decode-scans",
        ),
        pytest.param(WIDE_PNG, "rotate", {"angle": 90}, "made 200x20000", id="rotate-90-within-the-limits"),
    ],
)
def test_the_worker_stays_within_its_memory_bound_on_hostile_jobs(
    tmp_path, data, service, parameters, outcome
):
    path = tmp_path / "input"
    path.write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", WORKER_STEPS, str(path), service, json.dumps(parameters)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    report = json.loads(done.stdout)

    assert report["outcome"] == outcome
    # The child's own peak: RUSAGE_CHILDREN here would be the largest of every child this test run
    # has waited for (servers and workers of the live tests among them), and the child's ru_maxrss
    # at least this test process's own RSS.
    assert report["peak_rss_kb"] < PEAK_RSS_BOUND_MB * 1024
