"""Overlay text, or an image its owner uploaded once (an asset), at an edge, a corner or the middle,
or tiled across the whole image.

Text is drawn in DejaVu Sans, bundled in processing/imaging/fonts/ with its licence. An image
overlay is an asset (POST /api/v1/assets) named by `asset_id` and scaled to a fraction of the
image's width, so that one logo suits every size; its transparency is kept. This module stays
Django-free and `apply` keeps every operation's signature: the pixels, size and owner of an asset
come from the AssetSource the processing app installs when it starts (processing.assets).

Nothing is drawn before its cost is known to be bounded (`check_fits`, at submit and again in the
worker): the text's length and size, the overlay's pixels, and the number of tiles.
"""

import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from PIL import Image, ImageColor, ImageDraw, ImageFont
from pydantic import Field, field_validator, model_validator

from processing.errors import InvalidParameters
from processing.imaging.operations import gravity as gravities
from processing.imaging.operations.base import Operation, OperationResult, OutputOptions, ProgressCallback
from processing.imaging.operations.rotate import RotateParams

if TYPE_CHECKING:
    from processing.owners import Owner

FONT_PATH = Path(__file__).resolve().parent.parent / "fonts" / "DejaVuSans.ttf"
MAX_TEXT_LENGTH = 200
MIN_FONT_SIZE, MAX_FONT_SIZE = 4, 1000
# An overlay (turned) may have this many times the image's pixels, and OVERLAY_MIN_PIXELS whatever
# the image: text a little wider than a small image is fine (it is cut at the edge), a huge one on a
# thumbnail is not. Text may have twice as many, as a line across a square photo's diagonal needs;
# it is held as one byte a pixel, an image as four (memory_per_pixel counts both at their bound).
TEXT_PIXELS_PER_PIXEL = 2
IMAGE_PIXELS_PER_PIXEL = 1
OVERLAY_MIN_PIXELS = 1_000_000
# Each tile is a paste; their pixels are the image's at most (they never overlap), their count is not.
MAX_TILES = 10_000
MAX_OFFSET = 65_536  # the widest image any encoder writes (codecs.MAX_EDGE)
COLOUR_PATTERN = r"^#[0-9a-fA-F]{6}$"


class AssetSource(Protocol):
    """Where the assets are: the processing app installs one (processing.assets.StoredAssets)."""

    def check_owned(self, asset_id: uuid.UUID, owner: "Owner") -> None:
        """AssetNotFound unless `owner` has an asset of this id."""

    def size(self, asset_id: uuid.UUID) -> tuple[int, int]:
        """The asset's width and height, without its pixels; AssetNotFound if it is gone."""

    def image(self, asset_id: uuid.UUID) -> Image.Image:
        """The asset's pixels in RGBA, shared: never changed in place. AssetNotFound if it is gone."""


_asset_source: AssetSource | None = None


def install_asset_source(source: AssetSource | None) -> None:
    """Where this process reads assets from from now on (processing.apps installs it when Django starts)."""
    global _asset_source
    _asset_source = source


def asset_source() -> AssetSource:
    if _asset_source is None:
        raise RuntimeError("no asset source is installed: the processing app installs one when Django starts")
    return _asset_source


