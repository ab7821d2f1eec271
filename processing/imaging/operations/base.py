"""What an operation is: a pure function on a PIL image, the pydantic model of its parameters, and a name."""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar, cast

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict

from processing.errors import OutputTooLarge
from processing.imaging.codecs import DecodeHint
from processing.imaging.codecs import ProgressCallback as ProgressCallback  # the operations name it from here
from processing.imaging.formats import OutputFormat, choice_labels

if TYPE_CHECKING:  # the operations stay Django-free: an owner is only passed through them
    from processing.owners import Owner

# A kilobyte holds a recognisable thumbnail in any format; a budget above 50 MB budgets nothing.
MIN_BUDGET_BYTES = 1024
MAX_BUDGET_BYTES = 50_000_000

# A parameter's schema with this shows it in a form's "Advanced" group: a knob most people leave alone.
ADVANCED: JsonDict = {"x-advanced": True}
# How a form shows each choice of the `format` parameter.
FORMAT_CHOICES: JsonDict = {"x-enum-labels": {value: label for value, label in choice_labels().items()}}

# A reduced decode keeps at least twice the result's pixels on each side, as Image.thumbnail's own
# draft does: the DCT scaling does the coarse work, the Lanczos filter the accurate last step.
DECODE_GAP = 2.0


