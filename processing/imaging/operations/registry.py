"""The operations, as data, by the service name clients use: adding one is a module with an OPERATION
and a line in this list."""

from typing import Any

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
    watermark,
)
from processing.imaging.operations.base import Operation

# Each operation has a parameters model of its own.
ALL_OPERATIONS: tuple[Operation[Any], ...] = (
    grayscale.OPERATION,
    sobel.OPERATION,
    resize.OPERATION,
    crop.OPERATION,
    thumbnail.OPERATION,
    blur.OPERATION,
    sharpen.OPERATION,
    rotate.OPERATION,
    convert.OPERATION,
    watermark.OPERATION,
    analyze.OPERATION,
)
OPERATIONS: dict[str, Operation[Any]] = {operation.name: operation for operation in ALL_OPERATIONS}


def get_operation(name: str) -> Operation[Any]:
    """The operation called `name`; KeyError if there is none."""
    return OPERATIONS[name]
