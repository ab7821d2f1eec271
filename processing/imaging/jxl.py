"""JPEG XL: its header read without decoding, its encoder's settings, and a JPEG recompressed losslessly.

The codec is libjxl, through the Pillow plugin this module registers (codecs imports it). The plugin
decodes the whole image when it opens a file, so what a file's header says (its size, for the pixel
limits) is read here instead, from the bits themselves (`read_header`), before the plugin sees it.
"""

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO

import pillow_jxl
from PIL import Image
from pillow_jxl import JpegXLImagePlugin

from processing.errors import UnprocessableImage

# One decoder thread, as for every codec: the worker's own threads already fill the cores.
JpegXLImagePlugin.DECODE_THREADS = 1

CODESTREAM_SIGNATURE = b"\xff\x0a"
CONTAINER_SIGNATURE = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
# A header's size and orientation fit in its first 12 bytes; a container's boxes before the codestream
# (its file type, EXIF, XMP, the JPEG reconstruction data) are skipped by their lengths, up to this many.
HEADER_BYTES = 16
MAX_BOXES_BEFORE_CODESTREAM = 64
# The spec's U32 for a side that is not a multiple of 8 below 256: 2 selector bits, then this many bits,
# plus one. Aspect ratios 1-7 give the width from the height.
SIDE_BITS = (9, 13, 18, 30)
RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}
SWAPPING_ORIENTATIONS = {5, 6, 7, 8}

# libjxl's effort, 1 (fastest) to 9; the worker sets JXL_EFFORT (set_effort). Measured on HD photos at
# quality 85, one thread: 3 encodes in about 0.07 s a megapixel, 7 (libjxl's default) in about 0.6 s;
# at 3 the files are as small at that quality, but reaching JPEG's likeness on smooth photos costs
# 1.7 times 7's bytes (`python -m bench.formats --jxl-effort N`).
OPTIONS = {"effort": 3}
# Lossless pixels at effort 1: 30% below PNG's bytes in a twentieth of its time, about 6 bytes of
# memory a pixel; effort 2 and up saved another 4% for ten times the time and seven times the memory.
LOSSLESS_PIXELS_EFFORT = 1
# Encoding pixels: one thread; never the plugin's own JPEG recompression (it reads the file an image was
# opened from); no EXIF (the plugin would take the image's own), XMP or ICC profile.
PIXELS_ALONE = {"num_threads": 1, "lossless_jpeg": False, "exif": b""}


@dataclass(frozen=True)
class Header:
    """What a JPEG XL's codestream header says: its size as stored and its orientation (1-8)."""

    width: int
    height: int
    orientation: int

    @property
    def displayed_size(self) -> tuple[int, int]:
        """The size a viewer shows: the decoder turns the pixels upright by the orientation."""
        if self.orientation in SWAPPING_ORIENTATIONS:
            return self.height, self.width
        return self.width, self.height


def is_jxl(start: bytes) -> bool:
    """Whether a file starting with these bytes is a JPEG XL: a bare codestream or its container."""
    return start.startswith(CODESTREAM_SIGNATURE) or start.startswith(CONTAINER_SIGNATURE)


def read_header(fp: BinaryIO) -> Header | None:
    """The header of the JPEG XL in `fp`, read from its first bytes; None when it is no JPEG XL.

    A JPEG XL whose header cannot be read is damaged (corrupt_image). Leaves `fp` at its start.
    """
    fp.seek(0)
    try:
        start = fp.read(len(CONTAINER_SIGNATURE))
        if not is_jxl(start):
            return None
        if start.startswith(CODESTREAM_SIGNATURE):
            fp.seek(0)
            codestream = fp.read(HEADER_BYTES)
        else:
            codestream = codestream_start(fp)
        return parse_header(codestream)
    except (IndexError, KeyError, struct.error) as exc:
        raise UnprocessableImage("corrupt_image", f"the JPEG XL header is damaged: {exc}") from None
    finally:
        fp.seek(0)


def codestream_start(fp: BinaryIO) -> bytes:
    """The first bytes of the codestream in a JPEG XL container (after its signature box): in one
    `jxlc` box, or split over `jxlp` boxes, each of which starts with a 4-byte index."""
    found = b""
    for _ in range(MAX_BOXES_BEFORE_CODESTREAM):
        box = fp.read(8)
        if len(box) < 8:
            break
        size, kind = struct.unpack(">I4s", box)
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", fp.read(8))[0], 16
        to_end = size == 0  # the last box may run to the end of the file
        payload = size - header
        if kind == b"jxlp":
            fp.read(4)
            payload -= 4
        if payload < 0 and not to_end:
            raise IndexError(f"a {kind!r} box shorter than its header")
        if kind in (b"jxlc", b"jxlp"):
            wanted = HEADER_BYTES - len(found)
            part = fp.read(wanted if to_end else min(wanted, payload))
            found += part
            if len(found) >= HEADER_BYTES or to_end or kind == b"jxlc":
                return found
            fp.seek(payload - len(part), io.SEEK_CUR)
        elif to_end:
            break
        else:
            fp.seek(payload, io.SEEK_CUR)
    if not found:
        raise IndexError("no codestream box")
    return found


