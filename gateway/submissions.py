"""Turning uploads into queued jobs: every check a client can fail happens here, before queueing."""

import logging
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from gateway.errors import ApiError, service_unavailable
from gateway.models import IdempotencyRecord
from gateway.owners import Caller
from processing import jobs, storage
from processing.errors import EmptyImage, ImageTooLarge, UnsupportedImage
from processing.imaging import ImageInfo, probe
from processing.models import Job
from processing.operations import Operation, get_operation

logger = logging.getLogger(__name__)

# Form fields that are not operation parameters.
NON_PARAMETER_FIELDS = {"csrfmiddlewaretoken", "image", "service"}


class Replayed(Exception):
    """This Idempotency-Key already made these jobs: answer with them instead of making new ones."""

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs


@dataclass
class Submission:
    """What one request asks for: a service, its parameters, and one or more uploads."""

    caller: Caller
    request_id: str
    service: str
    raw_parameters: dict
    uploads: list
    job_id: uuid.UUID | None = None  # for a single upload: take this id (see the jobs API)


def find_operation(name: str) -> Operation:
    try:
        return get_operation(name)
    except KeyError:
        raise ApiError(
            404, "unknown_service", f"there is no service named {name!r}; see /api/v1/services"
        ) from None


def uploads_from(request, *, at_most: int) -> list:
    uploads = request.FILES.getlist("image")
    if not uploads and not request.META.get("CONTENT_LENGTH"):
        # Django parses multipart bodies only when their length is declared.
        raise ApiError(411, "length_required", "send the upload with a Content-Length header (not chunked)")
    if not uploads:
        raise ApiError(
            400, "missing_image", "send the image as a multipart/form-data file field named 'image'"
        )
    if len(uploads) > at_most:
        raise ApiError(413, "too_many_files", f"send at most {at_most} image(s) in one request")
    return uploads


def parameters_from(form) -> dict:
    return {key: value for key, value in form.items() if key not in NON_PARAMETER_FIELDS}


def submit(submission: Submission) -> list[Job]:
    """Validate every upload and the parameters, then store, create and publish the jobs."""
    operation = find_operation(submission.service)
    params = operation.parse(submission.raw_parameters)
    inspected = [(upload, inspect_image(upload)) for upload in submission.uploads]
    for _, info in inspected:
        operation.check_fits(params, info.width, info.height)

    canonical = params.model_dump(mode="json")
    created = []
    try:
        for upload, info in inspected:
            job_id = submission.job_id if len(inspected) == 1 and submission.job_id else uuid.uuid4()
            created.append(create_job(submission, operation, canonical, upload, info, job_id))
        publish_all(job for job in created if job.status == Job.QUEUED)
    except Exception:
        withdraw(created)
        raise
    for job in created:
        logger.info("accepted a %s job (%s)", job.service, job.status, extra={"job_id": str(job.id)})
        jobs.emit(job, "job.queued" if job.status == Job.QUEUED else "job.completed")
    return created


def inspect_image(upload) -> ImageInfo:
    try:
        return probe(upload.temporary_file_path(), settings.MAX_IMAGE_PIXELS)
    except EmptyImage as exc:
        raise ApiError(400, exc.code, f"{upload.name}: {exc.message}") from None
    except UnsupportedImage as exc:
        raise ApiError(415, exc.code, f"{upload.name}: {exc.message}") from None
    except ImageTooLarge as exc:
        raise ApiError(413, exc.code, f"{upload.name}: {exc.message}") from None


def create_job(submission: Submission, operation, canonical: dict, upload, info: ImageInfo, job_id) -> Job:
    job = Job(
        id=job_id,
        service=operation.name,
        parameters=canonical,
        request_id=submission.request_id,
        input_filename=(upload.name or "")[:255],
        input_sha256=upload.sha256,
        input_format=info.format.lower(),
        input_bytes=upload.size,
        input_width=info.width,
        input_height=info.height,
        **submission.caller.owner_fields(),
    )
    job.input_key = store(storage.input_key(str(job_id), info.extension), upload)
    donor = reusable_result(job) if settings.RESULT_REUSE else None
    if donor:
        complete_from(job, donor)
    job.save(force_insert=True)
    return job


def reusable_result(job: Job) -> Job | None:
    """A completed job with the same input bytes, service and parameters, whose files still exist."""
    return (
        Job.objects.filter(
            status=Job.COMPLETED,
            service=job.service,
            input_sha256=job.input_sha256,
            parameters=job.parameters,
            files_removed_at__isnull=True,
        )
        .order_by("-finished_at")
        .first()
    )


def complete_from(job: Job, donor: Job) -> None:
    """Finish `job` at once with a copy of `donor`'s result: no worker, no second computation."""
    now = timezone.now()
    if donor.output_key:
        extension = donor.output_key.rsplit(".", 1)[-1]
        job.output_key = store_copy(donor.output_key, storage.output_key(str(job.id), extension))
    for field in (
        "output_content_type",
        "output_format",
        "output_bytes",
        "output_width",
        "output_height",
        "output_sha256",
        "report",
    ):
        setattr(job, field, getattr(donor, field))
    job.status, job.progress = Job.COMPLETED, 1.0
    job.started_at = job.finished_at = now
    job.processing_ms = 0.0
    job.metrics = {"cache_hit": True, "reused_job_id": str(donor.id)}


def store(key: str, upload) -> str:
    try:
        return storage.save_upload(key, upload)
    except Exception:
        logger.exception("storing an upload failed")
        raise service_unavailable("storage") from None


def store_copy(source_key: str, target_key: str) -> str:
    try:
        return storage.copy(source_key, target_key)
    except Exception:
        logger.exception("copying a reused result failed")
        raise service_unavailable("storage") from None


def publish_all(queued) -> None:
    """Publish once the rows have committed (autocommit); a broker that can't take them is a 503."""
    for job in queued:
        try:
            jobs.publish(job)
        except jobs.BrokerUnavailable as exc:
            logger.warning("broker unavailable, submission refused: %s", exc, extra={"job_id": str(job.id)})
            raise service_unavailable("broker") from None


def withdraw(created: list[Job]) -> None:
    """Undo a submission that can't be completed: no half-made job is left behind."""
    for job in created:
        storage.delete_job_files(job.input_key, job.output_key)
        Job.objects.filter(id=job.id).delete()


@contextmanager
def idempotent(caller: Caller, key: str | None):
    """With an Idempotency-Key, the first request's jobs answer every repeat of it.

    Yields a list to fill with the created jobs. Raises Replayed for a repeat, and
    409 while the first request with that key is still being handled.
    """
    if not key:
        yield []
        return
    if len(key) > 200:
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be at most 200 characters")
    try:
        with transaction.atomic():
            record = IdempotencyRecord.objects.create(owner=caller.identity, key=key)
    except IntegrityError:
        raise replay(caller, key) from None
    created: list[Job] = []
    try:
        yield created
    except BaseException:
        record.delete()  # the request failed: the key may be used again
        raise
    record.job_ids = [str(job.id) for job in created]
    record.save(update_fields=["job_ids"])


def replay(caller: Caller, key: str) -> Exception:
    record = IdempotencyRecord.objects.get(owner=caller.identity, key=key)
    if not record.job_ids:
        return ApiError(
            409, "idempotency_key_in_use", "a request with this Idempotency-Key is still in progress"
        )
    found = {str(job.id): job for job in Job.objects.filter(id__in=record.job_ids)}
    return Replayed([found[job_id] for job_id in record.job_ids if job_id in found])
