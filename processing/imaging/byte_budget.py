"""Fitting a result into a byte budget (`max_bytes`), for clients on slow or metered links.

First the highest quality that fits, found by bisection (bytes grow with quality); below
MIN_QUALITY a JPEG, WebP or AVIF turns to blocks, and fewer pixels look better than that, so
then the image shrinks (area in proportion to the bytes it must lose) and the search starts
again. PNG is lossless: it can only shrink.
"""

import math
from dataclasses import dataclass
from typing import Any

from PIL import Image

from processing.errors import UnprocessableImage
from processing.imaging.codecs import encode_image

MIN_QUALITY = 30
# Bytes do not fall exactly with the area: aim a little below the budget so one shrink mostly does.
SHRINK_MARGIN = 0.85


@dataclass(frozen=True)
class Fitted:
    data: bytes
    image: Image.Image  # the pixels encoded: fewer than given when the budget needed it
    quality: int
    encodes: int

    def metrics(self, original: Image.Image) -> dict[str, Any]:
        return {
            "budget_quality": self.quality,
            "budget_scale": round(self.image.width / original.width, 4),
            "budget_encodes": self.encodes,
        }


def encode_within(image: Image.Image, format: str, quality: int, max_bytes: int | None) -> Fitted:
    """The image encoded at `quality`, or, over `max_bytes`, the best encoding that fits."""
    data = encode_image(image, format, quality)
    if max_bytes is None or len(data) <= max_bytes:
        return Fitted(data, image, quality, 1)
    encodes = 1
    current = image
    while True:
        found, tries = best_quality(current, format, quality, max_bytes)
        encodes += tries
        if found is not None:
            return Fitted(found[1], current, found[0], encodes)
        smallest = encode_image(current, format, lowest_quality(format, quality))
        encodes += 1
        current = shrunk(current, max_bytes / len(smallest))


def best_quality(
    image: Image.Image, format: str, quality: int, max_bytes: int
) -> tuple[tuple[int, bytes] | None, int]:
    """((quality, data) of the highest quality from MIN_QUALITY to `quality` that fits, or None;
    the number of encodes it took)."""
    if format == "png":  # lossless: quality changes nothing
        data = encode_image(image, format, quality)
        return ((quality, data) if len(data) <= max_bytes else None), 1
    best: tuple[int, bytes] | None = None
    tries = 0
    low, high = lowest_quality(format, quality), quality
    while low <= high:
        middle = (low + high) // 2
        data = encode_image(image, format, middle)
        tries += 1
        if len(data) <= max_bytes:
            best, low = (middle, data), middle + 1
        else:
            high = middle - 1
    return best, tries


def lowest_quality(format: str, quality: int) -> int:
    return quality if format == "png" else min(MIN_QUALITY, quality)


def shrunk(image: Image.Image, byte_ratio: float) -> Image.Image:
    """The image with its area cut in proportion to `byte_ratio` (with a margin), at least a pixel
    smaller on its longest side, never below 1 x 1."""
    scale = math.sqrt(byte_ratio * SHRINK_MARGIN)
    width = max(1, min(image.width - 1, math.floor(image.width * scale)))
    height = max(1, min(image.height - 1, math.floor(image.height * scale)))
    if (width, height) == image.size:
        raise UnprocessableImage("over_budget", "not even a single pixel fits in max_bytes in this format")
    return image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=2.0)
