"""Jobs: submit (one or a batch), list, read, poll, download, metrics, cancel."""

import base64
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponse, HttpResponseRedirect, JsonResponse
from django.http.response import HttpResponseBase
from django.utils.cache import patch_vary_headers
from django.utils.http import content_disposition_header
from ninja import Query, Router, Schema, Status
from ninja.params import functions as params
from ninja.renderers import JSONRenderer
from pydantic import Field

from gateway.api.auth import READ_LIMIT, SUBMIT_LIMIT, CallerRequest
from gateway.api.schemas import ErrorOut, JobPageOut, JobsOut, MetricsOut
from gateway.auth.callers import Caller
from gateway.auth.ratelimit import charge_submissions
from gateway.http import intake
from gateway.http.errors import ApiError, not_found
from gateway.http.negotiation import accepted_image_types
from gateway.live import waiting
from gateway.ops.disclosure import opaque_label
from processing.imaging import formats
from processing.imaging.operations import get_operation
from processing.jobs import lifecycle, submissions
from processing.jobs.public import JobOut, JobStatus, StatusOut, error_json, job_json, job_urls, status_json
from processing.models import Job

router = Router(tags=["jobs"])

SUBMIT_ERRORS = {code: ErrorOut for code in (400, 401, 403, 404, 409, 411, 413, 415, 422, 429, 503)}
READ_ERRORS = {code: ErrorOut for code in (401, 403, 404, 422, 429, 503)}


def multipart_doc(service: str | None = None, *, many: bool = False) -> dict[str, Any]:
    """The OpenAPI request body of a submission: `image` and the service's parameters as form fields.

    For /process/{service} the parameters depend on the service (GET /api/v1/services lists them).
    """
    image = {"type": "string", "format": "binary"}
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["image"],
        "properties": {"image": {"type": "array", "items": image} if many else image},
        "additionalProperties": {"type": "string"},
    }
    if service:
        parameters = get_operation(service).json_schema()
        schema["properties"].update(parameters.get("properties", {}))
        schema["required"] += parameters.get("required", [])
        schema["additionalProperties"] = False
        schema["$defs"] = parameters.get("$defs", {})
    if many:
        schema["required"].append("service")
        schema["properties"]["service"] = {"type": "string", "description": "the service for every image"}
    return {"requestBody": {"content": {"multipart/form-data": {"schema": schema}}, "required": True}}


def get_job(request: CallerRequest, job_id: str) -> Job:
    """The caller's job, or 404: someone else's job looks exactly like one that doesn't exist."""
    try:
        job = request.auth.visible_job(uuid.UUID(job_id))
    except ValueError:
        job = None
    if job is None:
        raise not_found()
    return job


def submit(
    request: CallerRequest,
    response: HttpResponse,
    service: str,
    *,
    at_most: int = 1,
    job_id: uuid.UUID | None = None,
) -> list[Job]:
    submission = intake.submission_from(request, request.auth, service, at_most=at_most, job_id=job_id)
    charge_submissions(request, len(submission.uploads) - 1)  # the throttle counted the first
    accepted = submissions.submit(submission)
    if accepted.replayed:
        response["Idempotent-Replayed"] = "true"
    return accepted.jobs


def submit_one(request: CallerRequest, response: HttpResponse, service: str) -> Status[JobOut]:
    # Without a client-chosen X-Request-ID, the request id doubles as the job id, so a client that
    # polls /status/{request_id} with the request id it was given finds the job.
    job_id = None if request.request_id_given else uuid.UUID(request.request_id)
    found = submit(request, response, service, job_id=job_id)
    if not found:
        raise not_found()  # an idempotent replay whose job has since been deleted
    job = found[0]
    response["Location"] = job_urls(job.id)["job_url"]
    return Status(202, job_json(job))


@router.post(
    "/process/{service}",
    response={202: JobOut, **SUBMIT_ERRORS},
    throttle=SUBMIT_LIMIT,
    url_name="process",
    openapi_extra=multipart_doc(),
)
def process(request: CallerRequest, response: HttpResponse, service: str) -> Status[JobOut]:
    """Upload `image` (multipart) with the service's parameters as form fields; answers 202 with the job."""
    return submit_one(request, response, service)


def add_shortcut(service: str) -> None:
    """POST /api/v1/{service}: the same as /process/{service}, with the service's fields documented."""

    def shortcut(request: CallerRequest, response: HttpResponse) -> Status[JobOut]:
        return submit_one(request, response, service)

    shortcut.__name__ = service
    router.add_api_operation(
        f"/{service}",
        ["POST"],
        shortcut,
        response={202: JobOut, **SUBMIT_ERRORS},
        throttle=SUBMIT_LIMIT,
        url_name=service,
        openapi_extra=multipart_doc(service),
        summary=f"The same as /process/{service}",
    )


