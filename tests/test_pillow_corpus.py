"""Pillow's own test images through the worker's path: each comes out as Pillow decodes it, or is refused
with a 4xx and its reason.

Pillow's `Tests/images` (tests/pillow_corpus.py fetches them) hold about a thousand files: photos and
drawings in every mode Pillow knows, files damaged on purpose (cut short, impossible headers, fuzzers'
finds) and files in formats Darkroom does not accept. Each goes through what an upload meets — the
gateway's codecs.probe with its limits and the job's checks, then the worker's codecs.load_image, an
operation and the encoder with its byte budget — in this process: a job per file over HTTP would take
minutes. The operation is a crop to at most WINDOW pixels a side, in the middle, as PNG: nothing is
lost to a lossy encoder, and the few photos of 10 megapixels or more are encoded and compared in a
part (decoded whole all the same). A few of the files then go the whole way, over HTTP to a worker
process.

Every file in Darkroom's formats comes out as Pillow's own conversion makes it (to RGBA, upright by its
EXIF orientation, its ICC profile applied), alpha kept, unless the tables below say why it is refused.
"""

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from PIL import Image, ImageCms, ImageOps

from gateway.http.errors import status_of
from processing.errors import DomainError
from processing.imaging import byte_budget, codecs
from processing.imaging.operations import OutputLimits, get_operation
from tests import images
from tests.pillow_corpus import pillow_test_images

# The damaged files make Pillow warn (corrupt EXIF, tags past the end of the file): that is their point.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")

OPERATION = get_operation("crop")
WINDOW = 1024

# Damaged files in Darkroom's formats: 422 corrupt_image, with the decoder's reason (a part of it here).
CORRUPT = {
    # Refused from the header, at upload.
    "broken.png": "broken PNG file",
    "unknown_compression_method.png": "Unknown compression method 1 in iCCP chunk",
    "png_decompression_dos.png": "Decompressed data too large",
    "zero_width.gif": "a width or height of 0",
    "hopper_unknown_pixel_mode.tif": "unknown pixel mode",
    "libtiff_segfault.tif": "Invalid value for samples per pixel",
    "oom-225817ca0f8c663be7ab4b9e717b02c661e66834.tif": "Invalid value for samples per pixel",
    "tiff_overflow_rows_per_strip.tif": "the TIFF file is damaged",
    "seek_too_large.tif": "Unable to seek to frame",
    "bmp/b/badbitcount.bmp": "Unsupported BMP pixel depth (30000)",
    "bmp/b/badheadersize.bmp": "Unsupported BMP header type (66)",
    "bmp/b/badpalettesize.bmp": "Unsupported BMP Palette size",
    # Past a sound header, by the worker.
    "broken_data_stream.png": "unrecognized data stream contents",
    "truncated_end_chunk.png": "Truncated File Read",
    "truncated_image.png": "image file is truncated",
    "truncated_jpeg.jpg": "image file is truncated",
    "ultrahdr.jpg": "image file is truncated",  # cut short by Pillow, to test that it reads only the MPF
    "apng/chunk_no_fctl.png": "APNG contains frame sequence errors",
    "apng/syntax_num_frames_zero.png": "cannot load this image",
    "tiff_tiled_jpeg_oob_read.tif": "broken data stream",  # Pillow's "decoder error -2", in its own words
    "timeout-6646305047838720": "image file is truncated",
    "bmp/b/shortfile.bmp": "image file is truncated",
    "bmp/q/pal8oversizepal.bmp": "invalid palette size",
}

# Sound files in a variant Darkroom's decoders don't implement: 422 unsupported_variant, naming it.
# (bmp/g is the BMP suite's "good" folder, bmp/q its "questionable" one: valid, but rarely written.)
VARIANTS = {
    "bmp/g/rgb32bf.bmp": "32-bit pixels with the bit masks 0xff000000, 0xff0, 0xff0000",
    "bmp/q/rgb24jpeg.bmp": "JPEG data inside a BMP",
    "bmp/q/rgb24png.bmp": "PNG data inside a BMP",
    "bmp/q/rgba32abf.bmp": "BI_ALPHABITFIELDS",
    "bmp/q/rgb16-231.bmp": "16-bit pixels with the bit masks 0x30, 0xe, 0x1",
    "bmp/q/rgb32-111110.bmp": "32-bit pixels with the bit masks",
    "bmp/q/rgba16-4444.bmp": "16-bit pixels with the bit masks",
    "bmp/q/pal2.bmp": "2 bits per pixel",
    "bmp/q/pal8os2v2-16.bmp": "an OS/2 2.x info header of 16 bytes",
    # This Pillow's libtiff was built without WebP.
    "hopper_webp.tif": "compressed with WEBP (compression 50001), which this server's TIFF library cannot",
}

