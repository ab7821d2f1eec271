"""Reading uploads safely and writing results cleanly: the only place that decides which files are images."""

import contextlib
import io
import mmap
import os
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pillow_heif
from PIL import ExifTags, Image, ImageCms, ImageOps, TiffImagePlugin, UnidentifiedImageError, _imaging

from processing.errors import EmptyImage, ImageTooLarge, TooManyScans, UnprocessableImage
from processing.imaging import jxl, libtiff, png, refusals
from processing.imaging.formats import OUTPUT_FORMATS, extension_for, has_alpha, mime_type_for
from processing.imaging.frame_count import count_frames
from processing.imaging.whole_file import size_of, whole

# How far a piece of work has got, 0 to 1; it may raise (processing.errors.Cancelled) to stop the work.
ProgressCallback = Callable[[float], None]

# HEIC/HEIF (iPhone photos) through libheif; AVIF is Pillow's own; JPEG XL (JXL) is registered by
# processing.imaging.jxl.
pillow_heif.register_heif_opener()

# Pillow format names. Never EPS, PDF or PSD: their decoders are large attack surfaces
# (EPS runs Ghostscript) and nobody needs them to resize a photo.
ALLOWED_INPUT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF", "JXL")
# The largest width or height each encoder can write (JPEG XL's: its level 5, what browsers decode).
MAX_EDGE = {"jpeg": 65_500, "png": 2**31 - 1, "webp": 16_383, "avif": 65_536, "jxl": 262_144, "gif": 65_535}
# Tuned for SSIM; one thread, as the worker's own threads already fill the cores. The speed is
# libavif's default until the worker sets AVIF_SPEED (set_avif_speed).
AVIF_OPTIONS = {"speed": 6, "max_threads": 1, "advanced": [("tune", "ssim")]}
# `quality` is on JPEG's scale. AVIF at 0.8 of it is as alike (SSIM) to the original as JPEG at the
# whole of it, measured on photographs: equal at AVIF 62-71 for JPEG 85 (`python -m bench.formats
# --photos DIR`). Above 85 the scale climbs back, so that 100 is AVIF's best too.
AVIF_QUALITY_SCALE = 0.8
AVIF_SCALED_UP_TO = 85

# What Pillow raises on damaged data, from the header parsers and the decoders.
DECODING_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)

# JPEG markers. Inside a scan's entropy-coded data a 0xFF byte is followed by 0x00 (stuffing), a
# restart marker (0xD0-0xD7) or more 0xFF fill: anything else ends the scan.
SOS, EOI = 0xDA, 0xD9
STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}
END_OF_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
NOT_FILL = re.compile(rb"[^\xff]")
JPEG_START = b"\xff\xd8\xff"  # SOI and the next marker's first byte, as Pillow recognises a JPEG
# Pillow reads a JPEG's header in Python, a step per segment and per stray byte (fill or junk
# between segments), to its first scan: a megabyte of empty segments cost 0.38 s of the gateway's
# CPU. Our own walk, in C where it can be, refuses a file past these before Pillow sees it. A camera
# writes about 20 segments before a scan (a few hundred with an ICC profile or XMP in 64 KB
# pieces); a portrait's XMP (its depth map and original) reaches several megabytes.
MAX_JPEG_SEGMENTS_BEFORE_SCAN = 1000
MAX_JPEG_STRAY_BYTES_BEFORE_SCAN = 1000
MAX_JPEG_HEADER_BYTES = 16 * 1024 * 1024

# How Pillow's refusal of a decompression bomb counts its pixels ("Image size (N pixels) exceeds ...").
PILLOW_PIXEL_COUNT = re.compile(r"\((\d+) pixels\)")
# How Pillow reports libtiff's failure to decode, a number without its meaning.
PILLOW_TIFF_ERROR = re.compile(r"decoder error (-\d+)")
# TIFF tags that say what a sample is.
BITS_PER_SAMPLE, SAMPLE_FORMAT, SIGNED_INTEGER = 258, 339, 2

# Orientations 5-8 swap width and height.
SWAPPING_ORIENTATIONS = {5, 6, 7, 8}


@dataclass(frozen=True)
class ImageInfo:
    """What a header says about an image; width and height are as displayed (EXIF orientation applied)."""

    format: str
    width: int
    height: int
    mime_type: str
    frames: int = 1  # an animated GIF's or WebP's (processing.imaging.frame_count)

    @property
    def extension(self) -> str:
        return extension_for(self.format)


