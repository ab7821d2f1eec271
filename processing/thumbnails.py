"""Admin thumbnails, made by the worker from pixels it has already decoded, and stored with each file.

The web process never decodes an upload to show it: a hostile JPEG can take seconds to decode,
and a page of the admin lists a hundred jobs. A thumbnail lives at `storage.thumbnail_key(file key)`
and goes when its file goes (storage.delete_job_files removes both).
"""

import logging

from PIL import Image

from processing import storage
from processing.imaging import encode_image

logger = logging.getLogger(__name__)

EDGE = 160
QUALITY = 80
CONTENT_TYPE = "image/webp"


def thumbnail_bytes(image: Image.Image) -> bytes:
    """A WebP whose longest edge is at most EDGE, never enlarged."""
    scale = min(1.0, EDGE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # reducing_gap: an integer reduction first, so a 50-megapixel image costs little more than a small one.
    small = image if size == image.size else image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    return encode_image(small, "webp", QUALITY)


def store(key: str, image: Image.Image) -> None:
    """Store the thumbnail of the file at `key`; a failure costs the admin a picture, never the job."""
    try:
        storage.save_output(storage.thumbnail_key(key), thumbnail_bytes(image))
    except Exception:
        logger.warning("could not store the thumbnail of %s", key, exc_info=True)
