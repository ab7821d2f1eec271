"""Admin thumbnails, made by the worker from pixels it has already decoded, and stored with each file.

The web process never decodes an upload to show it: a hostile JPEG can take seconds to decode,
and a page of the admin lists a hundred jobs. A thumbnail lives at `storage.thumbnail_key(file key)`
and goes when its file goes (storage.delete_job_files removes both).
"""

import io
import logging

from PIL import Image

from processing import storage
from processing.imaging.codecs import pixels_for

logger = logging.getLogger(__name__)

EDGE = 160
SAMPLING = 4  # see shrink
QUALITY = 80
CONTENT_TYPE = "image/webp"


def thumbnail_bytes(image: Image.Image) -> bytes:
    """A WebP whose longest edge is at most EDGE, never enlarged, made at a small fixed cost per job."""
    size = scaled(image.size, EDGE)
    small = image if size == image.size else shrink(image, size)
    pixels = pixels_for(small, "webp")
    pixels.info = {}  # no metadata of the upload's reaches the preview
    out = io.BytesIO()
    # method 0, the encoder's fastest: at 160 pixels the slower ones save a few bytes for ten times the time.
    pixels.save(out, "WEBP", quality=QUALITY, method=0)
    return out.getvalue()


def scaled(size: tuple[int, int], edge: int) -> tuple[int, int]:
    """`size` shrunk to fit `edge` on its longest side (never enlarged), the ratio kept."""
    scale = min(1.0, edge / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def shrink(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """One pixel in every few (nearest neighbours, down to SAMPLING times the size), then those
    averaged: a fraction of the cost of averaging every pixel of a large image, which reads all of
    it, for a small preview that looks the same."""
    sampled = image.resize(scaled(image.size, SAMPLING * max(size)), Image.Resampling.NEAREST)
    return sampled.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def store(key: str, image: Image.Image) -> None:
    """Store the thumbnail of the file at `key`; a failure costs the admin a picture, never the job."""
    try:
        storage.save_output(storage.thumbnail_key(key), thumbnail_bytes(image))
    except Exception:
        logger.warning("could not store the thumbnail of %s", key, exc_info=True)