# More pixels than MAX_IMAGE_PIXELS: 422 image_too_large, in Darkroom's words.
TOO_LARGE = {
    "decompression_bomb.gif": "the image has 4364696535 pixels",  # a frame far larger than the screen
    "l2rgb_read.bmp": "the image has 151587072 pixels",
    "bmp/b/badwidth.bmp": "pixels, more than MAX_IMAGE_PIXELS",
    "bmp/b/reallybig.bmp": "pixels, more than MAX_IMAGE_PIXELS",
}

REFUSED = {
    **{name: ("corrupt_image", reason) for name, reason in CORRUPT.items()},
    **{name: ("unsupported_variant", reason) for name, reason in VARIANTS.items()},
    **{name: ("image_too_large", reason) for name, reason in TOO_LARGE.items()},
}

DARKROOM_EXTENSIONS = {
    *(".png", ".apng", ".jpg", ".jpeg", ".mpo", ".gif", ".bmp", ".tif", ".tiff", ".webp"),
    *(".avif", ".avifs", ".heif", ".heic"),
}
# Files of Darkroom's formats named as something else: they are processed, by what they hold.
DISGUISED = {
    "courB08.pbm": "PNG",
    "timeout-6646305047838720": "TIFF",
}

# The sample shown as white in images of more than 8 bits a sample: 65535 (16 bits) unless listed.
# Pillow's own convert("L") clips these at 255 instead of scaling: a 16-bit photo would come out white.
WHITE_OF_WIDE_SAMPLES = {
    "16bit.s.tif": 32767,  # signed 16-bit samples: 0 black, 32767 white, negative black
    "12bit.cropped.tif": 4095,  # 12 bits a sample
}
# Darkroom's output against Pillow's conversion: the largest difference of a colour sample (0-255)
# where the reference is not fully transparent. Alpha must be equal.
COLOUR_TOLERANCE = 1


@dataclass
class Outcome:
    output: Image.Image | None = None  # the encoded result, decoded again
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # what of the upright image it is
    refusal: DomainError | None = None
    sizes: tuple[tuple[int, int], ...] = ()  # as displayed: the gateway's from the header, the decoded


def through_the_worker(path: Path) -> Outcome:
    """What an upload of this file gets: the gateway's probe and checks, the worker's decode, the
    operation and the encoder, with the settings' limits."""
    limits = OutputLimits.of(settings)
    try:
        info = codecs.probe(path, settings.MAX_IMAGE_PIXELS, settings.MAX_JPEG_SCANS)
        params, box = middle_window(info.width, info.height)
        OPERATION.check_job(params, info.width, info.height, "png", limits)
        image, _ = codecs.load_image(path, settings.MAX_IMAGE_PIXELS, None, settings.MAX_JPEG_SCANS)
        sizes = ((info.width, info.height), image.size)
        made = OPERATION.apply(image, params, lambda fraction: None).image
        assert made is not None
        data = byte_budget.encode_within(made, "png", params.quality, params.max_bytes).data
    except DomainError as refusal:
        return Outcome(refusal=refusal)
    output = Image.open(io.BytesIO(data))
    output.load()
    return Outcome(output=output, box=box, sizes=sizes)


def middle_window(width: int, height: int) -> tuple[Any, tuple[int, int, int, int]]:
    """The crop's parameters for the middle of an image of this displayed size, and its box."""
    size = min(width, WINDOW), min(height, WINDOW)
    x, y = (width - size[0]) // 2, (height - size[1]) // 2
    params = OPERATION.parse({"x": x, "y": y, "width": size[0], "height": size[1], "format": "png"})
    return params, (x, y, x + size[0], y + size[1])


