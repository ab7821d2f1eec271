"""Previews of a result, sized for the box a page shows it in, made on their first request and kept.

The pages showed the whole result as its preview, 3-6 MB for a box a few hundred pixels wide, and
a phone none at all. A preview is a WebP whose longest edge is at most one of storage.PREVIEW_SIZES
(a few files per result, each of bounded cost; GET /api/v1/preview/{id}?size=N). It is made as the
admin's thumbnails are (admin_thumbnails): from the result itself on its first request when the
result has MAX_LATER_PIXELS at most (a JPEG at the smallest DCT scale that will do); for a larger
result, the worker stores the largest preview from the pixels it holds (about 0.1 s for a 12 MP
result, against the seconds such a job takes), and the smaller ones are made from that.
"""

from PIL import Image

from processing import storage
from processing.imaging import admin_thumbnails

SIZES = storage.PREVIEW_SIZES
LARGEST = SIZES[-1]
QUALITY = 80
CONTENT_TYPE = admin_thumbnails.CONTENT_TYPE


def store_unless_later(key: str, image: Image.Image, size: tuple[int, int]) -> None:
    """Store the largest preview of the result at `key` (of `size`) from the pixels in hand, unless a
    request can make it cheaply from the result itself."""
    if not admin_thumbnails.made_later(*size):
        admin_thumbnails.store_bytes(storage.preview_key(key, LARGEST), preview_bytes(image, LARGEST))


def preview(key: str, size: int, max_pixels: int, max_jpeg_scans: int | None) -> bytes | None:
    """The preview of the result at `key` at most `size` (one of SIZES) on its longest edge: stored,
    or made now and stored for the next request. None when it can't be made: the result is gone or
    damaged, or too large to decode in a request and its worker stored no largest preview."""
    try:
        return storage.read(storage.preview_key(key, size))
    except OSError:
        pass  # not made yet: made now, within its bound
    source = admin_thumbnails.decoded_within_bound(key, size, max_pixels, max_jpeg_scans)
    if source is None and size != LARGEST:
        # A result too large to decode here: its worker stored the largest preview, which is small.
        largest = storage.preview_key(key, LARGEST)
        source = admin_thumbnails.decoded_within_bound(largest, size, max_pixels, max_jpeg_scans, LARGEST**2)
    if source is None:
        return None
    data = preview_bytes(source, size)
    admin_thumbnails.store_bytes(storage.preview_key(key, size), data)
    return data


def preview_bytes(image: Image.Image, size: int) -> bytes:
    """A WebP of the image whose longest edge is at most `size`, never enlarged."""
    target = admin_thumbnails.scaled(image.size, size)
    if target != image.size:
        # An average of whole boxes first (Image.reduce: every pixel read once, in C), then the last
        # step. Sampled as an admin thumbnail is, a preview this large reads most pixels anyway: a
        # 12 MP result to 1280 took 139 ms so, 32 ms thus, and looks as alike (SSIM 0.98 to Lanczos).
        factor = min(image.width // target[0], image.height // target[1])
        reduced = image.reduce(factor) if factor >= 2 else image
        image = reduced.resize(target, Image.Resampling.BILINEAR)
    return admin_thumbnails.thumbnail_bytes(image, edge=size, quality=QUALITY)
