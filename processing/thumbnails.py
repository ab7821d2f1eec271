"""Admin thumbnails, made by the worker from pixels it has already decoded, and stored with each file.

The web process never decodes an upload to show it: a hostile JPEG can take seconds to decode,
and a page of the admin lists a hundred jobs. A thumbnail lives at `storage.thumbnail_key(file key)`
and goes when its file goes (storage.delete_job_files removes both).
"""

import io
import logging

from PIL import Image

from processing import storage
from processing.imaging import pixels_for

logger = logging.getLogger(__name__)

EDGE = 160
QUALITY = 80
CONTENT_TYPE = "image/webp"


def thumbnail_bytes(image: Image.Image) -> bytes:
    """A WebP whose longest edge is at most EDGE, never enlarged, made at a small fixed cost per job."""
    scale = min(1.0, EDGE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # reducing_gap: an integer reduction first, so a 50-megapixel image costs little more than a small one.
    small = image if size == image.size else image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    pixels = pixels_for(small, "webp")
    pixels.info = {}  # no metadata of the upload's reaches the preview
    out = io.BytesIO()
    # method 0, the encoder's fastest: at 160 pixels the slower ones save a few bytes for ten times the time.
    pixels.save(out, "WEBP", quality=QUALITY, method=0)
    return out.getvalue()


def store(key: str, image: Image.Image) -> None:
    """Store the thumbnail of the file at `key`; a failure costs the admin a picture, never the job."""
    try:
        storage.save_output(storage.thumbnail_key(key), thumbnail_bytes(image))
    except Exception:
        logger.warning("could not store the thumbnail of %s", key, exc_info=True)