@dataclass(frozen=True)
class DecodeHint:
    """What an operation needs from the decoder: a JPEG can be decoded smaller (DCT scaling) or as luma alone.

    `size` is the smallest (width, height) it needs, as displayed (EXIF orientation applied);
    `mode` "L" asks for the luma alone. Either may be None: no reduction, or any working mode.
    """

    mode: str | None = None
    size: tuple[int, int] | None = None


# An image to read: a path, or a file already open (a small upload held in memory).
Source = str | os.PathLike[str] | BinaryIO


@contextlib.contextmanager
def opened(source: Source) -> Iterator[BinaryIO]:
    """A path opened for reading, or an open file from its start, left open for its owner to close."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as fp:
            yield fp
        return
    source.seek(0)
    yield source


def probe(source: Source, max_pixels: int, max_jpeg_scans: int | None = None) -> ImageInfo:
    """Identify an upload from its header alone (and a JPEG's markers); never decodes the pixels."""
    with opened(source) as fp:
        header = checked_jxl_header(fp, max_pixels)
        if header is not None:  # opening it with Pillow would decode it
            return ImageInfo("JXL", *header.displayed_size, mime_type_for("JXL"))
        image = open_allowed(fp, max_pixels, max_jpeg_scans)
        width, height = displayed_size(image)
        frames = count_frames(image, fp)
        return ImageInfo(format_of(image), width, height, mime_type_for(format_of(image)), frames)


def load_image(
    source: Source,
    max_pixels: int,
    hint: DecodeHint | None = None,
    max_jpeg_scans: int | None = None,
) -> tuple[Image.Image, ImageInfo]:
    """Decode the first frame, upright, in sRGB, as L, LA, RGB or RGBA, for the operations to work on.

    With a hint, a JPEG may come back smaller (by 2, 4 or 8) or as L: the image's info then holds
    the upload's displayed size as "source_size" (see source_size), and ImageInfo describes the upload.
    """
    with opened(source) as fp:
        image = open_allowed(fp, max_pixels, max_jpeg_scans)
        source_format = format_of(image)
        frames = count_frames(image, fp)
        try:
            with libtiff.messages() as libtiff_said:
                scale = reduce_decode(image, hint) if hint is not None and source_format == "JPEG" else 1
                image.load()
                if not jxl.oriented_by_decoder(image):
                    ImageOps.exif_transpose(image, in_place=True)
        except Image.DecompressionBombError as exc:  # a GIF frame or a TIFF tile larger than the header said
            raise over_pillow_s_limit(exc) from None
        except DECODING_ERRORS as exc:
            raise damaged_data(source_format, exc, libtiff_said) from None
    image = to_working_mode(image)
    image.info["source_format"] = source_format
    if scale > 1:
        image.info["source_size"] = (image.width * scale, image.height * scale)
    info = ImageInfo(source_format, *source_size(image), mime_type_for(source_format), frames)
    return image, info


def damaged_data(source_format: str, exc: Exception, libtiff_said: list[str]) -> UnprocessableImage:
    """The refusal of a decode that failed, saying why: in libtiff's words when it said why, as Pillow
    passes on only a number ("decoder error -2"), which is given the words Pillow has for it."""
    if libtiff_said:
        reason = "; ".join(dict.fromkeys(libtiff_said))
    elif number := PILLOW_TIFF_ERROR.fullmatch(str(exc)):
        reason = _imaging.getcodecstatus(int(number[1])) or str(exc)
    else:
        reason = str(exc)
    return UnprocessableImage("corrupt_image", f"the {source_format} data is damaged: {reason}")


def reduce_decode(image: Image.Image, hint: DecodeHint) -> int:
    """Ask the JPEG decoder for fewer pixels, before it runs: luma alone, or a DCT scale covering hint.size.

    Only a scale that divides both sides is used, so the result is exactly the upload shrunk by an
    integer (no partly covered last row or column) and a size computed from either has the same ratio.
    Returns the scale.
    """
    width, height = image.size
    scale = 1
    if hint.size is not None:
        # The hint is as displayed; the decoder sees the stored pixels, on their side for orientations 5-8.
        swapped = displayed_size(image) != image.size
        need_width, need_height = reversed(hint.size) if swapped else hint.size
        fits = (
            s
            for s in (8, 4, 2)
            if width % s == 0 and height % s == 0 and width // s >= need_width and height // s >= need_height
        )
        scale = next(fits, 1)
    # Luma alone is convert("L") only for pixels already in sRGB: a profile to apply needs the colour.
    mode = "L" if hint.mode == "L" and embedded_profile(image) is None else None
    if scale > 1 or mode is not None:
        image.draft(mode, (width // scale, height // scale))
    return scale


def source_size(image: Image.Image) -> tuple[int, int]:
    """The upload's displayed size: larger than the image when load_image decoded it reduced."""
    size: tuple[int, int] = image.info.get("source_size", image.size)
    return size


def open_allowed(fp: BinaryIO, max_pixels: int, max_jpeg_scans: int | None = None) -> Image.Image:
    """Open the header with only the allowed decoders, refusing empty files, a JPEG header too long to
    walk, too many pixels and, given max_jpeg_scans, a JPEG with more scans than that."""
    if size_of(fp) == 0:
        raise EmptyImage()
    check_jpeg_header(fp)
    checked_jxl_header(fp, max_pixels)
    try:
        image = Image.open(fp, formats=ALLOWED_INPUT_FORMATS)
    except Image.DecompressionBombError as exc:
        raise over_pillow_s_limit(exc) from None
    except UnidentifiedImageError:
        raise refusals.refused(fp, ALLOWED_INPUT_FORMATS) from None
    except DECODING_ERRORS as exc:
        raise refusals.refused(fp, ALLOWED_INPUT_FORMATS, exc) from None
    check_pixels(*image.size, max_pixels)
    refusals.check_decodable(image)
    if max_jpeg_scans is not None and format_of(image) == "JPEG" and image.info.get("progressive"):
        check_jpeg_scans(fp, max_jpeg_scans)
    return image


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width} × {height} = {width * height} pixels, "
            f"more than MAX_IMAGE_PIXELS ({max_pixels})"
        )


def checked_jxl_header(fp: BinaryIO, max_pixels: int) -> jxl.Header | None:
    """A JPEG XL's header, its pixels within max_pixels; None for any other file. The JPEG XL plugin
    decodes the whole image when Pillow opens it, so its size is checked first, from the header."""
    header = jxl.read_header(fp)
    if header is not None:
        check_pixels(header.width, header.height, max_pixels)
    return header


def set_pixel_limit(max_pixels: int) -> None:
    """Make Pillow's own pixel limit MAX_IMAGE_PIXELS (applied when Django starts).

    Pillow refuses an image over twice its MAX_IMAGE_PIXELS, in Image.open and while decoding (a GIF
    frame or a TIFF tile larger than the header said), and only warns over it: half the setting (rounded
    up) refuses what Darkroom refuses, and the warning, for images Darkroom accepts, is dropped.
    """
    Image.MAX_IMAGE_PIXELS = (max_pixels + 1) // 2
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def over_pillow_s_limit(exc: Image.DecompressionBombError) -> ImageTooLarge:
    """The refusal, in our words, of an image Pillow found past twice its limit (set_pixel_limit)."""
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    counted = PILLOW_PIXEL_COUNT.search(str(exc))
    pixels = f"{counted[1]} pixels" if counted else "more pixels than that"
    return ImageTooLarge(f"the image has {pixels}, more than MAX_IMAGE_PIXELS ({limit})")


def check_jpeg_scans(fp: BinaryIO, limit: int) -> None:
    """Refuse a JPEG with more than `limit` scans, from its markers alone.

    Decoding costs a pass over the whole image per scan, so a small progressive JPEG of thousands
    of scans takes minutes. Counting them is a walk from marker to marker, stopped past the limit.
    Only a progressive JPEG is walked (open_allowed): a progressive scan covers the whole image in a
    few bytes (end-of-band runs), where a sequential one codes every block it covers in a few bits
    at least, so its decode costs in proportion to its bytes, and the decoder refuses a second scan
    of an image whose first one held every component ("broken data stream"). Most photos are
    sequential: the walk, a pass over the whole file, is skipped for them.
    """
    with whole(fp) as data:
        scans = count_scans(data, stop_after=limit)
    if scans > limit:
        raise TooManyScans(
            f"the JPEG has more than {limit} scans (MAX_JPEG_SCANS); decoding it would take minutes"
        )


def check_jpeg_header(fp: BinaryIO) -> None:
    """Walk a JPEG's markers to its first scan, refusing a header longer than Pillow should walk
    (MAX_JPEG_SEGMENTS_BEFORE_SCAN and the limits beside it); anything but a JPEG is left to Pillow."""
    with whole(fp) as data:
        if data[:3] != JPEG_START:
            return
        for marker, _ in jpeg_markers(data):
            if marker == SOS:
                return


def count_scans(data: bytes | mmap.mmap, stop_after: int) -> int:
    """The SOS markers of the JPEG in `data` up to its first EOI, counting no further than stop_after + 1."""
    scans = 0
    for marker, _ in jpeg_markers(data):
        if marker == SOS:
            scans += 1
            if scans > stop_after:
                break
    return scans


def jpeg_markers(data: bytes | mmap.mmap) -> Iterator[tuple[int, int]]:
    """(marker, position) of each marker of the JPEG in `data`, after SOI, up to its first EOI.

    Segments are skipped by their lengths (an EXIF thumbnail is a whole JPEG inside one), a scan's
    entropy-coded data by searching for the marker that ends it, fill and junk bytes by searching
    for the next marker. A damaged walk just stops: the decoder reports damage, this only bounds the
    work; past the limits of a JPEG header it raises corrupt_image (check_header_walk).
    """
    position, size = 2, len(data)  # after SOI
    segments = stray = 0
    byte_limit = MAX_JPEG_HEADER_BYTES  # before the first scan: the scans are as long as the image needs
    while position + 4 <= size:
        marker_at = data.find(b"\xff", position)
        fill_end = NOT_FILL.search(data, marker_at) if marker_at >= 0 else None
        if fill_end is None:
            break
        stray += fill_end.start() - 1 - position
        position = fill_end.start() - 1  # the last 0xFF of a run is the marker's own
        segments += 1
        check_header_walk(segments, stray, position, byte_limit)
        marker = data[position + 1]
        if marker == EOI:
            break
        yield marker, position
        if marker in STANDALONE_MARKERS:
            position += 2
            continue
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == SOS:
            segments = stray = 0
            byte_limit = size
            end = END_OF_SCAN.search(data, position)
            if end is None:
                break
            position = end.start()


def check_header_walk(segments: int, stray: int, position: int, byte_limit: int) -> None:
    """Refuse, as damaged, a walk past what any encoder writes before a scan."""
    if segments > MAX_JPEG_SEGMENTS_BEFORE_SCAN:
        problem = f"more than {MAX_JPEG_SEGMENTS_BEFORE_SCAN} segments before a scan"
    elif stray > MAX_JPEG_STRAY_BYTES_BEFORE_SCAN:
        problem = f"more than {MAX_JPEG_STRAY_BYTES_BEFORE_SCAN} stray bytes between its segments"
    elif position > byte_limit:
        problem = f"a header of more than {MAX_JPEG_HEADER_BYTES} bytes before its first scan"
    else:
        return
    raise UnprocessableImage("corrupt_image", f"the JPEG is damaged: it has {problem}")


def format_of(image: Image.Image) -> str:
    # Multi-picture JPEGs (most phone cameras) open as MPO; their first picture is a plain JPEG.
    return "JPEG" if image.format == "MPO" else image.format or ""  # Image.open always sets one


def displayed_size(image: Image.Image) -> tuple[int, int]:
    width, height = image.size
    # Pillow's TIFF decoder applies the orientation itself: the size it gives is already as displayed.
    if isinstance(image, TiffImagePlugin.TiffImageFile):
        return width, height
    # A PNG may keep its eXIf chunk after the pixel data, where its own getexif would decode to find
    # it; the base class reads only what the header gave (XMP, ImageMagick's raw EXIF text).
    png_before_pixels = image.format == "PNG" and "exif" not in image.info
    try:
        exif = Image.Image.getexif(image) if png_before_pixels else image.getexif()
        orientation = exif.get(ExifTags.Base.Orientation, 1)
    except DECODING_ERRORS:
        return width, height  # unreadable EXIF: load_image reports the damage if it matters
    return (height, width) if orientation in SWAPPING_ORIENTATIONS else (width, height)


def to_working_mode(image: Image.Image) -> Image.Image:
    """Convert to sRGB and to one of L, LA, RGB, RGBA, the only modes the operations handle."""
    profile = embedded_profile(image)
    if profile is not None and image.mode == "CMYK" and profile.profile.xcolor_space == "CMYK":
        return to_srgb(image, profile, "RGB")
    image = normalise_mode(image)
    if profile is not None and image.mode in ("RGB", "RGBA") and profile.profile.xcolor_space == "RGB ":
        return to_srgb(image, profile, image.mode)
    return image


def to_srgb(image: Image.Image, profile: ImageCms.ImageCmsProfile, mode: str) -> Image.Image:
    # A profile per call: LittleCMS profile handles are not safe to share between worker threads.
    srgb = ImageCms.createProfile("sRGB")
    # None only with inPlace=True: Pillow has no overload that says so.
    return ImageCms.profileToProfile(image, profile, srgb, outputMode=mode)  # type: ignore[return-value]


def embedded_profile(image: Image.Image) -> ImageCms.ImageCmsProfile | None:
    """The embedded ICC profile when converting is worth it: not absent, not already sRGB, not broken."""
    data = image.info.get("icc_profile")
    if not data:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(data))
    except (ImageCms.PyCMSError, OSError):
        return None  # a broken profile is no reason to refuse the pixels; they are shown as sRGB
    if "sRGB" in (profile.profile.profile_description or ""):
        return None
    return profile


