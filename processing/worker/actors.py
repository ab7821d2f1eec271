"""Dramatiq actors: load the job, claim it, run its recipe (one operation, or several steps on one
decode and one encode), store the output. (The callbacks' actor, deliver_callback, is
processing.callbacks.deliveries's: imported here, every worker runs it.)"""

import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import dramatiq
from django.conf import settings
from dramatiq.middleware import TimeLimitExceeded
from pydantic import ValidationError

from processing import logcontext, storage
from processing.callbacks.deliveries import deliver_callback  # noqa: F401  (the callbacks queue's actor)
from processing.errors import Cancelled, InvalidParameters, StepRefused, UnprocessableImage
from processing.imaging import (
    admin_thumbnails,
    animation,
    byte_budget,
    formats,
    jxl,
    placeholders,
    previews,
    recipes,
)
from processing.imaging.animation import Animation, AnimationLimits, FramePlan, Picture
from processing.imaging.codecs import DecodeHint, ImageInfo, load_image
from processing.imaging.operations import OutputLimits
from processing.imaging.operations.base import OperationResult, OutputOptions, ProgressCallback
from processing.imaging.recipes import Recipe
from processing.jobs import lifecycle, pools, queues
from processing.models import Job
from processing.worker import admission, progress

logger = logging.getLogger(__name__)

# A message that finds its job held by a live worker waits for that lease to run out,
# this many times at most, before giving up on it.
MAX_LEASE_WAITS = 20
# An animation whose frames all came out alike: its encoder stored them as one.
MERGED_FRAMES_NOTE = "the frames came out identical, so the result is one frame"


def declare_pools() -> None:
    """Tell this process's broker every pool's queue: a worker consumes a queue (`--queues`) only
    when its broker knows it, and the embedded workers consume them all."""
    for pool in queues.queue_names():
        dramatiq.get_broker().declare_queue(pool)


def should_retry(retries: int, exception: Exception) -> bool:
    if isinstance(exception, dramatiq.Retry):
        return retries < MAX_LEASE_WAITS
    max_retries: int = settings.JOB_MAX_RETRIES
    return retries < max_retries


@dramatiq.actor(
    queue_name=pools.DEFAULT_POOL,  # TRAFFIC_SPLIT sends some jobs elsewhere (processing.jobs.publishing)
    time_limit=settings.JOB_TIME_LIMIT_SECONDS * 1000,
    retry_when=should_retry,
    min_backoff=1000,
    max_backoff=30_000,
    # A job that ran out of time will run out again: fail it instead of retrying.
    throws=(TimeLimitExceeded,),
)
def process_job(job_id: str) -> None:
    worker = lifecycle.worker_id()
    job = lifecycle.claim(job_id, worker)
    if job is None:
        wait_for_lease_or_skip(job_id)
        return
    with logcontext.bound(request=job.request_id, job=job_id):
        process_claimed(job, worker)


declare_pools()


def process_claimed(job: Job, worker: str) -> None:
    logger.info("processing %s (attempt %d)", job.service, job.attempts)
    try:
        with lifecycle.held(job.id, worker):
            run(job, worker)
    except (UnprocessableImage, StepRefused) as exc:
        lifecycle.fail(job.id, exc.code, exc.message, worker)
    except (InvalidParameters, ValidationError) as exc:
        # The gateway checks these at upload; this catches what only the decoded image reveals.
        lifecycle.fail(job.id, "invalid_parameters", str(exc), worker)
    except Cancelled:
        logger.info("stopped at a checkpoint: the job was cancelled")
    except Exception:
        # Transient (storage, database) or unexpected: retried with backoff by dramatiq;
        # when the retries run out, FailJobWhenMessageDies records the failure.
        lifecycle.release(job.id, worker)
        raise


def wait_for_lease_or_skip(job_id: str) -> None:
    """No claim: the job is finished or cancelled (nothing to do), or a live worker holds it."""
    holder = lifecycle.holder(job_id)
    if holder is None:
        logger.info("nothing to do: job finished, cancelled or unknown", extra={"job_id": job_id})
        return
    worker, seconds_left = holder
    # Its worker may have died (a SIGKILL leaves the lease to run out): look again after the lease.
    raise dramatiq.Retry(f"job held by {worker}", delay=int(seconds_left * 1000) + 500)


# Bytes per pixel of the decoded upload, which the job holds to its end (its admin thumbnail is made
# from it) while the steps after the first work: Pillow keeps RGB in four bytes a pixel.
HELD_DECODE_BYTES_PER_PIXEL = 4


