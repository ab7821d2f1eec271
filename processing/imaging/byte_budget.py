"""Fitting a result into a byte budget (`max_bytes`), for clients on slow or metered links.

First the highest quality that fits, found by bisection (bytes grow with quality); below
MIN_QUALITY a JPEG, WebP or AVIF turns to blocks, and fewer pixels look better than that, so
then the image shrinks (area in proportion to the bytes it must lose) until the lowest quality
fits, and the quality is searched again at that size. PNG is lossless: it can only shrink; so can
GIF, whose palette has no quality to trade. An animation shrinks every frame alike.

The search costs at most MAX_ENCODES encodes, and only the first is of the whole image: a result
far over its budget (a large noisy image asked to fit a kilobyte) is shrunk by an estimate from
that first encode's bytes before it is encoded again.
"""

import math
from dataclasses import dataclass
from typing import Any

from PIL import Image

from processing.errors import UnprocessableImage
from processing.imaging.animation import Picture, encode
from processing.imaging.codecs import ProgressCallback

MIN_QUALITY = 30
# Bytes do not fall exactly with the area: aim a little below the budget so one shrink mostly does.
SHRINK_MARGIN = 0.85
# Quality alone buys at most about this many times fewer bytes: from 85 down to MIN_QUALITY, 3 times
# fewer on noise, 4 to 24 on smooth photographs (AVIF the most). A result further than this over its
# budget must lose pixels, so it shrinks before a second encode of its full size.
QUALITY_REACH = 32
# Encodes at the lowest quality, each after a shrink, before the search gives up; bytes per pixel
# change little from one size to the next, so one or two mostly do.
MAX_SHRINKS = 4
# The first encode, the shrinks', and a bisection of the qualities above MIN_QUALITY (at most 7).
MAX_ENCODES = 1 + MAX_SHRINKS + 1 + math.ceil(math.log2(100 - MIN_QUALITY + 1))


@dataclass(frozen=True)
class Fitted:
    data: bytes
    image: Picture  # the pixels encoded: fewer than given when the budget needed it
    quality: int
    encodes: int

    def metrics(self, original: Picture) -> dict[str, Any]:
        return {
            "budget_quality": self.quality,
            "budget_scale": round(self.image.width / original.width, 4),
            "budget_encodes": self.encodes,
        }


def encode_within(
    image: Picture,
    format: str,
    quality: int,
    max_bytes: int | None,
    progress: ProgressCallback | None = None,
) -> Fitted:
    """The image encoded at `quality`, or, over `max_bytes`, the best encoding that fits. `progress`
    follows the first encode, the one of the whole image (the search's are of fewer pixels, or lower
    quality, and rare)."""
    data = encode(image, format, quality, progress)
    if max_bytes is None or len(data) <= max_bytes:
        return Fitted(data, image, quality, 1)
    lowest = lowest_quality(format, quality)
    reach = QUALITY_REACH if lowest < quality else 1
    current = image
    if len(data) > max_bytes * reach:
        current = shrunk(image, max_bytes * reach / len(data))
    smallest, current, shrink_encodes = lowest_that_fits(current, format, lowest, max_bytes)
    # At the full size, `quality` itself is known not to fit.
    highest = quality - 1 if current is image else quality
    found, tries = best_quality(current, format, (lowest, smallest), highest, max_bytes)
    return Fitted(found[1], current, found[0], 1 + shrink_encodes + tries)


def lowest_that_fits(image: Picture, format: str, lowest: int, max_bytes: int) -> tuple[bytes, Picture, int]:
    """(data, pixels) of the image at the lowest quality, shrunk until it fits; and the encodes it took.

    Gives up (over_budget) after MAX_SHRINKS shrinks rather than keep encoding."""
    current = image
    for encodes in range(1, MAX_SHRINKS + 2):
        data = encode(current, format, lowest)
        if len(data) <= max_bytes:
            return data, current, encodes
        if encodes <= MAX_SHRINKS:
            current = shrunk(current, max_bytes / len(data))
    raise UnprocessableImage(
        "over_budget", f"no encoding within max_bytes ({max_bytes}) was found in {MAX_ENCODES} encodes"
    )


def best_quality(
    image: Picture, format: str, fits: tuple[int, bytes], highest: int, max_bytes: int
) -> tuple[tuple[int, bytes], int]:
    """((quality, data) of the highest quality up to `highest` that fits, knowing `fits` does; the
    number of encodes it took). Bisection: at most 7 encodes over the qualities above MIN_QUALITY."""
    best = fits
    tries = 0
    low, high = fits[0] + 1, highest
    while low <= high:
        middle = (low + high) // 2
        data = encode(image, format, middle)
        tries += 1
        if len(data) <= max_bytes:
            best, low = (middle, data), middle + 1
        else:
            high = middle - 1
    return best, tries


def lowest_quality(format: str, quality: int) -> int:
    return quality if format in ("png", "gif") else min(MIN_QUALITY, quality)


def shrunk(image: Picture, byte_ratio: float) -> Picture:
    """The image with its area cut in proportion to `byte_ratio` (with a margin), at least a pixel
    smaller on its longest side, never below 1 x 1."""
    scale = math.sqrt(byte_ratio * SHRINK_MARGIN)
    width = max(1, min(image.width - 1, math.floor(image.width * scale)))
    height = max(1, min(image.height - 1, math.floor(image.height * scale)))
    if (width, height) == image.size:
        raise UnprocessableImage("over_budget", "not even a single pixel fits in max_bytes in this format")
    return image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=2.0)