def normalise_mode(image: Image.Image) -> Image.Image:
    if image.mode in ("LA", "RGBA") or (image.mode in ("L", "RGB") and not image.has_transparency_data):
        return image
    if image.mode.startswith("I"):
        return wide_samples_to_8_bits(image)
    if image.mode in ("1", "L"):
        # A transparent grey level (PNG's tRNS) becomes alpha: Pillow's convert does it, as it does for RGBA.
        return image.convert("LA" if image.has_transparency_data else "L")
    if image.mode == "F":
        return image.convert("L")
    try:
        return image.convert("RGBA" if image.has_transparency_data else "RGB")
    except ValueError:
        raise UnprocessableImage("unsupported_color_mode", f"{image.mode} images are not supported") from None


def wide_samples_to_8_bits(image: Image.Image) -> Image.Image:
    """L (LA with a transparent grey level) from samples of 16 bits or more, scaled from their own range.

    Pillow's convert("L") clips at 255 instead of scaling: a 16-bit photo came out white. The range is
    the samples' bit depth (12-bit TIFFs too), 0 to 32767 for signed 16-bit ones (negative is black)
    and, for wider integers, whose range no file states, 0 to 65535 as for 16 bits.
    """
    white = white_level(image)
    levels = np.arange(white + 1, dtype=np.uint32)
    to_8_bits = ((levels * 255 + white // 2) // white).astype(np.uint8)
    samples = np.asarray(image)
    within = np.clip(samples, 0, white) if samples.dtype.itemsize > 2 or white < 65535 else samples
    gray = Image.fromarray(to_8_bits[within], "L")
    transparent = image.info.get("transparency")
    if not isinstance(transparent, int):
        return gray
    # Compared at the samples' own depth: PNG's tRNS gives the transparent level in 16 bits.
    alpha = np.where(samples == transparent, 0, 255).astype(np.uint8)
    return Image.merge("LA", (gray, Image.fromarray(alpha, "L")))


def white_level(image: Image.Image) -> int:
    """The sample value shown as white in an I or I;16 image, from what its file says of its samples."""
    tags = image.tag_v2 if isinstance(image, TiffImagePlugin.TiffImageFile) else {}
    bits = first(tags.get(BITS_PER_SAMPLE), 16)
    signed = first(tags.get(SAMPLE_FORMAT), 1) == SIGNED_INTEGER
    if image.mode.startswith("I;16"):
        return (1 << bits) - 1 if 1 <= bits <= 16 else 65535
    return 32767 if signed and bits == 16 else 65535


def first(value: Any, default: int) -> int:
    """A TIFF tag's first value (Pillow gives a tuple for a tag of several), or the default."""
    if isinstance(value, tuple):
        value = value[0] if value else None
    return value if isinstance(value, int) else default


def encode_image(
    image: Image.Image, format: str, quality: int, progress: ProgressCallback | None = None
) -> bytes:
    """Encode pixels only: no EXIF (so no GPS), XMP, ICC profile or comment reaches the output.

    A PNG is written a band of rows at a time, telling `progress` how far it has got (the other
    encoders are one call each, with nothing to tell until they end)."""
    check_encodable(image, format)
    if format == "png":
        # Read band by band, not copied: the writer takes nothing but the pixels.
        return png.encode(image if image.mode in png.MODES else pixels_for(image, "png"), progress or ignore)
    if format == "jpeg" and image.mode in ("L", "RGB") and not image.has_transparency_data:
        # Stored as it is, no copy: JPEG's encoder takes metadata only from the arguments below (the
        # comment would fall back to image.info, and is given explicitly).
        clean = image
    else:
        clean = pixels_for(image, format)
        # A converted copy carries its source's info, and encoders fall back to it (PNG writes its
        # ICC profile, JPEG its comment): empty it, and pass explicit blanks as well.
        clean.info = {}
    out = io.BytesIO()
    if format == "jpeg":
        clean.save(out, "JPEG", quality=quality, exif=b"", icc_profile=None, comment=b"")
    elif format == "webp":
        clean.save(out, "WEBP", quality=quality, exif=b"", icc_profile=None, xmp=b"")
    elif format == "avif":
        clean.save(
            out, "AVIF", quality=avif_quality(quality), exif=b"", icc_profile=None, xmp=b"", **AVIF_OPTIONS
        )
    elif format == "gif":
        clean.save(out, "GIF", comment=b"")
    else:
        return jxl.encode(clean, quality)
    return out.getvalue()


def ignore(fraction: float) -> None:
    """A progress callback for work nobody follows."""


def check_encodable(image: Image.Image, format: str) -> None:
    """Refuse a format the encoder does not write (ValueError) or an image too wide or high for it."""
    if format not in OUTPUT_FORMATS:
        raise ValueError(f"cannot encode {format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    if max(image.size) > MAX_EDGE[format]:
        raise UnprocessableImage(
            "too_large_for_format",
            f"{format.upper()} images can be at most {MAX_EDGE[format]} pixels wide and high; "
            f"this one is {image.width}x{image.height}",
        )


def set_avif_speed(speed: int) -> None:
    """The AVIF encoder's speed from now on (the AVIF_SPEED setting, applied when Django starts)."""
    AVIF_OPTIONS["speed"] = speed


def avif_quality(quality: int) -> int:
    """AVIF's encoder quality for a quality on JPEG's scale (see AVIF_QUALITY_SCALE)."""
    knee = AVIF_SCALED_UP_TO * AVIF_QUALITY_SCALE
    if quality <= AVIF_SCALED_UP_TO:
        return max(1, round(quality * AVIF_QUALITY_SCALE))
    return round(knee + (quality - AVIF_SCALED_UP_TO) * (100 - knee) / (100 - AVIF_SCALED_UP_TO))


def pixels_for(image: Image.Image, format: str) -> Image.Image:
    """A new image in a mode the format can store; JPEG has no alpha, so it is flattened onto white."""
    alpha = has_alpha(image)
    if format == "jpeg":
        base = "L" if image.mode in ("L", "LA") else "RGB"
        if not alpha:
            return image.convert(base)
        flat = Image.new(base, image.size, "white")
        flat.paste(image.convert(base), mask=image.convert("RGBA").getchannel("A"))
        return flat
    if format in ("png", "jxl") and image.mode in ("L", "LA", "RGB", "RGBA"):
        return image.copy()
    if format == "gif":
        return gif_pixels(image)
    return image.convert("RGBA" if alpha else "RGB")


def gif_pixels(image: Image.Image) -> Image.Image:
    """A new image GIF's encoder takes as it should: gray stays L (its palette is the grays); alpha becomes
    one bit, as GIF has (at least half opaque is opaque), with every transparent pixel the same colour,
    so that they take one palette entry and the other 255 go to the picture."""
    if not has_alpha(image):
        return image.copy() if image.mode == "L" else image.convert("RGB")
    rgba = image.convert("RGBA")
    opaque = rgba.getchannel("A").point(lambda alpha: 255 if alpha >= 128 else 0)
    clear = Image.new("RGBA", rgba.size, (0, 0, 0, 0))
    return Image.composite(rgba, clear, opaque)
