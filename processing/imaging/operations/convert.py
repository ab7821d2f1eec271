"""Change the format: the pixels are untouched and the encoder does the work."""

from PIL import Image
from pydantic import Field

from processing.imaging.formats import OutputFormat
from processing.imaging.operations.base import Operation, OperationResult, OutputOptions, ProgressCallback


class ConvertParams(OutputOptions):
    format: OutputFormat = Field(description="Output format (`auto`: as for every image service).")


def convert(image: Image.Image, params: ConvertParams, progress: ProgressCallback) -> OperationResult:
    progress(1.0)
    return OperationResult(image=image)


OPERATION = Operation(
    name="convert",
    description=(
        "Re-encode as JPEG, PNG, WebP, AVIF or GIF, or the best the client accepts (metadata removed); "
        "an animated GIF or WebP stays animated as GIF or WebP."
    ),
    params=ConvertParams,
    apply=convert,
    memory_per_pixel=4.5,
    animates=True,
)
