"""Jobs: submit (one or a batch), list, read, poll, download, metrics, cancel."""

import base64
import functools
import json
import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
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
from pydantic import AfterValidator, Field

from gateway.api.auth import READ_LIMIT, SUBMIT_LIMIT, CallerRequest
from gateway.api.schemas import ErrorOut, JobPageOut, JobsOut, MetricsOut
from gateway.auth.callers import Caller
from gateway.auth.ratelimit import charge_submissions
from gateway.http import intake, preferences
from gateway.http.errors import ApiError, not_found
from gateway.http.negotiation import accepted_image_types
from gateway.live import waiting
from gateway.ops.disclosure import opaque_label
from processing import storage
from processing.callbacks import deliveries, signing
from processing.imaging import formats, previews
from processing.imaging.operations import OPERATIONS, Operation, OutputOptions, get_operation
from processing.imaging.recipes import OUTPUT_FIELDS, STEPS_SERVICE
from processing.jobs import lifecycle, submissions
from processing.jobs.public import JobOut, JobStatus, StatusOut, error_json, job_json, job_urls, status_json
from processing.models import MAX_CALLBACK_URL_LENGTH, Job

logger = logging.getLogger(__name__)

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
        "properties": {
            "image": {"type": "array", "items": image} if many else image,
            "callback_url": CALLBACK_URL_FIELD,
        },
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
    return {
        "requestBody": {"content": {"multipart/form-data": {"schema": schema}}, "required": True},
        "parameters": [PREFER_PARAMETER],
        "callbacks": CALLBACKS_DOC,
        **({} if many else {"responses": {200: {"content": {"image/*": {"schema": image}}}}}),
    }


def recipe_doc() -> dict[str, Any]:
    """The OpenAPI request body of a recipe: `image`, `steps` (each step one of the services, with that
    service's own parameters) and the output options, or `preset`."""
    output = OutputOptions.model_json_schema()["properties"]
    steps = {
        "type": "array",
        "minItems": 1,
        "items": {"oneOf": [step_schema(operation) for operation in OPERATIONS.values()]},
        "description": (
            "The steps, in order, as JSON: each a service of /api/v1/services and its own parameters; the "
            "output options go beside the steps (or on the last step). A report (analyze) is a recipe's "
            "only step. MAX_STEPS bounds their number."
        ),
        "example": [
            {"service": "resize", "parameters": {"width": 800}},
            {"service": "sharpen", "parameters": {"radius": 1}},
        ],
    }
    preset = {
        "type": "string",
        "description": "Instead of steps and output options: the name of a preset (GET /api/v1/presets).",
    }
    schema = {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {"type": "string", "format": "binary"},
            "steps": steps,
            "preset": preset,
            **output,
        },
        "additionalProperties": False,
    }
    body = {"schema": schema, "encoding": {"steps": {"contentType": "application/json"}}}
    return {
        "requestBody": {"content": {"multipart/form-data": body}, "required": True},
        "parameters": [PREFER_PARAMETER],
        "responses": {200: {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}}},
    }


def step_schema(operation: Operation[Any]) -> dict[str, Any]:
    """One step of a recipe as JSON Schema: the service's name and its parameters, less the output options."""
    parameters = operation.json_schema()
    properties = {
        name: value for name, value in parameters.get("properties", {}).items() if name not in OUTPUT_FIELDS
    }
    required = [name for name in parameters.get("required", []) if name not in OUTPUT_FIELDS]
    own = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        own["required"] = required
    return {
        "type": "object",
        "title": operation.name,
        "description": operation.description,
        "properties": {"service": {"const": operation.name}, "parameters": own},
        "required": ["service", "parameters"] if required else ["service"],
        "additionalProperties": False,
    }


CALLBACK_URL_FIELD = {
    "type": "string",
    "format": "uri",
    "maxLength": MAX_CALLBACK_URL_LENGTH,
    "description": (
        "An http(s) URL that gets a signed POST of each job's JSON when the job completes, fails or is "
        "cancelled (see `callbacks`; docs/callbacks.md). Empty or absent: the API key's default, if it "
        "has one. Refused (422) when it is not an http(s) URL, carries credentials or a fragment, names "
        "an address callbacks may not reach, or the caller has no callback secret. Every address its host "
        "resolves to is checked again at each attempt: loopback, private, link-local and metadata "
        "addresses are refused unless the operator allows them (CALLBACK_ALLOWED_NETWORKS)."
    ),
}


