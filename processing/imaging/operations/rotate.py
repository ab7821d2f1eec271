"""Rotate counter-clockwise by any angle; right angles are exact."""

import math
from typing import ClassVar

from PIL import Image
from pydantic import Field

from processing.imaging.operations import bands
from processing.imaging.operations.base import Operation, OperationResult, OutputOptions, ProgressCallback

# The affine map Image.transform takes: (a, b, c, d, e, f) maps (x, y) to (ax + by + c, dx + ey + f).
Affine = tuple[float, float, float, float, float, float]
# What Image.transform turns an image with transparency into before it interpolates, and back after.
PREMULTIPLIED = {"LA": "La", "RGBA": "RGBa"}
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
        return self.turn(width, height)[1]

    def turn(self, width: int, height: int) -> tuple[Affine, tuple[int, int]]:
        """The affine map from the result's pixels back to the image's, and the result's size: Image.rotate's
        own arithmetic (its matrix rounded to 15 digits, the corners of the canvas mapped by it,
        ceil(max) - floor(min)), so that the pixels and the size agree with it."""
        radians = -math.radians(self.angle % 360)
        a, b = round(math.cos(radians), 15), round(math.sin(radians), 15)
        d, e = round(-math.sin(radians), 15), round(math.cos(radians), 15)
        cx, cy = width / 2, height / 2
        c, f = a * -cx + b * -cy + cx, d * -cx + e * -cy + cy
        if not self.expand:
            return (a, b, c, d, e, f), (width, height)
        corners = ((0, 0), (width, 0), (width, height), (0, height))
        xs = [a * x + b * y + c for x, y in corners]
        ys = [d * x + e * y + f for x, y in corners]
        turned = math.ceil(max(xs)) - math.floor(min(xs)), math.ceil(max(ys)) - math.floor(min(ys))
        dx, dy = -(turned[0] - width) / 2.0, -(turned[1] - height) / 2.0
        return (a, b, a * dx + b * dy + c, d, e, d * dx + e * dy + f), turned


def rotate(image: Image.Image, params: RotateParams, progress: ProgressCallback) -> OperationResult:
    angle = params.angle % 360
    transpose = RIGHT_ANGLES.get(int(angle)) if angle.is_integer() else None
    if angle == 0:
        rotated = image
    elif transpose is not None and (params.expand or angle == 180 or image.width == image.height):
        # Without expand, a quarter turn keeps the canvas size: only a square's is a transpose.
        rotated = image.transpose(transpose)
    else:
        rotated = turned_in_bands(image, params, progress)
    progress(1.0)
    return OperationResult(image=rotated)


def turned_in_bands(image: Image.Image, params: RotateParams, progress: ProgressCallback) -> Image.Image:
    """image.rotate(angle, BICUBIC, expand, fillcolor=fill), a band of the result's rows at a time.

    As Image.transform does, transparency is turned premultiplied. A band maps its own rows through
    the same matrix, moved down by its top row: all but a few pixels in a million come out as from
    the whole rotation, those few one level apart (the sums in another order)."""
    (a, b, c, d, e, f), size = params.turn(image.width, image.height)
    source = image.convert(PREMULTIPLIED[image.mode]) if image.mode in PREMULTIPLIED else image

    def band(top: int, bottom: int) -> Image.Image:
        moved = (a, b, c + b * top, d, e, f + e * top)
        return source.transform(
            (size[0], bottom - top),
            Image.Transform.AFFINE,
            moved,
            Image.Resampling.BICUBIC,
            fillcolor=params.fill,
        )

    turned = bands.made_in_bands(source, 0, band, progress, size=size, fill=params.fill)
    return turned.convert(image.mode) if source is not image else turned


OPERATION = Operation(
    name="rotate",
    description="Rotate counter-clockwise by an angle in degrees; right angles are lossless.",
    params=RotateParams,
    apply=rotate,
    animates=True,
    ns_per_pixel=140.0,
)
