"""Creating jobs: validate, store the input, write the row, publish after it commits.

Every check a client can fail happens here, before anything is queued, and fails with a
domain error (processing.errors) that the gateway turns into an answer. A submission is
all or nothing: when one of its jobs can't be stored or published, none is left behind.
"""

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from processing import storage
from processing.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyInvalid,
    IdempotencyKeyMismatch,
    StorageUnavailable,
    UnknownOperation,
    UnprocessableImage,
)
from processing.imaging.codecs import ImageInfo, probe
from processing.imaging.operations import Operation, get_operation
from processing.jobs import lifecycle, pools, publishing
from processing.models import IdempotencyKey, Job, owned_by, owner_identity

logger = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY_LENGTH = 200
RESULT_FIELDS = (
    "output_content_type",
    "output_format",
    "output_bytes",
    "output_width",
    "output_height",
    "output_sha256",
    "fallback_format",
    "placeholder_blurhash",
    "placeholder_preview",
    "report",
)
# What format=auto may choose beyond JPEG and PNG, best first.
MODERN_FORMATS = ("avif", "webp")


class Upload(Protocol):
    """An uploaded file already on local disk, hashed as it arrived (gateway.http.uploads makes these)."""

    name: str | None
    size: int
    sha256: str

    def temporary_file_path(self) -> str: ...


@dataclass(frozen=True)
class Owner:
    """Whose jobs these are: an API key id, a bearer token's subject, a browser session's owner
    token, or none of them."""

    key: str = ""
    session: str = ""
    user_id: int | None = None
    subject: str = ""

    @property
    def identity(self) -> str:
        return owner_identity(self.key, self.session, self.subject)

    def fields(self) -> dict:
        return {
            "owner_key": self.key,
            "owner_subject": "" if self.key else self.subject,
            "owner_session": "" if self.key or self.subject else self.session,
            "owner_user_id": self.user_id,
        }


@dataclass
class Submission:
    """What one request asks for: a service, its parameters, and one or more uploads."""

    owner: Owner
    request_id: str
    service: str
    raw_parameters: dict
    uploads: list[Upload]
    job_id: uuid.UUID | None = None  # for a single upload: take this id
    idempotency_key: str | None = None
    # The image formats the client's Accept header names (for format=auto), e.g. ("avif", "webp").
    accepts: tuple[str, ...] = ()

    def negotiated_format(self, parameters: dict) -> str:
        """For format=auto, the best modern format the client accepts; "" for JPEG or PNG by content."""
        if parameters.get("format") != "auto":
            return ""
        return next((name for name in MODERN_FORMATS if name in self.accepts), "")


@dataclass
class Accepted:
    """A submission's jobs; `replayed` when an earlier request with its Idempotency-Key made them."""

    jobs: list[Job]
    replayed: bool = False


def find_operation(service: str) -> Operation:
    """The operation a client names as `service`; UnknownOperation if there is none."""
    try:
        return get_operation(service)
    except KeyError:
        raise UnknownOperation(service) from None


def submit(submission: Submission) -> Accepted:
    """Make the submission's jobs, or, for a repeated Idempotency-Key, give the ones it made before."""
    key = submission.idempotency_key
    if not key:
        return Accepted(create_jobs(submission))
    record, remembered = reserve(submission.owner.identity, key, fingerprint(submission))
    if remembered is not None:
        return Accepted(remembered, replayed=True)
    try:
        created = create_jobs(submission)
    except BaseException:
        record.delete()  # the request failed: the key may be used again
        raise
    record.job_ids = [str(job.id) for job in created]
    record.save(update_fields=["job_ids"])
    return Accepted(created)


def fingerprint(submission: Submission) -> str:
    """What makes two requests the same: the service, its parameters as parsed, and each input's bytes."""
    operation = find_operation(submission.service)
    parameters = operation.parse(submission.raw_parameters).model_dump(mode="json")
    request = {
        "service": operation.name,
        "parameters": parameters,
        "inputs": [upload.sha256 for upload in submission.uploads],
    }
    negotiated = submission.negotiated_format(parameters)
    if negotiated:  # only then: fingerprints made before format=auto existed stay the same
        request["negotiated_format"] = negotiated
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def create_jobs(submission: Submission) -> list[Job]:
    """Validate every upload and the parameters, then store, create and publish the jobs."""
    operation = find_operation(submission.service)
    params = operation.parse(submission.raw_parameters)
    inspected = [(upload, inspect(upload)) for upload in submission.uploads]
    for _, info in inspected:
        operation.check_fits(params, info.width, info.height)
        operation.check_output(params, info.width, info.height, settings.MAX_OUTPUT_PIXELS)

    canonical = params.model_dump(mode="json")
    created: list[Job] = []
    try:
        for upload, info in inspected:
            job_id = submission.job_id if len(inspected) == 1 and submission.job_id else uuid.uuid4()
            created.append(create_job(submission, operation, canonical, upload, info, job_id))
        for job in created:
            if job.status == Job.QUEUED:
                publishing.publish(job)
    except Exception:
        withdraw(created)
        raise
    for job in created:
        logger.info("accepted a %s job (%s)", job.service, job.status, extra={"job_id": str(job.id)})
        lifecycle.emit(job, "job.queued" if job.status == Job.QUEUED else "job.completed")
    return created


