"""A small preview: the longest edge at most `size`, never enlarged."""

from PIL import Image
from pydantic import Field

from processing.imaging import DecodeHint
from processing.operations.base import (
    Operation,
    OperationResult,
    OutputOptions,
    ProgressCallback,
    shrink_hint,
)


class ThumbnailParams(OutputOptions):
    size: int = Field(256, ge=1, le=2048, description="Longest edge in pixels; never enlarged.")

    def decode_hint(self, width: int, height: int) -> DecodeHint | None:
        scale = self.size / max(width, height)
        return shrink_hint(width, height, scale, scale)


def thumbnail(image: Image.Image, params: ThumbnailParams, progress: ProgressCallback) -> OperationResult:
    result = image.copy()
    # Image.thumbnail semantics (aspect kept, never upscaled); reducing_gap makes large inputs fast.
    # A reduced decode (see decode_hint) is the upload shrunk by an integer: same ratio, same result size.
    result.thumbnail((params.size, params.size), Image.Resampling.LANCZOS, reducing_gap=2.0)
    progress(1.0)
    return OperationResult(image=result)


OPERATION = Operation(
    name="thumbnail",
    description="Make a thumbnail whose longest edge is at most the given size.",
    params=ThumbnailParams,
    apply=thumbnail,
)