def pixels_of(job: Job, recipe: Recipe, hint: DecodeHint | None, frames: FramePlan) -> int:
    """What the job counts against the memory budget, at its busiest step: the pixels the step is given
    (for the first, those decoded, fewer when the decode is reduced) or makes, whichever is more,
    weighted by what its operation holds per pixel; from the second step on, with the decoded upload.
    For an animation that keeps its frames (a recipe of one step), one frame's worth of that and every
    frame it makes."""
    width, height = job.input_width, job.input_height
    if frames.animated:
        only = recipe.steps[0]
        held_bytes = animation.held_bytes(frames, only.operation, only.params, width, height)
        return math.ceil(held_bytes / admission.BYTES_PER_PIXEL)
    decoded = decoded_pixels(job, hint)
    busiest = 0.0
    for index, step, step_width, step_height in recipe.walk(width, height):
        given = decoded if index == 0 else step_width * step_height
        made = step.operation.output_size(step.params, step_width, step_height)
        held = max(given, made[0] * made[1] if made else 0) * step.operation.memory_per_pixel_for(step.params)
        if index:
            held += decoded * HELD_DECODE_BYTES_PER_PIXEL
        busiest = max(busiest, held)
    return math.ceil(busiest / admission.BYTES_PER_PIXEL)


def run(job: Job, worker: str) -> None:
    recipe = recipes.stored(job.service, job.parameters)
    # Only what the recipe needs: a JPEG may decode at a fraction of its size, or as luma alone.
    hint = recipe.decode_hint(job.input_width, job.input_height)
    _, frames = animation.recipe_result(
        recipe, job.input_frames, job.parameters.get("format"), job.negotiated_format, job.input_format
    )
    with admission.admitted(pixels_of(job, recipe, hint, frames)):
        produce(job, worker, recipe, hint, frames)


