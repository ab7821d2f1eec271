"""Sobel edge magnitude, vectorised with numpy."""

import numpy as np
from PIL import Image

from processing.imaging.operations.base import Operation, OperationResult, OutputOptions, ProgressCallback

# Rows per band: bounds the float temporaries and spaces the progress checkpoints. A band's arrays
# must stay small (1 MB each for an HD width): glibc gives freed blocks of several MB back to the
# system, so 512-row bands had every temporary faulted in afresh, 6x the time of the arithmetic
# (an HD sobel: 44 ms in 512-row bands, 7 ms in 128-row ones).
BAND_ROWS = 128


class SobelParams(OutputOptions):
    pass


def sobel(image: Image.Image, params: SobelParams, progress: ProgressCallback) -> OperationResult:
    gray = np.asarray(image.convert("L"))
    # Repeating the border pixels keeps the frame of the image from showing up as an edge.
    padded = np.pad(gray, 1, mode="edge")
    edges = np.empty(gray.shape, dtype=np.uint8)
    height = gray.shape[0]
    for top in range(0, height, BAND_ROWS):
        bottom = min(top + BAND_ROWS, height)
        edges[top:bottom] = edge_magnitude(padded[top : bottom + 2].astype(np.float32))
        progress(bottom / height)
    return OperationResult(image=Image.fromarray(edges))


def edge_magnitude(p: np.ndarray) -> np.ndarray:
    """|(Gx, Gy)| for the interior of `p` (one pixel of padding on each side), clipped to 0..255."""
    # Both kernels are separable: smooth [1, 2, 1] across the gradient, then difference [-1, 0, 1] along it.
    smoothed_down = p[:-2] + 2 * p[1:-1] + p[2:]
    smoothed_across = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]
    gx = smoothed_down[:, 2:] - smoothed_down[:, :-2]
    gy = smoothed_across[2:] - smoothed_across[:-2]
    magnitude = np.sqrt(gx * gx + gy * gy)
    clipped: np.ndarray = np.minimum(magnitude, 255)
    return clipped.astype(np.uint8)


OPERATION = Operation(
    name="sobel",
    description="Detect edges with the Sobel operator: bright where brightness changes sharply.",
    params=SobelParams,
    apply=sobel,
    memory_per_pixel=9.5,
    animates=True,
    ns_per_pixel=9.0,
)
