"""Animated GIFs and WebPs: their frames kept through the operations that allow it, in GIF or WebP, within
the animation limits; the first frame alone, said so, where they are not. Through the API and a real
worker (in-process), every result compared frame by frame with Pillow doing the same to each frame."""

import io
import json

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, ImageFilter, ImageSequence

from processing.errors import UnprocessableImage
from processing.imaging import animation, formats, frame_count
from processing.imaging.codecs import probe
from processing.imaging.operations import get_operation
from processing.imaging.operations.base import OperationResult
from processing.imaging.recipes import Recipe, Step
from processing.models import Job
from processing.worker.actors import pixels_of
from tests import images
from tests.factories import process_queued

through_the_api = pytest.mark.django_db(transaction=True)

LIMIT = 50_000_000
# How far a result's frame may be from Pillow's own, on average per sample: a GIF's palette holds these
# few colours almost exactly; lossy WebP halves the colour resolution, which blurs the edges of a tiny frame.
TOLERANCE = {"GIF": 2.0, "WEBP": 6.0}
WIDTH, HEIGHT = 48, 32  # images.animation_frames()
FRAMES = len(images.FRAME_COLORS)


# --- Helpers --------------------------------------------------------------------------------------


def submit(client, data: bytes, service: str, filename: str = "animation.gif", headers=None, **params):
    payload = {"image": SimpleUploadedFile(filename, data), **{k: str(v) for k, v in params.items()}}
    return client.post(f"/api/v1/process/{service}", payload, headers=headers or {})


def completed(client, run_jobs, data: bytes, service: str, **params) -> dict:
    """Submit, run the worker, and answer the job's JSON (which must be completed)."""
    response = submit(client, data, service, **params)
    assert response.status_code == 202, response.content
    run_jobs()
    job = client.get(f"/api/v1/jobs/{response.json()['job_id']}").json()
    assert job["status"] == "completed", job["error"]
    return job


def download(client, job: dict, accept: str = "*/*") -> Image.Image:
    response = client.get(job["download_url"], headers={"Accept": accept})
    assert response.status_code == 200
    return Image.open(io.BytesIO(b"".join(response.streaming_content)))


def frames_of(image: Image.Image, mode: str = "RGBA") -> list[Image.Image]:
    """Every frame as shown, in `mode`."""
    return [frame.convert(mode) for frame in ImageSequence.Iterator(image)]


def durations_of(image: Image.Image) -> list[int]:
    found = []
    for frame in ImageSequence.Iterator(image):
        frame.load()  # a WebP frame's duration is known once it is decoded
        found.append(frame.info["duration"])
    return found


def mean_difference(made: Image.Image, expected: Image.Image) -> float:
    assert made.size == expected.size
    return float(np.abs(np.asarray(made, dtype=float) - np.asarray(expected, dtype=float)).mean())


def upload_frames(data: bytes, mode: str = "RGB") -> list[Image.Image]:
    return frames_of(Image.open(io.BytesIO(data)), mode)


# --- Counting frames from the header --------------------------------------------------------------


@pytest.mark.parametrize("format", ["GIF", "WEBP"])
def test_probe_counts_an_animations_frames_from_its_header(tmp_path, format):
    path = tmp_path / "animation"
    path.write_bytes(images.animated_bytes(format))

    info = probe(path, LIMIT)

    assert (info.format, info.width, info.height, info.frames) == (format, WIDTH, HEIGHT, FRAMES)


@pytest.mark.parametrize(
    "data", [images.png_bytes(), images.encode(images.gradient(), "GIF"), images.multipage_tiff_bytes()]
)
def test_a_still_image_and_a_multipage_tiff_count_one_frame(tmp_path, data):
    path = tmp_path / "still"
    path.write_bytes(data)
    assert probe(path, LIMIT).frames == 1


def test_counting_a_gifs_frames_stops_just_past_the_most_any_setting_allows(monkeypatch):
    monkeypatch.setattr(frame_count, "MAX_COUNTED_FRAMES", 5)
    colors = [(n * 20, 0, 0) for n in range(10)]
    data = images.animated_bytes("GIF", images.animation_frames(colors), durations=[100] * 10)

    assert frame_count.gif_frames(data) == 6