def decoded_pixels(job: Job, hint: DecodeHint | None) -> int:
    """The pixels the decode makes: fewer when the decode is reduced (DCT scaling divides by 8 at most)."""
    pixels = job.input_width * job.input_height
    if hint is not None and hint.size is not None:
        return max(hint.size[0] * hint.size[1], pixels // 64)
    return pixels


def stages_of(
    job: Job, worker: str, recipe: Recipe, hint: DecodeHint | None, frames: FramePlan
) -> progress.Stages:
    """The job's progress bar, cut into what each of its stages is expected to cost: the recipe's steps
    by what each costs on the pixels it is given, every frame of an animation that keeps them."""
    decoded = decoded_pixels(job, hint)
    operation_ns = 0.0
    made_pixels = 0
    for index, step, width, height in recipe.walk(job.input_width, job.input_height):
        made = step.operation.output_size(step.params, width, height)
        made_pixels = made[0] * made[1] if made else 0
        given = decoded if index == 0 else width * height
        operation_ns += step.operation.ns_per_pixel * max(given, made_pixels)
    requested = job.parameters.get("format")
    # format=auto left to the content is JPEG or PNG: counted as JPEG, most results' case.
    output_format = formats.chosen_before_pixels(requested, job.negotiated_format, job.input_format) or "jpeg"
    fallback = "jpeg" if requested == formats.AUTO and job.negotiated_format else ""
    costs = progress.Costs.of(
        input_format=job.input_format,
        decoded_pixels=decoded * frames.output,
        operation_ns=operation_ns * frames.output,
        output_format=output_format if made_pixels else "",
        output_pixels=made_pixels * frames.output,
        fallback_format=fallback if made_pixels else "",
    )
    return progress.Stages(lifecycle.ProgressReporter(job, worker), costs)


def produce(job: Job, worker: str, recipe: Recipe, hint: DecodeHint | None, frames: FramePlan) -> None:
    """Decode once, run the recipe's steps, encode once and store, then complete the job."""
    stages = stages_of(job, worker, recipe, hint, frames)  # its throttle counts from here
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with storage.local_path(job.input_key) as path:
        image, info = load_image(path, settings.MAX_IMAGE_PIXELS, hint, settings.MAX_JPEG_SCANS)
        timings["decode_ms"] = elapsed_ms(started)
        stages.done("decode")
        # The gateway checked these from the header; here they hold for any job, before a pixel is made.
        output_format, frames = animation.recipe_result(
            recipe, info.frames, job.parameters.get("format"), job.negotiated_format, info.format
        )
        recipe.check_job(info.width, info.height, output_format, OutputLimits.of(settings))
        animation.check_recipe_budget(frames, recipe, info.width, info.height, AnimationLimits.of(settings))

        step = time.perf_counter()
        made: Picture | None
        if frames.animated:  # the other frames are decoded from the same file as they are operated on
            result, made = operate_on_frames(path, recipe, frames, info, stages.stage("operation"))
        else:
            result = recipe.apply(image, stages.stage("operation"))
            made = result.image
        timings["operation_ms"] = elapsed_ms(step)

    fields: dict[str, Any] = {"output_frames": frames.output, "frames_note": frames.note}
    if recipe.produces == "report":
        fields["report"] = result.report
    else:
        assert made is not None  # an operation that produces an image returns one
        first = animation.first_frame(made)
        fields.update(store_image_output(job, made, recipe.output, info.format, timings, stages))
        if frames.animated and fields["output_frames"] == 1:
            fields["frames_note"] = MERGED_FRAMES_NOTE
        fields.update(placeholders.fields(first))
        stored_size = (fields["output_width"], fields["output_height"])
        admin_thumbnails.store_unless_later(fields["output_key"], first, stored_size)
        previews.store_unless_later(fields["output_key"], first, stored_size)
    admin_thumbnails.store_unless_later(job.input_key, image, (info.width, info.height))
    # After storing: encode_ms and store_ms belong in the metrics too.
    fields["metrics"] = {**result.metrics, **timings}
    fields["processing_ms"] = elapsed_ms(started)
    if lifecycle.complete(job, worker, **fields):
        logger.info("completed in %.1f ms", fields["processing_ms"])
    else:
        logger.info("finished, but the job was cancelled, deleted or taken over meanwhile")
        if lifecycle.result_unwanted(job.id):
            storage.delete_job_files(fields.get("output_key", ""), fields.get("fallback_key", ""))


def operate_on_frames(
    path: str, recipe: Recipe, frames: FramePlan, info: ImageInfo, progress: ProgressCallback
) -> tuple[OperationResult, Animation]:
    """The recipe's one operation (only a recipe of one step keeps frames: animation.recipe_result) on
    every frame of the animation at `path`, one at a time (the first frame's result stands for the
    operation's metrics), within the frames the animation limits allow at its size."""
    operation, params = recipe.steps[0].operation, recipe.steps[0].params
    frame_pixels, _ = animation.counted_frame(operation, params, info.width, info.height)
    allowance = animation.frame_allowance(AnimationLimits.of(settings), frame_pixels)
    made, first = animation.operate(
        path,
        settings.MAX_IMAGE_PIXELS,
        lambda frame, report: operation.apply(frame, params, report),
        frames,
        allowance,
        progress,
    )
    return first, made


def store_image_output(
    job: Job,
    image: Picture,
    params: OutputOptions,
    input_format: str,
    timings: dict[str, float],
    stages: progress.Stages,
) -> dict[str, Any]:
    """Encode the result (and its fallback) and store it: its fields on the job. An animation's frames
    are counted in the file, as its encoder may have merged identical neighbours."""
    animated = isinstance(image, Animation)
    content = animation.first_frame(image)
    chosen = formats.result_formats(params.format, job.negotiated_format, input_format, content, animated)
    step = time.perf_counter()
    fitted = encoded(job, image, chosen.output, params, input_format, stages.stage("encode"))
    timings["encode_ms"] = elapsed_ms(step)
    stages.done("encode")
    if fitted.encodes > 1:
        timings.update(fitted.metrics(image))
    data = fitted.data

    step = time.perf_counter()
    key = storage.save_output(storage.output_key(str(job.id), formats.extension_for(chosen.output)), data)
    fields = {
        "output_key": key,
        "output_format": chosen.output,
        "output_content_type": formats.mime_type_for(chosen.output),
        "output_bytes": len(data),
        "output_width": fitted.image.width,
        "output_height": fitted.image.height,
        "output_sha256": hashlib.sha256(data).hexdigest(),
        "output_frames": animation.frames_in(data, chosen.output) if animated else 1,
    }
    if chosen.fallback:
        fields.update(
            store_fallback(
                job, fitted.image, chosen.fallback, params.quality, params.max_bytes, stages.stage("fallback")
            )
        )
    timings["store_ms"] = elapsed_ms(step)
    return fields


def encoded(
    job: Job,
    image: Picture,
    output_format: str,
    params: OutputOptions,
    input_format: str,
    progress: ProgressCallback,
) -> byte_budget.Fitted:
    """The result's bytes: a lossless JPEG XL when asked for (convert's `lossless`), of the upload's own
    file when it is a JPEG; otherwise the image encoded within its byte budget."""
    if not getattr(params, "lossless", False):
        return byte_budget.encode_within(image, output_format, params.quality, params.max_bytes, progress)
    jpeg = None
    if formats.keeps_the_jpeg(True, input_format, output_format):
        with storage.local_path(job.input_key) as path:
            jpeg = Path(path).read_bytes()
    # JPEG XL keeps no animation (formats.ANIMATED_FORMATS): a lossless one is of one picture.
    picture = animation.first_frame(image)
    return byte_budget.Fitted(jxl.encode_lossless(picture, jpeg), picture, quality=100, encodes=1)


def store_fallback(
    job: Job,
    image: Picture,
    fallback_format: str,
    quality: int,
    max_bytes: int | None,
    progress: ProgressCallback,
) -> dict[str, Any]:
    """The same result in `fallback_format`, for downloads whose Accept does not name the chosen format;
    within the same budget, so it may have fewer pixels than the result."""
    data = byte_budget.encode_within(image, fallback_format, quality, max_bytes, progress).data
    key = storage.save_output(storage.fallback_key(str(job.id), formats.extension_for(fallback_format)), data)
    return {"fallback_key": key, "fallback_format": fallback_format}


def elapsed_ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)
