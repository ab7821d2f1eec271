"""The operations, as data, by the service name clients use: adding one is a module with an OPERATION
and a line in this list."""

from processing.imaging.operations import (
    analyze,
    blur,
    convert,
    crop,
    grayscale,
    resize,
    rotate,
    sharpen,
    sobel,
    thumbnail,
)
from processing.imaging.operations.base import Operation

OPERATIONS: dict[str, Operation] = {
    operation.name: operation
    for operation in [
        grayscale.OPERATION,
        sobel.OPERATION,
        resize.OPERATION,
        crop.OPERATION,
        thumbnail.OPERATION,
        blur.OPERATION,
        sharpen.OPERATION,
        rotate.OPERATION,
        convert.OPERATION,
        analyze.OPERATION,
    ]
}


def get_operation(name: str) -> Operation:
    """The operation called `name`; KeyError if there is none."""
    return OPERATIONS[name]