for _service in ("resize", "crop"):
    add_shortcut(_service)


@router.post(
    "/jobs/batch",
    response={202: JobsOut, **SUBMIT_ERRORS},
    throttle=SUBMIT_LIMIT,
    url_name="batch",
    openapi_extra=multipart_doc(many=True),
)
def batch(request: CallerRequest, response: HttpResponse) -> Status[dict[str, list[JobOut]]]:
    """Several `image` files, one `service` and its parameters: a job per image, all or none."""
    service = request.POST.get("service")
    if not service:
        raise ApiError(400, "missing_service", "name the service in a form field called 'service'")
    created = submit(request, response, service, at_most=settings.MAX_BATCH_FILES)
    return Status(202, {"jobs": [job_json(job) for job in created]})


class JobFilters(Schema):
    status: JobStatus | None = None
    service: str | None = None
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = Field(None, description="next_cursor from the previous page")


def encode_cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(f"{job.created_at.isoformat()}|{job.id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created_at, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created_at), uuid.UUID(job_id)
    except ValueError:
        raise ApiError(400, "invalid_cursor", "cursor is not one this API gave out") from None


@router.get(
    "/jobs",
    response={200: JobPageOut, 400: ErrorOut, **READ_ERRORS},
    throttle=READ_LIMIT,
    url_name="job_list",
)
def job_list(request: CallerRequest, filters: Query[JobFilters]) -> dict[str, Any]:
    """The caller's jobs, newest first; follow `next_cursor` for older ones."""
    found = request.auth.visible_jobs().order_by("-created_at", "-id")
    if filters.status:
        found = found.filter(status=filters.status)
    if filters.service:
        found = found.filter(service=filters.service)
    if filters.cursor:
        created_at, job_id = decode_cursor(filters.cursor)
        found = found.filter(created_at__lte=created_at).exclude(created_at=created_at, id__gte=job_id)
    page = list(found[: filters.limit + 1])
    more = len(page) > filters.limit
    page = page[: filters.limit]
    return {"jobs": [job_json(job) for job in page], "next_cursor": encode_cursor(page[-1]) if more else None}


# ninja.Query is a type to mypy; a parameter's default with a description is this function's.
WAIT_PARAMETER = params.Query(
    0, description="Seconds to wait for an unfinished job to end (long poll); answered the moment it does."
)


@router.get(
    "/jobs/{job_id}",
    response={200: JobOut, **READ_ERRORS},
    throttle=READ_LIMIT,
    url_name=waiting.LONG_POLL_VIEW,
)
def job_detail(
    request: CallerRequest, response: HttpResponse, job_id: str, wait: waiting.WaitSeconds = WAIT_PARAMETER
) -> JobOut:
    """The job; with `wait`, held until the job ends or `wait` seconds pass, whichever is first."""
    # The view itself never waits: gateway.live.waiting.LongPolls does, on the event loop, after it,
    # and answers with `job_detail_body`. A wait it did not take is answered now, with the job as it is.
    job = get_job(request, job_id)
    if wait and not job.is_finished and waiting.deferred_by_the_server(request):
        response[waiting.WAIT_HEADER] = str(job.id)  # LongPolls waits for it, holding no thread
    return job_json(job)


def job_detail_body(job_id: str) -> bytes | None:
    """job_detail's body for the job as it is now, as ninja renders it (None if it is gone).

    LongPolls' answer once its wait is over; the caller was authenticated, counted and found to
    own the job by the view, before the wait."""
    job = Job.objects.filter(id=job_id).first()
    if job is None:
        return None
    # job_json is already the JobOut shape that ninja checks the view's return against.
    # The renderer reads nothing of the request, and there is none here.
    body: str = JSONRenderer().render(None, job_json(job), response_status=200)  # type: ignore[arg-type]
    return body.encode()


@router.get(
    "/status/{job_id}", response={200: StatusOut, **READ_ERRORS}, throttle=READ_LIMIT, url_name="job_status"
)
def job_status(request: CallerRequest, job_id: str) -> StatusOut:
    return status_json(get_job(request, job_id))


def image_facts(
    format: str, size: int | None, width: int | None, height: int | None, sha256: str
) -> dict[str, Any]:
    return {"format": format, "bytes": size, "width": width, "height": height, "sha256": sha256}


@router.get(
    "/result/{job_id}", response={200: MetricsOut, **READ_ERRORS}, throttle=READ_LIMIT, url_name="job_result"
)
def job_result(request: CallerRequest, job_id: str) -> dict[str, Any]:
    """Where the time went (queue wait, processing, total), attempts, worker, and both images' facts."""
    job = get_job(request, job_id)
    output = None
    if job.status == Job.COMPLETED and job.output_key:
        output = image_facts(
            job.output_format, job.output_bytes, job.output_width, job.output_height, job.output_sha256
        )
    return {
        "job_id": str(job.id),
        "status": job.status,
        "service": job.service,
        "attempts": job.attempts,
        "worker": worker_seen_by(request.auth, job.worker_id),
        "cache_hit": bool(job.metrics.get("cache_hit")),
        "queue_wait_ms": job.queue_wait_ms,
        "processing_ms": job.processing_ms,
        "total_ms": job.total_ms,
        "run_ms": job.metrics.get("run_ms"),
        "metrics": job.metrics,
        "input": image_facts(
            job.input_format, job.input_bytes, job.input_width, job.input_height, job.input_sha256
        ),
        "output": output,
        "error": error_json(job),
    }


def worker_seen_by(caller: Caller, worker_id: str) -> str | None:
    """The worker that ran the job, by name ("host:pid:thread") for staff, else by an opaque label."""
    if not worker_id:
        return None
    return worker_id if caller.is_staff else opaque_label("worker", worker_id)


@router.get(
    "/download/{job_id}",
    response={200: None, 302: None, 409: ErrorOut, 410: ErrorOut, **READ_ERRORS},
    throttle=READ_LIMIT,
    url_name="job_download",
)
def job_download(request: CallerRequest, job_id: str) -> HttpResponseBase:
    """The result file, or a redirect to a signed, expiring URL when results live in object storage."""
    job = get_job(request, job_id)
    if job.status != Job.COMPLETED:
        raise ApiError(
            409, "not_ready", f"the job is {job.status}; there is nothing to download", job_status=job.status
        )
    if job.files_removed_at:
        raise ApiError(410, "expired", "the result was removed after its retention period")
    if not job.output_key:  # a report service: the report is the result
        return JsonResponse(
            job.report, headers={"Content-Disposition": f'attachment; filename="{job.id}.json"'}
        )
    key, output_format = formats.download_for(job, accepted_image_types(request))
    response = file_response(key, formats.mime_type_for(output_format), f"{job.id}.{key.rsplit('.', 1)[-1]}")
    if formats.varies_with_accept(job.parameters.get("format")):
        patch_vary_headers(response, ["Accept"])
    return response


def file_response(key: str, content_type: str, filename: str) -> HttpResponseBase:
    """The stored file itself, a redirect to its signed, expiring URL in object storage, or, behind
    nginx (DOWNLOAD_ACCEL_PREFIX), an empty answer that tells nginx which file to send."""
    try:
        path = default_storage.path(key)
    except NotImplementedError:  # object storage
        return HttpResponseRedirect(default_storage.url(key))
    if settings.DOWNLOAD_ACCEL_PREFIX:
        return accel_redirect(settings.DOWNLOAD_ACCEL_PREFIX + quote(key), content_type, filename)
    return FileResponse(open(path, "rb"), as_attachment=True, filename=filename, content_type=content_type)


def accel_redirect(uri: str, content_type: str, filename: str) -> HttpResponse:
    """nginx sends the file at `uri` (an internal location) with these headers: the result's bytes
    never pass through the gateway. The key in `uri` is ours, never a path a client chose."""
    # The same Content-Disposition as FileResponse's, which quotes and encodes the name.
    disposition = content_disposition_header(True, filename) or "attachment"
    return HttpResponse(
        content_type=content_type, headers={"X-Accel-Redirect": uri, "Content-Disposition": disposition}
    )


def cancel(request: CallerRequest, job_id: str) -> JobOut:
    job = get_job(request, job_id)
    if not lifecycle.cancel(job.id):
        job.refresh_from_db()
        raise ApiError(409, "already_finished", f"the job is already {job.status}", job_status=job.status)
    job.refresh_from_db()
    return job_json(job)


router.add_api_operation(
    "/jobs/{job_id}/cancel",
    ["POST", "DELETE"],
    cancel,
    response={200: JobOut, 409: ErrorOut, **READ_ERRORS},
    throttle=SUBMIT_LIMIT,
    url_name="job_cancel",
    summary="Cancel a queued or running job (a finished one is a 409)",
)
