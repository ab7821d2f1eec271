"""Change the format: the pixels are untouched and the encoder does the work."""

from typing import Literal

from PIL import Image
from pydantic import Field

from processing.operations.base import Operation, OperationResult, OutputOptions, ProgressCallback


class ConvertParams(OutputOptions):
    format: Literal["jpeg", "png", "webp"] = Field(description="Output format.")


def convert(image: Image.Image, params: ConvertParams, progress: ProgressCallback) -> OperationResult:
    progress(1.0)
    return OperationResult(image=image)


OPERATION = Operation(
    name="convert",
    description="Re-encode as JPEG, PNG or WebP (metadata removed).",
    params=ConvertParams,
    apply=convert,
)
