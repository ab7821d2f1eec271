"""Why the allowed decoders refused an upload: another format, a damaged file, or a variant they don't decode.

Pillow answers "cannot identify image file" whenever no decoder it was offered opens a file, whether
the file is a PSD or a PNG whose first chunk is broken. A file whose signature is one of Darkroom's
formats is not another format: it is damaged (422 `corrupt_image`, with the decoder's reason), or, when
its header is valid, a variant of that format this server does not decode (422 `unsupported_variant`).
Only a file that no allowed decoder recognises is not an image in a supported format (415).

`unsupported_variant` is a 422, not a 415: the media type is one Darkroom accepts, and another file of
it would be processed; it is this file's content that can't be, as for `corrupt_image`.
"""

import struct
from collections.abc import Sequence
from typing import BinaryIO

from PIL import Image, TiffImagePlugin

from processing.errors import UnprocessableImage, UnsupportedImage, UnsupportedVariant
from processing.imaging import libtiff

# What Image.open takes to mean "not this format" and turns into "cannot identify image file".
NOT_THIS_FORMAT = (SyntaxError, IndexError, TypeError, struct.error)
# Pillow's reason when a header parsed but declared no pixels (a width or height of 0) or no pixel format.
PILLOW_NO_PIXELS = "not identified by this driver"
SIGNATURE_BYTES = 16  # what Pillow's decoders recognise a format by
BMP_HEADERS_BYTES = 14 + 124 + 16  # the file header, the largest info header, and four bit masks

BMP_COMPRESSIONS = {
    4: "JPEG data inside a BMP (compression BI_JPEG)",
    5: "PNG data inside a BMP (compression BI_PNG)",
    6: "bit masks with alpha (compression BI_ALPHABITFIELDS)",
    11: "CMYK pixels (compression 11)",
    12: "CMYK pixels run-length encoded (compression 12)",
    13: "CMYK pixels run-length encoded (compression 13)",
}
BITFIELDS = 3
BMP_BITS = (1, 2, 4, 8, 16, 24, 32, 64)
# Info headers: 12 (OS/2 1.x and Windows 2), 16 to 64 (OS/2 2.x, which may cut its 64 bytes short), 108
# (Windows 95) and 124 (Windows 98); Pillow reads 12, 40, 52, 56, 64, 108 and 124.
OS2_HEADERS = range(16, 65)
PILLOW_BMP_HEADERS = (12, 40, 52, 56, 64, 108, 124)
TIFF_COMPRESSION = 259


def refused(fp: BinaryIO, allowed: Sequence[str], error: Exception | None = None) -> UnprocessableImage:
    """The domain error for a file none of the allowed decoders opened; `error` is the one a decoder
    raised, when Image.open let it through rather than answering "cannot identify"."""
    fp.seek(0)
    name = signature_of(fp.read(SIGNATURE_BYTES), allowed)
    if name is None:
        return UnsupportedImage(f"not an image in a supported format ({', '.join(allowed)})")
    if name == "BMP":
        fp.seek(0)
        variant = bmp_variant(fp.read(BMP_HEADERS_BYTES))
        if variant is not None:
            return UnsupportedVariant(f"the BMP uses a variant this server does not decode: {variant}")
    return damaged(name, error if error is not None else opening_error(fp, name))


def signature_of(prefix: bytes, allowed: Sequence[str]) -> str | None:
    """The first allowed format whose decoder recognises this start of a file."""
    for name in allowed:
        _, accept = Image.OPEN[name]
        # An accept function may answer with a string: why it can't tell (a library not installed).
        if accept is not None and accept(prefix) is True:
            return name
    return None


def opening_error(fp: BinaryIO, name: str) -> Exception | None:
    """What the decoder of `name` raises on this file: the reason Image.open kept to itself."""
    factory, _ = Image.OPEN[name]
    fp.seek(0)
    try:
        factory(fp, "")
    except NOT_THIS_FORMAT as exc:
        return exc
    return None


def damaged(name: str, error: Exception | None) -> UnprocessableImage:
    reason = str(error) if error is not None else "its decoder does not recognise it"
    if reason == PILLOW_NO_PIXELS:
        reason = "it declares no pixels (a width or height of 0) or no pixel format"
    return UnprocessableImage("corrupt_image", f"the {name} file is damaged: {reason}")


def bmp_variant(headers: bytes) -> str | None:
    """What valid variant of BMP these headers describe that Pillow does not decode; None when they
    are not a valid BMP's (damaged)."""
    if len(headers) < 34:
        return None
    (header_size,) = struct.unpack_from("<I", headers, 14)
    if header_size == 12:
        (bits,), compression = struct.unpack_from("<H", headers, 24), 0
    elif header_size in OS2_HEADERS or header_size in PILLOW_BMP_HEADERS:
        (bits,) = struct.unpack_from("<H", headers, 28)
        (compression,) = struct.unpack_from("<I", headers, 30) if header_size >= 20 else (0,)
    else:
        return None
    if bits not in BMP_BITS and compression not in (4, 5):  # a BMP holding a JPEG or PNG has 0
        return None
    if compression in BMP_COMPRESSIONS:
        return BMP_COMPRESSIONS[compression]
    if compression == BITFIELDS:
        masks = bmp_masks(headers, header_size)
        if masks is None or not valid_masks(masks, bits):
            return None
        return f"{bits}-bit pixels with the bit masks " + ", ".join(f"{mask:#x}" for mask in masks if mask)
    if bits in (2, 64):
        return f"{bits} bits per pixel"
    if header_size not in PILLOW_BMP_HEADERS:
        return f"an OS/2 2.x info header of {header_size} bytes"
    return None


def bmp_masks(headers: bytes, header_size: int) -> tuple[int, ...] | None:
    """Red, green and blue masks (and alpha's, from an info header that has one), from the 54th byte on."""
    count = 4 if header_size >= 56 else 3
    if len(headers) < 54 + 4 * count:
        return None
    return struct.unpack_from(f"<{count}I", headers, 54)


def valid_masks(masks: tuple[int, ...], bits: int) -> bool:
    """Red, green and blue given, and each mask one run of bits within the pixel, overlapping no other."""
    if not all(masks[:3]):
        return False
    taken = 0
    for mask in masks:
        run = mask >> ((mask & -mask).bit_length() - 1) if mask else 0
        if mask >= 1 << bits or run & (run + 1) or mask & taken:
            return False
        taken |= mask
    return True


def check_decodable(image: Image.Image) -> None:
    """Refuse, from its header, a TIFF compressed with a method this server's libtiff has no codec for."""
    if not isinstance(image, TiffImagePlugin.TiffImageFile):
        return
    compression = image.tag_v2.get(TIFF_COMPRESSION, 1)
    if not libtiff.can_decode(compression):
        method = TiffImagePlugin.COMPRESSION_INFO.get(compression, "an unknown method").upper()
        raise UnsupportedVariant(
            f"the TIFF is compressed with {method} (compression {compression}), "
            "which this server's TIFF library cannot decode"
        )