class Params(BaseModel):
    """Parameters arrive as form strings ("4", "true") or as JSON; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def blank_fields_are_not_given(cls, data: Any) -> Any:
        # An HTML form sends an untouched field as "": that means "use the default".
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if value != ""}
        return data


class OutputOptions(Params):
    """How an image result is encoded; the base of every image operation's parameters."""

    format: OutputFormat | None = Field(
        None,
        description=(
            "The result's file type. Default: the input's (JPEG for HEIC; PNG for BMP, TIFF and a still "
            "GIF; an animated GIF or WebP stays animated). Auto: JPEG XL, AVIF or WebP if the uploader's "
            "Accept header names it, else JPEG (PNG if transparent). Only GIF and WebP keep an "
            "animation's frames; in any other type the first frame is kept, and the result says so."
        ),
        json_schema_extra=FORMAT_CHOICES,
    )
    quality: int = Field(
        85, ge=1, le=100, description="JPEG, WebP, AVIF and JPEG XL quality; PNG and GIF ignore it."
    )
    max_bytes: int | None = Field(
        None,
        ge=MIN_BUDGET_BYTES,
        le=MAX_BUDGET_BYTES,
        title="Largest file size (bytes)",
        description=(
            "A larger result is saved at a lower quality (down to 30), then with fewer pixels, until it "
            "fits. Its width and height say what was made."
        ),
    )

    # The parameters that decide the result's size, named when it would be too large.
    size_fields: ClassVar[tuple[str, ...]] = ()

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The result's size for an input of width x height, before any pixel is made: by default the same."""
        return width, height

    @field_validator("format", mode="before")
    @classmethod
    def format_names_are_forgiving(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            return "jpeg" if value == "jpg" else value
        return value


class ReportParams(Params):
    """The base for operations that produce a report rather than an image."""

    size_fields: ClassVar[tuple[str, ...]] = ()

    def output_size(self, width: int, height: int) -> None:
        return None  # no image is made


@dataclass(frozen=True)
class OutputLimits:
    """What one job's result may be, from the settings of the same names (docs/settings.md)."""

    max_pixels: int  # MAX_OUTPUT_PIXELS
    max_enlargement: int  # MAX_ENLARGEMENT: the result's pixels per pixel of the input
    max_avif_pixels: int  # MAX_AVIF_OUTPUT_PIXELS

    @classmethod
    def of(cls, settings: Any) -> "OutputLimits":
        """From Django's settings (or anything with these attributes): operations stay Django-free."""
        return cls(settings.MAX_OUTPUT_PIXELS, settings.MAX_ENLARGEMENT, settings.MAX_AVIF_OUTPUT_PIXELS)


# The parameters of one operation: an image's (OutputOptions) or a report's (ReportParams).
P = TypeVar("P", bound=OutputOptions | ReportParams)


@dataclass
class OperationResult:
    image: Image.Image | None = None
    report: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation(Generic[P]):
    name: str
    description: str
    params: type[P]
    apply: Callable[[Image.Image, P, ProgressCallback], OperationResult]
    produces: Literal["image", "report"] = "image"
    # Bytes the whole job (decode, operation, encode) holds at its peak per pixel decoded, measured on
    # a 49-megapixel JPEG (`python -m bench.memory --per-operation`); memory admission counts by it.
    memory_per_pixel: float = 12.0
    # Whether `apply` may run on each frame of an animation in turn, the frames then kept
    # (processing.imaging.animation): it makes no choice from the picture's content that would differ
    # between frames, and gives every frame of one size a result of one size.
    animates: bool = False
    # Nanoseconds the operation takes per pixel it works on, measured on a 2 MP photo: its share of
    # a job's progress bar beside decoding and encoding (processing.worker.progress).
    ns_per_pixel: float = 20.0

    def parse(self, raw: Mapping[str, Any]) -> P:
        """Validate raw parameters; raises pydantic.ValidationError."""
        # mypy takes model_validate's Self on a type[P] for P's bound, not for P itself.
        return cast(P, self.params.model_validate(dict(raw)))

    def check_references(self, params: P, owner: "Owner") -> None:
        """Raise a DomainError when the parameters name something `owner` may not use (another owner's
        asset, or none): checked when a job is created, before anything is stored. By default the
        parameters name nothing; a parameters model with a `check_references(owner)` says otherwise."""
        check = getattr(params, "check_references", None)
        if check is not None:
            check(owner)

    def memory_per_pixel_for(self, params: P) -> float:
        """What a job of these parameters holds per pixel: the operation's own figure, unless the
        parameters say they need more (convert's lossless JPEG XL)."""
        needs: float | None = getattr(params, "memory_per_pixel", None)
        return needs if needs is not None else self.memory_per_pixel

    def check_fits(self, params: P, width: int, height: int) -> None:
        """Raise InvalidParameters when valid parameters can't apply to an image of this size."""
        check = getattr(params, "check_fits", None)
        if check is not None:
            check(width, height)

    def output_size(self, params: P, width: int, height: int) -> tuple[int, int] | None:
        """The size of the image these parameters make from a width x height input; None for a report."""
        return params.output_size(width, height)

    def check_job(
        self,
        params: P,
        width: int,
        height: int,
        output_format: str,
        limits: OutputLimits,
        input_pixels: int | None = None,
    ) -> None:
        """Every check of a job against its input's size, at submit and again in the worker, before a
        pixel is made: the parameters fit the image (InvalidParameters) and the result is within the
        output limits (OutputTooLarge). `output_format` is the result's format as far as it is known
        before the pixels (formats.chosen_before_pixels); "" for a step whose result is not encoded.
        `input_pixels` is the job's upload, which MAX_ENLARGEMENT counts from: by default width x height
        (a step of a recipe is given the upload's, so that steps cannot enlarge one after another)."""
        self.check_fits(params, width, height)
        self.check_output(params, width, height, limits.max_pixels)
        size = self.output_size(params, width, height)
        if size is None:
            return
        made = size[0] * size[1]
        input_pixels = width * height if input_pixels is None else input_pixels
        if made > input_pixels * limits.max_enlargement:
            bound = f"MAX_ENLARGEMENT ({limits.max_enlargement}) times the input's {input_pixels} pixels"
            raise output_too_large(params, width, height, size, bound, "MAX_ENLARGEMENT")
        if output_format == "avif" and made > limits.max_avif_pixels:
            bound = f"MAX_AVIF_OUTPUT_PIXELS ({limits.max_avif_pixels}); another format may have more"
            raise output_too_large(params, width, height, size, bound, "MAX_AVIF_OUTPUT_PIXELS", ("format",))

    def check_output(self, params: P, width: int, height: int, max_pixels: int) -> None:
        """Raise OutputTooLarge, naming the parameters, when the result would have over max_pixels pixels.

        Called with the input's size from its header, so nothing is decoded or made for a refused job.
        """
        size = self.output_size(params, width, height)
        if size is None or size[0] * size[1] <= max_pixels:
            return
        raise output_too_large(params, width, height, size, f"MAX_OUTPUT_PIXELS ({max_pixels})")

    def one_frame_reason(self, params: P) -> str | None:
        """Why these parameters keep only an animation's first frame; None when every frame is kept
        (the output format may still hold one frame: processing.imaging.animation decides)."""
        if not self.animates:
            verb = "works on" if self.produces == "image" else "reports on"
            return f"{self.name} {verb} one frame"
        reason = getattr(params, "one_frame_reason", None)
        return reason() if reason is not None else None

    def decode_hint(self, params: P, width: int, height: int) -> DecodeHint | None:
        """What the decoder may leave out for these parameters on an image of this (displayed) size.

        None, unless the parameters model says otherwise: the operation needs every pixel in colour.
        """
        hint = getattr(params, "decode_hint", None)
        return hint(width, height) if hint is not None else None

    def json_schema(self) -> dict[str, Any]:
        return self.params.model_json_schema()


def shrink_hint(width: int, height: int, x_scale: float, y_scale: float) -> DecodeHint | None:
    """The hint for a result that shrinks a width x height image by these factors; None if nothing shrinks."""
    size = (math.ceil(width * x_scale * DECODE_GAP), math.ceil(height * y_scale * DECODE_GAP))
    return DecodeHint(size=size) if size[0] < width and size[1] < height else None


def output_too_large(
    params: OutputOptions | ReportParams,
    width: int,
    height: int,
    size: tuple[int, int],
    bound: str,
    limit: str = "MAX_OUTPUT_PIXELS",
    also: tuple[str, ...] = (),
) -> OutputTooLarge:
    """The refusal of a result of `size` over `bound`, naming the size parameters given (and `also`)."""
    fields = tuple(name for name in params.size_fields if getattr(params, name) is not None)
    given = [f"{name}={json_value(getattr(params, name))}" for name in fields]
    asked = ", ".join(given) if given else f"the input's own size ({width} × {height})"
    return OutputTooLarge(
        fields + also,
        f"{asked}: the result would be {size[0]} × {size[1]} = {size[0] * size[1]} pixels, "
        f"which exceeds {bound}",
        limit,
    )


def json_value(value: Any) -> str:
    """A parameter as a client would write it: true, not True; 45, not 45.0."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