class WatermarkParams(OutputOptions):
    text: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_TEXT_LENGTH,
        description="Text to draw, one line, in DejaVu Sans. Give text or asset_id.",
    )
    asset_id: uuid.UUID | None = Field(
        None,
        description="An image of yours to overlay (POST /api/v1/assets gives its id). Give text or asset_id.",
    )
    font_size: int = Field(32, ge=MIN_FONT_SIZE, le=MAX_FONT_SIZE, description="Text size in pixels.")
    color: str = Field("#ffffff", pattern=COLOUR_PATTERN, description="Text colour, as #rrggbb.")
    scale: float = Field(
        0.25,
        ge=0.01,
        le=1,
        description="The overlaid image's width as a fraction of the image's width; its height follows "
        "its own ratio. One logo suits every size.",
    )
    opacity: float = Field(
        0.5, ge=0, le=1, description="0: invisible; 1: as opaque as the text or the image's own alpha."
    )
    gravity: gravities.Compass = Field(
        "south-east", description="Where the overlay goes: an edge or corner by compass point, or center."
    )
    offset_x: int = Field(
        0,
        ge=-MAX_OFFSET,
        le=MAX_OFFSET,
        description="Pixels in from the side edge gravity names (right, from center); with tile, shifts "
        "the grid.",
    )
    offset_y: int = Field(
        0,
        ge=-MAX_OFFSET,
        le=MAX_OFFSET,
        description="Pixels in from the top or bottom edge gravity names (down, from center); with tile, "
        "shifts the grid.",
    )
    tile: bool = Field(
        False, description="Repeat the overlay across the whole image instead; gravity is ignored."
    )
    spacing: int = Field(
        48, ge=0, le=MAX_OFFSET, description="With tile: pixels between neighbouring overlays."
    )
    angle: float = Field(
        0, ge=-360, le=360, description="Turn the overlay counter-clockwise by this many degrees."
    )

    @field_validator("text")
    @classmethod
    def text_is_one_visible_line(cls, text: str | None) -> str | None:
        if text is None:
            return None
        if any(unicodedata.category(char) == "Cc" for char in text):
            raise ValueError("text is one line: no line breaks, tabs or other control characters")
        if not text.strip():
            raise ValueError("text has nothing to draw")
        return text

    @model_validator(mode="after")
    def one_overlay(self) -> "WatermarkParams":
        if self.text is not None and self.asset_id is not None:
            raise ValueError("give text or asset_id, not both")
        if self.text is None and self.asset_id is None:
            raise ValueError("give text to draw, or asset_id to overlay an image of yours")
        return self

    def check_references(self, owner: "Owner") -> None:
        if self.asset_id is not None:
            asset_source().check_owned(self.asset_id, owner)

    @property
    def size_field(self) -> str:
        """The parameter that makes the overlay larger or smaller."""
        return "font_size" if self.text is not None else "scale"

    def overlay_size(self, width: int) -> tuple[int, int]:
        """The overlay's width and height, turned, on an image `width` pixels wide: without a pixel drawn."""
        if self.text is not None:
            size = text_box(font(self.font_size), self.text)[2:]
        else:
            assert self.asset_id is not None  # one_overlay
            size = scaled_asset_size(asset_source().size(self.asset_id), self.scale, width)
        if not self.angle % 360:
            return size
        return RotateParams.model_validate({"angle": self.angle}).output_size(*size)

    def check_fits(self, width: int, height: int) -> None:
        overlay = self.overlay_size(width)
        pixels, bound = overlay[0] * overlay[1], self.most_overlay_pixels(width, height)
        if pixels > bound:
            raise InvalidParameters(
                self.size_field,
                f"the overlay would be {overlay[0]} × {overlay[1]} = {pixels} pixels; on a {width}x{height} "
                f"image it may have {bound} at most",
            )
        if self.tile:
            tiles = len(self.tile_columns(width, overlay[0])) * len(self.tile_rows(height, overlay[1]))
            if tiles > MAX_TILES:
                raise InvalidParameters(
                    "spacing",
                    f"tiling a {width}x{height} image would draw {tiles} overlays; at most {MAX_TILES}: a "
                    f"larger {self.size_field} or spacing draws fewer",
                )

    def most_overlay_pixels(self, width: int, height: int) -> int:
        per_pixel = TEXT_PIXELS_PER_PIXEL if self.text is not None else IMAGE_PIXELS_PER_PIXEL
        return max(per_pixel * width * height, OVERLAY_MIN_PIXELS)

    def tile_columns(self, width: int, overlay_width: int) -> range:
        return tile_starts(width, overlay_width + self.spacing, self.offset_x, overlay_width)

    def tile_rows(self, height: int, overlay_height: int) -> range:
        return tile_starts(height, overlay_height + self.spacing, self.offset_y, overlay_height)


def font(size: int) -> ImageFont.FreeTypeFont:
    # Opened for each job (a few hundredths of a millisecond): a FreeType face is not shared
    # between the worker's threads.
    return ImageFont.truetype(FONT_PATH, size)


def text_box(face: ImageFont.FreeTypeFont, text: str) -> tuple[int, int, int, int]:
    """Where the text's pixels are from the point it is drawn at, and their width and height (at least 1)."""
    left, top, right, bottom = (int(edge) for edge in face.getbbox(text))
    return left, top, max(1, right - left), max(1, bottom - top)


def scaled_asset_size(size: tuple[int, int], scale: float, width: int) -> tuple[int, int]:
    """An asset of `size` made `scale` of an image `width` pixels wide, its ratio kept."""
    new_width = max(1, round(width * scale))
    return new_width, max(1, round(size[1] * new_width / size[0]))


def tile_starts(extent: int, step: int, offset: int, box: int) -> range:
    """Where tiles of `box` pixels, `step` apart, start along one axis: every one that shows, the grid
    through `offset` (so that offset 0 puts a tile at the very edge)."""
    first = offset % step
    if first > 0:
        first -= step  # the tile before it shows too, cut at the edge
    while first + box <= 0:
        first += step  # one that ends before the edge does not
    return range(first, extent, step)


@dataclass(frozen=True)
class Overlay:
    """What is drawn: text as its coverage (L, one byte a pixel) and its colour, or an image (RGBA)."""

    pixels: Image.Image
    color: tuple[int, int, int] | None = None  # the text's; None for an image

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.size