def one_byte_blocks_gif(blocks: int) -> bytes:
    """A 1 x 1 GIF whose image data comes in `blocks` sub-blocks of one byte: valid, written by no encoder."""
    screen = b"GIF89a" + (1).to_bytes(2, "little") * 2 + bytes([0x80, 0, 0]) + bytes(6)  # 2-colour table
    image = b"," + bytes(4) + (1).to_bytes(2, "little") * 2 + b"\x00" + b"\x02"
    return screen + image + b"\x01\x00" * blocks + b"\x00;"


def test_a_gif_in_more_pieces_than_any_encoder_writes_is_refused_as_damaged(monkeypatch):
    monkeypatch.setattr(frame_count, "BLOCK_ALLOWANCE", 1000)  # the walk's bound, small for a small file
    assert frame_count.gif_frames(one_byte_blocks_gif(900)) == 1

    with pytest.raises(UnprocessableImage) as refused:
        frame_count.gif_frames(one_byte_blocks_gif(2000))
    assert refused.value.code == "corrupt_image"


def gif_with_a_frame_past_its_canvas() -> bytes:
    """A 4 x 4 GIF of two frames, red, then green and 6 x 6: past the canvas its header declares."""
    first, second = (
        images.encode(Image.new("RGB", size, color), "GIF")
        for size, color in (((4, 4), images.RED), ((6, 6), images.GREEN))
    )
    table_end = 13 + (3 << ((first[10] & 7) + 1))  # header, screen, global colour table
    green_table, green_image = second[13:table_end], second[table_end:-1]
    # The green frame brings its own colour table (a local one, of the same size).
    local = (
        green_image[:9] + bytes([green_image[9] | 0x80 | (second[10] & 7)]) + green_table + green_image[10:]
    )
    return first[:-1] + local + b";"


def test_a_gif_frame_past_its_canvas_is_cut_to_it_as_browsers_show_it(tmp_path):
    path = tmp_path / "past.gif"
    path.write_bytes(gif_with_a_frame_past_its_canvas())
    assert probe(path, LIMIT).frames == 2

    with animation.open_source(str(path), LIMIT) as source:
        frames = [frame.image for frame in source.frames(allowance=10)]

    assert [frame.size for frame in frames] == [(4, 4), (4, 4)]
    assert [frame.getpixel((3, 3)) for frame in frames] == [images.RED, images.GREEN]


def test_the_decoder_stops_at_the_frames_the_limits_allow(tmp_path):
    path = tmp_path / "four.gif"
    path.write_bytes(images.animated_bytes("GIF"))

    with animation.open_source(str(path), LIMIT) as source, pytest.raises(UnprocessableImage) as refused:
        list(source.frames(allowance=FRAMES - 1))
    assert refused.value.code == "animation_too_large"


# --- What is kept ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "service, params, output_format, kept, reason",
    [
        ("resize", {"width": 10}, "gif", FRAMES, ""),
        ("resize", {"width": 10}, "webp", FRAMES, ""),
        ("resize", {"width": 10, "height": 10, "fit": "cover", "gravity": "center"}, "gif", FRAMES, ""),
        ("rotate", {"angle": 30}, "webp", FRAMES, ""),
        ("sobel", {}, "gif", FRAMES, ""),
        (
            "resize",
            {"width": 10},
            "jpeg",
            1,
            "JPEG holds one frame; format=gif or format=webp keeps them all",
        ),
        ("resize", {"width": 10}, "png", 1, "PNG holds one frame"),
        ("resize", {"width": 10}, "avif", 1, "AVIF holds one frame"),
        ("crop", {"width": 10, "height": 10, "gravity": "attention"}, "gif", 1, "gravity=attention places"),
        ("resize", {"width": 10, "height": 10, "fit": "cover", "gravity": "entropy"}, "gif", 1, "entropy"),
        ("thumbnail", {"size": 10, "square": True, "gravity": "attention"}, "webp", 1, "attention"),
        ("analyze", {}, "", 1, "analyze reports on one frame"),
    ],
)
def test_an_animation_keeps_its_frames_only_when_the_operation_and_the_format_allow(
    service, params, output_format, kept, reason
):
    operation = get_operation(service)
    plan = animation.plan_frames(operation, operation.parse(params), FRAMES, output_format)

    assert (plan.input, plan.output) == (FRAMES, kept)
    if reason:
        assert plan.note.startswith("only the first frame was kept: ") and reason in plan.note
    else:
        assert plan.note == ""


