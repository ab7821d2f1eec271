"""Change the format: the pixels are untouched and the encoder does the work."""

from PIL import Image
from pydantic import Field, model_validator

from processing.imaging.formats import OutputFormat
from processing.imaging.operations.base import (
    FORMAT_CHOICES,
    Operation,
    OperationResult,
    OutputOptions,
    ProgressCallback,
)

# What a lossless JPEG XL job holds at its peak per pixel, most of it libjxl's recompression of a JPEG
# (22 bytes a pixel) beside the decoded pixels (for the placeholder and the result's size): 27.8 and
# 28.6 bytes on 49 and 12 MP photos. Lossless pixels (a PNG) take less: about 10.
LOSSLESS_MEMORY_PER_PIXEL = 29.0


class ConvertParams(OutputOptions):
    format: OutputFormat = Field(
        description=(
            "The result's file type: JPEG, PNG, WebP, AVIF, JPEG XL or GIF; Auto as for every image service."
        ),
        json_schema_extra=FORMAT_CHOICES,
    )
    lossless: bool = Field(
        False,
        description=(
            "For JPEG XL only: no loss at all. A JPEG upload is recompressed as it is: the result, about "
            "a quarter smaller, decodes back to the very same JPEG file, byte for byte, its metadata "
            "(EXIF, GPS, ICC profile) included. Any other upload keeps exactly its pixels. Quality does "
            "not apply, and a largest file size may not be given."
        ),
    )

    @model_validator(mode="after")
    def lossless_is_jpeg_xl_alone(self) -> "ConvertParams":
        if self.lossless and self.format != "jxl":
            raise ValueError("lossless is for format=jxl")
        if self.lossless and self.max_bytes is not None:
            raise ValueError("a lossless result cannot be made to fit max_bytes: give one or the other")
        return self

    @property
    def memory_per_pixel(self) -> float | None:
        return LOSSLESS_MEMORY_PER_PIXEL if self.lossless else None


def convert(image: Image.Image, params: ConvertParams, progress: ProgressCallback) -> OperationResult:
    progress(1.0)
    return OperationResult(image=image)


OPERATION = Operation(
    name="convert",
    description=(
        "Re-encode as JPEG, PNG, WebP, AVIF, JPEG XL or GIF, or the best the client accepts (metadata "
        "removed); an animated GIF or WebP stays animated as GIF or WebP; a JPEG to lossless JPEG XL "
        "keeps the very JPEG, a quarter smaller."
    ),
    params=ConvertParams,
    apply=convert,
    memory_per_pixel=4.5,
    animates=True,
    ns_per_pixel=0.0,
)