def as_pillow_converts_it(path: Path, name: str, box: tuple[int, int, int, int]) -> np.ndarray:
    """Pillow's own conversion of the box of the file's first frame to RGBA: upright, its ICC profile
    applied, and samples of more than 8 bits scaled by Pillow's point() rather than clipped by convert."""
    with Image.open(path) as opened:
        opened.load()
        image = ImageOps.exif_transpose(opened).crop(box)
        image.info = opened.info
        if image.mode.startswith("I"):
            scale = 255 / WHITE_OF_WIDE_SAMPLES.get(name, 65535)
            gray = image.convert("I").point(lambda value: value * scale + 0.5).convert("L")
            alpha = image.convert("LA").getchannel("A")  # from a transparent level (tRNS), by Pillow
            return np.asarray(Image.merge("LA", (gray, alpha)).convert("RGBA"))
        rgba = image.convert("RGBA")
        profile = codecs.embedded_profile(opened)
        if profile is not None and profile.profile.xcolor_space in ("RGB ", "CMYK"):
            source = image if image.mode == "CMYK" else rgba
            srgb = ImageCms.createProfile("sRGB")
            colour = ImageCms.profileToProfile(source, profile, srgb, outputMode="RGB")
            assert colour is not None
            rgba = Image.merge("RGBA", (*colour.split(), rgba.getchannel("A")))
        return np.asarray(rgba)


def difference(output: Image.Image, reference: np.ndarray) -> str | None:
    """How the output differs from the reference, or None when it matches."""
    made = np.asarray(output.convert("RGBA"))
    if made.shape != reference.shape:
        return f"size {made.shape[1]}x{made.shape[0]}, Pillow's {reference.shape[1]}x{reference.shape[0]}"
    if not np.array_equal(made[..., 3], reference[..., 3]):
        lost = np.count_nonzero(made[..., 3] != reference[..., 3])
        means = f"{made[..., 3].mean():.1f}, Pillow's {reference[..., 3].mean():.1f}"
        return f"alpha differs at {lost} pixels (mean {means})"
    seen = reference[..., 3] > 0
    colour = np.abs(made[..., :3].astype(np.int16) - reference[..., :3])[seen]
    if colour.size and colour.max() > COLOUR_TOLERANCE:
        return f"colour differs by up to {colour.max()} (mean {colour.mean():.2f})"
    return None


@pytest.fixture(scope="module")
def corpus() -> Path:
    return pillow_test_images()


@pytest.fixture(scope="module")
def outcomes(corpus: Path) -> dict[str, Outcome]:
    files = sorted(path for path in corpus.rglob("*") if path.is_file())
    return {path.relative_to(corpus).as_posix(): through_the_worker(path) for path in files}


def in_darkroom_formats(name: str) -> bool:
    return Path(name).suffix.lower() in DARKROOM_EXTENSIONS or name in DISGUISED


def test_every_image_in_darkroom_s_formats_comes_out_as_pillow_converts_it(corpus, outcomes):
    wrong = {}
    for name, outcome in outcomes.items():
        if not in_darkroom_formats(name) or name in REFUSED:
            continue
        if outcome.refusal is not None:
            wrong[name] = f"refused: {outcome.refusal.code}: {outcome.refusal.message}"
        elif outcome.sizes[0] != outcome.sizes[1]:  # the gateway checked the limits against the wrong size
            wrong[name] = "{}x{} at upload, {}x{} decoded".format(*outcome.sizes[0], *outcome.sizes[1])
        elif problem := difference(outcome.output, as_pillow_converts_it(corpus / name, name, outcome.box)):
            wrong[name] = problem

    assert not wrong, "\n".join(f"{name}: {problem}" for name, problem in wrong.items())
    assert sum(outcome.output is not None for outcome in outcomes.values()) > 600


def test_each_refused_file_gets_a_4xx_with_its_reason(outcomes):
    assert set(REFUSED) <= set(outcomes), "a file of the tables is not in this Pillow's test images"
    wrong = {}
    for name, (code, reason) in REFUSED.items():
        refusal = outcomes[name].refusal
        if refusal is None:
            wrong[name] = "processed"
        elif (refusal.code, status_of(type(refusal))) != (code, 422) or reason not in refusal.message:
            wrong[name] = f"{status_of(type(refusal))} {refusal.code}: {refusal.message}"

    assert not wrong, "\n".join(f"{name}: {problem}" for name, problem in wrong.items())


