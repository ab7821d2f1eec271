"""Change the format: the pixels are untouched and the encoder does the work."""

from PIL import Image
from pydantic import Field

from processing.imaging.formats import OutputFormat
from processing.imaging.operations.base import (
    FORMAT_CHOICES,
    Operation,
    OperationResult,
    OutputOptions,
    ProgressCallback,
)


class ConvertParams(OutputOptions):
    format: OutputFormat = Field(
        description="The result's file type; Auto as for every image service.",
        json_schema_extra=FORMAT_CHOICES,
    )


def convert(image: Image.Image, params: ConvertParams, progress: ProgressCallback) -> OperationResult:
    progress(1.0)
    return OperationResult(image=image)


OPERATION = Operation(
    name="convert",
    description="Re-encode as JPEG, PNG, WebP or AVIF, or the best the client accepts (metadata removed).",
    params=ConvertParams,
    apply=convert,
    memory_per_pixel=4.5,
    ns_per_pixel=0.0,
)
