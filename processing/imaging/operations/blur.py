"""Gaussian blur."""

from PIL import Image, ImageFilter
from pydantic import Field

from processing.imaging.operations import bands
from processing.imaging.operations.base import Operation, OperationResult, OutputOptions, ProgressCallback


class BlurParams(OutputOptions):
    radius: float = Field(2.0, ge=0.1, le=100, description="Standard deviation of the Gaussian, in pixels.")


def blur(image: Image.Image, params: BlurParams, progress: ProgressCallback) -> OperationResult:
    image_filter = ImageFilter.GaussianBlur(params.radius)
    blurred = bands.filtered(image, image_filter, bands.gaussian_reach(params.radius), progress)
    return OperationResult(image=blurred)


OPERATION = Operation(
    name="blur",
    description="Soften the image with a Gaussian blur of the given radius.",
    params=BlurParams,
    apply=blur,
    animates=True,
    ns_per_pixel=50.0,
)
