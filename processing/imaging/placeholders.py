"""What a page shows while a result loads: a BlurHash string and a tiny preview as a data: URL.

Both are made by the worker from the pixels it already holds, sampled down first, so they cost
a fraction of a millisecond per job whatever the image's size (`python -m bench.placeholders`).
"""

import base64
import io
from dataclasses import dataclass

import blurhash
from PIL import Image

from processing.imaging.admin_thumbnails import scaled, shrink
from processing.imaging.codecs import pixels_for

# BlurHash's own advice for photos: 4 components across and 3 down, a 28-character string.
COMPONENTS = (4, 3)
# A BlurHash holds only the lowest frequencies: 4 components across need 8 samples; 16 pixels on
# the long edge have all of them. The library reads its pixels one by one in Python (0.33 ms at 32
# pixels, 0.09 at 16): the fewer, the cheaper.
HASH_EDGE = 16
# The preview's pixels are sampled down to this first, and the hash's from them.
SAMPLE_EDGE = 32
# The preview, shown stretched and blurred by the page: small enough to fit a data: URL of 1 KB.
PREVIEW_EDGE = 24
PREVIEW_QUALITY = 40
MAX_PREVIEW_CHARS = 1024


@dataclass(frozen=True)
class Placeholder:
    blurhash: str
    preview: str  # a data: URL, at most MAX_PREVIEW_CHARS characters


def make(image: Image.Image) -> Placeholder:
    small = shrink(image, scaled(image.size, SAMPLE_EDGE)).convert("RGB")
    smaller = small.resize(scaled(small.size, HASH_EDGE), Image.Resampling.BOX)  # encode() closes it
    return Placeholder(blurhash.encode(smaller, *COMPONENTS), preview_url(small))


def preview_url(small: Image.Image) -> str:
    """A WebP of at most PREVIEW_EDGE pixels, halved until its data: URL fits MAX_PREVIEW_CHARS."""
    edge = PREVIEW_EDGE
    while True:
        url = data_url(small.resize(scaled(small.size, edge), Image.Resampling.BILINEAR))
        if len(url) <= MAX_PREVIEW_CHARS or edge <= 4:
            return url
        edge //= 2


def data_url(image: Image.Image) -> str:
    pixels = pixels_for(image, "webp")
    out = io.BytesIO()
    pixels.save(out, "WEBP", quality=PREVIEW_QUALITY, method=0)
    return "data:image/webp;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def fields(image: Image.Image) -> dict[str, str]:
    """The job's placeholder fields for a result of these pixels."""
    placeholder = make(image)
    return {"placeholder_blurhash": placeholder.blurhash, "placeholder_preview": placeholder.preview}
