"""Grayscale, optionally in parallel bands, repeated and timed: `threads` and `runs` make it a small
benchmark of the conversion itself."""

import time
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import nullcontext
from itertools import pairwise

from PIL import Image
from pydantic import Field

from processing.errors import InvalidParameters
from processing.imaging.codecs import DecodeHint
from processing.imaging.operations.base import (
    ADVANCED,
    Operation,
    OperationResult,
    OutputOptions,
    ProgressCallback,
)

# Each run converts every pixel again, so runs times pixels is what the repeats cost: ten runs of a
# 10-megapixel image, two of a 50-megapixel one. (Threads split one run's work; they add none.)
MAX_CONVERTED_PIXELS = 100_000_000


class GrayscaleParams(OutputOptions):
    # A benchmark's knobs: the pages keep them under "Advanced".
    threads: int = Field(
        1, ge=1, le=16, description="Horizontal bands converted in parallel.", json_schema_extra=ADVANCED
    )
    runs: int = Field(
        1,
        ge=1,
        le=10,
        json_schema_extra=ADVANCED,
        description="How many times to repeat the conversion, each one timed; runs × width × height "
        f"may be at most {MAX_CONVERTED_PIXELS}.",
    )

    def check_fits(self, width: int, height: int) -> None:
        """Refuse more runs than this image's size allows (MAX_CONVERTED_PIXELS); one run always fits."""
        converted = self.runs * width * height
        if self.runs > 1 and converted > MAX_CONVERTED_PIXELS:
            raise InvalidParameters(
                "runs",
                f"runs={self.runs} on a {width} × {height} image converts {converted} pixels; "
                f"runs × width × height may be at most {MAX_CONVERTED_PIXELS}",
            )

    def decode_hint(self, width: int, height: int) -> DecodeHint | None:
        # A JPEG's luma is the grayscale image; asking for threads or runs asks to time the conversion.
        return DecodeHint(mode="L") if self.threads == 1 and self.runs == 1 else None


def grayscale(image: Image.Image, params: GrayscaleParams, progress: ProgressCallback) -> OperationResult:
    run_ms = []
    # One thread converts in one go: no pool, no band copies.
    with ThreadPoolExecutor(params.threads) if params.threads > 1 else nullcontext() as pool:
        for run in range(params.runs):
            started = time.perf_counter()
            gray = to_gray(image, params.threads, pool)
            run_ms.append(round((time.perf_counter() - started) * 1000, 2))
            progress((run + 1) / params.runs)
    if "A" in image.getbands():
        gray = Image.merge("LA", (gray, image.getchannel("A")))
    metrics = {"threads": params.threads, "runs": params.runs, "run_ms": run_ms}
    return OperationResult(image=gray, metrics=metrics)


def to_gray(image: Image.Image, bands: int, pool: Executor | None) -> Image.Image:
    """image.convert("L"), in one go without a pool, else band by band on it."""
    if image.mode == "L":
        return image  # a JPEG decoded as luma alone is its grayscale already: no copy of it
    if pool is None:
        return image.convert("L")
    return to_gray_in_bands(image, bands, pool)


def to_gray_in_bands(image: Image.Image, bands: int, pool: Executor) -> Image.Image:
    """image.convert("L") band by band; Pillow releases the GIL while converting, so bands run in parallel."""
    bounds = sorted({round(image.height * i / bands) for i in range(bands + 1)})
    boxes = [(0, top, image.width, bottom) for top, bottom in pairwise(bounds)]
    gray = Image.new("L", image.size)
    for box, band in zip(boxes, pool.map(lambda box: image.crop(box).convert("L"), boxes), strict=True):
        gray.paste(band, box)
    return gray


OPERATION = Operation(
    name="grayscale",
    description="Convert to grayscale in parallel bands, optionally repeated and timed.",
    params=GrayscaleParams,
    apply=grayscale,
    memory_per_pixel=2.5,
    animates=True,
    ns_per_pixel=1.0,
)
