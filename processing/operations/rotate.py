"""Rotate counter-clockwise by any angle; right angles are exact."""

from PIL import Image
from pydantic import Field

from processing.operations.base import Operation, OperationResult, OutputOptions, ProgressCallback

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
)