@pytest.mark.parametrize(
    "accepted, requested, input_format, expected",
    [
        # An animation that keeps its frames stays animated: by default in its own format.
        (set(), None, "GIF", formats.ResultFormats("gif")),
        (set(), None, "WEBP", formats.ResultFormats("webp")),
        # format=auto: WebP when the client names it (with a GIF for downloads that do not), else GIF;
        # never AVIF, which would keep one frame.
        ({"avif", "webp"}, "auto", "GIF", formats.ResultFormats("webp", fallback="gif")),
        ({"avif"}, "auto", "WEBP", formats.ResultFormats("gif")),
        ({"*"}, "auto", "GIF", formats.ResultFormats("gif")),
        # A format asked for is the format made.
        ({"webp"}, "png", "GIF", formats.ResultFormats("png")),
    ],
)
def test_the_format_of_an_animation_that_keeps_its_frames(accepted, requested, input_format, expected):
    negotiated = formats.negotiated_format(requested, accepted, animated=True)
    first = Image.new("RGB", (4, 4))

    assert formats.result_formats(requested, negotiated, input_format, first, animated=True) == expected


def test_a_still_gif_still_becomes_a_png():
    assert formats.default_output_format("GIF") == "png"


def test_each_frame_reports_its_share_of_the_progress():
    reported = []

    def halves(image, progress):
        progress(0.5)
        progress(1.0)
        return OperationResult(image=image)

    frames = [animation.Frame(frame, 100) for frame in images.animation_frames()]
    made, _ = animation.apply_to_frames(halves, frames, FRAMES, 0, reported.append)

    assert reported == [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]
    assert len(made.frames) == FRAMES and made.durations == [100] * FRAMES


def test_memory_admission_counts_every_frame_an_animation_keeps():
    operation = get_operation("resize")
    params = operation.parse({"width": 50})

    def counted(frames: int) -> int:
        job = Job(input_width=100, input_height=100, input_frames=frames, input_format="gif", parameters={})
        _, plan = animation.expected_result(operation, params, frames, None, "", "gif")
        return pixels_of(job, Recipe((Step(operation, params),)), None, plan)

    # The first frame alone costs what a still does; 50 kept frames of 50 x 50 cost at least their pixels.
    assert counted(1) == pixels_of(
        Job(input_width=100, input_height=100), Recipe((Step(operation, params),)), None, animation.STILL
    )
    assert counted(50) * 12 >= 50 * 50 * 50 * animation.BYTES_PER_KEPT_PIXEL
    assert counted(50) > 5 * counted(1)


# --- Through the API and the worker: the frames kept, pixel by pixel ------------------------------


def turned(frame: Image.Image) -> Image.Image:
    return frame.transpose(Image.Transpose.ROTATE_90)


