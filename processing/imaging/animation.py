"""Animations: an animated GIF's or WebP's frames through an operation, one at a time, and out as an
animated GIF or WebP (docs/animations.md).

- What is kept (`plan_frames`): every frame, when the operation works frame by frame
  (Operation.animates, and no parameter that chooses from one picture) and the result's format
  holds frames (formats.ANIMATED_FORMATS); otherwise the first frame alone, and a note that says why.
- How much (`check_budget`): frames × the larger of the input's and the result's size at most
  MAX_ANIMATION_PIXELS, and at most MAX_ANIMATION_FRAMES frames; at submit from the header, in the
  worker again, and while the frames are decoded.
- Decoding (`AnimationSource`): one frame at a time, each as it is shown (Pillow composites a
  GIF frame onto what the frames before it left, by their disposal; libwebp does the same), upright,
  in sRGB and a working mode, as codecs.load_image gives a still.
- Operating (`apply_to_frames`): the operation's own `apply` on each frame in turn, its progress
  that frame's share of the whole; the input frame is dropped once its result is made.
- Encoding (`encode_animation`): each frame's duration and the loop count kept; a GIF gets a palette
  per frame and one-bit transparency. The frames are whole pictures, so their disposal is chosen
  for them: "restore to background" when they have transparency (else what a transparent pixel
  covered would show through it), "leave in place" otherwise (so the encoder stores only what changed).
"""

import io
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from PIL import Image, ImageOps

from processing.errors import AnimationTooLarge, ImageTooLarge, UnprocessableImage
from processing.imaging import formats
from processing.imaging.codecs import (
    DECODING_ERRORS,
    check_encodable,
    encode_image,
    gif_pixels,
    open_allowed,
    to_working_mode,
)
from processing.imaging.formats import ANIMATED_FORMATS, has_alpha
from processing.imaging.frame_count import MAX_COUNTED_FRAMES, gif_frames
from processing.imaging.operations.base import Operation, OperationResult, ProgressCallback
from processing.imaging.recipes import Recipe

# Bytes a job that keeps an animation's frames holds at its peak per pixel of the frames it keeps,
# beyond what its operation holds for one frame: each result frame (4 bytes a pixel, as Pillow keeps
# RGB), and what the encoder keeps (a palette image per frame for GIF). Measured as peak RSS over 100
# frames of 480 x 270 decoded, resized or edge-detected and encoded: 4.6 into WebP, 5.8 into GIF.
# Memory admission counts by it.
BYTES_PER_KEPT_PIXEL = 6.0
# What a frame's operation is handed instead of the job's progress: its share of the whole.
FrameOperation = Callable[[Image.Image, ProgressCallback], OperationResult]


@dataclass(frozen=True)
class AnimationLimits:
    """How large an animation a job may keep, from the settings of the same names (docs/settings.md)."""

    max_pixels: int  # MAX_ANIMATION_PIXELS: frames × width × height
    max_frames: int  # MAX_ANIMATION_FRAMES

    @classmethod
    def of(cls, settings: Any) -> "AnimationLimits":
        return cls(settings.MAX_ANIMATION_PIXELS, settings.MAX_ANIMATION_FRAMES)


@dataclass(frozen=True)
class FramePlan:
    """What becomes of an upload's frames: how many it has, how many the result keeps (all or one),
    and, when only the first is kept of several, why."""

    input: int
    output: int
    note: str = ""

    @property
    def animated(self) -> bool:
        """Whether the result keeps the frames: an animation in, an animation out."""
        return self.output > 1


STILL = FramePlan(1, 1)


@dataclass(frozen=True)
class Frame:
    image: Image.Image
    duration: int  # milliseconds it is shown


@dataclass(frozen=True)
class Animation:
    """Frames of one size, each with its duration, and how many times they play (0: for ever).

    Has the width, height and resize of an image, so that a byte budget can shrink it
    (processing.imaging.byte_budget)."""

    frames: list[Image.Image]
    durations: list[int]
    plays: int

    @property
    def size(self) -> tuple[int, int]:
        return self.frames[0].size

    @property
    def width(self) -> int:
        return self.frames[0].width

    @property
    def height(self) -> int:
        return self.frames[0].height

    def resize(self, size: tuple[int, int], resample: Image.Resampling, reducing_gap: float) -> "Animation":
        frames = [frame.resize(size, resample, reducing_gap=reducing_gap) for frame in self.frames]
        return Animation(frames, self.durations, self.plays)


# A result's pixels: one picture, or an animation's frames.
Picture = Image.Image | Animation


def first_frame(picture: Picture) -> Image.Image:
    """What a placeholder, a thumbnail or a choice of format by content looks at: the first frame."""
    return picture.frames[0] if isinstance(picture, Animation) else picture


