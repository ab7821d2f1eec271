"""Unsharp-mask sharpening."""

from PIL import Image, ImageFilter
from pydantic import Field

from processing.imaging.operations import bands
from processing.imaging.operations.base import Operation, OperationResult, OutputOptions, ProgressCallback


class SharpenParams(OutputOptions):
    radius: float = Field(2.0, ge=0.1, le=50, description="Blur radius of the mask, in pixels.")
    percent: int = Field(150, ge=1, le=500, description="Strength of the sharpening.")
    threshold: int = Field(3, ge=0, le=255, description="Smallest brightness difference that gets sharpened.")


def sharpen(image: Image.Image, params: SharpenParams, progress: ProgressCallback) -> OperationResult:
    image_filter = ImageFilter.UnsharpMask(params.radius, params.percent, params.threshold)
    sharpened = bands.filtered(image, image_filter, bands.gaussian_reach(params.radius), progress)
    return OperationResult(image=sharpened)


OPERATION = Operation(
    name="sharpen",
    description="Sharpen with an unsharp mask (radius, strength in percent, threshold).",
    params=SharpenParams,
    apply=sharpen,
    animates=True,
    ns_per_pixel=70.0,
)
