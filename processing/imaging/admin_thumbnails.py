"""Admin thumbnails: made when the admin first shows them, with a bounded decode, and stored with each file.

A job does not pay for a preview that few jobs ever have looked at: two 160-pixel WebPs made and
stored by the worker took about a tenth of its time. The admin makes a file's thumbnail on its
first view instead (`make_later`), and only of an image of MAX_LATER_PIXELS pixels at most, so one
admin request costs milliseconds whatever the upload; a JPEG is decoded at the smallest DCT scale
that covers the thumbnail. The worker stores the thumbnails of larger files (`store_unless_later`),
from the pixels it has decoded anyway, a small part of what such a job costs.

A thumbnail lives at `storage.thumbnail_key(file key)` and goes when its file goes
(storage.delete_job_files removes both).
"""

import io
import logging

from PIL import Image, ImageOps

from processing import storage
from processing.errors import UnprocessableImage
from processing.imaging import jxl
from processing.imaging.codecs import DECODING_ERRORS, open_allowed, pixels_for, to_working_mode

logger = logging.getLogger(__name__)

EDGE = 160
SAMPLING = 4  # see shrink
QUALITY = 80
CONTENT_TYPE = "image/webp"
# The largest image the admin decodes for a thumbnail: a 4 MP PNG decodes in about 40 ms and 16 MB.
# All of a JPEG's pixels count too: DCT scaling saves the transforms, not the entropy decoding (a 48 MP
# JPEG decoded at an eighth still took 110 ms).
MAX_LATER_PIXELS = 4_000_000


def thumbnail_bytes(image: Image.Image, edge: int = EDGE, quality: int = QUALITY) -> bytes:
    """A WebP whose longest edge is at most `edge`, never enlarged, made at a small fixed cost."""
    size = scaled(image.size, edge)
    small = image if size == image.size else shrink(image, size)
    pixels = pixels_for(small, "webp")
    pixels.info = {}  # no metadata of the upload's reaches the preview
    out = io.BytesIO()
    # method 0, the encoder's fastest: at 160 pixels the slower ones save a few bytes for ten times the
    # time; at 1280, a tenth of the bytes for seven times the time (44 ms against 290).
    pixels.save(out, "WEBP", quality=quality, method=0)
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


# --- Made by the worker, for the files the admin may not decode ---------------------------------


def made_later(width: int, height: int) -> bool:
    """Whether the admin makes the thumbnail of a file this large when it first shows it (else the
    worker does)."""
    return width * height <= MAX_LATER_PIXELS


def store_unless_later(key: str, image: Image.Image, size: tuple[int, int]) -> None:
    """Store the thumbnail of the file at `key` (of `size`) from the pixels in hand, unless the admin
    can make it cheaply when it first shows it."""
    if not made_later(*size):
        store(key, image)


def store(key: str, image: Image.Image) -> None:
    """Store the thumbnail of the file at `key`; a failure costs the admin a picture, never the job."""
    try:
        storage.save_output(storage.thumbnail_key(key), thumbnail_bytes(image))
    except Exception:
        logger.warning("could not store the thumbnail of %s", key, exc_info=True)


# --- Made by the admin, on first view ------------------------------------------------------------


def make_later(key: str, max_pixels: int, max_jpeg_scans: int | None) -> bytes | None:
    """The thumbnail of the file at `key`, decoded within MAX_LATER_PIXELS and stored for the next
    view; None when the file is gone, damaged or larger (the worker stores those)."""
    image = decoded_within_bound(key, EDGE, max_pixels, max_jpeg_scans)
    if image is None:
        return None
    data = thumbnail_bytes(image)
    store_bytes(storage.thumbnail_key(key), data)
    return data


def decoded_within_bound(
    key: str, edge: int, max_pixels: int, max_jpeg_scans: int | None, bound: int | None = None
) -> Image.Image | None:
    """The file at `key`, upright and in a working mode, when it has `bound` pixels at most
    (MAX_LATER_PIXELS unless given): a JPEG at the smallest DCT scale that still has twice `edge` on
    each side. None when the file is gone, damaged or larger."""
    try:
        with storage.local_path(key) as path, open(path, "rb") as fp:
            # A JPEG XL is decoded whole when opened: its size is read from its header first.
            header = jxl.read_header(fp)
            if header is not None and not made_later(header.width, header.height):
                return None
            # The upload's limits again: this file passed them at submit, and they bound Pillow's
            # header parsing and the scans decoded, which the draft below does not.
            image = open_allowed(fp, max_pixels, max_jpeg_scans)
            width, height = image.size
            if width * height > (MAX_LATER_PIXELS if bound is None else bound):
                return None
            image.draft(None, (2 * edge, 2 * edge))
            image.load()
            return to_working_mode(ImageOps.exif_transpose(image))
    except (OSError, UnprocessableImage, *DECODING_ERRORS):
        logger.warning("could not decode %s for a smaller copy", key, exc_info=True)
        return None


def store_bytes(key: str, data: bytes) -> None:
    """Store a small copy at `key`; a failure costs the next view a new one, never this one."""
    try:
        storage.save_output(key, data)
    except Exception:
        logger.warning("could not store %s", key, exc_info=True)