def thumbnailed(frame: Image.Image) -> Image.Image:
    copy = frame.copy()
    copy.thumbnail((16, 16), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return copy


# Each service with its parameters, and what Pillow makes of one frame for it.
PER_FRAME = {
    "resize": ({"width": 24}, lambda f: f.resize((24, 16), Image.Resampling.LANCZOS, reducing_gap=3.0)),
    "crop": ({"x": 4, "y": 2, "width": 30, "height": 20}, lambda f: f.crop((4, 2, 34, 22))),
    "thumbnail": ({"size": 16}, thumbnailed),
    "rotate": ({"angle": 90}, turned),
    "grayscale": ({}, lambda f: f.convert("L")),
    "blur": ({"radius": 1}, lambda f: f.filter(ImageFilter.GaussianBlur(1))),
}


def submitted_jobs(client, run_jobs, submissions: dict[str, tuple]) -> dict[str, dict]:
    """Submit each (data, service, params) by its name, run the worker once, and answer the jobs' JSON."""
    ids = {}
    for name, (data, service, params) in submissions.items():
        response = submit(client, data, service, **params)
        assert response.status_code == 202, (name, response.content)
        ids[name] = response.json()["job_id"]
    run_jobs()
    jobs = {name: client.get(f"/api/v1/jobs/{job_id}").json() for name, job_id in ids.items()}
    for name, job in jobs.items():
        assert job["status"] == "completed", (name, job["error"])
    return jobs


def assert_each_frame_like(result: Image.Image, expected: list[Image.Image], mode: str, what: str) -> None:
    made = frames_of(result, mode)
    assert len(made) == len(expected), what
    for index, (frame, wanted) in enumerate(zip(made, expected, strict=True)):
        assert mean_difference(frame, wanted) < TOLERANCE[result.format], f"{what}: frame {index}"
    if mode != "L":  # each frame is its own colour, in order
        corners = [frame.getpixel((frame.width - 2, frame.height - 2)) for frame in made]
        assert [np.argmax(colour) for colour in corners] == [np.argmax(c) for c in images.FRAME_COLORS], what


@through_the_api
@pytest.mark.parametrize("input_format", ["GIF", "WEBP"])
def test_every_frame_goes_through_the_operation_with_its_duration_and_the_loop_kept(
    client, run_jobs, input_format
):
    data = images.animated_bytes(input_format, loop=3)
    submissions = {service: (data, service, params) for service, (params, _) in PER_FRAME.items()}

    for service, job in submitted_jobs(client, run_jobs, submissions).items():
        result = download(client, job)
        assert result.format == input_format, service  # an animation stays in its own format by default
        assert job["result"]["frames"] == {"input": FRAMES, "output": FRAMES, "note": None}, service
        assert durations_of(result) == images.FRAME_DURATIONS and result.info["loop"] == 3, service
        mode = "L" if service == "grayscale" else "RGB"
        per_frame = PER_FRAME[service][1]
        assert_each_frame_like(
            result, [per_frame(frame).convert(mode) for frame in upload_frames(data)], mode, service
        )


@through_the_api
def test_convert_keeps_an_animation_in_either_animated_format(client, run_jobs):
    uploads = {format: images.animated_bytes(format, loop=0) for format in ("GIF", "WEBP")}
    submissions = {
        (source, target): (data, "convert", {"format": target})
        for source, data in uploads.items()
        for target in ("gif", "webp")
    }

    for (source, target), job in submitted_jobs(client, run_jobs, submissions).items():
        result = download(client, job)
        what = f"{source} to {target}"
        assert result.format == target.upper() and job["result"]["content_type"] == f"image/{target}", what
        assert durations_of(result) == images.FRAME_DURATIONS, what
        assert result.info["loop"] == 0, what  # for ever, in both
        assert_each_frame_like(result, upload_frames(uploads[source]), "RGB", what)


@through_the_api
def test_a_gif_that_plays_once_plays_once_in_webp_and_back(client, run_jobs):
    once = images.animated_bytes("GIF", loop=None)

    webp = download(client, completed(client, run_jobs, once, "convert", format="webp"))
    assert webp.info["loop"] == 1  # a WebP counts every play
    gif = download(
        client, completed(client, run_jobs, images.animated_bytes("GIF", loop=2), "convert", format="webp")
    )
    assert gif.info["loop"] == 3  # a GIF's count is of the plays after the first
    again = download(client, completed(client, run_jobs, once, "resize", width=24))
    assert "loop" not in again.info


@through_the_api
def test_transparency_moves_with_each_frame_in_a_gif(client, run_jobs):
    data = images.animated_bytes("GIF", images.animation_frames(alpha=True))

    job = completed(client, run_jobs, data, "crop", x=8, y=4, width=36, height=24)

    for frame, source in zip(frames_of(download(client, job)), upload_frames(data, "RGBA"), strict=True):
        wanted = np.asarray(source.crop((8, 4, 44, 28)))
        made = np.asarray(frame)
        assert np.array_equal(made[..., 3], wanted[..., 3])  # nothing of the frame before shows through
        opaque = wanted[..., 3] == 255
        assert np.array_equal(made[opaque], wanted[opaque])


@through_the_api
def test_format_auto_gives_webp_to_a_client_that_names_it_and_a_gif_to_any_other(client, run_jobs):
    data = images.animated_bytes("GIF")
    response = submit(
        client, data, "resize", headers={"Accept": "image/avif,image/webp,*/*"}, width=24, format="auto"
    )
    run_jobs()
    job = client.get(f"/api/v1/jobs/{response.json()['job_id']}").json()

    assert (job["result"]["format"], job["result"]["fallback_format"]) == ("webp", "gif")
    for accept, format in (("image/webp", "WEBP"), ("image/png,image/*", "GIF")):
        result = download(client, job, accept)
        assert (result.format, result.n_frames) == (format, FRAMES)


@through_the_api
def test_a_byte_budget_shrinks_every_frame_and_keeps_them_all(client, run_jobs):
    noisy = [images.noise(64, 64, seed=n) for n in range(FRAMES)]
    data = images.animated_bytes("GIF", noisy)
    assert len(data) > 8000

    job = completed(client, run_jobs, data, "convert", format="webp", max_bytes=4096)
    result = download(client, job)

    assert job["result"]["bytes"] <= 4096 and result.n_frames == FRAMES
    assert result.size == (job["result"]["width"], job["result"]["height"]) and result.width < 64


# --- The first frame alone, said so ---------------------------------------------------------------


@through_the_api
def test_where_frames_cannot_be_kept_the_result_is_the_first_frame_and_says_why(client, run_jobs):
    gif, webp = images.animated_bytes("GIF"), images.animated_bytes("WEBP")
    submissions = {
        "JPEG holds one frame": (gif, "resize", {"width": 24, "format": "jpeg"}),
        "gravity=attention places the box": (
            gif,
            "crop",
            {"width": 24, "height": 16, "gravity": "attention"},
        ),
        "analyze reports on one frame": (webp, "analyze", {}),
        "still": (images.encode(images.gradient(), "GIF"), "resize", {"width": 24}),
    }
    jobs = submitted_jobs(client, run_jobs, submissions)

    still = jobs.pop("still")
    assert still["result"]["frames"] is None and still["result"]["format"] == "png"  # as before animations
    for says, job in jobs.items():
        frames = job["result"]["frames"]
        assert (frames["input"], frames["output"]) == (FRAMES, 1), says
        assert frames["note"].startswith("only the first frame was kept: ") and says in frames["note"]
        if job["service"] != "analyze":
            result = download(client, job)
            assert getattr(result, "n_frames", 1) == 1, says
            corner = result.convert("RGB").getpixel((result.width - 2, result.height - 2))
            assert np.argmax(corner) == 0, says  # the first frame's red


# --- The animation limits -------------------------------------------------------------------------


def refusal(response) -> dict:
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "animation_too_large"
    return error


@through_the_api
def test_an_animation_over_the_limits_is_refused_naming_the_limit_and_what_would_fit(
    client, stub_broker, settings
):
    gif = images.animated_bytes("GIF")
    settings.MAX_ANIMATION_PIXELS = FRAMES * WIDTH * HEIGHT - 1

    error = refusal(submit(client, gif, "resize", width=24))
    assert f"{FRAMES} frames of {WIDTH} × {HEIGHT} (the input's size)" in error["message"]
    assert "over MAX_ANIMATION_PIXELS" in error["message"]
    assert [field["field"] for field in error["fields"]] == ["format"]
    # Its first frame alone is a still image, well within every limit.
    assert submit(client, gif, "resize", width=24, format="png").status_code == 202

    # Enlarged, the result's frames are the ones counted, and its size is named.
    settings.MAX_ANIMATION_PIXELS = FRAMES * WIDTH * HEIGHT * 2
    error = refusal(submit(client, gif, "resize", width=WIDTH * 2))
    assert "(the result's size)" in error["message"]
    assert [field["field"] for field in error["fields"]] == ["width", "format"]

    settings.MAX_ANIMATION_FRAMES = FRAMES - 1
    error = refusal(submit(client, images.animated_bytes("WEBP"), "grayscale", filename="a.webp"))
    assert f"{FRAMES} frames, over MAX_ANIMATION_FRAMES ({FRAMES - 1})" in error["message"]


@through_the_api
def test_the_worker_checks_the_animation_limits_again(client, stub_broker, settings):
    response = submit(client, images.animated_bytes("GIF"), "rotate", angle=90)
    settings.MAX_ANIMATION_PIXELS = WIDTH * HEIGHT  # lowered after the job was accepted
    process_queued(stub_broker)  # only now: the worker finds the lowered limit

    job = client.get(f"/api/v1/jobs/{response.json()['job_id']}").json()
    assert job["status"] == "failed" and job["error"]["code"] == "animation_too_large"


# --- The API's description, the metrics and the pages ---------------------------------------------


@through_the_api
def test_the_services_say_which_keep_an_animations_frames(client):
    services = {service["name"]: service for service in client.get("/api/v1/services").json()["services"]}
    assert services["resize"]["animates"] is True and services["analyze"]["animates"] is False
    spec = client.get("/api/v1/openapi.json").json()["components"]["schemas"]
    assert "animates" in spec["ServiceOut"]["properties"]
    assert set(spec["FramesOut"]["properties"]) == {"input", "output", "note"}


@through_the_api
def test_the_result_metrics_and_the_admin_count_the_frames_in_and_out(client, admin_client, run_jobs):
    job = completed(client, run_jobs, images.animated_bytes("GIF"), "resize", width=24, format="png")
    facts = client.get(job["result_url"]).json()
    assert (facts["input"]["frames"], facts["output"]["frames"]) == (FRAMES, 1)

    html = admin_client.get(f"/admin/processing/job/{job['job_id']}/change/").content.decode()
    assert "Input frames" in html and "only the first frame was kept: PNG holds one frame" in html


@through_the_api
def test_the_lite_status_page_says_only_the_first_frame_was_kept(client, run_jobs):
    client.get("/?ui=lite")
    image = SimpleUploadedFile("dance.gif", images.animated_bytes("GIF"))
    location = client.post("/upload", {"service": "resize", "image": image, "width": "24", "format": "jpeg"})[
        "Location"
    ]
    run_jobs()

    html = client.get(location).content.decode()
    assert "Only the first frame was kept: JPEG holds one frame" in html
    assert f"(the upload has {FRAMES} frames)" in html and f"GIF, {WIDTH} × {HEIGHT}, {FRAMES} frames" in html


@through_the_api
def test_a_recipe_of_several_steps_keeps_an_animations_first_frame_and_says_why(client, run_jobs):
    steps = [
        {"service": "rotate", "parameters": {"angle": 90}},
        {"service": "resize", "parameters": {"width": 16}},
    ]
    upload = SimpleUploadedFile("animation.gif", images.animated_bytes("GIF"))
    response = client.post("/api/v1/process", {"image": upload, "steps": json.dumps(steps), "format": "gif"})
    assert response.status_code == 202, response.content
    run_jobs()

    job = client.get(f"/api/v1/jobs/{response.json()['job_id']}").json()
    frames = job["result"]["frames"]
    assert (frames["input"], frames["output"]) == (FRAMES, 1)
    assert frames["note"] == f"only the first frame was kept: {animation.SEVERAL_STEPS}"
    result = download(client, job)
    assert getattr(result, "n_frames", 1) == 1 and result.width == 16
