"""Where a box goes inside an image: a crop's box, so that it keeps the subject (`place`), and an
overlay's, at an edge, a corner or the middle (`anchored`).

A crop's gravity:

- center: the middle of the image.
- entropy: slices are trimmed from whichever side holds less information (the lower entropy of
  its grey levels), until the box is left: busy detail stays, plain sky and walls go.
- attention: the box is centred on the point most likely to draw the eye: edges, skin tones and
  saturated colour, added up and blurred, as libvips' "attention" strategy does.

Both searches look at a copy of at most ANALYSIS_EDGE pixels on its longest side: what draws
the eye at that size is what draws it at full size, and the search costs next to nothing.
"""

from typing import Literal

import numpy as np
from PIL import Image, ImageFilter

Gravity = Literal["center", "entropy", "attention"]
GRAVITIES: tuple[str, ...] = ("center", "entropy", "attention")

# Where an overlay (a watermark) goes: named by the edges it touches, or the middle.
Compass = Literal[
    "center", "north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west"
]

ANALYSIS_EDGE = 256
# Entropy trims this share of the remaining excess per step, at least one pixel of the copy.
TRIM_SHARE = 0.1
# Skin: the colour direction smartcrop and libvips compare with, and how close counts.
SKIN_DIRECTION = np.array([0.78, 0.57, 0.44], np.float32) / np.linalg.norm([0.78, 0.57, 0.44])
SKIN_CLOSENESS = 0.97
# Weights of the three cues; edges are everywhere in texture, so skin and colour count for more.
EDGE_WEIGHT, SKIN_WEIGHT, SATURATION_WEIGHT = 1.0, 1.8, 1.2
# Saturation counts only where the pixel is neither near black nor near white.
LIGHTNESS_RANGE = (0.05, 0.9)


def one_frame_reason(gravity: str | None) -> str | None:
    """Why a box placed by `gravity` keeps only an animation's first frame: entropy and attention
    look at one picture, and a box placed on each frame in turn would jump about between them."""
    if gravity in ("entropy", "attention"):
        return f"gravity={gravity} places the box by looking at one picture; gravity=center keeps every frame"
    return None


def place(image: Image.Image, width: int, height: int, gravity: str) -> tuple[int, int]:
    """The (left, top) of a width x height box inside `image` chosen by `gravity`."""
    if (width, height) == image.size or gravity == "center":
        return (image.width - width) // 2, (image.height - height) // 2
    small, scale = analysis_copy(image)
    box = (max(1, round(width * scale)), max(1, round(height * scale)))
    left, top = entropy_box(small, *box) if gravity == "entropy" else attention_box(small, *box)
    return clamp(round(left / scale), image.width - width), clamp(round(top / scale), image.height - height)


def anchored(
    image_size: tuple[int, int], box_size: tuple[int, int], compass: str, offset: tuple[int, int]
) -> tuple[int, int]:
    """The (left, top) of a box at `compass` inside an image: `offset` pixels in from each edge the
    compass names; along a side it names no edge of, centred and moved right or down by the offset."""
    (width, height), (box_width, box_height), (dx, dy) = image_size, box_size, offset
    left = along(width, box_width, dx, near="west" in compass, far="east" in compass)
    top = along(height, box_height, dy, near="north" in compass, far="south" in compass)
    return left, top


def along(extent: int, box: int, offset: int, *, near: bool, far: bool) -> int:
    """Where a box of `box` pixels starts on one axis of `extent` pixels (see anchored)."""
    if near:
        return offset
    if far:
        return extent - box - offset
    return (extent - box) // 2 + offset


def analysis_copy(image: Image.Image) -> tuple[Image.Image, float]:
    """The image at most ANALYSIS_EDGE pixels on its longest side, in RGB; and its scale."""
    scale = min(1.0, ANALYSIS_EDGE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    small = image.convert("RGB") if scale == 1.0 else image.convert("RGB").resize(size, Image.Resampling.BOX)
    return small, small.width / image.width


def clamp(value: int, highest: int) -> int:
    return max(0, min(value, highest))


def entropy_box(small: Image.Image, width: int, height: int) -> tuple[int, int]:
    """Trim the lower-entropy side, a slice at a time, until a width x height box is left."""
    gray = small.convert("L")
    left, top, right, bottom = 0, 0, gray.width, gray.height
    while right - left > width:
        step = max(1, int((right - left - width) * TRIM_SHARE))
        first = gray.crop((left, top, left + step, bottom)).entropy()
        last = gray.crop((right - step, top, right, bottom)).entropy()
        left, right = (left + step, right) if first < last else (left, right - step)
    while bottom - top > height:
        step = max(1, int((bottom - top - height) * TRIM_SHARE))
        first = gray.crop((left, top, right, top + step)).entropy()
        last = gray.crop((left, bottom - step, right, bottom)).entropy()
        top, bottom = (top + step, bottom) if first < last else (top, bottom - step)
    return left, top


def attention_box(small: Image.Image, width: int, height: int) -> tuple[int, int]:
    """The box centred on the peak of the blurred sum of edges, skin and saturation."""
    peak = np.unravel_index(np.argmax(interest(small)), (small.height, small.width))
    peak_y, peak_x = int(peak[0]), int(peak[1])
    return clamp(peak_x - width // 2, small.width - width), clamp(peak_y - height // 2, small.height - height)


def interest(small: Image.Image) -> np.ndarray:
    """Per pixel, how much it draws the eye (0..255), blurred so a region beats a lone pixel."""
    rgb = np.asarray(small, np.float32) / 255
    edges = np.asarray(small.convert("L").filter(ImageFilter.FIND_EDGES), np.float32) / 255
    lightness = (rgb.max(axis=2) + rgb.min(axis=2)) / 2
    saturation = saturation_of(rgb, lightness)
    norm = np.linalg.norm(rgb, axis=2) + 1e-6
    skin_likeness = (rgb @ SKIN_DIRECTION) / norm
    skin = np.clip((skin_likeness - SKIN_CLOSENESS) / (1 - SKIN_CLOSENESS), 0, 1) * (lightness > 0.2)
    score = EDGE_WEIGHT * edges + SKIN_WEIGHT * skin + SATURATION_WEIGHT * saturation
    # Pillow blurs 8-bit images only: the score (at most about 4) scaled to 0..255.
    levels = Image.fromarray(np.clip(score * 60, 0, 255).astype(np.uint8), "L")
    return np.asarray(levels.filter(ImageFilter.GaussianBlur(max(small.size) / 16)))


def saturation_of(rgb: np.ndarray, lightness: np.ndarray) -> np.ndarray:
    """HSL saturation, zero where the pixel is too dark or too light for colour to show."""
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    denominator = 1 - np.abs(2 * lightness - 1)
    saturation = np.where(denominator > 1e-6, spread / np.maximum(denominator, 1e-6), 0)
    low, high = LIGHTNESS_RANGE
    return np.clip(saturation, 0, 1) * ((lightness > low) & (lightness < high))
