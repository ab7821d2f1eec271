"""Rotate counter-clockwise by any angle; right angles are exact."""

import math
from typing import ClassVar

from PIL import Image
from pydantic import Field

from processing.imaging.operations.base import Operation, OperationResult, OutputOptions, ProgressCallback

RIGHT_ANGLES = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


class RotateParams(OutputOptions):
    angle: float = Field(ge=-360, le=360, description="Degrees counter-clockwise; negative turns clockwise.")
    expand: bool = Field(True, description="Grow the canvas to hold the whole rotated image.")
    fill: str = Field(
        "#ffffff", pattern=r"^#[0-9a-fA-F]{6}$", description="Colour of the uncovered corners, as #rrggbb."
    )

    size_fields: ClassVar[tuple[str, ...]] = ("angle", "expand")

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The input's size without expand; with it, the turned canvas's bounding box (as Image.rotate)."""
        angle = self.angle % 360
        if not self.expand or angle in (0, 180):
            return width, height
        if angle in (90, 270):
            return height, width
        # Image.rotate's own arithmetic (its matrix rounded to 15 digits, the corners of the canvas
        # mapped by it, ceil(max) - floor(min)), so the size agrees with it to the pixel.
        radians = -math.radians(angle)
        a, b = round(math.cos(radians), 15), round(math.sin(radians), 15)
        d, e = round(-math.sin(radians), 15), round(math.cos(radians), 15)
        cx, cy = width / 2, height / 2
        c, f = a * -cx + b * -cy + cx, d * -cx + e * -cy + cy
        corners = ((0, 0), (width, 0), (width, height), (0, height))
        xs = [a * x + b * y + c for x, y in corners]
        ys = [d * x + e * y + f for x, y in corners]
        return math.ceil(max(xs)) - math.floor(min(xs)), math.ceil(max(ys)) - math.floor(min(ys))


def rotate(image: Image.Image, params: RotateParams, progress: ProgressCallback) -> OperationResult:
    angle = params.angle % 360
    transpose = RIGHT_ANGLES.get(int(angle)) if angle.is_integer() else None
    if angle == 0:
        rotated = image
    elif transpose is not None and (params.expand or angle == 180):
        # Without expand, a quarter turn keeps the canvas size, so only Image.rotate crops it right.
        rotated = image.transpose(transpose)
    else:
        rotated = image.rotate(
            params.angle, resample=Image.Resampling.BICUBIC, expand=params.expand, fillcolor=params.fill
        )
    progress(1.0)
    return OperationResult(image=rotated)


OPERATION = Operation(
    name="rotate",
    description="Rotate counter-clockwise by an angle in degrees; right angles are lossless.",
    params=RotateParams,
    apply=rotate,
    animates=True,
)