def parse_header(codestream: bytes) -> Header:
    """The SizeHeader and the orientation of the ImageMetadata after it (spec, annex A), bit by bit."""
    if not codestream.startswith(CODESTREAM_SIGNATURE):
        raise IndexError("no codestream signature")
    bits = Bits(codestream[len(CODESTREAM_SIGNATURE) :])
    small = bits.read(1)
    height = (bits.read(5) + 1) * 8 if small else side(bits)
    ratio = bits.read(3)
    if ratio:
        numerator, denominator = RATIOS[ratio]
        width = height * numerator // denominator
    else:
        width = (bits.read(5) + 1) * 8 if small else side(bits)
    orientation = 1
    all_default = bits.read(1)
    if not all_default and bits.read(1):  # extra_fields
        orientation = 1 + bits.read(3)
    return Header(width, height, orientation)


def side(bits: "Bits") -> int:
    return bits.read(SIDE_BITS[bits.read(2)]) + 1


class Bits:
    """A JPEG XL bit reader: least significant bit first; past the end raises IndexError."""

    def __init__(self, data: bytes):
        self.data = data
        self.position = 0

    def read(self, count: int) -> int:
        value = 0
        for shift in range(count):
            byte = self.data[self.position >> 3]
            value |= ((byte >> (self.position & 7)) & 1) << shift
            self.position += 1
        return value


def oriented_by_decoder(image: Image.Image) -> bool:
    """Whether the decoder has already turned these pixels upright.

    A JPEG XL's own pixels are, by its codestream's orientation, which the format says wins over any
    EXIF one (libjxl keeps the EXIF as it was, so turning by it again would turn twice). A JPEG the
    plugin reconstructs from a JPEG XL is the JPEG as stored, to be turned by its EXIF as any JPEG is.
    """
    return image.format == "JXL" and not getattr(image, "jpeg", False)


def set_effort(effort: int) -> None:
    """The encoder's effort from now on (the JXL_EFFORT setting, applied when Django starts)."""
    OPTIONS["effort"] = effort


def encode(image: Image.Image, quality: int) -> bytes:
    """Pixels (L, LA, RGB or RGBA, in sRGB) as a lossy JPEG XL, with no metadata.

    `quality` is libjxl's own, made after JPEG's: at 85 an HD photo takes 0.4-0.55 of JPEG's bytes, as
    alike (SSIM) on a detailed one, a little less on smooth ones (0.988 against 0.993). 100 is lossless,
    as on libjxl's scale (its encoder refuses 100 otherwise)."""
    if quality >= 100:
        return encode_lossless(image)
    out = io.BytesIO()
    image.save(out, "JXL", quality=quality, effort=OPTIONS["effort"], **PIXELS_ALONE)
    return out.getvalue()


def encode_lossless(image: Image.Image, jpeg: bytes | None = None) -> bytes:
    """A lossless JPEG XL: of `jpeg`, the upload's own file, when given (recompress_jpeg); else of the
    pixels, which it decodes to exactly."""
    if jpeg is not None:
        return recompress_jpeg(jpeg)
    out = io.BytesIO()
    image.save(out, "JXL", lossless=True, effort=LOSSLESS_PIXELS_EFFORT, **PIXELS_ALONE)
    return out.getvalue()


def recompress_jpeg(jpeg: bytes) -> bytes:
    """The JPEG file itself, recompressed without loss: libjxl keeps its DCT coefficients and what
    it needs to write the very same file back (its metadata too). About a quarter smaller.

    Lossless, not merely at quality 100: at a lower quality libjxl may halve the stored size, and the
    file it writes back is then another, smaller JPEG.
    """
    encoder = pillow_jxl.Encoder(mode="RGB", lossless=True, effort=OPTIONS["effort"], num_threads=1)
    try:
        data: bytes = encoder(jpeg, 0, 0, jpeg_encode=True)
    except RuntimeError as exc:  # what libjxl cannot keep so: a CMYK JPEG, for one
        raise UnprocessableImage(
            "not_recompressible",
            f"this JPEG cannot be recompressed without loss as JPEG XL ({exc}); convert it without lossless",
        ) from None
    return data
