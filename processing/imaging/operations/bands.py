"""An operation done a band of rows at a time, so that it reports progress and stops at a cancel.

Pillow's filters and transforms are one call each: a 12 MP sharpen took 2.1 s with nothing to report
until it ended. Cut into bands, each band is worked with `margin` rows of its neighbours above and
below, as many as the work reaches, and those rows are dropped: each row comes out as it would from
the whole image (tests/test_operations.py compares them), at no cost measurable (a 12 MP sharpen:
0.61-0.63 s of CPU in ten bands, 0.58-0.80 s whole).
"""

import math
from collections.abc import Callable

from PIL import Image, ImageFilter

from processing.imaging.codecs import ProgressCallback

# Bands an image is cut into, at most: progress every tenth of the work.
STEPS = 10
# A band is at least this many times its margin tall, so that the rows worked twice stay a small
# part of the work (a quarter at most, on the largest radius).
MIN_BAND_PER_MARGIN = 8


def bounds(height: int, margin: int = 0) -> list[tuple[int, int]]:
    """(top, bottom) of each band of an image `height` rows tall."""
    rows = max(math.ceil(height / STEPS), MIN_BAND_PER_MARGIN * margin, 1)
    return [(top, min(top + rows, height)) for top in range(0, height, rows)]


def gaussian_reach(radius: float) -> int:
    """How many rows away a Gaussian blur of `radius` (as Pillow makes it: three box blurs, each
    reaching floor(r) + 1 rows for a box radius r below radius + 1) takes its pixels from."""
    return 3 * math.ceil(radius) + 3


def filtered(
    image: Image.Image, image_filter: ImageFilter.Filter, margin: int, progress: ProgressCallback
) -> Image.Image:
    """image.filter(image_filter), band by band; `margin` is how many rows away the filter reaches."""
    return made_in_bands(
        image,
        margin,
        lambda top, bottom: image.crop((0, top, image.width, bottom)).filter(image_filter),
        progress,
    )


def made_in_bands(
    image: Image.Image,
    margin: int,
    make: Callable[[int, int], Image.Image],
    progress: ProgressCallback,
    size: tuple[int, int] | None = None,
    fill: float | tuple[float, ...] | str | None = None,
) -> Image.Image:
    """An image of `size` (the image's own by default) whose rows top to bottom are those of
    make(top - margin, bottom + margin) (clipped to the image) without the margins; `fill` is its
    colour before the bands are pasted."""
    width, height = size or image.size
    bands = bounds(height, margin)
    if len(bands) == 1:  # a small image: no bands to paste
        whole = make(0, height)
        progress(1.0)
        return whole
    result = Image.new(image.mode, (width, height), fill)
    for top, bottom in bands:
        above, below = max(0, top - margin), min(height, bottom + margin)
        band = make(above, below)
        if (above, below) != (top, bottom):
            band = band.crop((0, top - above, width, bottom - above))
        result.paste(band, (0, top))
        progress(bottom / height)
    return result
