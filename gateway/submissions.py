"""Turning an upload into a queued job: every check a client can fail happens here, before queueing."""

import logging
import uuid

from django.conf import settings

from gateway.errors import ApiError, service_unavailable
from processing import jobs, storage
from processing.errors import EmptyImage, ImageTooLarge, UnsupportedImage
from processing.imaging import probe
from processing.models import Job
from processing.operations import Operation, get_operation

logger = logging.getLogger(__name__)

# Form fields that are not operation parameters.
NON_PARAMETER_FIELDS = {"csrfmiddlewaretoken", "image"}


def find_operation(name: str) -> Operation:
    try:
        return get_operation(name)
    except KeyError:
        raise ApiError(
            404, "unknown_service", f"there is no service named {name!r}; see /api/v1/services"
        ) from None


def the_upload(request):
    uploads = request.FILES.getlist("image")
    if not uploads and not request.META.get("CONTENT_LENGTH"):
        # Django parses multipart bodies only when their length is declared.
        raise ApiError(411, "length_required", "send the upload with a Content-Length header (not chunked)")
    if not uploads:
        raise ApiError(
            400, "missing_image", "send the image as a multipart/form-data file field named 'image'"
        )
    return uploads[0]


def parameters_from(form) -> dict:
    return {key: value for key, value in form.items() if key not in NON_PARAMETER_FIELDS}


def submit(request, service: str, upload, raw_parameters: dict, job_id: uuid.UUID | None = None) -> Job:
    """Validate the upload and parameters, store the input, create the job and publish it."""
    operation = find_operation(service)
    params = operation.parse(raw_parameters)
    info = inspect_image(upload)
    operation.check_fits(params, info.width, info.height)

    job_id = job_id or uuid.uuid4()
    key = store_input(storage.input_key(str(job_id), info.extension), upload)
    job = Job.objects.create(
        id=job_id,
        service=operation.name,
        parameters=params.model_dump(mode="json"),
        request_id=request.request_id,
        input_key=key,
        input_filename=(upload.name or "")[:255],
        input_sha256=upload.sha256,
        input_format=info.format.lower(),
        input_bytes=upload.size,
        input_width=info.width,
        input_height=info.height,
    )
    publish_or_withdraw(job)
    return job


def inspect_image(upload):
    try:
        return probe(upload.temporary_file_path(), settings.MAX_IMAGE_PIXELS)
    except EmptyImage as exc:
        raise ApiError(400, exc.code, exc.message) from None
    except UnsupportedImage as exc:
        raise ApiError(415, exc.code, exc.message) from None
    except ImageTooLarge as exc:
        raise ApiError(413, exc.code, exc.message) from None


def store_input(key: str, upload) -> str:
    try:
        return storage.save_upload(key, upload)
    except Exception:
        logger.exception("storing an upload failed")
        raise service_unavailable("storage") from None


def publish_or_withdraw(job: Job) -> None:
    """Publish once the row has committed (autocommit); if the broker can't take it, the job never existed."""
    try:
        jobs.publish(job)
    except jobs.BrokerUnavailable as exc:
        logger.warning("broker unavailable, submission refused: %s", exc, extra={"job_id": str(job.id)})
        job.delete()
        storage.delete_job_files(job.input_key)
        raise service_unavailable("broker") from None
    jobs.emit(job, "job.queued")
