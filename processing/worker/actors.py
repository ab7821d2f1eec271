"""Dramatiq actors: load the job, claim it, run the operation, store the output."""

import hashlib
import logging
import math
import time
from typing import Any

import dramatiq
from django.conf import settings
from dramatiq.middleware import TimeLimitExceeded
from PIL import Image
from pydantic import ValidationError

from processing import logcontext, storage
from processing.errors import Cancelled, InvalidParameters, UnprocessableImage
from processing.imaging import admin_thumbnails, byte_budget, formats, placeholders, previews
from processing.imaging.codecs import DecodeHint, ProgressCallback, load_image
from processing.imaging.operations import OutputLimits, get_operation
from processing.imaging.operations.base import Operation, OutputOptions, Params
from processing.jobs import lifecycle, pools, queues
from processing.models import Job
from processing.worker import admission, progress

logger = logging.getLogger(__name__)

# A message that finds its job held by a live worker waits for that lease to run out,
# this many times at most, before giving up on it.
MAX_LEASE_WAITS = 20


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
    except UnprocessableImage as exc:
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


def pixels_of(job: Job, operation: Operation[Any], params: Params, hint: DecodeHint | None) -> int:
    """What the job counts against the memory budget: the pixels it decodes (fewer when the decode is
    reduced) or makes, whichever is more, weighted by what its operation holds per pixel."""
    decoded = decoded_pixels(job, hint)
    made = operation.output_size(params, job.input_width, job.input_height)
    pixels = max(decoded, made[0] * made[1] if made else 0)
    return math.ceil(pixels * operation.memory_per_pixel / admission.BYTES_PER_PIXEL)


def run(job: Job, worker: str) -> None:
    operation = get_operation(job.service)
    params = operation.parse(job.parameters)
    # Only what the operation needs: a JPEG may decode at a fraction of its size, or as luma alone.
    hint = operation.decode_hint(params, job.input_width, job.input_height)
    with admission.admitted(pixels_of(job, operation, params, hint)):
        produce(job, worker, operation, params, hint)


def decoded_pixels(job: Job, hint: DecodeHint | None) -> int:
    """The pixels the decode makes: fewer when the decode is reduced (DCT scaling divides by 8 at most)."""
    pixels = job.input_width * job.input_height
    if hint is not None and hint.size is not None:
        return max(hint.size[0] * hint.size[1], pixels // 64)
    return pixels


def stages_of(
    job: Job, worker: str, operation: Operation[Any], params: Any, hint: DecodeHint | None
) -> progress.Stages:
    """The job's progress bar, cut into what each of its stages is expected to cost."""
    decoded = decoded_pixels(job, hint)
    made = operation.output_size(params, job.input_width, job.input_height)
    made_pixels = made[0] * made[1] if made else 0
    requested = job.parameters.get("format")
    # format=auto left to the content is JPEG or PNG: counted as JPEG, most results' case.
    output_format = formats.chosen_before_pixels(requested, job.negotiated_format, job.input_format) or "jpeg"
    fallback = "jpeg" if requested == formats.AUTO and job.negotiated_format else ""
    costs = progress.Costs.of(
        input_format=job.input_format,
        decoded_pixels=decoded,
        ns_per_pixel=operation.ns_per_pixel,
        worked_pixels=max(decoded, made_pixels),
        output_format=output_format if made else "",
        output_pixels=made_pixels,
        fallback_format=fallback if made else "",
    )
    return progress.Stages(lifecycle.ProgressReporter(job, worker), costs)


def produce(job: Job, worker: str, operation: Operation[Any], params: Any, hint: DecodeHint | None) -> None:
    """Decode, operate, encode and store, then complete the job."""
    stages = stages_of(job, worker, operation, params, hint)  # its throttle counts from here
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with storage.local_path(job.input_key) as path:
        image, info = load_image(path, settings.MAX_IMAGE_PIXELS, hint, settings.MAX_JPEG_SCANS)
    timings["decode_ms"] = elapsed_ms(started)
    stages.done("decode")
    # The gateway checked these from the header; here they hold for any job, before a pixel is made.
    output_format = formats.chosen_before_pixels(
        job.parameters.get("format"), job.negotiated_format, info.format
    )
    operation.check_job(params, info.width, info.height, output_format, OutputLimits.of(settings))

    step = time.perf_counter()
    result = operation.apply(image, params, stages.stage("operation"))
    timings["operation_ms"] = elapsed_ms(step)

    fields: dict[str, Any] = {}
    if operation.produces == "report":
        fields["report"] = result.report
    else:
        made = result.image
        assert made is not None  # an operation that produces an image returns one
        fields.update(store_image_output(job, made, params, info.format, timings, stages))
        fields.update(placeholders.fields(made))
        stored_size = (fields["output_width"], fields["output_height"])
        admin_thumbnails.store_unless_later(fields["output_key"], made, stored_size)
        previews.store_unless_later(fields["output_key"], made, stored_size)
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


def store_image_output(
    job: Job,
    image: Image.Image,
    params: OutputOptions,
    input_format: str,
    timings: dict[str, float],
    stages: progress.Stages,
) -> dict[str, Any]:
    chosen = formats.result_formats(params.format, job.negotiated_format, input_format, image)
    step = time.perf_counter()
    fitted = byte_budget.encode_within(
        image, chosen.output, params.quality, params.max_bytes, stages.stage("encode")
    )
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
    }
    if chosen.fallback:
        fields.update(
            store_fallback(
                job, fitted.image, chosen.fallback, params.quality, params.max_bytes, stages.stage("fallback")
            )
        )
    timings["store_ms"] = elapsed_ms(step)
    return fields


def store_fallback(
    job: Job,
    image: Image.Image,
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