def callback_header(name: str, description: str) -> dict[str, Any]:
    return {
        "in": "header",
        "name": name,
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


CALLBACKS_DOC = {
    "jobEnded": {
        "{$request.body#/callback_url}": {
            "post": {
                "summary": "The job ended: completed, failed or cancelled",
                "description": (
                    "The job's JSON, as GET /api/v1/jobs/{id} gives it, POSTed once it ends. Retried with "
                    "a backoff from 10 s to an hour for up to a day while the receiver fails (no answer, "
                    "5xx, 408, 429: Retry-After is honoured); given up at once on a redirect (never "
                    "followed) or another 4xx. Every attempt carries the same body and event id. Verify "
                    "Darkroom-Signature before trusting the body."
                ),
                "parameters": [
                    callback_header(
                        signing.SIGNATURE_HEADER,
                        "`t=<unix seconds>,v1=<hex HMAC-SHA256>`: the HMAC, keyed with the caller's callback "
                        "secret, of `<t>.<body>`. For a day after a rotation a second `v1` signs with the "
                        "secret before. Refuse a `t` far from your clock (5 minutes, say).",
                    ),
                    callback_header(deliveries.EVENT_HEADER, "job.completed, job.failed or job.cancelled"),
                    callback_header(
                        deliveries.EVENT_ID_HEADER,
                        "The same at every attempt of this event: deduplicate by it.",
                    ),
                    callback_header(deliveries.ATTEMPT_HEADER, "1 for the first attempt, then 2, 3, ..."),
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobOut"}}},
                },
                "responses": {
                    "2XX": {"description": "Delivered: no more attempts."},
                    "default": {
                        "description": "Tried again later (5xx, 408, 429), or given up (other answers)."
                    },
                },
            }
        }
    }
}

PREFER_PARAMETER = {
    "in": "header",
    "name": "Prefer",
    "required": False,
    "schema": {"type": "string"},
    "example": "wait=30, return=representation",
    "description": (
        "RFC 7240. `wait=N` (seconds, up to 60): answer when the job ends, with 200 and its final JSON, "
        "or 202 as without it if it is still running after N seconds. With `return=representation` "
        "and an Accept naming an image type, a completed job's answer is the result's bytes, with "
        "`Job-Id`, `Job-Status` and `Server-Timing` headers. `Preference-Applied` says what was honoured."
    ),
}


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
    answer_when_ended(request, response, found, one=True)
    return Status(202, job_json(job))


@router.post(
    "/process",
    response={200: JobOut, 202: JobOut, **SUBMIT_ERRORS},
    throttle=SUBMIT_LIMIT,
    url_name="process_recipe",
    openapi_extra=recipe_doc(),
)
def process_recipe(request: CallerRequest, response: HttpResponse) -> Status[JobOut]:
    """Upload `image` (multipart) with `steps`, run in order on one decode and one encode, and the output
    options; or with `preset`, a named recipe (GET /api/v1/presets). Answers 202 with the job."""
    return submit_one(request, response, STEPS_SERVICE)


@router.post(
    "/process/{service}",
    response={200: JobOut, 202: JobOut, **SUBMIT_ERRORS},
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
        response={200: JobOut, 202: JobOut, **SUBMIT_ERRORS},
        throttle=SUBMIT_LIMIT,
        url_name=service,
        openapi_extra=multipart_doc(service),
        summary=f"The same as /process/{service}",
    )


for _service in ("resize", "crop", "convert"):
    add_shortcut(_service)


@router.post(
    "/jobs/batch",
    response={200: JobsOut, 202: JobsOut, **SUBMIT_ERRORS},
    throttle=SUBMIT_LIMIT,
    url_name="batch",
    openapi_extra=multipart_doc(many=True),
)
def batch(request: CallerRequest, response: HttpResponse) -> Status[dict[str, list[JobOut]]]:
    """Several `image` files, and one `service` and its parameters, or `steps` or a `preset`: a job per
    image, all or none."""
    service = intake.service_of(request.POST)
    if not service:
        raise ApiError(
            400,
            "missing_service",
            "name the service in a form field called 'service', or send steps or a preset",
        )
    created = submit(request, response, service, at_most=settings.MAX_BATCH_FILES)
    answer_when_ended(request, response, created, one=False)
    return Status(202, batch_json(created))


def batch_json(jobs: list[Job]) -> dict[str, list[JobOut]]:
    return {"jobs": [job_json(job) for job in jobs]}


# --- Prefer: wait, one request per job ------------------------------------------------------


def answer_when_ended(request: CallerRequest, response: HttpResponse, jobs: list[Job], *, one: bool) -> None:
    """With `Prefer: wait=N`, have the submission answered when its jobs end (gateway.live.waiting):
    with their final JSON, or with `return=representation` and an image type in Accept, with one
    job's result itself. Otherwise, and when they don't end in time, the 202 stands."""
    patch_vary_headers(response, ["Prefer", "Accept"])  # format=auto reads Accept too
    response["Retry-After"] = "1"
    wanted = preferences.parse([request.headers.get("Prefer", "")])
    if wanted.wait is None or not jobs:
        return
    accepted = accepted_image_types(request) if wanted.representation and one else frozenset()
    job_ids = [str(job.id) for job in jobs]
    answer = functools.partial(submission_answer, job_ids, wanted, accepted, one=one)
    waiting.wait_after_view(request, waiting.WaitFor(job_ids, wanted.wait, answer))


def submission_answer(
    job_ids: list[str],
    wanted: preferences.Preferences,
    accepted: Collection[str],
    final_texts: dict[str, str],
    *,
    one: bool,
) -> waiting.Answer | None:
    """A waited-for submission's answer, its jobs as they are now (None if one is gone: the 202 stands).

    The caller was authenticated, counted and made these jobs in the view, before the wait."""
    jobs = jobs_now(job_ids, final_texts)
    if jobs is None:
        return None
    ended = all(job["status"] in Job.FINISHED for job in jobs)
    if ended and accepted:
        answer = representation(jobs[0], wanted, accepted)
        if answer is not None:
            return answer
    body = rendered(jobs[0]) if one else rendered({"jobs": jobs})
    headers: dict[str, str | None] = {"Preference-Applied": wanted.applied(representation=False)}
    if ended:
        headers["Retry-After"] = None
    return waiting.Answer(body, status=200 if ended else None, headers=headers)


def jobs_now(job_ids: list[str], final_texts: dict[str, str]) -> list[JobOut] | None:
    """The jobs' JSON as it is now: from their ended events when every end was heard, else read
    (None if one is gone)."""
    if all(job_id in final_texts for job_id in job_ids):
        return [json.loads(final_texts[job_id])["job"] for job_id in job_ids]
    found = Job.objects.in_bulk(job_ids)
    jobs = [found.get(uuid.UUID(job_id)) for job_id in job_ids]
    return [job_json(job) for job in jobs if job is not None] if None not in jobs else None


@dataclass
class StoredFiles:
    """Where a completed job's result is stored, told by its JSON (the keys are named by the job's id
    and the file's format: processing.storage)."""

    output_key: str
    output_format: str
    fallback_key: str
    fallback_format: str

    @classmethod
    def of(cls, job: JobOut) -> "StoredFiles | None":
        """None for a job without an image result: unfinished, failed, cancelled, or a report."""
        result = job["result"]
        if result is None or result.get("report") is not None or not result["format"]:
            return None
        job_id, output_format = job["job_id"], result["format"]
        fallback_format = result.get("fallback_format") or ""
        fallback_key = (
            storage.fallback_key(job_id, formats.extension_for(fallback_format)) if fallback_format else ""
        )
        output_key = storage.output_key(job_id, formats.extension_for(output_format))
        return cls(output_key, output_format, fallback_key, fallback_format)


def representation(
    job: JobOut, wanted: preferences.Preferences, accepted: Collection[str]
) -> waiting.Answer | None:
    """The job's result itself, as a download with this Accept gets it; None when there is none to
    send (failed, cancelled, a report) or storage can't give it now: the JSON says why."""
    files = StoredFiles.of(job)
    if files is None:
        return None
    key, output_format = formats.download_for(files, accepted)
    try:
        data = storage.read(key)
    except Exception:
        logger.warning(
            "a waited-for result could not be read", exc_info=True, extra={"job_id": job["job_id"]}
        )
        return None
    headers: dict[str, str | None] = {
        "Content-Type": formats.mime_type_for(output_format),
        "Content-Disposition": f'inline; filename="{job["job_id"]}.{key.rsplit(".", 1)[-1]}"',
        "Job-Id": job["job_id"],
        "Job-Status": job["status"],
        "Server-Timing": server_timing(job),
        "Preference-Applied": wanted.applied(representation=True),
        "Retry-After": None,
    }
    return waiting.Answer(data, status=200, headers=headers)


def server_timing(job: JobOut) -> str:
    """Where the job's time went, in milliseconds, as a Server-Timing header: waiting for a worker
    (queue), on the worker (work), and from its creation to its end (total)."""
    created, started, finished = (
        moment if moment is None or isinstance(moment, datetime) else datetime.fromisoformat(moment)
        for moment in (job["created_at"], job["started_at"], job["finished_at"])
    )
    spans = {"queue": (created, started), "work": (started, finished), "total": (created, finished)}
    return ", ".join(
        f"{name};dur={(end - start).total_seconds() * 1000:.1f}"
        for name, (start, end) in spans.items()
        if start is not None and end is not None
    )


def rendered(data: Any) -> bytes:
    """`data` as ninja renders a view's return: what the view's own answer would have held."""
    # The renderer reads nothing of the request, and there is none here.
    body: str = JSONRenderer().render(None, data, response_status=200)  # type: ignore[arg-type]
    return body.encode()


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
    # and answers with `job_read_answer`. A wait it did not take is answered now, with the job as it is.
    job = get_job(request, job_id)
    if wait and not job.is_finished:
        answer = functools.partial(job_read_answer, str(job.id))
        waiting.wait_after_view(request, waiting.WaitFor([str(job.id)], wait, answer))
    return job_json(job)


def job_read_answer(job_id: str, final_texts: dict[str, str]) -> waiting.Answer | None:
    """job_detail's answer for the job as it is now (None if it is gone).

    A long poll's answer once its wait is over; the caller was authenticated, counted and found to
    own the job by the view, before the wait."""
    jobs = jobs_now([job_id], final_texts)
    return None if jobs is None else waiting.Answer(rendered(jobs[0]))


@router.get(
    "/status/{job_id}", response={200: StatusOut, **READ_ERRORS}, throttle=READ_LIMIT, url_name="job_status"
)
def job_status(request: CallerRequest, job_id: str) -> StatusOut:
    return status_json(get_job(request, job_id))


def image_facts(
    format: str, size: int | None, width: int | None, height: int | None, sha256: str, frames: int | None
) -> dict[str, Any]:
    return {
        "format": format,
        "bytes": size,
        "width": width,
        "height": height,
        "sha256": sha256,
        "frames": frames,
    }


@router.get(
    "/result/{job_id}", response={200: MetricsOut, **READ_ERRORS}, throttle=READ_LIMIT, url_name="job_result"
)
def job_result(request: CallerRequest, job_id: str) -> dict[str, Any]:
    """Where the time went (queue wait, processing, total), attempts, worker, and both images' facts."""
    job = get_job(request, job_id)
    output = None
    if job.status == Job.COMPLETED and job.output_key:
        output = image_facts(
            job.output_format,
            job.output_bytes,
            job.output_width,
            job.output_height,
            job.output_sha256,
            job.output_frames,
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
            job.input_format,
            job.input_bytes,
            job.input_width,
            job.input_height,
            job.input_sha256,
            job.input_frames,
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
    job = result_of(request, job_id, "there is nothing to download")
    if not job.output_key:  # a report service: the report is the result
        return JsonResponse(
            job.report, headers={"Content-Disposition": f'attachment; filename="{job.id}.json"'}
        )
    key, output_format = formats.download_for(job, accepted_image_types(request))
    response = file_response(key, formats.mime_type_for(output_format), f"{job.id}.{key.rsplit('.', 1)[-1]}")
    if formats.varies_with_accept(job.parameters.get("format")):
        patch_vary_headers(response, ["Accept"])
    return response


def result_of(request: CallerRequest, job_id: str, not_ready: str) -> Job:
    """The caller's completed job whose files are still kept: 409 `not_ready` (saying `not_ready`)
    before it completes, 410 once its files were removed."""
    job = get_job(request, job_id)
    if job.status != Job.COMPLETED:
        raise ApiError(409, "not_ready", f"the job is {job.status}; {not_ready}", job_status=job.status)
    if job.files_removed_at:
        raise ApiError(410, "expired", "the result was removed after its retention period")
    return job


def one_of_the_preview_sizes(size: int) -> int:
    if size not in previews.SIZES:
        raise ValueError(f"size must be one of {', '.join(map(str, previews.SIZES))}")
    return size


PreviewSize = Annotated[
    int, AfterValidator(one_of_the_preview_sizes), Field(json_schema_extra={"enum": list(previews.SIZES)})
]
PREVIEW_SIZE_PARAMETER = params.Query(
    640, description="The preview's longest edge at most, in pixels: ask for the smallest that fills the box."
)


@router.get(
    "/preview/{job_id}",
    response={200: None, 404: ErrorOut, 409: ErrorOut, 410: ErrorOut, **READ_ERRORS},
    throttle=READ_LIMIT,
    url_name="job_preview",
    openapi_extra={"responses": {200: {"content": {previews.CONTENT_TYPE: {}}}}},
)
def job_preview(
    request: CallerRequest, job_id: str, size: PreviewSize = PREVIEW_SIZE_PARAMETER
) -> HttpResponse:
    """A completed image result, smaller: a WebP whose longest edge is at most `size` (never enlarged),
    for showing it in a page without downloading it whole. Made on the first request, then kept."""
    job = result_of(request, job_id, "there is no result yet")
    if not job.output_key:
        raise ApiError(409, "no_image", "the result is a report, not an image: download it instead")
    data = previews.preview(job.output_key, size, settings.MAX_IMAGE_PIXELS, settings.MAX_JPEG_SCANS)
    if data is None:
        raise ApiError(404, "no_preview", "this result has no preview: download it instead")
    response = HttpResponse(data, content_type=previews.CONTENT_TYPE)
    # The caller's alone, and a job's result never changes.
    response["Cache-Control"] = "private, max-age=86400"
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
    # Sent in large pieces by the server's request threads (gateway.http.wsgi_threads).
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
