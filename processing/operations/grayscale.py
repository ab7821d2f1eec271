"""Grayscale in parallel horizontal bands, repeated and timed: the original service's benchmark."""

import time
from concurrent.futures import Executor, ThreadPoolExecutor
from itertools import pairwise

from PIL import Image
from pydantic import Field

from processing.operations.base import Operation, OperationResult, OutputOptions, ProgressCallback


class GrayscaleParams(OutputOptions):
    threads: int = Field(1, ge=1, le=16, description="Horizontal bands converted in parallel.")
    runs: int = Field(1, ge=1, le=10, description="How many times to repeat the conversion, each one timed.")


def grayscale(image: Image.Image, params: GrayscaleParams, progress: ProgressCallback) -> OperationResult:
    run_ms = []
    with ThreadPoolExecutor(max_workers=params.threads) as pool:
        for run in range(params.runs):
            started = time.perf_counter()
            gray = to_gray_in_bands(image, params.threads, pool)
            run_ms.append(round((time.perf_counter() - started) * 1000, 2))
            progress((run + 1) / params.runs)
    if "A" in image.getbands():
        gray = Image.merge("LA", (gray, image.getchannel("A")))
    metrics = {"threads": params.threads, "runs": params.runs, "run_ms": run_ms}
    return OperationResult(image=gray, metrics=metrics)


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
)
