"""Resize to a box, keeping or ignoring the aspect ratio."""

from typing import ClassVar, Literal, cast

from PIL import Image, ImageOps
from pydantic import Field, model_validator

from processing.imaging.codecs import DecodeHint, source_size
from processing.imaging.operations import gravity as gravities
from processing.imaging.operations.base import (
    Operation,
    OperationResult,
    OutputOptions,
    ProgressCallback,
    shrink_hint,
)


class ResizeParams(OutputOptions):
    width: int | None = Field(None, ge=1, le=10000, description="Box width in pixels.")
    height: int | None = Field(None, ge=1, le=10000, description="Box height in pixels.")
    fit: Literal["contain", "cover", "fill", "inside"] = Field(
        "contain",
        description="contain: fit inside the box; cover: fill the box, cropping where gravity says; "
        "fill: stretch to the box; inside: like contain, but never enlarge.",
    )
    gravity: gravities.Gravity = Field(
        "center",
        description="What fit=cover keeps: center; entropy (the busiest part); attention (edges, skin "
        "tones and saturated colour, as libvips does).",
    )

    size_fields: ClassVar[tuple[str, ...]] = ("width", "height")

    @model_validator(mode="after")
    def needs_a_dimension(self) -> "ResizeParams":
        if self.width is None and self.height is None:
            raise ValueError("give a width, a height or both")
        return self

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The size of the result for an input of width x height."""
        if self.width is None or self.height is None:
            # One side given (needs_a_dimension): the other follows the aspect ratio, whatever the fit.
            scale = self.width / width if self.width is not None else cast(int, self.height) / height
        elif self.fit in ("fill", "cover"):
            return self.width, self.height
        else:
            scale = min(self.width / width, self.height / height)
        if self.fit == "inside":
            scale = min(scale, 1.0)
        return max(1, round(width * scale)), max(1, round(height * scale))

    def decode_hint(self, width: int, height: int) -> DecodeHint | None:
        out_width, out_height = self.output_size(width, height)
        if self.covers:
            # The centre crop keeps one side whole: the picture shrinks by the larger factor both ways.
            scale = max(out_width / width, out_height / height)
            return shrink_hint(width, height, scale, scale)
        return shrink_hint(width, height, out_width / width, out_height / height)

    def one_frame_reason(self) -> str | None:
        return gravities.one_frame_reason(self.gravity) if self.covers else None

    @property
    def covers(self) -> bool:
        """Cover with both sides given: crop the centre to the box's ratio (one side alone is contain)."""
        return self.fit == "cover" and self.width is not None and self.height is not None


def resize(image: Image.Image, params: ResizeParams, progress: ProgressCallback) -> OperationResult:
    # From the upload's size, not a reduced decode's: the result is the size the user asked for.
    size = params.output_size(*source_size(image))
    if size == image.size:
        resized = image
    elif params.covers:
        resized = cover(image, size, params.gravity)
    else:
        # reducing_gap: a fast integer reduction first, then Lanczos; indistinguishable, much faster.
        resized = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    progress(1.0)
    return OperationResult(image=resized)


def cover(image: Image.Image, size: tuple[int, int], gravity: str) -> Image.Image:
    """The largest part of the image with the box's ratio, placed by gravity, scaled to the box."""
    if gravity == "center":
        return ImageOps.fit(image, size, Image.Resampling.LANCZOS)
    scale = min(image.width / size[0], image.height / size[1])
    crop = (min(image.width, round(size[0] * scale)), min(image.height, round(size[1] * scale)))
    left, top = gravities.place(image, *crop, gravity)
    part = image.crop((left, top, left + crop[0], top + crop[1]))
    return part.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


OPERATION = Operation(
    name="resize",
    description="Resize to a width and/or height, fitting, covering or filling the box.",
    params=ResizeParams,
    apply=resize,
    animates=True,
    ns_per_pixel=22.0,
)