# --- What is kept, and how much may be -----------------------------------------------------------


def keeps_frames(operation: Operation[Any], params: Any, frames: int) -> bool:
    """Whether a job would keep an upload's `frames` (more than one), in a format that holds them."""
    return frames > 1 and operation.one_frame_reason(params) is None


def expected_result(
    operation: Operation[Any],
    params: Any,
    frames: int,
    requested: str | None,
    negotiated: str,
    input_format: str,
) -> tuple[str, FramePlan]:
    """The result's format as far as it is known before its pixels (formats.chosen_before_pixels) and
    what becomes of the upload's frames: the same at submit and in the worker."""
    animated = keeps_frames(operation, params, frames)
    output_format = formats.chosen_before_pixels(requested, negotiated, input_format, animated)
    return output_format, plan_frames(operation, params, frames, output_format)


# Why a recipe of several steps keeps one frame: its steps run one after the other on one picture.
SEVERAL_STEPS = "a recipe of several steps works on one frame"


def recipe_keeps_frames(recipe: Recipe, frames: int) -> bool:
    """keeps_frames for a recipe: only one of one step animates, as its operation does."""
    return len(recipe.steps) == 1 and keeps_frames(recipe.steps[0].operation, recipe.steps[0].params, frames)


def recipe_result(
    recipe: Recipe, frames: int, requested: str | None, negotiated: str, input_format: str
) -> tuple[str, FramePlan]:
    """expected_result for a recipe: a recipe of one step is its operation's job; one of several keeps
    the first frame of an animation, and says so."""
    if len(recipe.steps) == 1:
        step = recipe.steps[0]
        return expected_result(step.operation, step.params, frames, requested, negotiated, input_format)
    output_format = formats.chosen_before_pixels(requested, negotiated, input_format)
    plan = FramePlan(frames, 1, f"only the first frame was kept: {SEVERAL_STEPS}") if frames > 1 else STILL
    return output_format, plan


def check_recipe_budget(
    plan: FramePlan, recipe: Recipe, width: int, height: int, limits: AnimationLimits
) -> None:
    """check_budget for a recipe: only a recipe of one step keeps frames (recipe_result)."""
    step = recipe.steps[0]
    check_budget(plan, step.operation, step.params, width, height, limits)


def plan_frames(operation: Operation[Any], params: Any, frames: int, output_format: str) -> FramePlan:
    """Every frame, when the operation works frame by frame and `output_format` holds frames; else
    the first, with the reason."""
    if frames <= 1:
        return STILL
    reason = operation.one_frame_reason(params)
    if reason is None and output_format not in ANIMATED_FORMATS:
        reason = f"{output_format.upper()} holds one frame; format=gif or format=webp keeps them all"
    if reason is not None:
        return FramePlan(frames, 1, f"only the first frame was kept: {reason}")
    return FramePlan(frames, frames)


def check_budget(
    plan: FramePlan, operation: Operation[Any], params: Any, width: int, height: int, limits: AnimationLimits
) -> None:
    """Refuse (AnimationTooLarge) an animation whose kept frames would be over the limits; a job that
    keeps one frame costs what a still does, and is bounded as one."""
    if not plan.animated:
        return
    frame_pixels, counted = counted_frame(operation, params, width, height)
    if plan.input > frame_allowance(limits, frame_pixels):
        given = tuple(name for name in params.size_fields if getattr(params, name, None) is not None)
        raise over_budget(plan.input, counted, (width, height), limits, given)


def counted_frame(
    operation: Operation[Any], params: Any, width: int, height: int
) -> tuple[int, tuple[int, int]]:
    """(pixels, size) of the frame an animation counts: the larger of the input's and the result's."""
    made = operation.output_size(params, width, height) or (width, height)
    counted = max((width, height), made, key=lambda size: size[0] * size[1])
    return counted[0] * counted[1], counted


