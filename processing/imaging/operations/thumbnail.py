"""A small preview: the longest edge at most `size`, never enlarged; or a square, cropped where
`gravity` says the subject is."""

import math
from collections.abc import Callable
from typing import ClassVar

from PIL import Image
from pydantic import Field

from processing.imaging.codecs import DecodeHint, source_size
from processing.imaging.operations import gravity as gravities
from processing.imaging.operations.base import (
    Operation,
    OperationResult,
    OutputOptions,
    ProgressCallback,
    shrink_hint,
)


class ThumbnailParams(OutputOptions):
    size: int = Field(256, ge=1, le=2048, description="Longest edge in pixels; never enlarged.")
    square: bool = Field(
        False,
        description="A size x size square (the shorter side, if the image is smaller), cut from the "
        "largest square of the image that gravity chooses.",
    )
    gravity: gravities.Gravity = Field(
        "center",
        description="Where a square keeps: center; entropy (the busiest part); attention (edges, "
        "skin tones and saturated colour, as libvips does).",
    )

    size_fields: ClassVar[tuple[str, ...]] = ("size",)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """Image.thumbnail's size: the aspect kept as closely as whole pixels allow, never enlarged."""
        if self.square:
            side = self.square_side(width, height)
            return side, side
        if self.size >= width and self.size >= height:
            return width, height
        aspect = width / height
        if aspect <= 1:  # the height is the longest edge
            return closest(self.size * aspect, key=lambda n: abs(aspect - n / self.size)), self.size
        return self.size, closest(self.size / aspect, key=lambda n: abs(aspect - self.size / n) if n else 0)

    def square_side(self, width: int, height: int) -> int:
        return min(self.size, width, height)

    def one_frame_reason(self) -> str | None:
        return gravities.one_frame_reason(self.gravity) if self.square else None

    def decode_hint(self, width: int, height: int) -> DecodeHint | None:
        if self.square:
            scale = self.square_side(width, height) / min(width, height)
        else:
            scale = self.size / max(width, height)
        return shrink_hint(width, height, scale, scale)


def closest(number: float, key: Callable[[int], float]) -> int:
    """Whichever of floor and ceil of `number` the key likes best, at least 1 (as Image.thumbnail rounds)."""
    return max(min(math.floor(number), math.ceil(number), key=key), 1)


def thumbnail(image: Image.Image, params: ThumbnailParams, progress: ProgressCallback) -> OperationResult:
    if params.square:
        progress(1.0)
        return OperationResult(image=square_thumbnail(image, params))
    result = image.copy()
    # Image.thumbnail semantics (aspect kept, never upscaled); reducing_gap makes large inputs fast.
    # A reduced decode (see decode_hint) is the upload shrunk by an integer: same ratio, same result size.
    result.thumbnail((params.size, params.size), Image.Resampling.LANCZOS, reducing_gap=2.0)
    progress(1.0)
    return OperationResult(image=result)


def square_thumbnail(image: Image.Image, params: ThumbnailParams) -> Image.Image:
    """The largest square gravity chooses, shrunk to the side the upload's size gives."""
    side = params.square_side(*source_size(image))  # a reduced decode is smaller than the upload
    edge = min(image.size)
    left, top = gravities.place(image, edge, edge, params.gravity)
    square = image.crop((left, top, left + edge, top + edge))
    return square.resize((side, side), Image.Resampling.LANCZOS, reducing_gap=2.0)


OPERATION = Operation(
    name="thumbnail",
    description="Make a thumbnail whose longest edge is at most the given size.",
    params=ThumbnailParams,
    apply=thumbnail,
    animates=True,
    ns_per_pixel=4.5,
)
