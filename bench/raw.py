"""The raw Pillow baseline: every service as the plainest, fastest Pillow code, and what ours costs over it.

`python -m bench.raw` decodes, processes and encodes one photo-like JPEG per service, as the raw loop
and as our code (load_image with the operation's decode hint, the operation, encode_image), and prints
both per image; then P3: a resize from a reduced JPEG decode against a naive full-decode Lanczos resize.
A recipe (service "steps") is its first step's raw decode, each step's raw work in turn, one encode.

The raw loop uses no Darkroom code on its hot path: parameters are parsed once, before timing.
"""

import argparse
import io
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageMath, ImageOps, ImageStat
from pydantic import BaseModel

from bench.images import photo_jpeg
from processing.imaging.codecs import encode_image, load_image
from processing.imaging.formats import default_output_format
from processing.imaging.operations import OPERATIONS, Operation, OutputOptions
from processing.imaging.recipes import STEPS_SERVICE
from processing.worker import admission

RAW_SINGLE_IMAGES = 50  # images in the single-process raw loop (its mean is "per image")
# What each service is timed with, as the API takes it; the others need no parameters.
DEFAULT_PARAMS = {
    "resize": {"width": "400", "height": "300"},
    "crop": {"x": "100", "y": "100", "width": "800", "height": "600"},
    "rotate": {"angle": "30"},
    "convert": {"format": "jpeg"},
}
# Image.thumbnail's own draft: decode at least twice the result's size, then Lanczos.
DRAFT_GAP = 2


# --- the raw services ----------------------------------------------------------------
@dataclass(frozen=True)
class RawService:
    """How plain Pillow decodes for a service and what it then does; `apply` returns an image or a report."""

    decode: Callable[[bytes, BaseModel], Image.Image]
    apply: Callable[[Image.Image, BaseModel], Image.Image | dict]


def decode(jpeg: bytes, mode: str | None = None, size: tuple[int, int] | None = None) -> Image.Image:
    image = Image.open(io.BytesIO(jpeg))
    if mode is not None or size is not None:
        image.draft(mode, size)
    image.load()
    return image


def full_decode(jpeg: bytes, params: BaseModel) -> Image.Image:
    return decode(jpeg)