def watermark(image: Image.Image, params: WatermarkParams, progress: ProgressCallback) -> OperationResult:
    # The bounds (check_fits) were checked for this size before a pixel was decoded (Operation.check_job,
    # at submit and in the worker): not again here, which would read the asset's row once more.
    overlay = text_overlay(params) if params.text is not None else image_overlay(params, image.width)
    # A copy, in a mode that takes colour (grey text on a grey photo is the rare case): the actor
    # still stores the input's thumbnail from `image`.
    base = image.convert("RGBA" if image.mode in ("LA", "RGBA") else "RGB")
    width, height = overlay.size
    if params.tile:
        rows = params.tile_rows(base.height, height)
        for done, top in enumerate(rows):
            for left in params.tile_columns(base.width, width):
                draw(base, overlay, left, top)
            progress((done + 1) / len(rows))
    else:
        offset = (params.offset_x, params.offset_y)
        draw(base, overlay, *gravities.anchored(base.size, overlay.size, params.gravity, offset))
    progress(1.0)
    return OperationResult(image=base)


def text_overlay(params: WatermarkParams) -> Overlay:
    """The text's coverage, its opacity in it, turned."""
    assert params.text is not None  # one_overlay
    face = font(params.font_size)
    left, top, text_width, text_height = text_box(face, params.text)
    coverage = Image.new("L", (text_width, text_height), 0)
    # Drawn at the opacity's grey: the glyphs' edges are that much of it, as they are of white.
    ImageDraw.Draw(coverage).text((-left, -top), params.text, font=face, fill=round(255 * params.opacity))
    if params.angle % 360:
        # One colour throughout: the coverage turns alone, with nothing to darken at its edges.
        coverage = coverage.rotate(params.angle, resample=Image.Resampling.BICUBIC, expand=True)
    return Overlay(coverage, ImageColor.getrgb(params.color)[:3])


def image_overlay(params: WatermarkParams, width: int) -> Overlay:
    """The asset, at its share of the image's width, its alpha times the opacity, turned."""
    assert params.asset_id is not None  # one_overlay
    asset = asset_source().image(params.asset_id)
    size = scaled_asset_size(asset.size, params.scale, width)
    # resize premultiplies the alpha itself; the shared asset is never changed in place.
    pixels = asset.resize(size, Image.Resampling.LANCZOS) if size != asset.size else asset.copy()
    if params.opacity < 1:
        pixels.putalpha(pixels.getchannel("A").point(lambda value: round(value * params.opacity)))
    if params.angle % 360:
        # Premultiplied, so that the transparent corners' black does not darken the edges it blends
        # into. Each step replaces the last: two copies at most are held at once.
        pixels = pixels.convert("RGBa")
        pixels = pixels.rotate(params.angle, resample=Image.Resampling.BICUBIC, expand=True)
        pixels = pixels.convert("RGBA")
    return Overlay(pixels)


def draw(base: Image.Image, overlay: Overlay, left: int, top: int) -> None:
    """Composite the overlay onto `base` (RGB or RGBA) with its top-left at (left, top); what falls
    outside the image is cut off."""
    box = visible_part(base.size, overlay.size, left, top)
    if box is None:
        return
    part = overlay.pixels.crop(box)
    at = (max(left, 0), max(top, 0))
    if overlay.color is not None:  # text: its colour, through its coverage
        if base.mode == "RGB":
            base.paste(overlay.color, (*at, at[0] + part.width, at[1] + part.height), part)
            return
        coloured = Image.new("RGBA", part.size, overlay.color)
        coloured.putalpha(part)
        part = coloured
    if base.mode == "RGBA":
        base.alpha_composite(part, at)  # paste would make an opaque image partly transparent
    else:
        base.paste(part, at, part)


def visible_part(
    image_size: tuple[int, int], overlay_size: tuple[int, int], left: int, top: int
) -> tuple[int, int, int, int] | None:
    """The box of the overlay that falls inside the image, in the overlay's coordinates; None if none does."""
    right = min(left + overlay_size[0], image_size[0])
    bottom = min(top + overlay_size[1], image_size[1])
    box = (max(-left, 0), max(-top, 0), right - left, bottom - top)
    return box if box[2] > box[0] and box[3] > box[1] else None


OPERATION = Operation(
    name="watermark",
    description="Overlay text or an image of yours (an asset) at an edge, a corner or the middle, or tiled.",
    params=WatermarkParams,
    apply=watermark,
    # Measured on a 12-megapixel JPEG: 8.7 bytes a pixel for tiled text, 11 for turned text at its
    # bound, 16 for an image overlay as large as IMAGE_PIXELS_PER_PIXEL lets it be (four bytes a pixel,
    # and its visible part copied once to be composited). Admission counts the largest.
    memory_per_pixel=16.0,
)