def test_a_refusal_speaks_darkroom_s_words_not_pillow_s_internals(outcomes):
    refusals = [outcome.refusal for outcome in outcomes.values() if outcome.refusal is not None]
    internal = re.compile(r"decoder error|cannot identify image file|178956970|could be decompression bomb")

    assert [refusal.message for refusal in refusals if internal.search(refusal.message)] == []
    assert all(400 <= status_of(type(refusal)) < 500 for refusal in refusals)


def test_files_in_other_formats_are_refused_as_not_an_image_darkroom_accepts(outcomes):
    others = {name: outcome for name, outcome in outcomes.items() if not in_darkroom_formats(name)}
    processed = [name for name, outcome in others.items() if outcome.refusal is None]
    codes = {outcome.refusal.code for outcome in others.values() if outcome.refusal is not None}

    assert processed == []
    assert codes == {"unsupported_image"}
    assert status_of(type(next(iter(others.values())).refusal)) == 415
    assert len(others) > 300


# --- The whole way: over HTTP to the gateway, through the broker to a worker process ------------

# (file, status, code): refused at upload.
REFUSED_OVER_HTTP = [
    ("broken.png", 422, "corrupt_image"),
    ("bmp/g/rgb32bf.bmp", 422, "unsupported_variant"),
    ("hopper_webp.tif", 422, "unsupported_variant"),
    ("decompression_bomb.gif", 422, "image_too_large"),
    ("hopper.psd", 415, "unsupported_image"),
]
MADE_OVER_HTTP = ["1_trns.png", "i_trns.png", "16bit.s.tif", "g4_orientation_6.tif"]
FAILED_OVER_HTTP = {"truncated_image.png": "image file is truncated"}


def upload(client, name: str, data: bytes):
    return client.post("/api/v1/process/convert", files={"image": (name, data)}, data={"format": "png"})


@pytest.mark.services
def test_over_http_a_worker_process_makes_what_the_worker_s_functions_do(live_stack, worker, corpus):
    with live_stack.client() as client:
        refused = {
            name: (response.status_code, response.json()["error"]["code"])
            for name, *_ in REFUSED_OVER_HTTP
            for response in [upload(client, Path(name).name, (corpus / name).read_bytes())]
        }
        jobs = {
            name: upload(client, Path(name).name, (corpus / name).read_bytes()).json()["job_id"]
            for name in [*MADE_OVER_HTTP, *FAILED_OVER_HTTP]
        }
        ended = {name: live_stack.wait_for_status(job_id) for name, job_id in jobs.items()}
        made = {
            name: Image.open(io.BytesIO(client.get(ended[name]["download_url"]).content))
            for name in MADE_OVER_HTTP
        }

    assert refused == {name: (status, code) for name, status, code in REFUSED_OVER_HTTP}
    for name in MADE_OVER_HTTP:
        box = (0, 0, *made[name].size)
        assert difference(made[name], as_pillow_converts_it(corpus / name, name, box)) is None, name
    for name, reason in FAILED_OVER_HTTP.items():
        assert ended[name]["status"] == "failed"
        assert ended[name]["error"]["code"] == "corrupt_image" and reason in ended[name]["error"]["message"]


@pytest.mark.services
def test_what_libtiff_and_pillow_say_of_an_upload_is_in_the_worker_s_log_with_its_job(
    live_stack, worker, corpus
):
    damaged_tiff = live_stack.submit("convert", images.damaged_lzw_tiff_bytes(), "scan.tif", format="png")
    bad_exif = (corpus / "hopper_bad_exif.jpg").read_bytes()  # Pillow warns: "Corrupt EXIF data"
    warned = live_stack.submit("convert", bad_exif, "photo.jpg", format="png")
    failed = live_stack.wait_for_status(damaged_tiff["job_id"])
    assert live_stack.wait_for_status(warned["job_id"])["status"] == "completed"

    assert failed["error"]["message"] == "the TIFF data is damaged: Using code not yet in table"
    lines = live_stack.log("worker").splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    assert {"libtiff: Using code not yet in table"} == {
        record["message"]
        for record in logged
        if record["job_id"] == damaged_tiff["job_id"] and "libtiff" in record["message"]
    }
    assert [
        record["name"]
        for record in logged
        if record["job_id"] == warned["job_id"] and "Corrupt EXIF data" in record["message"]
    ] == ["py.warnings"]
    plain = [line for line in lines if not line.startswith("{")]
    assert [line for line in plain if "not yet in table" in line or "Corrupt EXIF" in line] == []
