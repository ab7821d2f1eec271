"""Cut out a rectangle."""

from typing import ClassVar

from PIL import Image
from pydantic import Field

from processing.errors import InvalidParameters
from processing.operations.base import Operation, OperationResult, OutputOptions, ProgressCallback


class CropParams(OutputOptions):
    x: int = Field(ge=0, description="Left edge of the box, in pixels from the left of the image.")
    y: int = Field(ge=0, description="Top edge of the box, in pixels from the top of the image.")
    width: int = Field(ge=1, description="Box width in pixels.")
    height: int = Field(ge=1, description="Box height in pixels.")

    size_fields: ClassVar[tuple[str, ...]] = ("width", "height")

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        return self.width, self.height  # check_fits keeps the box inside the image

    def check_fits(self, width: int, height: int) -> None:
        size = f"the image is {width}x{height}"
        right, bottom = self.x + self.width, self.y + self.height
        if self.x >= width:
            raise InvalidParameters("x", f"x={self.x} is outside the image; {size}")
        if self.y >= height:
            raise InvalidParameters("y", f"y={self.y} is outside the image; {size}")
        if right > width:
            raise InvalidParameters("width", f"the box ends at x={right}, past the right edge; {size}")
        if bottom > height:
            raise InvalidParameters("height", f"the box ends at y={bottom}, past the bottom edge; {size}")


def crop(image: Image.Image, params: CropParams, progress: ProgressCallback) -> OperationResult:
    # Pillow pads a box outside the image with black; a wrong picture is worse than an error.
    params.check_fits(image.width, image.height)
    cropped = image.crop((params.x, params.y, params.x + params.width, params.y + params.height))
    progress(1.0)
    return OperationResult(image=cropped)


OPERATION = Operation(
    name="crop",
    description="Cut out the rectangle at x, y of the given width and height.",
    params=CropParams,
    apply=crop,
)