def inspect(upload: Upload) -> ImageInfo:
    """The upload's header facts; an UnprocessableImage names the file it is about (`filename`)."""
    try:
        return probe(upload.temporary_file_path(), settings.MAX_IMAGE_PIXELS, settings.MAX_JPEG_SCANS)
    except UnprocessableImage as exc:
        exc.filename = upload.name
        raise


def create_job(
    submission: Submission, operation: Operation, canonical: dict, upload: Upload, info: ImageInfo, job_id
) -> Job:
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
        negotiated_format=submission.negotiated_format(canonical),
        pool=pools.pool_for(settings.TRAFFIC_SPLIT, operation.name, job_id),
        **submission.owner.fields(),
    )
    job.input_key = stored(storage.save_upload, storage.input_key(str(job_id), info.extension), upload)
    donor = reusable_result(job) if settings.RESULT_REUSE else None
    if donor:
        complete_from(job, donor)
    job.save(force_insert=True)
    return job


def reusable_result(job: Job) -> Job | None:
    """The same owner's completed job with the same input bytes, service and parameters, whose files
    still exist. Never another owner's: that would tell them someone processed this image before."""
    return (
        Job.objects.filter(
            owned_by(job.owner_identity),
            status=Job.COMPLETED,
            service=job.service,
            input_sha256=job.input_sha256,
            parameters=job.parameters,
            negotiated_format=job.negotiated_format,
            files_removed_at__isnull=True,
        )
        .order_by("-finished_at")
        .first()
    )


def complete_from(job: Job, donor: Job) -> None:
    """Finish `job` at once with a copy of `donor`'s result: no worker, no second computation."""
    now = timezone.now()
    job.output_key = copied(donor.output_key, storage.output_key, job.id)
    job.fallback_key = copied(donor.fallback_key, storage.fallback_key, job.id)
    for name in RESULT_FIELDS:
        setattr(job, name, getattr(donor, name))
    job.status, job.progress = Job.COMPLETED, 1.0
    job.started_at = job.finished_at = now
    job.processing_ms = 0.0
    job.metrics = {"cache_hit": True, "reused_job_id": str(donor.id)}


def copied(source_key: str, key_for, job_id) -> str:
    """A copy of the file at `source_key` at the key `key_for` gives the new job; "" when there is none."""
    if not source_key:
        return ""
    extension = source_key.rsplit(".", 1)[-1]
    return stored(storage.copy, source_key, key_for(str(job_id), extension))


def stored(save, *args) -> str:
    """`save(*args)` (a storage call), its failure named StorageUnavailable."""
    try:
        return save(*args)
    except Exception as exc:
        logger.exception("storing a file failed")
        raise StorageUnavailable(str(exc)) from exc


def withdraw(created: list[Job]) -> None:
    """Undo a submission that can't be completed: no half-made job is left behind."""
    for job in created:
        storage.delete_job_files(*job.file_keys)
        Job.objects.filter(id=job.id).delete()


def reserve(owner: str, key: str, request: str) -> tuple[IdempotencyKey | None, list[Job] | None]:
    """(the new record, None) for a first use of the key; (None, its jobs) for a repeat of the
    request whose `fingerprint` is `request`.

    Raises IdempotencyKeyMismatch when the key was used for a different request, and
    IdempotencyKeyInUse while the first request with the key is still being handled.
    """
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise IdempotencyKeyInvalid(
            f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
        )
    try:
        with transaction.atomic():
            return IdempotencyKey.objects.create(owner=owner, key=key, fingerprint=request), None
    except IntegrityError:
        return None, remembered_jobs(owner, key, request)


def remembered_jobs(owner: str, key: str, request: str) -> list[Job]:
    record = IdempotencyKey.objects.get(owner=owner, key=key)
    if record.fingerprint and record.fingerprint != request:  # keys from before fingerprints match all
        raise IdempotencyKeyMismatch(
            "this Idempotency-Key was used for a different request (service, parameters or image); "
            "use a new key for a new request"
        )
    if not record.job_ids:
        raise IdempotencyKeyInUse("a request with this Idempotency-Key is still in progress")
    found = {str(job.id): job for job in Job.objects.filter(id__in=record.job_ids)}
    return [found[job_id] for job_id in record.job_ids if job_id in found]