def frame_allowance(limits: AnimationLimits, frame_pixels: int) -> int:
    """How many frames of `frame_pixels` an animation may keep."""
    return min(limits.max_frames, limits.max_pixels // max(1, frame_pixels))


def over_budget(
    frames: int,
    counted: tuple[int, int],
    input_size: tuple[int, int],
    limits: AnimationLimits,
    size_params: tuple[str, ...],
) -> AnimationTooLarge:
    """The refusal of `frames` frames of `counted` size, naming the limit they are over and the
    parameters that would make them fit: `format`, and `size_params` when the result's size is counted."""
    keep_one = "format=png or format=jpeg keeps the first frame alone"
    if frames > limits.max_frames:
        return AnimationTooLarge(
            ("format",),
            f"the animation has {frames_text(frames)} frames, over MAX_ANIMATION_FRAMES "
            f"({limits.max_frames}); {keep_one}",
            "MAX_ANIMATION_FRAMES",
        )
    results = counted != input_size
    return AnimationTooLarge(
        (*size_params, "format") if results else ("format",),
        f"the animation has {frames} frames of {counted[0]} × {counted[1]} "
        f"({'the result' if results else 'the input'}'s size): {frames * counted[0] * counted[1]} pixels "
        f"in all, over MAX_ANIMATION_PIXELS ({limits.max_pixels}); {keep_one}"
        + ("; a smaller result may fit" if results else ""),
        "MAX_ANIMATION_PIXELS",
    )


def frames_text(frames: int) -> str:
    return f"more than {MAX_COUNTED_FRAMES}" if frames > MAX_COUNTED_FRAMES else str(frames)


def held_bytes(plan: FramePlan, operation: Operation[Any], params: Any, width: int, height: int) -> float:
    """What a job that keeps an animation's frames holds at its peak, in bytes, for memory admission:
    its operation on one frame at a time, and every frame made."""
    frame_pixels, _ = counted_frame(operation, params, width, height)
    made = operation.output_size(params, width, height) or (width, height)
    return (
        frame_pixels * operation.memory_per_pixel_for(params)
        + plan.input * made[0] * made[1] * BYTES_PER_KEPT_PIXEL
    )


# --- Decoding and operating, a frame at a time -----------------------------------------------------


def operate(
    path: str,
    max_pixels: int,
    apply: FrameOperation,
    plan: FramePlan,
    allowance: int,
    progress: ProgressCallback,
) -> tuple[Animation, OperationResult]:
    """The animation at `path` through `apply`, frame by frame (see apply_to_frames); at most
    `allowance` frames (frame_allowance), refused past them."""
    with open_source(path, max_pixels) as source:
        return apply_to_frames(apply, source.frames(allowance), plan.input, source.plays, progress)


def apply_to_frames(
    apply: FrameOperation, frames: Iterable[Frame], count: int, plays: int, progress: ProgressCallback
) -> tuple[Animation, OperationResult]:
    """`apply` on each frame in turn, frame i reporting progress within the i-th of `count` shares:
    the animation of the results, each with its frame's duration, and the first frame's result (its
    metrics stand for the operation's)."""
    made: list[Image.Image] = []
    durations: list[int] = []
    first: OperationResult | None = None
    for index, frame in enumerate(frames):
        result = apply(frame.image, share_of(progress, index, count))
        if result.image is None:
            raise ValueError("an operation that animates makes an image of each frame")
        if made and result.image.size != made[0].size:
            raise ValueError("an operation that animates makes frames of one size from frames of one size")
        first = first or result
        made.append(result.image)
        durations.append(frame.duration)
    if first is None:
        raise UnprocessableImage("corrupt_image", "the animation has no frame that can be decoded")
    return Animation(made, durations, plays), first


def share_of(progress: ProgressCallback, index: int, count: int) -> ProgressCallback:
    """The progress callback of frame `index` of `count`: its 0..1 is that frame's share of the whole."""
    return lambda done: progress(min(1.0, (index + done) / count))


@contextmanager
def open_source(path: str, max_pixels: int) -> Iterator["AnimationSource"]:
    with open(path, "rb") as fp:
        yield AnimationSource(fp, max_pixels)


class AnimationSource:
    """An animated GIF or WebP, open: how many times it plays at once, its frames one at a time."""

    def __init__(self, fp: BinaryIO, max_pixels: int):
        self.image = open_allowed(fp, max_pixels)
        self.max_pixels = max_pixels
        self.plays = plays_of(self.image)

    def frames(self, allowance: int) -> Iterator[Frame]:
        """Each frame as it is shown, a new image in a working mode; AnimationTooLarge past `allowance`
        frames (the header was counted at submit, but the decoder has the last word)."""
        canvas = self.image.size
        index = 0
        while self.seek(index):
            if index >= allowance:
                raise AnimationTooLarge(
                    ("format",),
                    f"the animation has more than the {allowance} frames MAX_ANIMATION_FRAMES and "
                    "MAX_ANIMATION_PIXELS allow at its size; format=png or format=jpeg keeps the first "
                    "frame alone",
                    "MAX_ANIMATION_PIXELS",
                )
            yield Frame(self.decoded(canvas), int(self.image.info.get("duration") or 0))
            index += 1

    def seek(self, index: int) -> bool:
        """Move to frame `index`; False past the last."""
        try:
            self.image.seek(index)
        except EOFError:
            return False
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(f"a frame of the animation is too large to decode: {exc}") from None
        except DECODING_ERRORS as exc:
            raise self.damaged(exc) from None
        return True

    def decoded(self, canvas: tuple[int, int]) -> Image.Image:
        """The current frame: upright, in sRGB and a working mode, of the canvas's size. (A GIF frame
        may reach past the canvas its header declares; Pillow grows the picture, browsers cut it off.)"""
        width, height = self.image.size
        if width * height > self.max_pixels:
            raise ImageTooLarge(f"a frame of the animation is {width}x{height}, over the pixel limit")
        try:
            self.image.load()
        except DECODING_ERRORS as exc:
            raise self.damaged(exc) from None
        frame = self.image.crop((0, 0, *canvas)) if self.image.size != canvas else self.image
        # exif_transpose makes a copy: the decoder draws the next frame over this one's pixels.
        return to_working_mode(ImageOps.exif_transpose(frame))

    def damaged(self, exc: Exception) -> UnprocessableImage:
        return UnprocessableImage("corrupt_image", f"the {self.image.format} data is damaged: {exc}")


def plays_of(image: Image.Image) -> int:
    """How many times an animation plays, 0 for ever. A GIF's loop count (its NETSCAPE block) counts
    the plays after the first, and a GIF without one plays once; a WebP's counts every play."""
    loop = image.info.get("loop")
    if image.format == "GIF":
        if loop is None:
            return 1
        return 0 if loop == 0 else int(loop) + 1
    return int(loop or 0)


# --- Encoding ------------------------------------------------------------------------------------


def encode(picture: Picture, format: str, quality: int, progress: ProgressCallback | None = None) -> bytes:
    """A still or an animation, encoded (no metadata, as codecs.encode_image); `progress` hears a still
    PNG's bands."""
    if isinstance(picture, Animation):
        return encode_animation(picture, format, quality)
    return encode_image(picture, format, quality, progress)


def encode_animation(animation: Animation, format: str, quality: int) -> bytes:
    """An animated GIF or WebP of the frames: their durations, the plays, and nothing else."""
    if format not in ANIMATED_FORMATS:
        raise ValueError(f"cannot encode an animation as {format!r}; only as {' or '.join(ANIMATED_FORMATS)}")
    check_encodable(animation.frames[0], format)
    mode = common_mode(animation.frames)
    out = io.BytesIO()
    if format == "gif":
        # Handed over one at a time: the encoder keeps each frame as a palette image (a byte a pixel),
        # and the copy GIF needs (one-bit alpha) lives only while it is converted.
        frames = (gif_frame(frame, mode) for frame in animation.frames)
        next(frames).save(
            out,
            "GIF",
            save_all=True,
            append_images=frames,
            duration=animation.durations,
            disposal=2 if mode == "RGBA" else 1,
            comment=b"",
            **gif_loop(animation.plays),
        )
    else:
        webp_frames = [webp_frame(frame, mode) for frame in animation.frames]
        webp_frames[0].save(
            out,
            "WEBP",
            save_all=True,
            append_images=webp_frames[1:],
            duration=animation.durations,
            loop=animation.plays,
            quality=quality,
            exif=b"",
            icc_profile=None,
            xmp=b"",
        )
    return out.getvalue()


def common_mode(frames: list[Image.Image]) -> str:
    """The mode every frame of an animation is encoded in: RGBA when any has alpha, L when all are gray."""
    if any(has_alpha(frame) for frame in frames):
        return "RGBA"
    return "L" if all(frame.mode == "L" for frame in frames) else "RGB"


def gif_frame(frame: Image.Image, mode: str) -> Image.Image:
    """A new image of `frame` in `mode` as GIF stores it (codecs.gif_pixels), with no metadata for the
    encoder to fall back to."""
    pixels = gif_pixels(frame if frame.mode == mode else frame.convert(mode))
    pixels.info = {}
    return pixels


def webp_frame(frame: Image.Image, mode: str) -> Image.Image:
    """`frame` in `mode` (RGB for gray: WebP has none), itself when it is already: a copy of every frame
    would double what an animation holds. Its info is emptied, so the encoder finds no metadata."""
    pixels = frame if frame.mode == mode and mode != "L" else frame.convert("RGB" if mode == "L" else mode)
    pixels.info = {}
    return pixels


def gif_loop(plays: int) -> dict[str, int]:
    """The GIF encoder's `loop` for `plays` (see plays_of): none for a single play."""
    if plays == 1:
        return {}
    return {"loop": 0 if plays == 0 else plays - 1}


def frames_in(data: bytes, format: str) -> int:
    """The frames of an encoded result: its encoder may have merged identical neighbours into one
    longer frame, so this is what a viewer shows."""
    if format == "gif":
        return gif_frames(data)
    if format == "webp":
        return int(getattr(Image.open(io.BytesIO(data)), "n_frames", 1))
    return 1