def resize_box_size(params: BaseModel, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The result's size, and the smallest decode keeping DRAFT_GAP times it (a cover crop keeps one side)."""
    size = params.output_size(width, height)
    scale = max(size[0] / width, size[1] / height) if params.covers else None
    draft = (round(width * scale), round(height * scale)) if scale else size
    return size, (draft[0] * DRAFT_GAP, draft[1] * DRAFT_GAP)


def resize_decode(jpeg: bytes, params: BaseModel) -> Image.Image:
    """A DCT-scaled decode, as Image.thumbnail does it; info keeps the full size and the picture's box."""
    image = Image.open(io.BytesIO(jpeg))
    full_size = image.size
    drafted = image.draft(None, resize_box_size(params, *full_size)[1])
    image.load()
    # The last row and column of a scaled decode may be partly padding: the box leaves it out.
    image.info.update(full_size=full_size, box=drafted[1] if drafted else None)
    return image


def resize_apply(image: Image.Image, params: BaseModel) -> Image.Image:
    size, _ = resize_box_size(params, *image.info["full_size"])
    if params.covers:
        return ImageOps.fit(image, size, Image.Resampling.LANCZOS)
    return image.resize(size, Image.Resampling.LANCZOS, box=image.info["box"], reducing_gap=3.0)


def thumbnail_decode(jpeg: bytes, params: BaseModel) -> Image.Image:
    return decode(jpeg, size=(params.size * DRAFT_GAP, params.size * DRAFT_GAP))


def thumbnail_apply(image: Image.Image, params: BaseModel) -> Image.Image:
    image.thumbnail((params.size, params.size), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return image


# Rows of the image per pass of sobel_numpy: a pass's float arrays of 1 MB each reuse freed memory,
# where whole-image ones are faulted in afresh every time (processing.imaging.operations.sobel).
SOBEL_BAND_ROWS = 128


def sobel_numpy(image: Image.Image, params: BaseModel | None = None) -> Image.Image:
    """Sobel magnitude on the luma, border pixels repeated, clipped to 255, in bands of rows: the
    fastest we measured. Written apart from processing.imaging.operations.sobel on purpose: a slow operation
    must show as a low ratio, not make the baseline slow too."""
    padded = np.pad(np.asarray(image.convert("L")), 1, mode="edge")
    height = padded.shape[0] - 2
    edges = np.empty((height, padded.shape[1] - 2), dtype=np.uint8)
    for top in range(0, height, SOBEL_BAND_ROWS):
        p = padded[top : top + SOBEL_BAND_ROWS + 2].astype(np.float32)
        down = p[:-2] + 2 * p[1:-1] + p[2:]
        across = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]
        gx, gy = down[:, 2:] - down[:, :-2], across[2:] - across[:-2]
        edges[top : top + len(p) - 2] = np.minimum(np.sqrt(gx * gx + gy * gy), 255)
    return Image.fromarray(edges)


SOBEL_X = ImageFilter.Kernel((3, 3), [-1, 0, 1, -2, 0, 2, -1, 0, 1], 1, 1024)
SOBEL_Y = ImageFilter.Kernel((3, 3), [-1, -2, -1, 0, 0, 0, 1, 2, 1], 1, 1024)
# floor(sqrt(v)) up to 255; point() clamps I values to 0..65535 first, and sqrt(65535) < 256.
SQRT_TABLE = [min(255, int(v**0.5)) for v in range(65536)]


def sobel_kernels(image: Image.Image, params: BaseModel | None = None) -> Image.Image:
    """The same magnitude in Pillow's C code alone: 3x3 Kernels on an I image, ImageMath, a table.

    Pillow clips a filtered I image at 0, hence the offset of 1024 taken off again in ImageMath.
    Pixel for pixel the numpy result, but slower (see `python -m bench.raw`).
    """
    gray = image.convert("L")
    width, height = gray.size
    padded = Image.new("L", (width + 2, height + 2))
    padded.paste(gray, (1, 1))
    padded.paste(gray.crop((0, 0, width, 1)), (1, 0))
    padded.paste(gray.crop((0, height - 1, width, height)), (1, height + 1))
    padded.paste(padded.crop((1, 0, 2, height + 2)), (0, 0))
    padded.paste(padded.crop((width, 0, width + 1, height + 2)), (width + 1, 0))
    wide = padded.convert("I")
    squares = ImageMath.lambda_eval(
        lambda a: (a["x"] - 1024) * (a["x"] - 1024) + (a["y"] - 1024) * (a["y"] - 1024),
        x=wide.filter(SOBEL_X),
        y=wide.filter(SOBEL_Y),
    )
    return squares.point(SQRT_TABLE, "L").crop((1, 1, width + 1, height + 1))


def rotate_apply(image: Image.Image, params: BaseModel) -> Image.Image:
    angle = params.angle % 360
    transposes = {
        90: Image.Transpose.ROTATE_90,
        180: Image.Transpose.ROTATE_180,
        270: Image.Transpose.ROTATE_270,
    }
    if angle == 0:
        return image
    if angle in transposes and (params.expand or angle == 180):
        return image.transpose(transposes[int(angle)])
    return image.rotate(
        params.angle, resample=Image.Resampling.BICUBIC, expand=params.expand, fillcolor=params.fill
    )


def analyze_apply(image: Image.Image, params: BaseModel) -> dict:
    luma = image.convert("L")
    stats = ImageStat.Stat(luma)
    histograms = [luma.histogram(), *(band.histogram() for band in image.split())]
    sample = image.copy()
    sample.thumbnail((128, 128), Image.Resampling.BILINEAR, reducing_gap=2.0)
    colors = sample.quantize(5, method=Image.Quantize.MEDIANCUT).getcolors(5)
    small = luma.copy()
    small.thumbnail((512, 512), Image.Resampling.BILINEAR, reducing_gap=2.0)
    g = np.asarray(small, dtype=np.float32)
    laplacian = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    return {"mean": stats.mean, "histograms": len(histograms), "colors": colors, "sharpness": laplacian.var()}


RAW = {
    # A YCbCr JPEG's luma is its grayscale: the decoder skips the colour; convert() only for other JPEGs.
    "grayscale": RawService(lambda jpeg, params: decode(jpeg, "L"), lambda image, params: image.convert("L")),
    "sobel": RawService(full_decode, sobel_numpy),
    "resize": RawService(resize_decode, resize_apply),
    "crop": RawService(
        full_decode,
        lambda image, p: image.crop((p.x, p.y, p.x + p.width, p.y + p.height)),
    ),
    "thumbnail": RawService(thumbnail_decode, thumbnail_apply),
    "blur": RawService(full_decode, lambda image, p: image.filter(ImageFilter.GaussianBlur(p.radius))),
    "sharpen": RawService(
        full_decode, lambda image, p: image.filter(ImageFilter.UnsharpMask(p.radius, p.percent, p.threshold))
    ),
    "rotate": RawService(full_decode, rotate_apply),
    "convert": RawService(full_decode, lambda image, params: image),
    "analyze": RawService(full_decode, analyze_apply),
}


def raw_job(service: str, raw_params: dict) -> tuple[RawService, BaseModel]:
    """The raw service and its parsed parameters; for a recipe, the steps as one raw service and the
    recipe's output options."""
    if service != STEPS_SERVICE:
        return RAW[service], OPERATIONS[service].parse(raw_params)
    output = {name: value for name, value in raw_params.items() if name != "steps"}
    steps = raw_params["steps"]
    parsed = [
        (RAW[step["service"]], OPERATIONS[step["service"]].parse(step.get("parameters", {})))
        for step in (json.loads(steps) if isinstance(steps, str) else steps)
    ]
    return raw_recipe(parsed), OutputOptions.model_validate(output)


def raw_recipe(parsed: list[tuple[RawService, BaseModel]]) -> RawService:
    """The first step's decode, then each step's work on what the one before made."""
    first, first_params = parsed[0]

    def apply(image: Image.Image, params: BaseModel) -> Image.Image | dict:
        for number, (raw, step_params) in enumerate(parsed):
            if number:  # what a reduced decode left for the first step is not this image's
                image.info.update(full_size=image.size, box=None)
            made = raw.apply(image, step_params)
            assert isinstance(made, Image.Image)  # a report is no step of a recipe of several
            image = made
        return image

    return RawService(lambda jpeg, params: first.decode(jpeg, first_params), apply)


def encode(image: Image.Image, format: str, quality: int) -> bytes:
    """processing.imaging.codecs.encode_image's settings, without its copy: no EXIF, ICC profile,
    comment or XMP."""
    out = io.BytesIO()
    if format == "jpeg":
        image.save(out, "JPEG", quality=quality, exif=b"", icc_profile=None, comment=b"")
    elif format == "webp":
        image.save(out, "WEBP", quality=quality, exif=b"", icc_profile=None, xmp=b"")
    else:
        image.save(out, "PNG", optimize=False, compress_level=6, exif=b"", icc_profile=None)
    return out.getvalue()


def process_once(jpeg: bytes, service: RawService, params: BaseModel) -> tuple[float, float, float]:
    """Decode, apply, encode in plain Pillow; (decode, operation, encode) seconds."""
    started = time.perf_counter()
    image = service.decode(jpeg, params)
    decoded = time.perf_counter()
    result = service.apply(image, params)
    applied = time.perf_counter()
    if isinstance(result, Image.Image):
        encode(result, getattr(params, "format", None) or "jpeg", params.quality)
    return decoded - started, applied - decoded, time.perf_counter() - applied


# --- the raw loop, on one process and on several -----------------------------------------------
_barrier = None


def _share_barrier(barrier) -> None:
    global _barrier
    _barrier = barrier
    admission.keep_freed_memory()  # as the workers do: the baseline stays the fastest plain way


def raw_batch(task: tuple[bytes, str, dict, int]) -> tuple[float, float]:
    """One pool process's share; the barrier starts them together and keeps each to one batch."""
    jpeg, service, raw_params, count = task
    raw, params = raw_job(service, raw_params)
    _barrier.wait()
    started = time.time()
    for _ in range(count):
        process_once(jpeg, raw, params)
    return started, time.time()


def measure_raw(jpeg: bytes, service: str, raw_params: dict, images: int, processes: int) -> dict:
    admission.keep_freed_memory()
    raw, params = raw_job(service, raw_params)
    for _ in range(3):
        process_once(jpeg, raw, params)
    # CPU time too: the stack's cost is counted in CPU seconds, which a busy machine does not inflate
    # as it does the wall time of a loop that waits for a core.
    cpu_started = time.process_time()
    single = [process_once(jpeg, raw, params) for _ in range(min(images, RAW_SINGLE_IMAGES))]
    cpu_per_image_ms = (time.process_time() - cpu_started) / len(single) * 1000
    stages = stages_ms(single)

    shares = [images // processes + (1 if i < images % processes else 0) for i in range(processes)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    with context.Pool(processes, initializer=_share_barrier, initargs=(barrier,)) as pool:
        spans = pool.map(raw_batch, [(jpeg, service, raw_params, n) for n in shares], chunksize=1)
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    return {
        "images": images,
        "processes": processes,
        "wall_s": wall,
        "images_per_s": images / wall,
        "per_image_ms": sum(stages.values()),
        "cpu_per_image_ms": cpu_per_image_ms,
        "stages_ms": stages,
    }


def stages_ms(samples: list[tuple[float, float, float]]) -> dict:
    return {
        name: statistics.fmean(s[i] for s in samples) * 1000
        for i, name in enumerate(("decode", "operation", "encode"))
    }


# --- our code on the same image ----------------------------------------------------------------
def ours_once(path: Path, operation: Operation, params: BaseModel, size: tuple[int, int]):
    """What the worker does with an upload, minus the job: load with the decode hint, apply, encode."""
    started = time.perf_counter()
    image, info = load_image(path, 1_000_000_000, operation.decode_hint(params, *size))
    decoded = time.perf_counter()
    result = operation.apply(image, params, lambda fraction: None)
    applied = time.perf_counter()
    if operation.produces == "image":
        encode_image(result.image, params.format or default_output_format(info.format), params.quality)
    return decoded - started, applied - decoded, time.perf_counter() - applied


def compare(jpeg: bytes, size: tuple[int, int], service: str, iterations: int) -> tuple[dict, dict]:
    """Per-image stages of the raw loop and of our code, interleaved so both see the same machine load."""
    operation = OPERATIONS[service]
    params = operation.parse(DEFAULT_PARAMS.get(service, {}))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "photo.jpg"
        path.write_bytes(jpeg)
        raw, ours = [], []
        for number in range(iterations + 2):
            timings = process_once(jpeg, RAW[service], params), ours_once(path, operation, params, size)
            if number >= 2:  # warm-up
                raw.append(timings[0])
                ours.append(timings[1])
    return stages_ms(raw), stages_ms(ours)


# --- P3: a reduced decode against a naive resize -----------------------------------------------
def measure_p3(jpeg: bytes, iterations: int, box: tuple[int, int] = (400, 300)) -> dict:
    """Decode + Lanczos resize into `box` + encode: from a DCT-scaled decode, and from a full decode."""
    params = OPERATIONS["resize"].parse({"width": box[0], "height": box[1]})

    def reduced() -> Image.Image:
        return resize_apply(resize_decode(jpeg, params), params)

    def naive() -> Image.Image:
        image = decode(jpeg)
        return image.resize(params.output_size(*image.size), Image.Resampling.LANCZOS)

    seconds = {"reduced": [], "naive": []}
    for number in range(iterations + 1):
        for name, make in (("reduced", reduced), ("naive", naive)):
            started = time.perf_counter()
            encode(make(), "jpeg", params.quality)
            if number:  # the first round warms up
                seconds[name].append(time.perf_counter() - started)
    per_s = {name: 1 / statistics.fmean(values) for name, values in seconds.items()}
    return {
        "size": reduced().size,
        "reduced_per_s": per_s["reduced"],
        "naive_per_s": per_s["naive"],
        "ratio": per_s["reduced"] / per_s["naive"],
        "ssim": ssim(reduced(), naive()),
    }


def ssim(first: Image.Image, second: Image.Image, window: int = 7) -> float:
    """Mean structural similarity of the lumas, over 7x7 windows (1.0: identical)."""
    x, y = (np.asarray(image.convert("L"), dtype=np.float64) for image in (first, second))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def mean(a: np.ndarray) -> np.ndarray:
        total = np.pad(a, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        w = window
        return (total[w:, w:] - total[:-w, w:] - total[w:, :-w] + total[:-w, :-w]) / (w * w)

    mx, my = mean(x), mean(y)
    vx, vy, cov = mean(x * x) - mx * mx, mean(y * y) - my * my, mean(x * y) - mx * my
    return float((((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))).mean())


# --- the command -------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.raw", description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument(
        "-n", "--iterations", type=int, default=8, help="timed images per service (default 8)"
    )
    parser.add_argument("--service", action="append", choices=sorted(RAW), help="only these (repeatable)")
    args = parser.parse_args(argv)
    jpeg = photo_jpeg(args.width, args.height)
    size = (args.width, args.height)
    print(
        f"{args.width}x{args.height} JPEG ({len(jpeg) / 1024:.0f} KiB, q90), mean of {args.iterations} images"
    )
    print(f"{os.cpu_count()} cores, one process; ms per image as decode + operation + encode\n")
    print(f"{'service':<11}{'raw':>30}{'ours':>30}{'ours/raw':>10}")
    for service in args.service or list(RAW):
        raw, ours = compare(jpeg, size, service, args.iterations)
        print(
            f"{service:<11}{stages(raw):>30}{stages(ours):>30}{sum(ours.values()) / sum(raw.values()):>10.2f}"
        )
    image = decode(jpeg)
    for name, sobel in (("numpy", sobel_numpy), ("Pillow Kernel", sobel_kernels)):
        sobel(image)
        started = time.perf_counter()
        for _ in range(args.iterations):
            sobel(image)
        ms = (time.perf_counter() - started) / args.iterations * 1000
        print(f"  sobel operation alone, {name}: {ms:.1f} ms")
    p3 = measure_p3(jpeg, args.iterations)
    print(
        f"\nP3: decode + resize into 400x300 ({p3['size'][0]}x{p3['size'][1]}) + encode, one process\n"
        f"  reduced decode + Lanczos (reducing_gap)  {p3['reduced_per_s']:6.1f} images/s\n"
        f"  full decode + Lanczos                    {p3['naive_per_s']:6.1f} images/s\n"
        f"  ratio {p3['ratio']:.2f}x, SSIM between the two {p3['ssim']:.4f}"
    )
    return 0


def stages(parts: dict) -> str:
    decode_ms, operation_ms, encode_ms = parts.values()
    return f"{sum(parts.values()):.1f} ({decode_ms:.1f} + {operation_ms:.1f} + {encode_ms:.1f})"


if __name__ == "__main__":
    sys.exit(main())
