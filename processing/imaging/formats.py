"""Which format a result gets and which stored file a client downloads: every format decision.

As thumbor's `auto_image_format` owns "which format does this client get", this module owns
the formats the encoder writes, what format=auto may choose and in what order, the format a
job's result gets, whether a JPEG or PNG fallback is stored beside it, the file a download
sends, and each format's MIME type and extension. It is fed plain facts (the client's accepted
image subtypes, the format parameter, the input's format, the result's pixels) and decides.
"""

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from PIL import Image

EncodedFormat = Literal["jpeg", "png", "webp", "avif", "jxl", "gif"]
# What the encoder writes (codecs.encode_image).
OUTPUT_FORMATS: tuple[str, ...] = get_args(EncodedFormat)
AUTO = "auto"
# What an image operation's `format` parameter may ask for.
OutputFormat = Literal[EncodedFormat, "auto"]
# What format=auto may choose beyond JPEG and PNG, best first. JPEG XL before AVIF, for the clients that
# name both (Safari 17 and later; a client names image/jxl only if it shows it): it encodes in a fifth
# of AVIF's time or less, has no pixel ceiling of its own (format=auto with AVIF refuses a result over
# MAX_AVIF_OUTPUT_PIXELS), and on a detailed photo keeps JPEG's likeness at JPEG's quality, where
# AVIF's smaller file is less alike (SSIM 0.92 against 0.96). The price: on smooth photos AVIF is as
# alike in a third of the bytes (`python -m bench.formats`; docs/formats.md has the figures).
MODERN_FORMATS = ("jxl", "avif", "webp")
# The formats a result keeps an animation's frames in (processing.imaging.animation). Not PNG: an
# animated PNG is lossless, so many times a WebP's size, and a client asking for PNG wants a still;
# not AVIF: its encoder, the slowest by far on one picture, would take minutes on a hundred.
ANIMATED_FORMATS = ("gif", "webp")
# What format=auto may choose for an animation that keeps its frames: WebP when the client names it,
# else GIF, which every client shows.
MODERN_ANIMATED_FORMATS = ("webp",)
UNIVERSAL_ANIMATED_FORMAT = "gif"

# By Pillow's format names: the input formats codecs allows, and the output formats.
MIME_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "HEIF": "image/heic",
    "AVIF": "image/avif",
    "JXL": "image/jxl",
}
# How people write each format's name (Pillow calls an iPhone's HEIC photos HEIF).
DISPLAY_NAMES = {
    "JPEG": "JPEG",
    "PNG": "PNG",
    "WEBP": "WebP",
    "GIF": "GIF",
    "BMP": "BMP",
    "TIFF": "TIFF",
    "HEIF": "HEIC",
    "AVIF": "AVIF",
    "JXL": "JPEG XL",
}
EXTENSIONS = {
    "JPEG": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tiff",
    "HEIF": "heic",
    "AVIF": "avif",
    "JXL": "jxl",
}


@dataclass(frozen=True)
class ResultFormats:
    """The format a result is encoded in, and its fallback's ("" when none is stored)."""

    output: str
    fallback: str = ""


class StoredResult(Protocol):
    """A finished job's files as a download sees them (processing.models.Job is one)."""

    output_key: str
    output_format: str
    fallback_key: str
    fallback_format: str


def negotiated_format(requested: str | None, accepted: Collection[str], animated: bool = False) -> str:
    """For format=auto, the best modern format among the client's accepted image subtypes; "" otherwise.

    Only a format named outright counts: `*/*` or `image/*` is what a client sends when it has no
    idea, not a promise that it can show AVIF. "" with format=auto means JPEG or PNG by content, or
    GIF for an animation that keeps its frames (`animated`), which chooses among those that animate.
    """
    if requested != AUTO:
        return ""
    modern = MODERN_ANIMATED_FORMATS if animated else MODERN_FORMATS
    return next((name for name in modern if name in accepted), "")


def result_formats(
    requested: str | None, negotiated: str, input_format: str, image: Image.Image, animated: bool = False
) -> ResultFormats:
    """The format asked for, else the input's default; for auto, the negotiated one with a JPEG or PNG
    fallback for downloads that do not name it, or JPEG or PNG by content when nothing was negotiated.
    An animation that keeps its frames (`animated`) has GIF where a still has JPEG or PNG."""
    universal = UNIVERSAL_ANIMATED_FORMAT if animated else universal_format(image)
    output = chosen_before_pixels(requested, negotiated, input_format, animated) or universal
    fallback = universal if requested == AUTO and negotiated else ""
    return ResultFormats(output, fallback)


def chosen_before_pixels(
    requested: str | None, negotiated: str, input_format: str, animated: bool = False
) -> str:
    """The result's format as far as it is known before its pixels: what result_formats gives, or ""
    when format=auto leaves it to the content (JPEG or PNG)."""
    if requested != AUTO:
        return requested or default_output_format(input_format, animated)
    return negotiated or (UNIVERSAL_ANIMATED_FORMAT if animated else "")


def keeps_the_jpeg(lossless: bool, input_format: str, output_format: str) -> bool:
    """Whether the result is the upload's own JPEG file recompressed, not its pixels encoded: a JPEG
    made a lossless JPEG XL, which decodes back to the very same JPEG."""
    return lossless and input_format.upper() == "JPEG" and output_format == "jxl"


def default_output_format(input_format: str, animated: bool = False) -> str:
    """Keep the input's format when it is an output format; a HEIC photo becomes JPEG, which every
    browser shows; anything else (BMP, TIFF, a still GIF) becomes lossless PNG. An animated GIF that
    keeps its frames (`animated`) stays a GIF, as an animated WebP stays a WebP."""
    name = input_format.lower()
    if name == "heif":
        return "jpeg"
    if name == "gif":
        return "gif" if animated else "png"
    return name if name in OUTPUT_FORMATS else "png"


def universal_format(image: Image.Image) -> str:
    """The format every client shows, by content: PNG keeps transparency, JPEG the rest."""
    return "png" if has_alpha(image) else "jpeg"


def has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or image.has_transparency_data


def download_for(result: StoredResult, accepted: Collection[str]) -> tuple[str, str]:
    """(key, format) of the file a client with these accepted image subtypes gets: a format=auto result
    in a modern format only when it names that format, its JPEG or PNG fallback otherwise."""
    if result.fallback_key and result.output_format not in accepted:
        return result.fallback_key, result.fallback_format
    return result.output_key, result.output_format


def varies_with_accept(requested: str | None) -> bool:
    """Whether a download's file depends on the client's Accept header (caches must key on it)."""
    return requested == AUTO


def display_name(format_name: str) -> str:
    """The format's name as people write it: WebP, HEIC."""
    upper = format_name.upper()
    return DISPLAY_NAMES.get(upper, upper)


def choice_labels() -> dict[str, str]:
    """What a form shows for each value of the `format` parameter."""
    return {
        **{name: display_name(name) for name in OUTPUT_FORMATS},
        AUTO: "Auto (the best the browser shows)",
    }


def mime_type_for(format_name: str) -> str:
    return MIME_TYPES[format_name.upper()]


def extension_for(format_name: str) -> str:
    return EXTENSIONS[format_name.upper()]
