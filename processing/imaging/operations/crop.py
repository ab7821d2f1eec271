"""Cut out a rectangle: where x and y say, or where gravity finds the subject."""

from typing import ClassVar

from PIL import Image
from pydantic import Field, model_validator

from processing.errors import InvalidParameters
from processing.imaging.operations import gravity as gravities
from processing.imaging.operations.base import Operation, OperationResult, OutputOptions, ProgressCallback


class CropParams(OutputOptions):
    x: int | None = Field(
        None, ge=0, description="Left edge of the box, in pixels from the left of the image (or gravity)."
    )
    y: int | None = Field(
        None, ge=0, description="Top edge of the box, in pixels from the top of the image (or gravity)."
    )
    width: int = Field(ge=1, description="Box width in pixels.")
    height: int = Field(ge=1, description="Box height in pixels.")
    gravity: gravities.Gravity | None = Field(
        None,
        description="Instead of x and y, place the box: center; entropy (the busiest part); attention "
        "(edges, skin tones and saturated colour, as libvips does).",
    )

    size_fields: ClassVar[tuple[str, ...]] = ("width", "height")

    @model_validator(mode="after")
    def placed_one_way(self) -> "CropParams":
        given = (self.x is not None, self.y is not None)
        if self.gravity is not None and any(given):
            raise ValueError("give x and y, or gravity, not both")
        if self.gravity is None and not all(given):
            raise ValueError("give both x and y, or gravity to place the box")
        return self

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        return self.width, self.height  # check_fits keeps the box inside the image

    def one_frame_reason(self) -> str | None:
        return gravities.one_frame_reason(self.gravity)

    def given_origin(self) -> tuple[int, int]:
        """x and y, when no gravity places the box (placed_one_way has made sure both are given)."""
        assert self.x is not None and self.y is not None
        return self.x, self.y

    def check_fits(self, width: int, height: int) -> None:
        size = f"the image is {width}x{height}"
        if self.gravity is not None:
            if self.width > width:
                raise InvalidParameters("width", f"width={self.width} is wider than the image; {size}")
            if self.height > height:
                raise InvalidParameters("height", f"height={self.height} is taller than the image; {size}")
            return
        x, y = self.given_origin()
        right, bottom = x + self.width, y + self.height
        if x >= width:
            raise InvalidParameters("x", f"x={x} is outside the image; {size}")
        if y >= height:
            raise InvalidParameters("y", f"y={y} is outside the image; {size}")
        if right > width:
            raise InvalidParameters("width", f"the box ends at x={right}, past the right edge; {size}")
        if bottom > height:
            raise InvalidParameters("height", f"the box ends at y={bottom}, past the bottom edge; {size}")


def crop(image: Image.Image, params: CropParams, progress: ProgressCallback) -> OperationResult:
    # Pillow pads a box outside the image with black; a wrong picture is worse than an error.
    params.check_fits(image.width, image.height)
    if params.gravity is not None:
        x, y = gravities.place(image, params.width, params.height, params.gravity)
    else:
        x, y = params.given_origin()
    cropped = image.crop((x, y, x + params.width, y + params.height))
    progress(1.0)
    return OperationResult(image=cropped)


OPERATION = Operation(
    name="crop",
    description="Cut out a width x height rectangle at x, y, or where gravity finds the subject.",
    params=CropParams,
    apply=crop,
    memory_per_pixel=5.0,
    animates=True,
    ns_per_pixel=0.3,
)
